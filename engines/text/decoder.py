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
from engines.errors import InputError, ModelLoadError
from engines.runtime import ModelSession, StatefulRunner, open_session


@dataclass(frozen=True)
class DecoderShape:
    n_layer: int
    n_head: int
    head_dim: int
    vocab_size: int
    context_length: int  # positions the engine's window holds (trained positions, or the sliding window)
    n_kv_head: int | None = None  # key/value heads (GQA/MQA: fewer than n_head); None: n_head

    @property
    def kv_heads(self) -> int:
        return self.n_kv_head or self.n_head


def io_names(n_layer: int) -> tuple[list[str], list[str]]:
    inputs = ["input_ids", "attention_mask", "position_ids"]
    outputs = ["logits"]
    for i in range(n_layer):
        inputs += [f"past_key_values.{i}.key", f"past_key_values.{i}.value"]
        outputs += [f"present.{i}.key", f"present.{i}.value"]
    return inputs, outputs


@dataclass(frozen=True)
class DecoderNames:
    """The graph's input/output names: Optimum's by default, or those a genai_config.json gives.
    `past` pairs each cache input with the output that updates it, layer by layer (key, value)."""

    past: tuple[tuple[str, str], ...]
    input_ids: str = "input_ids"
    attention_mask: str | None = "attention_mask"
    position_ids: str | None = "position_ids"  # fed only when the graph has it (rotary families do)
    logits: str = "logits"

    @classmethod
    def optimum(cls, n_layer: int) -> "DecoderNames":
        return cls(tuple((f"past_key_values.{i}.{kv}", f"present.{i}.{kv}") for i in range(n_layer) for kv in ("key", "value")))

    @classmethod
    def from_patterns(cls, n_layer: int, past_key: str, past_value: str, present_key: str, present_value: str,
                      **names) -> "DecoderNames":
        """onnxruntime-genai style: "past_key_values.%d.key" etc., one name per layer."""
        pairs = []
        for i in range(n_layer):
            pairs += [(past_key % i, present_key % i), (past_value % i, present_value % i)]
        return cls(tuple(pairs), **names)


# ONNX element types the decoder's inputs may have (int32 ids in some exports, float16 caches).
_ONNX_DTYPES = {"tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(float)": np.float32,
                "tensor(float16)": np.float16, "tensor(double)": np.float64, "tensor(bfloat16)": None}


class GPTDecoder:
    """The ONNX graph plus its shape; stateless (state lives in the step models).

    Everything about the graph's inputs is read from the graph itself: which inputs exist
    (position_ids only where the graph asks for it), their element types (int64 or int32 ids,
    float32 or float16 caches), and the cache layout (batch, kv heads, length, head dim): the
    graph's own where it fixes them (GQA/MQA: fewer key/value heads than query heads), the
    config's where the graph leaves them symbolic; a config that contradicts the graph is refused."""

    def __init__(self, path: Path, shape: DecoderShape, *, threads: int | None = 1, names: DecoderNames | None = None,
                 left_padding: bool = True):
        self.shape = shape
        # False for graphs whose attention reads each row's length from the mask and assumes its tokens
        # come first (onnxruntime-genai's GroupQueryAttention): a left-padded batch is refused, not garbled.
        self.left_padding = left_padding
        self.names = names = names or DecoderNames.optimum(shape.n_layer)
        self.session: ModelSession = open_session(path, intra_op_threads=threads)
        graph_in = {i.name: i for i in self.session.session.get_inputs()}
        self.has_position_ids = names.position_ids is not None and names.position_ids in graph_in
        self.has_attention_mask = names.attention_mask is not None and names.attention_mask in graph_in
        # Older Optimum exports merge the with/without-cache graphs behind a boolean switch.
        self.use_cache_branch = "use_cache_branch" if "use_cache_branch" in graph_in else None
        expected_in = [names.input_ids, *(n for n, _ in names.past)]
        expected_in += [n for n, has in ((names.attention_mask, self.has_attention_mask),
                                         (names.position_ids, self.has_position_ids),
                                         (self.use_cache_branch, self.use_cache_branch)) if has]
        from engines.runtime import _check_io  # one checker for every model kind

        _check_io(Path(path), self.session.input_names, expected_in, "input(s)")
        _check_io(Path(path), self.session.output_names, [names.logits, *(o for _, o in names.past)], "output(s)")
        self.state_map = dict(names.past)
        self.logits_name = names.logits
        self.dtypes = {}
        for name in expected_in:
            dt = _ONNX_DTYPES.get(graph_in[name].type, False)
            if dt is None or dt is False:
                raise ModelLoadError(f"{path}: input {name} has element type {graph_in[name].type}, which this engine "
                                     "does not feed (int32/int64 ids, float32/float16 caches)")
            self.dtypes[name] = dt
        self.cache_dims = self._cache_dims(Path(path), graph_in)

    def _cache_dims(self, path: Path, graph_in) -> tuple[int, int]:
        """(kv heads, head dim) of the cache inputs: the graph's own where it fixes them (all cache inputs
        alike), else the config's. A graph and a config that both state them and disagree are refused."""
        s = self.shape
        found: list[tuple[int, int]] = []
        for name, _ in self.names.past:
            dims = graph_in[name].shape
            if len(dims) != 4:
                raise ModelLoadError(f"{path}: cache input {name} has {len(dims)} dimensions; (batch, heads, length, "
                                     "head size) was expected")
            heads = dims[1] if isinstance(dims[1], int) else s.kv_heads
            dim = dims[3] if isinstance(dims[3], int) else s.head_dim
            for got, want, what in ((dims[1], s.n_kv_head, "key/value heads"), (dims[3], s.head_dim, "head size")):
                if isinstance(got, int) and want is not None and got != want:
                    raise ModelLoadError(f"{path}: cache input {name} has {got} {what} but the model's config "
                                         f"says {want}")
            found.append((heads, dim))
        if len(set(found)) > 1:
            raise ModelLoadError(f"{path}: the cache inputs disagree on their heads/head size: {sorted(set(found))}")
        return found[0] if found else (s.kv_heads, s.head_dim)

    def empty_past(self, batch: int) -> dict[str, np.ndarray]:
        heads, dim = self.cache_dims
        return {name: np.zeros((batch, heads, 0, dim), self.dtypes[name]) for name in self.state_map}

    def feeds(self, ids: np.ndarray, mask: np.ndarray, positions: np.ndarray) -> dict[str, np.ndarray]:
        n, dt = self.names, self.dtypes
        if not self.left_padding and len(mask) > 1 and not mask.all():
            raise InputError("this model's graph (onnxruntime-genai attention) cannot run rows of different lengths "
                             "as one batch: run them one at a time")
        f = {n.input_ids: ids.astype(dt[n.input_ids], copy=False)}
        if self.has_attention_mask:
            f[n.attention_mask] = mask.astype(dt[n.attention_mask], copy=False)
        if self.has_position_ids:
            f[n.position_ids] = positions.astype(dt[n.position_ids], copy=False)
        if self.use_cache_branch:
            f[self.use_cache_branch] = np.array([mask.shape[1] > ids.shape[1]])
        return f

    def forward(self, ids: np.ndarray) -> np.ndarray:
        """Full forward with an empty cache: (B, T) ids -> (B, T, V) logits."""
        b, t = ids.shape
        feeds = self.feeds(ids, np.ones((b, t), np.int64), np.tile(np.arange(t), (b, 1)))
        feeds.update(self.empty_past(b))
        return self.session.run(feeds, [self.logits_name])[0]


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
        self.runner = StatefulRunner(decoder.session, decoder.state_map, fetch=[decoder.logits_name], transport=transport)
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
        return out[0] if len(out) == 1 else np.concatenate(out, axis=1)  # one chunk (every step): no copy

    # -- internals -----------------------------------------------------------------------
    def _prefill_rows(self, rows: Sequence[Sequence[int]]) -> np.ndarray:
        ids, mask = _left_pad(rows)
        self.runner.set_state(self.decoder.empty_past(len(rows)))
        # the attention mask of the whole window, allocated once per (re)fill; steps feed a slice of it
        self._mask_buf = np.ones((len(rows), max(self.window, ids.shape[1])), np.int64)
        self._mask_buf[:, :ids.shape[1]] = mask
        self._len = 0
        self.next_pos = np.zeros(len(rows), np.int64)
        return self._feed(ids, mask)

    def _feed(self, ids: np.ndarray, new_mask: np.ndarray | None = None) -> np.ndarray:
        b, t = ids.shape
        if new_mask is None:  # real tokens only: positions simply continue (their mask entries are 1 already)
            positions = self.next_pos[:, None] + np.arange(t)
            self.next_pos = self.next_pos + t
        else:  # positions count only real (unmasked) tokens, so left padding does not shift them
            positions = np.maximum(self.next_pos[:, None] + np.cumsum(new_mask, axis=1) - new_mask, 0)
            self.next_pos = self.next_pos + new_mask.sum(axis=1)
        self._len += t
        (logits,) = self.runner.step(self.decoder.feeds(ids, self.mask, positions))
        return logits

    @property
    def mask(self) -> np.ndarray:
        """(B, length) attention mask of the cache (0 = left padding): a view of the preallocated window."""
        return self._mask_buf[:, :self._len]

    @property
    def length(self) -> int:
        """Cache length (positions used, padding included)."""
        return self._len

    def _slide(self) -> None:
        self.slides += 1
        if self.on_slide:
            self.on_slide(self.slides)
        self._prefill_rows([row[-self.keep:] for row in self.history])

    def reorder(self, parents: np.ndarray) -> None:
        """Beam search: row b now continues old row parents[b]."""
        self.runner.reorder(parents)
        self._mask_buf = self._mask_buf[parents]
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
