"""The Audio tab's sounds: a generation run (its settings and every variation so far) and a
loaded recording (its samples at the model's rate and its score).

A run's variations are one batch, variation i being row i as the engine draws it; what
is heard is the continued recording (if any), then what was generated so far, and its
surprise track is the recording's own (once scored) followed by the model's surprise at
each generated sample.
"""

from __future__ import annotations

import html
import time
from pathlib import Path

import numpy as np

from studio.audio import work
from studio.audio.spectrum import surprise_bits, surprise_tail, surprise_window


class Run:
    """The current (or last) generation: its settings and every variation generated so far."""

    _ids = 0

    def __init__(self, model_id: str, seed: int, batch: int, seconds: float, temperature: float,
                 digit: int | None, speaker: str | None, sample_rate: int, prompt: np.ndarray | None,
                 prompt_name: str | None, prompt_path: str | None, prompt_notes: list[str],
                 prompt_surprise: np.ndarray | None, cli: str | None) -> None:
        Run._ids += 1
        self.id = Run._ids
        self.model_id, self.seed, self.batch, self.seconds = model_id, seed, batch, seconds
        self.temperature, self.digit, self.speaker = temperature, digit, speaker
        self.sample_rate = sample_rate
        self.prompt = prompt
        self.prompt_name, self.prompt_path, self.prompt_notes = prompt_name, prompt_path, prompt_notes
        self.prompt_surprise = prompt_surprise  # (len(prompt),) bits, or None (not scored alike)
        self.cli = cli
        self.request = None  # the resolved engines.audio.request.AudioRequest it runs (variation v: for_sample(v))
        self.finished = None  # the engine's Finished event, once it came
        self.history_id: int | None = None  # its run in the history (studio.context.record_run_started)
        self.n_samples = work.n_new_samples(seconds, sample_rate)
        self.samples = np.zeros((batch, self.n_samples), np.float32)
        self.logprobs = np.full((batch, self.n_samples), np.nan, np.float64)
        self.n_done = 0
        self.t0 = time.perf_counter()
        self.t_end: float | None = None
        self.state = "running"  # running | done | stopped | error
        self.recording_id: int | None = None  # the Recording continued (its score fills the prompt's surprise)
        self.streamed: int | None = None  # the variation played while generating
        self.underruns = 0
        # speech models (a mel prior + a vocoder): the frames, both levels' log-likelihoods, the verdict
        self.speech = False
        self.mode = "generation"  # generation | continuation | resynthesis
        self.frame_temperature: float | None = None
        self.frames: list[np.ndarray] = []  # each (n_mels,): the prompt's or recording's, then the prior's
        self.prompt_frames = 0
        self.n_prior_frames = 0
        self.prior_logprob = 0.0  # ln p(the prior's frames | digit, speaker), nats (stop bits included)
        self.source_name: str | None = None
        self.heard: dict = {}  # variation -> studio.audio.speech_work.Heard: what the recogniser hears in it
        # variation -> (its surprise: the prompt's, then the generated samples', preallocated; values known;
        # whether the prompt's part is its score): a growing run computes only its new values, in place
        self._surprise: dict[int, list] = {}
        self._heard: np.ndarray | None = None  # (batch, prompt + n_samples): the sounds as heard (with a prompt)

    @property
    def prompt_len(self) -> int:
        return 0 if self.prompt is None else len(self.prompt)

    def add(self, chunk: work.Chunk) -> None:
        n = chunk.samples.shape[1]
        end = min(chunk.start + n, self.n_samples)
        if end > self.samples.shape[1]:  # the engine made more than asked: keep it all
            grow = end - self.samples.shape[1]
            self.samples = np.pad(self.samples, ((0, 0), (0, grow)))
            self.logprobs = np.pad(self.logprobs, ((0, 0), (0, grow)), constant_values=np.nan)
        k = end - chunk.start
        self.samples[:, chunk.start:end] = chunk.samples[:, :k]
        if self._heard is not None and self._heard.shape[1] >= self.prompt_len + end:
            self._heard[:, self.prompt_len + chunk.start: self.prompt_len + end] = chunk.samples[:, :k]
        else:
            self._heard = None  # built again when asked
        self.logprobs[:, chunk.start:end] = chunk.logprobs[:, :k]
        self.n_done = max(self.n_done, end)

    def sound(self, v: int) -> np.ndarray:
        """Variation v as heard: the prompt, then what was generated so far."""
        gen = self.samples[v, : self.n_done]
        return gen.copy() if self.prompt is None else np.concatenate([self.prompt, gen])

    def sound_view(self, v: int) -> np.ndarray:
        """sound(v) without the copy (O(1)): a view that later chunks extend, never change."""
        if self.prompt is None:
            return self.samples[v, : self.n_done]
        if self._heard is None or self._heard.shape[0] != self.samples.shape[0]:
            self._heard = np.concatenate([np.broadcast_to(self.prompt, (self.samples.shape[0], self.prompt_len)),
                                          self.samples], axis=1).astype(np.float32)
        return self._heard[v, : self.prompt_len + self.n_done]

    def surprise_key(self, v: int) -> tuple:
        """What surprise_view(v) is: it grows while the key stays (the prompt's score arriving changes it)."""
        return self.id, v, self.prompt_surprise is not None, self.samples.shape[1]

    def generated(self, v: int) -> np.ndarray:
        return self.samples[v, : self.n_done].copy()

    def surprise(self, v: int) -> np.ndarray:
        return self.surprise_view(v).copy()

    def surprise_view(self, v: int) -> np.ndarray:
        """(prompt_len + n_done,) bits: the prompt's surprise (NaN until it is scored), then the generated
        samples'. A view of a buffer: what was generated before does not change, so only the new samples'
        surprise is computed (and the last smoothing window's), O(new samples) per call."""
        P, n = self.prompt_len, self.n_done
        entry = self._surprise.get(v)
        if entry is None or len(entry[0]) != P + self.samples.shape[1] or entry[1] > n:
            entry = self._surprise[v] = [np.full(P + self.samples.shape[1], np.nan), 0, None]
        buf, m, prompt_scored = entry
        if P and prompt_scored != (self.prompt_surprise is not None):
            buf[:P] = self.prompt_surprise if self.prompt_surprise is not None else np.nan
            entry[2] = self.prompt_surprise is not None
        if m != n:
            lp = self.logprobs[v, :n]
            if m >= surprise_window():
                keep, tail = surprise_tail(lp, m)
                buf[P + keep: P + n] = tail
            else:
                buf[P: P + n] = surprise_bits(lp)
            entry[1] = n
        return buf[: P + n]

    def total_logprob(self, v: int) -> float:
        return float(self.logprobs[v, : self.n_done].sum())

    def seconds_done(self) -> float:
        return self.n_done / self.sample_rate

    def elapsed(self) -> float:
        return (self.t_end or time.perf_counter()) - self.t0


class Recording:
    """A loaded recording, at the model's rate, and its score (when it has one)."""

    _ids = 0

    def __init__(self, path: str, loaded, ref=None) -> None:  # noqa: D107
        Recording._ids += 1
        self.id = Recording._ids
        self.path = path
        self.ref = ref  # the engines.requests.InputRef it came from (a request reopened), else None: read by path
        self.name = Path(path).name
        self.loaded = loaded  # engines.audio.wav.LoadedAudio
        self.score: work.ScoreDone | None = None
        self.heard = None  # what the recogniser hears in it (studio.audio.speech_work.Heard)

    @property
    def samples(self) -> np.ndarray:
        return self.loaded.samples

    @property
    def sample_rate(self) -> int:
        return self.loaded.sample_rate


def conditioning_text(digit: int | None, speaker: str | None, plain: bool = False) -> str:
    """"digit 7, speaker george" (HTML unless `plain`); "any" for what is left to the model."""
    d = "any digit" if digit is None else f"digit {digit}"
    s = "any speaker" if speaker is None else f"speaker {speaker if plain else html.escape(speaker)}"
    return f"{d}, {s}"
