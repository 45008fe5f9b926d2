"""mu-law companding (ITU-T G.711 style, mu = 255): float audio in [-1, 1] <-> 256 classes.

WaveNet predicts one of 256 classes per sample; mu-law spends those classes where speech
needs them (fine steps near zero, coarse steps for loud samples), which is why 8 bits of
mu-law sound far better than 8 bits of linear PCM.
"""

from __future__ import annotations

import numpy as np

MU = 255
LEVELS = MU + 1


def encode(x: np.ndarray | float) -> np.ndarray:
    """Float samples in [-1, 1] (values outside are clipped) -> int64 classes 0..255."""
    x = np.clip(np.asarray(x, dtype=np.float64), -1.0, 1.0)
    y = np.sign(x) * np.log1p(MU * np.abs(x)) / np.log1p(MU)  # [-1, 1]
    return np.clip(np.floor((y + 1.0) / 2.0 * MU + 0.5), 0, MU).astype(np.int64)


def decode(classes: np.ndarray | int) -> np.ndarray:
    """int classes 0..255 -> float32 samples in [-1, 1] (the centre of each class)."""
    y = 2.0 * np.asarray(classes, dtype=np.float64) / MU - 1.0
    return (np.sign(y) * np.expm1(np.abs(y) * np.log1p(MU)) / MU).astype(np.float32)


def from_int16(pcm: np.ndarray) -> np.ndarray:
    """int16 PCM -> mu-law classes (the training data path)."""
    return encode(np.asarray(pcm, dtype=np.float64) / 32768.0)


SILENCE = int(encode(0.0))  # the class of digital silence (128): the context before any recording
