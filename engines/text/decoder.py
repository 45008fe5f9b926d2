"""A GPT decoder exported with a KV cache (Optimum "text-generation-with-past" naming), run
with ONNX Runtime.

Three ways to drive it, all behind the same `StepModel` interface (prefill/advance):
- `KVCacheStepModel`: the prompt in one pass, then one token per step; the cache lives in a
  `StatefulRunner` (on the device under CUDA). When the context window fills, the window
  slides: the last `keep` tokens are re-prefilled and `slides` counts it, so the UI can say so.
- `RecomputeStepModel`: no cache, the whole (windowed) prefix every step. Benchmarks only.
- `KVBeamScorer`: the beam-search step (`parents`, `tokens`) reorders the cache rows.

Scoring (`score_tokens`) teacher-forces through the same KVCacheStepModel, slide points
included, so the log-probabilities reported while generating and those from scoring the same
text agree.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from engines.decoding.samplers import log_softmax
from engines.errors import InputError
from engines.runtime import ModelSession, StatefulRunner, open_session


@dataclass(frozen=True)
class DecoderShape:
    n_layer: int
    n_head: int
    head_dim: int
    vocab_size: int
    context_length: int  # positions the model was trained on (learned position table)


def io_names(n_layer: int) -> tuple[list[str], list[str]]:
    inputs = ["input_ids", "attention_mask", "position_ids"]
    outputs = ["logits"]
    for i in range(n_layer):
        inputs += [f"past_key_values.{i}.key", f"past_key_values.{i}.value"]
        outputs += [f"present.{i}.key", f"present.{i}.value"]
    return inputs, outputs


class GPTDecoder:
    """The ONNX graph plus its shape; stateless (state lives in the step models)."""

    def __init__(self, path: Path, shape: DecoderShape, *, threads: int | None = 1):
        self.shape = shape
        inputs, outputs = io_names(shape.n_layer)
        self.session: ModelSession = open_session(path, intra_op_threads=threads)
        # Optimum exports of some families have no position_ids input: tolerate that one gap.
        self.has_position_ids = "position_ids" in self.session.input_names
        expected_in = [n for n in inputs if n != "position_ids" or self.has_position_ids]
        from engines.runtime import _check_io  # one checker for every model kind

        _check_io(Path(path), self.session.input_names, expected_in, "input(s)")
        _check_io(Path(path), self.session.output_names, outputs, "output(s)")
        self.state_map = {
            f"past_key_values.{i}.{kv}": f"present.{i}.{kv}" for i in range(shape.n_layer) for kv in ("key", "value")
        }

    def empty_past(self, batch: int) -> dict[str, np.ndarray]:
        s = self.shape
        return {name: np.zeros((batch, s.n_head, 0, s.head_dim), np.float32) for name in self.state_map}

    def feeds(self, ids: np.ndarray, mask: np.ndarray, positions: np.ndarray) -> dict[str, np.ndarray]:
        f = {"input_ids": ids.astype(np.int64), "attention_mask": mask.astype(np.int64)}
        if self.has_position_ids:
            f["position_ids"] = positions.astype(np.int64)
        return f

    def forward(self, ids: np.ndarray) -> np.ndarray:
        """Full forward with an empty cache: (B, T) ids -> (B, T, V) logits."""
        b, t = ids.shape
        feeds = self.feeds(ids, np.ones((b, t), np.int64), np.tile(np.arange(t), (b, 1)))
        feeds.update(self.empty_past(b))
        return self.session.run(feeds, ["logits"])[0]


def _left_pad(contexts: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
    """Rows of different lengths -> (ids (B, T), mask (B, T)) padded on the left."""
    t = max(len(c) for c in contexts)
    ids = np.zeros((len(contexts), t), np.int64)
    mask = np.zeros((len(contexts), t), np.int64)
    for r, c in enumerate(contexts):
        if len(c):
            ids[r, t - len(c):] = c
            mask[r, t - len(c):] = 1
    return ids, mask


class KVCacheStepModel:
    """Prefill once, then one token per step with the cache; slides the window when full."""

    def __init__(
        self, decoder: GPTDecoder, keep: int | None = None, on_slide: Callable[[int], None] | None = None,
        transport: str | None = None,
    ):
        self.decoder = decoder
        self.window = decoder.shape.context_length
        self.keep = keep if keep is not None else max(1, self.window // 2)
        self.on_slide = on_slide
        self.runner = StatefulRunner(decoder.session, decoder.state_map, fetch=["logits"], transport=transport)
        self.slides = 0  # how many times the window slid (shown to the user)

    # -- StepModel --------------------------------------------------------------------
    def prefill(self, contexts: Sequence[Sequence[int]]) -> np.ndarray:
        if any(len(c) == 0 for c in contexts):
            raise InputError("every row needs at least one context token (use the tokenizer's start token)")
        self.history = [list(c) for c in contexts]  # full token history per row
        windowed = [c[-self.window:] for c in self.history]
        return self._prefill_rows(windowed)[:, -1]

    def advance(self, values: np.ndarray) -> np.ndarray:
        return self.extend(np.asarray(values).reshape(-1, 1))[:, -1]

    # -- multi-token feeding (scoring) --------------------------------------------------
    def extend(self, tokens: np.ndarray) -> np.ndarray:
        """Feed (B, N) tokens; return (B, N, V) logits, one per fed token, sliding as needed."""
        out = []
        start = 0
        n = tokens.shape[1]
        while start < n:
            if self.length >= self.window:  # full: slide before feeding more
                self._slide()
            take = min(n - start, self.window - self.length)
            chunk = tokens[:, start:start + take]
            out.append(self._feed(chunk))
            for row, toks in zip(self.history, chunk):
                row.extend(int(t) for t in toks)
            start += take
        return np.concatenate(out, axis=1)

    # -- internals -----------------------------------------------------------------------
    def _prefill_rows(self, rows: Sequence[Sequence[int]]) -> np.ndarray:
        ids, mask = _left_pad(rows)
        self.runner.set_state(self.decoder.empty_past(len(rows)))
        self.mask = np.zeros((len(rows), 0), np.int64)
        self.next_pos = np.zeros(len(rows), np.int64)
        return self._feed(ids, mask)

    def _feed(self, ids: np.ndarray, new_mask: np.ndarray | None = None) -> np.ndarray:
        b, t = ids.shape
        if new_mask is None:  # real tokens only: positions simply continue
            new_mask = np.ones((b, t), np.int64)
            positions = self.next_pos[:, None] + np.arange(t)
        else:  # positions count only real (unmasked) tokens, so left padding does not shift them
            positions = np.maximum(self.next_pos[:, None] + np.cumsum(new_mask, axis=1) - new_mask, 0)
        self.mask = np.concatenate([self.mask, new_mask], axis=1)
        (logits,) = self.runner.step(self.decoder.feeds(ids, self.mask, positions))
        self.next_pos = self.next_pos + new_mask.sum(axis=1)
        return logits

    @property
    def length(self) -> int:
        """Cache length (positions used, padding included)."""
        return self.mask.shape[1]

    def _slide(self) -> None:
        self.slides += 1
        if self.on_slide:
            self.on_slide(self.slides)
        self._prefill_rows([row[-self.keep:] for row in self.history])

    def reorder(self, parents: np.ndarray) -> None:
        """Beam search: row b now continues old row parents[b]."""
        self.runner.reorder(parents)
        self.mask = self.mask[parents]
        self.next_pos = self.next_pos[parents]
        self.history = [list(self.history[p]) for p in parents]


class RecomputeStepModel:
    """No cache: every step runs the whole window again (the baseline to beat).

    The window follows the same slide rule as KVCacheStepModel, so both see the same
    context and produce the same greedy tokens.
    """

    def __init__(self, decoder: GPTDecoder, keep: int | None = None):
        self.decoder = decoder
        self.w = decoder.shape.context_length
        self.keep = keep if keep is not None else max(1, self.w // 2)

    def prefill(self, contexts):
        self.windows = [list(c)[-self.w:] for c in contexts]
        return self._run()

    def advance(self, values):
        for i, v in enumerate(values):
            if len(self.windows[i]) >= self.w:
                self.windows[i] = self.windows[i][-self.keep:]
            self.windows[i].append(int(v))
        return self._run()

    def _run(self):
        ids, mask = _left_pad(self.windows)
        if mask.all():
            return self.decoder.forward(ids)[:, -1]
        return np.stack([self.decoder.forward(np.array([w], np.int64))[0, -1] for w in self.windows])


class KVBeamScorer:
    """BeamScorer over the KV cache: `step` reorders cache rows by `parents` then advances."""

    def __init__(self, decoder: GPTDecoder):
        self.model = KVCacheStepModel(decoder)

    def start(self, prompt: Sequence[int]) -> np.ndarray:
        return log_softmax(self.model.prefill([list(prompt)]))[0]

    def step(self, parents: np.ndarray, tokens: np.ndarray) -> np.ndarray:
        self.model.reorder(np.asarray(parents))
        return log_softmax(self.model.advance(np.asarray(tokens)))


def score_tokens(decoder: GPTDecoder, context: Sequence[int], tokens: Sequence[int], keep: int | None = None) -> np.ndarray:
    """log p(tokens[i] | context + tokens[:i]) for each i, through the generation path."""
    model = KVCacheStepModel(decoder, keep=keep)
    first = log_softmax(model.prefill([list(context)]))[0]
    if not tokens:
        return np.zeros(0)
    toks = np.asarray(tokens, np.int64)
    rest = model.extend(toks[None, :-1])[0] if len(toks) > 1 else np.zeros((0, first.shape[0]))
    lp = np.concatenate([first[None], log_softmax(rest)], axis=0) if len(rest) else first[None]
    return lp[np.arange(len(toks)), toks]
