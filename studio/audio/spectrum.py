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
    complete: bool = True  # every frame's window lies within the sound (False: shorter than half a window)
    new_frames: int = 0  # frames computed by the call that made it (the rest came from `previous`)

    @property
    def duration_s(self) -> float:
        return self.db.shape[0] * self.hop_s


def spectrogram(samples: np.ndarray, sample_rate: int, n_fft: int = N_FFT, hop: int = HOP, *,
                previous: Spectrogram | None = None) -> Spectrogram:
    """STFT magnitudes in dBFS of `samples` (n,); frames centred on multiples of `hop`.

    `previous`: the spectrogram (same rate, n_fft and hop) of a sound that `samples` extends,
    i.e. `samples` starts with that sound. Its frames are kept and only the new ones computed,
    so a sound growing while it is generated costs O(new samples) per redraw, not O(sound);
    the result is the same as without it (a frame is computed only once its window is whole)."""
    x = np.asarray(samples, dtype=np.float32).reshape(-1)
    n_frames = spectrogram_length(len(x), n_fft, hop)
    first = 0
    if previous is not None and previous.complete and previous.db.shape[0] <= n_frames:
        first = previous.db.shape[0]
    db = spectrogram_frames(x, first, n_frames, n_fft, hop)
    if first:
        db = np.concatenate([previous.db, db])
    return Spectrogram(db, hop / sample_rate, sample_rate / 2, complete=len(x) >= n_fft // 2,
                       new_frames=n_frames - first)


def spectrogram_length(n_samples: int, n_fft: int = N_FFT, hop: int = HOP) -> int:
    """How many frames `spectrogram` gives for a sound of `n_samples` (at least one)."""
    # Frames whose window would run past the last sample are left out: the abrupt end of a
    # sound still being generated would splash broadband energy over the newest column.
    return max(1, (n_samples - n_fft // 2) // hop + 1) if n_samples >= n_fft // 2 else 1


def spectrogram_frames(x: np.ndarray, first: int, last: int, n_fft: int = N_FFT, hop: int = HOP) -> np.ndarray:
    """(last - first, n_fft // 2 + 1) float32 dBFS: frames first..last-1 of `spectrogram(x)`, reading
    only the samples they cover (a sound that grows has its new frames computed in O(new samples))."""
    x = np.asarray(x, dtype=np.float32).reshape(-1)
    # frame k covers x[k * hop - n_fft / 2 : k * hop + n_fft / 2] (silence before the sound)
    lo = first * hop - n_fft // 2
    padded = np.zeros(max(0, last - first) * hop + n_fft, np.float32)
    part = x[max(0, lo): max(0, lo + len(padded))]
    padded[max(0, -lo): max(0, -lo) + len(part)] = part
    frames = np.lib.stride_tricks.sliding_window_view(padded, n_fft)[::hop][:max(0, last - first)]  # (frames, n_fft)
    window = np.hanning(n_fft).astype(np.float32)
    mag = np.abs(np.fft.rfft(frames * window, axis=1))  # (frames, n_fft // 2 + 1)
    ref = window.sum() / 2  # a full-scale sine's peak magnitude: 0 dB
    return np.clip(20 * np.log10(np.maximum(mag / ref, 1e-12)), FLOOR_DB, TOP_DB).astype(np.float32)


def surprise_window() -> int:
    try:
        from engines.audio.scoring import SURPRISE_WINDOW
    except ImportError:
        return DEFAULT_SURPRISE_WINDOW
    return int(SURPRISE_WINDOW)


def surprise_tail(logprobs: np.ndarray, m: int, window: int | None = None) -> tuple[int, np.ndarray]:
    """(keep, values): given `surprise_bits` of the first m ln p (m >= the window), the values from
    `keep` on of `surprise_bits(logprobs)` (the ones before it are final); O(len - m + window)."""
    full = int(window or surprise_window())
    # value i averages ln p over [i - full // 2, i - full // 2 + full): final once that ends by m
    keep = m - (full - full // 2) + 1
    start = keep - full // 2  # the first ln p the recomputed values read (>= 1: m >= full)
    return keep, surprise_bits(np.asarray(logprobs).reshape(-1)[start:], full)[keep - start:]


def surprise_bits(logprobs: np.ndarray, window: int | None = None, *,
                  previous: np.ndarray | None = None) -> np.ndarray:
    """Smoothed -log2 p per sample (n,) float64 from ln p (n,); NaN where ln p is unknown.

    `previous`: what this function gave (same window) for the first len(previous) of these ln p,
    for a track that grows while it is generated: only the values whose window reaches past
    it are recomputed, so each call costs O(new samples + window), not O(track)."""
    lp = np.asarray(logprobs, dtype=np.float64).reshape(-1)
    full = int(window or surprise_window())
    if previous is not None and full <= len(previous) <= len(lp):
        if len(previous) == len(lp):
            return previous
        keep, tail = surprise_tail(lp, len(previous), full)
        return np.concatenate([previous[:keep], tail])
    bits = -lp / math.log(2)
    w = min(full, len(bits))  # as the engine: never wider than the sound
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
