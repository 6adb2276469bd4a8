"""Data pipeline throughput at the paper's sampling (t=10 segments x k=16 frames, 112x112 crops), per frame
cache format.

Prints, in one run, one row per frame storage format of ``vaanet prepare --frames`` (and JPEG at a
lower quality, as a measured alternative): bytes per video-hour, compression ratio against raw uint8,
PSNR against raw, and training-loader throughput (videos/s, frames/s) for 0, 1 and 2 DataLoader
workers (0 workers = one core: torch uses 1 thread). The last rows are a loader in the style of the
reference code (a JPEG file per frame decoded with PIL, MFCC computed with librosa on every sample).
A second table gives the same sizes on natural photographs (the photos bundled with scikit-learn and
matplotlib, panned and zoomed into 128x171 clips), since the synthetic set's per-pixel noise is
the worst case for JPEG.

    python benchmarks/data_throughput.py [--videos-per-class 4] [--duration 10] [--work DIR] [--workers 0,1,2]
"""
from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from vaanet.data import EpochSampler, PrepareConfig, SamplingConfig, SynthConfig, VideoEmotionDataset, generate, make_splits, prepare
from vaanet.data.frames import FILE_NAMES, FORMATS, open_frames, write_frames
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


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def natural_clips(n_frames: int = 60, short: int = 128, long: int = 171):
    """Slow pan + zoom over the natural photos bundled with scikit-learn / matplotlib, as uint8 clips."""
    from PIL import Image

    paths = []
    for mod, rel in (("sklearn", "datasets/images/china.jpg"), ("sklearn", "datasets/images/flower.jpg"),
                     ("matplotlib", "mpl-data/sample_data/grace_hopper.jpg")):
        try:
            paths.append(Path(__import__(mod).__file__).parent / rel)
        except ImportError:
            pass
    clips = []
    for p in (p for p in paths if p.exists()):
        img = Image.open(p).convert("RGB")
        w, h = img.size
        frames = []
        for t in range(n_frames):
            z = 0.7 + 0.2 * t / n_frames  # zoom in while panning right
            cw, ch = int(w * z), int(w * z * short / long)
            ch = min(ch, h)
            x0 = int((w - cw) * t / n_frames)
            y0 = (h - ch) // 2
            frames.append(np.asarray(img.crop((x0, y0, x0 + cw, y0 + ch)).resize((long, short), Image.BILINEAR)))
        clips.append(np.stack(frames))
    return clips


class H264Frames:
    """Candidate format measured here, not offered by ``vaanet prepare``: the frames re-encoded as H.264
    (libx264, crf ``CRF``, a keyframe every ``GOP`` frames, no B-frames; edges padded to even sizes),
    read by seeking to the keyframe before each contiguous run of requested frames."""

    GOP, CRF, RATE = K, 18, 25

    @classmethod
    def write(cls, path: Path, frames: np.ndarray) -> Path:
        import av
        from fractions import Fraction

        T, H, W, _ = frames.shape
        padded = np.pad(frames, ((0, 0), (0, H % 2), (0, W % 2), (0, 0)), mode="edge")
        with av.open(str(path), "w", format="matroska") as c:
            st = c.add_stream("libx264", rate=cls.RATE)
            st.width, st.height, st.pix_fmt = W + W % 2, H + H % 2, "yuv420p"
            st.options = {"crf": str(cls.CRF), "preset": "fast", "g": str(cls.GOP), "keyint_min": str(cls.GOP),
                          "sc_threshold": "0", "bframes": "0"}
            st.codec_context.time_base = Fraction(1, cls.RATE)
            for i, f in enumerate(padded):
                vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")
                vf.pts = i
                for pkt in st.encode(vf):
                    c.mux(pkt)
            for pkt in st.encode():
                c.mux(pkt)
        (path.parent / (path.name + ".shape")).write_text(f"{T} {H} {W}")
        return path

    def __init__(self, path: Path):
        self.path = path
        T, H, W = (int(v) for v in (path.parent / (path.name + ".shape")).read_text().split())
        self.shape = (T, H, W, 3)

    def __getitem__(self, key):
        import av

        idx, crop = np.asarray(key[0]), key[1:]
        uniq = np.unique(idx)
        got = {}
        with av.open(str(self.path)) as c:
            st = c.streams.video[0]
            for run in np.split(uniq, np.flatnonzero(np.diff(uniq) != 1) + 1):
                key_frame = run[0] // self.GOP * self.GOP
                c.seek(int(round(key_frame / self.RATE / st.time_base)), stream=st, backward=True, any_frame=False)
                for fr in c.decode(st):
                    i = int(round(fr.time * self.RATE))
                    if i >= run[0]:
                        got[i] = fr.to_ndarray(format="rgb24")[: self.shape[1], : self.shape[2]][crop]
                    if i >= run[-1]:
                        break
        return np.stack([got[i] for i in idx])


def reader_rate(readers: list, repeats: int, seed: int = 0) -> float:
    """Frames/s of reading t x k sampled frames, cropped, per video, on one core (best of ``repeats``)."""
    best = 0.0
    for r in range(repeats):
        rng = np.random.default_rng([seed, r])
        start, n = time.perf_counter(), 0
        for f in readers:
            T_, H, W = f.shape[:3]
            idx = snippet_indices(T_, T, K, rng).reshape(-1)
            y0, x0 = crop_origin(H, W, CROP, rng)
            n += len(f[idx, y0:y0 + CROP, x0:x0 + CROP])
        best = max(best, n / (time.perf_counter() - start))
    return best


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--videos-per-class", type=int, default=4)
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--fps", type=int, default=25)
    ap.add_argument("--work", default=None, help="folder for the generated set (default: a temp folder)")
    ap.add_argument("--workers", default="0,1,2", help="DataLoader worker counts to time")
    ap.add_argument("--repeats", type=int, default=2, help="timed epochs per row (the best is printed)")
    a = ap.parse_args()
    work = Path(a.work or tempfile.mkdtemp(prefix="vaanet-bench-"))
    root = work / "videos"
    torch.set_num_threads(1)
    if not (root / "synth_truth.csv").exists():
        generate(root, SynthConfig(videos_per_class=a.videos_per_class, duration=a.duration, fps=a.fps,
                                   resolutions=((170, 128), (224, 168)), segments=T, key_segments=2))
    n_videos = len(list(root.glob("*/*.mp4")))
    workers = os.cpu_count() or 1
    caches, prep = {}, {}
    for fmt in FORMATS:
        caches[fmt] = work / f"cache_{fmt}"
        start = time.perf_counter()
        index = prepare(root, caches[fmt], PrepareConfig(short_side=128, workers=workers, frames=fmt), log=lambda *_: None)
        prep[fmt] = time.perf_counter() - start
    split = make_splits(index, work / "splits", n=1, val_fraction=0.0, log=lambda *_: None)[0]
    hours = index["duration"].sum() / 3600

    # each video's raw frames (the index holds the last prepared cache's absolute paths: name them by video id)
    raw_files = {r["video_id"]: caches["raw"] / f"videos/{r['video_id']}/{FILE_NAMES['raw']}" for _, r in index.iterrows()}
    # JPEG at quality 75: the jpeg cache with every frame file re-encoded from the raw frames
    caches["jpeg q75"] = work / "cache_jpeg_q75"
    if not caches["jpeg q75"].exists():
        shutil.copytree(caches["jpeg"], caches["jpeg q75"])
        for v, raw in raw_files.items():
            write_frames(caches["jpeg q75"] / f"videos/{v}", np.load(raw), "jpeg", quality=75)

    # reference-style inputs: one JPEG per frame (same short side, quality 90) and a wav per video
    import soundfile
    from PIL import Image

    from vaanet.data.decode import decode_audio

    jpeg_root, wav_root = work / "jpeg", work / "wav"
    wav_root.mkdir(exist_ok=True)
    for _, row in index.iterrows():
        d = jpeg_root / row["video_id"]
        if not d.exists():
            d.mkdir(parents=True)
            for j, img in enumerate(np.load(raw_files[row["video_id"]])):
                Image.fromarray(img).save(d / f"{j + 1:05d}.jpg", quality=90)
        samples = decode_audio(row["path"], 44100)
        soundfile.write(wav_root / f"{row['video_id']}.wav", samples if samples is not None else np.zeros(44100, np.float32), 44100)

    # the H.264 candidate, re-encoded from the raw frames
    h264_root = work / "h264"
    h264_root.mkdir(exist_ok=True)
    h264 = {}
    for v, f in raw_files.items():
        path = h264_root / f"{v}.mkv"
        h264[v] = path if path.exists() else H264Frames.write(path, np.load(f))

    s = SamplingConfig(segments=T, frames=K, crop_size=CROP, audio_frames=256)
    ref = ReferenceStyleDataset(jpeg_root, wav_root, list(zip(index["video_id"], index["frames"])))
    ReferenceStyleDataset.__getitem__(ref, 0)  # librosa/numba warm-up outside the timing
    worker_counts = [int(w) for w in a.workers.split(",")]
    videos = sorted(raw_files)

    class PilFolder:  # the reference code's frame reading: a JPEG file per frame, PIL
        def __init__(self, v):
            self.d, n = jpeg_root / v, len(list((jpeg_root / v).glob("*.jpg")))
            self.shape = (n,) + np.load(raw_files[v], mmap_mode="r").shape[1:]

        def __getitem__(self, key):
            return np.stack([np.asarray(Image.open(self.d / f"{j + 1:05d}.jpg").convert("RGB"))[key[1:]] for j in key[0]])

    rows = {  # name: (bytes, {video: reader factory}, loader dataset or None)
        "raw (npy, memory-mapped)": ("raw", caches["raw"]),
        "jpeg q90 (packed, decode_jpeg)": ("jpeg", caches["jpeg"]),
        "jpeg q75 (packed, decode_jpeg)": ("jpeg", caches["jpeg q75"]),
    }
    table = []
    for name, (fmt, cache) in rows.items():
        files = {v: cache / f"videos/{v}/{FILE_NAMES[fmt]}" for v in videos}
        table.append((name, sum(f.stat().st_size for f in files.values()),
                      lambda v, files=files, fmt=fmt: open_frames(files[v], fmt), VideoEmotionDataset(cache, split, "train", s)))
    table.append((f"h264 crf {H264Frames.CRF} gop {H264Frames.GOP} (PyAV seek)", sum(p.stat().st_size for p in h264.values()),
                  lambda v: H264Frames(h264[v]), None))
    table.append(("reference (JPEG files + PIL)", sum(p.stat().st_size for p in jpeg_root.glob("*/*.jpg")), PilFolder, ref))

    print(f"set: {n_videos} videos, {a.duration:.0f} s at {a.fps} fps, short side 128 ({hours * 60:.1f} video-minutes); "
          f"sampling t={T} k={K} {CROP}x{CROP}; {workers} cores; best of {a.repeats}")
    print("prepare: " + ", ".join(f"{f} {n_videos / t:.2f} videos/s" for f, t in prep.items()) + f" ({workers} processes)")
    print("reader = t*k sampled, cropped frames per video read on one core; loader = VideoEmotionDataset "
          "(+ MFCC) through a DataLoader with w workers (w=0: one core); frames/s")
    head = f"{'format':<34}{'GB/video-hour':>14}{'ratio':>7}{'min PSNR':>9}{'reader':>8}"
    print(head + "".join(f"{'loader w=' + str(w):>12}" for w in worker_counts))
    raw_size = table[0][1]
    best = {}  # rounds interleave the rows, so that all see the same load on a shared machine
    for r in range(a.repeats):
        for name, size, reader, ds in table:
            rates = [reader_rate([reader(v) for v in videos], 1, seed=r)]
            for w in worker_counts:
                if ds is not None:
                    sampler = EpochSampler(ds, True) if isinstance(ds, VideoEmotionDataset) else None
                    rates.append(loader_rate(ds, w, sampler=sampler)[1])
            best[name] = np.maximum(best.get(name, 0), rates)
    for name, size, reader, ds in table:
        some = videos[:: max(1, len(videos) // 6)]
        q = min(psnr(reader(v)[np.arange(reader(v).shape[0]), :, :], np.load(raw_files[v])) for v in some)
        rates = list(best[name]) + [float("nan")] * (1 + len(worker_counts) - len(best[name]))
        print(f"{name:<34}{size / 1e9 / hours:>14.3f}{raw_size / size:>6.1f}x{q:>9.1f}{rates[0]:>8.0f}"
              + "".join(f"{v:>12.0f}" for v in rates[1:]), flush=True)
    per_core = {name: best[name][1] / best[table[0][0]][1] for name, _, _, ds in table if ds is not None}
    print(f"loader frames/s (w={worker_counts[0]}; w=0 is one core) relative to raw: " + ", ".join(f"{n.split(' (')[0]} {v:.0%}" for n, v in per_core.items()))

    clips = natural_clips()
    if clips:
        n = sum(len(c) for c in clips)
        print(f"natural photos panned into {len(clips)} clips of {len(clips[0])} frames at 128x171 "
              f"(GB/video-hour at {a.fps} fps):")
        print(f"{'format':<30}{'GB/video-hour':>14}{'ratio':>7}{'min PSNR':>9}")
        tmp = Path(tempfile.mkdtemp(prefix="vaanet-natural-", dir=work))
        for name, fmt, quality in (("raw", "raw", 90), ("jpeg q90", "jpeg", 90), ("jpeg q75", "jpeg", 75),
                                   (f"h264 crf {H264Frames.CRF} gop {H264Frames.GOP}", "h264", 0)):
            size, worst = 0, float("inf")
            for c in clips:
                if fmt == "h264":
                    path = H264Frames.write(tmp / "clip.mkv", c)
                    decoded = H264Frames(path)[np.arange(len(c)), :, :]
                else:
                    path = tmp / write_frames(tmp, c, fmt, quality)
                    decoded = open_frames(path, fmt)[:]
                size += path.stat().st_size
                worst = min(worst, psnr(decoded, c))
            per_hour = size / n * a.fps * 3600
            raw_hour = clips[0][0].size * a.fps * 3600
            print(f"{name:<30}{per_hour / 1e9:>14.3f}{raw_hour / per_hour:>6.1f}x{worst:>9.1f}")
        shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
