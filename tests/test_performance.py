"""Memory switches change memory, not mathematics: per-segment checkpointing and micro-batch
accumulation give the plain computation's gradients; the estimate command prints its table."""
import subprocess
import sys

import torch

from vaanet.estimate import estimate, gpu_hours, largest_micro_batch
from vaanet.models import ModelConfig, VAANet

KW = dict(depth=10, width=0.125, segments=3, frames=4, crop_size=64)


def _grads(model, visual, audio, target, micro=None):
    model.zero_grad()
    chunks = [slice(0, len(target))] if micro is None else [slice(i, i + micro) for i in range(0, len(target), micro)]
    for s in chunks:
        loss = torch.nn.functional.cross_entropy(model(visual[s], audio[s]).logits, target[s], reduction="sum")
        (loss / len(target)).backward()
    return {n: p.grad.clone() for n, p in model.named_parameters()}


def _batch(n=4):
    torch.manual_seed(1)
    return (torch.randint(0, 256, (n, 3, 3, 4, 64, 64), dtype=torch.uint8), torch.randn(n, 3, 1, 8, 32),
            torch.randint(0, 8, (n,)))


def test_checkpointing_and_accumulation_give_the_same_gradients():
    torch.manual_seed(0)
    plain = VAANet(ModelConfig(**KW)).eval()  # eval: BatchNorm does not depend on how the batch is cut
    switched = VAANet(ModelConfig(checkpoint_segments=True, channels_last=True, **KW)).eval()
    switched.load_state_dict(plain.state_dict())
    v, a, y = _batch()
    reference = _grads(plain, v, a, y)
    for got in (_grads(switched, v, a, y), _grads(plain, v, a, y, micro=1), _grads(switched, v, a, y, micro=2)):
        for name, g in reference.items():
            torch.testing.assert_close(got[name], g, rtol=1e-4, atol=1e-6, msg=name)


def test_checkpointing_updates_running_statistics_once_per_forward():
    torch.manual_seed(0)
    model = VAANet(ModelConfig(checkpoint_segments=True, audio=False, audio_attention=False, **KW)).train()
    v, a, y = _batch(2)
    torch.nn.functional.cross_entropy(model(v).logits, y).backward()
    # one BatchNorm update per segment forward (3 segments), none from the recomputation in backward
    assert int(model.backbone.bn1.num_batches_tracked) == 3


def test_estimate_numbers_are_consistent():
    small = estimate(ModelConfig(**KW), audio_frames=8)
    assert small.activations_checkpointed < small.activations_plain
    assert small.static_bytes == 16 * sum(p.numel() for p in VAANet(ModelConfig(**KW)).parameters())
    assert largest_micro_batch(1e9, 2e9, 10e9) == 6  # (10 * 0.85 - 2) / 1
    hours = gpu_hours(100.0, 10, 100.0)
    assert hours["Table 3 (VE-8, 5 attention presets)"] == 5 * hours["Table 1 (VE-8, full model)"]


def test_estimate_cli_prints_the_table():
    r = subprocess.run([sys.executable, "-m", "vaanet.cli", "estimate", "--config", "configs/synth_quick.yaml",
                        "--gpu-memory", "24"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    for text in ("forward FLOPs per video", "with per-segment checkpointing", "largest micro-batch on a 24 GB GPU",
                 "Table 5 (CE vs PCCE"):
        assert text in r.stdout
