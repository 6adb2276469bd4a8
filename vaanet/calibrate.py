"""``vaanet estimate --calibrate``: what a configuration costs on the machine at hand, measured, not assumed.

What a run costs here, measured: (1) seconds per training video, the mean of timed steps after warm-up
steps; (2) seconds per held-out video, forward only, with every evaluation view the config uses; (3) the
same two with ``concurrent`` runs timing at once in their own processes (runs sharing the machine's cores
do not each go at the speed of one alone: on a CPU they compete for cores and memory bandwidth); (4) the
fixed cost of a run (start-up, MLflow run, environment record, test artifacts) and of an epoch (checkpoint,
selected weights, metrics), from real runs of the config on a split of a few of its videos.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import torch

from .estimate import DISTINCT, TABLE_RUNS, TRAIN_SHARE, VIDEOS, gpu_hours, gpu_time
from .models.complexity import count_complexity
from .models.vaanet import ModelConfig

WARMUP_STEPS = 2  # allocator, lazy initialisation, cuDNN autotuning: not timed


@dataclass
class Calibration:
    """Seconds measured on this machine for one configuration."""
    device: str
    train_s: float  # per training video (data loading, forward, backward, optimiser step), one run alone: the
    # mean of the timed steps
    eval_s: float  # per held-out video (data loading, forward of every view), one run alone
    videos: dict[str, int] | None = None  # the config's own split: train / val / test videos, when its data exist
    concurrent: int = 1  # runs timed at once for the shared figures
    train_s_shared: float | None = None  # per training video while ``concurrent`` runs share the machine
    eval_s_shared: float | None = None
    run_overhead_s: float = 0.0  # per run: start-up, MLflow run and params, environment record, test artifacts
    epoch_overhead_s: float = 0.0  # per epoch: checkpoint, selected weights, MLflow metrics
    overhead: str = "not measured"  # how the two overheads were obtained
    threads: int = 0  # torch threads per run
    cores: int = 0  # CPU cores this process may use
    steps: int = 0  # training steps timed per run
    spread: float = 0.0  # (max - min) / median of the timed training steps (alone)

    def per_video(self, shared: bool) -> tuple[float, float]:
        if shared and self.concurrent > 1 and self.train_s_shared is not None:
            return self.train_s_shared, self.eval_s_shared
        return self.train_s, self.eval_s


def _eval_views(cfg) -> int:
    return max(1, cfg.data.temporal_views) * max(1, cfg.data.spatial_views)


def _time_steps(cfg_dict: dict, steps: int, eval_batches: int) -> dict:
    """Time ``steps`` training steps (after :data:`WARMUP_STEPS`) and ``eval_batches`` evaluation batches of a
    config (its dict), on its data when they exist, else on random inputs of its shapes. Module level: it also
    runs in spawned processes (concurrent runs)."""
    import itertools
    import statistics
    import time
    from pathlib import Path

    from .config import Config
    from .losses import PCCELoss
    from .models.vaanet import build_model
    from .train.loop import _loaders

    cfg = Config.from_dict(cfg_dict)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if cfg.run.threads:
        torch.set_num_threads(cfg.run.threads)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    amp = torch.bfloat16 if (device.type == "cuda" and cfg.run.bf16) else None
    torch.manual_seed(cfg.run.seed)
    model = build_model(replace(cfg.model, visual_weights=None, audio_weights=None)).to(device).train()
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=cfg.optim.lr)
    criterion = PCCELoss(cfg.data.classes, lam=cfg.optim.effective_lambda).to(device)
    micro = min(cfg.optim.micro_batch or cfg.optim.batch_size, cfg.optim.batch_size)
    accumulate = -(-cfg.optim.batch_size // micro)
    videos = None
    if (Path(cfg.data.cache) / "index.csv").is_file() and Path(cfg.data.split).is_file():
        loaders, _, accumulate = _loaders(cfg, 0, 1, pin=device.type == "cuda")
        videos = {k: len(v.dataset) for k, v in loaders.items()}
        train, held_out = itertools.cycle(loaders["train"]), itertools.cycle(loaders["val"])
    else:  # random inputs of the config's shapes; held-out items carry every evaluation view
        m, views = cfg.model, _eval_views(cfg)
        fake = {"label": torch.randint(0, m.num_classes, (micro,))}
        if m.visual:
            fake["visual"] = torch.randn(micro, m.segments, 3, m.frames, m.crop_size, m.crop_size)
        if m.audio:
            fake["audio"] = torch.randn(micro, m.segments, 1, cfg.data.audio_frames, 32)
        many = {k: (v.unsqueeze(1).expand(-1, views, *v.shape[1:]).contiguous() if k != "label" and views > 1 else v)
                for k, v in fake.items()}
        train, held_out = itertools.repeat(fake), itertools.repeat(many)

    def forward(batch):
        visual, audio = batch.get("visual"), batch.get("audio")
        multi = (visual is not None and visual.dim() == 7) or (audio is not None and audio.dim() == 6)
        if multi:  # [B, V, ...] -> [B*V, ...], as vaanet.train.metrics.predict does
            visual = visual.flatten(0, 1) if visual is not None else None
            audio = audio.flatten(0, 1) if audio is not None else None
        visual = visual.to(device) if visual is not None else None
        audio = audio.to(device) if audio is not None else None
        with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            return model(visual, audio).logits, batch["label"].to(device)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    def step() -> int:
        optimizer.zero_grad(set_to_none=True)
        seen = 0
        for batch in itertools.islice(train, accumulate):
            logits, target = forward(batch)
            criterion(logits.float(), target).backward()
            seen += len(target)
        optimizer.step()
        return seen

    train_times = []
    for i in range(WARMUP_STEPS + steps):
        sync()
        t0 = time.perf_counter()
        seen = step()
        sync()
        if i >= WARMUP_STEPS:
            train_times.append((time.perf_counter() - t0) / seen)
    model.eval()
    eval_times = []
    with torch.no_grad():
        for i in range(1 + eval_batches):  # the first one warms up
            batch = next(held_out)
            t0 = time.perf_counter()
            seen = len(forward(batch)[1])
            sync()
            if i:
                eval_times.append((time.perf_counter() - t0) / seen)
    # the mean, not the median: a run pays for its slow steps too (on a shared machine they are frequent)
    med = statistics.median(train_times)
    return {"device": device.type, "train_s": statistics.fmean(train_times), "eval_s": statistics.fmean(eval_times),
            "videos": videos, "threads": torch.get_num_threads(), "spread": (max(train_times) - min(train_times)) / med}


def _time_concurrently(cfg_dict: dict, steps: int, eval_batches: int, concurrent: int) -> list[dict]:
    """:func:`_time_steps` in ``concurrent`` processes at once (spawned: each its own torch threads)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(concurrent, mp_context=multiprocessing.get_context("spawn")) as pool:
        return list(pool.map(_time_steps, [cfg_dict] * concurrent, [steps] * concurrent, [eval_batches] * concurrent))


def _tiny_split(cfg, folder) -> str:
    """A split file of the config's own split with one training step's videos, one validation and one test video."""
    import pandas as pd

    split = pd.read_csv(cfg.data.split, dtype=str)
    keep = [split[split["subset"] == "train"].head(cfg.optim.batch_size),
            split[split["subset"] == "val"].head(1), split[split["subset"] == "test"].head(1)]
    path = Path(folder) / "tiny_split.csv"
    pd.concat(keep).to_csv(path, index=False)
    return str(path)


def measure_overhead(cfg, cal: Calibration) -> tuple[float, float]:
    """(seconds per run, seconds per epoch) spent outside training and evaluation: real runs of ``cfg``
    (``vaanet.train.fit_local``, what ``vaanet train --no-ray`` and a study's trial run: MLflow tracking,
    environment record, checkpoints, test artifacts) on a split of a few of its videos, in a scratch folder
    with its own MLflow store, for 1 and 3 epochs; what the calibrated per-video seconds do not explain."""
    import contextlib
    import tempfile
    import time
    import warnings

    from .train import fit_local

    with tempfile.TemporaryDirectory(prefix="vaanet-overhead-") as tmp:
        split = _tiny_split(cfg, tmp)
        n = {"train": cfg.optim.batch_size, "val": 1, "test": 1}
        import pandas as pd

        counts = pd.read_csv(split)["subset"].value_counts()
        n = {k: int(counts.get(k, 0)) for k in n}
        seconds = {}
        for name, epochs in (("warm-up", 1), ("one", 1), ("three", 3)):  # the first creates the MLflow store
            c = replace(cfg, data=replace(cfg.data, split=split), optim=replace(cfg.optim, epochs=epochs),
                        run=replace(cfg.run, name=name, output=tmp, experiment="overhead", mlflow_uri=f"sqlite:///{tmp}/mlflow.db",
                                    system_metrics=False, fail_at_epoch=-1))
            t0 = time.perf_counter()
            with open(Path(tmp) / f"{name}.log", "w") as out, contextlib.redirect_stdout(out), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # MLflow's hints on the split's dataset input
                fit_local(c, Path(tmp) / name)
            seconds[name] = time.perf_counter() - t0
    compute = lambda epochs: epochs * (n["train"] * cal.train_s + n["val"] * cal.eval_s) + n["test"] * cal.eval_s  # noqa: E731
    per_epoch = max(0.0, (seconds["three"] - compute(3) - seconds["one"] + compute(1)) / 2)
    per_run = max(0.0, seconds["one"] - compute(1) - per_epoch)
    return per_run, per_epoch


def calibrate(cfg, steps: int = 12, eval_batches: int = 4, concurrent: int = 1, overhead: bool = True) -> Calibration:
    """Time ``steps`` real training steps of ``cfg`` (a :class:`vaanet.config.Config`) after warm-up steps and
    ``eval_batches`` evaluation batches, on the GPU when there is one, else the CPU, on the config's own data
    when its cache and split exist (so loading is timed too), else on random inputs of its shapes; again with
    ``concurrent`` runs timing at once (when > 1); and, when the data exist and ``overhead``, the fixed cost
    of a run and of an epoch (:func:`measure_overhead`)."""
    import os

    if steps < 1 or eval_batches < 1 or concurrent < 1:
        raise ValueError(f"--steps {steps}, eval batches {eval_batches}, --concurrent {concurrent}: each must be >= 1")
    cfg_dict = cfg.to_dict()
    alone = _time_steps(cfg_dict, steps, eval_batches)
    cal = Calibration(alone["device"], alone["train_s"], alone["eval_s"], alone["videos"], concurrent=concurrent,
                      threads=alone["threads"], cores=len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                      else os.cpu_count() or 1, steps=steps, spread=alone["spread"])
    if concurrent > 1:
        if cal.device == "cuda":  # one GPU per run: runs on other GPUs do not share it
            cal.train_s_shared, cal.eval_s_shared = cal.train_s, cal.eval_s
        else:
            import statistics

            shared = _time_concurrently(cfg_dict, steps, eval_batches, concurrent)
            cal.train_s_shared = statistics.median(r["train_s"] for r in shared)
            cal.eval_s_shared = statistics.median(r["eval_s"] for r in shared)
    if overhead and cal.videos:
        cal.run_overhead_s, cal.epoch_overhead_s = measure_overhead(cfg, cal)
        cal.overhead = "measured on a split of a few of the config's videos"
    elif overhead:
        cal.overhead = (f"not measured: the config's data ({cfg.data.cache}, {cfg.data.split}) are missing; prepare "
                        "them to include start-up, checkpoint and MLflow time")
    return cal


def run_seconds(cal: Calibration, epochs: int, train: float, val: float, test: float, shared: bool = False) -> float:
    """One run: every epoch trains on ``train`` videos, validates on ``val`` and pays the epoch overhead; the
    test follows once, and the run's fixed overhead; ``shared``: while other runs share the machine."""
    train_s, eval_s = cal.per_video(shared)
    return cal.run_overhead_s + epochs * (train * train_s + val * eval_s + cal.epoch_overhead_s) + test * eval_s


def projection(run_s: float, runs: int, concurrent: int, nodes: int = 1, run_s_alone: float | None = None
               ) -> tuple[float, float]:
    """(wall seconds, device-hours) of ``runs`` runs, ``concurrent`` at once on each of ``nodes`` nodes: they go
    in waves of ``concurrent x nodes`` runs of ``run_s`` seconds (each while the others share its node); a last,
    partial wave with at most one run per node takes ``run_s_alone`` (default ``run_s``). Each run holds one
    device (a GPU; on a CPU, its share of the cores) while it trains."""
    slots = concurrent * nodes
    full, rest = divmod(runs, slots)
    alone = run_s if run_s_alone is None else run_s_alone
    wall = full * run_s + (0.0 if rest == 0 else alone if rest <= nodes else run_s)
    busy = full * slots * run_s + rest * (alone if rest <= nodes else run_s)
    return wall, busy / 3600


def schedule(durations: list[float], slots: int) -> float:
    """Wall seconds of runs started in this order on ``slots`` slots, each as soon as one is free (Ray Tune's
    order for a grid)."""
    import heapq

    free = [0.0] * max(1, slots)
    for d in durations:
        heapq.heappush(free, heapq.heappop(free) + d)
    return max(free)


def _hms(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.1f} s"


def _hours(h: float) -> str:
    """Device-hours with three significant digits, never in exponent notation."""
    return f"{h:.0f}" if h >= 100 else f"{h:.1f}" if h >= 10 else f"{h:.3g}"


def table_runs() -> dict[str, list[tuple[str, int]]]:
    return {**TABLE_RUNS, "all tables (distinct runs)": DISTINCT}


def calibrated_report(cal: Calibration, cfg: ModelConfig, epochs: int, concurrent: int, nodes: int,
                      sustained_tflops: float, audio_frames: int = 256) -> str:
    """Each table's wall time and device-hours from the measured seconds, beside the FLOP-based GPU time at
    ``sustained_tflops``; first the config's own split (one run), when its data exist."""
    flop = gpu_hours(count_complexity(cfg, audio_frames=audio_frames).gflops, epochs, sustained_tflops)
    shared = (f"; with {cal.concurrent} runs at once: {cal.train_s_shared:.4g} s per training video, "
              f"{cal.eval_s_shared:.4g} s per held-out video" if cal.concurrent > 1 and cal.train_s_shared else "")
    lines = [f"calibrated on this machine ({cal.device}, {cal.cores} core(s), {cal.threads} torch thread(s) per run): "
             f"{cal.train_s:.4g} s per training video (mean of {cal.steps} steps; their spread {100 * cal.spread:.0f} % of "
             f"the median), "
             f"{cal.eval_s:.4g} s per held-out video{shared}",
             f"  overhead: {cal.run_overhead_s:.1f} s per run, {cal.epoch_overhead_s:.2f} s per epoch ({cal.overhead}); "
             f"{epochs} epochs, {concurrent} run(s) at once on each of {nodes} node(s)",
             f"  {'study':<45}{'runs':>6}{'per run':>10}{'wall':>10}{'device-h':>10}{'FLOP-based GPU':>16}"]
    busy = concurrent > 1

    if cal.videos:
        v = cal.videos
        run_s = run_seconds(cal, epochs, v["train"], v["val"], v["test"])
        wall, dev_h = projection(run_s, 1, concurrent, nodes)
        lines.append(f"  {'this config, 1 run of its split':<45}{1:>6}{_hms(run_s):>10}{_hms(wall):>10}{dev_h:>10.3g}"
                     f"{'':>16}")
    for table, runs in table_runs().items():
        n_runs = sum(r for _, r in runs)

        def per_run(share: bool) -> float:
            return sum(r * run_seconds(cal, epochs, VIDEOS[d] * TRAIN_SHARE[d], VIDEOS[d] * (1 - TRAIN_SHARE[d]), 0,
                                       share) for d, r in runs) / n_runs

        wall, dev_h = projection(per_run(busy), n_runs, concurrent, nodes, per_run(False))
        lines.append(f"  {table:<45}{n_runs:>6}{_hms(per_run(busy)):>10}{_hms(wall):>10}{_hours(dev_h):>10}"
                     f"{gpu_time(flop[table]):>16}")
    return "\n".join(lines)
