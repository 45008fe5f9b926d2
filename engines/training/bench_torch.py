"""The torch side of `chainrule bench text`: the shipped ONNX weights, loaded back into the
torch GPT, generating with its KV cache in eager mode.

Only the ONNX file ships (no torch checkpoint), so the weights are read from the graph's
initializers. A graph written by `engines.training.gpt_onnx_graph` (the default export) names
every weight after its state-dict key (Linear weights pre-transposed as `...weight_t`), so it
maps back by name. A graph from the legacy torch.onnx exporter (`export_gpt --torch-exporter`)
keeps the named ones (`model.` prefix) and stores the Linear weights transposed under
anonymous names (`onnx::MatMul_N`); those are assigned in graph order, four per block
(attn.c_attn, attn.c_proj, mlp.c_fc, mlp.c_proj), each shape-checked.
The benchmark then checks that torch produces the same greedy tokens as ONNX Runtime.
"""

from __future__ import annotations

import statistics
import time
from typing import Sequence

import numpy as np
import onnx
import torch
from onnx import numpy_helper

from engines.registry import ModelInfo
from engines.training.gpt import GPT, GPTConfig
from engines.training.gpt_onnx_graph import state_dict_from_initializers

_BLOCK_LINEARS = ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")


def gpt_from_onnx(info: ModelInfo) -> GPT:
    arch = info.card["architecture"]
    config = GPTConfig(
        vocab_size=int(arch["vocab_size"]), block_size=int(info.card["context_length"]), n_layer=int(arch["n_layer"]),
        n_head=int(arch["n_head"]), n_embd=int(arch["n_embd"]), dropout=0.0, bias=bool(arch.get("bias", True)),
    )
    model = GPT(config)
    graph = onnx.load(str(info.file("decoder"))).graph
    inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    named = state_dict_from_initializers(inits, config.n_layer)
    if named is not None:  # built by gpt_onnx_graph: every weight is named
        model.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in named.items()}, strict=True)
        return model.eval()
    state = model.state_dict()
    new = {}
    for name, arr in inits.items():
        key = name.removeprefix("model.")
        if key in state:
            new[key] = torch.from_numpy(arr.copy())
    anonymous = [x for n in graph.node if n.op_type == "MatMul" for x in n.input if x in inits and x not in state and not x.startswith("model.")]
    expected = [f"transformer.h.{i}.{lin}.weight" for i in range(config.n_layer) for lin in _BLOCK_LINEARS]
    missing = [k for k in expected if k not in new]
    if len(anonymous) == len(missing) + 1:  # the tied head, stored again as wte.T: drop it
        head = anonymous.pop()
        if not np.array_equal(inits[head].T, new["transformer.wte.weight"].numpy()):
            raise RuntimeError(f"cannot map ONNX weights back to torch: {head} is not the tied head")
    if len(missing) != len(anonymous):
        raise RuntimeError(f"cannot map ONNX weights back to torch: {len(missing)} missing, {len(anonymous)} anonymous")
    for key, init in zip(missing, anonymous):
        w = torch.from_numpy(inits[init].T.copy())  # MatMul stores (in, out); Linear wants (out, in)
        if tuple(w.shape) != tuple(state[key].shape):
            raise RuntimeError(f"cannot map {init} {tuple(w.shape)} onto {key} {tuple(state[key].shape)}")
        new[key] = w
    if "lm_head.weight" in state and "lm_head.weight" not in new:
        new["lm_head.weight"] = new["transformer.wte.weight"]  # tied
    model.load_state_dict(new, strict=True)
    return model.eval()


@torch.inference_mode()
def _greedy_with_cache(model: GPT, context: list[int], n_new: int) -> list[int]:
    """Greedy decoding with the torch KV cache, sliding the window like the ONNX engine."""
    window, keep = model.config.block_size, max(1, model.config.block_size // 2)
    history = list(context[-window:])

    def prefill(rows: list[int]):
        ids = torch.tensor([rows])
        mask = torch.ones_like(ids)
        pos = torch.arange(len(rows))[None]
        return model.forward_with_past(ids, mask, pos, model.empty_past(1))

    logits, past = prefill(history)
    length = len(history)
    out = []
    for i in range(n_new):
        tok = int(torch.argmax(logits[0, -1]))
        out.append(tok)
        history.append(tok)
        if i + 1 == n_new:
            break
        if length >= window:
            logits, past = prefill(history[-keep - 1:-1])
            length = keep
        ids = torch.tensor([[tok]])
        mask = torch.ones((1, length + 1), dtype=torch.int64)
        pos = torch.tensor([[length]])
        logits, past = model.forward_with_past(ids, mask, pos, past)
        length += 1
    return out


def torch_kv_tokens_per_second(info: ModelInfo, context: Sequence[int], n_new: int, repeats: int) -> tuple[float, list[int]]:
    torch.set_num_threads(1)  # the same single thread ONNX Runtime gets
    model = gpt_from_onnx(info)
    times, tokens = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        tokens = _greedy_with_cache(model, list(context), n_new)
        times.append(time.perf_counter() - t0)
    return n_new / statistics.median(times), tokens


def torch_logits(info: ModelInfo, ids: np.ndarray) -> np.ndarray:
    """Full-sequence logits from the reloaded torch model (for tests)."""
    model = gpt_from_onnx(info)
    with torch.inference_mode():
        return model(torch.from_numpy(ids))[0].numpy()
