"""WaveNet generation: cached (Fast WaveNet) steps, seeded inverse-CDF sampling, streamed in chunks.

The cached path keeps, for every layer l with dilation d_l, a ring buffer of that layer's
last d_l inputs (all layers packed into one array of sum(d_l) slots: slot
``offset_l + tau mod d_l`` holds the input of time tau, so reading "d_l steps ago" for every
layer is ONE fancy-index gather and storing new inputs ONE scatter). `step.onnx` then costs
O(layers) per sample instead of the O(receptive field) of running the full network on a
window (`NaiveStepper`, kept for the benchmark and as a reference). It draws up to
`step_block` samples per call, sampling inside the graph (`CachedStepper` says how).

Time convention (engines.training.wavenet): before any audio the context is digital
silence. A context (silence, or silence + a prompt) primes the buffers in one call of
`prime.onnx` over its last ``max(d) + receptive_field - 1`` samples; the first step feeds
the context's last sample and yields the distribution of the first new sample.

Sampling: one uniform per sample per batch row, row b from ``np.random.default_rng(seed + b)``
(n per chunk, which is the same stream whatever the chunk size; so row b of a batch is the
sample a batch of one with seed + b draws); the class is
the inverse CDF of softmax(logits / temperature) at that uniform; temperature 0 is greedy.
Each chosen sample's log-probability is reported under the model itself (temperature 1), so
totals are exact likelihoods that scoring the result reproduces. The same arguments and
seed give the same audio whatever the chunk size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from engines import limits
from engines.audio import mulaw
from engines.audio.mel import frame_of_sample
from engines.audio.model import AudioModel
from engines.errors import InputError
from engines.generation import draw_step, temperature_chain

MAX_SECONDS = limits.MAX_GENERATE_SECONDS  # the caps live in engines.limits with the others
MAX_BATCH = limits.MAX_AUDIO_BATCH
DEFAULT_CHUNK = 800  # 0.1 s at 8 kHz: the streaming granularity
GREEDY_INV_TEMPERATURE = 1e30  # temperature 0: the step graph's softmax becomes one-hot at the argmax


@dataclass
class AudioChunk:
    start: int  # index of the first new sample of this chunk, counted after any prompt
    samples: np.ndarray  # (B, n) float32 in [-1, 1]
    classes: np.ndarray  # (B, n) int64 mu-law classes
    logprobs: np.ndarray  # (B, n) float32: ln p(chosen class) under the model at temperature 1


@dataclass
class GeneratedAudio:
    samples: np.ndarray  # (B, n) float32
    logprobs: np.ndarray  # (B, n) float32
    seed: int
    classes: np.ndarray | None = None  # (B, n) int64


# --- sampling ------------------------------------------------------------------------------

def choose(logits: np.ndarray, uniforms: np.ndarray, temperature: float) -> tuple[np.ndarray, np.ndarray]:
    """logits (B, V), uniforms (B,) in [0, 1) -> (classes (B,) int64, ln p at temperature 1 (B,) float32).

    The host twin of the step graph's sampler (used by the naive and torch steppers), and the same
    temperature and draw code as every other modality (`engines.generation.draw_step`): the class
    is the number of cumulative probabilities <= u, so a class of probability 0 is never chosen.
    Temperature 0 takes the most likely class. The cached stepper cannot use it: its ONNX step graph
    samples inside the graph (one call per block of samples), from the same uniforms.
    """
    z = logits.astype(np.float64)
    z -= z.max(axis=1, keepdims=True)
    total = np.exp(z).sum(axis=1)
    c, _ = draw_step(temperature_chain(temperature), z, None, uniforms)  # (B,)
    rows = np.arange(len(c))
    return c, (z[rows, c] - np.log(total)).astype(np.float32)


# --- steppers: feed one sample per row, get the next distribution ---------------------------

def padded_context(context: np.ndarray, length: int) -> np.ndarray:
    """`context` (T,) classes with silence in front, to at least `length` samples."""
    context = np.asarray(context, dtype=np.int64).reshape(-1)
    if len(context) >= length:
        return context
    return np.concatenate([np.full(length - len(context), mulaw.SILENCE, dtype=np.int64), context])


class LogitStepper:
    """A stepper whose `step(x)` returns the next logits; it samples on the host with `choose`."""

    max_block = 1 << 30

    def step(self, x: np.ndarray) -> np.ndarray:  # pragma: no cover - interface
        raise NotImplementedError

    def sample(self, x: np.ndarray, uniforms: np.ndarray, temperature: float) -> tuple[np.ndarray, np.ndarray]:
        """Feed x (B,), draw n samples with uniforms (n, B) -> (classes (n, B), logprobs (n, B))."""
        n, B = uniforms.shape
        classes = np.empty((n, B), dtype=np.int64)
        logprobs = np.empty((n, B), dtype=np.float32)
        for i in range(n):
            x, logprobs[i] = choose(self.step(x), uniforms[i], temperature)
            classes[i] = x
        return classes, logprobs


class CachedStepper:
    """Fast WaveNet: per-layer ring buffers on the host + `step.onnx`, up to `max_block` samples per call.

    `step.onnx` is an ONNX Loop that draws each sample inside the graph (inverse CDF of the
    softmax at the temperature, from the uniforms we pass), so a call of n samples costs one
    `session.run`. The graph reads the past taps of the "big" layers (dilation >= block) for
    the whole call from the `past` we gather here, and keeps the "small" layers' rings itself
    (their slots are the same as ours: we hand them in and take them back). A call of one
    sample runs the same graph, so the samples do not depend on how a run is cut into calls.
    """

    def __init__(self, model: AudioModel, digit_ids: np.ndarray, speaker_ids: np.ndarray,
                 frames: np.ndarray | None = None, sample_offset: int = 0) -> None:
        """A vocoder also takes frames (B, n_mels, F + 1), the silence frame first, and the clip
        index of the first sample this stepper draws (`sample_offset`: the prompt's length)."""
        self.model = model
        self.batch = B = len(digit_ids)
        self.digit_ids, self.speaker_ids = np.asarray(digit_ids, np.int64), np.asarray(speaker_ids, np.int64)
        dil = np.asarray(model.dilations, dtype=np.int64)
        self.dilations = dil
        self.offsets = np.concatenate([[0], np.cumsum(dil)[:-1]])  # (L,) first slot of each layer
        self.max_block = K = model.step_block
        big, small = model.big_layers, model.small_layers
        self._big_off, self._big_dil = self.offsets[big][:, None], dil[big][:, None]  # (Lb, 1)
        self._steps = np.arange(K)[None, :]  # (1, K)
        self._small_slots = np.concatenate([self.offsets[l] + np.arange(dil[l]) for l in small])  # (Ns,)
        # the graph's ring is our small layers' slots side by side: its slot of small layer l at time tau
        ring_off = np.concatenate([[0], np.cumsum(dil[small])[:-1]])
        self._ring_off, self._ring_dil = ring_off[None, :, None], dil[small][None, :, None]  # (1, Ls, 1)
        self.buffer = np.zeros((int(dil.sum()), B, model.residual_channels), dtype=np.float32)
        self.frames, self.sample_offset = None, int(sample_offset)
        if model.local:
            if frames is None:
                raise ValueError(f"{model.id} is a vocoder: it needs frames")
            self.frames = np.ascontiguousarray(frames, dtype=np.float32)
            # (F + 1, 2, L, B, G): each frame's pre-activations; a call gathers its samples' rows
            self.frame_cond = np.ascontiguousarray(model.cond(self.digit_ids, self.speaker_ids, self.frames))
            self.cond = None
        else:
            self.cond = np.ascontiguousarray(model.cond(self.digit_ids, self.speaker_ids))
        self.t = 0
        self.last_logits: np.ndarray | None = None
        self._session = model.step_session.session
        self._outputs = ["samples", "logits", "layer_inputs", "ring_out"]

    @property
    def window(self) -> int:
        """Context samples `prime` reads (all before the last one)."""
        return self.model.max_dilation + self.model.receptive_field - 1

    def prime(self, context: np.ndarray) -> np.ndarray:
        """Fill the buffers from `context` (T,) classes shared by all rows (silence before it).

        Returns the last context sample per row (B,): the input of the first step."""
        ctx = padded_context(context, self.window + 1)
        pre = ctx[-self.window - 1:-1]  # (W,): the samples before the last one
        W = len(pre)
        if self.model.local:
            # pre[i] is clip sample offset - 1 - W + i; its output predicts sample offset - W + i
            index = self._frame_index(self.sample_offset - W + np.arange(W))
            li = self.model.layer_inputs(pre[None], self.digit_ids[:1], self.speaker_ids[:1], self.frames[:1],
                                         index[None])[:, 0]
        else:
            li = self.model.layer_inputs(pre[None], self.digit_ids[:1], self.speaker_ids[:1])[:, 0]  # (L, W, R)
        self.t = 0
        for l, d in enumerate(self.model.dilations):
            taus = np.arange(-d, 0)  # times before the first step; step 0 reads tau = -d
            self.buffer[self.offsets[l] + taus % d] = li[l, W + taus][:, None, :]
        return np.full((self.batch,), ctx[-1], dtype=np.int64)

    def _frame_index(self, sample_index: np.ndarray) -> np.ndarray:
        return frame_of_sample(sample_index, self.frames.shape[-1] - 1, self.model.mel.hop)

    def sample(self, x: np.ndarray, uniforms: np.ndarray, temperature: float) -> tuple[np.ndarray, np.ndarray]:
        """Feed x (B,), draw n <= max_block samples with uniforms (n, B) -> (classes (n, B), logprobs (n, B))."""
        n = len(uniforms)
        if not 1 <= n <= self.max_block:
            raise ValueError(f"a step call draws 1..{self.max_block} samples, not {n}")
        # slot of big layer l for step k: the input of time t + k - d_l (all before t: d_l >= block)
        big_slots = self._big_off + (self.t + self._steps) % self._big_dil  # (Lb, K)
        inv_t = GREEDY_INV_TEMPERATURE if temperature == 0 else min(1.0 / temperature, GREEDY_INV_TEMPERATURE)
        cond = self.cond
        if cond is None:  # a vocoder: the rows of this call's samples (K rows, the last repeated)
            j = self.sample_offset + self.t + np.minimum(self._steps[0], n - 1)
            cond = self.frame_cond[self._frame_index(j)]
        samples, logits, li, ring = self._session.run(self._outputs, {
            "sample": np.ascontiguousarray(x, dtype=np.int64), "past": self.buffer[big_slots],
            "ring": self.buffer[self._small_slots], "cond": cond,
            "uniforms": np.ascontiguousarray(uniforms, dtype=np.float32),
            "inv_temperature": np.array([inv_t], dtype=np.float32),
            "ring_slots": self._ring_off + (self.t + self._steps[0, :n, None, None]) % self._ring_dil})
        self.buffer[big_slots[:, :n]] = li.transpose(1, 0, 2, 3)  # (Lb, n, B, R): inputs of times t .. t+n-1
        self.buffer[self._small_slots] = ring
        self.t += n
        self.last_logits = logits  # (n, B, V) of this call, for inspection (tests, plots)
        z = logits.astype(np.float64)  # (n, B, V): ln p of the drawn classes at temperature 1
        m = z.max(axis=-1, keepdims=True)
        lse = m[..., 0] + np.log(np.exp(z - m).sum(axis=-1))
        logprobs = np.take_along_axis(z, samples[..., None], axis=-1)[..., 0] - lse
        return samples, logprobs.astype(np.float32)


class NaiveStepper(LogitStepper):
    """The full network over the last receptive field of samples, every step (the slow reference)."""

    def __init__(self, model: AudioModel, digit_ids: np.ndarray, speaker_ids: np.ndarray) -> None:
        self.model = model
        self.batch = len(digit_ids)
        self.digit_ids, self.speaker_ids = np.asarray(digit_ids, np.int64), np.asarray(speaker_ids, np.int64)
        self.history = np.zeros((self.batch, 0), dtype=np.int64)

    def prime(self, context: np.ndarray) -> np.ndarray:
        ctx = padded_context(context, self.model.receptive_field)
        self.history = np.repeat(ctx[None, -self.model.receptive_field:-1], self.batch, axis=0)
        return np.full((self.batch,), ctx[-1], dtype=np.int64)

    def step(self, x: np.ndarray) -> np.ndarray:
        rf = self.model.receptive_field
        self.history = np.concatenate([self.history, np.asarray(x, np.int64)[:, None]], axis=1)[:, -rf:]
        return self.model.logits(self.history, self.digit_ids, self.speaker_ids)[:, -1]


# --- the generation loop -------------------------------------------------------------------------

def check_generation(model: AudioModel, *, seconds: float, temperature: float, seed: int, digit, speaker,
                     batch: int, prompt, chunk_samples: int) -> tuple[int, np.ndarray | None]:
    """Refuse bad settings before any work; return (new samples, prompt as float32 or None)."""
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not math.isfinite(seconds) or seconds <= 0:
        raise InputError(f"seconds = {seconds!r} is invalid: must be a number > 0")
    if seconds > MAX_SECONDS:
        raise InputError(f"seconds = {seconds:g} is too long: at most {MAX_SECONDS:g} s per generation")
    n = int(round(seconds * model.sample_rate))
    if n < 1:
        raise InputError(f"seconds = {seconds:g} is less than one sample at {model.sample_rate} Hz")
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not math.isfinite(temperature) \
            or temperature < 0:
        raise InputError(f"temperature = {temperature!r} is invalid: must be a number >= 0 (0 means greedy)")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InputError(f"seed = {seed!r} is invalid: must be a whole number >= 0")
    if isinstance(batch, bool) or not isinstance(batch, (int, np.integer)) or not 1 <= batch <= MAX_BATCH:
        raise InputError(f"batch = {batch!r} is invalid: must be a whole number in 1..{MAX_BATCH}")
    if isinstance(chunk_samples, bool) or not isinstance(chunk_samples, (int, np.integer)) or chunk_samples < 1:
        raise InputError(f"chunk_samples = {chunk_samples!r} is invalid: must be a whole number >= 1")
    model.digit_value(digit)
    model.speaker_value(speaker)
    if prompt is None:
        return n, None
    p = np.asarray(prompt)
    if p.dtype.kind not in "fiu" or p.ndim != 1:
        raise InputError(f"the prompt must be mono audio: one row of samples, got an array of shape {p.shape}")
    if len(p) == 0:
        raise InputError("the prompt is empty: it has no samples")
    p = p.astype(np.float32)
    if not np.isfinite(p).all():
        raise InputError("the prompt holds NaN or infinite samples")
    return n, p


def generate_audio_chunks(model: AudioModel, *, seconds: float, temperature: float = 1.0, seed: int,
                          digit: int | None = None, speaker: str | None = None, batch: int = 1,
                          prompt: np.ndarray | None = None, chunk_samples: int = DEFAULT_CHUNK,
                          method: str = "cached") -> Iterator[AudioChunk]:
    """Generate `seconds` of audio for `batch` rows, yielding chunks of `chunk_samples` as they are made.

    The settings are checked at once (InputError); the work happens as the caller pulls chunks,
    so stopping is not asking for more (or `.close()`). Same arguments and seed -> same audio,
    whatever `chunk_samples`. `method` "naive" runs the full network every step (benchmark)."""
    n_total, prompt_f = check_generation(model, seconds=seconds, temperature=temperature, seed=seed, digit=digit,
                                         speaker=speaker, batch=batch, prompt=prompt, chunk_samples=chunk_samples)
    if method not in ("cached", "naive"):
        raise ValueError(f"method {method!r}: 'cached' or 'naive'")
    digit_ids, speaker_ids = model.ids(digit, speaker, batch)
    context = mulaw.encode(prompt_f) if prompt_f is not None else np.array([mulaw.SILENCE], dtype=np.int64)
    stepper_class = CachedStepper if method == "cached" else NaiveStepper
    return sample_loop(stepper_class(model, digit_ids, speaker_ids), context, n_total, float(temperature), int(seed),
                   int(batch), int(chunk_samples))


def sample_loop(stepper, context: np.ndarray, n_total: int, temperature: float, seed: int, batch: int,
                chunk_samples: int) -> Iterator[AudioChunk]:
    """The loop every stepper shares (`prime(context) -> x`, then `step(x) -> logits` per sample)."""
    # row b draws from its own stream, default_rng(seed + b): row b of a batch is the sample that a
    # batch of one with seed + b gives (the request's seed-per-sample rule, engines.audio.request)
    rngs = [np.random.default_rng(seed + b) for b in range(batch)]
    x = stepper.prime(context)
    block = stepper.max_block
    done = 0
    while done < n_total:
        n = min(chunk_samples, n_total - done)
        uniforms = np.stack([r.random(n) for r in rngs], axis=1)  # (n, batch)
        classes = np.empty((n, batch), dtype=np.int64)
        logprobs = np.empty((n, batch), dtype=np.float32)
        for a in range(0, n, block):
            b = min(n, a + block)
            classes[a:b], logprobs[a:b] = stepper.sample(x, uniforms[a:b], temperature)
            x = classes[b - 1]
        classes = np.ascontiguousarray(classes.T)
        yield AudioChunk(start=done, samples=mulaw.decode(classes), classes=classes,
                         logprobs=np.ascontiguousarray(logprobs.T))
        done += n


def generate_audio(model: AudioModel, *, seconds: float, temperature: float = 1.0, seed: int,
                   digit: int | None = None, speaker: str | None = None, batch: int = 1,
                   prompt: np.ndarray | None = None, chunk_samples: int = DEFAULT_CHUNK,
                   method: str = "cached") -> GeneratedAudio:
    """All of `generate_audio_chunks` at once."""
    chunks = list(generate_audio_chunks(model, seconds=seconds, temperature=temperature, seed=seed, digit=digit,
                                        speaker=speaker, batch=batch, prompt=prompt, chunk_samples=chunk_samples,
                                        method=method))
    return GeneratedAudio(samples=np.concatenate([c.samples for c in chunks], axis=1),
                          logprobs=np.concatenate([c.logprobs for c in chunks], axis=1), seed=int(seed),
                          classes=np.concatenate([c.classes for c in chunks], axis=1))
