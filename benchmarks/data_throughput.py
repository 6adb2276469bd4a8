"""Data pipeline throughput at the paper's sampling (t=10 segments x k=16 frames, 112x112 crops).

Prints: prepare throughput (videos/s) and training-loader throughput (videos/s, frames/s) for 0, 1
and 2 DataLoader workers, for vaanet's caches (memory-mapped uint8 frames + precomputed MFCC) and
for a loader in the style of the reference code (a JPEG file per frame decoded with PIL, MFCC
computed with librosa from the soundtrack on every sample).

    python benchmarks/data_throughput.py [--videos-per-class 4] [--duration 10] [--work DIR]
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from vaanet.data import EpochSampler, PrepareConfig, SamplingConfig, SynthConfig, VideoEmotionDataset, generate, make_splits, prepare
from vaanet.data.sampling import crop_origin, snippet_indices

T, K, CROP = 10, 16, 112


class ReferenceStyleDataset(Dataset):
    """What the reference code does per sample: open t*k JPEGs with PIL, load the soundtrack with
    librosa and compute its MFCC, tile to 4096 frames."""

    def __init__(self, jpeg_root: Path, wav_root: Path, items):
        self.jpeg_root, self.wav_root, self.items = jpeg_root, wav_root, items

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        import librosa
        from PIL import Image

        vid, n = self.items[i]
        rng = np.random.default_rng(i)
        idx = snippet_indices(n, T, K, rng)
        imgs = [np.asarray(Image.open(self.jpeg_root / vid / f"{j + 1:05d}.jpg").convert("RGB")) for j in idx.reshape(-1)]
        h, w = imgs[0].shape[:2]
        y0, x0 = crop_origin(h, w, CROP, rng)
        clip = np.stack([im[y0:y0 + CROP, x0:x0 + CROP] for im in imgs])
        y, sr = librosa.load(self.wav_root / f"{vid}.wav", sr=44100, mono=True)
        m = librosa.feature.mfcc(y=y, sr=sr, n_mfcc=32, n_fft=2048, hop_length=512).T
        m = m[np.arange(4096) % len(m)]
        return torch.from_numpy(clip), torch.from_numpy(m)


def loader_rate(ds, workers: int, batch: int = 4, sampler=None) -> tuple[float, float]:
    dl = DataLoader(ds, batch_size=batch, num_workers=workers, sampler=sampler, persistent_workers=False)
    start, n = time.perf_counter(), 0
    for b in dl:
        n += len(b["label"]) if isinstance(b, dict) else len(b[0])
    dt = time.perf_counter() - start
    return n / dt, n * T * K / dt


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--videos-per-class", type=int, default=4)
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--fps", type=int, default=25)
    ap.add_argument("--work", default=None, help="folder for the generated set (default: a temp folder)")
    a = ap.parse_args()
    work = Path(a.work or tempfile.mkdtemp(prefix="vaanet-bench-"))
    root, cache = work / "videos", work / "cache"
    torch.set_num_threads(1)
    if not (root / "synth_truth.csv").exists():
        generate(root, SynthConfig(videos_per_class=a.videos_per_class, duration=a.duration, fps=a.fps,
                                   resolutions=((170, 128), (224, 168)), segments=T, key_segments=2))
    n_videos = len(list(root.glob("*/*.mp4")))
    workers = os.cpu_count() or 1
    start = time.perf_counter()
    index = prepare(root, cache, PrepareConfig(short_side=128, workers=workers), log=lambda *_: None)
    prep = time.perf_counter() - start
    split = make_splits(index, cache / "splits", n=1, val_fraction=0.0, log=lambda *_: None)[0]

    # reference-style inputs: one JPEG per frame (same short side) and a wav per video
    import soundfile
    from PIL import Image

    from vaanet.data.ingest import decode_audio

    jpeg_root, wav_root = work / "jpeg", work / "wav"
    wav_root.mkdir(exist_ok=True)
    for _, row in index.iterrows():
        d = jpeg_root / row["video_id"]
        if not d.exists():
            d.mkdir(parents=True)
            for j, img in enumerate(np.load(cache / row["frames_file"])):
                Image.fromarray(img).save(d / f"{j + 1:05d}.jpg", quality=90)
        samples = decode_audio(row["path"], 44100)
        soundfile.write(wav_root / f"{row['video_id']}.wav", samples if samples is not None else np.zeros(44100, np.float32), 44100)

    s = SamplingConfig(segments=T, frames=K, crop_size=CROP, audio_frames=256)
    ours = VideoEmotionDataset(cache, split, "train", s)
    ref = ReferenceStyleDataset(jpeg_root, wav_root, list(zip(index["video_id"], index["frames"])))
    ReferenceStyleDataset.__getitem__(ref, 0)  # librosa/numba warm-up outside the timing

    print(f"set: {n_videos} videos, {a.duration:.0f} s at {a.fps} fps; sampling t={T} k={K} {CROP}x{CROP}; {workers} cores")
    print(f"prepare: {n_videos / prep:.2f} videos/s ({prep:.1f} s, {workers} processes)")
    print(f"{'loader':<28}{'workers':>8}{'videos/s':>12}{'frames/s':>12}")
    for w in (0, 1, 2):
        v, f = loader_rate(ours, w, sampler=EpochSampler(ours, True))
        print(f"{'vaanet (npy + MFCC cache)':<28}{w:>8}{v:>12.1f}{f:>12.0f}")
    for w in (0, 1, 2):
        v, f = loader_rate(ref, w)
        print(f"{'reference (JPEG + librosa)':<28}{w:>8}{v:>12.1f}{f:>12.0f}")


if __name__ == "__main__":
    main()
