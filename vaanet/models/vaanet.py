"""VAANet (Zhao et al., AAAI 2020): visual 3D ResNet with spatial, channel-wise and temporal
attention, audio 2D ResNet-18 with temporal attention, concatenation, one fully connected layer.

Reading guide (B videos, t segments, k frames, crop S, m = h*w positions, n / n' channels):

    visual [B, t, 3, k, S, S] --3D ResNet--> [B*t, n, k', h, w] --mean over k'--> F [B, t, m, n]  (eq. 1)
    A^S = spatial(F)              [B, t, m]    F^S = A^S (x) F                                     (eq. 2-3)
    A^C = channel(F^S)            [B, t, n]    G^C = A^C (x) F^S                                   (eq. 4-6)
    P = mean over m of G^C        [B, t, n]                                                        (eq. 7)
    A^T = visual_temporal(P)      [B, t]       E^V = sum_j p_j A_j^T  [B, n]                       (eq. 8-9)
    audio [B, t, 1, frames, n_mfcc] --ResNet-18--> F^{A'} [B, t, n']
    A^A = audio_temporal(F^{A'})  [B, t]       E^A = sum_j F_j^{A'} A_j^A  [B, n']                 (eq. 10-11)
    logits = fc([E^V, E^A])       [B, C]                                                           (eq. 12-13)

An attention that is switched off is replaced by uniform weights (plain averaging, on the same
scale as the style's attention) and its parameters are not created.
"""
from __future__ import annotations

from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, replace
from typing import NamedTuple

import torch
from torch import nn

from .attention import STYLES, ChannelAttention, SpatialAttention, TemporalAttention
from .attention.spatial import SPATIAL_INITS
from .audio import AudioResNet18
from .pretrained import PIXEL_NORMALIZATIONS, load_audio_pretrained, load_visual_pretrained
from .resnet3d import DEPTHS, resnet3d

# The paper's ablation rows (Tables 3-5) plus two attention-free baselines.
PRESETS: dict[str, dict[str, bool]] = {
    "V": dict(visual=True, audio=False, spatial_attention=False, channel_attention=False, temporal_attention=False, audio_attention=False),
    "V+A": dict(visual=True, audio=True, spatial_attention=False, channel_attention=False, temporal_attention=False, audio_attention=False),
    "AT": dict(visual=False, audio=True, spatial_attention=False, channel_attention=False, temporal_attention=False, audio_attention=True),
    "VS": dict(visual=True, audio=False, spatial_attention=True, channel_attention=False, temporal_attention=False, audio_attention=False),
    "VS+VCW": dict(visual=True, audio=False, spatial_attention=True, channel_attention=True, temporal_attention=False, audio_attention=False),
    "VS+VCW+VT": dict(visual=True, audio=False, spatial_attention=True, channel_attention=True, temporal_attention=True, audio_attention=False),
    "VS+VCW+VT+AT": dict(visual=True, audio=True, spatial_attention=True, channel_attention=True, temporal_attention=True, audio_attention=True),
}


@dataclass
class ModelConfig:
    """Everything that defines a VAANet. Defaults are the paper's full model on VE-8."""

    num_classes: int = 8
    # visual backbone (Hara 3D ResNet)
    depth: int = 101
    width: float = 1.0
    audio_width: float = 1.0  # audio ResNet-18 channels x this (the paper: 1)
    shortcut: str = "B"
    conv1_t_size: int = 7
    conv1_t_stride: int = 1
    no_max_pool: bool = False
    # sampling the network is built for
    segments: int = 10  # t
    frames: int = 16  # k
    crop_size: int = 112
    # streams and attentions
    visual: bool = True
    audio: bool = True
    spatial_attention: bool = True
    channel_attention: bool = True
    temporal_attention: bool = True
    audio_attention: bool = True
    attention_style: str = "paper"
    reference_channels: int = 512  # reference style: 1x1 reduction n -> this (scaled by width)
    spatial_init: str = "random"  # paper styles: W^{S2}, W^{S1} start random (nn.Linear's) or as an activation saliency (attention/spatial.py)
    temporal_inhibition: float = 0.0  # paper style, visual: W^{T1} starts at (I - (a / t) 1 1^T) / (1 - a) (attention/temporal.py)
    freeze_backbone: bool = False
    # memory switches (see docs/performance.md)
    checkpoint_segments: bool = False  # recompute each segment's backbone activations in backward
    channels_last: bool = False  # channels_last_3d memory format for the 3D convolutions
    # local weight files; pixel normalisation follows the visual weights unless set
    visual_weights: str | None = None
    audio_weights: str | None = None
    pixel_normalization: str | None = None

    def __post_init__(self):
        errors = []
        if self.depth not in DEPTHS:
            errors.append(f"depth must be one of {sorted(DEPTHS)}, got {self.depth}")
        if self.shortcut not in ("A", "B"):
            errors.append(f"shortcut must be 'A' or 'B', got {self.shortcut!r}")
        if self.attention_style not in STYLES:
            errors.append(f"attention_style must be one of {STYLES}, got {self.attention_style!r}")
        if not 0.0 <= self.temporal_inhibition < 1.0:
            errors.append(f"temporal_inhibition must be in [0, 1), got {self.temporal_inhibition}")
        if self.spatial_init not in SPATIAL_INITS:
            errors.append(f"spatial_init must be one of {SPATIAL_INITS}, got {self.spatial_init!r}")
        neutral = {"temporal_inhibition": 0.0, "spatial_init": "random"}
        unused = {k: getattr(self, k) for k, v in neutral.items() if getattr(self, k) != v}
        if self.attention_style == "reference" and unused:  # the effective config is what is recorded
            import warnings

            warnings.warn(f"{', '.join(f'{k}={v}' for k, v in unused.items())}: the paper styles' attention "
                          "initialisation; attention_style=reference has its own, so the model is built (and recorded) "
                          f"with {', '.join(f'{k}={neutral[k]}' for k in unused)}", stacklevel=3)
            for k in unused:
                setattr(self, k, neutral[k])
        if not (self.visual or self.audio):
            errors.append("at least one of visual / audio must be on")
        for name in ("num_classes", "segments", "frames", "crop_size", "reference_channels"):
            if int(getattr(self, name)) < 1:
                errors.append(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.num_classes < 2:
            errors.append(f"num_classes must be >= 2, got {self.num_classes}")
        for name in ("width", "audio_width"):
            if not getattr(self, name) > 0:
                errors.append(f"{name} must be > 0, got {getattr(self, name)}")
        if not self.visual and (self.spatial_attention or self.channel_attention or self.temporal_attention):
            errors.append("visual attentions need visual=True")
        if not self.audio and self.audio_attention:
            errors.append("audio_attention needs audio=True")
        if self.pixel_normalization is not None and self.pixel_normalization not in PIXEL_NORMALIZATIONS:
            errors.append(f"pixel_normalization must be one of {sorted(PIXEL_NORMALIZATIONS)}, got {self.pixel_normalization!r}")
        if errors:
            raise ValueError("invalid model config: " + "; ".join(errors))

    @classmethod
    def from_preset(cls, preset: str, **overrides) -> "ModelConfig":
        if preset not in PRESETS:
            raise ValueError(f"unknown preset {preset!r}; choose one of {list(PRESETS)}")
        return cls(**{**PRESETS[preset], **overrides})

    @property
    def preset(self) -> str | None:
        """The preset name these switches correspond to, if any."""
        switches = {k: getattr(self, k) for k in PRESETS["V"]}
        return next((name for name, p in PRESETS.items() if p == switches), None)

    def with_preset(self, preset: str) -> "ModelConfig":
        if preset not in PRESETS:
            raise ValueError(f"unknown preset {preset!r}; choose one of {list(PRESETS)}")
        return replace(self, **PRESETS[preset])


@contextmanager
def _frozen_bn_stats(module: nn.Module):
    bns = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [(m.momentum, m.num_batches_tracked.clone() if m.num_batches_tracked is not None else None) for m in bns]
    for m in bns:
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, (momentum, tracked) in zip(bns, saved):
            m.momentum = momentum
            if tracked is not None:
                m.num_batches_tracked.copy_(tracked)


def feature_size(crop_size: int, no_max_pool: bool = False) -> int:
    """Side of the conv5 map for a square crop: conv1 /2, max-pool /2, layer2-4 /2 each."""
    s = (crop_size + 2 * 3 - 7) // 2 + 1
    if not no_max_pool:
        s = (s + 2 - 3) // 2 + 1
    for _ in range(3):
        s = (s + 2 - 3) // 2 + 1
    return s


class VAANetOutput(NamedTuple):
    logits: torch.Tensor  # [B, C]
    spatial: torch.Tensor | None  # A^S [B, t, m]   (None without the visual stream)
    channel: torch.Tensor | None  # A^C [B, t, n]
    temporal: torch.Tensor | None  # A^T [B, t]
    audio_temporal: torch.Tensor | None  # A^A [B, t]  (None without the audio stream)


class VAANet(nn.Module):
    """The network of ``cfg``, untrained. The constructor reads no file: :func:`build_model` loads the
    local weight files and fills in the pixel normalisation they were trained with."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        if cfg.visual_weights or cfg.audio_weights:
            raise ValueError("VAANet(cfg) builds an untrained network and reads no file; use "
                             "vaanet.models.build_model(cfg) to load model.visual_weights / model.audio_weights")
        self.cfg = cfg
        style, t = cfg.attention_style, cfg.segments
        embed = 0
        if cfg.visual:
            self.backbone = resnet3d(
                cfg.depth, width=cfg.width, shortcut=cfg.shortcut, conv1_t_size=cfg.conv1_t_size,
                conv1_t_stride=cfg.conv1_t_stride, no_max_pool=cfg.no_max_pool, num_classes=None,
            )
            n = self.backbone.out_channels
            if style == "reference":  # 1x1 Conv1d n -> 512 + BN + ReLU before the attentions
                r = max(1, int(cfg.reference_channels * cfg.width))
                self.reduce = nn.Sequential(nn.Conv1d(n, r, 1, bias=False), nn.BatchNorm1d(r), nn.ReLU(inplace=True))
                n = r
            side = feature_size(cfg.crop_size, cfg.no_max_pool)
            self.m, self.n = side * side, n
            if cfg.spatial_attention:
                self.spatial = SpatialAttention(n, self.m, style, cfg.spatial_init)
            if cfg.channel_attention:
                self.channel = ChannelAttention(n, self.m, style)
            if cfg.temporal_attention:
                self.visual_temporal = TemporalAttention(n, t, style, cfg.temporal_inhibition)
            embed += n
        if cfg.audio:
            self.audio_backbone = AudioResNet18(cfg.audio_width)
            n_a = self.audio_backbone.out_channels
            if style == "reference":  # Linear 512 -> 256 + BN + tanh
                self.audio_reduce = nn.Sequential(nn.Linear(n_a, n_a // 2, bias=False), nn.BatchNorm1d(n_a // 2), nn.Tanh())
                n_a //= 2
            if cfg.audio_attention:
                self.audio_temporal = TemporalAttention(n_a, t, style)
            self.n_audio = n_a
            embed += n_a
        self.fc = nn.Linear(embed, cfg.num_classes)

        self.register_buffer("pixel_scale", torch.ones(()), persistent=False)
        self.register_buffer("pixel_mean", torch.zeros(1, 3, 1, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.ones(1, 3, 1, 1, 1), persistent=False)
        self.set_pixel_normalization(cfg.pixel_normalization or DEFAULT_PIXEL_NORMALIZATION)

        if cfg.freeze_backbone and cfg.visual:
            self.backbone.requires_grad_(False)
        if cfg.channels_last and cfg.visual:
            self.backbone.to(memory_format=torch.channels_last_3d)

    @property
    def pixel_normalization(self) -> str:
        return self.cfg.pixel_normalization

    def set_pixel_normalization(self, name: str) -> None:
        """Pixels 0-255 -> the input statistics the visual weights were trained with; recorded in ``cfg``."""
        norm = PIXEL_NORMALIZATIONS[name]
        self.cfg = replace(self.cfg, pixel_normalization=name)
        self.pixel_scale.fill_(norm.scale)
        self.pixel_mean.copy_(torch.tensor(norm.mean).view(1, 3, 1, 1, 1))
        self.pixel_std.copy_(torch.tensor(norm.std).view(1, 3, 1, 1, 1))

    def train(self, mode: bool = True):
        super().train(mode)
        if self.cfg.freeze_backbone and self.cfg.visual:
            self.backbone.eval()  # frozen means frozen: BatchNorm statistics do not move either
        return self

    # ---- streams -------------------------------------------------------------------------------
    def visual_features(self, visual: torch.Tensor) -> torch.Tensor:
        """visual [B, t, 3, k, S, S], pixels 0-255 (uint8 or float) -> F [B, t, m, n] (eq. 1)."""
        B, t = visual.shape[:2]
        x = visual.flatten(0, 1).float()  # [B*t, 3, k, S, S]
        x = (x * self.pixel_scale - self.pixel_mean) / self.pixel_std
        if self.cfg.channels_last:
            x = x.contiguous(memory_format=torch.channels_last_3d)
        if self.cfg.checkpoint_segments and torch.is_grad_enabled():
            fmap = self._checkpointed_features(x.view(B, t, *x.shape[1:])).mean(dim=2)
        else:
            fmap = self.backbone.features(x).mean(dim=2)  # super-frame [B*t, n, h, w]
        fmap = fmap.flatten(2)  # [B*t, n, m]
        if self.cfg.attention_style == "reference":
            fmap = self.reduce(fmap)
        return fmap.transpose(1, 2).reshape(B, t, fmap.shape[2], fmap.shape[1])

    def _checkpointed_features(self, x: torch.Tensor) -> torch.Tensor:
        """Per-segment activation checkpointing: only each segment's input is kept; its backbone
        activations are recomputed in backward, one segment at a time. x: [B, t, 3, k, S, S].

        The recomputation runs with BatchNorm momentum 0, so running statistics are updated once, not
        twice. In training mode BatchNorm normalises each segment's B clips together (rather than all
        B*t clips), like a smaller batch would; in eval mode (or with a frozen backbone) the result is
        identical to the plain computation.
        """
        from torch.utils.checkpoint import checkpoint

        outs = [checkpoint(self.backbone.features, x[:, i], use_reentrant=False, context_fn=self._recompute_context)
                for i in range(x.shape[1])]
        return torch.stack(outs, dim=1).flatten(0, 1)  # [B*t, n, k', h, w]

    def _recompute_context(self):
        return nullcontext(), _frozen_bn_stats(self.backbone)

    def visual_stream(self, visual: torch.Tensor):
        F = self.visual_features(visual)  # [B, t, m, n]
        B, t, m, n = F.shape
        if m != self.m:
            raise ValueError(
                f"visual input gives {m} feature positions but the model was built for {self.m} "
                f"(crop_size={self.cfg.crop_size}); input shape {tuple(visual.shape)}"
            )
        # A^S / A^C are returned as the style defines them (paper: distributions); the features are
        # weighted by gain x A, gain = m / n in the paper style (see attention/spatial.py), so that an
        # attention that is switched off (uniform weights) leaves the features unchanged in every style
        # except paper_literal, which keeps the equations' 1/m and 1/n.
        sums = self.cfg.attention_style != "reference"  # softmax outputs sum to 1 (else to m, n)
        gain_m, gain_n = (float(m), float(n)) if self.cfg.attention_style == "paper" else (1.0, 1.0)
        if self.cfg.spatial_attention:
            A_S = self.spatial(F)
        else:
            A_S = F.new_full((B, t, m), 1.0 / m if sums else 1.0)
        F_S = F * (gain_m * A_S).unsqueeze(-1)  # eq. 3      [B, t, m, n]
        if self.cfg.channel_attention:
            A_C = self.channel(F_S)
        else:
            A_C = F.new_full((B, t, n), 1.0 / n if sums else 1.0)
        G_C = F_S * (gain_n * A_C).unsqueeze(-2)  # eq. 6    [B, t, m, n]
        P = G_C.mean(dim=2)  # eq. 7, spatial average pooling [B, t, n]
        if self.cfg.temporal_attention:
            A_T = self.visual_temporal(P)
            E_V = self.visual_temporal.pool(P, A_T)  # eq. 9  [B, n]
        else:
            A_T = F.new_full((B, t), 1.0 / t)
            E_V = (P * A_T.unsqueeze(-1)).sum(dim=1)
        return E_V, A_S, A_C, A_T

    def audio_stream(self, audio: torch.Tensor):
        """audio [B, t, 1, frames, n_mfcc] -> E^A [B, n'], A^A [B, t]."""
        B, t = audio.shape[:2]
        if t != self.cfg.segments:
            raise ValueError(f"audio has {t} segments, the model was built for {self.cfg.segments}")
        F_A = self.audio_backbone(audio.flatten(0, 1).float())  # [B*t, 512]
        if self.cfg.attention_style == "reference":
            F_A = self.audio_reduce(F_A)
        F_A = F_A.reshape(B, t, -1)  # F^{A'}                [B, t, n']
        if self.cfg.audio_attention:
            A_A = self.audio_temporal(F_A)
            E_A = self.audio_temporal.pool(F_A, A_A)  # eq. 11
        else:
            A_A = F_A.new_full((B, t), 1.0 / t)
            E_A = (F_A * A_A.unsqueeze(-1)).sum(dim=1)
        return E_A, A_A

    def forward(self, visual: torch.Tensor | None = None, audio: torch.Tensor | None = None) -> VAANetOutput:
        cfg = self.cfg
        parts, maps = [], dict(spatial=None, channel=None, temporal=None, audio_temporal=None)
        if cfg.visual:
            if visual is None or visual.dim() != 6 or visual.shape[1] != cfg.segments or visual.shape[2] != 3:
                raise ValueError(
                    f"visual input must be [B, t={cfg.segments}, 3, k, H, W], got "
                    f"{None if visual is None else tuple(visual.shape)}"
                )
            E_V, maps["spatial"], maps["channel"], maps["temporal"] = self.visual_stream(visual)
            parts.append(E_V)
        if cfg.audio:
            if audio is None or audio.dim() != 5 or audio.shape[2] != 1:
                raise ValueError(
                    f"audio input must be [B, t={cfg.segments}, 1, frames, n_mfcc], got "
                    f"{None if audio is None else tuple(audio.shape)}"
                )
            E_A, maps["audio_temporal"] = self.audio_stream(audio)
            parts.append(E_A)
        E = torch.cat(parts, dim=1)  # E = [E^V, E^A]
        return VAANetOutput(self.fc(E), **maps)


DEFAULT_PIXEL_NORMALIZATION = "kinetics700_0_1"  # no weights and nothing set: Hara's 2020 statistics


def build_model(cfg: ModelConfig) -> VAANet:
    """Builder: the network of ``cfg`` with its local weight files loaded (nothing is downloaded).

    ``model.cfg`` is the *effective* configuration: the pixel normalisation is the one set in ``cfg``,
    else the one the visual weights were trained with (detected from the file), else the default.
    Save ``model.cfg`` with a checkpoint: rebuilt from it, the network sees the same pixels."""
    model = VAANet(replace(cfg, visual_weights=None, audio_weights=None))
    norm = cfg.pixel_normalization
    if cfg.visual and cfg.visual_weights:
        detected = load_visual_pretrained(model.backbone, cfg.visual_weights)
        norm = norm or detected
    if cfg.audio and cfg.audio_weights:
        load_audio_pretrained(model.audio_backbone, cfg.audio_weights)
    model.cfg = replace(cfg, pixel_normalization=norm or DEFAULT_PIXEL_NORMALIZATION)
    model.set_pixel_normalization(model.cfg.pixel_normalization)
    return model


def vaanet(preset: str = "VS+VCW+VT+AT", **overrides) -> VAANet:
    """Builder: ``vaanet("VS+VCW", depth=10, width=0.125)`` (weight files in ``overrides`` are loaded)."""
    return build_model(ModelConfig.from_preset(preset, **overrides))


__all__ = ["VAANet", "VAANetOutput", "ModelConfig", "PRESETS", "vaanet", "build_model", "feature_size",
           "DEFAULT_PIXEL_NORMALIZATION"]
