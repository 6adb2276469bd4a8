"""Data: synthetic set -> prepare (decode once into caches) -> splits -> dataset/sampler."""
from .dataset import EpochSampler, SamplingConfig, VideoEmotionDataset
from .ingest import NothingPrepared, PrepareConfig, load_index, prepare
from .splits import load_split, make_splits, official_split, stratified_split
from .synth import SynthConfig, generate

__all__ = [
    "EpochSampler", "SamplingConfig", "VideoEmotionDataset", "NothingPrepared", "PrepareConfig", "load_index",
    "prepare", "load_split", "make_splits", "official_split", "stratified_split", "SynthConfig", "generate",
]
