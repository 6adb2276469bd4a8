import os

import pytest
import torch

os.environ.setdefault("RAY_DISABLE_USAGE_STATS", "1")
torch.set_num_threads(2)


@pytest.fixture
def tiny_model_kwargs():
    """A small network for fast CPU tests: depth 10, 1/8 width, 2 segments of 4 frames at 64x64 (m = 4)."""
    return dict(depth=10, width=0.125, segments=2, frames=4, crop_size=64, num_classes=8)
