import os

import pytest
import torch

os.environ.setdefault("RAY_DISABLE_USAGE_STATS", "1")
torch.set_num_threads(2)


@pytest.fixture
def tiny_model_kwargs():
    """A small network for fast CPU tests: depth 10, 1/8 width, 2 segments of 4 frames at 64x64 (m = 4)."""
    return dict(depth=10, width=0.125, segments=2, frames=4, crop_size=64, num_classes=8)


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory):
    """A tiny synthetic VE-8 set of real mp4 files: 2 videos per class, 2 s at 10 fps, 64x48."""
    from vaanet.data.synth import SynthConfig, generate

    root = tmp_path_factory.mktemp("synth") / "videos"
    generate(root, SynthConfig(videos_per_class=2, duration=2.0, fps=10, resolutions=((64, 48), (80, 60)),
                               segments=4, no_audio_fraction=0.25, seed=3), workers=2)
    return root


@pytest.fixture(scope="session")
def synth_cache(synth_root, tmp_path_factory):
    from vaanet.data.ingest import PrepareConfig, prepare
    from vaanet.data.splits import make_splits

    cache = tmp_path_factory.mktemp("cache")
    index = prepare(synth_root, cache, PrepareConfig(short_side=40, workers=2), log=lambda *_: None)
    make_splits(index, cache / "splits", n=2, seed=0, val_fraction=0.2, log=lambda *_: None)
    return cache
