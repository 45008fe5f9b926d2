"""The step-wise generation loop shared by every model family.

A model family provides a `StepModel`: `prefill(context)` returns next-element logits for
each batch row, `advance(values)` feeds the chosen values and returns the next logits.
`generate_steps` owns the loop (onnxruntime-genai style: the caller pulls one event per
step), so streaming is iteration and stopping is simply not pulling the next event, or a
`should_stop()` callback checked between any two steps.

Every event reports the chosen value's log-probability under the model itself (log-softmax
of the raw logits, before temperature or any filter), so totals are exact likelihoods.
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
    def prefill(self, context: Sequence[Sequence[int]]) -> np.ndarray:
        """Take one context per batch row; return next-element logits (B, V)."""

    def advance(self, values: np.ndarray) -> np.ndarray:
        """Append values (B,) to each row; return next-element logits (B, V)."""


@dataclass(frozen=True)
class StepEvent:
    position: int  # 0-based index of the new element among the generated ones
    values: np.ndarray  # (B,) chosen value per row
    logprobs: np.ndarray  # (B,) log p(value | context) under the raw model, in nats
    top_before: tuple[Alternatives, ...]  # per row: the model's own top alternatives
    top_after: tuple[Alternatives, ...]  # per row: the top alternatives after the sampler chain
    finished: np.ndarray  # (B,) bool: row has produced a stop value (now or earlier)
    ranks: np.ndarray | None = None  # (B,) GLTR rank of the value (1 = model's favourite); with alternatives only
    entropies: np.ndarray | None = None  # (B,) entropy of the model's distribution, nats; with alternatives only

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
    x = np.asarray(logits, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"logits must have shape (B, V), got shape {x.shape}")
    return x


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
    for position in range(max_new):
        raw = log_softmax(logits)  # (B, V) the model's own distribution
        values, processed = draw_step(chain, logits, histories)  # (B,), (B, V) after the filters
        values = np.where(finished, stops[0] if stops.size else values, values)
        chain.accept(values)
        # rows that finished earlier only pad: they add nothing to the likelihood
        logprobs = np.where(finished, 0.0, raw[np.arange(len(values)), values])
        if stops.size:
            finished = finished | np.isin(values, stops)
        for row, v in zip(histories, values):
            row.append(int(v))
        ranks, entropies = rank_and_entropy(raw, values) if n_alternatives > 0 else (None, None)
        yield StepEvent(
            position=position,
            values=values,
            logprobs=logprobs,
            top_before=_alternatives(raw, n_alternatives),
            top_after=_alternatives(log_softmax(processed), n_alternatives) if n_alternatives > 0 else _alternatives(raw, 0),
            finished=finished.copy(),
            ranks=ranks,
            entropies=entropies,
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
