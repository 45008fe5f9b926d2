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
    """A `tokenizer.json` read by the Hugging Face `tokenizers` library: byte-level BPE (GPT-2,
    GPT-NeoX, Qwen2), SentencePiece-style BPE with byte fallback (Llama, Mistral), Unigram.

    `config` (the card's tokenizer section) may name the start/eos tokens (`start_token`,
    `eos_token`, or ids `bos_id`, `eos_id`) and `add_bos_token` (tokenizer_config.json): a prompt
    is encoded as transformers' `tokenizer(prompt)` does, with the file's post-processor (which
    adds Llama's <s>), and BOS is then added or dropped as `add_bos_token` says."""

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
        decoder = json.dumps(spec.get("decoder") or {}, ensure_ascii=False)
        self.byte_level = "ByteLevel" in decoder or "ByteLevel" in json.dumps(spec.get("pre_tokenizer") or {})
        model = spec.get("model") if isinstance(spec.get("model"), dict) else {}
        # SentencePiece style: "▁" stands for a space; <0xNN> pieces are raw bytes (byte fallback).
        self.metaspace = "▁" in decoder or "Metaspace" in decoder
        self.byte_fallback = bool(model.get("byte_fallback")) or "ByteFallback" in decoder
        self.vocab_size = self.tk.get_vocab_size()
        config = config or {}
        added = [t for t in spec.get("added_tokens", []) if isinstance(t, dict) and isinstance(t.get("content"), str)]
        specials = [t["content"] for t in added if t.get("special")]
        self.special_ids = frozenset(i for i in (self.tk.token_to_id(t) for t in specials) if i is not None)

        def named(token: Any, ident: Any) -> int | None:
            if isinstance(token, str) and self.tk.token_to_id(token) is not None:
                return int(self.tk.token_to_id(token))
            if isinstance(ident, int) and not isinstance(ident, bool) and 0 <= ident < self.vocab_size:
                return ident
            return None

        start = named(config.get("start_token"), config.get("bos_id"))
        if start is None:
            start = named("<|endoftext|>" if "<|endoftext|>" in specials else (specials[0] if specials else None), None)
        if start is None:
            self.start_id, self.start_text = int(self.encode("\n")[0]), "a newline"
        else:
            self.start_id, self.start_text = start, self.tk.id_to_token(start)
        self.bos_id = named(config.get("start_token"), config.get("bos_id"))
        eos = named(config.get("eos_token"), config.get("eos_id"))
        if eos is None and "eos_token" not in config and "eos_id" not in config and self.start_id in self.special_ids:
            eos = self.start_id  # GPT-2: <|endoftext|> both starts and ends a document
        self.eos_id = eos
        add_bos = config.get("add_bos_token")
        self.add_bos = add_bos if isinstance(add_bos, bool) else None

    def encode(self, text: str) -> list[int]:
        check_encodable(text)  # the tokenizers library raises a bare TypeError on a surrogate
        return self._checked(self.tk.encode(text, add_special_tokens=False).ids)

    def encode_prompt(self, text: str) -> list[int]:
        """A prompt as transformers' `tokenizer(text)` gives it: special tokens the file's
        post-processor adds (Llama's <s>), then BOS as tokenizer_config's add_bos_token says."""
        check_encodable(text)
        ids = self._checked(self.tk.encode(text, add_special_tokens=True).ids)
        if self.bos_id is not None:
            if self.add_bos and (not ids or ids[0] != self.bos_id):
                ids = [self.bos_id, *ids]
            elif self.add_bos is False and ids and ids[0] == self.bos_id and not text.startswith(
                    self.tk.id_to_token(self.bos_id) or "\0"):
                ids = ids[1:]
        return ids

    def _checked(self, ids: list[int]) -> list[int]:
        if not self.byte_level:
            unk = self.tk.token_to_id("[UNK]") if self.tk.token_to_id("[UNK]") is not None else self.tk.token_to_id("<unk>")
            if unk is not None and unk in ids:
                raise InputError("the tokenizer cannot encode part of the text (it became an unknown token)")
        return ids

    def decode(self, ids: Sequence[int]) -> str:
        """The text the tokens stand for, as the views show them (each token's own bytes, joined).
        For SentencePiece-style tokenizers this keeps the space before a continuation's first word
        (the library's decoder strips it, as at the start of a document): "ROMEO:" + " What"."""
        if self.byte_level or self.metaspace or self.byte_fallback:
            return b"".join(self.token_bytes(i) for i in ids).decode("utf-8", errors="replace")
        return self.tk.decode(list(ids), skip_special_tokens=False)

    def token_bytes(self, token_id: int) -> bytes:
        piece = self.tk.id_to_token(int(token_id))
        if piece is None:
            raise InputError(f"token id {token_id} is outside the vocabulary ({self.vocab_size})")
        if self._is_special(int(token_id), piece):
            return piece.encode("utf-8")
        if self.byte_level:
            table = _byte_decoder()
            return bytes(table[ch] for ch in piece if ch in table)
        if self.byte_fallback and len(piece) == 6 and piece.startswith("<0x") and piece.endswith(">"):
            try:
                return bytes([int(piece[3:5], 16)])
            except ValueError:
                pass
        if self.metaspace:
            piece = piece.replace("\u2581", " ")
        return piece.encode("utf-8")

    def _is_special(self, token_id: int, piece: str) -> bool:
        return token_id in self.special_ids or (piece.startswith("<|") and piece.endswith("|>"))


def encode_prompt(tokenizer: TextTokenizer, text: str) -> list[int]:
    """The ids a prompt starts generation from: the tokenizer's prompt encoding (BOS as its config
    says) where it has one, else its plain encoding."""
    enc = getattr(tokenizer, "encode_prompt", None)
    return enc(text) if enc is not None else tokenizer.encode(text)


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
