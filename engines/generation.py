"""The step-wise generation loop shared by every model family.

A model family provides a `StepModel`: `prefill(context)` returns next-element logits for
each batch row, `advance(values)` feeds the chosen values and returns the next logits.
`generate_steps` owns the loop (onnxruntime-genai style: the caller pulls one event per
step), so streaming is iteration and stopping is simply not pulling the next event, or a
`should_stop()` callback checked between any two steps.

Every event reports the chosen value's log-probability under the model itself (log-softmax
of the raw logits, before temperature or any filter), so totals are exact likelihoods. It is
formed for the chosen value only (no (B, V) log-softmax per step); the views (alternatives, rank,
entropy) are computed when first read, from the logits the step already holds (`StepViews`).
"""

from __future__ import annotations

import functools
import secrets
from dataclasses import dataclass
from typing import Callable, Iterator, Protocol, Sequence

import numpy as np

from engines.decoding import build_chain
from engines.decoding.config import DecodingConfig
from engines.decoding.samplers import SamplerChain, log_softmax, top_alternatives
from engines.errors import DecodingError

Alternatives = tuple[tuple[int, float], ...]  # ((value, probability), ...) most likely first


class StepModel(Protocol):
    """The arrays both methods return are read later by the step's lazy views (`StepViews`): return
    a new array each call (as ONNX Runtime does), never one that a later step overwrites."""

    def prefill(self, context: Sequence[Sequence[int]]) -> np.ndarray:
        """Take one context per batch row; return next-element logits (B, V)."""

    def advance(self, values: np.ndarray) -> np.ndarray:
        """Append values (B,) to each row; return next-element logits (B, V)."""


class StepViews:
    """The probability views of one step (the model's top alternatives before and after the sampler
    chain, the chosen value's rank and the entropy), computed on first use from the arrays the step
    already holds: the logits ONNX Runtime returned and the chain's processed logits (kept only when
    a filter made new ones). A stream whose views nobody reads (the CLI, benchmarks) pays nothing for
    them; once all four were read the arrays are let go. The numbers are those the eager loop gave
    (same functions on the same arrays): tests/test_generation.py checks lazy against eager."""

    def __init__(self, logits: np.ndarray, processed: np.ndarray | None, values: np.ndarray, n: int):
        self._logits, self._processed, self._values, self.n = logits, processed, values, n
        self._raw: np.ndarray | None = None
        self._done: dict[str, object] = {}

    def _get(self, name: str):
        if name not in self._done:
            self._done[name] = self._compute(name)
            if len(self._done) == 4:  # everything read: drop the (B, V) arrays
                self._logits = self._processed = self._raw = None
        return self._done[name]

    def _raw_logprobs(self) -> np.ndarray:
        if self._raw is None:
            self._raw = log_softmax(self._logits)
        return self._raw

    def _compute(self, name: str):
        if self.n <= 0:
            return None if name in ("ranks", "entropies") else _alternatives(self._values, 0)
        if name == "top_before":
            return _alternatives(self._raw_logprobs(), self.n)
        if name == "top_after":  # no filter: the chain's distribution is the model's own
            return _alternatives(self._raw_logprobs() if self._processed is None else log_softmax(self._processed), self.n)
        ranks, entropies = rank_and_entropy(self._raw_logprobs(), self._values)
        self._done.setdefault("ranks", ranks)
        self._done.setdefault("entropies", entropies)
        return ranks if name == "ranks" else entropies


@dataclass(frozen=True)
class StepEvent:
    position: int  # 0-based index of the new element among the generated ones
    values: np.ndarray  # (B,) chosen value per row
    logprobs: np.ndarray  # (B,) log p(value | context) under the raw model, in nats
    finished: np.ndarray  # (B,) bool: row has produced a stop value (now or earlier)
    views: StepViews  # the alternatives, ranks and entropies below, computed when first read

    @property
    def top_before(self) -> tuple[Alternatives, ...]:
        """Per row: the model's own top alternatives (empty with n_alternatives 0)."""
        return self.views._get("top_before")

    @property
    def top_after(self) -> tuple[Alternatives, ...]:
        """Per row: the top alternatives after the sampler chain (empty with n_alternatives 0)."""
        return self.views._get("top_after")

    @property
    def ranks(self) -> np.ndarray | None:
        """(B,) GLTR rank of the value (1 = model's favourite); None with n_alternatives 0."""
        return self.views._get("ranks")

    @property
    def entropies(self) -> np.ndarray | None:
        """(B,) entropy of the model's distribution, nats; None with n_alternatives 0."""
        return self.views._get("entropies")

    @property
    def value(self) -> int:
        return int(self.values[0])

    @property
    def logprob(self) -> float:
        return float(self.logprobs[0])


def rank_and_entropy(logprobs: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row: rank of `values` (1 = most likely; ties share the better rank) and entropy (nats)."""
    lp = np.asarray(logprobs, np.float64)  # (B, V)
    chosen = lp[np.arange(len(values)), values]  # (B,)
    ranks = (lp > chosen[:, None]).sum(axis=1) + 1
    p = np.exp(lp)
    with np.errstate(invalid="ignore"):  # 0 * -inf at masked (undecodable) ids: dropped by the where
        entropies = -np.where(np.isfinite(lp), p * lp, 0.0).sum(axis=1)
    return ranks, np.maximum(entropies, 0.0)


def resolve_seed(config: DecodingConfig) -> int:
    """The seed a run uses: the configured one, or a fresh one that is then reported."""
    return config.seed if config.seed is not None else secrets.randbits(32)


@functools.lru_cache(maxsize=16)
def temperature_chain(temperature: float) -> SamplerChain:
    """The chain of a modality that samples at a temperature only (binary pixels, audio): greedy
    at 0, else temperature then a categorical draw. Such callers pass their own uniforms to
    `draw_step` (their seed-per-sample rule), so the selector's own generator is never used and
    the chain holds no state: one chain per temperature is shared (the audio host sampler asks
    for it once per sample)."""
    config = DecodingConfig(strategy="greedy") if temperature == 0 else DecodingConfig(temperature=temperature)
    return build_chain(config, 0)


def two_value_rows(logit: np.ndarray) -> np.ndarray:
    """A Bernoulli logit z (B,) as the 2-value logits rows [0, z] (B, 2): softmax gives p(1) = sigmoid(z),
    so binary values go through the same filters and draw as every other categorical."""
    z = np.asarray(logit, dtype=np.float64).reshape(-1)
    rows = np.zeros((z.shape[0], 2))
    rows[:, 1] = z
    return rows


def draw_step(chain: SamplerChain, logits: np.ndarray, histories: Sequence[Sequence[int]] | None,
              uniforms: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One step of every sampler: (values (B,), processed logits (B, V)) from logits (B, V).

    The chain's filters run in order, then its selector draws: from its own seeded generator, or
    at the caller's `uniforms` (B,) in [0, 1) when the caller owns the random stream (density:
    one stream per sample; audio: the uniforms its ONNX step graph also gets). The caller then
    calls `chain.accept(values)` (after padding finished rows, if it has any)."""
    # with no filter the chain would only copy the logits: the selector reads them as they are
    processed = chain.process(logits, histories) if chain.filters else _rows_of(logits)
    values = chain.select(processed) if uniforms is None else chain.selector.draw(processed, uniforms)
    return values, processed


def _rows_of(logits: np.ndarray) -> np.ndarray:
    """logits (B, V) as they are when they are float32/float64 (every selector reads both, and a
    float32 row converts to float64 exactly where a selector needs it), else as float64."""
    x = np.asarray(logits)
    if x.dtype != np.float32 and x.dtype != np.float64:
        x = x.astype(np.float64)
    if x.ndim != 2:
        raise ValueError(f"logits must have shape (B, V), got shape {x.shape}")
    return x


def _checked_max(logits: np.ndarray) -> np.ndarray:
    """Row maxima (B, 1) of logits (B, V); DecodingError (log_softmax's own) when a row has NaN,
    +inf or nothing finite, all of which show in its maximum."""
    m = logits.max(axis=1, keepdims=True)
    if not np.isfinite(m).all():
        log_softmax(logits)  # raises the error that names the problem
    return m


def _chosen_logprobs(logits: np.ndarray, m: np.ndarray, values: np.ndarray, buf: np.ndarray | None
                     ) -> tuple[np.ndarray, np.ndarray]:
    """log p(values) per row (B,) from logits (B, V) and their row maxima m (B, 1), without a (B, V)
    log-softmax: (x[v] - m) - log(sum(exp(x - m))), the chosen entry's shift in float64 and the
    exponentials in the logits' own precision, written into one reused buffer `buf` (returned for
    the next step), summed in float64. For float32 logits that differs from log_softmax's float64
    exponentials by float32 rounding of each term (|difference| < 1e-6; tests/test_generation.py
    holds it to that), at a quarter of the cost."""
    dtype = np.float32 if logits.dtype == np.float32 else np.float64  # (float16 / integer logits: float64)
    if buf is None or buf.shape != logits.shape or buf.dtype != dtype:
        buf = np.empty(logits.shape, dtype)
    rows = np.arange(len(values))
    chosen = np.asarray(logits[rows, values], np.float64) - m[:, 0].astype(np.float64)  # (B,)
    e = np.exp(np.subtract(logits, m.astype(dtype), out=buf), out=buf)  # (B, V) in [0, 1]; -inf gives 0
    return chosen - np.log(e.sum(axis=1, dtype=np.float64)), buf


def generate_steps(
    model: StepModel,
    contexts: Sequence[Sequence[int]],
    config: DecodingConfig,
    max_new: int,
    *,
    seed: int,
    stop_values: Sequence[int] = (),
    n_alternatives: int = 10,
    should_stop: Callable[[], bool] | None = None,
) -> Iterator[StepEvent]:
    """Yield one StepEvent per generated position until max_new, all rows stopped, or should_stop().

    `contexts` also seeds each row's history for repetition penalties and n-gram bans.
    Rows that hit a stop value keep emitting that value (marked finished) until all stop.
    """
    if config.strategy == "beam":
        raise DecodingError("strategy = 'beam' runs through beam_search, not the step loop")
    if max_new < 0:
        raise DecodingError(f"max new elements = {max_new} is invalid: must be >= 0")
    chain = build_chain(config, seed)
    histories = [list(c) for c in contexts]
    stops = np.asarray(list(stop_values), dtype=np.int64)
    finished = np.zeros(len(histories), dtype=bool)
    if max_new == 0 or (should_stop and should_stop()):
        return
    logits = np.asarray(model.prefill(contexts))
    buf = None  # the float64 work row of _chosen_logprobs, reused every step
    for position in range(max_new):
        m = _checked_max(logits)  # NaN / inf / nothing finite: the model's fault, said before any filter runs
        values, processed = draw_step(chain, logits, histories)  # (B,), (B, V) after the filters
        values = np.where(finished, stops[0] if stops.size else values, values)
        chain.accept(values)
        chosen, buf = _chosen_logprobs(logits, m, values, buf)  # log p(value) under the model's own distribution
        # rows that finished earlier only pad: they add nothing to the likelihood
        logprobs = np.where(finished, 0.0, chosen)
        if stops.size:  # (a few stop ids: one comparison each, cheaper than np.isin's set-up every step)
            finished = finished | (values[:, None] == stops).any(axis=1)
        for row, v in zip(histories, values):
            row.append(int(v))
        yield StepEvent(
            position=position,
            values=values,
            logprobs=logprobs,
            finished=finished.copy(),
            # the views read `logits` and `processed` later: a step model returns a new array every
            # step (ONNX Runtime does), and the chain's filters never write into their input
            views=StepViews(logits, processed if chain.filters else None, values, n_alternatives),
        )
        if finished.all() or position + 1 == max_new or (should_stop and should_stop()):
            return
        logits = np.asarray(model.advance(values))


def _alternatives(logprobs: np.ndarray, n: int) -> tuple[Alternatives, ...]:
    if n <= 0:  # callers that stream thousands of steps per second skip this work
        return tuple(() for _ in logprobs)
    return tuple(tuple(top_alternatives(row, n)) for row in logprobs)


@dataclass
class GenerationResult:
    values: np.ndarray  # (B, N) generated values
    logprobs: np.ndarray  # (B, N) log-probabilities under the raw model
    seed: int

    @property
    def total_logprob(self) -> np.ndarray:  # (B,)
        return self.logprobs.sum(axis=1)


def collect(events: Iterator[StepEvent], seed: int) -> GenerationResult:
    """Run a step stream to the end and stack its values and log-probabilities."""
    vals, lps = [], []
    for ev in events:
        vals.append(ev.values)
        lps.append(ev.logprobs)
    if not vals:
        return GenerationResult(np.zeros((0, 0), np.int64), np.zeros((0, 0)), seed)
    return GenerationResult(np.stack(vals, axis=1), np.stack(lps, axis=1), seed)
