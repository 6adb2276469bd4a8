"""The planted-evidence synthetic set's guarantee, and the paper-style attention scale fix.

Generator: a linear probe (logistic regression on mean colours of decoded frames) is at chance when
given only what lies outside the evidence box, or only the segments that are not key segments; given
the evidence (the box in the key segments) it names the class pair; the audio names the member of
the pair and nothing about the pair.
Model: at initialisation the paper style's embedding E^V is on the scale of plain average pooling
(the literal equations' is ~1/(m n) of it), and its temporal ReLU attention survives a logit-shrinking
start.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_score

from vaanet.data.decode import decode_audio, decode_video
from vaanet.data.synth import TONES, SynthConfig, generate
from vaanet.models.vaanet import ModelConfig, VAANet

CLASSES, PAIRS = 8, 4


@pytest.fixture(scope="module")
def probe_features(tmp_path_factory):
    """Per video: mean RGB outside the box (all frames, a 3-pixel margin around the box left out), mean
    RGB of the whole frame in each non-key segment and of the box in each non-key segment, mean RGB of
    the box in the key segments, and the audio power at the two tones."""
    root = tmp_path_factory.mktemp("planted") / "videos"
    cfg = SynthConfig(videos_per_class=12, duration=2.0, fps=8, resolutions=((64, 48),), seed=11)
    generate(root, cfg, workers=1)
    truth = pd.read_csv(root / "synth_truth.csv")
    rows = []
    for _, r in truth.iterrows():
        frames, _, _ = decode_video(str(root / r["file"]), 48, None)
        frames = frames.astype(np.float32)
        T, H, W, _ = frames.shape
        seg = np.minimum((np.arange(T) * r["segments"]) // T, r["segments"] - 1)
        keys = {int(k) for k in str(r["key_segments"]).split(";")}
        x0, x1 = int(round(r["box_x0"] * W)), int(round(r["box_x1"] * W))
        y0, y1 = int(round(r["box_y0"] * H)), int(round(r["box_y1"] * H))
        inside = np.zeros((H, W), bool)
        inside[y0:y1, x0:x1] = True
        near = np.zeros((H, W), bool)
        near[max(y0 - 3, 0):y1 + 3, max(x0 - 3, 0):x1 + 3] = True
        key = np.isin(seg, list(keys))
        other = [s for s in range(r["segments"]) if s not in keys][:2]  # the same count for every video
        audio = decode_audio(str(root / r["file"]), 44100)
        spectrum = np.abs(np.fft.rfft(audio))
        freqs = np.fft.rfftfreq(len(audio), 1 / 44100)
        tones = [spectrum[np.abs(freqs - f) < 20].mean() for f in TONES]
        rows.append(dict(
            label=int(r["label"]), pair=int(r["pair"]), bit=int(r["audio_bit"]),
            outside=frames[:, ~near].mean(axis=(0, 1)),
            non_key=np.concatenate([np.r_[frames[seg == s].mean(axis=(0, 1, 2)), frames[seg == s][:, inside].mean(axis=(0, 1))]
                                    for s in other]),
            evidence=frames[key][:, inside].mean(axis=(0, 1)),
            audio=np.log(np.array(tones)),
        ))
    return rows


def _probe(rows, feature, target) -> float:
    X = np.stack([np.atleast_1d(r[feature]) for r in rows])
    X = (X - X.mean(0)) / (X.std(0) + 1e-6)
    y = np.array([r[target] for r in rows])
    return float(cross_val_score(LogisticRegression(max_iter=2000), X, y, cv=4).mean())


def test_outside_the_box_and_non_key_segments_carry_no_class_information(probe_features):
    # 96 videos, 8 classes: chance 0.125 (std of a 4-fold accuracy ~0.035); pairs: chance 0.25
    for feature in ("outside", "non_key"):
        assert _probe(probe_features, feature, "label") < 0.25, feature
        assert _probe(probe_features, feature, "pair") < 0.40, feature


def test_the_evidence_names_the_pair_and_the_audio_the_member(probe_features):
    assert _probe(probe_features, "evidence", "pair") > 0.95
    assert 0.35 < _probe(probe_features, "evidence", "label") <= 0.6  # vision alone: at most 1/2
    assert _probe(probe_features, "audio", "bit") > 0.95
    assert _probe(probe_features, "audio", "pair") < 0.40  # audio says nothing about the pair


def test_truth_sidecar_keeps_the_metric_columns(tmp_path):
    truth = generate(tmp_path, SynthConfig(videos_per_class=1, duration=1.0, resolutions=((48, 48),)), workers=1)
    cols = set(pd.read_csv(truth).columns)
    assert {"video_id", "key_segments", "key_times", "box_x0", "box_y0", "box_x1", "box_y1"} <= cols


def test_exposure_scales_each_video_and_brightens_the_key_segments(tmp_path):
    from vaanet.data.decode import decode_video

    small = dict(videos_per_class=1, duration=2.0, fps=8, resolutions=((48, 48),), distractors=0, key_flash=0.0,
                 noise=0.0)
    generate(tmp_path / "v", SynthConfig(**small, exposure=(0.5, 0.5), key_exposure=2.0), workers=1)
    truth = pd.read_csv(tmp_path / "v" / "synth_truth.csv").set_index("video_id")
    frames = np.asarray(decode_video(str(tmp_path / "v" / "Joy" / "joy_000.mp4"), 48, None)[0], np.float32)
    T = len(frames)
    seg = np.minimum((np.arange(T) * 4) // T, 3)
    keys = [int(k) for k in str(truth.loc["joy_000", "key_segments"]).split(";")]
    corner = frames[:, :4, :4].mean(axis=(1, 2, 3))
    key = np.isin(seg, keys)
    # the grey (90-150, tinted by up to 10) x 0.5, and x 2 more in the key segments
    assert 0.5 * 80 - 6 < corner[~key].mean() < 0.5 * 160 + 6, corner
    assert abs(corner[key].mean() / corner[~key].mean() - 2.0) < 0.15, corner
    assert SynthConfig().exposure == (1.0, 1.0) and SynthConfig().key_exposure == 1.0  # the demo's set: off
    with pytest.raises(ValueError, match="exposure"):
        SynthConfig(exposure=(0.8, 0.5))


def test_static_distractors_stay_clear_of_the_box_and_the_default_set_is_unchanged(tmp_path):
    from vaanet.data.decode import decode_video

    small = dict(videos_per_class=1, duration=1.0, fps=8, resolutions=((96, 72),), key_flash=0.0, confuser=0.0,
                 noise=0.0, distractor_colours="pairs")
    generate(tmp_path / "static", SynthConfig(**small, distractor_motion=0.0), workers=1)
    generate(tmp_path / "moving", SynthConfig(**small), workers=1)
    truth = pd.read_csv(tmp_path / "static" / "synth_truth.csv").set_index("video_id")
    for vid in truth.index:
        frames = np.asarray(decode_video(str(tmp_path / "static" / truth.loc[vid, "file"]), 72, None)[0], np.float32)
        H, W = frames.shape[1:3]
        box = truth.loc[vid]
        x0, x1, y0, y1 = (int(box.box_x0 * W), int(box.box_x1 * W), int(box.box_y0 * H), int(box.box_y1 * H))
        outside = frames.copy()
        outside[:, max(y0 - 2, 0):y1 + 2, max(x0 - 2, 0):x1 + 2] = 0.0  # the box and its codec fringe
        assert np.abs(np.diff(outside, axis=0)).max() < 40, vid  # nothing moves (only the codec's noise)
        saturation = frames.max(-1) - frames.min(-1)
        ring = np.ones((H, W), bool)  # a band around the box, half a side wide, holds no square
        ring[max(y0 - (y1 - y0) // 2 + 3, 0):y1 + (y1 - y0) // 2 - 3, max(x0 - (x1 - x0) // 2 + 3, 0):x1 + (x1 - x0) // 2 - 3] = False
        ring[y0 - 3:y1 + 3, x0 - 3:x1 + 3] = True
        assert saturation[:, ~ring].max() < 40, vid  # grey there: no coloured square touches the box
    moving = np.asarray(decode_video(str(tmp_path / "moving" / "Joy" / "joy_000.mp4"), 72, None)[0],
                        np.float32)
    assert np.abs(np.diff(moving, axis=0)).max() > 100  # the default squares move
    assert SynthConfig().distractor_motion == 1.0
    with pytest.raises(ValueError, match="distractor_motion"):
        SynthConfig(distractor_motion=-1.0)


def test_box_pressure_reads_the_run_the_benchmark_trained(synth_root, synth_cache, tmp_path):
    """benchmarks/box_pressure.py (the pull of the loss on the spatial attention, docs/attention.md) rebuilds a
    run's network from its checkpoint's config, not from a yaml: with model.spatial_init=saliency the same weights
    give other maps in a network built otherwise. A finite pull in the key and the other segments, unchanged when
    the gradient through A^T is cut (VS has no temporal attention); the benchmark scores the same run."""
    from conftest import tiny_config
    from vaanet.train import fit_local

    cfg = tiny_config(synth_root, synth_cache, tmp_path, **{
        "model.preset": "VS", "model.attention_style": "paper", "model.spatial_init": "saliency",
        "model.no_max_pool": "true", "optim.epochs": 1, "data.audio_frames": 4})
    folder = tmp_path / "paper_VS_split_00"
    final = fit_local(cfg, folder)
    assert tool("attention_recovery").validation_metrics(cfg, folder)["val_acc"] == pytest.approx(final["best_val_acc"])
    pressure = tool("box_pressure")
    pull = pressure.measure(folder, synth_cache, synth_root / "synth_truth.csv", passes=1)
    assert set(pull) >= {"key", "other"} and all(np.isfinite(v) for v in pull.values()), pull
    assert pressure.measure(folder, synth_cache, synth_root / "synth_truth.csv", detach_temporal=True, passes=1) == pull


def tool(name):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_attention_recovery_benchmark_runs_its_spatial_preset_at_a_tiny_size(tmp_path, capsys):
    """The benchmark's smoke test: the spatial preset's set (24 videos), prepared at its short side, one split,
    one epoch at crop 112; it prints the run's line and both tables, and scores attention against the truth."""
    bench = tool("attention_recovery")
    results = bench.main(["--preset", "spatial", "--videos-per-class", "3", "--splits", "1", "--set", "optim.epochs=1",
                          "--data", str(tmp_path / "data"), "--out", str(tmp_path / "out")])
    out = capsys.readouterr().out
    assert "preset spatial, val" in out and "preset spatial, test" in out and "| paper | VS |" in out
    (r,) = results[("paper", "VS")]
    assert 0 <= r["test_acc"] <= 1 and r["test_spatial_in_box_uniform"] > 0 and r["val_spatial_in_box"] > 0
    made = (tmp_path / "data" / "videos" / "synth_config.txt").read_text()
    assert all(f"{k!r}: {v!r}" in made for k, v in bench.SPATIAL_SET.items())
    import pandas as pd

    assert pd.read_csv(tmp_path / "data" / "cache" / "index.csv")["height"].min() >= 128  # short side 128


# ---- the scale fix --------------------------------------------------------------------------------
def _embedding(preset: str, style: str, average: bool = False) -> torch.Tensor:
    torch.manual_seed(0)
    cfg = ModelConfig.from_preset(preset, attention_style=style, depth=10, width=0.25, segments=4, frames=2,
                                  crop_size=48, no_max_pool=True, num_classes=8)
    model = VAANet(cfg).eval()
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, 256, (2, 4, 3, 2, 48, 48), dtype=torch.uint8, generator=g)
    with torch.no_grad():
        return model.visual_features(x).mean(dim=(1, 2)) if average else model.visual_stream(x)[0]


def test_paper_style_embedding_has_the_scale_of_average_pooling():
    average = _embedding("V", "paper", average=True)  # plain average pooling of the same features
    # uniform (switched-off) attention in the paper style is exactly average pooling
    torch.testing.assert_close(_embedding("V", "paper"), average)
    plain = average.abs().mean()
    # spatial and channel attention with the gains m and n: the scale of average pooling
    assert 0.1 < float(_embedding("VS+VCW", "paper").abs().mean() / plain) < 10
    assert float(_embedding("VS+VCW", "paper_literal").abs().mean() / plain) < 1e-2  # literal: ~1/(m n) of it
    # with temporal attention, A_j^T starts at the mean activation of segment j (W^{T1} bias 0): the
    # embedding is average pooling times that mean (measured 0.068), far above the literal equations'
    paper = _embedding("VS+VCW+VT", "paper").abs().mean()
    literal = _embedding("VS+VCW+VT", "paper_literal").abs().mean()
    assert 0.02 < float(paper / plain) < 10
    assert float(literal / paper) < 0.2


def test_paper_temporal_attention_survives_a_shrinking_start():
    """Shrinking the logits (what a random classifier head first does) must not silence every segment."""
    torch.manual_seed(0)
    cfg = ModelConfig.from_preset("VS+VCW+VT", attention_style="paper", depth=10, width=0.125, segments=4, frames=2,
                                  crop_size=32, no_max_pool=True, num_classes=8)
    model = VAANet(cfg).train()
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    x = torch.randint(0, 256, (4, 4, 3, 2, 32, 32), dtype=torch.uint8)
    for _ in range(25):
        opt.zero_grad()
        model(x).logits.pow(2).mean().backward()
        opt.step()
    assert (model(x).temporal > 0).all()


def test_temporal_inhibition_starts_below_the_mean_and_never_silences_a_video():
    from vaanet.models.attention import TemporalAttention

    P = torch.rand(64, 4, 16)  # non-negative, like pooled post-ReLU features
    s = P.mean(-1)  # the score each segment starts with (W^{T2} = 1/n)
    A = TemporalAttention(16, 4, "paper", inhibition=0.75)(P)
    torch.testing.assert_close(A, torch.relu(s - 0.75 * s.mean(-1, keepdim=True)) / 0.25)
    assert (A.max(-1).values > 0).all()


def test_spatial_saliency_init_starts_at_the_positions_mean_activation():
    """model.spatial_init=saliency: A_i^S starts at Softmax(tau x mean_c F_i); W^{S1} = I."""
    from vaanet.models.attention import SpatialAttention
    from vaanet.models.attention.spatial import SALIENCY_SCALE

    F = torch.rand(2, 4, 9, 16)
    expected = torch.softmax(SALIENCY_SCALE * F.mean(-1), dim=-1)
    att = SpatialAttention(16, 9, "paper", init="saliency")
    torch.testing.assert_close(att(F), expected)
    torch.testing.assert_close(att.W_S1.weight, torch.eye(9))
    assert not torch.allclose(SpatialAttention(16, 9, "paper")(F), expected)  # the default stays nn.Linear's


def test_attention_init_names_are_checked_and_kept_off_the_reference_style():
    with pytest.raises(ValueError, match="spatial_init must be one of"):
        ModelConfig(spatial_init="identity")
    with pytest.warns(UserWarning, match="spatial_init=saliency: the paper styles"):
        cfg = ModelConfig(attention_style="reference", spatial_init="saliency")
    assert cfg.spatial_init == "random"


def test_confuser_same_shows_one_colour_in_the_other_segments(tmp_path):
    """confuser_same: the other segments' box shows one label-free colour (the default: one per segment)."""
    from vaanet.data.decode import decode_video

    for same in (True, False):
        cfg = SynthConfig(videos_per_class=2, duration=2.0, fps=8, resolutions=((96, 72),), distractors=0, noise=0.0,
                          confuser_same=same)
        generate(tmp_path / str(same), cfg, workers=1)
        spread = []
        for _, r in pd.read_csv(tmp_path / str(same) / "synth_truth.csv").iterrows():
            frames = np.asarray(decode_video(str(tmp_path / str(same) / r["file"]), 72, None)[0], np.float32)
            T, H, W, _ = frames.shape
            seg = np.minimum((np.arange(T) * 4) // T, 3)
            others = [s for s in range(4) if s != int(r["key_segments"])]
            x0, x1 = int(r["box_x0"] * W) + 3, int(r["box_x1"] * W) - 3
            y0, y1 = int(r["box_y0"] * H) + 3, int(r["box_y1"] * H) - 3
            box = np.stack([frames[seg == s][:, y0:y1, x0:x1].mean(axis=(0, 1, 2)) for s in others])  # [3, RGB]
            spread.append(np.abs(box - box.mean(0)).max())
        if same:
            assert max(spread) < 15, spread
        else:
            assert max(spread) > 40, spread  # 16 videos, 3 draws of 4 colours each: some differ
    assert SynthConfig().confuser_same is False


def test_square_size_option(tmp_path):
    """distractor_size: the squares' side as a fraction of the box's (the spatial preset's set: 0.4-0.6)."""
    from vaanet.data.decode import decode_video

    cfg = SynthConfig(videos_per_class=1, duration=2.0, fps=8, resolutions=((96, 72),), noise=0.0, key_flash=0.0,
                      distractor_colours="pairs", distractor_motion=0.0, distractor_size=(0.5, 0.5))
    generate(tmp_path / "v", cfg, workers=1)
    for _, r in pd.read_csv(tmp_path / "v" / "synth_truth.csv").iterrows():
        frames = np.asarray(decode_video(str(tmp_path / "v" / r["file"]), 72, None)[0], np.float32)
        T, H, W, _ = frames.shape
        x0, x1 = int(r["box_x0"] * W), int(r["box_x1"] * W)
        y0, y1 = int(r["box_y0"] * H), int(r["box_y1"] * H)
        side = x1 - x0
        coloured = frames[0].max(-1) - frames[0].min(-1) > 60  # pair colours; the grey is tinted by 20 at most
        coloured[max(y0 - 2, 0):y1 + 2, max(x0 - 2, 0):x1 + 2] = False  # not the box
        area = coloured.sum() / cfg.distractors  # each square (static, clear of the box): (side / 2)^2 and the
        # codec's fringe; the default's smallest square, (0.7 side)^2, would be over 0.45 side^2
        assert 0.6 * (side / 2) ** 2 < area < 0.45 * side ** 2, (r["video_id"], area, side)
    assert SynthConfig().distractor_size == (0.7, 1.0)
    with pytest.raises(ValueError, match="distractor_size"):
        SynthConfig(distractor_size=(0.6, 0.3))


def test_settings_of_a_set_made_with_removed_options_at_their_defaults_read_as_the_same_set():
    """synth_config.txt written by vaanet 0.1.0 (with the options removed since, at their defaults) is the same
    set as one made now (its draws never depended on them: the demo's set and its data digest stay); a removed
    option at another value is another set."""
    from dataclasses import asdict

    from vaanet.data.synth import REMOVED_OPTIONS, canonical_settings

    for cfg in (SynthConfig(), SynthConfig(videos_per_class=3, seed=3, confuser_same=True)):
        now = repr(asdict(cfg)) + "\n"
        old = {**asdict(cfg), **REMOVED_OPTIONS}  # what vaanet 0.1.0 wrote for the same set (key order aside)
        assert canonical_settings(repr(old) + "\n") == now
        for k, v in REMOVED_OPTIONS.items():
            other = not v if isinstance(v, bool) else ("objects" if isinstance(v, str) else
                                                       tuple(x + 1 for x in v) if isinstance(v, tuple) else v + 1)
            assert canonical_settings(repr({**old, k: other}) + "\n") != now, k


