"""Build the WaveNet ONNX graphs directly with ``onnx.helper`` (numpy + onnx, no torch).

Four graphs from one set of weights (``WaveNet.state_dict()`` or any mapping of the same keys
to arrays) and its config dict (``WaveNetConfig.to_dict()``). Shapes: B batch, T time, L
layers with dilations d_l, R residual, G gate, S skip channels, 256 mu-law classes.

``model.onnx`` (scoring, teacher forcing, the naive sampler)
    ``audio`` int64 (B, T), ``digit`` int64 (B,), ``speaker`` int64 (B,) -> ``logits`` (B, T, 256)
    Output t is the distribution of the sample after audio[:, t] (``engines.training.wavenet``).
    The layers run as Conv nodes in (B, C, T) layout with left padding d_l (zeros, as in torch).
``prime.onnx`` (priming the queues from a context)
    same inputs -> ``layer_inputs`` (L, B, T, R): the input of every layer at every time.
``cond.onnx`` (once per run)
    ``digit``, ``speaker`` (B,) -> ``cond`` (2, L, B, G): each layer's constant pre-activation
    (digit + speaker bias, conv bias, folded residual biases; [0] the tanh half, [1] the gate).
``step.onnx`` (Fast WaveNet: O(layers) per sample, up to K = ``block`` samples per call)
    ``sample`` int64 (B,) the newest sample x_t; ``past`` (Lb, K, B, R) the inputs of the Lb
    "big" layers (d_l >= K) at times t + k - d_l, k < K; ``ring`` (Ns, B, R) the last d_l
    inputs of each "small" layer (d_l < K), slot ``offset + tau mod d_l`` holding time tau;
    ``cond`` (2, L, B, G); ``uniforms`` (n, B) one per sample and row, n <= K;
    ``inv_temperature`` (1,); ``ring_slots`` int64 (n, Ns, 1) each sample's ring slot of every
    small layer (``offset + (t + k) mod d_l``: the host's arithmetic, not the graph's)
    -> ``samples`` int64 (n, B) the drawn x_{t+1..t+n}; ``logits`` (n, B, 256) their
    distributions (temperature 1); ``layer_inputs`` (n, Lb, B, R) the big layers' inputs at
    t .. t+n-1 (the host stores them); ``ring_out`` the small layers' rings after the call.

Why the step graph looks the way it does: at batch 1 a sample is ~330k multiply-adds, so its
cost is ONNX Runtime's per-node and per-call overhead, not arithmetic. So:

* n samples run in ONE call, as an ONNX Loop whose body draws each sample itself (inverse
  CDF: the class is the number of cumulative softmax(logits * inv_temperature) values <= u;
  temperature 0 is passed as a huge inv_temperature, which makes the softmax one-hot at the
  argmax). A Python round trip per sample cost more than the whole network;
* the past taps of the big layers are known for the whole call before it starts (d_l >= K),
  so they are ONE batched MatMul with K*B rows per call (MatMul broadcasts the batch dims:
  (Lb, K*B, R) x (2, Lb, R, G)); only the small layers' taps are read from the in-graph ring
  each sample (a Gather, one small batched MatMul, a ScatterND on a few KB);
* the 2L per-layer (B, G) halves of the pre-activations come out of ONE Split;
* per layer: Gemm(h, W_tanh, C = past half) + Tanh, Gemm(h, W_gate, C = past half) + Sigmoid
  (ONNX Runtime fuses each pair into one FusedGemm), Mul, and Gemm(z, W_res, C = h) for the
  residual: 4 nodes (3 for the last layer, whose residual nothing reads). The residual biases
  are not added per layer: the bias-free h_l differs from the true one by the constant
  c_l = sum_{k<l} b_res_k, whose effect c_l W_cur_l is folded into ``cond``, and c_l is added
  back once to the layer inputs the host stores;
* the skip sum is ONE Gemm over the concatenated gated outputs (B, L*G) x (L*G, S), with
  every layer's skip bias summed into its bias, then the head (Gemm+Relu, Gemm).

A call of one sample runs the same graph (``past`` is always K rows), so the samples do not
depend on how a run is cut into calls.

``full_graph`` initializers are named after the state-dict keys (conv weights kept in their
torch layout), so :func:`state_dict_from_initializers` maps them back (the torch benchmark).
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import onnx
from onnx import TensorProto, helper

from engines.training.gpt_onnx_graph import _Graph

OPSET = 17
IR_VERSION = 8  # readable by onnxruntime >= 1.10


def _f32(a) -> np.ndarray:
    """A torch tensor or array -> contiguous float32 numpy (this module needs no torch)."""
    if hasattr(a, "detach"):
        a = a.detach().cpu().float().numpy()
    return np.ascontiguousarray(np.asarray(a, dtype=np.float32))


class Dims:
    """The sizes a graph needs, read from a ``WaveNetConfig.to_dict()``."""

    def __init__(self, config: Mapping[str, Any]) -> None:
        self.R = int(config["residual_channels"])
        self.G = int(config["gate_channels"])
        self.S = int(config["skip_channels"])
        self.V = int(config.get("levels", 256))
        self.dilations = [2 ** i for i in range(int(config["layers_per_stack"]))] * int(config["n_stacks"])
        self.L = len(self.dilations)
        self.n_digits = int(config["n_digits"])
        self.n_speakers = len(config["speakers"])
        self.n_mels = int(config.get("n_mels", 0) or 0)  # > 0: a vocoder, locally conditioned on frames
        self.local = self.n_mels > 0


def _local_bias(g: _Graph, state: Mapping[str, Any], config: Mapping[str, Any], frames: str) -> str:
    """Raw log-mel ``frames`` (B, n_mels, F) -> every layer's bias at frame rate (B, L*2G, F), as
    ``WaveNet.local_bias``: normalise, edge-pad one frame each side, Conv k3, Tanh, Conv 1x1."""
    D = int(config["n_mels"])
    mean = np.asarray(config["mel_mean"], dtype=np.float32).reshape(1, D, 1)
    std = np.asarray(config["mel_std"], dtype=np.float32).reshape(1, D, 1)
    z = g.node("Div", [g.node("Sub", [frames, g.init("mel_mean", mean)]), g.init("mel_std", std)])
    z = g.node("Pad", [z, g.const([0, 0, 1, 0, 0, 1])], mode="edge")
    z = g.node("Conv", [z, g.init("local_in.weight", _f32(state["local_in.weight"])),
                        g.init("local_in.bias", _f32(state["local_in.bias"]))], kernel_shape=[3])
    return g.node("Conv", [g.node("Tanh", [z]), g.init("local_out.weight", _f32(state["local_out.weight"])),
                           g.init("local_out.bias", _f32(state["local_out.bias"]))], kernel_shape=[1])


def _finish(g: _Graph, name: str, inputs: list, outputs: list) -> onnx.ModelProto:
    graph = helper.make_graph(g.nodes, name, inputs, outputs, initializer=g.initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="chainrule",
                              producer_version="wavenet_onnx_graph")
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model, full_check=True)
    return model


def _vi(name: str, dtype: int, shape: list) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, dtype, shape)


F32, I64 = TensorProto.FLOAT, TensorProto.INT64


def full_graph(state: Mapping[str, Any], config: Mapping[str, Any], *, output: str = "logits") -> onnx.ModelProto:
    """``model.onnx`` (output="logits") or ``prime.onnx`` (output="layer_inputs"): the network over (B, T)."""
    if output not in ("logits", "layer_inputs"):
        raise ValueError(f"output = {output!r}: 'logits' or 'layer_inputs'")
    d = Dims(config)
    R, G, L = d.R, d.G, d.L
    g = _Graph()

    def w(key: str) -> str:
        return g.init(key, _f32(state[key]))

    h = g.node("Transpose", [g.node("Gather", [w("embed.weight"), "audio"])], perm=[0, 2, 1])  # (B, R, T)
    cond = g.node("Add", [g.node("Gather", [w("digit_bias.weight"), "digit"]),
                          g.node("Gather", [w("speaker_bias.weight"), "speaker"])])  # (B, L*2G)
    cond = g.node("Reshape", [cond, g.const([0, L * 2 * G, 1])])  # (B, L*2G, 1)
    if d.local:
        # each output's frame: the frame-rate biases gathered at frame_index (repetition up to the sample rate)
        local = _local_bias(g, state, config, "frames")  # (B, L*2G, F)
        index = g.node("Expand", [g.node("Unsqueeze", ["frame_index", g.const([1])]), g.const([1, L * 2 * G, 1])])
        cond = g.node("Add", [cond, g.node("GatherElements", [local, index], axis=2)])  # (B, L*2G, T)
    conds = g.node("Split", [cond], axis=1, n_out=L)  # L x (B, 2G, 1 or T)
    if L == 1:
        conds = [conds]
    hs, skip = [], None
    last = L if output == "logits" else L - 1
    for l, dil in enumerate(d.dilations):
        hs.append(h)
        if l == last:
            break
        a = g.node("Conv", [h, w(f"dilated.{l}.weight"), w(f"dilated.{l}.bias")], dilations=[dil], pads=[dil, 0],
                   kernel_shape=[2])
        a1, a2 = g.node("Split", [g.node("Add", [a, conds[l]])], axis=1, n_out=2)  # (B, G, T) each
        z = g.node("Mul", [g.node("Tanh", [a1]), g.node("Sigmoid", [a2])])
        out = g.node("Conv", [z, w(f"res_skip.{l}.weight"), w(f"res_skip.{l}.bias")], kernel_shape=[1])
        r, s = g.node("Split", [out, g.const([R, d.S])], axis=1, n_out=2)
        if l < L - 1:
            h = g.node("Add", [h, r])
        skip = s if skip is None else g.node("Add", [skip, s])

    inputs = [_vi("audio", I64, ["batch", "time"]), _vi("digit", I64, ["batch"]), _vi("speaker", I64, ["batch"])]
    if d.local:
        inputs += [_vi("frames", F32, ["batch", d.n_mels, "frames"]), _vi("frame_index", I64, ["batch", "time"])]
    if output == "logits":
        y = g.node("Relu", [g.node("Conv", [g.node("Relu", [skip]), w("head1.weight"), w("head1.bias")], kernel_shape=[1])])
        y = g.node("Conv", [y, w("head2.weight"), w("head2.bias")], kernel_shape=[1])  # (B, V, T)
        g.node("Transpose", [y], perm=[0, 2, 1], out="logits")
        return _finish(g, "wavenet", inputs, [_vi("logits", F32, ["batch", "time", d.V])])
    stacked = g.node("Concat", [g.node("Unsqueeze", [x, g.const([0])]) for x in hs], axis=0)  # (L, B, R, T)
    g.node("Transpose", [stacked], perm=[0, 1, 3, 2], out="layer_inputs")  # (L, B, T, R)
    return _finish(g, "wavenet_prime", inputs, [_vi("layer_inputs", F32, [L, "batch", "time", R])])


def _step_constants(state: Mapping[str, Any], d: Dims) -> dict[str, np.ndarray]:
    """The folded weights of the step and cond graphs (float64 folding, float32 storage)."""
    R, G, L = d.R, d.G, d.L
    conv = [np.asarray(_f32(state[f"dilated.{l}.weight"]), np.float64) for l in range(L)]  # (2G, R, 2)
    conv_b = [np.asarray(_f32(state[f"dilated.{l}.bias"]), np.float64) for l in range(L)]
    rs = [np.asarray(_f32(state[f"res_skip.{l}.weight"]), np.float64)[:, :, 0] for l in range(L)]  # (R+S, G)
    rs_b = [np.asarray(_f32(state[f"res_skip.{l}.bias"]), np.float64) for l in range(L)]
    # c_l: what the bias-free residual stream misses at layer l's input
    c = np.zeros((L, R))
    for l in range(1, L):
        c[l] = c[l - 1] + rs_b[l - 1][:R]
    w_past = np.stack([np.stack([conv[l][:G, :, 0].T, conv[l][G:, :, 0].T]) for l in range(L)], axis=1)  # (2, L, R, G)
    bias = np.stack([conv_b[l] + c[l] @ conv[l][:, :, 1].T for l in range(L)])  # (L, 2G)
    return {
        "w_past": w_past,
        "w_tanh": np.stack([conv[l][:G, :, 1].T for l in range(L)]),  # (L, R, G)
        "w_gate": np.stack([conv[l][G:, :, 1].T for l in range(L)]),
        "w_res": np.stack([rs[l][:R].T for l in range(L)]),  # (L, G, R)
        "w_skip": np.concatenate([rs[l][R:].T for l in range(L)]),  # (L*G, S)
        "b_skip": np.sum([rs_b[l][R:] for l in range(L)], axis=0),  # (S,)
        "layer_bias": c,  # (L, R)
        "cond_bias": bias,  # (L, 2G)
    }


DEFAULT_BLOCK = 32  # samples per step.onnx call at most (the host pads `past` to this many rows)


def split_layers(dilations: list[int], block: int) -> tuple[list[int], list[int]]:
    """(big, small) layer indices: a big layer (d >= block) reads all its past taps of a call
    from the host's buffers; a small one (d < block) reads the in-graph ring."""
    big = [l for l, d in enumerate(dilations) if d >= block]
    small = [l for l, d in enumerate(dilations) if d < block]
    return big, small


def step_block(config: Mapping[str, Any], block: int = DEFAULT_BLOCK) -> int:
    """The block a step graph is built for: at most the largest dilation, so both kinds of layer exist."""
    d = Dims(config)
    if max(d.dilations) < 2:
        raise ValueError("the step graph needs a dilation >= 2 (layers_per_stack >= 2)")
    return max(2, min(int(block), max(d.dilations)))


def step_graph(state: Mapping[str, Any], config: Mapping[str, Any], block: int = DEFAULT_BLOCK) -> onnx.ModelProto:
    """``step.onnx``: n <= K samples per call (an ONNX Loop), each drawn inside the graph."""
    d = Dims(config)
    R, G, L, V = d.R, d.G, d.L, d.V
    K = step_block(config, block)
    big, small = split_layers(d.dilations, K)
    Lb, Ls = len(big), len(small)
    order = big + small  # the layer order of the (2, L, B, G) pre-activation tensor
    k = _step_constants(state, d)
    ds = np.array([d.dilations[l] for l in small], dtype=np.int64)

    # ---- the main graph: once per call ----------------------------------------------------
    g = _Graph()
    # a vocoder's cond is per sample: (K, 2, L, B, G) -> (2, L, K, B, G)
    cond_in = g.node("Transpose", ["cond"], perm=[1, 2, 0, 3, 4]) if d.local else "cond"
    cond = g.node("Gather", [cond_in, g.const(np.array(order))], axis=1)  # (2, L, [K,] B, G) in `order`
    cond_big = g.node("Slice", [cond, g.const([0]), g.const([Lb]), g.const([1])])  # (2, Lb, [K,] B, G)
    cond_small = g.node("Slice", [cond, g.const([Lb]), g.const([L]), g.const([1])])  # (2, Ls, [K,] B, G)
    # every big layer's past taps for the whole block, as one batched MatMul with M = K*B rows
    past = g.node("Reshape", ["past", g.const([Lb, -1, R])])  # (Lb, K*B, R)
    w_past_big = g.init("w_past_big", _f32(k["w_past"][:, big]))  # (2, Lb, R, G)
    pre_big = g.node("Reshape", [g.node("MatMul", [past, w_past_big]), g.const([2, Lb, K, -1, G])])
    cond_big = cond_big if d.local else g.node("Unsqueeze", [cond_big, g.const([2])])
    pre_big = g.node("Add", [pre_big, cond_big], out="pre_big")  # (2, Lb, K, B, G)
    g.node("Unsqueeze", ["uniforms", g.const([2])], out="uniforms3")  # (n, B, 1)
    trips = g.node("Squeeze", [g.node("Shape", ["uniforms"], start=0, end=1)], out="trips")
    cond_small = g.node("Identity", [cond_small], out="cond_small")

    # ---- the loop body: one sample ---------------------------------------------------------
    b = _Graph()
    b._n = 10_000  # distinct value names from the main graph's
    x = "x_in"
    h = b.node("Gather", [b.init("embed.weight", _f32(state["embed.weight"])), x])  # (B, R)
    pre_b = b.node("Gather", ["pre_big", "k"], axis=2)  # (2, Lb, B, G)
    slots = b.node("Gather", ["ring_slots", "k"], axis=0)  # (Ls, 1): this sample's slot of every small layer
    past_s = b.node("GatherND", ["ring_in", slots])  # (Ls, B, R)
    cond_s = b.node("Gather", ["cond_small", "k"], axis=2) if d.local else "cond_small"  # (2, Ls, B, G)
    pre_s = b.node("Add", [b.node("MatMul", [past_s, b.init("w_past_small", _f32(k["w_past"][:, small]))]), cond_s])
    pre = b.node("Concat", [pre_b, pre_s], axis=1)  # (2, L, B, G), layers in `order`
    # rows (half, layer, batch): an equal Split gives the 2L per-layer (B, G) halves in one node
    # (measured cheaper than 2L Slice or Gather nodes)
    halves = b.node("Split", [b.node("Reshape", [pre, b.const([-1, G])])], axis=0, n_out=2 * L)
    pos = {l: i for i, l in enumerate(order)}
    hs, zs = [], []
    for l in range(L):
        hs.append(h)
        t = b.node("Tanh", [b.node("Gemm", [h, b.init(f"w_tanh.{l}", _f32(k["w_tanh"][l])), halves[pos[l]]])])
        s = b.node("Sigmoid", [b.node("Gemm", [h, b.init(f"w_gate.{l}", _f32(k["w_gate"][l])), halves[L + pos[l]]])])
        z = b.node("Mul", [t, s])  # (B, G)
        zs.append(z)
        if l < L - 1:
            h = b.node("Gemm", [z, b.init(f"w_res.{l}", _f32(k["w_res"][l])), h])  # bias-free residual stream
    skip = b.node("Gemm", [b.node("Concat", zs, axis=1), b.init("w_skip", _f32(k["w_skip"])),
                           b.init("b_skip", _f32(k["b_skip"]))])  # (B, S)
    y = b.node("Relu", [b.node("Gemm", [b.node("Relu", [skip]), b.init("w_head1", _f32(state["head1.weight"])[:, :, 0]),
                                         b.init("b_head1", _f32(state["head1.bias"]))], transB=1)])
    logits = b.node("Gemm", [y, b.init("w_head2", _f32(state["head2.weight"])[:, :, 0]),
                             b.init("b_head2", _f32(state["head2.bias"]))], transB=1, out="logits_k")
    # inverse-CDF sampling at temperature 1 / inv_temperature: the class is the number of
    # cumulative probabilities <= u (at most V - 1)
    u = b.node("Gather", ["uniforms3", "k"], axis=0)  # (B, 1)
    cdf = b.node("CumSum", [b.node("Softmax", [b.node("Mul", [logits, "inv_temperature"])], axis=1), b.const(np.int64(1))])
    count = b.node("ReduceSum", [b.node("Cast", [b.node("LessOrEqual", [cdf, u])], to=I64), b.const([1])], keepdims=0)
    b.node("Min", [count, b.const(np.array([V - 1]))], out="x_out")  # (B,)
    b.node("Identity", ["x_out"], out="sample_k")
    bias = _f32(k["layer_bias"])[:, None, :]  # (L, 1, R): what the bias-free stream misses
    li_b = b.node("Reshape", [b.node("Concat", [hs[l] for l in big], axis=0), b.const([Lb, -1, R])])
    b.node("Add", [li_b, b.init("layer_bias_big", bias[big])], out="layer_inputs_k")  # (Lb, B, R)
    li_s = b.node("Reshape", [b.node("Concat", [hs[l] for l in small], axis=0), b.const([Ls, -1, R])])
    li_s = b.node("Add", [li_s, b.init("layer_bias_small", bias[small])])
    b.node("ScatterND", ["ring_in", slots, li_s], out="ring_next")
    body = helper.make_graph(
        b.nodes, "sample_one",
        [_vi("k", I64, []), _vi("cond_in", TensorProto.BOOL, None), _vi("x_in", I64, ["batch"]),
         _vi("ring_in", F32, [int(ds.sum()), "batch", R])],
        [_vi("cond_in", TensorProto.BOOL, None), _vi("x_out", I64, ["batch"]),
         _vi("ring_next", F32, [int(ds.sum()), "batch", R]), _vi("sample_k", I64, ["batch"]),
         _vi("logits_k", F32, ["batch", V]), _vi("layer_inputs_k", F32, [Lb, "batch", R])],
        initializer=b.initializers)
    g.node("Loop", [trips, g.const(np.array(True)), "sample", "ring"],
           outs=["x_last", "ring_out", "samples", "logits", "layer_inputs"], body=body)
    inputs = [_vi("sample", I64, ["batch"]), _vi("past", F32, [Lb, K, "batch", R]),
              _vi("ring", F32, [int(ds.sum()), "batch", R]),
              _vi("cond", F32, [K, 2, L, "batch", G] if d.local else [2, L, "batch", G]),
              _vi("uniforms", F32, ["n", "batch"]), _vi("inv_temperature", F32, [1]), _vi("ring_slots", I64, ["n", Ls, 1])]
    outputs = [_vi("samples", I64, ["n", "batch"]), _vi("logits", F32, ["n", "batch", V]),
               _vi("layer_inputs", F32, ["n", Lb, "batch", R]), _vi("ring_out", F32, [int(ds.sum()), "batch", R])]
    return _finish(g, "wavenet_step", inputs, outputs)


def cond_graph(state: Mapping[str, Any], config: Mapping[str, Any]) -> onnx.ModelProto:
    """``cond.onnx``: digit and speaker -> every layer's constant pre-activation (2, L, B, G).

    A vocoder's: ``frames`` (B, n_mels, F) raw log-mel, ``speaker`` (B,) -> ``cond`` (F, 2, L, B, G),
    each frame's pre-activation (the host gathers a step call's rows by each sample's frame)."""
    d = Dims(config)
    G, L = d.G, d.L
    k = _step_constants(state, d)
    g = _Graph()
    if d.local:
        const = _f32(state["digit_bias.weight"])[d.n_digits] + _f32(k["cond_bias"]).reshape(-1)  # digit is "none"
        spk = g.node("Gather", [g.init("speaker_table", _f32(state["speaker_bias.weight"]) + const[None]), "speaker"])
        x = g.node("Add", [_local_bias(g, state, config, "frames"), g.node("Unsqueeze", [spk, g.const([2])])])
        x = g.node("Reshape", [x, g.const([0, L, 2, G, -1])])  # (B, L, 2, G, F)
        g.node("Transpose", [x], perm=[4, 2, 1, 0, 3], out="cond")
        inputs = [_vi("frames", F32, ["batch", d.n_mels, "frames"]), _vi("speaker", I64, ["batch"])]
        return _finish(g, "wavenet_cond", inputs, [_vi("cond", F32, ["frames", 2, L, "batch", G])])
    digit = _f32(state["digit_bias.weight"]) + _f32(k["cond_bias"]).reshape(1, -1)  # constants folded in
    x = g.node("Add", [g.node("Gather", [g.init("digit_table", digit), "digit"]),
                       g.node("Gather", [g.init("speaker_table", _f32(state["speaker_bias.weight"])), "speaker"])])
    x = g.node("Reshape", [x, g.const([-1, L, 2, G])])  # (B, L, 2, G)
    g.node("Transpose", [x], perm=[2, 1, 0, 3], out="cond")
    inputs = [_vi("digit", I64, ["batch"]), _vi("speaker", I64, ["batch"])]
    return _finish(g, "wavenet_cond", inputs, [_vi("cond", F32, [2, L, "batch", G])])


STATE_KEYS_PER_LAYER = ("dilated.{l}.weight", "dilated.{l}.bias", "res_skip.{l}.weight", "res_skip.{l}.bias")
LOCAL_STATE_KEYS = ("local_in.weight", "local_in.bias", "local_out.weight", "local_out.bias")
STATE_KEYS = ("embed.weight", "digit_bias.weight", "speaker_bias.weight", "head1.weight", "head1.bias",
              "head2.weight", "head2.bias")


def state_dict_from_initializers(inits: Mapping[str, np.ndarray], n_layers: int) -> dict[str, np.ndarray]:
    """The initializers of ``model.onnx`` -> the WaveNet state dict (same names, same layout)."""
    keys = list(STATE_KEYS) + [k.format(l=l) for l in range(n_layers) for k in STATE_KEYS_PER_LAYER]
    missing = [k for k in keys if k not in inits]
    if missing:
        raise RuntimeError(f"model.onnx initializers lack {', '.join(missing[:5])}"
                           f"{' ...' if len(missing) > 5 else ''}: not written by wavenet_onnx_graph")
    return {k: np.asarray(inits[k]) for k in keys}
