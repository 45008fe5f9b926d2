"""The Text tab's background work: generators that run on a TaskRunner's worker thread.

Nothing here touches Qt. Every function returns a generator of small, immutable events that
the tab turns into widgets on the UI thread:

* `generate_events` - one branch's generation. It is `engines.text.session.stream_tokens`
  re-done on the same `generate_steps` loop (same `KVCacheStepModel`, same seed, same eos and
  stop-string rules), so a studio run with seed s gives exactly the tokens
  `chainrule generate text --seed s` gives; the only addition is a thin recording wrapper
  around the step model that keeps the raw logits of each step, so every token also carries
  its GLTR rank (1 + how many tokens the model preferred) and the entropy of the model's
  distribution.
* `compare_events` - the same prompt under several decoding configs, one after another.
* `score_events` - `score_text` for the Score page.

Loaded models are cached per (id, folder): loading happens on the worker, and the UI thread
reads the cached tokenizer (cheap, thread-safe decode) once a run has loaded it.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from engines.decoding import build_chain
from engines.decoding.config import DecodingConfig
from engines.errors import InputError
from engines.generation import rank_and_entropy as engine_rank_and_entropy
from engines.registry import ModelInfo
from studio.model_cache import ModelCache
from engines.text.session import token_text

N_ALTERNATIVES = 10

# --- model cache -----------------------------------------------------------------------------

def _load(info: ModelInfo):
    from engines.text.model import load_text_model

    return load_text_model(info)


# load_model on a worker thread (it may load); cached_model never loads: safe on the UI thread.
load_model, cached_model, forget_models = ModelCache(_load, "decoder").functions()


# --- records -----------------------------------------------------------------------------------

Alternatives = tuple[tuple[int, str, float], ...]  # (id, text, probability), most likely first


@dataclass(frozen=True)
class TokenRecord:
    """One token as the views show it; everything about it that the model said."""

    token_id: int
    text: str  # the token's own text (a partial UTF-8 byte shows as U+FFFD)
    logprob: float  # log p(token | before) under the raw model, nats
    rank: int | None = None  # 1 = the model's favourite; None when unknown (scoring, beams)
    entropy: float | None = None  # of the model's distribution at this step, nats
    top_before: Alternatives = ()  # the model's top alternatives
    top_after: Alternatives = ()  # the top alternatives after the sampler chain
    picked: bool = False  # chosen by the user from the alternatives, not sampled
    window_slides: int = 0  # times the context window had slid when this token came

    @property
    def probability(self) -> float:
        return math.exp(self.logprob)

    @classmethod
    def from_event(cls, ev) -> "TokenRecord":
        """From an engine `TokenEvent` (engines.text.session)."""
        return cls(
            token_id=ev.token_id, text=ev.text, logprob=ev.logprob, rank=ev.rank, entropy=ev.entropy,
            top_before=ev.top_before, top_after=ev.top_after, picked=ev.picked, window_slides=ev.window_slides,
        )


@dataclass(frozen=True)
class RunStarted:
    seed: int
    chain: str  # build_chain(config, seed).name
    notes: tuple[str, ...]  # from plan_prompt, plus our own
    prompt_ids: tuple[int, ...]  # the prompt's tokens (what the branch continues)
    context_length: int
    vocab_size: int
    t: float  # time.perf_counter() when the model was ready


@dataclass(frozen=True)
class TokenStep:
    record: TokenRecord
    t: float


@dataclass(frozen=True)
class RunEnded:
    reason: str  # "eos" | "max" | "stop string"
    stopped_by: str | None  # the stop string that ended it


def rank_and_entropy(raw_logprobs: np.ndarray, token_id: int) -> tuple[int, float]:
    """GLTR rank (1 = most likely) of `token_id` and the entropy (nats) of the distribution."""
    ranks, entropies = engine_rank_and_entropy(np.asarray(raw_logprobs)[None], np.array([token_id]))
    return int(ranks[0]), float(entropies[0])


def continuation_notes(model, n_context: int, max_new_tokens: int) -> list[str]:
    window = model.context_length
    if n_context + max_new_tokens > window:
        return [
            f"context ({n_context} tokens) + {max_new_tokens} new tokens exceed the {window}-token "
            f"window: it slides, re-reading the last {max(1, window // 2)} tokens each time it fills"
        ]
    return []


def generate_events(
    info: ModelInfo,
    config: DecodingConfig,
    seed: int,
    max_new_tokens: int,
    *,
    prompt: str | None = None,
    context_ids: Sequence[int] | None = None,
    forced: bool = False,
    stop_strings: Sequence[str] = (),
    should_stop: Callable[[], bool] | None = None,
) -> Iterator[Any]:
    """Yield RunStarted, then one TokenStep per token, then RunEnded (unless stopped).

    Give `prompt` for a new branch (planned with `plan_prompt`, as the CLI does), or
    `context_ids` (prompt ids + the branch's tokens) to continue one; `forced` says the last
    context id is a pick, reported first as its own TokenStep (with `picked=True`).
    """
    from engines.text.session import MAX_NEW_TOKENS, describe_pick, plan_prompt, stream_tokens

    model = load_model(info)
    if prompt is not None:
        plan = plan_prompt(model, prompt, max_new_tokens)
        context, notes, prompt_ids = list(plan.ids), list(plan.notes), tuple(plan.ids)
    else:
        if not isinstance(max_new_tokens, int) or not 1 <= max_new_tokens <= MAX_NEW_TOKENS:
            raise InputError(f"max new tokens = {max_new_tokens!r} is invalid: must be between 1 and {MAX_NEW_TOKENS:,}")
        context = [int(i) for i in (context_ids or ())]
        if len(context) < (2 if forced else 1):
            raise InputError("nothing to continue from: the branch has no context tokens")
        notes, prompt_ids = continuation_notes(model, len(context), max_new_tokens), ()
    chain = build_chain(config, seed)
    yield RunStarted(seed, chain.name, tuple(notes), prompt_ids, model.context_length,
                     int(model.tokenizer.vocab_size), time.perf_counter())
    if forced:  # the pick's own numbers, from the distribution it was picked from
        yield TokenStep(TokenRecord.from_event(describe_pick(model, context[:-1], context[-1], config, seed, N_ALTERNATIVES)), time.perf_counter())

    eos = model.tokenizer.eos_id
    last = None
    for ev in stream_tokens(
        model, context, config, max_new_tokens, seed=seed, stop_strings=stop_strings,
        n_alternatives=N_ALTERNATIVES, should_stop=should_stop,
    ):
        last = ev
        yield TokenStep(TokenRecord.from_event(ev), time.perf_counter())
        if ev.stop_string is not None:
            yield RunEnded("stop string", ev.stop_string)
            return
    if should_stop is not None and should_stop():
        return  # stopped from outside: the run did not end on its own
    reason = "eos" if last is not None and eos is not None and last.token_id == eos else "max"
    yield RunEnded(reason, None)


# --- the CLI equivalent ------------------------------------------------------------------------

def cli_arguments(
    info: ModelInfo, prompt: str, config: DecodingConfig, seed: int, max_new_tokens: int,
    stop_strings: Sequence[str] = (),
) -> list[str]:
    """`chainrule` arguments that reproduce a Generate run exactly."""
    from engines.cli import reproducing_arguments

    args = reproducing_arguments(["generate", "text"], info, config)
    args += ["--prompt", prompt, "--seed", str(seed), "--max-new-tokens", str(max_new_tokens)]
    for s in stop_strings:
        args += ["--stop", s]
    return args


# --- compare -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class CompareSpec:
    key: str
    title: str
    config: DecodingConfig


@dataclass(frozen=True)
class ColumnStarted:
    column: int
    seed: int
    chain: str


@dataclass(frozen=True)
class ColumnToken:
    column: int
    record: TokenRecord


@dataclass(frozen=True)
class BeamOut:
    records: tuple[TokenRecord, ...]
    text: str
    total_logprob: float
    score: float


@dataclass(frozen=True)
class ColumnDone:
    column: int
    text: str  # sampled columns: the text (trimmed at a stop string like the CLI)
    total_logprob: float
    n_tokens: int
    beams: tuple[BeamOut, ...] = ()


@dataclass(frozen=True)
class CompareStarted:
    notes: tuple[str, ...]


def compare_events(
    info: ModelInfo,
    specs: Sequence[CompareSpec],
    prompt: str,
    seed: int,
    max_new_tokens: int,
    stop_strings: Sequence[str] = (),
    should_stop: Callable[[], bool] | None = None,
) -> Iterator[Any]:
    """Run each spec on the prompt in turn; sampled columns stream their tokens."""
    from engines.text.session import beam_generate, plan_prompt, trim_at_stop

    model = load_model(info)
    plan = plan_prompt(model, prompt, max_new_tokens)
    yield CompareStarted(tuple(plan.notes))
    for col, spec in enumerate(specs):
        cfg = spec.config
        if cfg.strategy == "beam":
            penalties = build_chain(cfg, seed).links[:-1]  # beam search applies only the penalties
            beam = f"beam search ×{cfg.num_beams}" + (f", length penalty {cfg.length_penalty:g}" if cfg.length_penalty != 1 else "")
            yield ColumnStarted(col, seed, " → ".join([*penalties, beam]))
            beams = []
            for b in beam_generate(model, plan.ids, cfg, max_new_tokens, should_stop=should_stop):
                recs = tuple(TokenRecord(int(t), token_text(model, t), float(lp))
                             for t, lp in zip(b.token_ids, b.token_logprobs))
                beams.append(BeamOut(recs, trim_at_stop(b.text, stop_strings)[0], float(b.total_logprob), float(b.score)))
            if should_stop and should_stop():
                return
            best = beams[0] if beams else None
            yield ColumnDone(col, best.text if best else "", best.total_logprob if best else 0.0,
                             len(best.records) if best else 0, tuple(beams))
            continue
        ids, total, stopped_by = [], 0.0, None
        for ev in generate_events(info, cfg, seed, max_new_tokens, context_ids=plan.ids,
                                  stop_strings=stop_strings, should_stop=should_stop):
            if isinstance(ev, RunStarted):
                yield ColumnStarted(col, seed, ev.chain)
            elif isinstance(ev, TokenStep):
                ids.append(ev.record.token_id)
                total += ev.record.logprob
                yield ColumnToken(col, ev.record)
            elif isinstance(ev, RunEnded):
                stopped_by = ev.stopped_by
        text = model.tokenizer.decode(ids)
        if stopped_by:
            text = trim_at_stop(text, [stopped_by])[0]
        yield ColumnDone(col, text, total, len(ids))


# --- score -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ScoreDone:
    records: tuple[TokenRecord, ...]
    total_logprob: float
    bits_per_char: float
    perplexity: float
    nats_per_token: float
    n_tokens: int
    n_chars: int


def score_events(info: ModelInfo, text: str, prompt: str = "") -> Iterator[Any]:
    from engines.text.session import score_text

    model = load_model(info)
    r = score_text(model, text, prompt)
    yield ScoreDone(
        tuple(TokenRecord(int(i), t, float(lp)) for i, t, lp in zip(r.token_ids, r.token_texts, r.logprobs)),
        r.total_logprob, r.bits_per_char, r.perplexity, r.nats_per_token, len(r.token_ids), r.n_chars,
    )


# --- branches (UI-thread data, no Qt) -------------------------------------------------------


@dataclass
class Segment:
    start: int  # index of the first token this run produced
    seed: int
    chain: str
    settings: dict[str, Any]  # config.to_dict() as used (seed filled in)
    max_new_tokens: int
    stop_strings: tuple[str, ...] = ()
    kind: str = "generate"  # generate | continue | pick | regenerate


@dataclass
class Branch:
    id: int
    parent: int | None
    model_id: str
    prompt: str
    prompt_ids: tuple[int, ...] = ()
    tokens: list[TokenRecord] = field(default_factory=list)
    origin: int = 0  # tokens taken over from the parent (the pick included)
    segments: list[Segment] = field(default_factory=list)
    stopped_by: str | None = None  # the stop string that ended the last run
    state: str = "new"  # new | running | done | stopped | error

    @property
    def seed(self) -> int | None:
        return self.segments[0].seed if self.segments else None

    @property
    def total_logprob(self) -> float:
        return float(sum(t.logprob for t in self.tokens))

    def token_ids(self) -> list[int]:
        return [t.token_id for t in self.tokens]

    def context_ids(self) -> list[int]:
        return [*self.prompt_ids, *self.token_ids()]

    def generated_text(self, tokenizer) -> str:
        """The generated text (no prompt), cut at the stop string like the CLI does."""
        from engines.text.session import trim_at_stop

        text = tokenizer.decode(self.token_ids()) if tokenizer is not None else "".join(t.text for t in self.tokens)
        if self.stopped_by:
            text = trim_at_stop(text, [self.stopped_by])[0]
        return text


class BranchStore:
    """Every branch, by id. Deleting a branch re-parents its children to its parent: each
    branch holds its own full copy of its tokens, so nothing else is lost."""

    def __init__(self) -> None:
        self._branches: dict[int, Branch] = {}
        self._next = 1

    def new_id(self) -> int:
        i, self._next = self._next, self._next + 1
        return i

    def add(self, branch: Branch) -> Branch:
        self._branches[branch.id] = branch
        return branch

    def get(self, branch_id: int | None) -> Branch | None:
        return self._branches.get(branch_id) if branch_id is not None else None

    def __contains__(self, branch_id: object) -> bool:
        return branch_id in self._branches

    def __len__(self) -> int:
        return len(self._branches)

    def all(self) -> list[Branch]:
        return list(self._branches.values())

    def children(self, branch_id: int | None) -> list[Branch]:
        return [b for b in self._branches.values() if b.parent == branch_id]

    def remove(self, branch_id: int) -> Branch | None:
        branch = self._branches.pop(branch_id, None)
        if branch is not None:
            for child in self.children(branch_id):
                child.parent = branch.parent
        return branch
