"""Can the cache be trusted? Rotated phone videos, variable frame rates, clashing file names, empty
validation subsets, Ctrl-C / kill -9 during ``vaanet prepare``, caches that move, audio that starts later or
earlier than the video (or has gaps), and class folders spelt twice."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pandas as pd
import pytest

from conftest import as_from_a_terminal

from vaanet.data import PrepareConfig, SamplingConfig, VideoEmotionDataset, load_index, make_splits, prepare
from vaanet.data.discovery import discover
from vaanet.data.sampling import aligned_audio_indices
from vaanet.classes import VE8_CLASSES

QUIET = dict(log=lambda *_: None)
REPO = Path(__file__).resolve().parents[1]


def write_video(path: Path, frames: list[np.ndarray], times: list[float], rotation: float | None = None,
                codec: str = "libx264") -> Path:
    """Frames at the given presentation times (seconds; any spacing: variable frame rate), with an
    optional display rotation (counter-clockwise degrees, as PyAV and ffprobe report it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tb = Fraction(1, 1000)
    with av.open(str(path), "w") as c:
        s = c.add_stream(codec, rate=Fraction(1 / float(np.median(np.diff(times)))).limit_denominator(1000))
        s.width, s.height = frames[0].shape[1], frames[0].shape[0]
        s.pix_fmt = "yuv420p"
        s.codec_context.time_base = tb
        if rotation is not None:
            s.set_display_rotation(rotation)
        for img, t in zip(frames, times):
            f = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
            f.pts, f.time_base = int(round(t * 1000)), tb
            for p in s.encode(f):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def flat(value: int, h: int = 32, w: int = 32) -> np.ndarray:
    return np.full((h, w, 3), value, np.uint8)


def cfr(value: int, n: int = 10, fps: float = 10.0) -> tuple[list[np.ndarray], list[float]]:
    return [flat(value)] * n, [i / fps for i in range(n)]


# 1. rotation ---------------------------------------------------------------------------------------

def test_rotated_phone_video_is_cached_upright(tmp_path):
    upright = np.full((64, 36, 3), 40, np.uint8)  # portrait, as the person filming saw it
    upright[:16, :12] = (230, 30, 30)  # red block in the top-left corner
    stored = np.rot90(upright, k=1)  # what a phone stores: landscape 64x36, turned counter-clockwise ...
    write_video(tmp_path / "v" / "Joy" / "phone.mp4", [stored] * 5, [i / 10 for i in range(5)],
                rotation=-90)  # ... and flagged "rotate 90" (clockwise on display), as ffprobe shows it
    index = prepare(tmp_path / "v", tmp_path / "c", PrepareConfig(short_side=36, workers=1, frames="raw"), **QUIET)
    frames = np.load(tmp_path / "c" / index["frames_file"][0])  # absolute now; relative before
    assert frames.shape == (5, 64, 36, 3)  # portrait, not sideways
    red = (frames[0, :, :, 0] > 150) & (frames[0, :, :, 1] < 100)
    ys, xs = np.nonzero(red)
    assert ys.max() < 20 and xs.max() < 16 and red.sum() > 100  # the block is in the top-left corner
    assert np.abs(frames[0].astype(int) - upright).mean() < 8


# 2. variable frame rate ----------------------------------------------------------------------------

def test_variable_frame_rate_is_sampled_by_presentation_time(tmp_path):
    # 2 s at 30 fps, then 2 s at 5 fps; each frame's brightness encodes its own time (60 levels/s)
    times = [i / 30 for i in range(60)] + [2 + i / 5 for i in range(10)]
    write_video(tmp_path / "v" / "Fear" / "vfr.mp4", [flat(round(60 * t) + 5) for t in times], times)
    for fps in (None, 10.0):
        out = tmp_path / f"c{fps}"
        row = prepare(tmp_path / "v", out, PrepareConfig(short_side=32, fps=fps, workers=1, frames="raw"), **QUIET).iloc[0]
        frames = np.load(out / row["frames_file"])
        assert 3.8 < len(frames) / row["fps"] <= 4.0 + 1e-6  # up to the last frame (3.8 s) and its duration
        shown = (frames.reshape(len(frames), -1).mean(1) - 5) / 60  # the source time each frame shows
        for k, s in enumerate(shown):
            T = k / row["fps"]
            expected = max(t for t in times if t <= T + 1e-4)  # the frame on screen at T
            assert abs(s - expected) < 0.025, f"fps={fps}: frame {k} at {T:.2f}s shows {s:.2f}s, not {expected:.2f}s"


# 3. unique ids, disjoint subsets --------------------------------------------------------------------

def _clash_tree(root: Path, order=1) -> dict[str, int]:
    """Names that collide within a class, each video a distinct brightness. Returns file -> brightness."""
    files = {"Joy/clip.mp4": 40, "Joy/clip.avi": 200, "Joy/other.mp4": 120,
             "Fear/a b.mp4": 80, "Fear/a_b.mp4": 160, "Fear/c.mp4": 240}
    for rel, value in list(files.items())[::order]:
        write_video(root / rel, *cfr(value, n=4), codec="mpeg4" if rel.endswith(".avi") else "libx264")
    return files


def test_clashing_names_in_one_class_get_unique_stable_ids(tmp_path):
    files = _clash_tree(tmp_path / "v")
    index = prepare(tmp_path / "v", tmp_path / "c", PrepareConfig(short_side=32, workers=2, frames="raw"), **QUIET)
    assert len(index) == 6 and index["video_id"].is_unique
    for _, row in index.iterrows():  # every id's cache holds its own video
        rel = f"{row['class_name']}/{Path(row['path']).name}"
        assert abs(np.load(row["frames_file"]).mean() - files[rel]) < 6, rel
    # same tree written in another order elsewhere, discovered without workers: the same ids
    _clash_tree(tmp_path / "w", order=-1)
    ids = {f"{j.class_name}/{Path(j.path).name}": j.video_id for j in discover(tmp_path / "w", VE8_CLASSES)[0]}
    assert ids == {f"{r.class_name}/{Path(r.path).name}": r.video_id for r in index.itertuples()}
    for p in make_splits(index, tmp_path / "s", n=3, val_fraction=0.3, **QUIET):
        assert pd.read_csv(p)["video_id"].is_unique
    # an index from an older version, with one id for two videos, is refused when splits are written ...
    twice = pd.concat([index, index.iloc[:1]], ignore_index=True)
    with pytest.raises(ValueError, match=rf"split_00.csv: 1 video ids occur more than once.*{index['video_id'][0]}"):
        make_splits(twice, tmp_path / "s2", n=1, val_fraction=0.3, **QUIET)
    assert not (tmp_path / "s2").exists()
    # ... and a split file listing a video in two subsets is refused when a data set is loaded
    split = pd.read_csv(tmp_path / "s" / "split_00.csv", dtype={"video_id": str})
    vid = split["video_id"][0]
    bad = pd.concat([split, split.iloc[:1].assign(subset="test" if split["subset"][0] != "test" else "train")])
    bad.to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(ValueError, match=rf"bad.csv: 1 video ids occur more than once.*{vid}"):
        VideoEmotionDataset(tmp_path / "c", tmp_path / "bad.csv", "train")


# 4. empty validation subsets ------------------------------------------------------------------------

def _index(per_class: dict[str, int]) -> pd.DataFrame:
    rows = [(f"{c}_{i}", VE8_CLASSES.index(c), c) for c, n in per_class.items() for i in range(n)]
    return pd.DataFrame(rows, columns=["video_id", "label", "class_name"])


def test_empty_validation_is_refused_and_small_classes_are_named(tmp_path):
    lines = []
    paths = make_splits(_index({"Anger": 12, "Fear": 2}), tmp_path / "a", n=2, val_fraction=0.1, log=lines.append)
    assert len(paths) == 2
    warnings = [line for line in lines if line.startswith("WARNING")]
    assert len(warnings) == 2 and all("['Fear']" in w and "--val-fraction" in w for w in warnings)
    with pytest.raises(ValueError, match="validation subset would be empty.*--val-fraction"):
        make_splits(_index({"Anger": 2, "Fear": 2}), tmp_path / "b", n=2, val_fraction=0.1, **QUIET)
    assert not (tmp_path / "b").exists()  # nothing half-written
    lines = []
    make_splits(_index({"Anger": 2, "Fear": 2}), tmp_path / "c", n=1, val_fraction=0.0, log=lines.append)
    assert "no validation subset" in lines[0]  # asked for explicitly: allowed, and said


# 5. Ctrl-C and kill -9 ------------------------------------------------------------------------------

def _many_videos(root: Path, n: int) -> None:
    """n copies of a video that takes a noticeable time to prepare (n x that >> the few seconds allowed)."""
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 255, (240, 320, 3), np.uint8) for _ in range(8)] * 12
    src = write_video(root / "Anger" / "v00.mp4", frames, [i / 24 for i in range(len(frames))])
    for i in range(1, n):
        (root / VE8_CLASSES[i % 8]).mkdir(exist_ok=True)
        shutil.copy(src, root / VE8_CLASSES[i % 8] / f"v{i:02d}.mp4")


def _prepare_cmd(root: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "vaanet.cli", "prepare", "--root", str(root), "--out", str(out), "--workers", "2",
            "--short-side", "32"]


def _wait_for(cond, timeout: float, step: float = 0.05) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(step)
    return cond()


def _children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"  # zombie: dead
    except OSError:
        return False


def _stopped(proc, stop, what: str) -> str:
    """Stop a running prepare with ``stop()``; it must end within seconds (not after the rest of the videos:
    < 16 are prepared, below; bound loose for a loaded machine). Returns its stderr."""
    stop()
    t = time.monotonic()
    try:
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert time.monotonic() - t < 15, f"{what} did not stop prepare within seconds"
    return err


def _check_partial_cache(out: Path) -> set[str]:
    """The index is written, every file it lists exists, and it lists exactly the videos done (fewer than 16)."""
    index = load_index(out)
    done = {p.parent.name for p in out.glob("videos/*/meta.json")}
    assert 0 < len(index) < 16 and set(index["video_id"]) == done
    return done


@pytest.mark.slow  # kills a prepare and its worker pool: the slow tier
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_sigterm_to_the_whole_job_stops_prepare_as_ctrl_c_does(tmp_path):
    """SIGTERM to the process group (SLURM's scancel, docker stop, systemd): the workers ignore it, the parent
    stops them, writes the index of what is done and exits 143; the rerun resumes."""
    root, out = tmp_path / "v", tmp_path / "c"
    _many_videos(root, 16)
    proc = subprocess.Popen(_prepare_cmd(root, out), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    assert _wait_for(lambda: any(out.glob("videos/*/meta.json")), 120), "no video finished"
    workers = _children(proc.pid)
    err = _stopped(proc, lambda: os.killpg(proc.pid, signal.SIGTERM), "SIGTERM")
    assert proc.returncode == 143 and "run the same command again" in err, (proc.returncode, err[-2000:])
    assert _wait_for(lambda: not any(_alive(w) for w in workers), 5), "workers outlived their parent"
    _check_partial_cache(out)
    r = subprocess.run(_prepare_cmd(root, out), cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and len(load_index(out)) == 16, r.stderr


@pytest.mark.slow  # kills a prepare and its worker pool: the slow tier
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_ctrl_c_stops_fast_with_a_resumable_cache_and_workers_die_with_parent(tmp_path):
    root, out = tmp_path / "v", tmp_path / "c"
    _many_videos(root, 16)
    proc = subprocess.Popen(_prepare_cmd(root, out), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=as_from_a_terminal)
    assert _wait_for(lambda: any(out.glob("videos/*/meta.json")), 120), "no video finished"
    err = _stopped(proc, lambda: proc.send_signal(signal.SIGINT), "Ctrl-C")
    assert proc.returncode != 0 and "run the same command again" in err
    done = _check_partial_cache(out)
    assert {p.name for p in (out / "videos").iterdir()} == done  # no partial folder left
    before = {p: p.stat().st_mtime_ns for p in out.glob("videos/*/frames.npy")}
    r = subprocess.run(_prepare_cmd(root, out), cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert len(load_index(out)) == 16 and {p: p.stat().st_mtime_ns for p in before} == before  # resumed

    # kill -9 of the parent: its worker processes go too
    shutil.rmtree(out)
    proc = subprocess.Popen(_prepare_cmd(root, out), cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert _wait_for(lambda: any(out.glob("videos/*/meta.json")), 120), "no video finished"
        workers = _children(proc.pid)
        assert len(workers) >= 2
    finally:
        proc.kill()
        proc.wait()
    assert _wait_for(lambda: not any(_alive(w) for w in workers), 5), "workers outlived their parent"


# 6. missing root, movable cache ---------------------------------------------------------------------

def test_missing_root_creates_nothing_and_the_cache_can_move(tmp_path, monkeypatch):
    r = subprocess.run([sys.executable, "-m", "vaanet.cli", "prepare", "--root", str(tmp_path / "nope"), "--out",
                        str(tmp_path / "out"), "--workers", "1"], cwd=REPO, capture_output=True, text=True)
    assert r.returncode != 0 and f"data root {tmp_path / 'nope'} does not exist" in r.stderr
    assert not (tmp_path / "out").exists()
    for i, c in enumerate(("Anger", "Joy", "Fear")):
        for j in range(3):
            write_video(tmp_path / "v" / c / f"{j}.mp4", *cfr(60 * i + 20 * j + 10, n=8))
    with monkeypatch.context() as m:  # a relative root, from another working directory
        m.chdir(tmp_path)
        prepare(Path("v"), tmp_path / "old", PrepareConfig(short_side=32, workers=1, frames="raw"), **QUIET)
    assert all(Path(p).is_absolute() and Path(p).exists() for p in pd.read_csv(tmp_path / "old" / "index.csv")["path"])
    make_splits(load_index(tmp_path / "old"), tmp_path / "old" / "splits", n=1, val_fraction=0.5, **QUIET)
    (tmp_path / "old").rename(tmp_path / "new")
    ds = VideoEmotionDataset(tmp_path / "new", tmp_path / "new" / "splits" / "split_00.csv", "test",
                             SamplingConfig(segments=2, frames=2, crop_size=32, audio_frames=4))
    item = ds[0]
    row = ds.items.iloc[0]
    expected = 60 * ("Anger", "Joy", "Fear").index(row["class_name"]) + 20 * int(Path(row["path"]).stem) + 10
    assert item["visual"].shape == (2, 3, 2, 32, 32) and abs(item["visual"].float().mean() - expected) < 6


# 7. audio on the video's clock ------------------------------------------------------------------------

def write_av_clip(path: Path, video_start: float = 0.0, audio_start: float = 0.0, event: float = 2.0,
                  end: float = 3.0, audio_gap: tuple[float, float] | None = None, fps: int = 25) -> Path:
    """H.264/AAC mp4 whose streams start at the given file times (seconds, as ``ffmpeg -itsoffset`` makes
    them), with a white flash (one frame) and a beep (a burst of noise as long) both at file time ``event``: on screen
    and heard together. ``audio_gap``: a span of file time whose audio frames are left out (a timestamp gap)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sr, tb = 44100, Fraction(1, 1000)
    with av.open(str(path), "w") as c:
        vs = c.add_stream("libx264", rate=fps)
        vs.width = vs.height = 32
        vs.pix_fmt, vs.options = "yuv420p", {"preset": "ultrafast"}
        vs.codec_context.time_base = tb
        aus = c.add_stream("aac", rate=sr)
        aus.layout = "mono"
        for k in range(int(round((end - video_start) * fps))):
            t = video_start + k / fps
            f = av.VideoFrame.from_ndarray(flat(240 if abs(t - event) < 1e-6 else 20), format="rgb24")
            f.pts, f.time_base = int(round(t * 1000)), tb
            c.mux(vs.encode(f))
        c.mux(vs.encode())
        t = audio_start + np.arange(int(round((end - audio_start) * sr))) / sr
        rng = np.random.default_rng(0)
        x = rng.normal(0, 0.003, t.size).astype(np.float32)  # faint noise, then a loud burst: the beep
        beep = (t >= event) & (t < event + 1 / fps)
        x[beep] += rng.normal(0, 0.2, beep.sum()).astype(np.float32)  # broadband: every mel band (MFCC 0) rises
        step, first = aus.codec_context.frame_size or 1024, int(round(audio_start * sr))
        for i in range(0, t.size, step):
            if audio_gap and audio_gap[0] <= t[i] < audio_gap[1]:
                continue
            fr = av.AudioFrame.from_ndarray(x[None, i:i + step], format="fltp", layout="mono")
            fr.sample_rate, fr.pts, fr.time_base = sr, first + i, Fraction(1, sr)
            c.mux(aus.encode(fr))
        c.mux(aus.encode())
    return path


def _flash_and_beep(row: pd.Series, cache: Path) -> tuple[float, int, int]:
    """The flash's time on the cache's frame clock, the MFCC frame the data set pairs with it (the centre of
    its aligned audio window) and the MFCC frame where the beep is loudest."""
    frames = np.load(row["frames_file"])
    flash = np.flatnonzero(frames.reshape(len(frames), -1).mean(1) > 128)
    assert len(flash) == 1, f"{row['video_id']}: flash frames {flash}"
    when = (flash[0] + 0.5) / row["fps"]  # the middle of the frame it is on screen
    coeffs = np.load(row["mfcc_file"])
    manifest = json.loads((cache / "prepare.json").read_text())
    mfcc_fps = manifest["sample_rate"] / manifest["hop"]
    paired = int(aligned_audio_indices(len(coeffs), np.array([when]), mfcc_fps, 1)[0, 0])
    return when, paired, int(np.argmax(coeffs[:, 0]))  # coefficient 0: the frame's loudness


def test_audio_starting_later_or_earlier_than_the_video_stays_in_sync(tmp_path):
    """Audio late (0.7 s, as ``-itsoffset 0.7`` on the audio makes it), video late (0.72 s), and audio with a
    0.5 s hole in its timestamps before the event: the beep's MFCC frame is the one the data set pairs with the
    flash. Counted from the first audio sample (the old way) the beep landed 0.68 s early, 0.72 s late and
    0.49 s early."""
    clips = {"Joy/audio_late.mp4": dict(audio_start=0.7), "Fear/video_late.mp4": dict(video_start=0.72),
             "Anger/audio_gap.mp4": dict(audio_gap=(0.8, 1.3))}
    for rel, kw in clips.items():
        write_av_clip(tmp_path / "v" / rel, **kw)
    out = tmp_path / "c"
    lines = []
    index = prepare(tmp_path / "v", out, PrepareConfig(short_side=32, workers=1, frames="raw"), log=lines.append)
    assert len(index) == 3 and index["has_audio"].all()
    hop_s = 512 / 44100
    for _, row in index.iterrows():
        when, paired, loudest = _flash_and_beep(row, out)
        print(f"{row['video_id']}: flash at {when:.3f} s -> MFCC frame {paired}; beep loudest at MFCC frame "
              f"{loudest} ({loudest * hop_s:.3f} s); off by {loudest - paired} frames")
        assert abs(loudest - paired) <= 1, f"{row['video_id']}: beep {(loudest - paired) * hop_s:+.3f} s off the flash"
    meta = {v: json.loads((out / "videos" / v / "meta.json").read_text()) for v in index["video_id"]}
    # the shift applied, in meta.json: AAC's encoder delay (1024 samples, 23 ms) is part of the stream's start,
    # which an mp4 edit list holds in ms
    assert meta["audio_late"]["audio_offset"] == pytest.approx(0.7 - 1024 / 44100, abs=1e-3)
    assert meta["video_late"]["audio_offset"] == pytest.approx(-0.72, abs=1e-3)
    assert meta["audio_gap"]["audio_offset"] == 0 and meta["audio_gap"]["audio_gaps"] == 1
    assert meta["audio_gap"]["audio_gap_s"] == pytest.approx(0.5, abs=0.03)  # whole AAC frames left out
    summary = "\n".join(lines)
    assert "2 videos' audio starts later or earlier" in summary and "1 videos have gaps" in summary

    # a cache of an older version (no audio_offset in meta.json) is prepared again where the audio is shifted,
    # and kept where it is not: the audio of files whose streams start together did not change
    for v in ("audio_late", "audio_gap"):
        m = {k: x for k, x in meta[v].items() if not k.startswith("audio_")}
        (out / "videos" / v / "meta.json").write_text(json.dumps(m))
    np.save(out / "videos" / "audio_late" / "mfcc.npy", np.zeros((5, 32), np.float32))  # as if misaligned
    kept = (out / "videos" / "audio_gap" / "mfcc.npy").stat().st_mtime_ns
    index = prepare(tmp_path / "v", out, PrepareConfig(short_side=32, workers=1, frames="raw"), **QUIET)
    row = index.set_index("video_id", drop=False).loc["audio_late"]
    when, paired, loudest = _flash_and_beep(row, out)
    assert abs(loudest - paired) <= 1
    assert "audio_offset" in json.loads((out / "videos" / "audio_late" / "meta.json").read_text())
    assert (out / "videos" / "audio_gap" / "mfcc.npy").stat().st_mtime_ns == kept


# 8. one folder per class ------------------------------------------------------------------------------

def test_a_class_folder_spelt_twice_is_refused_naming_both(tmp_path):
    """``Anger/`` and ``anger/`` are one class (folders match case-insensitively, as ``joy/`` for Joy): the
    second replaced the first, dropping its videos silently. Refused, before anything is written."""
    root = tmp_path / "v"
    for rel in ("Anger/a1.mp4", "Anger/a2.mp4", "anger/a3.mp4", "Joy/j1.mp4"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).touch()
    with pytest.raises(ValueError, match=r"same class.*Anger: 'Anger', 'anger'; merge") as e:
        discover(root, VE8_CLASSES)
    print(e.value)
    with pytest.raises(ValueError, match="'Anger', 'anger'"):
        prepare(root, tmp_path / "c", PrepareConfig(workers=1), **QUIET)
    assert not (tmp_path / "c").exists()
    shutil.move(str(root / "anger" / "a3.mp4"), root / "Anger")  # merged: all three found
    (root / "anger").rmdir()
    jobs = discover(root, VE8_CLASSES)[0]
    assert sorted(Path(j.path).name for j in jobs) == ["a1.mp4", "a2.mp4", "a3.mp4", "j1.mp4"]
