"""Chat: turns rendered with the model's own chat template, and the tokens that end a turn.

A model folder whose `tokenizer_config.json` has a `chat_template` (or that holds a
`chat_template.jinja`, as newer transformers versions save it) can be chatted with: the turns
({role, content}; roles system / user / assistant) are rendered by that Jinja template exactly as
transformers' `apply_chat_template` renders them (same sandboxed environment and helpers:
`ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)` with loop controls and the
`{% generation %}` tag, `raise_exception`, `strftime_now`, a `tojson` that keeps non-ASCII
characters; the special tokens passed by name: `bos_token`, `eos_token` ...), with
`add_generation_prompt=True`. The rendered text is the prompt: its tokens (special tokens such as
`<|im_start|>` encode as themselves) are the context, and the assistant's reply is generated,
inspectable, branchable and scorable like any other run. It ends at an end-of-turn token: the
tokenizer's eos token, every id of `eos_token_id` in generation_config.json / config.json, and
the template's own end marker (`<|im_end|>`, `<|eot_id|>`, `<|end|>` ...) where it is a token.

The template is untrusted code from a downloaded folder: it runs in Jinja's immutable sandbox
(no attribute access to internals, no mutation of passed objects); a template that tries to
leave the sandbox, or any other template error, is refused with one line.
"""

from __future__ import annotations

import json
import os
import weakref
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Mapping, Sequence

from engines.card_schema import CardError, printable
from engines.errors import InputError, ModelLoadError

ROLES = ("system", "user", "assistant")
MAX_TURNS = 512
MAX_TEMPLATE_BYTES = 1 << 20  # real templates are a few KB (the largest known ~20 KB)
MAX_RENDERED_CHARS = 4_000_000
MAX_CHAT_FILE_BYTES = 8 * 1024 * 1024
# end-of-turn markers of the common families; used when the template names one and it is a token
END_MARKERS = ("<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>", "<|eom_id|>", "</s>", "<|endoftext|>",
               "<|end_of_text|>")
SPECIAL_NAMES = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")


@dataclass(frozen=True)
class ChatTurn:
    role: str
    content: str

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise InputError(f"chat turn role = {self.role!r} is invalid: choose one of {', '.join(ROLES)}")
        if not isinstance(self.content, str):
            raise InputError(f"chat turn content is invalid: expected text, got {type(self.content).__name__}")

    def to_json(self) -> dict[str, str]:
        return {"role": self.role, "content": self.content}

    @classmethod
    def from_json(cls, data: Any) -> "ChatTurn":
        if not isinstance(data, Mapping) or set(data) != {"role", "content"}:
            raise InputError("chat turn is invalid: each turn is an object with exactly \"role\" and \"content\"")
        return cls(data["role"], data["content"])


def turns_from_json(data: Any) -> tuple[ChatTurn, ...]:
    if not isinstance(data, list):
        raise InputError("chat turns are invalid: expected a list of {\"role\", \"content\"} objects")
    if len(data) > MAX_TURNS:
        raise InputError(f"chat has {len(data):,} turns; at most {MAX_TURNS} are read")
    return tuple(t if isinstance(t, ChatTurn) else ChatTurn.from_json(t) for t in data)


def read_turns_file(path: str | os.PathLike) -> tuple[ChatTurn, ...]:
    """Turns from a JSON file: a list of turns, or an object with "turns" or "messages" (`--chat FILE`)."""
    from engines.limits import check_regular_file

    p = check_regular_file(path, "chat file", max_bytes=MAX_CHAT_FILE_BYTES)
    try:
        data = json.loads(p.read_bytes())
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror or exc}") from None
    except (ValueError, RecursionError):
        raise InputError(f"{path} is not valid JSON") from None
    if isinstance(data, dict):
        data = data.get("turns", data.get("messages"))
    return turns_from_json(data)


# --- the sandboxed environment (as transformers' _compile_jinja_template) ---------------------


def _compile(source: str):
    import jinja2
    from jinja2.ext import Extension
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class GenerationTag(Extension):
        """`{% generation %}...{% endgeneration %}` renders its body (transformers tracks its span)."""

        tags = {"generation"}

        def parse(self, parser):
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(["name:endgeneration"], drop_needle=True)
            return jinja2.nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(lineno)

        def _body(self, caller):
            return caller()

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    def strftime_now(format):
        return datetime.now().strftime(format)

    class Sandbox(ImmutableSandboxedEnvironment):
        """transformers' sandbox, and one more guard: `'x' * 10**10` or `9 ** 10**9` would take all
        memory or time before any output is checked; such operations are refused."""

        intercepted_binops = frozenset(["*", "**"])

        def call_binop(self, context, operator, left, right):
            from jinja2.sandbox import SecurityError

            if operator == "*":
                for seq, n in ((left, right), (right, left)):
                    if isinstance(seq, (str, list, tuple)) and isinstance(n, int) and len(seq) * n > MAX_RENDERED_CHARS:
                        raise SecurityError("a repetition of over 4,000,000 items is unsafe")
            if operator == "**" and isinstance(right, (int, float)) and abs(right) > 1000:
                raise SecurityError("a power over 1000 is unsafe")
            return super().call_binop(context, operator, left, right)

    env = Sandbox(trim_blocks=True, lstrip_blocks=True, extensions=[GenerationTag, jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    return env.from_string(source)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return printable(text[:300] + ("…" if len(text) > 300 else ""))


def _token_str(value: Any) -> str | None:
    """A special token as tokenizer_config.json writes it: a string or {"content": ...}."""
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping) and isinstance(value.get("content"), str):
        return value["content"]
    return None


class ChatTemplate:
    """A model's chat template, compiled in the sandbox, with the special tokens it is rendered with."""

    def __init__(self, source: str, specials: Mapping[str, Any] | None = None, name: str = "chat template"):
        import jinja2

        if not isinstance(source, str) or not source.strip():
            raise ModelLoadError(f"{name} is empty")
        self.source = source
        self.name = name
        self.specials = dict(specials or {})
        try:
            self.template = _compile(source)
        except jinja2.TemplateError as exc:
            raise ModelLoadError(f"{name} cannot be compiled: {_one_line(exc)}") from None

    def render(self, turns: Sequence[ChatTurn], add_generation_prompt: bool = True) -> str:
        """The prompt text of `turns` (InputError in one line when the template refuses them or errs)."""
        import jinja2
        from jinja2.sandbox import SecurityError

        messages = [t.to_json() for t in turns]
        try:
            text = self.template.render(messages=messages, tools=None, documents=None,
                                        add_generation_prompt=add_generation_prompt, **self.specials)
        except SecurityError as exc:
            raise InputError(f"the {self.name} did something unsafe and was refused by its sandbox "
                             f"({_one_line(exc)})") from None
        except jinja2.TemplateError as exc:
            raise InputError(f"the {self.name} refused these turns: {_one_line(exc)}") from None
        except RecursionError:
            raise InputError(f"the {self.name} recursed too deeply") from None
        except Exception as exc:  # noqa: BLE001 - a template's own bug (a TypeError inside it): one line
            raise InputError(f"the {self.name} failed ({type(exc).__name__}: {_one_line(exc)})") from None
        if len(text) > MAX_RENDERED_CHARS:
            raise InputError(f"the {self.name} rendered {len(text):,} characters; at most {MAX_RENDERED_CHARS:,}")
        return text


@dataclass
class Chat:
    template: ChatTemplate
    end_ids: tuple[int, ...]  # tokens that end the assistant's turn
    end_tokens: tuple[str, ...]  # their texts, for the notes

    def render(self, turns: Sequence[ChatTurn]) -> str:
        return self.template.render(turns, add_generation_prompt=True)

    def note(self, n_turns: int) -> str:
        ends = ", ".join(self.end_tokens) if self.end_tokens else "none known: the run ends at max new tokens"
        return (f"chat: {n_turns} turn{'s' if n_turns != 1 else ''} rendered with the model's chat template; "
                f"the reply ends at an end-of-turn token ({ends})")


def _read_text_in_folder(folder: Path, name: str) -> str:
    from engines.registry import read_bytes_in_folder

    try:
        data = read_bytes_in_folder(folder, name, name, MAX_TEMPLATE_BYTES)
    except CardError as exc:
        raise ModelLoadError(printable(f"{folder / name}: {exc}")) from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ModelLoadError(f"{folder / name} is not UTF-8 text") from None


def _json_object(folder: Path, name: str) -> dict[str, Any]:
    from engines.registry import read_json_in_folder

    if not (folder / name).is_file():
        return {}
    try:
        data = read_json_in_folder(folder, name, name)
    except CardError as exc:
        raise ModelLoadError(printable(f"{folder / name}: {exc}")) from None
    return data if isinstance(data, dict) else {}


def template_source(folder: Path) -> tuple[str, str] | None:
    """(source, where it came from) of the folder's chat template, or None when it has none."""
    folder = Path(folder)
    if (folder / "chat_template.jinja").is_file():
        return _read_text_in_folder(folder, "chat_template.jinja"), "chat_template.jinja"
    cfg = _json_object(folder, "tokenizer_config.json")
    tpl = cfg.get("chat_template")
    if isinstance(tpl, list):  # [{"name": "default", "template": ...}, {"name": "tool_use", ...}]
        named = {t.get("name"): t.get("template") for t in tpl if isinstance(t, Mapping)}
        tpl = named.get("default")
    if isinstance(tpl, str) and tpl.strip():
        if len(tpl.encode("utf-8")) > MAX_TEMPLATE_BYTES:
            raise ModelLoadError(f"{folder / 'tokenizer_config.json'}: the chat template is over {MAX_TEMPLATE_BYTES:,} bytes")
        return tpl, "tokenizer_config.json"
    return None


def has_chat_template(folder: Path) -> bool:
    """Cheap check (no compile) for the studio: does the folder offer a chat template?"""
    try:
        return template_source(Path(folder)) is not None
    except (ModelLoadError, OSError):
        return False


def _eos_ids(value: Any) -> list[int]:
    if isinstance(value, bool):
        return []
    if isinstance(value, int):
        return [value]
    if isinstance(value, list):
        return [v for v in value if isinstance(v, int) and not isinstance(v, bool)]
    return []


def load_chat(folder: Path, tokenizer) -> Chat | None:
    """The folder's chat (template + end-of-turn ids for `tokenizer`), or None without a template."""
    folder = Path(folder)
    found = template_source(folder)
    if found is None:
        return None
    source, where = found
    cfg = _json_object(folder, "tokenizer_config.json")
    specials: dict[str, Any] = {}
    for name in SPECIAL_NAMES:
        s = _token_str(cfg.get(name))
        if s is not None:
            specials[name] = s
    extra = cfg.get("additional_special_tokens")
    if isinstance(extra, list):
        specials["additional_special_tokens"] = [s for s in (_token_str(x) for x in extra) if s is not None]
    template = ChatTemplate(source, specials, name=f"chat template of {folder.name} ({where})")

    tk = getattr(tokenizer, "tk", None)
    to_id = (lambda s: tk.token_to_id(s)) if tk is not None else (lambda s: None)  # noqa: E731
    ids: list[int] = []
    names: list[str] = []

    def add(i: int | None, text: str | None = None) -> None:
        if i is None or i < 0 or i in ids:
            return
        ids.append(int(i))
        piece = text or (tk.id_to_token(int(i)) if tk is not None else None)
        names.append(piece if piece is not None else f"id {i}")

    eos = specials.get("eos_token")
    if eos is not None:
        add(to_id(eos), eos)
    if getattr(tokenizer, "eos_id", None) is not None:
        add(int(tokenizer.eos_id))
    for name in ("generation_config.json", "config.json"):
        for i in _eos_ids(_json_object(folder, name).get("eos_token_id")):
            add(i)
    for marker in END_MARKERS:
        if marker in source:
            add(to_id(marker), marker)
    return Chat(template, tuple(ids), tuple(names))


_CACHE: "weakref.WeakKeyDictionary[Any, dict[str, Chat | None]]" = weakref.WeakKeyDictionary()


def chat_of(model) -> Chat | None:
    """The loaded `TextModel`'s chat (cached per tokenizer), or None when its folder has no template."""
    per = _CACHE.setdefault(model.tokenizer, {})
    key = str(model.info.path)
    if key not in per:
        per[key] = load_chat(model.info.path, model.tokenizer)
    return per[key]
