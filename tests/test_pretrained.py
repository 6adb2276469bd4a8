"""Both Hara checkpoint formats round-trip through files written here; every error path is clear."""
import pytest
import torch

from vaanet.models import PIXEL_NORMALIZATIONS, CheckpointError, ModelConfig, VAANet, build_model, resnet3d

KW = dict(segments=2, frames=4, crop_size=32, audio=False, audio_attention=False)


def _hara(depth, width, n_classes):
    torch.manual_seed(1)
    return resnet3d(depth, width=width, num_classes=n_classes)


def _old_format(net, path):
    """resnet-101-kinetics.pth layout: {'epoch','arch','state_dict','optimizer'}, 'module.' prefix."""
    sd = {f"module.{k}": v for k, v in net.state_dict().items()}
    torch.save({"epoch": 200, "arch": "resnet-101", "state_dict": sd, "optimizer": {}}, path)


def _new_format(net, path):
    """r3d101_K_200ep.pth layout: no prefix, 700-way fc."""
    torch.save({"epoch": 200, "arch": "resnet", "state_dict": net.state_dict()}, path)


@pytest.mark.parametrize("fmt,n_classes,norm", [(_old_format, 400, "kinetics400_0_255"), (_new_format, 700, "kinetics700_0_1")])
def test_checkpoint_formats_round_trip(tmp_path, fmt, n_classes, norm):
    src = _hara(18, 0.25, n_classes)
    path = tmp_path / "weights.pth"
    fmt(src, path)
    model = build_model(ModelConfig(depth=18, width=0.25, visual_weights=str(path), **KW))
    for k, v in src.state_dict().items():
        if not k.startswith("fc."):
            torch.testing.assert_close(model.backbone.state_dict()[k], v)
    assert model.backbone.fc is None
    assert model.pixel_normalization == norm
    expected = PIXEL_NORMALIZATIONS[norm]
    torch.testing.assert_close(model.pixel_mean.flatten(), torch.tensor(expected.mean))
    # the model normalises the 0-255 input exactly as the weights were trained
    x = torch.full((1, 2, 3, 4, 32, 32), 200, dtype=torch.uint8)
    feats = model.visual_features(x)
    manual = (x.flatten(0, 1).float() * expected.scale - model.pixel_mean) / model.pixel_std
    ref = src.features(manual).mean(2).flatten(2).transpose(1, 2).reshape(1, 2, -1, feats.shape[-1])
    src.eval(), model.eval()
    torch.testing.assert_close(model.visual_features(x), src.eval().features(manual).mean(2).flatten(2).transpose(1, 2).reshape(1, 2, -1, feats.shape[-1]))
    del ref


def test_explicit_normalization_overrides_the_weights(tmp_path):
    path = tmp_path / "w.pth"
    _old_format(_hara(10, 0.125, 400), path)
    model = build_model(ModelConfig(depth=10, width=0.125, visual_weights=str(path), pixel_normalization="reference_minus_100", **KW))
    assert model.pixel_normalization == "reference_minus_100"


def test_wrong_depth_names_file_keys_and_fix(tmp_path):
    path = tmp_path / "resnet-34-kinetics.pth"
    _old_format(_hara(34, 0.125, 400), path)
    with pytest.raises(CheckpointError) as e:
        build_model(ModelConfig(depth=18, width=0.125, visual_weights=str(path), **KW))
    msg = str(e.value)
    assert "resnet-34-kinetics.pth" in msg and "unexpected keys" in msg and "model.depth=34" in msg


def test_wrong_width_reports_shape_mismatch(tmp_path):
    path = tmp_path / "w.pth"
    _new_format(_hara(10, 0.25, 700), path)
    with pytest.raises(CheckpointError, match="shape mismatches"):
        build_model(ModelConfig(depth=10, width=0.125, visual_weights=str(path), **KW))


def test_missing_file_and_non_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        build_model(ModelConfig(depth=10, width=0.125, visual_weights=str(tmp_path / "nope.pth"), **KW))
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"this is not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.pth is not a readable PyTorch checkpoint"):
        build_model(ModelConfig(depth=10, width=0.125, visual_weights=str(junk), **KW))
    notdict = tmp_path / "list.pth"
    torch.save([1, 2, 3], notdict)
    with pytest.raises(CheckpointError, match="holds no state_dict"):
        build_model(ModelConfig(depth=10, width=0.125, visual_weights=str(notdict), **KW))


def test_pickled_code_is_refused(tmp_path):
    """weights_only=True: a checkpoint that would run code on load is rejected, not executed."""
    path = tmp_path / "evil.pth"

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"state_dict": Evil()}, path)
    with pytest.raises(CheckpointError, match="evil.pth"):
        build_model(ModelConfig(depth=10, width=0.125, visual_weights=str(path), **KW))
