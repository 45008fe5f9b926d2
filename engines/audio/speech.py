"""The speech pipeline: a frame prior writes log-mel frames, a WaveNet vocoder speaks them.

A speech model folder (``engines.training.export_speech``; card ``"family": "speech"``) holds
both levels. Generation is two autoregressive passes, both seeded and both exact:

    frames ~ p(frames | digit, speaker)            prior, one 10 ms frame at a time, until its stop bit
    audio  ~ p(audio | frames, speaker)            vocoder, one mu-law sample at a time (cached steps)

and each reports its log-likelihood: ln p(frames | digit, speaker) (nats, frame densities plus
the stop bits) and ln p(audio | frames) (nats, per sample: the surprise track). Resynthesis
skips the prior: the frames come from a recording (``frames_of_audio``), and the vocoder
speaks them in the recording's voice or another (the speaker is the vocoder's global
condition). Continuation primes both levels with a recording and goes on after it.

Seeds: the prior draws from ``default_rng([seed, 1])``, the vocoder from ``default_rng(seed)``
(as every WaveNet here), so the same request gives the same frames and the same audio.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np

from engines.audio import mulaw
from engines.audio.generate import DEFAULT_CHUNK, AudioChunk, CachedStepper, sample_loop
from engines.audio.mel import MelSpec, frame_of_sample, log_mel, with_silence_frame
from engines.audio.model import AudioModel, load_audio_model
from engines.audio.prior import MAX_FRAMES, MelPriorModel, PriorFrame, score_frames, write_frames
from engines.audio.scoring import SEGMENT, _log_softmax_at
from engines.errors import InputError, ModelLoadError
from engines.registry import ModelInfo
from engines.runtime import open_session

LN2 = math.log(2)


def is_speech(info: ModelInfo) -> bool:
    return isinstance(info.card, dict) and info.card.get("family") == "speech"


@dataclass
class SpeechModel:
    info: ModelInfo
    vocoder: AudioModel
    prior: MelPriorModel
    mel: MelSpec

    @property
    def id(self) -> str:
        return self.info.id

    @property
    def sample_rate(self) -> int:
        return self.vocoder.sample_rate

    @property
    def speakers(self) -> list[str]:
        return self.prior.speakers

    @property
    def decoding_defaults(self) -> dict:
        return self.vocoder.decoding_defaults

    def digit_id(self, digit: int | None) -> int:
        if digit is None:
            return self.prior.none_digit
        if isinstance(digit, bool) or not isinstance(digit, (int, np.integer)) or not 0 <= digit < self.prior.n_digits:
            raise InputError(f"digit {digit!r} is out of range: model {self.id!r} knows digits 0-"
                             f"{self.prior.n_digits - 1} (leave --digit out to generate without one)")
        return int(digit)

    def speaker_id(self, name: str | None) -> int:
        """The speaker's id; the prior and the vocoder list the same speakers in the same order."""
        return self.vocoder.speaker_value(name)


def load_speech_model(info: ModelInfo, threads: int | None = 1) -> SpeechModel:
    if not is_speech(info):
        raise ModelLoadError(f"model {info.id!r} is not a speech (prior + vocoder) model")
    vocoder = load_audio_model(info, threads=threads)
    if vocoder.mel is None:
        raise ModelLoadError(f"card of {info.id!r}: a speech model's vocoder needs mel settings")
    spec = (info.card.get("io") or {}).get("prior_step", {})
    session = open_session(info.file("prior_step"), expect_inputs=spec.get("inputs"),
                           expect_outputs=spec.get("outputs"), intra_op_threads=1)
    prior = MelPriorModel(session, info.card.get("prior") or {}, vocoder.mel, info.id)
    if prior.speakers != vocoder.speakers:
        raise ModelLoadError(f"card of {info.id!r}: the prior and the vocoder know different speakers")
    return SpeechModel(info=info, vocoder=vocoder, prior=prior, mel=vocoder.mel)


# --- frames ----------------------------------------------------------------------------------

def frames_of_audio(samples: np.ndarray, spec: MelSpec) -> np.ndarray:
    """Float samples (n,) -> (n_mels, F) raw log-mel of their mu-law version (what the models were trained on)."""
    return log_mel(mulaw.decode(mulaw.encode(np.asarray(samples, dtype=np.float32))), spec)


def samples_for_frames(n_frames: int, spec: MelSpec) -> int:
    """Audio length the vocoder speaks for F frames: F hops (frame f is centred on sample f * hop)."""
    return int(n_frames) * spec.hop


# --- events -----------------------------------------------------------------------------------

@dataclass
class SpeechStarted:
    """The first event of `speak`: the prompt's frames (n_mels, P) and length in samples (0 without one)."""
    prompt_frames: np.ndarray
    prompt_samples: int


@dataclass
class FrameEvent:
    """The prior wrote a frame (generation) or the frames of a recording were read (resynthesis)."""
    frame: PriorFrame
    n_prompt_frames: int = 0


@dataclass
class SpeechResult:
    """Everything a finished run knows: frames, audio and both log-likelihoods."""
    frames: np.ndarray  # (n_mels, F) raw log-mel, prompt frames included
    samples: np.ndarray  # (n,) float32 new audio (after any prompt)
    audio_logprobs: np.ndarray  # (n,) ln p(sample | samples before it, frames), nats
    frame_logprobs: np.ndarray = field(default_factory=lambda: np.zeros(0))  # (F_new,) frame + stop terms, nats
    seed: int = 0

    @property
    def prior_logprob(self) -> float:
        return float(self.frame_logprobs.sum())

    @property
    def vocoder_logprob(self) -> float:
        return float(self.audio_logprobs.sum())


def check_temperature(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise InputError(f"{name} = {value!r} is invalid: must be a number >= 0 (0 means the most likely)")
    if value > 10:
        raise InputError(f"{name} = {value:g} is too high: at most 10")
    return float(value)


def speak(model: SpeechModel, *, seed: int, digit: int | None = None, speaker: str | None = None,
          frame_temperature: float = 0.6, temperature: float = 1.0, prompt: np.ndarray | None = None,
          chunk_samples: int = DEFAULT_CHUNK,
          max_frames: int = MAX_FRAMES) -> Iterator[SpeechStarted | FrameEvent | AudioChunk]:
    """Generate an utterance: SpeechStarted, FrameEvents as the prior writes each frame, then AudioChunks as the
    vocoder speaks them. With a prompt (float samples), both levels continue it (the prompt's
    frames prime the prior, its audio the vocoder); the yielded audio is what comes after it.

    Settings are checked at once (InputError); the work happens as the caller pulls events."""
    ft = check_temperature(frame_temperature, "frame temperature")
    t = check_temperature(temperature, "temperature")
    d, s = model.digit_id(digit), model.speaker_id(speaker)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InputError(f"seed = {seed!r} is invalid: must be a whole number >= 0")
    prompt_frames = None
    if prompt is not None:
        prompt = np.asarray(prompt, dtype=np.float32).reshape(-1)
        if len(prompt) == 0:
            raise InputError("the prompt is empty: it has no samples")
        prompt_frames = frames_of_audio(prompt, model.mel)
        if prompt_frames.shape[1] >= MAX_FRAMES:
            raise InputError(f"the prompt is {len(prompt) / model.sample_rate:.2f} s long: a continuation "
                             f"starts from at most {(MAX_FRAMES - 1) * model.mel.hop / model.sample_rate:.2f} s")
        max_frames = min(max_frames, MAX_FRAMES - prompt_frames.shape[1])
    return _speak(model, seed, d, s, ft, t, prompt, prompt_frames, chunk_samples, max_frames)


def _speak(model, seed, d, s, ft, t, prompt, prompt_frames, chunk_samples, max_frames):
    n_prompt = 0 if prompt_frames is None else prompt_frames.shape[1]
    yield SpeechStarted(np.zeros((model.mel.n_mels, 0), np.float32) if prompt_frames is None else prompt_frames,
                        0 if prompt is None else len(prompt))
    new = []
    for f in write_frames(model.prior, digit_id=d, speaker_id=s, seed=int(seed), temperature=ft,
                          prompt_frames=prompt_frames, max_frames=max_frames):
        new.append(f.frame)
        yield FrameEvent(f, n_prompt)
    frames = np.stack(new, axis=1)
    if prompt_frames is not None:
        frames = np.concatenate([prompt_frames, frames], axis=1)
    yield from vocode(model, frames, speaker_id=s, seed=int(seed), temperature=t, prompt=prompt,
                      chunk_samples=chunk_samples)


def vocode(model: SpeechModel, frames: np.ndarray, *, speaker_id: int, seed: int, temperature: float,
           prompt: np.ndarray | None = None, n_samples: int | None = None,
           chunk_samples: int = DEFAULT_CHUNK) -> Iterator[AudioChunk]:
    """The vocoder speaks frames (n_mels, F): AudioChunks of the samples after the prompt (if any)
    up to n_samples (default: F hops)."""
    total = samples_for_frames(frames.shape[1], model.mel) if n_samples is None else int(n_samples)
    offset = 0 if prompt is None else len(prompt)
    ext = with_silence_frame(frames, model.mel)[None]  # (1, n_mels, F + 1)
    stepper = CachedStepper(model.vocoder, np.array([model.vocoder.none_digit]), np.array([speaker_id]), ext,
                            sample_offset=offset)
    context = mulaw.encode(prompt) if prompt is not None else np.array([mulaw.SILENCE], dtype=np.int64)
    return sample_loop(stepper, context, max(0, total - offset), float(temperature), int(seed), 1, int(chunk_samples))


def resynthesize(model: SpeechModel, samples: np.ndarray, *, seed: int, speaker: str | None = None,
                 temperature: float = 1.0, chunk_samples: int = DEFAULT_CHUNK) -> tuple[np.ndarray, Iterator[AudioChunk]]:
    """(the recording's frames (n_mels, F), the vocoder re-speaking them as chunks) in `speaker`'s voice."""
    x = np.asarray(samples, dtype=np.float32).reshape(-1)
    if len(x) == 0:
        raise InputError("the recording is empty: it has no samples")
    frames = frames_of_audio(x, model.mel)
    return frames, vocode(model, frames, speaker_id=model.speaker_id(speaker), seed=seed,
                          temperature=check_temperature(temperature, "temperature"), n_samples=len(x),
                          chunk_samples=chunk_samples)


# --- scoring ----------------------------------------------------------------------------------

def score_vocoder(model: SpeechModel, classes: np.ndarray, frames: np.ndarray, speaker_id: int,
                  segment: int = SEGMENT) -> np.ndarray:
    """ln p(classes (n,) | frames (n_mels, F), speaker), sample by sample (silence before) -> (n,) float64."""
    voc = model.vocoder
    classes = np.asarray(classes, dtype=np.int64).reshape(-1)
    n, rf = len(classes), voc.receptive_field
    ext = with_silence_frame(frames, model.mel)[None]
    inputs = np.concatenate([np.full(rf, mulaw.SILENCE, dtype=np.int64), classes[:-1]])
    index = frame_of_sample(np.arange(len(inputs)) - (rf - 1), ext.shape[2] - 1, model.mel.hop)
    d, s = np.array([voc.none_digit], np.int64), np.array([speaker_id], np.int64)
    out = np.empty(n)
    for a in range(0, n, segment):
        b = min(n, a + segment)
        logits = voc.logits(inputs[None, a:rf - 1 + b], d, s, ext, index[None, a:rf - 1 + b])[0, -(b - a):]
        out[a:b] = _log_softmax_at(logits, classes[a:b])
    return out


def score_prior(model: SpeechModel, frames: np.ndarray, *, digit: int | None, speaker: str | None) -> list[PriorFrame]:
    return score_frames(model.prior, frames, digit_id=model.digit_id(digit), speaker_id=model.speaker_id(speaker))


def run_to_end(model: SpeechModel, events) -> SpeechResult:
    """Drain a `speak` / `vocode` iterator into a SpeechResult (the CLI's and the evaluations' path)."""
    frames, flp, parts, lps = [], [], [], []
    for ev in events:
        if isinstance(ev, SpeechStarted):
            frames.extend(ev.prompt_frames.T)
        elif isinstance(ev, FrameEvent):
            frames.append(ev.frame.frame)
            flp.append(ev.frame.logprob + ev.frame.stop_logprob)
        else:
            parts.append(ev.samples[0])
            lps.append(ev.logprobs[0])
    samples = np.concatenate(parts) if parts else np.zeros(0, np.float32)
    return SpeechResult(frames=np.stack(frames, axis=1) if frames else np.zeros((model.mel.n_mels, 0), np.float32),
                        samples=samples, audio_logprobs=np.concatenate(lps).astype(np.float64) if lps else np.zeros(0),
                        frame_logprobs=np.asarray(flp, dtype=np.float64))
