"""Build the GPT key/value-cache decoder graph directly with ``onnx.helper``.

The TorchScript exporter traces ``view(B, T, H, D)`` and friends into chains of
Shape / Gather / Unsqueeze / Concat / Reshape nodes (333 nodes, 158 after ONNX Runtime's
optimiser, for the 4-layer char model). This module writes the same math as
``GPT.forward_with_past`` as a short graph of fat nodes instead:

* Reshape with constant target shapes (``0`` copies a dimension, ``-1`` infers one), so the
  blocks need no shape arithmetic;
* the (B, 1, T, P+T) additive attention bias (0 = may attend, -1e9 = masked: causal or
  padding) is computed once from ``attention_mask`` and added in every layer. The reference
  masks with ``masked_fill(~mask, -1e9)``; adding -1e9 to a score of magnitude < 32 gives
  exactly -1e9 in float32, so even fully masked rows (queries at padding) come out the
  same: uniform;
* the Linear weights are stored once, pre-transposed into MatMul layout, under names derived
  from the torch state dict (``transformer.h.0.attn.c_attn.weight`` -> ``...c_attn.weight_t``),
  so :func:`state_dict_from_initializers` maps them back by name.

Two attention styles (``attention=``):

``"ops"`` (default)
    standard opset-17 operators only, so the graph runs wherever the old export ran. ONNX
    Runtime fuses the erf GELU + bias into BiasGelu and the scaled q k^T into FusedMatMul
    on its own (117 nodes after its optimiser for the char model).
``"mha"``
    one com.microsoft MultiHeadAttention node per layer (q/k/v bias, the additive mask,
    past and present keys / values all inside it): 68 nodes after the optimiser. ONNX
    Runtime only (the bias is expanded to (B, H, T, P+T) once: builds before 1.20 want
    the heads dimension spelled out; checked on 1.18 and 1.31).

Interface (Hugging Face Optimum "text-generation-with-past" naming), all dims dynamic:
``input_ids`` / ``position_ids`` int64 (B, T), ``attention_mask`` int64 (B, P+T),
``past_key_values.{i}.key|value`` float32 (B, H, P, D) -> ``logits`` float32 (B, T, V),
``present.{i}.key|value`` float32 (B, H, P+T, D). P may be 0.
"""

from __future__ import annotations

import math
from typing import Mapping

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
IR_VERSION = 8  # readable by onnxruntime >= 1.10 (pyproject asks for >= 1.18)
MS_DOMAIN = "com.microsoft"
MASKED = -1e9  # the score of a masked (query, key) pair, as in GPT.forward_with_past
LN_EPS = 1e-5  # engines.training.gpt.LayerNorm
ATTENTION_STYLES = ("ops", "mha")

TRANSPOSED = ".weight_t"  # a Linear's (out, in) weight stored as the MatMul's (in, out)
HEAD = "lm_head.weight_t"  # the tied head: transformer.wte.weight transposed
_BLOCK_LINEARS = ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")


def input_names(n_layer: int) -> list[str]:
    names = ["input_ids", "attention_mask", "position_ids"]
    for i in range(n_layer):
        names += [f"past_key_values.{i}.key", f"past_key_values.{i}.value"]
    return names


def output_names(n_layer: int) -> list[str]:
    names = ["logits"]
    for i in range(n_layer):
        names += [f"present.{i}.key", f"present.{i}.value"]
    return names


def _f32(a) -> np.ndarray:
    """A torch tensor or array -> contiguous float32 numpy (this module needs no torch)."""
    if hasattr(a, "detach"):
        a = a.detach().cpu().float().numpy()
    return np.ascontiguousarray(np.asarray(a, dtype=np.float32))


def build_decoder_graph(state: Mapping[str, object], *, n_layer: int, n_head: int, n_embd: int,
                        vocab_size: int, bias: bool = True, attention: str = "ops",
                        name: str = "gpt_decoder") -> onnx.ModelProto:
    """The KV-cache decoder of a GPT whose weights are ``state`` (``GPT.state_dict()`` or any
    mapping of the same keys to arrays); ``attention`` is ``"ops"`` or ``"mha"`` (see above)."""
    if attention not in ATTENTION_STYLES:
        raise ValueError(f"attention = {attention!r} is not one of {ATTENTION_STYLES}")
    C, H = n_embd, n_head
    D = C // H
    g = _Graph()

    def w(key: str) -> str:  # a weight used as it is
        return g.init(key, _f32(state[key]))

    def b(key: str) -> str | None:  # a bias, if the model has them
        return w(key) if bias and key in state else None

    def linear(x: str, prefix: str, *, with_bias: bool = True) -> str:
        y = g.node("MatMul", [x, g.init(prefix + TRANSPOSED, _f32(state[prefix + ".weight"]).T)])
        bb = b(prefix + ".bias") if with_bias else None
        return g.node("Add", [y, bb]) if bb else y

    def layer_norm(x: str, prefix: str) -> str:
        beta = b(prefix + ".bias")
        return g.node("LayerNormalization", [x, w(prefix + ".weight")] + ([beta] if beta else []),
                      axis=-1, epsilon=LN_EPS)

    # ---- the additive attention bias, once for all layers: (B, 1, T, P+T) ---------------------
    S = g.node("Shape", ["attention_mask"], start=1, end=2)  # [P+T]
    T = g.node("Shape", ["input_ids"], start=1, end=2)  # [T]
    k_idx = g.node("Range", [g.const(np.int64(0)), g.node("Squeeze", [S, g.const([0])]), g.const(np.int64(1))])
    q_idx = g.node("Slice", [k_idx, g.node("Neg", [T]), g.const([np.iinfo(np.int64).max])])  # P .. P+T-1
    causal = g.node("LessOrEqual", [k_idx, g.node("Unsqueeze", [q_idx, g.const([1])])])  # (T, P+T): key <= query
    pad = g.node("Unsqueeze", [g.node("Cast", ["attention_mask"], to=TensorProto.BOOL), g.const([1, 2])])  # (B,1,1,P+T)
    attn_bias = g.node("Where", [g.node("And", [causal, pad]), g.const(np.float32(0.0)),
                                 g.const(np.float32(MASKED))], out="attn_bias")  # (B, 1, T, P+T)

    if attention == "mha":  # older ORT builds (< 1.20) need the heads dimension spelled out
        mha_bias = g.node("Expand", [attn_bias, g.const([1, H, 1, 1])])  # (B, H, T, P+T)

    # ---- embeddings ---------------------------------------------------------------------------
    wte = w("transformer.wte.weight")
    x = g.node("Add", [g.node("Gather", [wte, "input_ids"]),
                       g.node("Gather", [w("transformer.wpe.weight"), "position_ids"])])  # (B, T, C)

    sqrt2, one, half = g.const(np.float32(math.sqrt(2.0))), g.const(np.float32(1.0)), g.const(np.float32(0.5))

    for i in range(n_layer):
        p = f"transformer.h.{i}."
        past_k, past_v = f"past_key_values.{i}.key", f"past_key_values.{i}.value"
        present_k, present_v = f"present.{i}.key", f"present.{i}.value"
        h = layer_norm(x, p + "ln_1")
        if attention == "mha":
            # q, k, v (B, T, C) without their bias: MultiHeadAttention adds it, splits the heads,
            # appends k, v to the cache, and computes softmax(q k^T / sqrt(D) + attn_bias) v
            q, k, v = g.node("Split", [linear(h, p + "attn.c_attn", with_bias=False)], axis=2, n_out=3)
            y = g.node("MultiHeadAttention", [q, k, v, b(p + "attn.c_attn.bias") or "", "", mha_bias, past_k, past_v],
                       outs=[g.fresh("mha"), present_k, present_v], domain=MS_DOMAIN, num_heads=H)  # (B, T, C)
        else:
            heads = g.const([0, 0, 3 * H, D])  # (B, T, 3C) -> (B, T, 3H, D)
            qkv = g.node("Transpose", [g.node("Reshape", [linear(h, p + "attn.c_attn"), heads])],
                         perm=[0, 2, 1, 3])  # (B, 3H, T, D)
            q, k, v = g.node("Split", [qkv], axis=1, n_out=3)  # each (B, H, T, D)
            k = g.node("Concat", [past_k, k], axis=2, out=present_k)  # (B, H, P+T, D)
            v = g.node("Concat", [past_v, v], axis=2, out=present_v)
            att = g.node("MatMul", [q, g.node("Transpose", [k], perm=[0, 1, 3, 2])])  # (B, H, T, P+T)
            scale = g.const(np.float32(1.0 / math.sqrt(D)))
            att = g.node("Softmax", [g.node("Add", [g.node("Mul", [att, scale]), attn_bias])], axis=-1)
            y = g.node("Transpose", [g.node("MatMul", [att, v])], perm=[0, 2, 1, 3])  # (B, T, H, D)
            y = g.node("Reshape", [y, g.const([0, 0, C])])  # (B, T, C)
        x = g.node("Add", [x, linear(y, p + "attn.c_proj")])
        # MLP with the exact GELU (nn.GELU's default): 0.5 u (1 + erf(u / sqrt(2)))
        u = linear(layer_norm(x, p + "ln_2"), p + "mlp.c_fc")  # (B, T, 4C)
        u = g.node("Mul", [g.node("Mul", [u, g.node("Add", [g.node("Erf", [g.node("Div", [u, sqrt2])]), one])]), half])
        x = g.node("Add", [x, linear(u, p + "mlp.c_proj")])

    # tied head: logits = ln_f(x) @ wte^T (the transpose stored once more, for a plain MatMul)
    g.node("MatMul", [layer_norm(x, "transformer.ln_f"), g.init(HEAD, _f32(state["transformer.wte.weight"]).T)],
           out="logits")

    f32, i64 = TensorProto.FLOAT, TensorProto.INT64
    inputs = [helper.make_tensor_value_info("input_ids", i64, ["batch", "sequence"]),
              helper.make_tensor_value_info("attention_mask", i64, ["batch", "past_sequence + sequence"]),
              helper.make_tensor_value_info("position_ids", i64, ["batch", "sequence"])]
    outputs = [helper.make_tensor_value_info("logits", f32, ["batch", "sequence", vocab_size])]
    for i in range(n_layer):
        for kv in ("key", "value"):
            inputs.append(helper.make_tensor_value_info(f"past_key_values.{i}.{kv}", f32,
                                                        ["batch", H, "past_sequence", D]))
            outputs.append(helper.make_tensor_value_info(f"present.{i}.{kv}", f32,
                                                         ["batch", H, "past_sequence + sequence", D]))
    graph = helper.make_graph(g.nodes, name, inputs, outputs, initializer=g.initializers)
    opsets = [helper.make_opsetid("", OPSET)]
    if attention == "mha":
        opsets.append(helper.make_opsetid(MS_DOMAIN, 1))
    model = helper.make_model(graph, opset_imports=opsets, producer_name="chainrule",
                              producer_version=f"gpt_onnx_graph ({attention})")
    model.ir_version = IR_VERSION
    if attention == "ops":  # the checker does not know the com.microsoft operators
        onnx.checker.check_model(model, full_check=True)
    return model


def state_dict_from_initializers(inits: Mapping[str, np.ndarray], n_layer: int) -> dict[str, np.ndarray] | None:
    """Map the initializers of a graph written by :func:`build_decoder_graph` back onto GPT
    state-dict keys in torch layout (``lm_head.weight`` = ``transformer.wte.weight``, tied);
    None if the graph was not written by it (no ``transformer.h.0.attn.c_attn.weight_t``)."""
    if f"transformer.h.0.attn.c_attn{TRANSPOSED}" not in inits:
        return None
    out: dict[str, np.ndarray] = {}
    for name, arr in inits.items():
        if name.endswith(TRANSPOSED) and name != HEAD:
            out[name.removesuffix(TRANSPOSED) + ".weight"] = np.ascontiguousarray(arr.T)
        elif name.startswith("transformer."):
            out[name] = arr
    expected = ["transformer.wte.weight", "transformer.wpe.weight"] + [
        f"transformer.h.{i}.{lin}.weight" for i in range(n_layer) for lin in _BLOCK_LINEARS]
    missing = [k for k in expected if k not in out]
    if missing:
        raise RuntimeError(f"graph initializers lack {', '.join(missing)}")
    if HEAD in inits and not np.array_equal(inits[HEAD].T, out["transformer.wte.weight"]):
        raise RuntimeError(f"{HEAD} is not the transposed token embedding (the head is tied)")
    out["lm_head.weight"] = out["transformer.wte.weight"]
    return out


class _Graph:
    """Accumulates nodes and initializers, naming intermediate values."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._names: set[str] = set()
        self._consts: dict[tuple, str] = {}
        self._n = 0

    def fresh(self, hint: str) -> str:
        self._n += 1
        return f"{hint}_{self._n}"

    def init(self, name: str, arr: np.ndarray) -> str:
        if name not in self._names:
            self._names.add(name)
            self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(arr), name))
        return name

    def const(self, value) -> str:
        """A small constant initializer (int lists become int64), shared by value."""
        arr = np.asarray(value)
        if arr.dtype.kind == "i":
            arr = arr.astype(np.int64)
        key = (arr.dtype.str, arr.shape, arr.tobytes())
        if key not in self._consts:
            self._consts[key] = self.init(self.fresh("const"), arr)
        return self._consts[key]

    def node(self, op: str, inputs: list[str], *, out: str | None = None, outs: list[str] | None = None,
             n_out: int = 1, domain: str | None = None, **attrs):
        """Append a node; return its output name (or the list of them when n_out > 1)."""
        names = outs or ([out] if out else [self.fresh(op.lower()) for _ in range(n_out)])
        self.nodes.append(helper.make_node(op, inputs, names, name=self.fresh(op), domain=domain, **attrs))
        return names[0] if outs or n_out == 1 else names
