"""Real video files end to end: synth -> prepare -> splits -> dataset, and every bad input."""
import json
import shutil
import subprocess
import sys

import av
import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.data import DataLoader

from vaanet.data import (
    EpochSampler, NothingPrepared, PrepareConfig, SamplingConfig, VideoEmotionDataset, load_index, make_splits,
    official_split, prepare, stratified_split,
)
from vaanet.data.decode import decode_audio
from vaanet.data.mfcc import mfcc
from vaanet.data.sampling import aligned_audio_indices, crop_origin, reference_audio_indices, snippet_indices
from vaanet.data.synth import SynthConfig, generate, write_mp4
from vaanet.classes import VE8_CLASSES

QUIET = dict(log=lambda *_: None)


def test_synth_writes_real_h264_aac_mp4_with_truth(synth_root):
    truth = pd.read_csv(synth_root / "synth_truth.csv")
    assert len(truth) == 24 and set(truth["class_name"]) == set(VE8_CLASSES)
    assert (~truth["has_audio"]).sum() >= 1 and truth["has_audio"].sum() >= 1
    for _, row in truth.head(4).iterrows():
        with av.open(str(synth_root / row["file"])) as c:
            assert c.streams.video[0].codec_context.name == "h264"
            assert bool(c.streams.audio) == row["has_audio"]
            if c.streams.audio:
                assert c.streams.audio[0].codec_context.name == "aac"
        assert 0 <= row["box_x0"] < row["box_x1"] <= 1 and str(row["key_segments"]) != ""


def test_synth_is_deterministic(tmp_path):
    cfg = SynthConfig(videos_per_class=1, duration=1.0, resolutions=((48, 48),), seed=5)
    a = generate(tmp_path / "a", cfg, workers=1).read_text()
    b = generate(tmp_path / "b", cfg, workers=2).read_text()
    assert a == b


def test_prepare_index_and_caches(synth_root, synth_cache):
    index = load_index(synth_cache)
    truth = pd.read_csv(synth_root / "synth_truth.csv").set_index("video_id")
    assert len(index) == 24
    for _, row in index.iterrows():
        frames = np.load(synth_cache / row["frames_file"], mmap_mode="r")
        assert frames.dtype == np.uint8 and frames.shape == (row["frames"], row["height"], row["width"], 3)
        assert min(frames.shape[1:3]) == 40
        coeffs = np.load(synth_cache / row["mfcc_file"])
        assert coeffs.shape == (row["mfcc_frames"], 32)
        assert bool(row["has_audio"]) == bool(truth.loc[row["video_id"], "has_audio"])
        if not row["has_audio"]:
            assert not coeffs.any()
        assert row["duration"] == pytest.approx(truth.loc[row["video_id"], "duration"], abs=0.15)


def test_mfcc_equals_librosa_on_the_same_samples(synth_root):
    import librosa

    path = next(p for p in sorted(synth_root.glob("*/*.mp4")) if decode_audio(str(p), 44100) is not None)
    samples = decode_audio(str(path), 44100)
    ours = mfcc(samples)
    ref = librosa.feature.mfcc(y=samples, sr=44100, n_mfcc=32, n_fft=2048, hop_length=512).T
    assert ours.shape == ref.shape
    np.testing.assert_allclose(ours, ref, atol=2e-3 * np.abs(ref).max())


def _bad_root(tmp_path, synth_root):
    """Copy a few good videos and add every kind of bad input."""
    root = tmp_path / "bad"
    for c in VE8_CLASSES:
        (root / c.lower() if c == "Joy" else root / c).mkdir(parents=True)  # 'joy': case-insensitive match
    good = sorted(synth_root.glob("Anger/*.mp4"))
    shutil.copy(good[0], root / "Anger" / "clip1.mp4")
    shutil.copy(good[1], root / "Fear" / "clip1.mp4")  # same name under two classes
    shutil.copy(good[0], root / "joy" / "ok.mp4")
    data = good[1].read_bytes()
    (root / "Sadness" / "truncated.mp4").write_bytes(data[: len(data) // 2])
    (root / "Sadness" / "corrupt.mkv").write_bytes(np.random.default_rng(0).bytes(5000))
    (root / "Trust" / "notes.txt").write_text("not a video")
    frames = np.full((3, 48, 64, 3), 128, np.uint8)  # 3 frames < k, no audio
    write_mp4(root / "Surprise" / "short.mp4", frames, 10, None)
    # Anticipation and Disgust stay empty
    return root


def test_bad_inputs_are_reported_and_the_rest_prepared(tmp_path, synth_root):
    root = _bad_root(tmp_path, synth_root)
    out = tmp_path / "cache"
    lines = []
    index = prepare(root, out, PrepareConfig(short_side=40, workers=2, frames="raw"), log=lines.append)
    assert set(index["video_id"]) == {"Anger__clip1", "Fear__clip1", "ok", "short"}
    failures = pd.read_csv(out / "failures.csv")
    reasons = dict(zip(failures["path"].str.split("/").str[-1], failures["reason"]))
    assert "truncated.mp4" in reasons and "corrupt.mkv" in reasons
    assert reasons["notes.txt"].startswith("not a video file")
    assert reasons["Anticipation"] == "class folder is empty" and reasons["Disgust"] == "class folder is empty"
    summary = "\n".join(lines)
    assert "prepared 4 videos" in summary and "class-qualified" in summary and "without audio track" in summary
    short = index.set_index("video_id").loc["short"]
    assert short["frames"] == 3 and not short["has_audio"]
    # a video shorter than k is loop-padded by the sampler
    split = pd.DataFrame({"video_id": ["short"], "label": [6], "class_name": ["Surprise"], "subset": ["test"]})
    item = VideoEmotionDataset(out, split, "test", SamplingConfig(segments=2, frames=4, crop_size=32, audio_frames=8))[0]
    assert item["visual"].shape == (2, 3, 4, 32, 32) and not item["audio"].any()


def test_drop_no_audio_option(tmp_path, synth_root):
    root = _bad_root(tmp_path, synth_root)
    index = prepare(root, tmp_path / "c", PrepareConfig(short_side=40, workers=1, drop_no_audio=True, frames="raw"), **QUIET)
    assert "short" not in set(index["video_id"])
    assert "no audio track" in pd.read_csv(tmp_path / "c" / "failures.csv")["reason"].str.cat()


def test_nothing_prepared_exits_nonzero(tmp_path):
    root = tmp_path / "broken"
    (root / "Anger").mkdir(parents=True)
    (root / "Anger" / "x.mp4").write_bytes(b"garbage")
    with pytest.raises(NothingPrepared):
        prepare(root, tmp_path / "out", PrepareConfig(workers=1, frames="raw"), **QUIET)
    r = subprocess.run([sys.executable, "-m", "vaanet.cli", "prepare", "--root", str(root), "--out",
                        str(tmp_path / "out2"), "--workers", "1"], capture_output=True, text=True)
    assert r.returncode != 0 and "could be prepared" in r.stderr and (tmp_path / "out2" / "failures.csv").exists()


def test_unknown_root_and_settings_change(tmp_path, synth_root):
    with pytest.raises(FileNotFoundError, match="no class folders"):
        prepare(tmp_path, tmp_path / "o", PrepareConfig(workers=1, frames="raw"), **QUIET)
    root = _bad_root(tmp_path, synth_root)
    prepare(root, tmp_path / "o2", PrepareConfig(short_side=40, workers=1, frames="raw"), **QUIET)
    with pytest.raises(ValueError, match="prepared with other settings"):
        prepare(root, tmp_path / "o2", PrepareConfig(short_side=64, workers=1, frames="raw"), **QUIET)


def test_prepare_resumes_without_redoing_finished_videos(tmp_path, synth_root):
    out = tmp_path / "cache"
    prepare(synth_root, out, PrepareConfig(short_side=40, workers=2, frames="raw"), **QUIET)
    victim = out / "videos" / "joy_000"
    (victim / "meta.json").unlink()  # as if killed before the video was committed
    (victim / "frames.npy").unlink()
    (victim / "frames.npy.tmp").write_bytes(b"half-written")
    before = {p: p.stat().st_mtime_ns for p in out.glob("videos/*/frames.npy")}
    index = prepare(synth_root, out, PrepareConfig(short_side=40, workers=2, frames="raw"), **QUIET)
    assert len(index) == 24
    assert {p: p.stat().st_mtime_ns for p in before} == before  # finished videos untouched
    assert np.load(victim / "frames.npy").dtype == np.uint8 and not (victim / "frames.npy.tmp").exists()
    assert json.loads((victim / "meta.json").read_text())["video_id"] == "joy_000"


def test_prepare_redoes_a_video_replaced_under_the_same_name(tmp_path, synth_root):
    """A regenerated set (or a replaced file) keeps the names: the cache must not keep the old frames while the
    truth sidecar and the labels describe the new videos."""
    import shutil

    root = tmp_path / "videos"
    shutil.copytree(synth_root, root)
    out = tmp_path / "cache"
    prepare(root, out, PrepareConfig(short_side=40, workers=1, frames="raw"), **QUIET)
    before = {p: p.stat().st_mtime_ns for p in out.glob("videos/*/frames.npy")}
    old = np.load(out / "videos" / "joy_001" / "frames.npy")
    shutil.copy(root / "Fear" / "fear_000.mp4", root / "Joy" / "joy_001.mp4")  # other content, same name
    prepare(root, out, PrepareConfig(short_side=40, workers=1, frames="raw"), **QUIET)
    redone = out / "videos" / "joy_001" / "frames.npy"
    assert not np.array_equal(np.load(redone), old)
    assert np.array_equal(np.load(redone), np.load(out / "videos" / "fear_000" / "frames.npy"))
    assert {p: p.stat().st_mtime_ns for p in before if p != redone} == {p: t for p, t in before.items() if p != redone}
    assert "source" not in load_index(out).columns  # the fingerprint stays in meta.json, out of the index


def test_stratified_splits(synth_cache, tmp_path):
    index = load_index(synth_cache)
    big = pd.concat([index.assign(video_id=index["video_id"] + f"_{i}") for i in range(6)], ignore_index=True)
    s = stratified_split(big, seed=1, split=0, val_fraction=0.1)
    per_class = s.groupby(["class_name", "subset"]).size().unstack()
    assert (per_class["test"] == 6).all() and (per_class["train"] + per_class["val"] == 12).all()
    assert (per_class["val"] >= 1).all()
    assert s["video_id"].is_unique and set(s["video_id"]) == set(big["video_id"])
    a = make_splits(big, tmp_path / "a", n=3, seed=4, **QUIET)
    b = make_splits(big, tmp_path / "b", n=3, seed=4, **QUIET)
    c = make_splits(big, tmp_path / "c", n=3, seed=5, **QUIET)
    assert [p.read_bytes() for p in a] == [p.read_bytes() for p in b]
    assert a[0].read_bytes() != a[1].read_bytes() and a[0].read_bytes() != c[0].read_bytes()


def test_official_split_from_lists(synth_cache, tmp_path):
    index = load_index(synth_cache)
    files = (index["class_name"] + "/" + index["path"].str.split("/").str[-1]).tolist()
    (tmp_path / "train.txt").write_text("\n".join(f"{f} 1" for f in files[:12]) + "\nAnger/missing.mp4\n")
    (tmp_path / "test.txt").write_text("\n".join(files[12:]) + "\n")
    warnings = []
    s = official_split(index, tmp_path / "train.txt", tmp_path / "test.txt", val_fraction=0.34, log=warnings.append)
    assert (s["subset"] == "test").sum() == 12
    assert set(s.loc[s["subset"] != "test", "video_id"]) == set(index["video_id"][:12])
    assert (s.loc[s["subset"] == "val"].groupby("label").size() == 1).all()  # stratified, from train only
    assert (s["subset"] == "val").sum() == 4 and "missing" in warnings[0]


def test_sampling_functions():
    idx = snippet_indices(100, 10, 16)
    assert idx.shape == (10, 16) and (np.diff(idx, axis=1) == 1).all()
    assert idx[0, 0] == 0 and idx[-1, -1] == 99  # segments of 10 < k: snippets borrow following frames
    idx = snippet_indices(400, 4, 16)
    assert list(idx[:, 0]) == [42, 142, 242, 342]  # centre snippets
    rng_idx = snippet_indices(400, 4, 16, np.random.default_rng(0))
    assert all(b * 100 <= s <= b * 100 + 84 for b, s in enumerate(rng_idx[:, 0]))
    assert snippet_indices(3, 2, 4).tolist() == [[0, 1, 2, 0], [1, 2, 0, 1]]  # loop padding
    assert crop_origin(40, 60, 32) == (4, 14)
    with pytest.raises(ValueError, match="short-side"):
        crop_origin(30, 60, 32)
    a = aligned_audio_indices(100, np.array([0.0, 0.5]), 86.0, 8)
    assert a[1, 4] == 43 and a[0, 0] == 96  # wraps
    assert reference_audio_indices(5, 2, 4).tolist() == [[0, 1, 2, 3], [4, 0, 1, 2]]


def test_dataset_items_match_the_cache(synth_cache):
    s = SamplingConfig(segments=4, frames=4, crop_size=32, audio_frames=16)
    split = synth_cache / "splits" / "split_00.csv"
    ds = VideoEmotionDataset(synth_cache, split, "train", s, seed=1)
    row = ds.items.iloc[0]
    frames = np.load(synth_cache / row["frames_file"])
    flips = []
    for epoch in range(6):
        item = ds[(epoch, 0)]
        assert item["visual"].shape == (4, 3, 4, 32, 32) and item["visual"].dtype == torch.uint8
        y0, x0 = item["crop"][:2].tolist()
        idx = np.round(item["centres"].numpy() * row["fps"] - 2).astype(int)
        expect = frames[(idx[:, None] + np.arange(4)).reshape(-1), y0:y0 + 32, x0:x0 + 32]
        if item["flip"]:
            expect = expect[:, :, ::-1]  # every frame flipped alike
        got = item["visual"].permute(0, 2, 3, 4, 1).reshape(-1, 32, 32, 3).numpy()
        np.testing.assert_array_equal(got, expect)
        flips.append(bool(item["flip"]))
    assert len(set(flips)) == 2  # both flip states occur over epochs
    assert not torch.equal(ds[(0, 0)]["visual"], ds[(1, 0)]["visual"])
    assert torch.equal(ds[(2, 3)]["visual"], ds[(2, 3)]["visual"])
    ev = VideoEmotionDataset(synth_cache, split, "test", s)
    assert torch.equal(ev[0]["visual"], ev[0]["visual"]) and not ev[0]["flip"]
    mv = VideoEmotionDataset(synth_cache, split, "test", SamplingConfig(segments=4, frames=4, crop_size=32,
                             audio_frames=16, temporal_views=2, spatial_views=3))
    assert mv[0]["visual"].shape == (6, 4, 3, 4, 32, 32) and mv[0]["audio"].shape == (6, 4, 1, 16, 32)


def test_aligned_audio_follows_the_snippets(synth_cache):
    s = SamplingConfig(segments=4, frames=4, crop_size=32, audio_frames=16)
    ds = VideoEmotionDataset(synth_cache, synth_cache / "splits" / "split_00.csv", "test", s)
    i = int(np.flatnonzero(ds.items["has_audio"].to_numpy())[0])
    item, row = ds[i], ds.items.iloc[i]
    coeffs = np.load(synth_cache / row["mfcc_file"])
    idx = aligned_audio_indices(len(coeffs), item["centres"].numpy(), ds.mfcc_fps, 16)
    np.testing.assert_array_equal(item["audio"][:, 0].numpy(), coeffs[idx])
    ref = VideoEmotionDataset(synth_cache, synth_cache / "splits" / "split_00.csv", "test",
                              SamplingConfig(segments=4, frames=4, crop_size=32, audio_frames=16,
                                             audio_alignment="reference"))
    np.testing.assert_array_equal(ref[i]["audio"][:, 0].numpy(), coeffs[reference_audio_indices(len(coeffs), 4, 16)])


def test_dataloader_workers_do_not_change_the_samples(synth_cache):
    s = SamplingConfig(segments=2, frames=4, crop_size=32, audio_frames=8, samples_per_video=2)
    ds = VideoEmotionDataset(synth_cache, synth_cache / "splits" / "split_00.csv", "train", s, seed=2)
    assert len(ds) == 2 * len(ds.items)

    def epoch_batches(workers):
        sampler = EpochSampler(ds, shuffle=True, seed=2)
        sampler.set_epoch(3)
        dl = DataLoader(ds, batch_size=4, sampler=sampler, num_workers=workers)
        return [(b["visual"], b["audio"], b["label"]) for b in dl]

    a, b = epoch_batches(0), epoch_batches(2)
    assert len(a) == len(b) and all(torch.equal(x, y) for p, q in zip(a, b) for x, y in zip(p, q))
    assert a[0][0].shape == (4, 2, 3, 4, 32, 32)
    shards = [list(EpochSampler(ds, True, 2, rank=r, world_size=2)) for r in (0, 1)]
    assert len(shards[0]) == len(shards[1]) and set(shards[0]) | set(shards[1]) == set(EpochSampler(ds, True, 2))


def test_split_cache_mismatch_is_explained(synth_cache):
    split = pd.DataFrame({"video_id": ["nope"], "label": [0], "class_name": ["Anger"], "subset": ["train"]})
    with pytest.raises(ValueError, match="not in .*index.csv"):
        VideoEmotionDataset(synth_cache, split, "train")


def test_a_cache_of_another_data_set_is_refused(synth_cache):
    """The synthetic cache holds VE-8 labels: read as E-6 (Anger, Disgust, Fear, Joy, Sadness, Surprise), label 1
    would be Disgust instead of Anticipation, and the per-class names and polarity would be wrong."""
    from vaanet.classes import DATASET_CLASSES

    split = pd.read_csv(synth_cache / "splits" / "split_00.csv")
    assert len(VideoEmotionDataset(synth_cache, split, "train", classes=DATASET_CLASSES["ve8"]))
    with pytest.raises(ValueError, match=r"labels \w+ as class \d, which is '\w+' in the config's data set "
                                         r"\(6 classes: .*set data.dataset to the data set the cache was prepared"):
        VideoEmotionDataset(synth_cache, split, "train", classes=DATASET_CLASSES["e6"])
