"""The Audio tab's background work: generators that run on a TaskRunner's worker thread.

Nothing here touches Qt. Each function returns a generator of small events the tab turns
into plots and sound on the UI thread:

* `generate_events` - Generate: the tab's `AudioRequest` (`build_request`) run by
  `engines.audio.request.run`, the runner `chainrule generate audio` uses (the same seed
  gives the same batch; variation i is the request's sample i, seed + i), streamed chunk by
  chunk so the tab can draw and play while the model works. The worker's stop flag is
  checked between chunks, and closing the generator stops the engine at once.
* `score_events` - the surprise track of a loaded recording: `score_audio` gives ln p of
  every sample given all before it, and its smoothed -log2 p.

Also here: the model cache, reading recordings at the model's rate, the command that
reproduces a run (`request.to_command`), and the settings written next to an export.
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

from engines.decoding.config import DecodingConfig
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


@dataclass(frozen=True)
class RunFinished:
    """The engine's last word on a run (engines.audio.request.Finished): every row's samples and
    log-likelihoods and the resolved request, for the export and the history."""
    finished: Any


def build_request(info: ModelInfo, *, seed: int, temperature: float, digit: int | None = None,
                  speaker: str | None = None, seconds: float | None = None, batch: int = 1,
                  prompt_path=None, resynth_path=None, frame_temperature: float | None = None):
    """The AudioRequest the tab's widgets describe (engines.audio.request): the card's decoding
    defaults with the tab's own temperature and seed. A recording is a path (hashed now) or an
    `InputRef` already made (a recording restored from a request). InputError (one line) for a bad
    setting or an unreadable recording."""
    from engines.audio.request import AudioRequest, card_decoding_defaults
    from engines.decoding.flags import card_config

    base = card_config(card_decoding_defaults(info.card)) or DecodingConfig()
    config = base.replace(strategy="sample", temperature=float(temperature), seed=int(seed))
    return AudioRequest(model=info.id, decoding=config, count=int(batch), digit=digit, speaker=speaker,
                        seconds=None if seconds is None else float(seconds), frame_temperature=frame_temperature,
                        prompt=_ref(prompt_path), resynth=_ref(resynth_path))


def _ref(source):
    """An InputRef for a recording given as a path or as an InputRef (None stays None)."""
    from engines.audio.request import recording_ref
    from engines.requests import InputRef

    if source is None or isinstance(source, InputRef):
        return source
    return recording_ref(str(source), "the recording")


def generate_events(info: ModelInfo, request, *, chunk_samples: int = CHUNK_SAMPLES,
                    cancel: threading.Event | None = None) -> Iterator[Any]:
    """RunStarted, one Chunk per `chunk_samples` new samples of every variation, then RunFinished:
    `engines.audio.request.run` (what `chainrule generate audio` runs) for a WaveNet request."""
    from engines.audio import request as audio_request

    cancel = cancel or threading.Event()
    check_settings(request.seconds or 1.0, request.temperature, request.count)
    model = load_model(info)
    events = audio_request.run(request, info, model=model, should_stop=cancel.is_set, chunk_samples=chunk_samples)
    try:
        for ev in events:
            if isinstance(ev, audio_request.Started):
                yield RunStarted(info.id, ev.request.seed, ev.request.count, int(ev.n_samples),
                                 0 if ev.prompt is None else len(ev.prompt), ev.sample_rate, ev.receptive_field,
                                 time.perf_counter())
            elif isinstance(ev, audio_request.Chunk):
                if cancel.is_set():
                    return
                yield Chunk(int(ev.start), np.asarray(ev.samples, np.float32), np.asarray(ev.logprobs, np.float32))
            elif isinstance(ev, audio_request.Finished):
                yield RunFinished(ev)
    finally:
        events.close()  # the engine's own cleanup, on this thread


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


def command_line(args: list[str]) -> str:
    return shlex.join(["chainrule", *args])


def request_command(request, info: ModelInfo, out: str) -> str:
    """The `chainrule` command line that runs `request` and writes it to `out`."""
    return command_line([*request.to_command(info), "--out", out])


def write_settings(path: str | os.PathLike, settings: dict) -> None:
    """The JSON of the settings that made an exported sound, atomically."""
    from engines.atomic import write_json

    write_json(path, settings)


def settings_path(audio_path: str | os.PathLike) -> Path:
    """`x.wav` -> `x.json`: the settings go beside the sound, under the same name."""
    return Path(audio_path).with_suffix(".json")
