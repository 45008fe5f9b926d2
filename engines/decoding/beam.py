"""Beam search over any model that can score next-token log-probs.

Written in the style of HF transformers' `_beam_search`: each step scores the live beams,
applies the config's penalty filters per beam, keeps the 2 x num_beams best candidates,
moves those ending in eos to the finished hypotheses and the rest into the next beams,
then checks whether the search is done. Models plug in through `BeamScorer`: a model with
a KV cache implements `step` by reordering its cache with `parents`; any other model uses
`PrefixBeamScorer`, which rescores full prefixes in one batch.

Scores follow HF: a hypothesis' score is the sum of its *processed* log-probs (after
repetition penalty / n-gram bans; not renormalised) divided by len(tokens) ** length_penalty.
A hypothesis ended by eos includes the eos id as its last token (and its log-prob).
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Callable, Protocol, Sequence, runtime_checkable

import numpy as np

from engines.decoding.config import DecodingConfig
from engines.decoding.samplers import SamplerChain, _top_indices, build_chain, log_softmax
from engines.errors import DecodingError

__all__ = ["BeamHypothesis", "BeamScorer", "PrefixBeamScorer", "beam_search"]


@dataclass(frozen=True)
class BeamHypothesis:
    tokens: tuple[int, ...]  # new tokens only (ends with eos when finished)
    token_logprobs: tuple[float, ...]  # log-prob of each token under the raw model, before filters
    sum_logprob: float  # sum(token_logprobs)
    score: float  # sum of processed log-probs / len(tokens) ** length_penalty (ranking key)
    finished: bool  # ended by eos


@runtime_checkable
class BeamScorer(Protocol):
    def start(self, prompt: Sequence[int]) -> np.ndarray:
        """Log-probs (V,) of the first new token after `prompt`."""
        ...

    def step(self, parents: np.ndarray, tokens: np.ndarray) -> np.ndarray:
        """Beam b is old beam parents[b] (B,) extended by tokens[b] (B,); return log-probs (B, V) of each new beam's next token."""
        ...


class PrefixBeamScorer:
    """A `BeamScorer` for any model that scores a batch of full prefixes (prompt + new tokens).

    `score_prefixes(prefixes)` gets a list of B tuples and returns next-token log-probs (B, V).
    """

    def __init__(self, score_prefixes: Callable[[list[tuple[int, ...]]], np.ndarray]) -> None:
        self._score_prefixes = score_prefixes
        self._prefixes: list[tuple[int, ...]] = []

    def _score(self, prefixes: list[tuple[int, ...]]) -> np.ndarray:
        out = np.asarray(self._score_prefixes(prefixes))  # (B, V)
        if out.ndim != 2 or out.shape[0] != len(prefixes):
            raise ValueError(f"score_prefixes returned shape {out.shape} for {len(prefixes)} prefixes")
        self._prefixes = prefixes
        return out

    def start(self, prompt: Sequence[int]) -> np.ndarray:
        return self._score([tuple(int(t) for t in prompt)])[0]

    def step(self, parents: np.ndarray, tokens: np.ndarray) -> np.ndarray:
        old = self._prefixes
        return self._score([old[int(p)] + (int(t),) for p, t in zip(parents, tokens)])


@dataclass(frozen=True)
class _Beam:
    """A live beam: the new tokens so far, their raw log-probs and its processed log-prob sum."""

    tokens: tuple[int, ...]
    token_logprobs: tuple[float, ...]
    processed_sum: float


# --- helpers ---------------------------------------------------------------------------

def _score_beams(
    logprobs: np.ndarray, running: list[_Beam], prompt: tuple[int, ...], chain: SamplerChain
) -> tuple[np.ndarray, np.ndarray]:
    """(raw log-probs (B, V), processed log-probs (B, V)) for the live beams."""
    scores = np.asarray(logprobs, dtype=np.float64)
    if scores.ndim != 2 or scores.shape[0] != len(running):
        raise ValueError(f"beam scorer returned shape {scores.shape} for {len(running)} beams")
    raw = log_softmax(scores)  # (B, V) normalise defensively; a no-op on true log-probs
    histories = [prompt + beam.tokens for beam in running]
    return raw, chain.process(raw, histories)


def _top_candidates(running: list[_Beam], processed: np.ndarray, n: int) -> list[tuple[int, int]]:
    """The n best (beam, token) extensions by total processed log-prob; ties: lower beam, then lower token."""
    sums = np.array([beam.processed_sum for beam in running])  # (B,)
    totals = sums[:, None] + processed  # (B, V)
    flat = _top_indices(totals.ravel(), n)  # (<= n,) banned (-inf) extensions never appear
    V = processed.shape[1]
    return [(int(i // V), int(i % V)) for i in flat]


def _extend(beam: _Beam, token: int, raw_lp: float, processed_lp: float) -> _Beam:
    return _Beam(beam.tokens + (token,), beam.token_logprobs + (raw_lp,), beam.processed_sum + processed_lp)


def _hypothesis(beam: _Beam, finished: bool, length_penalty: float) -> BeamHypothesis:
    return BeamHypothesis(
        tokens=beam.tokens,
        token_logprobs=beam.token_logprobs,
        sum_logprob=float(sum(beam.token_logprobs)),
        score=float(beam.processed_sum / (len(beam.tokens) ** length_penalty)),
        finished=finished,
    )


def _keep_best(finished: list[BeamHypothesis], hyp: BeamHypothesis, num_beams: int) -> None:
    """Add hyp to the finished list, keeping only the num_beams best (stable: earlier wins ties)."""
    finished.append(hyp)
    finished.sort(key=lambda h: -h.score)
    del finished[num_beams:]


def _advance(
    running: list[_Beam],
    candidates: list[tuple[int, int]],
    raw: np.ndarray,
    processed: np.ndarray,
    num_beams: int,
    eos_id: int | frozenset[int] | None,
) -> tuple[list[_Beam], list[int], list[_Beam]]:
    """Split the ranked candidates into (next beams, their parents, beams just ended by eos).

    As in HF, an eos candidate only finishes a hypothesis when it ranks among the top
    num_beams; up to num_beams other candidates become the next beams.
    """
    nxt: list[_Beam] = []
    parents: list[int] = []
    ended: list[_Beam] = []
    for rank, (b, tok) in enumerate(candidates):
        beam = _extend(running[b], tok, float(raw[b, tok]), float(processed[b, tok]))
        if eos_id is not None and (tok in eos_id if isinstance(eos_id, frozenset) else tok == eos_id):
            if rank < num_beams:
                ended.append(beam)
            continue
        nxt.append(beam)
        parents.append(b)
        if len(nxt) == num_beams:
            break
    return nxt, parents, ended


def _best_reachable(beam_sum: float, cur_len: int, max_len: int, length_penalty: float) -> float:
    """Upper bound on the score any continuation of a beam can reach (processed log-probs are <= 0)."""
    length = max_len if length_penalty > 0 else cur_len
    return beam_sum / (length**length_penalty)


def _is_done(
    finished: list[BeamHypothesis], running: list[_Beam], config: DecodingConfig, cur_len: int, max_len: int
) -> bool:
    """HF `BeamHypotheses.is_done`: enough finished hypotheses, and (unless early_stopping) no live beam can beat the worst."""
    if not running:
        return True
    if len(finished) < config.num_beams:
        return False
    if config.early_stopping:
        return True
    best_sum = max(beam.processed_sum for beam in running)
    return finished[-1].score >= _best_reachable(best_sum, cur_len, max_len, config.length_penalty)


# --- search ----------------------------------------------------------------------------

def beam_search(
    scorer: BeamScorer,
    prompt: Sequence[int],
    config: DecodingConfig,
    max_new_tokens: int,
    eos_id: int | Sequence[int] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> list[BeamHypothesis]:
    """The config.num_return_sequences best hypotheses, best score first.

    `eos_id` is one id or several (any of them ends a hypothesis). Uses config.num_beams, length_penalty, early_stopping and the penalty filters of
    `build_chain` (each beam is penalised with its own history, prompt + new tokens).
    Hypotheses that never produce eos end at max_new_tokens (finished=False), as do the
    live beams when `should_stop()` turns true (checked after each step). A KeyboardInterrupt
    (Ctrl-C, or SIGTERM under the CLI) is re-raised carrying the hypotheses chosen the same way from
    the steps completed (`exc.beam_hypotheses`, possibly empty) and their number (`exc.beam_steps`).
    """
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, numbers.Integral) or max_new_tokens < 1:
        raise DecodingError(f"max-new-tokens = {max_new_tokens!r} is invalid: must be a whole number >= 1")
    beam_config = config if config.strategy == "beam" else config.replace(strategy="beam")
    chain = build_chain(beam_config, 0)
    num_beams, max_new_tokens = config.num_beams, int(max_new_tokens)
    if eos_id is not None and not isinstance(eos_id, numbers.Integral):  # several end ids (a chat's end of turn)
        eos_id = frozenset(int(i) for i in eos_id) or None
    prompt = tuple(int(t) for t in prompt)

    running = [_Beam((), (), 0.0)]
    finished: list[BeamHypothesis] = []
    done = False
    steps = 0  # steps completed: every live beam holds this many new tokens
    try:
        logprobs = np.asarray(scorer.start(prompt))[None, :]  # (1, V): one live beam at first
        for step in range(1, max_new_tokens + 1):
            raw, processed = _score_beams(logprobs, running, prompt, chain)  # (B, V) each
            candidates = _top_candidates(running, processed, 2 * num_beams)
            if not candidates:  # every extension was banned: the live beams end here
                break
            running, parents, ended = _advance(running, candidates, raw, processed, num_beams, eos_id)
            steps = step
            for beam in ended:
                _keep_best(finished, _hypothesis(beam, True, config.length_penalty), num_beams)
            done = _is_done(finished, running, config, step, max_new_tokens)
            if done or step == max_new_tokens or (should_stop is not None and should_stop()):
                break
            tokens = np.array([beam.tokens[-1] for beam in running], dtype=np.int64)  # (B,)
            logprobs = scorer.step(np.array(parents, dtype=np.int64), tokens)  # (B, V)
    except KeyboardInterrupt as exc:
        # Ctrl-C or SIGTERM (the CLI raises both as KeyboardInterrupt): the best hypotheses so far, as
        # `should_stop` would have returned them, travel with the exception for the caller to keep.
        kept = list(finished)
        for beam in running:
            if beam.tokens:
                _keep_best(kept, _hypothesis(beam, False, config.length_penalty), num_beams)
        exc.beam_hypotheses = kept[: config.num_return_sequences]  # type: ignore[attr-defined]
        exc.beam_steps = steps  # type: ignore[attr-defined]
        raise

    if not done:  # out of steps or stopped: live beams count as (unfinished) hypotheses
        for beam in running:
            if beam.tokens:
                _keep_best(finished, _hypothesis(beam, False, config.length_penalty), num_beams)
    if not finished:
        raise DecodingError("every value was filtered out: beam search found no allowed token")
    return finished[: config.num_return_sequences]
