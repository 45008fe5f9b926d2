"""Character-level text data for GPT training: vocabulary, split, batches."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch


def read_text(path: str | Path) -> str:
    return Path(path).read_text(encoding="utf-8")


def build_vocab(text: str) -> list[str]:
    """The sorted set of characters of the whole text (stored in the model card)."""
    return sorted(set(text))


class CharCodec:
    """Maps characters <-> integer ids with a fixed vocabulary list."""

    def __init__(self, vocab: list[str]):
        self.vocab = list(vocab)
        self.stoi = {ch: i for i, ch in enumerate(self.vocab)}

    def encode(self, s: str) -> list[int]:
        return [self.stoi[c] for c in s]

    def decode(self, ids) -> str:
        return "".join(self.vocab[int(i)] for i in ids)

    def __len__(self) -> int:
        return len(self.vocab)


def split_ids(ids: torch.Tensor, train_fraction: float = 0.9) -> tuple[torch.Tensor, torch.Tensor]:
    """First ``train_fraction`` of the sequence is train, the rest validation."""
    n = int(train_fraction * len(ids))
    return ids[:n], ids[n:]


@dataclass
class CharDataset:
    vocab: list[str]
    train: torch.Tensor  # (N_train,) int64
    val: torch.Tensor  # (N_val,) int64

    @classmethod
    def from_file(cls, path: str | Path, train_fraction: float = 0.9) -> "CharDataset":
        text = read_text(path)
        vocab = build_vocab(text)
        codec = CharCodec(vocab)
        ids = torch.tensor(codec.encode(text), dtype=torch.long)
        train, val = split_ids(ids, train_fraction)
        return cls(vocab=vocab, train=train, val=val)

    def split(self, name: str) -> torch.Tensor:
        return self.train if name == "train" else self.val


def get_batch(data: torch.Tensor, batch_size: int, block_size: int,
              generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Random windows: x (B, T) and the next-token targets y (B, T)."""
    ix = torch.randint(len(data) - block_size - 1, (batch_size,), generator=generator)
    offs = torch.arange(block_size)
    x = data[ix[:, None] + offs[None, :]]  # (B, T)
    y = data[ix[:, None] + offs[None, :] + 1]  # (B, T)
    return x, y


def fixed_batches(data: torch.Tensor, n_batches: int, batch_size: int, block_size: int,
                  seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """A reproducible list of batches (for evaluation with the same windows each time)."""
    g = torch.Generator().manual_seed(seed)
    return [get_batch(data, batch_size, block_size, g) for _ in range(n_batches)]
