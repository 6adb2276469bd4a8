"""Loading pretrained weights from local files (nothing is downloaded).

Visual: Hara's Kinetics checkpoints, in either of the two formats users bring
  * ``resnet-101-kinetics.pth`` (old): ``{'state_dict': ...}`` with keys prefixed ``module.``,
    400-way fc, trained on 0-255 pixels minus the per-channel mean [114.7748, 107.7354, 99.4750];
  * ``r3d101_K_200ep.pth`` / ``r3d101_KM_200ep.pth`` (new): no prefix, 700/1039-way fc, trained on
    0-1 pixels normalised with mean [0.4345, 0.4051, 0.3775], std [0.2768, 0.2713, 0.2737].
Audio: a torchvision ResNet-18 ImageNet state_dict; its 3-channel conv1 and fc are not loaded.

The fc is always dropped; every other tensor must match by name and shape, or the load fails with
an error naming the file and the first mismatches (never a silent partial load).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .resnet3d import DEPTHS


@dataclass(frozen=True)
class PixelNormalization:
    """normalised = (pixel_0_255 * scale - mean) / std, per RGB channel."""

    scale: float
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


PIXEL_NORMALIZATIONS: dict[str, PixelNormalization] = {
    # Hara et al. old release (resnet-*-kinetics.pth): 0-255 minus mean.
    "kinetics400_0_255": PixelNormalization(1.0, (114.7748, 107.7354, 99.4750), (1.0, 1.0, 1.0)),
    # Hara et al. 2020 release (r3d*_K_200ep.pth, r3d*_KM_200ep.pth): 0-1 with mean/std.
    "kinetics700_0_1": PixelNormalization(
        1.0 / 255.0, (0.4345, 0.4051, 0.3775), (0.2768, 0.2713, 0.2737)
    ),
    # The VAANet reference code: 0-255 minus a scalar 100.
    "reference_minus_100": PixelNormalization(1.0, (100.0, 100.0, 100.0), (1.0, 1.0, 1.0)),
}


class CheckpointError(ValueError):
    """A weight file that cannot be loaded into the model it was given to."""


def _read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"pretrained weights not found: {path}. Nothing is downloaded; put the file there "
            "or fix the path in the config."
        )
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises many types for a bad file
        raise CheckpointError(
            f"{path} is not a readable PyTorch checkpoint ({type(e).__name__}: {str(e)[:200]}). "
            "Expected a .pth file saved with torch.save."
        ) from e
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(
            f"{path} holds no state_dict (found {type(obj).__name__}); expected a dict of tensors "
            "or {'state_dict': ...}."
        )
    return obj


def _infer_depth(keys: list[str]) -> int | None:
    blocks = []
    for stage in (1, 2, 3, 4):
        idx = {int(k.split(".")[1]) for k in keys if k.startswith(f"layer{stage}.")}
        blocks.append(max(idx) + 1 if idx else 0)
    bottleneck = any(k.endswith("conv3.weight") for k in keys)
    for depth, (block, layers) in DEPTHS.items():
        if layers == blocks and (block.expansion == 4) == bottleneck:
            return depth
    return None


def _check_and_load(module: nn.Module, state: dict[str, torch.Tensor], path: Path, skip: tuple[str, ...], hint: str) -> None:
    state = {k: v for k, v in state.items() if not k.startswith(skip)}
    own = {k: v for k, v in module.state_dict().items() if not k.startswith(skip)}
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state and state[k].shape != own[k].shape
    ]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys (first: {missing[:3]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys (first: {unexpected[:3]})")
        if shapes:
            parts.append(f"{len(shapes)} shape mismatches (first: {shapes[:2]})")
        raise CheckpointError(f"{path} does not match the model: {'; '.join(parts)}. {hint}")
    module.load_state_dict(state, strict=False)


def load_visual_pretrained(backbone: nn.Module, path: str | Path) -> str:
    """Load a Hara 3D-ResNet checkpoint into ``backbone``; returns the pixel-normalisation name
    (a key of :data:`PIXEL_NORMALIZATIONS`) that the weights were trained with."""
    path = Path(path)
    state = _read_state_dict(path)
    old_format = any(k.startswith("module.") for k in state)
    state = {k.removeprefix("module."): v for k, v in state.items()}
    depth = _infer_depth(list(state))
    hint = (
        f"The file looks like a depth-{depth} 3D ResNet; set model.depth={depth} (and the matching "
        "width/shortcut) or use weights for the configured depth."
        if depth is not None
        else "Is this a 3D ResNet checkpoint of Hara et al.?"
    )
    _check_and_load(backbone, state, path, skip=("fc.",), hint=hint)
    if old_format:
        return "kinetics400_0_255"
    fc = state.get("fc.weight")
    return "kinetics400_0_255" if fc is not None and fc.shape[0] == 400 else "kinetics700_0_1"


def load_audio_pretrained(audio: nn.Module, path: str | Path) -> None:
    """Load torchvision ResNet-18 ImageNet weights into the audio stream (conv1 and fc skipped)."""
    path = Path(path)
    state = _read_state_dict(path)
    state = {"net." + k.removeprefix("module."): v for k, v in state.items()}
    _check_and_load(
        audio, state, path, skip=("net.conv1.", "net.fc."),
        hint="Expected torchvision's resnet18 ImageNet state_dict (resnet18-*.pth), which fits model.audio_width=1 only.",
    )
