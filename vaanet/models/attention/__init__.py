"""The paper's attention sub-networks, one file each: spatial (eq. 2-3), channel-wise (eq. 4-6),
temporal (eq. 7-9 visual, eq. 10-11 audio)."""
from .channel import ChannelAttention
from .spatial import SpatialAttention
from .temporal import TemporalAttention

STYLES = ("paper", "reference", "paper_literal")

__all__ = ["SpatialAttention", "ChannelAttention", "TemporalAttention", "STYLES"]
