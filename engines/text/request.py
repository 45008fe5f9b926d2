"""`TextRequest`: everything that makes one text run, and `run`, the one function that runs it.

Both `chainrule generate text` (engines/text/commands.py parses flags into a request) and the
studio's Text tab (studio/text/work.py builds one from its widgets) run text through `run`,
so a run with the same request gives the same tokens, bit for bit, wherever it ran.

A request continues either the prompt alone or a *branch*: `prefix_ids` are tokens that come
after the prompt's tokens (a branch's tokens so far; with `prefix_pick` its last one was picked
by the user from the alternatives). The run's text is the prefix's text followed by the new
tokens', cut at a stop string the new tokens produced (never at one inside the prefix).

Events, in order: `TextStarted` (seed, chain, notes); per sample `TextToken` events (streamed
sampling) and a `SampleDone`; then `TextDone` with every sample. Beam search streams no tokens:
its hypotheses arrive as the samples of `TextDone`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Iterator, Mapping, Sequence

from engines import limits
from engines.decoding.config import DecodingConfig
from engines.errors import DecodingError, InputError
from engines.requests import envelope, open_request
from engines.text.chat import MAX_TURNS, ChatTurn, turns_from_json

MAX_PROMPT_CHARS = 1_000_000  # a prompt is typed or pasted; longer is a mistake (the window slides anyway)
MAX_STOP_STRINGS = 16
MAX_STOP_CHARS = 200
MAX_PREFIX_TOKENS = 400_000  # a branch continued many times; ~3 MB of JSON at most
DEFAULT_MAX_NEW_TOKENS = 200

_FIELDS = ("model", "prompt", "max_new_tokens", "stop", "count", "decoding", "prefix_ids", "prefix_pick", "turns")


@dataclass(frozen=True)
class TextRequest:
    kind: ClassVar[str] = "text"

    model: str  # model id
    prompt: str = ""  # "" starts from the document-start token
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    stop: tuple[str, ...] = ()  # stop strings: a run ends once its new text contains one
    count: int = 1  # samples (sample i: seed + i); beam search: 1 (its hypotheses are the samples)
    decoding: DecodingConfig = field(default_factory=DecodingConfig)  # its seed is the run's seed
    prefix_ids: tuple[int, ...] = ()  # a branch: tokens after the prompt's, continued by this run
    prefix_pick: bool = False  # the last prefix token was picked by the user (the studio shows its numbers)
    # Chat (engines/text/chat.py): turns rendered with the model's chat template are the prompt
    # (`prompt` stays ""); the reply ends at an end-of-turn token.
    turns: tuple[ChatTurn, ...] = ()

    def __post_init__(self) -> None:
        for name in ("stop", "prefix_ids"):
            value = getattr(self, name)
            if isinstance(value, list):
                object.__setattr__(self, name, tuple(value))
        if not (isinstance(self.turns, tuple) and all(isinstance(t, ChatTurn) for t in self.turns)):
            object.__setattr__(self, "turns", turns_from_json(list(self.turns) if isinstance(self.turns, tuple)
                                                              else self.turns))
        if len(self.turns) > MAX_TURNS:
            raise InputError(f"chat has {len(self.turns):,} turns; at most {MAX_TURNS} are read")
        if self.turns and self.prompt:
            raise InputError("give either a prompt or chat turns, not both: a chat's prompt is its rendered turns")
        if sum(len(t.content) for t in self.turns) > MAX_PROMPT_CHARS:
            raise InputError(f"the chat turns hold over {MAX_PROMPT_CHARS:,} characters; at most that many are read")
        if not isinstance(self.model, str) or not self.model.strip():
            raise InputError(f"model = {self.model!r} is invalid: give a model id")
        if not isinstance(self.prompt, str):
            raise InputError("prompt is invalid: expected text")
        if len(self.prompt) > MAX_PROMPT_CHARS:
            raise InputError(f"the prompt is {len(self.prompt):,} characters; at most {MAX_PROMPT_CHARS:,} are read")
        n = self.max_new_tokens
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= limits.MAX_NEW_TOKENS:
            raise InputError(f"max new tokens = {n!r} is invalid: must be between 1 and {limits.MAX_NEW_TOKENS:,}")
        if not isinstance(self.stop, tuple) or len(self.stop) > MAX_STOP_STRINGS or any(
                not isinstance(s, str) or not s or len(s) > MAX_STOP_CHARS for s in self.stop):
            raise InputError(f"stop strings are invalid: give at most {MAX_STOP_STRINGS} non-empty strings of at most "
                             f"{MAX_STOP_CHARS} characters")
        if not isinstance(self.decoding, DecodingConfig):
            raise DecodingError("decoding is invalid: expected a decoding config")
        limits.count_in_range(self.count, "count")
        limits.check_seed_range(self.decoding.seed, self.count)
        if self.decoding.strategy == "beam" and self.count != 1:
            raise InputError(f"count {self.count} does not apply to beam search: it returns its best hypotheses "
                             f"(number of returned sequences, at most the number of beams {self.decoding.num_beams}); "
                             "use count 1")
        ids = self.prefix_ids
        if not isinstance(ids, tuple) or len(ids) > MAX_PREFIX_TOKENS or any(
                isinstance(i, bool) or not isinstance(i, int) or i < 0 for i in ids):
            raise InputError(f"prefix token ids are invalid: give at most {MAX_PREFIX_TOKENS:,} whole numbers >= 0")
        if not isinstance(self.prefix_pick, bool) or (self.prefix_pick and not ids):
            raise InputError("prefix pick is invalid: it marks the last prefix token, and there is none")

    # --- checks against the model ------------------------------------------------------------
    def check(self, model) -> None:
        """Refuse what the loaded `TextModel` cannot run (token ids outside its vocabulary)."""
        import numpy as np

        from engines.text.vocab_mask import logits_width, vocab_mask

        vocab = int(model.tokenizer.vocab_size)
        ids = np.asarray(self.prefix_ids, np.int64)
        mask = vocab_mask(model.tokenizer, logits_width(model) or max(vocab, int(ids.max(initial=0)) + 1))
        wrong = ids[(ids >= mask.tail) | np.isin(ids, mask.holes)]
        bad = int(wrong[0]) if wrong.size else None
        if bad is not None:
            raise InputError(f"prefix token id {bad} is invalid for {self.model}: its vocabulary has {vocab:,} tokens "
                             "and the tokenizer cannot decode this id")
        if self.turns and self.chat(model) is None:
            raise InputError(f"{self.model} has no chat template (tokenizer_config.json \"chat_template\"): "
                             "give a prompt instead of chat turns")

    def chat(self, model):
        """The model's chat (engines.text.chat.Chat) for a request with turns; None otherwise."""
        from engines.text.chat import chat_of

        return chat_of(model) if self.turns else None

    def end_ids(self, model) -> tuple[int, ...]:
        """Ids that end a sample besides the tokenizer's end-of-text: a chat's end-of-turn tokens."""
        chat = self.chat(model)
        return chat.end_ids if chat is not None else ()

    # --- seeds ----------------------------------------------------------------------------
    def resolved(self) -> "TextRequest":
        """This request with its seed drawn (unchanged when it has one)."""
        from engines.generation import resolve_seed

        if self.decoding.seed is not None:
            return self
        return self.replace(decoding=self.decoding.replace(seed=resolve_seed(self.decoding)))

    def for_sample(self, i: int) -> "TextRequest":
        """The request that makes sample i alone: count 1 and seed + i (the one seed-per-sample rule).
        Beam search makes all its hypotheses in one search: its request is itself."""
        if self.decoding.strategy == "beam":
            return self.resolved()
        req = self.resolved()
        if not 0 <= i < req.count:
            raise InputError(f"sample {i + 1} is invalid: this request makes {req.count}")
        return req.replace(count=1, decoding=req.decoding.replace(seed=req.decoding.seed + i))

    @property
    def seed(self) -> int | None:
        return self.decoding.seed

    def replace(self, **changes: Any) -> "TextRequest":
        return dataclasses.replace(self, **changes)

    # --- conversions ------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model, "prompt": self.prompt, "max_new_tokens": self.max_new_tokens,
            "stop": list(self.stop), "count": self.count, "decoding": self.decoding.to_dict(),
        }
        if self.prefix_ids:
            body["prefix_ids"] = list(self.prefix_ids)
            body["prefix_pick"] = self.prefix_pick
        if self.turns:
            body["turns"] = [t.to_json() for t in self.turns]
        return envelope(self.kind, body)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "TextRequest":
        body, config = open_request(data, cls.kind, _FIELDS)
        kwargs = {k: body[k] for k in _FIELDS if k in body and k != "decoding"}
        for name in ("stop", "prefix_ids", "turns"):
            if name in kwargs:
                if not isinstance(kwargs[name], list):
                    raise InputError(f"text request: {name.replace('_', ' ')} is invalid: expected a list")
                kwargs[name] = turns_from_json(kwargs[name]) if name == "turns" else tuple(kwargs[name])
        try:
            return cls(decoding=config, **kwargs)
        except TypeError as exc:
            raise InputError(f"text request is invalid ({exc})") from None

    def to_command(self, info=None) -> list[str]:
        """`chainrule` argv that makes this run (InputError for a branch continuation: no flag
        carries token ids; its JSON export runs with `chainrule generate --from`)."""
        from engines.decoding.flags import decoding_arguments, model_arguments

        if self.prefix_ids:
            raise InputError("a branch continuation has no command-line flags; run its JSON export with "
                             "`chainrule generate --from FILE`")
        defaults = info.card.get("decoding_defaults") if info is not None else None
        args = ["generate", "text", *(model_arguments(info) if info is not None else ["--model", self.model]),
                *decoding_arguments(self.decoding, defaults)]
        if self.decoding.seed is not None:
            args += ["--seed", str(self.decoding.seed)]
        if self.turns:
            roles = [t.role for t in self.turns]
            if roles not in (["user"], ["system", "user"]):
                raise InputError("a chat of more than a system and a user turn has no command-line flags; run its "
                                 "JSON export with `chainrule generate --from FILE`, or give the turns with --chat FILE")
            for t in self.turns:
                args += [f"--{t.role}", t.content]
            args += ["--max-new-tokens", str(self.max_new_tokens)]
        else:
            args += ["--prompt", self.prompt, "--max-new-tokens", str(self.max_new_tokens)]
        for s in self.stop:
            args += ["--stop", s]
        if self.count != 1:
            args += ["--count", str(self.count)]
        return args


REQUEST_TYPE = TextRequest


# --- events --------------------------------------------------------------------------------


@dataclass(frozen=True)
class TextStarted:
    request: TextRequest  # resolved: its seed is the run's
    chain: str  # the sampler chain (or the beam search) in words
    notes: tuple[str, ...]  # empty prompt, window slides: said to the user
    prompt_ids: tuple[int, ...]  # the prompt's tokens (the prefix follows them)
    context_length: int
    vocab_size: int


@dataclass(frozen=True)
class TextToken:
    sample: int  # 0-based
    token: Any  # engines.text.session.TokenEvent (value, log-prob, alternatives before / after the chain)
    finished: bool  # the sample ended with this token (end-of-text or a stop string)

    @property
    def value(self) -> int:
        return self.token.token_id

    @property
    def logprob(self) -> float:
        return self.token.logprob


@dataclass(frozen=True)
class TextSample:
    text: str  # the prefix's text + the new text, cut at the stop string
    token_ids: tuple[int, ...]  # the new tokens
    tokens: tuple[str, ...]
    logprobs: tuple[float, ...]  # per new token, nats, under the raw model
    seed: int
    stopped_by: str | None  # the stop string, "eos", "interrupted", or None (max new tokens)
    window_slides: int = 0
    beam_score: float | None = None  # beam search only

    @property
    def total_logprob(self) -> float:
        return float(sum(self.logprobs))

    def to_dict(self) -> dict[str, Any]:
        out = {"text": self.text, "tokens": list(self.tokens), "token_ids": list(self.token_ids),
               "logprobs": list(self.logprobs), "total_logprob": self.total_logprob, "n": len(self.token_ids),
               "seed": self.seed, "stopped_by": None if self.stopped_by == "eos" else self.stopped_by}
        if self.beam_score is None:
            out["window_slides"] = self.window_slides
        else:
            out["beam_score"] = self.beam_score
        return out


@dataclass(frozen=True)
class SampleDone:
    index: int
    sample: TextSample


@dataclass(frozen=True)
class TextDone:
    request: TextRequest
    samples: tuple[TextSample, ...]
    notes: tuple[str, ...]
    stopped: bool  # should_stop() ended the run early


# --- the runner ----------------------------------------------------------------------------


def cut_new_text(tokenizer, prefix_ids: Sequence[int], new_ids: Sequence[int], stop_string: str | None) -> str:
    """The prefix's text + the new tokens' text, cut at `stop_string` where the new text holds it."""
    full = tokenizer.decode([*prefix_ids, *new_ids])
    if not stop_string:
        return full
    start = len(tokenizer.decode(list(prefix_ids))) if prefix_ids else 0
    pos = full.find(stop_string, start)
    return full if pos < 0 else full[:pos]


def plan(model, request: TextRequest):
    """(context ids, prompt ids, notes) of a request on a loaded model."""
    from engines.text.session import plan_prompt

    chat = request.chat(model)
    p = (plan_prompt(model, chat.render(request.turns), request.max_new_tokens, chat=True) if chat is not None
         else plan_prompt(model, request.prompt, request.max_new_tokens))
    notes = [n for n in p.notes if "exceed" not in n]
    if chat is not None:
        notes.insert(0, chat.note(len(request.turns)))
    context = [*p.ids, *request.prefix_ids]
    window = model.context_length
    if len(context) + request.max_new_tokens > window:
        what = "prompt" if not request.prefix_ids else "context"
        notes.append(f"{what} ({len(context)} tokens) + {request.max_new_tokens} new tokens exceed the {window}-token "
                     f"context: the window slides, re-reading the last {max(1, window // 2)} tokens each time it fills")
    return context, tuple(p.ids), notes


def chain_name(config: DecodingConfig, seed: int) -> str:
    from engines.decoding import build_chain

    chain = build_chain(config, seed)
    if config.strategy != "beam":
        return chain.name
    beam = f"beam search ×{config.num_beams}" + (
        f", length penalty {config.length_penalty:g}" if config.length_penalty != 1 else "")
    return " → ".join([*chain.links[:-1], beam])  # beam search applies only the penalties


def beam_sample(model, request: TextRequest, beam, cut_short: bool = False) -> TextSample:
    """A beam hypothesis (engines.text.session.BeamResult) as a sample."""
    from engines.text.session import token_text, trim_at_stop

    stop = trim_at_stop(beam.text, request.stop)[1]
    return TextSample(
        text=cut_new_text(model.tokenizer, request.prefix_ids, beam.token_ids, stop),
        token_ids=tuple(beam.token_ids), tokens=tuple(token_text(model, t) for t in beam.token_ids),
        logprobs=tuple(float(x) for x in beam.token_logprobs), seed=int(request.decoding.seed or 0),
        stopped_by=stop or ("interrupted" if cut_short else ("eos" if beam.finished else None)),
        beam_score=float(beam.score))


def token_sample(model, request: TextRequest, seed: int, events: Sequence[Any], stopped_by: str | None = None
                 ) -> TextSample:
    """Streamed token events (engines.text.session.TokenEvent) as a sample."""
    from engines.text.session import stop_ids

    ids = [e.token_id for e in events]
    stop = next((e.stop_string for e in events[-1:] if e.stop_string), None)
    ends = stop_ids(model, request.end_ids(model))
    reason = stopped_by or stop or ("eos" if ids and ids[-1] in ends else None)
    return TextSample(
        text=cut_new_text(model.tokenizer, request.prefix_ids, ids, stop), token_ids=tuple(ids),
        tokens=tuple(e.text for e in events), logprobs=tuple(float(e.logprob) for e in events), seed=seed,
        stopped_by=reason, window_slides=events[-1].window_slides if events else 0)


def run(request: TextRequest, info=None, *, model=None, should_stop: Callable[[], bool] | None = None,
        n_alternatives: int = 10) -> Iterator[Any]:
    """Run `request` (on `model`, else loaded from `info`): TextStarted, then TextToken / SampleDone
    per sample (sample i with seed + i), then TextDone; nothing more once should_stop() is true
    (TextDone then has stopped=True and the samples so far, the cut one included).

    KeyboardInterrupt (Ctrl-C, SIGTERM) passes through; beam search attaches the best hypotheses so
    far to it (`beam_results`, see `beam_generate`)."""
    from engines.text.session import beam_generate, stop_ids, stream_tokens

    if model is None:
        from engines.text.model import load_text_model

        model = load_text_model(info)
    from engines.text.session import n_masked
    from engines.text.vocab_mask import describe_mass

    request = request.resolved()
    request.check(model)
    context, prompt_ids, notes = plan(model, request)
    end_ids = request.end_ids(model)
    masked = n_masked(model)
    if masked:
        notes.append(describe_mass(masked, None) + " (never drawn or listed; log-probabilities are renormalised "
                     "over the ids it can decode)")
    seed = request.decoding.seed
    config = request.decoding
    yield TextStarted(request, chain_name(config, seed), tuple(notes), prompt_ids, int(model.context_length),
                      int(model.tokenizer.vocab_size))
    stopped = lambda: should_stop is not None and should_stop()  # noqa: E731
    samples: list[TextSample] = []
    if config.strategy == "beam":
        beams = beam_generate(model, context, config, request.max_new_tokens, should_stop=should_stop,
                              end_ids=end_ids)
        samples = [beam_sample(model, request, b) for b in beams]
        for i, s in enumerate(samples):
            yield SampleDone(i, s)
        yield TextDone(request, tuple(samples), tuple(notes), stopped())
        return
    ends = set(stop_ids(model, end_ids))
    for i in range(request.count):
        events: list[Any] = []
        for ev in stream_tokens(model, context, config, request.max_new_tokens, seed=seed + i,
                                stop_strings=request.stop, n_alternatives=n_alternatives, should_stop=should_stop,
                                end_ids=end_ids):
            events.append(ev)
            yield TextToken(i, ev, ev.stop_string is not None or ev.token_id in ends)
        cut = stopped()
        ended = bool(events) and (events[-1].stop_string is not None or events[-1].token_id in ends
                                  or len(events) == request.max_new_tokens)
        sample = token_sample(model, request, seed + i, events, "interrupted" if cut and not ended else None)
        if events or not cut:
            samples.append(sample)
            yield SampleDone(i, sample)
        if cut:
            break
    yield TextDone(request, tuple(samples), tuple(notes), stopped())
