"""Tokenizers for text models: character-level (vocab in the card) and Hugging Face
`tokenizer.json` files (byte-level BPE and friends, through the `tokenizers` library).

Both give the studio the same interface: encode/decode, the bytes behind each token (so a
multi-character or partial-UTF-8 token displays and hovers correctly), and a document-start
token for empty prompts.
"""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path
from typing import Any, Protocol, Sequence

from engines.card_schema import printable
from engines.errors import InputError, ModelLoadError
from engines.registry import resolve_in_folder


# A str can hold code points no encoding can write: lone surrogates, and the bytes the shell
# passed that were not UTF-8 (Python keeps each as U+DC80..U+DCFF, "surrogateescape").
_SURROGATE = re.compile("[\ud800-\udfff]")


def check_encodable(text: str, what: str = "the text") -> None:
    """InputError naming the first position of `text` that is not a character (see _SURROGATE).
    Every tokenizer calls it first, so each refuses such text the same way, in one line."""
    m = _SURROGATE.search(text)
    if m is None:
        return
    code, pos = ord(m.group()), m.start() + 1
    if 0xDC80 <= code <= 0xDCFF:
        raise InputError(f"{what} is not valid UTF-8: byte 0x{code - 0xDC00:02x} at character {pos} is not part of "
                         "a character (save or pass the text as UTF-8)")
    raise InputError(f"{what} holds a lone surrogate U+{code:04X} at character {pos}, which is not a character: "
                     "remove it")


class TextTokenizer(Protocol):
    vocab_size: int
    start_id: int  # fed when the prompt is empty
    start_text: str  # how the UI names it (e.g. "a newline", "<|endoftext|>")
    eos_id: int | None  # generation stops here (None: never)

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: Sequence[int]) -> str: ...

    def token_bytes(self, token_id: int) -> bytes: ...


class CharTokenizer:
    """One token per character; the vocabulary is the sorted character set of the training text."""

    def __init__(self, vocab: Sequence[str]):
        if not vocab or any(len(c) != 1 for c in vocab):
            raise ModelLoadError("char tokenizer: the card's vocab must be a list of single characters")
        self.vocab = list(vocab)
        self.index = {c: i for i, c in enumerate(self.vocab)}
        self.vocab_size = len(self.vocab)
        self.start_id = self.index.get("\n", 0)
        self.start_text = "a newline" if "\n" in self.index else repr(self.vocab[0])
        self.eos_id = None

    def encode(self, text: str) -> list[int]:
        check_encodable(text)
        unknown = sorted({c for c in text if c not in self.index})
        if unknown:
            shown = ", ".join(repr(c) for c in unknown[:10]) + (" ..." if len(unknown) > 10 else "")
            raise InputError(f"the model's alphabet has no character(s) {shown}: remove or replace them")
        return [self.index[c] for c in text]

    def decode(self, ids: Sequence[int]) -> str:
        return "".join(self.vocab[i] for i in ids)

    def token_bytes(self, token_id: int) -> bytes:
        return self.vocab[token_id].encode("utf-8")


@functools.lru_cache(maxsize=1)
def _byte_decoder() -> dict[str, int]:
    """GPT-2's byte <-> printable-unicode map, inverted (ByteLevel tokens are written in it)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs)}


class HFTokenizer:
    """A `tokenizer.json` read by the Hugging Face `tokenizers` library."""

    def __init__(self, path: Path, config: dict[str, Any] | None = None):
        from tokenizers import Tokenizer

        try:
            self.tk = Tokenizer.from_file(str(path))
        except Exception as exc:
            # The library's message may quote the file ("unknown variant `...`"): keep the position only.
            where = re.search(r"line \d+ column \d+", str(exc))
            raise ModelLoadError(printable(f"{path}: cannot be read as a tokenizer.json"
                                           f"{' (error at ' + where.group(0) + ')' if where else ''}")) from None
        spec = json.loads(Path(path).read_text(encoding="utf-8"))
        self.byte_level = "ByteLevel" in json.dumps(spec.get("decoder") or {}) or "ByteLevel" in json.dumps(
            spec.get("pre_tokenizer") or {}
        )
        self.vocab_size = self.tk.get_vocab_size()
        config = config or {}
        specials = [t["content"] for t in spec.get("added_tokens", []) if t.get("special")]
        start_tok = config.get("start_token") or ("<|endoftext|>" if "<|endoftext|>" in specials else (specials[0] if specials else None))
        start = self.tk.token_to_id(start_tok) if start_tok else None
        if start is None:
            start_tok, start = "a newline", self.encode("\n")[0]
        self.start_id, self.start_text = int(start), start_tok
        eos_tok = config.get("eos_token", start_tok if start_tok in specials else None)
        self.eos_id = self.tk.token_to_id(eos_tok) if eos_tok else None

    def encode(self, text: str) -> list[int]:
        check_encodable(text)  # the tokenizers library raises a bare TypeError on a surrogate
        ids = self.tk.encode(text, add_special_tokens=False).ids
        if not self.byte_level:
            unk = self.tk.token_to_id("[UNK]") if self.tk.token_to_id("[UNK]") is not None else self.tk.token_to_id("<unk>")
            if unk is not None and unk in ids:
                raise InputError("the tokenizer cannot encode part of the text (it became an unknown token)")
        return ids

    def decode(self, ids: Sequence[int]) -> str:
        if self.byte_level:
            return b"".join(self.token_bytes(i) for i in ids).decode("utf-8", errors="replace")
        return self.tk.decode(list(ids), skip_special_tokens=False)

    def token_bytes(self, token_id: int) -> bytes:
        piece = self.tk.id_to_token(int(token_id))
        if piece is None:
            raise InputError(f"token id {token_id} is outside the vocabulary ({self.vocab_size})")
        if self.byte_level and not self._is_special(piece):
            table = _byte_decoder()
            return bytes(table[ch] for ch in piece if ch in table)
        return piece.encode("utf-8")

    @functools.lru_cache(maxsize=None)
    def _is_special(self, piece: str) -> bool:
        return piece.startswith("<|") and piece.endswith("|>")


def load_tokenizer(folder: Path, card: dict[str, Any]) -> TextTokenizer:
    spec = card.get("tokenizer") or {}
    kind = spec.get("type")
    if kind == "char":
        return CharTokenizer(spec.get("vocab", []))
    # The file a card names is opened only inside the model folder (symlinks followed).
    if kind in ("hf", "bpe"):
        return HFTokenizer(resolve_in_folder(folder, spec.get("file", "tokenizer.json"), "tokenizer.file"), spec)
    if (folder / "tokenizer.json").is_file():
        return HFTokenizer(resolve_in_folder(folder, "tokenizer.json", "tokenizer file"), spec)
    raise ModelLoadError(f"{folder}: the card names no tokenizer (tokenizer.type 'char' or 'hf')")
