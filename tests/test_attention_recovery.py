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

from vaanet.data.ingest import decode_audio, decode_video
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


def test_background_sets_each_videos_grey_and_the_default_set_is_unchanged(tmp_path):
    from vaanet.data.ingest import decode_video

    small = dict(videos_per_class=1, duration=1.0, resolutions=((48, 48),), distractors=0, key_flash=0.0)
    generate(tmp_path / "dark", SynthConfig(**small, background=(40.0, 40.0)), workers=1)
    generate(tmp_path / "light", SynthConfig(**small, background=(200.0, 200.0)), workers=1)
    for name, grey in (("dark", 40), ("light", 200)):
        frames = decode_video(str(tmp_path / name / "Joy" / "joy_000.mp4"), 48, None)[0]
        corner = float(np.asarray(frames)[:, :4, :4].mean())
        assert abs(corner - grey) < 15, (name, corner)
    assert SynthConfig().background == (90.0, 150.0)  # the range the demo's set has always used


def test_exposure_scales_each_video_and_brightens_the_key_segments(tmp_path):
    from vaanet.data.ingest import decode_video

    small = dict(videos_per_class=1, duration=2.0, fps=8, resolutions=((48, 48),), distractors=0, key_flash=0.0,
                 background=(100.0, 100.0), noise=0.0)
    generate(tmp_path / "v", SynthConfig(**small, exposure=(0.5, 0.5), key_exposure=2.0), workers=1)
    truth = pd.read_csv(tmp_path / "v" / "synth_truth.csv").set_index("video_id")
    frames = np.asarray(decode_video(str(tmp_path / "v" / "Joy" / "joy_000.mp4"), 48, None)[0], np.float32)
    T = len(frames)
    seg = np.minimum((np.arange(T) * 4) // T, 3)
    keys = [int(k) for k in str(truth.loc["joy_000", "key_segments"]).split(";")]
    corner = frames[:, :4, :4].mean(axis=(1, 2, 3))
    key = np.isin(seg, keys)
    assert abs(corner[~key].mean() - 50) < 12 and abs(corner[key].mean() - 100) < 12, corner  # 100 x 0.5 (x 2)
    assert SynthConfig().exposure == (1.0, 1.0) and SynthConfig().key_exposure == 1.0  # the demo's set: off
    with pytest.raises(ValueError, match="exposure"):
        SynthConfig(exposure=(0.8, 0.5))


def test_static_distractors_stay_clear_of_the_box_and_the_default_set_is_unchanged(tmp_path):
    from vaanet.data.ingest import decode_video

    small = dict(videos_per_class=1, duration=1.0, fps=8, resolutions=((96, 72),), key_flash=0.0, confuser=0.0,
                 background=(100.0, 100.0), noise=0.0, distractor_colours="pairs")
    generate(tmp_path / "static", SynthConfig(**small, distractor_motion=0.0), workers=1)
    generate(tmp_path / "moving", SynthConfig(**small), workers=1)
    truth = pd.read_csv(tmp_path / "static" / "synth_truth.csv").set_index("video_id")
    for vid in truth.index:
        frames = np.asarray(decode_video(str(tmp_path / "static" / truth.loc[vid, "file"]), 72, None)[0], np.float32)
        H, W = frames.shape[1:3]
        box = truth.loc[vid]
        x0, x1, y0, y1 = (int(box.box_x0 * W), int(box.box_x1 * W), int(box.box_y0 * H), int(box.box_y1 * H))
        outside = frames.copy()
        outside[:, max(y0 - 2, 0):y1 + 2, max(x0 - 2, 0):x1 + 2] = 100.0  # the box and its codec fringe
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


def test_per_segment_diagnosis_scores_the_network_the_run_trained(synth_root, synth_cache, tmp_path):
    """benchmarks/attention_per_segment.py rebuilds a run's network from its checkpoint's config, not from a
    yaml: with model.spatial_init=saliency the same weights give other maps in a network built otherwise.
    Its validation accuracy is the benchmark's own (attention_recovery.validation_metrics) for the same run."""
    import importlib.util
    from pathlib import Path

    from conftest import tiny_config
    from vaanet.train import fit_local

    def tool(name):
        path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    cfg = tiny_config(synth_root, synth_cache, tmp_path, **{
        "model.preset": "VS", "model.attention_style": "paper", "model.spatial_init": "saliency",
        "model.no_max_pool": "true", "optim.epochs": 1, "data.audio_frames": 4})
    folder = tmp_path / "paper_VS_split_00"
    fit_local(cfg, folder)
    m = tool("attention_per_segment").measure(folder, synth_cache, synth_root / "synth_truth.csv")
    assert m["mean_map"].shape == (2, 2) and abs(m["mean_map"].sum() - 1) < 1e-5
    assert m["val_acc"] == pytest.approx(tool("attention_recovery").validation_metrics(cfg, folder)["val_acc"])
    # benchmarks/box_pressure.py reads the same run: a finite pull in the key and the other segments, and one
    # that changes when the gradient through A^T is cut only if the run has temporal attention (VS has none)
    pressure = tool("box_pressure")
    pull = pressure.measure(folder, synth_cache, synth_root / "synth_truth.csv", passes=1)
    assert all(np.isfinite(v) for v in pull.values())
    assert pressure.measure(folder, synth_cache, synth_root / "synth_truth.csv", detach_temporal=True, passes=1) == pull


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


def test_attention_rates_keep_the_initial_function():
    """spatial_rate / temporal_rate only reparameterise (stored / rate, used x rate): same outputs at the start."""
    from vaanet.models.attention import SpatialAttention, TemporalAttention

    F = torch.rand(2, 4, 9, 16)
    torch.manual_seed(0)
    a = SpatialAttention(16, 9, "paper")(F)
    torch.manual_seed(0)
    torch.testing.assert_close(SpatialAttention(16, 9, "paper", rate=10.0)(F), a)
    P = torch.rand(2, 4, 16)
    torch.testing.assert_close(TemporalAttention(16, 4, "paper", rate=10.0)(P), TemporalAttention(16, 4, "paper")(P))


def test_temporal_inhibition_starts_below_the_mean_and_never_silences_a_video():
    from vaanet.models.attention import TemporalAttention

    P = torch.rand(64, 4, 16)  # non-negative, like pooled post-ReLU features
    s = P.mean(-1)  # the score each segment starts with (W^{T2} = 1/n)
    A = TemporalAttention(16, 4, "paper", inhibition=0.75)(P)
    torch.testing.assert_close(A, torch.relu(s - 0.75 * s.mean(-1, keepdim=True)) / 0.25)
    assert (A.max(-1).values > 0).all()


def test_spatial_saliency_init_starts_at_the_positions_mean_activation():
    """model.spatial_init=saliency: A_i^S starts at Softmax(tau x mean_c F_i), whatever the rate; W^{S1} = I."""
    from vaanet.models.attention import SpatialAttention
    from vaanet.models.attention.spatial import SALIENCY_SCALE

    F = torch.rand(2, 4, 9, 16)
    expected = torch.softmax(SALIENCY_SCALE * F.mean(-1), dim=-1)
    for rate in (1.0, 10.0):
        att = SpatialAttention(16, 9, "paper", rate=rate, init="saliency")
        torch.testing.assert_close(att(F), expected)
    torch.testing.assert_close(att.W_S1.weight * att.rate, torch.eye(9))
    assert not torch.allclose(SpatialAttention(16, 9, "paper")(F), expected)  # the default stays nn.Linear's


def test_channel_uniform_init_starts_as_the_switched_off_attention_and_still_learns():
    """model.channel_init=uniform: A^C = 1/n for any input at the start (VS+VCW starts as VS), and it moves."""
    from vaanet.models.attention import ChannelAttention

    F = torch.rand(2, 4, 9, 16, requires_grad=True)
    att = ChannelAttention(16, 9, "paper", init="uniform")
    A = att(F)
    torch.testing.assert_close(A, torch.full((2, 4, 16), 1 / 16))
    (A[..., 0] * F.sum((-1, -2))).sum().backward()
    assert att.W_C1.weight.grad.abs().sum() > 0


def test_attention_init_names_are_checked_and_kept_off_the_reference_style():
    with pytest.raises(ValueError, match="spatial_init must be one of"):
        ModelConfig(spatial_init="identity")
    with pytest.raises(ValueError, match="channel_init must be one of"):
        ModelConfig(channel_init="mean")
    with pytest.warns(UserWarning, match="spatial_init=saliency, channel_init=uniform: the paper styles"):
        cfg = ModelConfig(attention_style="reference", spatial_init="saliency", channel_init="uniform")
    assert (cfg.spatial_init, cfg.channel_init) == ("random", "random")


def test_relative_key_cue_options(tmp_path):
    """segment_flash: the key segment is the brightest of its video by at least key_flash - segment_flash;
    flash_all: the box brightens with its segment too; offset: the whole frame (box too) shifts per video;
    confuser_same: the other segments' box shows one colour. Off by default: the demo's set is unchanged."""
    from vaanet.data.ingest import decode_video

    cfg = SynthConfig(videos_per_class=2, duration=2.0, fps=8, resolutions=((96, 72),), distractors=0, noise=0.0,
                      background=(100.0, 100.0), key_flash=60.0, segment_flash=30.0, flash_all=True,
                      offset=(-40.0, 40.0), confuser_same=True)
    generate(tmp_path / "v", cfg, workers=1)
    truth = pd.read_csv(tmp_path / "v" / "synth_truth.csv")
    offsets = []
    for _, r in truth.iterrows():
        frames = np.asarray(decode_video(str(tmp_path / "v" / r["file"]), 72, None)[0], np.float32)
        T, H, W, _ = frames.shape
        seg = np.minimum((np.arange(T) * 4) // T, 3)
        key = int(r["key_segments"])
        corner = np.array([frames[seg == s][:, :6, :6].mean() for s in range(4)])  # background grey + flash
        others = [s for s in range(4) if s != key]
        assert corner[key] - corner[others].max() > 30 - 6, (r["video_id"], corner)  # margin >= 60 - 30
        assert corner[others].min() - 100 > -40 - 6 and corner[others].max() - 100 < 40 + 30 + 6, corner
        offsets.append(corner[others].min() - 100)
        x0, x1 = int(r["box_x0"] * W) + 3, int(r["box_x1"] * W) - 3
        y0, y1 = int(r["box_y0"] * H) + 3, int(r["box_y1"] * H) - 3
        box = np.stack([frames[seg == s][:, y0:y1, x0:x1].mean(axis=(0, 1, 2)) for s in range(4)])  # [4, RGB]
        assert np.abs(box[others] - box[others].mean(0)).max() < 45, box  # one colour (flashes up to 30 apart)
        assert box[key].min() > box[others].min(1).max(), box  # the box brightens with the key flash
    assert np.ptp(offsets) > 10  # the offset is drawn per video
    default = SynthConfig()
    assert (default.segment_flash, default.flash_all, default.offset, default.confuser_same) == (0.0, False, (0.0, 0.0),
                                                                                                 False)
    with pytest.raises(ValueError, match="segment_flash"):
        SynthConfig(key_flash=30.0, segment_flash=30.0)


def test_square_size_and_object_exposure_options(tmp_path):
    """distractor_size: the squares' side as a fraction of the box's; exposure_on="objects": the video's gain
    scales the box and the squares but not the background, and key_exposure only the box. Defaults unchanged."""
    from vaanet.data.ingest import decode_video
    from vaanet.data.synth import palette

    cfg = SynthConfig(videos_per_class=1, duration=2.0, fps=8, resolutions=((96, 72),), noise=0.0, key_flash=0.0,
                      background=(100.0, 100.0), distractor_colours="pairs", distractor_motion=0.0,
                      distractor_size=(0.5, 0.5), exposure=(0.5, 0.5), key_exposure=1.6, exposure_on="objects")
    generate(tmp_path / "v", cfg, workers=1)
    truth = pd.read_csv(tmp_path / "v" / "synth_truth.csv")
    colours = palette(4)
    for _, r in truth.iterrows():
        frames = np.asarray(decode_video(str(tmp_path / "v" / r["file"]), 72, None)[0], np.float32)
        T, H, W, _ = frames.shape
        seg = np.minimum((np.arange(T) * 4) // T, 3)
        key = int(r["key_segments"])
        x0, x1 = int(r["box_x0"] * W), int(r["box_x1"] * W)
        y0, y1 = int(r["box_y0"] * H), int(r["box_y1"] * H)
        side = x1 - x0
        inner = frames[seg == key][:, y0 + 3:y1 - 3, x0 + 3:x1 - 3].mean(axis=(0, 1, 2))
        assert np.abs(inner - colours[int(r["pair"])] * 0.5 * 1.6).max() < 20, (r["video_id"], inner)  # x gain x key
        grey = np.abs(frames - 100.0).max(-1) < 25  # the background: grey 100, lightly tinted
        background, coloured = grey[0].copy(), ~grey[0]
        background[y0 - 2:y1 + 2, x0 - 2:x1 + 2] = coloured[y0 - 2:y1 + 2, x0 - 2:x1 + 2] = False  # not the box
        assert background.sum() > H * W / 4, r["video_id"]  # the background is at its grey, not x the gain
        drift = np.abs(frames[:, background] - frames[0][background]).mean(-1)  # not scaled in any segment
        assert np.quantile(drift, 0.99) < 8, r["video_id"]
        area = coloured.sum() / cfg.distractors  # the squares (static, clear of the box): each (side / 2)^2 and
        # the codec's fringe; the default's smallest square, (0.7 side)^2, would be over 0.45 side^2
        assert 0.6 * (side / 2) ** 2 < area < 0.45 * side ** 2, (r["video_id"], area, side)
        squares = [frames[seg == s][:, coloured].max(-1).mean() for s in range(4)]  # brightest channel x 0.5
        assert max(squares) < 255 * 0.95 * 0.5 + 10 and np.ptp(squares) < 5, (r["video_id"], squares)  # no key gain
    default = SynthConfig()
    assert (default.distractor_size, default.exposure_on, default.isoluminant) == ((0.7, 1.0), "frame", False)
    with pytest.raises(ValueError, match="exposure_on"):
        SynthConfig(exposure_on="box")
    with pytest.raises(ValueError, match="distractor_size"):
        SynthConfig(distractor_size=(0.6, 0.3))


def test_isoluminant_pair_colours_differ_in_hue_only(tmp_path):
    """isoluminant: the pair colours are scaled to one luma (the darkest's), keeping their hue; the videos'
    boxes show them."""
    from vaanet.data.ingest import decode_video
    from vaanet.data.synth import LUMA, palette

    plain, iso = palette(4), palette(4, isoluminant=True)
    assert np.ptp(plain @ LUMA) > 90 and np.ptp(iso @ LUMA) < 1e-3  # luma 82-185 before, one luma after
    assert np.allclose(iso / iso.max(1, keepdims=True), plain / plain.max(1, keepdims=True), atol=1e-5)  # same hue
    cfg = SynthConfig(videos_per_class=1, duration=2.0, fps=8, resolutions=((96, 72),), noise=0.0, key_flash=0.0,
                      distractors=0, isoluminant=True)
    generate(tmp_path / "v", cfg, workers=1)
    for _, r in pd.read_csv(tmp_path / "v" / "synth_truth.csv").iterrows():
        frames = np.asarray(decode_video(str(tmp_path / "v" / r["file"]), 72, None)[0], np.float32)
        T, H, W, _ = frames.shape
        key = np.minimum((np.arange(T) * 4) // T, 3) == int(r["key_segments"])
        x0, x1, y0, y1 = int(r["box_x0"] * W) + 3, int(r["box_x1"] * W) - 3, int(r["box_y0"] * H) + 3, int(r["box_y1"] * H) - 3
        box = frames[key][:, y0:y1, x0:x1].mean(axis=(0, 1, 2))
        assert np.abs(box - iso[int(r["pair"])]).max() < 20, (r["video_id"], box, iso[int(r["pair"])])
