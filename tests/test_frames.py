"""Frame cache formats: raw .npy and packed JPEG give the same training batches; broken caches explain the fix."""
import json
import shutil

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from vaanet.data import EpochSampler, PrepareConfig, SamplingConfig, VideoEmotionDataset, load_index, prepare
from vaanet.data.frames import FORMATS, FrameCacheError, JpegFrames, open_frames, write_frames

QUIET = dict(log=lambda *_: None)
PSNR_BOUND = 30.0  # dB at quality 90; measured: min 32.9, mean 34.0 on the planted-evidence synthetic set (its
# per-pixel noise is JPEG's worst case), min 33.7 on natural photos (benchmarks/data_throughput.py)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


@pytest.fixture(scope="module")
def jpeg_cache(synth_root, synth_cache, tmp_path_factory):
    """The synthetic set prepared as JPEG, with the same settings and splits as the raw ``synth_cache``."""
    cache = tmp_path_factory.mktemp("jpeg_cache")
    prepare(synth_root, cache, PrepareConfig(short_side=40, workers=2, frames="jpeg"), **QUIET)
    shutil.copytree(synth_cache / "splits", cache / "splits")
    return cache


def _copy(cache, dst):
    shutil.copytree(cache, dst, ignore=shutil.ignore_patterns("splits"))
    return dst


def test_jpeg_and_raw_caches_give_the_same_training_batches(synth_cache, jpeg_cache):
    raw_index, jpeg_index = load_index(synth_cache), load_index(jpeg_cache)
    assert json.loads((jpeg_cache / "prepare.json").read_text())["frames"] == "jpeg"
    assert json.loads((synth_cache / "prepare.json").read_text())["frames"] == "raw"
    assert jpeg_index["frames_file"].str.endswith("frames.jpegs").all()
    same = ["video_id", "label", "frames", "fps", "height", "width", "mfcc_frames"]
    assert raw_index[same].equals(jpeg_index[same])
    raw_bytes = sum((synth_cache / f).stat().st_size for f in raw_index["frames_file"])
    jpeg_bytes = sum((jpeg_cache / f).stat().st_size for f in jpeg_index["frames_file"])
    assert jpeg_bytes * 2 < raw_bytes  # tiny noisy 40-pixel frames; real sizes: benchmarks/data_throughput.py

    s = SamplingConfig(segments=4, frames=4, crop_size=32, audio_frames=16, samples_per_video=2)
    split = synth_cache / "splits" / "split_00.csv"

    def batches(cache, workers):
        ds = VideoEmotionDataset(cache, split, "train", s, seed=5)
        sampler = EpochSampler(ds, shuffle=True, seed=5)
        sampler.set_epoch(2)
        return list(DataLoader(ds, batch_size=4, sampler=sampler, num_workers=workers))

    raw, jpeg = batches(synth_cache, 0), batches(jpeg_cache, 2)
    assert len(raw) == len(jpeg) > 1
    values = []
    for a, b in zip(raw, jpeg):
        for key in ("label", "audio", "crop", "flip", "centres"):  # the same sampled indices, crops and flips
            assert torch.equal(a[key], b[key]), key
        assert a["video_id"] == b["video_id"]
        assert a["visual"].shape == b["visual"].shape and b["visual"].dtype == torch.uint8
        values.append(psnr(a["visual"].numpy(), b["visual"].numpy()))
    print(f"PSNR jpeg vs raw batches: min {min(values):.1f} dB, mean {np.mean(values):.1f} dB")
    assert min(values) >= PSNR_BOUND


def test_writer_and_readers_index_alike(tmp_path):
    rng = np.random.default_rng(0)
    y, x = np.mgrid[:36, :50]
    frames = np.stack([np.stack([(x * 5 + t * 3) % 256, (y * 7) % 256, np.full_like(x, 40 * t % 256)], -1)
                       for t in range(9)]).astype(np.uint8)
    frames = np.clip(frames + rng.normal(0, 2, frames.shape), 0, 255).astype(np.uint8)
    for fmt in FORMATS:
        d = tmp_path / fmt
        d.mkdir()
        name = write_frames(d, frames, fmt)
        f = open_frames(d / name, fmt)
        assert f.shape == frames.shape and not list(d.glob("*.tmp"))
        idx = np.array([3, 4, 5, 0, 3, 8, 8])  # runs, wrap-around and repeats, as loop padding draws
        got = f[idx, 2:30, 5:45]
        assert got.shape == (7, 28, 40, 3) and got.dtype == np.uint8
        assert psnr(got, frames[idx, 2:30, 5:45]) >= (35 if fmt == "jpeg" else np.inf)
        np.testing.assert_array_equal(f[8], f[[8]][0])
        if fmt == "jpeg":
            np.testing.assert_array_equal(got[0], got[4])
            np.testing.assert_array_equal(f.decode(idx).numpy()[:, 2:30, 5:45], got)
            assert isinstance(f, JpegFrames) and f.quality == 90
        else:
            np.testing.assert_array_equal(got, frames[idx, 2:30, 5:45])
    with pytest.raises(ValueError, match="uint8"):
        write_frames(tmp_path, frames.astype(np.float32), "jpeg")


def test_truncated_or_corrupt_frame_files_name_the_file_and_the_fix(synth_cache, jpeg_cache, tmp_path):
    s = SamplingConfig(segments=2, frames=4, crop_size=32, audio_frames=8)
    for cache in (jpeg_cache, synth_cache):
        bad = _copy(cache, tmp_path / cache.name)
        ds = VideoEmotionDataset(bad, synth_cache / "splits" / "split_00.csv", "test", s)
        path = bad / ds.items.iloc[0]["frames_file"]
        data = path.read_bytes()
        path.write_bytes(data[: len(data) * 2 // 3])  # truncated, as by a full disk or a killed copy
        with pytest.raises(FrameCacheError, match=rf"{path}.*truncated.*delete {path.parent}.*vaanet prepare"):
            ds[0]
        path.write_bytes(b"garbage" + data[7:])  # header overwritten
        with pytest.raises(FrameCacheError, match=rf"{path} is corrupt.*vaanet prepare"):
            ds[0]
        path.unlink()
        with pytest.raises(FrameCacheError, match=rf"{path} is missing.*vaanet prepare"):
            ds[0]
    # the audio cache: truncated, pickled (not an array file) or missing
    bad = _copy(synth_cache, tmp_path / "mfcc_bad")
    ds = VideoEmotionDataset(bad, synth_cache / "splits" / "split_00.csv", "test", s)
    path = bad / ds.items.iloc[0]["mfcc_file"]
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(FrameCacheError, match=rf"MFCC file {path} is truncated or corrupt.*vaanet prepare"):
        ds[0]
    import pickle
    path.write_bytes(pickle.dumps({"not": "an array"}))
    with pytest.raises(FrameCacheError, match=rf"MFCC file {path} is truncated or corrupt.*vaanet prepare"):
        ds[0]
    path.unlink()
    with pytest.raises(FrameCacheError, match=rf"MFCC file {path} is missing.*vaanet prepare"):
        ds[0]
    # a JPEG stream damaged inside the file (offset table intact)
    bad = tmp_path / "jpeg_inner"
    bad.mkdir()
    frames = np.random.default_rng(1).integers(0, 255, (3, 24, 32, 3), dtype=np.uint8)
    path = bad / write_frames(bad, frames, "jpeg")
    f = JpegFrames(path)
    data = bytearray(path.read_bytes())
    data[f.offsets[1]:f.offsets[1] + 40] = b"\xff" * 40  # SOI/header of frame 1 destroyed
    path.write_bytes(bytes(data))
    with pytest.raises(FrameCacheError, match=rf"{path}: a frame cannot be decoded.*vaanet prepare"):
        open_frames(path, "jpeg")[[0, 1]]


def test_manifest_format_unknown_mismatched_or_absent(synth_root, synth_cache, tmp_path):
    split = synth_cache / "splits" / "split_00.csv"
    s = SamplingConfig(segments=2, frames=4, crop_size=32, audio_frames=8)
    unknown = _copy(synth_cache, tmp_path / "unknown")
    manifest = json.loads((unknown / "prepare.json").read_text())
    (unknown / "prepare.json").write_text(json.dumps({**manifest, "frames": "webp"}))
    with pytest.raises(FrameCacheError, match=r"unknown frame format 'webp' in .*prepare.json.*vaanet prepare --frames"):
        VideoEmotionDataset(unknown, split, "test", s)
    mixed = _copy(synth_cache, tmp_path / "mixed")  # raw files, manifest says jpeg
    (mixed / "prepare.json").write_text(json.dumps({**manifest, "frames": "jpeg"}))
    with pytest.raises(FrameCacheError, match=r"holds 'raw' frames but .*frames='jpeg'.*vaanet prepare --frames jpeg"):
        VideoEmotionDataset(mixed, split, "test", s)[0]
    with pytest.raises(ValueError, match="PrepareConfig.frames"):
        PrepareConfig(frames="png")

    # an old cache (no format in its manifest) is raw: it loads, and prepare resumes it with frames=raw
    old = _copy(synth_cache, tmp_path / "old")
    (old / "prepare.json").write_text(json.dumps({k: v for k, v in manifest.items() if k != "frames"}))
    a = VideoEmotionDataset(old, split, "test", s)[1]
    b = VideoEmotionDataset(synth_cache, split, "test", s)[1]
    assert torch.equal(a["visual"], b["visual"])
    assert len(prepare(synth_root, old, PrepareConfig(short_side=40, workers=1, frames="raw"), **QUIET)) == 24
    with pytest.raises(ValueError, match="prepared with other settings"):
        prepare(synth_root, old, PrepareConfig(short_side=40, workers=1, frames="jpeg"), **QUIET)


def test_cli_frames_option_and_estimate_disk():
    from vaanet.cli import build_parser
    from vaanet.estimate import cache_disk_report

    p = build_parser()
    assert p.parse_args(["prepare", "--root", "r", "--out", "o"]).frames == "jpeg"
    assert p.parse_args(["prepare", "--root", "r", "--out", "o", "--frames", "raw"]).frames == "raw"
    with pytest.raises(SystemExit):
        p.parse_args(["prepare", "--root", "r", "--out", "o", "--frames", "png"])
    text = cache_disk_report()
    assert "VE-8" in text and "E-6" in text and all(f in text for f in FORMATS)
