"""Byte-level BPE text data for GPT training: book cleaning, tokenizer training, split, ids.

A *document* is one text file (for the shipped model: one Project Gutenberg book). Each is

1. cleaned (:func:`clean_book`): UTF-8 BOM removed, CRLF/CR turned into LF, and - when the
   file has Project Gutenberg markers - only the text between the ``*** START OF`` and
   ``*** END OF`` lines kept (the licence header and footer go);
2. split (:func:`split_document`): the first ~90% of its characters (cut at the paragraph
   break nearest that point) train, the rest validation, so the validation set covers every
   document;
3. tokenised with a byte-level BPE (:func:`train_bpe`) that is trained on the *training*
   parts only (so validation text never shapes the vocabulary).

The id streams put the ``<|endoftext|>`` id before every document part::

    train = [EOT] book1_train [EOT] book2_train ...     val = [EOT] book1_val [EOT] book2_val ...

so the model learns that a document starts after ``<|endoftext|>`` (the runtime feeds that
token for an empty prompt) and that one may end with it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import torch

from engines.text.corpus import (  # noqa: F401  (re-exported for the trainer)
    EOT, BOM, Document, book_title, clean_book, document_files, gutenberg_text, normalise_newlines, read_documents, split_document,
)


def train_bpe(texts: Iterable[str], vocab_size: int, out_path: str | Path | None = None):
    """Train a GPT-2 style byte-level BPE and (optionally) save it as ``tokenizer.json``.

    The 256 byte symbols are always in the vocabulary (any text encodes), plus the one
    special token ``<|endoftext|>`` (id 0) and ``vocab_size - 257`` merges.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    if vocab_size < 257:
        raise ValueError(f"vocab_size {vocab_size} is too small: the byte alphabet alone needs 257 with {EOT}")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOT],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  min_frequency=2, show_progress=False)
    tok.train_from_iterator(list(texts), trainer=trainer)
    if out_path is not None:
        from engines.atomic import atomic_path

        Path(out_path).parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(out_path) as tmp:  # an interrupted run leaves the old tokenizer.json or none
            tok.save(str(tmp))
    return tok


def load_bpe(path: str | Path):
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(path))


def encode(tok, text: str) -> list[int]:
    return tok.encode(text, add_special_tokens=False).ids


@dataclass
class BPEDataset:
    train: torch.Tensor  # (N_train,) int64
    val: torch.Tensor  # (N_val,) int64
    vocab_size: int
    tokenizer_path: Path
    documents: list[dict] = field(default_factory=list)
    train_chars: int = 0
    val_chars: int = 0

    @property
    def val_chars_per_token(self) -> float:
        return self.val_chars / max(1, len(self.val))

    @property
    def train_chars_per_token(self) -> float:
        return self.train_chars / max(1, len(self.train))

    @classmethod
    def build(cls, data_path: str | Path, tokenizer_path: str | Path, vocab_size: int,
              *, train_tokenizer: bool = True, train_fraction: float = 0.9) -> "BPEDataset":
        """Read and split the documents, train (or load) the tokenizer, encode both splits."""
        docs = read_documents(data_path, train_fraction)
        tokenizer_path = Path(tokenizer_path)
        if train_tokenizer or not tokenizer_path.is_file():
            tok = train_bpe([d.train_text for d in docs], vocab_size, tokenizer_path)
        else:
            tok = load_bpe(tokenizer_path)
        eot = tok.token_to_id(EOT)
        if eot is None:
            raise ValueError(f"{tokenizer_path}: the tokenizer has no {EOT} token")
        train_ids: list[int] = []
        val_ids: list[int] = []
        infos = []
        for d in docs:
            tr, va = encode(tok, d.train_text), encode(tok, d.val_text)
            train_ids += [eot] + tr
            val_ids += [eot] + va
            infos.append({**d.info(), "train_tokens": len(tr), "val_tokens": len(va)})
        return cls(train=torch.tensor(train_ids, dtype=torch.long), val=torch.tensor(val_ids, dtype=torch.long),
                   vocab_size=tok.get_vocab_size(), tokenizer_path=tokenizer_path, documents=infos,
                   train_chars=sum(len(d.train_text) for d in docs),
                   val_chars=sum(len(d.val_text) for d in docs))


def chars_per_token(tok, texts: Sequence[str]) -> float:
    n_chars = sum(len(t) for t in texts)
    n_tok = sum(len(encode(tok, t)) for t in texts)
    return n_chars / max(1, n_tok)


if __name__ == "__main__":  # quick look: python -m engines.training.bpe_data FOLDER [VOCAB ...]
    import sys
    import tempfile

    os.environ.setdefault("RAYON_NUM_THREADS", "1")
    folder = sys.argv[1]
    docs = read_documents(folder)
    for d in docs:
        print(d.info())
    for v in [int(a) for a in sys.argv[2:]] or [2048]:
        with tempfile.TemporaryDirectory() as tmp:
            tk = train_bpe([d.train_text for d in docs], v, Path(tmp) / "tokenizer.json")
            print(f"vocab {v}: train {chars_per_token(tk, [d.train_text for d in docs]):.3f} chars/token, "
                  f"val {chars_per_token(tk, [d.val_text for d in docs]):.3f} chars/token")
