"""The Text tab's background work: generators that run on a TaskRunner's worker thread.

Nothing here touches Qt. Every function returns a generator of small, immutable events that
the tab turns into widgets on the UI thread:

* `generate_events` - one branch's run (first `ModelLoading` stages while its model loads): a `TextRequest` (engines/text/request.py) run by
  `engines.text.request.run`, the same runner `chainrule generate text` uses, so a studio run
  with seed s gives exactly the tokens `chainrule generate text --seed s` gives (or
  `chainrule generate --from` on the branch's JSON export); each token carries its
  alternatives, GLTR rank (1 + how many tokens the model preferred) and entropy.
* `compare_events` - the same prompt under several decoding configs (one request each), one after another.
* `score_events` - `score_text` for the Score page.

Loaded models are cached per (id, folder): loading happens on the worker, and the UI thread
reads the cached tokenizer (cheap, thread-safe decode) once a run has loaded it.
"""

from __future__ import annotations

import math
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from engines.decoding.config import DecodingConfig
from engines.errors import InputError
from engines.generation import rank_and_entropy as engine_rank_and_entropy
from engines.registry import ModelInfo
from engines.text.request import TextRequest
from studio.model_cache import ModelCache

N_ALTERNATIVES = 10

# --- model cache -----------------------------------------------------------------------------

_LOADING = threading.local()  # the progress callback of the load running on this thread, if any


def _load(info: ModelInfo):
    from engines.text.model import load_text_model

    return load_text_model(info, progress=getattr(_LOADING, "say", None))


# load_model on a worker thread (it may load); cached_model never loads: safe on the UI thread.
load_model, cached_model, forget_models = ModelCache(_load, "decoder").functions()


@dataclass(frozen=True)
class ModelLoading:
    """A loading stage of the run's model ("start", then load_text_model's "tokenizer", "session",
    "ready"); the tab shows it on its status line. None come when the model is already loaded."""

    model_id: str
    stage: str


def load_model_events(info: ModelInfo):
    """`yield from` this on the worker: yields ModelLoading per stage while the model loads (on a
    helper thread, so each stage reaches the UI as it happens), then returns the model."""
    model = cached_model(info)
    if model is not None:
        return model
    stages: queue.SimpleQueue = queue.SimpleQueue()
    out: dict[str, Any] = {}

    def body() -> None:
        _LOADING.say = stages.put
        try:
            out["model"] = load_model(info)
        except BaseException as exc:  # noqa: BLE001 - re-raised on the worker below
            out["error"] = exc
        finally:
            stages.put(None)

    threading.Thread(target=body, name=f"load {info.id}", daemon=True).start()
    yield ModelLoading(info.id, "start")
    while (stage := stages.get()) is not None:
        yield ModelLoading(info.id, stage)
    if "error" in out:
        raise out["error"]
    return out["model"]


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
    n_masked: int = 0  # ids the tokenizer cannot decode, masked (never drawn or listed; engines.text.vocab_mask)
    masked_mass: float | None = None  # the probability the model gave them at this step

    @property
    def probability(self) -> float:
        return math.exp(self.logprob)

    @classmethod
    def from_event(cls, ev) -> "TokenRecord":
        """From an engine `TokenEvent` (engines.text.session)."""
        return cls(
            token_id=ev.token_id, text=ev.text, logprob=ev.logprob, rank=ev.rank, entropy=ev.entropy,
            top_before=ev.top_before, top_after=ev.top_after, picked=ev.picked, window_slides=ev.window_slides,
            n_masked=ev.n_masked, masked_mass=ev.masked_mass,
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


def generate_events(request: TextRequest, info: ModelInfo, *,
                    should_stop: Callable[[], bool] | None = None) -> Iterator[Any]:
    """Yield RunStarted, then one TokenStep per token, then RunEnded (unless stopped).

    Runs `request` with `engines.text.request.run`, the runner `chainrule generate text` uses, so
    the same request gives the same tokens here and there. A request continuing a branch has its
    tokens in `prefix_ids`; with `prefix_pick` the last one was picked by the user, and its own
    numbers (from the distribution it was picked from) come first as a TokenStep (`picked=True`).
    """
    from engines.text.request import TextStarted, TextToken, plan, run
    from engines.text.session import describe_pick

    model = yield from load_model_events(info)
    runner = run(request, info, model=model, should_stop=should_stop, n_alternatives=N_ALTERNATIVES)
    started = next(runner)
    assert isinstance(started, TextStarted)
    yield RunStarted(started.request.decoding.seed, started.chain, started.notes, started.prompt_ids,
                     started.context_length, started.vocab_size, time.perf_counter())
    if request.prefix_pick:  # the pick's own numbers, from the distribution it was picked from
        context = plan(model, request)[0]
        yield TokenStep(TokenRecord.from_event(describe_pick(model, context[:-1], context[-1], started.request.decoding,
                                                             started.request.decoding.seed, N_ALTERNATIVES)),
                        time.perf_counter())
    last = None
    for ev in runner:
        if isinstance(ev, TextToken):
            last = ev.token
            yield TokenStep(TokenRecord.from_event(ev.token), time.perf_counter())
    if last is not None and last.stop_string is not None:
        yield RunEnded("stop string", last.stop_string)
        return
    if should_stop is not None and should_stop():
        return  # stopped from outside: the run did not end on its own
    from engines.text.session import stop_ids

    ends = stop_ids(model, started.request.end_ids(model))  # a chat's end-of-turn tokens too
    reason = "eos" if last is not None and last.token_id in ends else "max"
    yield RunEnded(reason, None)


def cli_arguments(request: TextRequest, info: ModelInfo | None = None) -> list[str] | None:
    """`chainrule` arguments that make `request` (None for a branch continuation: it has no flags)."""
    if request.prefix_ids:
        return None
    try:
        return request.to_command(info)
    except InputError:  # a chat of more turns than --system / --user carry: its JSON export runs with --from
        return None


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


def compare_requests(info: ModelInfo, specs: Sequence[CompareSpec], prompt: str, seed: int, max_new_tokens: int,
                     stop_strings: Sequence[str] = (), turns: Sequence[Any] = ()) -> list[TextRequest]:
    """One TextRequest per column: the same prompt (or chat turns) and seed under each spec's config
    (InputError / DecodingError naming the setting when the widgets' values are refused)."""
    return [TextRequest(model=info.id, prompt="" if turns else prompt, max_new_tokens=max_new_tokens,
                        stop=tuple(stop_strings), decoding=spec.config.replace(seed=seed), turns=tuple(turns))
            for spec in specs]


def compare_events(
    info: ModelInfo,
    requests: Sequence[TextRequest],
    should_stop: Callable[[], bool] | None = None,
) -> Iterator[Any]:
    """Run each column's request (`compare_requests`) in turn; sampled columns stream their
    tokens, beam columns show their hypotheses when the search ends."""
    from engines.text.request import TextDone, TextStarted, TextToken, run

    model = load_model(info)
    for col, request in enumerate(requests):
        done = None
        for ev in run(request, info, model=model, should_stop=should_stop,
                      n_alternatives=0 if request.decoding.strategy == "beam" else N_ALTERNATIVES):
            if isinstance(ev, TextStarted):
                if col == 0:
                    yield CompareStarted(ev.notes)
                yield ColumnStarted(col, ev.request.decoding.seed, ev.chain)
            elif isinstance(ev, TextToken):
                yield ColumnToken(col, TokenRecord.from_event(ev.token))
            elif isinstance(ev, TextDone):
                done = ev
        if done is None or done.stopped:
            return
        if request.decoding.strategy == "beam":
            beams = tuple(BeamOut(tuple(TokenRecord(int(t), text, float(lp))
                                        for t, text, lp in zip(s.token_ids, s.tokens, s.logprobs)),
                                  s.text, s.total_logprob, float(s.beam_score)) for s in done.samples)
            best = beams[0] if beams else None
            yield ColumnDone(col, best.text if best else "", best.total_logprob if best else 0.0,
                             len(best.records) if best else 0, beams)
        else:
            s = done.samples[0]
            yield ColumnDone(col, s.text, s.total_logprob, len(s.token_ids))


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


def score_events(info: ModelInfo, text: str, prompt: str = "", chat: bool = False) -> Iterator[Any]:
    """`score_text` (`chat`: the prompt is a rendered chat, encoded without an added BOS)."""
    from engines.text.session import score_text

    model = load_model(info)
    r = score_text(model, text, prompt, chat=chat)
    masses = r.masked_mass if r.masked_mass is not None else [None] * len(r.token_ids)
    yield ScoreDone(
        tuple(TokenRecord(int(i), t, float(lp), n_masked=r.n_masked, masked_mass=None if m is None else float(m))
              for i, t, lp, m in zip(r.token_ids, r.token_texts, r.logprobs, masses)),
        r.total_logprob, r.bits_per_char, r.perplexity, r.nats_per_token, len(r.token_ids), r.n_chars,
    )


# --- branches (UI-thread data, no Qt) -------------------------------------------------------


@dataclass
class Segment:
    start: int  # index of the first token this run produced (a pick's run: the picked token)
    seed: int
    chain: str
    settings: dict[str, Any]  # config.to_dict() as used (seed filled in)
    max_new_tokens: int
    stop_strings: tuple[str, ...] = ()
    kind: str = "generate"  # generate | continue | pick | regenerate
    request: dict[str, Any] | None = None  # the run's TextRequest, as JSON (resolved: seed in)
    run_id: int | None = None  # its row in the history (None: not recorded)

    @property
    def n_prefix(self) -> int:
        """Tokens of the branch before this run's new ones (a pick's run: the pick included)."""
        return self.start + (1 if self.kind == "pick" else 0)


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
        """The generated text (no prompt), cut at the stop string the last run produced, as
        `engines.text.request.run` cuts it (so a JSON export's `--from` gives the same text)."""
        from engines.text.request import cut_new_text

        ids = self.token_ids()
        n = min(self.segments[-1].n_prefix, len(ids)) if self.segments else 0
        if tokenizer is None:
            text = "".join(t.text for t in self.tokens)
            if self.stopped_by:
                pos = text.find(self.stopped_by, len("".join(t.text for t in self.tokens[:n])))
                text = text if pos < 0 else text[:pos]
            return text
        return cut_new_text(tokenizer, ids[:n], ids[n:], self.stopped_by)

    def export_request(self) -> TextRequest | None:
        """The request that makes this branch's text: its last run's, with max new tokens cut to
        what that run made (a stopped run made fewer; the tokens are the same up to there)."""
        seg = self.segments[-1] if self.segments else None
        if seg is None or seg.request is None:
            return None
        request = TextRequest.from_json(seg.request)
        made = len(self.tokens) - len(request.prefix_ids)
        return request.replace(max_new_tokens=made) if 1 <= made < request.max_new_tokens else request


# --- a branch tree as JSON (the tab's history state) -----------------------------------------

MAX_HISTORY_STATE_BYTES = 2_000_000  # what `history_state` may take; alternatives go first, then old branches


def _round(p: float) -> float:
    return float(f"{p:.5g}")


def record_to_state(rec: TokenRecord, alternatives: bool = True) -> list:
    """[id, text, logprob, rank, entropy, picked, slides, top_before, top_after] (compact, JSON), then
    [n_masked, masked_mass] when the model's vocabulary was masked."""
    alts = (lambda a: [[int(i), t, _round(p)] for i, t, p in a]) if alternatives else (lambda a: [])
    row = [int(rec.token_id), rec.text, float(rec.logprob), rec.rank, rec.entropy, bool(rec.picked),
           int(rec.window_slides), alts(rec.top_before), alts(rec.top_after)]
    if rec.n_masked:
        row += [int(rec.n_masked), None if rec.masked_mass is None else _round(rec.masked_mass)]
    return row


def record_from_state(row: Any) -> TokenRecord:
    tid, text, lp, rank, entropy, picked, slides, before, after, *masked = row
    n_masked, mass = (masked + [0, None])[:2] if len(masked) <= 2 else (None, None)
    alts = lambda a: tuple((int(i), str(t), float(p)) for i, t, p in a)  # noqa: E731
    return TokenRecord(int(tid), str(text), float(lp), None if rank is None else int(rank),
                       None if entropy is None else float(entropy), alts(before), alts(after), bool(picked), int(slides),
                       int(n_masked), None if mass is None else float(mass))


def branch_to_state(branch: Branch, alternatives: bool = True) -> dict[str, Any]:
    return {
        "id": branch.id, "parent": branch.parent, "model": branch.model_id, "prompt": branch.prompt,
        "prompt_ids": list(branch.prompt_ids), "origin": branch.origin, "stopped_by": branch.stopped_by,
        "state": "stopped" if branch.state == "running" else branch.state,
        "segments": [{"start": s.start, "seed": s.seed, "chain": s.chain, "settings": s.settings,
                      "max_new_tokens": s.max_new_tokens, "stop": list(s.stop_strings), "kind": s.kind,
                      "request": s.request, "run_id": s.run_id} for s in branch.segments],
        "tokens": [record_to_state(t, alternatives) for t in branch.tokens],
    }


def branch_from_state(data: Any) -> Branch:
    """A Branch from `branch_to_state`'s dict; ValueError / TypeError / KeyError when it is not one."""
    segments = [Segment(int(s["start"]), int(s["seed"]), str(s["chain"]), dict(s["settings"]),
                        int(s["max_new_tokens"]), tuple(str(x) for x in s["stop"]), str(s["kind"]),
                        dict(s["request"]) if s.get("request") is not None else None,
                        int(s["run_id"]) if s.get("run_id") is not None else None) for s in data["segments"]]
    parent = data["parent"]
    return Branch(int(data["id"]), None if parent is None else int(parent), str(data["model"]), str(data["prompt"]),
                  tuple(int(i) for i in data["prompt_ids"]), [record_from_state(r) for r in data["tokens"]],
                  int(data["origin"]), segments, data.get("stopped_by"), str(data.get("state", "done")))


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

    # --- as JSON (the tab's history state) -------------------------------------------------
    def to_state(self, shown: int | None, max_bytes: int = MAX_HISTORY_STATE_BYTES) -> dict[str, Any]:
        """{"next_id", "branches"} under `max_bytes` of JSON: first every token's alternatives are
        kept; over the cap, the other branches' alternatives go, then the shown branch's, then
        whole branches, oldest first (the shown one last)."""
        import json

        order = sorted(self._branches.values(), key=lambda b: (b.id == shown, b.id))  # dropped first ... last
        rows = {b.id: branch_to_state(b) for b in order}
        sizes = {i: len(json.dumps(row, ensure_ascii=False)) + 2 for i, row in rows.items()}  # bytes, "," included
        for b in order:  # the shown branch is last: its alternatives are the last to go
            if sum(sizes.values()) <= max_bytes:
                break
            rows[b.id] = branch_to_state(b, alternatives=False)
            sizes[b.id] = len(json.dumps(rows[b.id], ensure_ascii=False)) + 2
        dropped = []
        for b in order:
            if sum(sizes.values()) <= max_bytes:
                break
            del rows[b.id], sizes[b.id]
            dropped.append(b.id)
        for row in rows.values():  # children of a dropped branch hang from its nearest kept ancestor
            while row["parent"] is not None and row["parent"] not in rows:
                gone = self._branches.get(row["parent"])
                row["parent"] = gone.parent if gone is not None else None
        return {"next_id": self._next, "branches": list(rows.values()), "dropped": len(dropped)}

    @classmethod
    def from_state(cls, state: Any) -> "BranchStore":
        """The store `to_state` saved; ValueError naming the problem when `state` is not one."""
        store = cls()
        try:
            for row in state["branches"]:
                branch = branch_from_state(row)
                store._branches[branch.id] = branch
            for branch in store._branches.values():
                if branch.parent not in store._branches:
                    branch.parent = None
            store._next = max([int(state.get("next_id", 1)), *(b.id + 1 for b in store._branches.values())])
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ValueError(f"the saved branch tree is unreadable ({type(exc).__name__}: {exc})") from None
        return store
