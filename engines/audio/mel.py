"""Log-mel frames: the one feature the recogniser, the mel prior and the vocoder all read.

One implementation (numpy, no torch) serves training, export checks and the studio, so a
model never sees features computed two ways. With the defaults at 8 kHz:

    frames  (n_mels = 40, F)  F = 1 + n // hop   (hop 80 = 10 ms, window 256 = 32 ms, Hann)
    frame f is centred on sample f * hop (the signal is padded with n_fft // 2 zeros on both
    sides), so the frame nearest to sample s is (s + hop // 2) // hop.
    value   ln(max(mel power, floor)): mel power is the power spectrum |STFT|^2 of float
            samples in [-1, 1] through triangular (Slaney-style, HTK-scale) mel filters.

`MelSpec` is stored in every card that reads or writes frames, so a folder carries its own
feature definition; `MelSpec.from_dict` refuses a spec whose sizes are absurd.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from functools import lru_cache

import numpy as np

from engines.errors import InputError, ModelLoadError

MAX_FFT = 8192
MAX_MELS = 512


@dataclass(frozen=True)
class MelSpec:
    sample_rate: int = 8000
    n_fft: int = 256
    hop: int = 80
    n_mels: int = 40
    fmin: float = 0.0
    fmax: float = 4000.0
    floor: float = 1e-5  # power floor before the log: ln(1e-5) = -11.51 is "silence"

    @property
    def silence_value(self) -> float:
        """The log-mel value of digital silence (every bin at the floor)."""
        return math.log(self.floor)

    def n_frames(self, n_samples: int) -> int:
        return 1 + int(n_samples) // self.hop

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d, where: str = "card") -> "MelSpec":
        """A spec from a card's JSON object; a missing or absurd field is a ModelLoadError naming it."""
        if not isinstance(d, dict):
            raise ModelLoadError(f"{where}: 'mel' must be an object of mel settings")
        try:
            spec = cls(sample_rate=int(d["sample_rate"]), n_fft=int(d["n_fft"]), hop=int(d["hop"]),
                       n_mels=int(d["n_mels"]), fmin=float(d["fmin"]), fmax=float(d["fmax"]),
                       floor=float(d["floor"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelLoadError(f"{where}: mel settings lack a valid {exc}") from None
        if not (1000 <= spec.sample_rate <= 192_000 and 16 <= spec.n_fft <= MAX_FFT and 1 <= spec.hop <= spec.n_fft
                and 1 <= spec.n_mels <= MAX_MELS and 0 <= spec.fmin < spec.fmax <= spec.sample_rate / 2
                and 0 < spec.floor < 1):
            raise ModelLoadError(f"{where}: mel settings out of range: {spec}")
        return spec


@lru_cache(maxsize=8)
def mel_filters(spec: MelSpec) -> np.ndarray:
    """(n_mels, n_fft // 2 + 1) triangular filters, each normalised to unit area (Slaney)."""
    def hz_to_mel(f):
        return 2595.0 * np.log10(1.0 + np.asarray(f, dtype=np.float64) / 700.0)

    def mel_to_hz(m):
        return 700.0 * (10.0 ** (np.asarray(m, dtype=np.float64) / 2595.0) - 1.0)

    freqs = np.linspace(0, spec.sample_rate / 2, spec.n_fft // 2 + 1)
    edges = mel_to_hz(np.linspace(hz_to_mel(spec.fmin), hz_to_mel(spec.fmax), spec.n_mels + 2))
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    up = (freqs[None] - lower) / np.maximum(centre - lower, 1e-9)
    down = (upper - freqs[None]) / np.maximum(upper - centre, 1e-9)
    w = np.maximum(0.0, np.minimum(up, down))
    w *= (2.0 / np.maximum(upper - lower, 1e-9))  # equal area: wide high filters do not dominate
    return w.astype(np.float64)


def log_mel(samples: np.ndarray, spec: MelSpec = MelSpec()) -> np.ndarray:
    """Float samples (n,) in [-1, 1] -> (n_mels, 1 + n // hop) float32 log-mel frames."""
    x = np.asarray(samples, dtype=np.float64).reshape(-1)
    if x.size == 0:
        raise InputError("no samples to take log-mel frames of")
    half = spec.n_fft // 2
    padded = np.concatenate([np.zeros(half), x, np.zeros(half)])
    n_frames = spec.n_frames(len(x))
    idx = np.arange(n_frames)[:, None] * spec.hop + np.arange(spec.n_fft)[None]
    frames = padded[idx] * np.hanning(spec.n_fft + 1)[:-1][None]  # periodic Hann, (F, n_fft)
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2  # (F, n_fft // 2 + 1)
    mel = power @ mel_filters(spec).T  # (F, n_mels)
    return np.log(np.maximum(mel, spec.floor)).T.astype(np.float32)


def frame_of_sample(sample_index: np.ndarray, n_frames: int, hop: int) -> np.ndarray:
    """Index into the frames WITH one silence frame in front (`with_silence_frame`) for each sample.

    Samples before the clip (index < 0) read the silence frame 0; sample s >= 0 reads frame
    1 + round(s / hop), clamped to the last frame. This is how the vocoder repeats frames up
    to the sample rate, the same in training, scoring and generation."""
    s = np.asarray(sample_index, dtype=np.int64)
    f = 1 + np.minimum((np.maximum(s, 0) + hop // 2) // hop, n_frames - 1)
    return np.where(s < 0, 0, f).astype(np.int64)


def with_silence_frame(frames: np.ndarray, spec: MelSpec) -> np.ndarray:
    """(n_mels, F) -> (n_mels, F + 1): the frame of the silence before a clip, then the clip's frames."""
    silence = np.full((frames.shape[0], 1), spec.silence_value, dtype=np.float32)
    return np.concatenate([silence, np.asarray(frames, dtype=np.float32)], axis=1)
