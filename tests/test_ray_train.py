"""The same run through Ray Train's TorchTrainer (1 CPU worker): a worker failure mid-run is retried
from the latest checkpoint and the result equals the uninterrupted local run with the same seed."""
import json
from pathlib import Path

import pytest

from conftest import tiny_config


@pytest.fixture(scope="module")
def local_ray():
    import ray

    from vaanet.train.ray_cluster import init_ray

    init_ray(None, num_cpus=2, include_dashboard=True, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


def test_torch_trainer_recovers_and_matches_local_run(local_ray, reference_run, synth_root, synth_cache, tmp_path):
    from mlflow.tracking import MlflowClient

    from vaanet.train.ray_train import fit_with_ray

    _, local_final, _ = reference_run
    cfg = tiny_config(synth_root, synth_cache, tmp_path, **{"run.fail_at_epoch": 1, "run.name": "ray-run"})
    result = fit_with_ray(cfg, workers=1, max_failures=1, local=False)  # a Ray Train worker, not local mode
    assert result.error is None
    assert result.metrics["test_acc"] == local_final["test_acc"]
    assert {k: v for k, v in result.metrics.items() if k != "val_acc"} == local_final
    run_dir = Path(cfg.run.output) / "ray-run"
    assert (run_dir / ".failure_injected").exists()  # it did fail once, and recovered
    assert json.loads((run_dir / "final_metrics.json").read_text()) == local_final
    checkpoints = sorted(p.name for p in run_dir.glob("checkpoint_*") if p.is_dir())
    assert len(checkpoints) == 1  # the latest only; the selected weights live in the run folder
    assert len(list((run_dir / "best").glob("epoch_*.pt"))) == 1 and (run_dir / "best_model.pt").is_file()
    assert (run_dir / checkpoints[-1] / "best_model.pt").is_file()  # predict takes the last checkpoint too
    steps = [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 3]  # epoch 1 logged once, epochs 2-3 after the restart, then the test metrics
    client = MlflowClient(cfg.run.mlflow_uri)
    runs = client.search_runs([client.get_experiment_by_name("test").experiment_id])
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(runs[0].info.run_id, "train_loss")] == [1, 2, 3]
