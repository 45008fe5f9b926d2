"""Text generation and scoring on a loaded `TextModel`, shared by the CLI and the studio.

- `stream_tokens`: the step loop over the KV cache, one `TokenEvent` per token (its text, its
  log-probability under the model, the alternatives before and after the sampler chain),
  stop strings, and a note whenever the context window slides.
- `beam_generate`: beam search over the KV cache (cache rows reordered per step).
- `score_text`: per-token log-probabilities of any text after an optional prompt, with totals
  in nats, bits per character and perplexity; it runs the same cached path as generation, so
  the numbers agree with those reported while generating.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Iterator, Sequence

import numpy as np

from engines import limits
from engines.decoding import beam_search
from engines.decoding.config import DecodingConfig
from engines.errors import DecodingError, InputError
from engines.generation import generate_steps
from engines.text.decoder import KVBeamScorer, KVCacheStepModel, score_tokens
from engines.text.model import TextModel

MAX_NEW_TOKENS = limits.MAX_NEW_TOKENS  # the cap lives in engines.limits with the others


@dataclass(frozen=True)
class TokenEvent:
    index: int  # 0-based among generated tokens
    token_id: int
    text: str  # the token's own text (bytes decoded; a partial UTF-8 byte shows as U+FFFD)
    logprob: float  # log p(token | everything before) under the model, nats
    top_before: tuple[tuple[int, str, float], ...]  # (id, text, probability) from the model
    top_after: tuple[tuple[int, str, float], ...]  # (id, text, probability) after the chain
    window_slides: int  # how many times the context window has slid so far
    rank: int | None = None  # 1 = the model's favourite (GLTR); None when alternatives were not asked for
    entropy: float | None = None  # entropy of the model's distribution at this step, nats
    stop_string: str | None = None  # set on the last event when a stop string ended the run
    picked: bool = False  # chosen by the user from the alternatives (see describe_pick), not generated


@dataclass
class PromptPlan:
    ids: list[int]  # tokens fed as context
    notes: list[str] = field(default_factory=list)  # said to the user (empty prompt, window)


def token_text(model: TextModel, token_id: int) -> str:
    return model.tokenizer.token_bytes(token_id).decode("utf-8", errors="replace")


def plan_prompt(model: TextModel, prompt: str, max_new_tokens: int) -> PromptPlan:
    """Encode the prompt (refusing what the tokenizer cannot encode) and explain the policy."""
    if not isinstance(max_new_tokens, int) or not 1 <= max_new_tokens <= MAX_NEW_TOKENS:
        raise InputError(f"max new tokens = {max_new_tokens!r} is invalid: must be between 1 and {MAX_NEW_TOKENS:,}")
    tk = model.tokenizer
    notes = []
    if prompt == "":
        ids = [tk.start_id]
        notes.append(f"empty prompt: starting from {tk.start_text} (the document-start token)")
    else:
        ids = tk.encode(prompt)
    window = model.context_length
    if len(ids) + max_new_tokens > window:
        notes.append(
            f"prompt ({len(ids)} tokens) + {max_new_tokens} new tokens exceed the {window}-token context: "
            f"the window slides, re-reading the last {max(1, window // 2)} tokens each time it fills"
        )
    return PromptPlan(ids, notes)


def _named(model: TextModel, alts) -> tuple[tuple[int, str, float], ...]:
    return tuple((i, token_text(model, i), p) for i, p in alts)


def stream_tokens(
    model: TextModel,
    context_ids: Sequence[int],
    config: DecodingConfig,
    max_new_tokens: int,
    *,
    seed: int,
    stop_strings: Sequence[str] = (),
    n_alternatives: int = 10,
    should_stop: Callable[[], bool] | None = None,
) -> Iterator[TokenEvent]:
    """Generate one token at a time (batch 1). Stops at max tokens, eos, a stop string or should_stop()."""
    step_model = KVCacheStepModel(model.decoder)
    eos = [model.tokenizer.eos_id] if model.tokenizer.eos_id is not None else []
    generated: list[int] = []
    for ev in generate_steps(
        step_model, [list(context_ids)], config, max_new_tokens, seed=seed, stop_values=eos,
        n_alternatives=n_alternatives, should_stop=should_stop,
    ):
        tid = ev.value
        generated.append(tid)
        hit = None
        if stop_strings:
            tail = model.tokenizer.decode(generated[-64:])
            hit = next((s for s in stop_strings if s and s in tail), None)
        yield TokenEvent(
            index=ev.position, token_id=tid, text=token_text(model, tid), logprob=ev.logprob,
            top_before=_named(model, ev.top_before[0]), top_after=_named(model, ev.top_after[0]),
            window_slides=step_model.slides,
            rank=int(ev.ranks[0]) if ev.ranks is not None else None,
            entropy=float(ev.entropies[0]) if ev.entropies is not None else None,
            stop_string=hit,
        )
        if hit is not None:
            return


def describe_pick(
    model: TextModel, context_ids: Sequence[int], token_id: int, config: DecodingConfig, seed: int,
    n_alternatives: int = 10,
) -> TokenEvent:
    """The event a user's pick would have had: the model's distribution after `context_ids`,
    before and after the chain, and the picked token's own probability, rank and entropy."""
    from engines.decoding import build_chain, log_softmax, top_alternatives
    from engines.generation import rank_and_entropy

    logits = KVCacheStepModel(model.decoder).prefill([list(context_ids)])  # (1, V)
    raw = log_softmax(logits)
    after = log_softmax(build_chain(config, seed).process(logits, [list(context_ids)]))  # process() draws nothing
    ranks, entropies = rank_and_entropy(raw, np.array([token_id]))
    return TokenEvent(
        index=0, token_id=int(token_id), text=token_text(model, token_id), logprob=float(raw[0, token_id]),
        top_before=_named(model, top_alternatives(raw[0], n_alternatives)),
        top_after=_named(model, top_alternatives(after[0], n_alternatives)),
        window_slides=0, rank=int(ranks[0]), entropy=float(entropies[0]), picked=True,
    )


def trim_at_stop(text: str, stop_strings: Sequence[str]) -> tuple[str, str | None]:
    """Cut generated text at the first stop string (the stop string is not kept)."""
    hits = [(text.find(s), s) for s in stop_strings if s and s in text]
    if not hits:
        return text, None
    pos, s = min(hits)
    return text[:pos], s


@dataclass
class BeamResult:
    token_ids: list[int]
    text: str
    total_logprob: float  # under the raw model
    token_logprobs: list[float]
    score: float  # length-penalised beam score
    finished: bool = True  # ended by end-of-text (False: cut off by max-new-tokens or a stop)


def beam_generate(
    model: TextModel, context_ids: Sequence[int], config: DecodingConfig, max_new_tokens: int,
    should_stop: Callable[[], bool] | None = None,
) -> list[BeamResult]:
    if config.strategy != "beam":
        raise DecodingError("beam_generate needs strategy = 'beam'")
    def result(h) -> BeamResult:
        return BeamResult(list(h.tokens), model.tokenizer.decode(list(h.tokens)), float(h.sum_logprob),
                          list(h.token_logprobs), float(h.score), bool(h.finished))

    try:
        hyps = beam_search(
            KVBeamScorer(model.decoder), list(context_ids), config, max_new_tokens,
            eos_id=model.tokenizer.eos_id, should_stop=should_stop,
        )
    except KeyboardInterrupt as exc:  # the best hypotheses so far go with it (see `beam_search`)
        exc.beam_results = [result(h) for h in getattr(exc, "beam_hypotheses", ())]  # type: ignore[attr-defined]
        raise
    return [result(h) for h in hyps]


@dataclass
class ScoreResult:
    token_ids: list[int]
    token_texts: list[str]
    logprobs: np.ndarray  # (N,) nats per token
    n_chars: int

    @property
    def total_logprob(self) -> float:
        return float(self.logprobs.sum())

    @property
    def nats_per_token(self) -> float:
        return -self.total_logprob / max(1, len(self.token_ids))

    @property
    def bits_per_char(self) -> float:
        return -self.total_logprob / math.log(2) / max(1, self.n_chars)

    @property
    def perplexity(self) -> float:
        """Per token."""
        return math.exp(self.nats_per_token)


def score_text(model: TextModel, text: str, prompt: str = "") -> ScoreResult:
    if text == "":
        raise InputError("nothing to score: the text is empty")
    context = model.tokenizer.encode(prompt) if prompt else [model.tokenizer.start_id]
    ids = model.tokenizer.encode(text)
    lps = score_tokens(model.decoder, context, ids)
    return ScoreResult(ids, [token_text(model, i) for i in ids], lps, len(text))
