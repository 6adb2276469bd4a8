"""The soundtrack descriptor of the reference code: MFCC, 32 coefficients, n_fft 2048, hop 512, 44.1 kHz
mono, no normalisation. Computed with torchaudio, configured to equal ``librosa.feature.mfcc`` (slaney
mel filters, orthonormal DCT-II, power-to-dB with an 80 dB floor; tested against librosa) without
librosa's numba compilation in every worker process."""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
import torchaudio

SAMPLE_RATE = 44100
N_MFCC = 32
N_FFT = 2048
HOP = 512
FRAMES_PER_SECOND = SAMPLE_RATE / HOP  # 86.13 MFCC frames per second


@lru_cache(maxsize=4)
def _transform(sample_rate: int, n_mfcc: int, n_fft: int, hop: int) -> torchaudio.transforms.MFCC:
    return torchaudio.transforms.MFCC(
        sample_rate=sample_rate, n_mfcc=n_mfcc, dct_type=2, norm="ortho", log_mels=False,
        melkwargs=dict(n_fft=n_fft, hop_length=hop, n_mels=128, mel_scale="slaney", norm="slaney",
                       center=True, pad_mode="constant", power=2.0),
    )


def mfcc(samples: np.ndarray, sample_rate: int = SAMPLE_RATE, n_mfcc: int = N_MFCC, n_fft: int = N_FFT,
         hop: int = HOP) -> np.ndarray:
    """Mono float samples [n] -> MFCC [frames, n_mfcc] (time first, as the dataset slices it)."""
    x = torch.from_numpy(np.ascontiguousarray(samples, dtype=np.float32))
    with torch.no_grad():
        return _transform(sample_rate, n_mfcc, n_fft, hop)(x).T.contiguous().numpy()
