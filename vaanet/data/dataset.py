"""Training and evaluation dataset over the caches of ``vaanet prepare``.

Each item (a dict, collated by the default DataLoader collate):
    visual  uint8 [t, 3, k, S, S]      pixels 0-255; the model normalises (see models.pretrained)
    audio   float32 [t, 1, L, n_mfcc]  MFCC windows aligned with the visual snippets
    label   int;  video_id str
    crop    int [4] (y0, x0, frame height, frame width) and flip bool - where the crop came from
    centres float [t] - snippet centre times in seconds
Multi-view evaluation adds a leading view axis V to visual, audio, crop, flip and centres.

Randomness comes from ``numpy.random.default_rng([seed, epoch, index])`` with the (epoch, index)
pair delivered by :class:`EpochSampler`: the samples of an epoch do not depend on the number of
DataLoader workers, and a resumed run draws exactly what an uninterrupted one would have.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset, Sampler

from .frames import check_format, open_frames, open_mfcc
from .ingest import MANIFEST_FILE, load_index
from .sampling import aligned_audio_indices, crop_origin, reference_audio_indices, snippet_indices
from .splits import check_disjoint, load_split


@dataclass
class SamplingConfig:
    segments: int = 10  # t
    frames: int = 16  # k
    crop_size: int = 112
    audio_frames: int = 256  # L, MFCC frames per segment (256 = 2.97 s, as the reference)
    audio_alignment: str = "aligned"  # or "reference": tiled, not aligned with the visual segments
    temporal_views: int = 1  # evaluation: snippet offsets per segment
    spatial_views: int = 1  # evaluation: 1 (centre) or 3 (start, centre, end of the long side)
    samples_per_video: int = 1  # training: draws per video per epoch

    def __post_init__(self):
        if self.audio_alignment not in ("aligned", "reference"):
            raise ValueError(f"audio_alignment must be 'aligned' or 'reference', got {self.audio_alignment!r}")
        if self.spatial_views not in (1, 3):
            raise ValueError(f"spatial_views must be 1 or 3, got {self.spatial_views}")
        for name in ("segments", "frames", "crop_size", "audio_frames", "temporal_views", "samples_per_video"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


class VideoEmotionDataset(Dataset):
    def __init__(self, cache: str | Path, split: str | Path | pd.DataFrame, subset: str,
                 sampling: SamplingConfig = SamplingConfig(), train: bool | None = None, seed: int = 0,
                 visual: bool = True, audio: bool = True, classes: tuple[str, ...] | None = None):
        self.cache = Path(cache)
        self.sampling, self.seed = sampling, seed
        self.train = (subset == "train") if train is None else train
        self.visual, self.audio = visual, audio
        index = load_index(self.cache).set_index("video_id")
        frame = split if isinstance(split, pd.DataFrame) else load_split(split)
        check_disjoint(frame, "the split DataFrame" if isinstance(split, pd.DataFrame) else split)
        ids = frame.loc[frame["subset"] == subset, "video_id"].tolist()
        missing = [v for v in ids if v not in index.index]
        if missing:
            raise ValueError(f"{len(missing)} videos of the split are not in {self.cache}/index.csv "
                             f"(first: {missing[:3]}); was the split made from another cache?")
        if not ids:
            raise ValueError(f"subset {subset!r} of the split is empty")
        self.items = index.loc[ids].reset_index()
        if classes is not None:  # the labels mean the config's classes (a cache of another data set would not)
            named = self.items["label"].map(lambda i: classes[i] if 0 <= i < len(classes) else None)
            wrong = self.items[named != self.items["class_name"]]
            if len(wrong):
                r = wrong.iloc[0]
                raise ValueError(f"{self.cache}/index.csv labels {r['class_name']} as class {r['label']}, which is "
                                 f"{named[wrong.index[0]]!r} in the config's data set ({len(classes)} classes: "
                                 f"{', '.join(classes)}); set data.dataset to the data set the cache was prepared "
                                 "from (its prepare.json says which)")
        manifest = json.loads((self.cache / MANIFEST_FILE).read_text())
        self.mfcc_fps = manifest["sample_rate"] / manifest["hop"]
        self.n_mfcc = manifest["n_mfcc"]
        self.frames_format = check_format(manifest.get("frames", "raw"), self.cache / MANIFEST_FILE, load_decoder=True)
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.items) * (self.sampling.samples_per_video if self.train else 1)

    @property
    def labels(self) -> np.ndarray:
        return self.items["label"].to_numpy()

    def _views(self, rng):
        s = self.sampling
        if rng is not None:
            return [(None, None)]
        offsets = [(j + 0.5) / s.temporal_views for j in range(s.temporal_views)] if s.temporal_views > 1 else [0.5]
        positions = [0.0, 0.5, 1.0] if s.spatial_views == 3 else [0.5]
        return [(o, p) for o in offsets for p in positions]

    def _load(self, row, rng, offset, position):
        s = self.sampling
        out = {}
        n_frames, fps = int(row["frames"]), float(row["fps"])
        idx = snippet_indices(n_frames, s.segments, s.frames, rng, offset if offset is not None else 0.5)
        centres = (idx[:, 0] + s.frames / 2) / fps
        out["centres"] = torch.tensor(centres, dtype=torch.float32)
        if self.visual:
            frames = open_frames(self.cache / row["frames_file"], self.frames_format)
            H, W = frames.shape[1:3]
            y0, x0 = crop_origin(H, W, s.crop_size, rng, position if position is not None else 0.5)
            clip = frames[idx.reshape(-1), y0:y0 + s.crop_size, x0:x0 + s.crop_size]  # [t*k, S, S, 3]
            flip = bool(rng.integers(2)) if rng is not None else False
            if flip:  # one draw per video: every frame flipped alike
                clip = clip[:, :, ::-1]
            clip = torch.from_numpy(np.ascontiguousarray(clip)).view(s.segments, s.frames, s.crop_size, s.crop_size, 3)
            out["visual"] = clip.permute(0, 4, 1, 2, 3).contiguous()  # [t, 3, k, S, S]
            out["crop"] = torch.tensor([y0, x0, H, W])
            out["flip"] = torch.tensor(flip)
        if self.audio:
            mfcc = open_mfcc(self.cache / row["mfcc_file"])
            if s.audio_alignment == "aligned":
                aidx = aligned_audio_indices(len(mfcc), centres, self.mfcc_fps, s.audio_frames)
            else:
                aidx = reference_audio_indices(len(mfcc), s.segments, s.audio_frames)
            a = torch.from_numpy(np.ascontiguousarray(mfcc[aidx.reshape(-1)], dtype=np.float32))
            out["audio"] = a.view(s.segments, 1, s.audio_frames, self.n_mfcc)  # [t, 1, L, n_mfcc]
        return out

    def __getitem__(self, key):
        epoch, i = key if isinstance(key, tuple) else (self.epoch, key)
        row = self.items.iloc[i % len(self.items)]
        rng = np.random.default_rng([self.seed, epoch, i]) if self.train else None
        views = [self._load(row, rng, o, p) for o, p in self._views(rng)]
        item = views[0] if len(views) == 1 else {k: torch.stack([v[k] for v in views]) for k in views[0]}
        item["label"] = int(row["label"])
        item["video_id"] = str(row["video_id"])
        return item


class EpochSampler(Sampler):
    """Yields (epoch, index) pairs: a seeded shuffle per epoch, sharded over ``world_size`` ranks
    (each rank gets the same number of items, padding by wrap-around as DistributedSampler does)."""

    def __init__(self, dataset: Dataset, shuffle: bool, seed: int = 0, rank: int = 0, world_size: int = 1):
        self.n, self.shuffle, self.seed = len(dataset), shuffle, seed
        self.rank, self.world_size, self.epoch = rank, world_size, 0
        self.per_rank = math.ceil(self.n / world_size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.per_rank

    def __iter__(self):
        if self.shuffle:
            order = np.random.default_rng([self.seed, self.epoch, 7]).permutation(self.n)
        else:
            order = np.arange(self.n)
        order = np.resize(order, self.per_rank * self.world_size)[self.rank::self.world_size]
        return iter((self.epoch, int(i)) for i in order)
