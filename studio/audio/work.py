"""The Audio tab's background work: generators that run on a TaskRunner's worker thread.

Nothing here touches Qt. Each function returns a generator of small events the tab turns
into plots and sound on the UI thread:

* `generate_events` - Generate: `engines.audio.generate.generate_audio_chunks` with exactly
  the arguments `chainrule generate audio` passes (the same seed gives the same batch; row
  i of a batch is variation i, as the engine draws it), streamed chunk by chunk so the tab
  can draw and play while the model works. The worker's stop flag is checked between
  chunks, and closing the generator stops the engine at once.
* `score_events` - the surprise track of a loaded recording: `score_audio` gives ln p of
  every sample given all before it, and its smoothed -log2 p.

Also here: the model cache, reading recordings at the model's rate, the command that
reproduces a run, and the settings written next to an export.
"""

from __future__ import annotations

import math
import os
import shlex
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from engines.errors import InputError
from engines.registry import ModelInfo
from studio.model_cache import ModelCache

LN2 = math.log(2)
MAX_BATCH = 16
MAX_SECONDS = 30.0
MIN_SECONDS = 0.05
CHUNK_SAMPLES = 400  # 50 ms at 8 kHz: the stop flag, plots and player hear from the model this often
DEFAULT_RATE = 8000


# --- model cache ---------------------------------------------------------------------------

def _load(info: ModelInfo):
    from engines.audio.model import load_audio_model

    return load_audio_model(info, threads=1)


# load_model on a worker thread (it may load); cached_model never loads: safe on the UI thread.
load_model, cached_model, forget_models = ModelCache(_load, "model").functions()


# --- what a card says (the UI thread must not load ONNX sessions) ------------------------------

def _card_config(card: dict) -> Iterator[dict]:
    # a speech model's "prior" (digits, speakers) comes before its vocoder's "architecture" (no digits)
    for key in ("conditioning", "prior", "architecture", "audio", "config"):
        v = card.get(key)
        if isinstance(v, dict):
            yield v


def card_sample_rate(card: dict) -> int:
    """The model's sample rate from its card (8000 when the card does not say)."""
    for d in [card, *_card_config(card)]:
        rate = d.get("sample_rate")
        if isinstance(rate, (int, float)) and rate > 0:
            return int(rate)
    return DEFAULT_RATE


def card_speakers(card: dict) -> list[str]:
    """The speaker names the model is conditioned on, from its card ([] when it has none)."""
    for d in [card, *_card_config(card)]:
        names = d.get("speakers")
        if isinstance(names, (list, tuple)) and all(isinstance(n, str) for n in names):
            return list(names)
    return []


def card_n_digits(card: dict) -> int:
    for d in [card, *_card_config(card)]:
        n = d.get("n_digits")
        if isinstance(n, int) and n >= 0:
            return n
    return 10


# --- events -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class RunStarted:
    model_id: str
    seed: int
    batch: int
    n_samples: int  # new samples per variation
    prompt_len: int
    sample_rate: int
    receptive_field: int
    t: float


@dataclass(frozen=True)
class Chunk:
    start: int  # index of the first new sample (after the prompt)
    samples: np.ndarray  # (B, n) float32
    logprobs: np.ndarray  # (B, n) float32: ln p of each sample under the model at temperature 1


@dataclass(frozen=True)
class ScoreDone:
    key: Any  # what the tab asked to score (it drops answers to older questions)
    model_id: str
    digit: int | None
    speaker: str | None
    logprobs: np.ndarray  # (n,) float64 ln p of each sample given all before it
    surprise_bits: np.ndarray  # (n,) float64 smoothed -log2 p
    total_logprob: float
    bits_per_sample: float


def n_new_samples(seconds: float, sample_rate: int) -> int:
    return max(1, int(round(seconds * sample_rate)))


def check_settings(seconds: float, temperature: float, batch: int) -> None:
    if not (MIN_SECONDS <= seconds <= MAX_SECONDS):
        raise InputError(f"seconds = {seconds:g} is invalid: must be in {MIN_SECONDS:g}..{MAX_SECONDS:g}")
    if not (temperature >= 0 and math.isfinite(temperature)):
        raise InputError(f"temperature = {temperature:g} is invalid: must be >= 0 (0 means greedy)")
    if not 1 <= batch <= MAX_BATCH:
        raise InputError(f"variations = {batch} is invalid: must be in 1..{MAX_BATCH}")


def generate_events(info: ModelInfo, *, seconds: float, temperature: float, seed: int, digit: int | None = None,
                    speaker: str | None = None, batch: int = 1, prompt: np.ndarray | None = None,
                    chunk_samples: int = CHUNK_SAMPLES, cancel: threading.Event | None = None) -> Iterator[Any]:
    """RunStarted, then one Chunk per `chunk_samples` new samples of every variation."""
    from engines.audio.generate import generate_audio_chunks

    cancel = cancel or threading.Event()
    check_settings(seconds, temperature, batch)
    model = load_model(info)
    model.digit_value(digit)  # a bad digit or speaker is refused before any work
    model.speaker_value(speaker)
    rate = int(model.sample_rate)
    yield RunStarted(info.id, seed, batch, n_new_samples(seconds, rate), 0 if prompt is None else len(prompt),
                     rate, int(model.receptive_field), time.perf_counter())
    chunks = generate_audio_chunks(model, seconds=seconds, temperature=temperature, seed=seed, digit=digit,
                                   speaker=speaker, batch=batch, prompt=prompt, chunk_samples=chunk_samples)
    try:
        for chunk in chunks:
            if cancel.is_set():
                return
            yield Chunk(int(chunk.start), np.asarray(chunk.samples, np.float32),
                        np.asarray(chunk.logprobs, np.float32))
    finally:
        chunks.close()  # the engine's own cleanup, on this thread


def score_events(info: ModelInfo, samples: np.ndarray, digit: int | None = None, speaker: str | None = None,
                 key: Any = None) -> Iterator[ScoreDone]:
    """The exact per-sample log-likelihood of a recording, and its surprise track."""
    from engines.audio.scoring import score_audio

    model = load_model(info)
    score = score_audio(model, np.asarray(samples, np.float32), digit=digit, speaker=speaker)
    yield ScoreDone(key, info.id, digit, speaker, np.asarray(score.logprobs, np.float64),
                    np.asarray(score.surprise_bits, np.float64), float(score.total_logprob),
                    float(score.bits_per_sample))


# --- files ---------------------------------------------------------------------------------------

def read_recording(path: str | os.PathLike, sample_rate: int):
    """A user's recording as `engines.audio.wav.LoadedAudio` at the model's rate (with notes)."""
    from engines.audio.wav import read_audio

    return read_audio(path, sample_rate=sample_rate)


def cli_arguments(info: ModelInfo, *, seed: int, seconds: float, temperature: float, digit: int | None,
                  speaker: str | None, batch: int, prompt_path: str | None, out: str) -> list[str]:
    """`chainrule` arguments that reproduce a Generate run (every variation, same seed)."""
    args = ["generate", "audio", "--model", info.id]
    if info.source not in ("shipped", "user"):
        args += ["--models-dir", str(info.path.parent)]
    if digit is not None:
        args += ["--digit", str(digit)]
    if speaker is not None:
        args += ["--speaker", speaker]
    if prompt_path is not None:
        args += ["--prompt", str(prompt_path)]
    args += ["--seconds", repr(float(seconds)), "--temperature", repr(float(temperature)), "--seed", str(seed)]
    if batch != 1:
        args += ["--count", str(batch)]
    return args + ["--out", out]


def command_line(args: list[str]) -> str:
    return shlex.join(["chainrule", *args])


def write_settings(path: str | os.PathLike, settings: dict) -> None:
    """The JSON of the settings that made an exported sound, atomically."""
    from engines.atomic import write_json

    write_json(path, settings)


def settings_path(audio_path: str | os.PathLike) -> Path:
    """`x.wav` -> `x.json`: the settings go beside the sound, under the same name."""
    return Path(audio_path).with_suffix(".json")
