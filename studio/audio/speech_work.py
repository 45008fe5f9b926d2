"""The Audio tab's work for speech models (a mel prior + a vocoder): generators run on a worker.

Nothing here touches Qt. The events extend those of `studio.audio.work`:

* `speech_events` - Generate (or Re-speak): the tab's `AudioRequest` run by
  `engines.audio.request.run`, as `chainrule generate audio` runs it, so the same seed gives
  the same frames and the same audio. First the frames (`FramesStarted` with the prompt's or the recording's
  frames, then one `FrameWritten` per frame the prior writes), then `work.RunStarted` with the
  audio's length (known once the prior has stopped), then `work.Chunk`s as the vocoder speaks,
  `work.RunFinished`, and last `Heard`: what the recogniser hears in the result (prompt included).
* `speech_score_events` - a loaded recording under a speech model: both levels' log-likelihoods
  (its frames under the prior, its audio under the vocoder given those frames) and the verdict.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np

from engines.registry import ModelInfo
from studio.audio import work
from studio.model_cache import ModelCache

LN2 = math.log(2)
log = logging.getLogger(__name__)


def _load(info: ModelInfo):
    from engines.audio.speech import load_speech_model

    return load_speech_model(info, threads=1)


load_speech, cached_speech, forget_speech = ModelCache(_load, "prior_step").functions()


def is_speech_card(card: dict) -> bool:
    return isinstance(card, dict) and card.get("family") == "speech"


def card_frame_temperature(card: dict) -> float:
    from engines.audio.request import card_frame_temperature as frame_temperature

    return frame_temperature(card)


@dataclass(frozen=True)
class FramesStarted:
    frames: np.ndarray  # (n_mels, P) frames known before the prior writes: a prompt's, or all of a re-spoken recording's
    floor: float  # the log-mel value of silence (the image's low end)
    resynthesis: bool


@dataclass(frozen=True)
class FrameWritten:
    index: int
    frame: np.ndarray  # (n_mels,) raw log-mel
    logprob: float  # ln p(frame | frames before, digit, speaker) + ln p(its stop bit), nats


@dataclass(frozen=True)
class Heard:
    """The recogniser's verdict on a sound (None fields: no recogniser installed)."""
    key: Any
    digit: int | None
    digit_name: str
    digit_probability: float
    speaker: str | None
    speaker_probability: float
    variation: int = 0  # the row of a batch it judged

    def text(self) -> str:
        s = f"{self.digit_name} ({self.digit_probability:.0%})"
        if self.speaker is not None:
            s += f", {self.speaker} ({self.speaker_probability:.0%})"
        return s


@dataclass(frozen=True)
class SpeechScoreDone(work.ScoreDone):
    prior_logprob: float = float("nan")  # ln p(the recording's frames | digit, speaker), nats
    n_frames: int = 0


def judge(samples: np.ndarray, rate: int, key: Any = None, variation: int = 0,
          judge_info: ModelInfo | None = None) -> Heard | None:
    """What the audio recogniser `judge_info` (the tab finds it among its models) hears in `samples`;
    None without one, or for no samples. A recogniser that fails to load says nothing (logged)."""
    from engines.errors import ChainruleError
    from engines.recognise import load_recogniser

    if judge_info is None or len(samples) == 0:
        return None
    try:
        j = load_recogniser(judge_info)
    except ChainruleError as exc:
        log.warning("the audio recogniser cannot be used: %s", exc)
        return None
    v = j.judge(np.asarray(samples, np.float32), rate)
    return Heard(key, v.label, v.name, float(v.probability), v.speaker,
                 float(v.speaker_probability if v.speaker_probability is not None else 0.0), variation)


def judged_wavenet_events(events: Iterator[Any], prompt: np.ndarray | None, rate: int,
                          judge_info: ModelInfo | None = None) -> Iterator[Any]:
    """A WaveNet run's events (`work.generate_events`), then `Heard` for every variation of the finished
    sound (prompt included), so the tab says what the recogniser hears in any model's output."""
    rows: list[np.ndarray] = []
    for ev in events:
        if isinstance(ev, work.Chunk):
            rows.append(ev.samples)
        yield ev
    if not rows:
        return
    sound = np.concatenate(rows, axis=1)
    for v in range(sound.shape[0]):
        x = sound[v] if prompt is None else np.concatenate([np.asarray(prompt, np.float32), sound[v]])
        heard = judge(x, rate, variation=v, judge_info=judge_info)
        if heard is not None:
            yield heard


def judged_score_events(info: ModelInfo, samples: np.ndarray, digit: int | None = None, speaker: str | None = None,
                        key: Any = None, judge_info: ModelInfo | None = None) -> Iterator[Any]:
    """A loaded recording under a WaveNet: `work.score_events`, then what the recogniser hears in it."""
    yield from work.score_events(info, samples, digit, speaker, key)
    heard = judge(samples, work.card_sample_rate(info.card), key, judge_info=judge_info)
    if heard is not None:
        yield heard


def speech_events(info: ModelInfo, request, *, chunk_samples: int = work.CHUNK_SAMPLES,
                  cancel: threading.Event | None = None, judge_info: ModelInfo | None = None) -> Iterator[Any]:
    """The events of one speech run (see the module doc): the tab's `AudioRequest` (a resynthesis
    when it names a recording to re-speak) run by `engines.audio.request.run`."""
    from engines.audio import request as audio_request

    cancel = cancel or threading.Event()
    model = load_speech(info)
    events = audio_request.run(request, info, model=model, should_stop=cancel.is_set, chunk_samples=chunk_samples)
    prompt = None
    rate = model.sample_rate
    finished = None
    try:
        for ev in events:
            if isinstance(ev, audio_request.Started):
                prompt = ev.prompt
            elif isinstance(ev, audio_request.FramesStarted):
                yield FramesStarted(ev.frames, ev.floor, ev.resynthesis)
            elif isinstance(ev, audio_request.FrameWritten):
                if cancel.is_set():
                    return
                yield FrameWritten(ev.index, ev.frame, ev.logprob)
            elif isinstance(ev, audio_request.Chunk):
                if cancel.is_set():
                    return
                if ev.start == 0:  # the prior has stopped: the audio's length is known
                    yield work.RunStarted(info.id, request.seed, 1, int(ev.total), 0 if prompt is None else len(prompt),
                                          rate, int(model.vocoder.receptive_field), time.perf_counter())
                yield work.Chunk(int(ev.start), np.asarray(ev.samples, np.float32), np.asarray(ev.logprobs, np.float32))
            elif isinstance(ev, audio_request.Finished):
                finished = ev
                yield work.RunFinished(ev)
    finally:
        events.close()
    if finished is None or not finished.samples:
        return
    heard = judge(finished.audio(0, with_prompt=request.resynth is None), rate, judge_info=judge_info)
    if heard is not None:
        yield heard


def speech_score_events(info: ModelInfo, samples: np.ndarray, digit: int | None = None, speaker: str | None = None,
                        key: Any = None, judge_info: ModelInfo | None = None) -> Iterator[Any]:
    """Both levels' log-likelihoods of a recording, its surprise track, and what the recogniser hears."""
    from engines.audio import mulaw
    from engines.audio.scoring import smooth_surprise
    from engines.audio.speech import frames_of_audio, score_prior, score_vocoder

    model = load_speech(info)
    x = np.asarray(samples, np.float32)
    frames = frames_of_audio(x, model.mel)
    prior = score_prior(model, frames, digit=digit, speaker=speaker)
    lp = score_vocoder(model, mulaw.encode(x), frames, model.speaker_id(speaker))
    total = float(lp.sum())
    yield SpeechScoreDone(key, info.id, digit, speaker, lp, smooth_surprise(-lp / LN2), total, -total / LN2 / len(lp),
                          prior_logprob=float(sum(f.logprob + f.stop_logprob for f in prior)), n_frames=len(prior))
    heard = judge(x, model.sample_rate, key, judge_info=judge_info)
    if heard is not None:
        yield heard
