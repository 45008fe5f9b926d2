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

import dataclasses
import functools
import math
from dataclasses import dataclass, field
from typing import Callable, Iterator, Sequence

import numpy as np

from engines import limits
from engines.decoding import beam_search
from engines.decoding.config import DecodingConfig
from engines.errors import DecodingError, InputError
from engines.generation import generate_steps
from engines.text.decoder import KVCacheStepModel
from engines.text.model import TextModel
from engines.text.tokenizer import encode_prompt
from engines.text.vocab_mask import MaskedStepModel, logits_width, masked_mass, vocab_mask

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
    n_masked: int = 0  # ids the tokenizer cannot decode, masked at every step (engines.text.vocab_mask)
    masked_mass: float | None = None  # the probability the model gave them at this step (views on only)


_VIEW_FIELDS = ("top_before", "top_after", "rank", "entropy")
_TOKEN_FIELDS = dataclasses.fields(TokenEvent)


class _LazyTokenEvent(TokenEvent):
    """A `TokenEvent` of `stream_tokens` whose views (the alternatives before and after the chain, the
    rank, the entropy) are computed from its step's `StepViews` when first read, then kept: the Text
    tab reads them all, a CLI run or a benchmark none and pays nothing for them. Until they are read,
    the event holds its step's logits row. Given explicitly (dataclasses.replace), a view is as given."""

    def __init__(self, _model: TextModel | None = None, _step=None, **fields):
        for f in _TOKEN_FIELDS:
            if f.name in fields:
                object.__setattr__(self, f.name, fields.pop(f.name))  # a view given: shadows the computed one
            elif f.name not in _VIEW_FIELDS:
                object.__setattr__(self, f.name, f.default)
        if fields:
            raise TypeError(f"TokenEvent has no field(s) {', '.join(sorted(fields))}")
        object.__setattr__(self, "_model", _model)
        object.__setattr__(self, "_step", _step)

    @functools.cached_property
    def top_before(self) -> tuple[tuple[int, str, float], ...]:  # type: ignore[override]
        return _named(self._model, self._step.top_before[0])

    @functools.cached_property
    def top_after(self) -> tuple[tuple[int, str, float], ...]:  # type: ignore[override]
        return _named(self._model, self._step.top_after[0])

    @functools.cached_property
    def rank(self) -> int | None:  # type: ignore[override]
        ranks = self._step.ranks
        return int(ranks[0]) if ranks is not None else None

    @functools.cached_property
    def entropy(self) -> float | None:  # type: ignore[override]
        entropies = self._step.entropies
        return float(entropies[0]) if entropies is not None else None


@dataclass
class PromptPlan:
    ids: list[int]  # tokens fed as context
    notes: list[str] = field(default_factory=list)  # said to the user (empty prompt, window)


def token_text(model: TextModel, token_id: int) -> str:
    return model.tokenizer.token_bytes(token_id).decode("utf-8", errors="replace")


def plan_prompt(model: TextModel, prompt: str, max_new_tokens: int, *, chat: bool = False) -> PromptPlan:
    """Encode the prompt (refusing what the tokenizer cannot encode) and explain the policy.
    A rendered chat (`chat`) is encoded as it is, as transformers' apply_chat_template does: its
    template wrote any BOS itself, so none is added."""
    if not isinstance(max_new_tokens, int) or not 1 <= max_new_tokens <= MAX_NEW_TOKENS:
        raise InputError(f"max new tokens = {max_new_tokens!r} is invalid: must be between 1 and {MAX_NEW_TOKENS:,}")
    tk = model.tokenizer
    notes = []
    if prompt == "":
        ids = [tk.start_id]
        notes.append(f"empty prompt: starting from {tk.start_text} (the document-start token)")
    else:
        ids = tk.encode(prompt) if chat else encode_prompt(tk, prompt)  # BOS as the tokenizer config says (Llama: <s>)
    window = model.context_length
    if len(ids) + max_new_tokens > window:
        notes.append(
            f"prompt ({len(ids)} tokens) + {max_new_tokens} new tokens exceed the {window}-token context: "
            f"the window slides, re-reading the last {max(1, window // 2)} tokens each time it fills"
        )
    return PromptPlan(ids, notes)


def _named(model: TextModel, alts) -> tuple[tuple[int, str, float], ...]:
    return tuple((i, token_text(model, i), p) for i, p in alts)


def masked_step_model(model: TextModel, *, track_mass: bool = False) -> MaskedStepModel:
    """The KV-cache step model of `model` with the ids its tokenizer cannot decode masked (-inf)."""
    return MaskedStepModel(KVCacheStepModel(model.decoder), model.tokenizer, track_mass=track_mass)


def stop_ids(model: TextModel, extra: Sequence[int] = ()) -> list[int]:
    """The ids that end a sample: the tokenizer's end-of-text, then `extra` (a chat's end-of-turn ids)."""
    eos = model.tokenizer.eos_id
    out = [eos] if eos is not None else []
    return out + [int(i) for i in extra if int(i) not in out]


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
    end_ids: Sequence[int] = (),
) -> Iterator[TokenEvent]:
    """Generate one token at a time (batch 1). Stops at max tokens, eos (or one of `end_ids`, a
    chat's end-of-turn tokens), a stop string or should_stop(). Ids the tokenizer cannot decode
    are masked before the chain (engines.text.vocab_mask)."""
    step_model = masked_step_model(model, track_mass=n_alternatives > 0)
    eos = stop_ids(model, end_ids)
    generated: list[int] = []
    for ev in generate_steps(
        step_model, [list(context_ids)], config, max_new_tokens, seed=seed, stop_values=eos,
        n_alternatives=n_alternatives, should_stop=should_stop,
    ):
        tid = ev.value
        mask = step_model.mask
        generated.append(tid)
        hit = None
        if stop_strings:
            tail = model.tokenizer.decode(generated[-64:])
            hit = next((s for s in stop_strings if s and s in tail), None)
        yield _LazyTokenEvent(  # top_before, top_after, rank and entropy: computed when first read
            model, ev,
            index=ev.position, token_id=tid, text=token_text(model, tid), logprob=ev.logprob,
            window_slides=step_model.slides,
            stop_string=hit,
            n_masked=mask.n_masked if mask is not None else 0,
            masked_mass=step_model.mass_for(0, tid, ev.logprob),
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

    step_model = masked_step_model(model, track_mass=True)
    logits = step_model.prefill([list(context_ids)])  # (1, V)
    raw = log_softmax(logits)
    after = log_softmax(build_chain(config, seed).process(logits, [list(context_ids)]))  # process() draws nothing
    ranks, entropies = rank_and_entropy(raw, np.array([token_id]))
    return TokenEvent(
        index=0, token_id=int(token_id), text=token_text(model, token_id), logprob=float(raw[0, token_id]),
        top_before=_named(model, top_alternatives(raw[0], n_alternatives)),
        top_after=_named(model, top_alternatives(after[0], n_alternatives)),
        window_slides=0, rank=int(ranks[0]), entropy=float(entropies[0]), picked=True,
        n_masked=step_model.mask.n_masked if step_model.mask is not None else 0,
        masked_mass=step_model.mass_for(0, int(token_id), float(raw[0, token_id])),
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


class KVBeamScorer:
    """The beam-search scorer over the KV cache (engines.text.decoder.KVBeamScorer's steps) on the
    masked step model: beams never extend with an id the tokenizer cannot decode."""

    def __init__(self, model: TextModel):
        self.model = masked_step_model(model)

    def start(self, prompt: Sequence[int]) -> np.ndarray:
        from engines.decoding import log_softmax

        return log_softmax(self.model.prefill([list(prompt)]))[0]

    def step(self, parents: np.ndarray, tokens: np.ndarray) -> np.ndarray:
        from engines.decoding import log_softmax

        self.model.reorder(np.asarray(parents))
        return log_softmax(self.model.advance(np.asarray(tokens)))


def beam_generate(
    model: TextModel, context_ids: Sequence[int], config: DecodingConfig, max_new_tokens: int,
    should_stop: Callable[[], bool] | None = None, end_ids: Sequence[int] = (),
) -> list[BeamResult]:
    if config.strategy != "beam":
        raise DecodingError("beam_generate needs strategy = 'beam'")
    def result(h) -> BeamResult:
        return BeamResult(list(h.tokens), model.tokenizer.decode(list(h.tokens)), float(h.sum_logprob),
                          list(h.token_logprobs), float(h.score), bool(h.finished))

    try:
        hyps = beam_search(
            KVBeamScorer(model), list(context_ids), config, max_new_tokens,
            eos_id=stop_ids(model, end_ids) or None, should_stop=should_stop,
        )
    except KeyboardInterrupt as exc:  # the best hypotheses so far go with it (see `beam_search`)
        exc.beam_results = [result(h) for h in getattr(exc, "beam_hypotheses", ())]  # type: ignore[attr-defined]
        raise
    return [result(h) for h in hyps]


@dataclass
class ScoreResult:
    token_ids: list[int]
    token_texts: list[str]
    logprobs: np.ndarray  # (N,) nats per token (renormalised over the ids the tokenizer can decode)
    n_chars: int
    masked_mass: np.ndarray | None = None  # (N,) probability the model gave undecodable ids (None: none masked)
    n_masked: int = 0

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


def score_text(model: TextModel, text: str, prompt: str = "", *, chat: bool = False) -> ScoreResult:
    """Score `text` after `prompt` (`chat`: the prompt is a rendered chat, encoded as it is, no BOS added)."""
    if text == "":
        raise InputError("nothing to score: the text is empty")
    if prompt:
        context = model.tokenizer.encode(prompt) if chat else encode_prompt(model.tokenizer, prompt)
    else:
        context = [model.tokenizer.start_id]
    ids = model.tokenizer.encode(text)
    lps, mass = score_ids(model, context, ids)
    return ScoreResult(ids, [token_text(model, i) for i in ids], lps, len(text), mass, n_masked(model))


def n_masked(model: TextModel) -> int:
    """How many of the model's ids its tokenizer cannot decode (0 until the logits' width is known
    from the graph or a run)."""
    width = logits_width(model)
    return vocab_mask(model.tokenizer, width).n_masked if width is not None else 0


def score_ids(model: TextModel, context: Sequence[int], tokens: Sequence[int],
              keep: int | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """(log p(tokens[i] | context + tokens[:i]) per token, the probability masked at each step or
    None when nothing is masked), through the generation path with the same vocabulary mask, so
    scoring and generation report the same numbers."""
    from engines.decoding import log_softmax

    sm = MaskedStepModel(KVCacheStepModel(model.decoder, keep=keep), model.tokenizer, track_mass=True)
    first = sm.prefill([list(context)])  # (1, V) masked
    first_lse = sm.masked_lse
    if not tokens:
        return np.zeros(0), None
    toks = np.asarray(tokens, np.int64)
    bad = toks[(toks < 0) | (toks >= sm.mask.tail) | np.isin(toks, sm.mask.holes)]
    if bad.size:
        raise InputError(f"token id {int(bad[0])} cannot be decoded by the tokenizer: it cannot be scored")
    if len(toks) > 1:
        rest = sm.extend(toks[None, :-1])[0]  # (N-1, V) masked
        logits = np.concatenate([first, rest], axis=0)
        lse = None if first_lse is None else np.concatenate([first_lse, sm.masked_lse[0]])
    else:
        logits, lse = first, first_lse
    rows = np.arange(len(toks))
    lp = log_softmax(logits)[rows, toks]
    mass = None if lse is None else masked_mass(lse, logits[rows, toks], lp)
    return lp, mass
