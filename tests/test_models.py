import pytest
import torch

from vaanet.models import (
    PRESETS, CheckpointError, ModelConfig, VAANet, count_complexity, feature_size, resnet3d,
)
from vaanet.models.audio import AudioResNet18
from vaanet.models.pretrained import load_audio_pretrained


def _inputs(kw, batch=2, audio_frames=16):
    torch.manual_seed(0)
    t, k, s = kw["segments"], kw["frames"], kw["crop_size"]
    visual = torch.randint(0, 256, (batch, t, 3, k, s, s), dtype=torch.uint8)
    audio = torch.randn(batch, t, 1, audio_frames, 32)
    return visual, audio


@pytest.mark.parametrize("style", ["paper", "reference"])
@pytest.mark.parametrize("preset", list(PRESETS))
def test_preset_shapes_and_distributions(preset, style, tiny_model_kwargs):
    model = VAANet(ModelConfig.from_preset(preset, attention_style=style, **tiny_model_kwargs))
    visual, audio = _inputs(tiny_model_kwargs)
    out = model(visual, audio)
    B, t = 2, tiny_model_kwargs["segments"]
    assert out.logits.shape == (B, 8)
    assert torch.isfinite(out.logits).all()
    cfg = model.cfg
    if cfg.visual:
        m = feature_size(tiny_model_kwargs["crop_size"]) ** 2
        assert out.spatial.shape == (B, t, m)
        assert out.channel.shape == (B, t, model.n)
        assert out.temporal.shape == (B, t)
        assert (out.temporal >= 0).all()
        # softmax attentions are distributions (times m or n in the reference style)
        s_scale = 1.0 if style == "paper" else m
        c_scale = 1.0 if style == "paper" else model.n
        torch.testing.assert_close(out.spatial.sum(-1), torch.full((B, t), float(s_scale)))
        torch.testing.assert_close(out.channel.sum(-1), torch.full((B, t), float(c_scale)))
        assert (out.spatial > 0).all() and (out.channel > 0).all()
    else:
        assert out.spatial is None and out.channel is None and out.temporal is None
    if cfg.audio:
        assert out.audio_temporal.shape == (B, t)
    else:
        assert out.audio_temporal is None


EXPECTED_MODULES = {
    "V": {"backbone"},
    "V+A": {"backbone", "audio_backbone"},
    "AT": {"audio_backbone", "audio_temporal"},
    "VS": {"backbone", "spatial"},
    "VS+VCW": {"backbone", "spatial", "channel"},
    "VS+VCW+VT": {"backbone", "spatial", "channel", "visual_temporal"},
    "VS+VCW+VT+AT": {"backbone", "spatial", "channel", "visual_temporal", "audio_backbone", "audio_temporal"},
}


@pytest.mark.parametrize("preset", list(PRESETS))
def test_presets_create_exactly_their_modules(preset, tiny_model_kwargs):
    model = VAANet(ModelConfig.from_preset(preset, **tiny_model_kwargs))
    children = {name for name, _ in model.named_children()} - {"fc"}
    assert children == EXPECTED_MODULES[preset]
    assert model.cfg.preset == preset


@pytest.mark.parametrize("style", ["paper", "reference"])
def test_gradients_reach_every_parameter(style, tiny_model_kwargs):
    model = VAANet(ModelConfig(attention_style=style, **tiny_model_kwargs))
    visual, audio = _inputs(tiny_model_kwargs)
    out = model(visual, audio)
    torch.nn.functional.cross_entropy(out.logits, torch.tensor([1, 5])).backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or not torch.any(p.grad != 0)]
    assert no_grad == []


def test_frozen_backbone_gets_no_gradient_and_keeps_bn_statistics(tiny_model_kwargs):
    model = VAANet(ModelConfig(freeze_backbone=True, **tiny_model_kwargs)).train()
    assert not model.backbone.training and model.audio_backbone.training
    stats = model.backbone.bn1.running_mean.clone()
    visual, audio = _inputs(tiny_model_kwargs)
    out = model(visual, audio)
    torch.nn.functional.cross_entropy(out.logits, torch.tensor([1, 5])).backward()
    assert all(p.grad is None for p in model.backbone.parameters())
    assert model.fc.weight.grad is not None and model.spatial.W_S1.weight.grad is not None
    torch.testing.assert_close(model.backbone.bn1.running_mean, stats)


def test_any_crop_size_derives_m():
    for crop, side in [(112, 4), (128, 4), (160, 5), (224, 7), (32, 1)]:
        assert feature_size(crop) == side
    model = VAANet(ModelConfig(depth=10, width=0.125, segments=2, frames=4, crop_size=64, audio=False, audio_attention=False))
    assert model.m == 4
    out = model(torch.randint(0, 255, (1, 2, 3, 4, 64, 64), dtype=torch.uint8))
    assert out.spatial.shape == (1, 2, 4)


def test_wrong_input_shapes_are_explained(tiny_model_kwargs):
    model = VAANet(ModelConfig(**tiny_model_kwargs))
    visual, audio = _inputs(tiny_model_kwargs)
    with pytest.raises(ValueError, match=r"visual input must be \[B, t=2"):
        model(visual[:, :1], audio)
    with pytest.raises(ValueError, match="audio input must be"):
        model(visual, None)
    with pytest.raises(ValueError, match="feature positions"):
        model(torch.zeros(2, 2, 3, 4, 128, 128), audio)


def test_bad_config_is_rejected_with_all_reasons():
    with pytest.raises(ValueError) as e:
        ModelConfig(depth=42, attention_style="fancy", shortcut="C")
    assert "depth must be one of" in str(e.value) and "attention_style" in str(e.value) and "shortcut" in str(e.value)
    with pytest.raises(ValueError, match="unknown preset"):
        ModelConfig.from_preset("VS+XYZ")
    with pytest.raises(ValueError, match="audio_attention needs audio"):
        ModelConfig(audio=False)


@pytest.mark.parametrize("depth", [10, 18, 34, 50, 101, 152, 200])
def test_resnet3d_depths_match_hara_layout(depth):
    with torch.device("meta"):
        net = resnet3d(depth, width=1.0, num_classes=400)
    blocks = {10: [1, 1, 1, 1], 18: [2, 2, 2, 2], 34: [3, 4, 6, 3], 50: [3, 4, 6, 3],
              101: [3, 4, 23, 3], 152: [3, 8, 36, 3], 200: [3, 24, 36, 3]}[depth]
    assert [len(getattr(net, f"layer{i}")) for i in (1, 2, 3, 4)] == blocks
    assert net.out_channels == (2048 if depth >= 50 else 512)
    assert net.conv1.kernel_size == (7, 7, 7) and net.conv1.stride == (1, 2, 2)


def test_resnet3d_options():
    net_a = resnet3d(18, width=0.25, shortcut="A", num_classes=None)
    assert not any("downsample" in k for k in net_a.state_dict())
    net_b = resnet3d(18, width=0.25, shortcut="B", conv1_t_size=3, conv1_t_stride=2, no_max_pool=True, num_classes=5)
    assert any("downsample" in k for k in net_b.state_dict())
    assert net_b.conv1.kernel_size == (3, 7, 7) and net_b.conv1.stride == (2, 2, 2)
    net_a.eval(), net_b.eval()
    x = torch.randn(1, 3, 8, 32, 32)
    assert net_a(x).shape == (1, 128) and net_b(x).shape == (1, 5)
    assert net_b.features(x).shape[-1] == 2  # no max-pool: 32 -> 16 -> 16 -> 8 -> 4 -> 2


def _snippet_flops(net, shape):
    from torch.utils.flop_counter import FlopCounterMode

    net, x = net.to("meta").eval(), torch.empty(*shape, device="meta")
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        net(x)
    return counter.get_total_flops()


def test_flop_convention_matches_torchvision_documentation():
    from torchvision.models.video import r3d_18

    # torchvision documents r3d_18 at 40.70 GFLOPS (multiply-adds) for 16x112x112; we count 2 per MAC
    assert _snippet_flops(r3d_18(), (1, 3, 16, 112, 112)) / 2e9 == pytest.approx(40.70, abs=0.01)


def test_paper_configuration_is_countable_on_cpu():
    c = count_complexity(ModelConfig())
    # 3D ResNet-101 (85.2 M params without fc) + ResNet-18 audio (11.2 M) + attentions + fc
    assert 90e6 < c.params < 110e6
    snippet = _snippet_flops(resnet3d(101, num_classes=None), (1, 3, 16, 112, 112))
    audio = count_complexity(ModelConfig.from_preset("AT")).flops_per_video
    # ten independent snippets through the backbone + the audio stream + attention heads and fc
    assert c.flops_per_video == pytest.approx(10 * snippet + audio, rel=0.01)
    small = count_complexity(ModelConfig(depth=10, width=0.125))
    assert small.flops_per_video < c.flops_per_video / 20


def test_audio_imagenet_weights_load_except_conv1(tmp_path):
    from torchvision.models import resnet18

    ref = resnet18(weights=None)
    path = tmp_path / "resnet18-imagenet.pth"
    torch.save(ref.state_dict(), path)
    audio = AudioResNet18()
    load_audio_pretrained(audio, path)
    torch.testing.assert_close(audio.net.layer3[0].conv1.weight, ref.layer3[0].conv1.weight)
    assert audio.net.conv1.weight.shape == (64, 1, 7, 1)
    torch.save({"something": torch.zeros(3)}, path)
    with pytest.raises(CheckpointError, match="resnet18-imagenet.pth does not match"):
        load_audio_pretrained(audio, path)


def test_audio_width_scales_the_audio_stream(tmp_path):
    """model.audio_width narrows every stage of the audio ResNet-18 (the CPU demo uses 0.25); ImageNet
    weights fit width 1 only, and a narrow network refuses them with the setting in the message."""
    from torchvision.models import resnet18

    narrow = AudioResNet18(0.25)
    assert narrow.out_channels == 128
    assert narrow.net.layer4[1].conv2.weight.shape == (128, 128, 3, 3)
    assert narrow(torch.randn(3, 1, 16, 13)).shape == (3, 128)
    full = sum(p.numel() for p in AudioResNet18().parameters())
    assert sum(p.numel() for p in narrow.parameters()) < full / 10
    cfg = ModelConfig.from_preset("VS+VCW+VT+AT", depth=10, width=0.125, audio_width=0.25, segments=2, frames=2,
                                  crop_size=32)
    out = VAANet(cfg)(torch.randint(0, 255, (2, 2, 3, 2, 32, 32)), torch.randn(2, 2, 1, 16, 13))
    assert out.logits.shape == (2, 8)
    path = tmp_path / "resnet18-imagenet.pth"
    torch.save(resnet18(weights=None).state_dict(), path)
    with pytest.raises(CheckpointError, match="audio_width=1"):
        load_audio_pretrained(narrow, path)
    with pytest.raises(ValueError, match="audio_width must be > 0"):
        ModelConfig(audio_width=0)


def test_attention_initialisation_options_are_checked():
    """The temporal inhibition exists in the paper styles only: with the reference style the model is
    built and recorded without it, and a warning says so (never a value recorded that had no effect)."""
    with pytest.warns(UserWarning, match="temporal_inhibition=0.75: the paper styles"):
        cfg = ModelConfig(attention_style="reference", temporal_inhibition=0.75)
    assert cfg.temporal_inhibition == 0.0
    with pytest.raises(ValueError, match=r"temporal_inhibition must be in \[0, 1\)"):
        ModelConfig(temporal_inhibition=1.0)


def test_removed_model_keys_load_at_their_old_default_and_are_refused_otherwise(tmp_path, tiny_model_kwargs):
    """A config file or checkpoint naming a key removed after vaanet 0.1.0 loads when the key is at its old
    default (one note), and is refused at any other value, naming the key and the last version that had it."""
    import warnings

    import yaml

    from vaanet.config import LAST_VERSION, REMOVED_KEYS, Config, load_config

    removed = REMOVED_KEYS["model."]
    assert "0.1.0" in LAST_VERSION
    path = tmp_path / "old.yaml"
    path.write_text(yaml.safe_dump({"model": {"preset": "VS", **removed}}))
    with warnings.catch_warnings(record=True) as notes:
        warnings.simplefilter("always")
        cfg = load_config(path)
    assert len(notes) == 1 and all(f"model.{k}" in str(notes[0].message) for k in removed), notes
    assert cfg.model == load_config(None, ["model.preset=VS"]).model
    old_checkpoint = Config().to_dict()  # what a 0.1.0 checkpoint holds under "config"
    old_checkpoint["model"].update(removed)
    with pytest.warns(UserWarning, match="removed after vaanet 0.1.0"):
        assert Config.from_dict(old_checkpoint) == Config()
    for key, default in removed.items():
        other = "other" if isinstance(default, str) else default + 0.5
        with pytest.raises(ValueError, match=rf"model.{key}=.*removed.*{LAST_VERSION.replace('(', '.').replace(')', '.')}"):
            load_config(None, [f"model.{key}={other}"])
        with pytest.raises(ValueError, match=f"model.{key}"):
            Config.from_dict({**old_checkpoint, "model": {**old_checkpoint["model"], key: other}})
