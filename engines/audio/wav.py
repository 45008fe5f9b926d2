"""Reading the recordings users give, and writing generated audio, with soundfile and soxr.

WaveNet works on mono 8 kHz audio in [-1, 1]. A user's file can be anything libsndfile
reads (WAV of any bit depth, FLAC, OGG, AIFF, ...), at any rate, with any number of
channels, so reading brings it to what the model needs and writes a note for each change,
so nothing happens silently:
* integer PCM of another depth than 16 bits (8, 24, 32) and float files are converted to
  float32 (the note names the depth: the model's data was 16-bit);
* several channels are mixed to mono (their mean);
* other rates are resampled with soxr (high quality, linear phase), a declared dependency:
  no naive decimation, which would alias high frequencies into the speech band;
* float files with values beyond [-1, 1] are clipped (with a count).

Missing, empty, zero-length, corrupt or absurd files (rate, channels, length) raise one
`InputError` naming the file and the problem; nothing half-read is returned.

Writing: `.wav` is 16-bit PCM, `.flac` 16-bit FLAC, always atomically (a temporary file
beside the target, then a rename), so a full disk never leaves a half-written file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from engines import limits
from engines.atomic import atomic_path
from engines.errors import InputError, file_fault

DEFAULT_RATE = 8000
# the caps live in engines.limits with the others; read here as module names (tests patch them)
MAX_RATE = limits.MAX_AUDIO_RATE
MAX_CHANNELS = limits.MAX_AUDIO_CHANNELS
MAX_SECONDS = limits.MAX_AUDIO_SECONDS
MAX_VALUES = limits.MAX_AUDIO_VALUES
WRITE_FORMATS = {".wav": "WAV", ".flac": "FLAC"}

# libsndfile subtype -> how its samples were stored, for the notes (16-bit PCM needs none).
_DEPTHS = {
    "PCM_S8": "8-bit", "PCM_U8": "8-bit", "PCM_24": "24-bit", "PCM_32": "32-bit",
    "FLOAT": "32-bit float", "DOUBLE": "64-bit float", "ULAW": "8-bit mu-law", "ALAW": "8-bit A-law",
}


@dataclass
class LoadedAudio:
    samples: np.ndarray  # (n,) float32 mono in [-1, 1] at `sample_rate`
    sample_rate: int
    original_rate: int
    original_channels: int
    notes: list[str] = field(default_factory=list)  # each change made to the file's audio
    original_format: str = ""  # e.g. "WAV, Signed 24 bit PCM"

    @property
    def duration_s(self) -> float:
        return len(self.samples) / self.sample_rate if self.sample_rate else 0.0


def _first_line(exc: BaseException) -> str:
    return file_fault(exc)  # the library's words, never the file's bytes


def read_audio(path: str | os.PathLike, sample_rate: int = DEFAULT_RATE) -> LoadedAudio:
    """The recording at `path` as mono float32 at `sample_rate`, with a note per change made."""
    import soundfile as sf

    p = Path(path)
    if sample_rate <= 0:
        raise InputError(f"sample rate {sample_rate} is invalid: must be a positive number of Hz")
    # stat() first: a FIFO would block, a name over the OS limit raises OSError, a device never ends
    limits.check_regular_file(p, "audio file")
    try:
        info = sf.info(str(p))
    except (sf.SoundFileError, RuntimeError, OSError, ValueError, TypeError) as exc:
        raise InputError(f"cannot read audio file {p}: not a readable audio file (WAV, FLAC, OGG, ...; "
                         f"corrupt or truncated?): {_first_line(exc)}") from exc
    rate, channels, frames = int(info.samplerate), int(info.channels), int(info.frames)
    if not 0 < rate <= MAX_RATE:
        raise InputError(f"audio file {p} claims a sample rate of {rate} Hz, which no recording has "
                         f"(1..{MAX_RATE} Hz): the file is corrupt")
    if not 0 < channels <= MAX_CHANNELS:
        raise InputError(f"audio file {p} claims {channels} channels (1..{MAX_CHANNELS} are usable): "
                         "the file is corrupt")
    if frames <= 0:
        raise InputError(f"audio file {p} holds no audio (0 samples)")
    if frames / rate > MAX_SECONDS:
        raise InputError(f"audio file {p} is {frames / rate:.1f} s long; at most {MAX_SECONDS:g} s can be "
                         "used: cut it shorter")
    if frames * channels > MAX_VALUES:  # from the header: nothing decoded yet
        raise InputError(f"audio file {p} holds {frames * channels:,} samples ({frames / rate:.1f} s x {channels} "
                         f"channel(s) at {rate} Hz); at most {MAX_VALUES:,} can be decoded: cut it shorter or "
                         "resample it to a lower rate")
    try:
        data, _ = sf.read(str(p), dtype="float32", always_2d=True)  # (frames, channels)
    except (sf.SoundFileError, RuntimeError, OSError, ValueError, MemoryError) as exc:
        raise InputError(f"cannot read audio file {p}: its audio data is unreadable (truncated?): "
                         f"{_first_line(exc)}") from exc
    if data.shape[0] == 0:
        raise InputError(f"audio file {p} holds no audio (0 samples)")

    notes: list[str] = []
    depth = _DEPTHS.get(str(info.subtype))
    if depth is not None:
        notes.append(f"converted from {depth}")
    if not np.isfinite(data).all():
        bad = int((~np.isfinite(data)).sum())
        raise InputError(f"audio file {p} holds {bad} samples that are not numbers (NaN or infinite): "
                         "the file is corrupt")
    if channels > 1:
        data = data.mean(axis=1, dtype=np.float64).astype(np.float32)
        notes.append(f"mixed {channels} channels to mono")
    else:
        data = data[:, 0]
    over = int((np.abs(data) > 1.0).sum())
    if over:  # only float files can hold these
        data = np.clip(data, -1.0, 1.0)
        notes.append(f"clipped {over} samples outside [-1, 1]")
    if rate != sample_rate:
        import soxr

        data = soxr.resample(data, rate, sample_rate, quality="HQ")
        notes.append(f"resampled from {rate} Hz to {sample_rate} Hz")
        if len(data) == 0:
            raise InputError(f"audio file {p} is too short ({frames} samples at {rate} Hz): nothing is left "
                             f"at {sample_rate} Hz")
        data = np.clip(data, -1.0, 1.0)  # the resampling filter can ring just past full scale
    samples = np.ascontiguousarray(data, dtype=np.float32)
    return LoadedAudio(samples, sample_rate, rate, channels, notes,
                       f"{info.format}, {info.subtype_info}" if info.subtype_info else str(info.format))


def to_int16(samples: np.ndarray) -> np.ndarray:
    """float samples -> int16 PCM: clipped to [-1, 1], NaN as silence, x 32767 rounded."""
    x = np.nan_to_num(np.asarray(samples, dtype=np.float64), nan=0.0, posinf=1.0, neginf=-1.0)
    return np.round(np.clip(x, -1.0, 1.0) * 32767.0).astype(np.int16)


def write_audio(path: str | os.PathLike, samples: np.ndarray, sample_rate: int) -> None:
    """Write mono `samples` (n,) as 16-bit PCM: `.wav` -> WAV, `.flac` -> FLAC (atomically)."""
    import soundfile as sf

    p = Path(path)
    fmt = WRITE_FORMATS.get(p.suffix.lower())
    if fmt is None:
        raise InputError(f"cannot write {p}: audio is written as .wav (16-bit PCM) or .flac, not "
                         f"{p.suffix or 'a file without a suffix'}")
    x = np.asarray(samples)
    if x.ndim == 2 and 1 in x.shape:
        x = x.reshape(-1)
    if x.ndim != 1:
        raise InputError(f"cannot write {p}: expected mono samples (n,), got an array of shape {x.shape}")
    if x.size == 0:
        raise InputError(f"cannot write {p}: there is no audio (0 samples)")
    if not 0 < int(sample_rate) <= MAX_RATE:
        raise InputError(f"cannot write {p}: sample rate {sample_rate} Hz is invalid")
    pcm = to_int16(x)
    with atomic_path(p) as tmp:
        try:
            sf.write(str(tmp), pcm, int(sample_rate), subtype="PCM_16", format=fmt)
        except (sf.SoundFileError, RuntimeError) as exc:
            raise InputError(f"cannot write {p}: {_first_line(exc)}") from exc
