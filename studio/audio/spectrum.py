"""The numbers behind the Audio tab's plots (numpy only, no Qt): spectrogram and surprise.

* `spectrogram` - a short-time Fourier transform in dB relative to full scale, on a fixed
  scale so a spectrogram that grows while audio is generated never changes colours under
  the user's eyes. 256-sample Hann frames (32 ms at 8 kHz: resolves the harmonics of a
  voice) every 64 samples (8 ms), centred: frame k describes the sound around k * hop
  (the sound is preceded by silence; frames reaching past its end are left out).
* `surprise_bits` - -log2 p of each sample from natural-log probabilities, smoothed with a
  centred moving average the width of `engines.audio.scoring.SURPRISE_WINDOW` (10 ms at
  8 kHz), the same smoothing the engine gives a scored recording; unknown values (NaN,
  e.g. a prompt that was not scored) stay unknown instead of pulling their neighbours down.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

N_FFT = 256
HOP = 64
FLOOR_DB = -90.0  # the bottom of the colour scale, dB relative to a full-scale sine
TOP_DB = 0.0
DEFAULT_SURPRISE_WINDOW = 80  # used only if the engine's constant cannot be imported


@dataclass(frozen=True)
class Spectrogram:
    db: np.ndarray  # (frames, bins) float32 in [FLOOR_DB, TOP_DB]
    hop_s: float  # seconds between frames
    max_hz: float  # the frequency of the last bin (Nyquist)

    @property
    def duration_s(self) -> float:
        return self.db.shape[0] * self.hop_s


def spectrogram(samples: np.ndarray, sample_rate: int, n_fft: int = N_FFT, hop: int = HOP) -> Spectrogram:
    """STFT magnitudes in dBFS of `samples` (n,); frames centred on multiples of `hop`."""
    x = np.asarray(samples, dtype=np.float32).reshape(-1)
    # Frames whose window would run past the last sample are left out: the abrupt end of a
    # sound still being generated would splash broadband energy over the newest column.
    n_frames = max(1, (len(x) - n_fft // 2) // hop + 1) if len(x) >= n_fft // 2 else 1
    padded = np.zeros(n_frames * hop + n_fft, np.float32)
    padded[n_fft // 2: n_fft // 2 + len(x)] = x
    frames = np.lib.stride_tricks.sliding_window_view(padded, n_fft)[::hop][:n_frames]  # (frames, n_fft)
    window = np.hanning(n_fft).astype(np.float32)
    mag = np.abs(np.fft.rfft(frames * window, axis=1))  # (frames, n_fft // 2 + 1)
    ref = window.sum() / 2  # a full-scale sine's peak magnitude: 0 dB
    db = 20 * np.log10(np.maximum(mag / ref, 1e-12))
    return Spectrogram(np.clip(db, FLOOR_DB, TOP_DB).astype(np.float32), hop / sample_rate, sample_rate / 2)


def surprise_window() -> int:
    try:
        from engines.audio.scoring import SURPRISE_WINDOW
    except ImportError:
        return DEFAULT_SURPRISE_WINDOW
    return int(SURPRISE_WINDOW)


def surprise_bits(logprobs: np.ndarray, window: int | None = None) -> np.ndarray:
    """Smoothed -log2 p per sample (n,) float64 from ln p (n,); NaN where ln p is unknown."""
    lp = np.asarray(logprobs, dtype=np.float64).reshape(-1)
    bits = -lp / math.log(2)
    w = min(int(window or surprise_window()), len(bits))  # as the engine: never wider than the sound
    if w <= 1 or len(bits) == 0:
        return bits
    known = np.isfinite(bits)
    vals = np.where(known, bits, 0.0)
    # Centred moving average over the known values only: sum / count in the same window.
    c_vals = np.concatenate([[0.0], np.cumsum(vals)])
    c_known = np.concatenate([[0], np.cumsum(known)])
    n = len(bits)
    lo = np.clip(np.arange(n) - w // 2, 0, n)
    hi = np.clip(np.arange(n) - w // 2 + w, 0, n)
    count = c_known[hi] - c_known[lo]
    with np.errstate(invalid="ignore", divide="ignore"):
        out = (c_vals[hi] - c_vals[lo]) / count
    out[~known] = np.nan
    return out
