"""Tiny real ONNX models built by the tests themselves (with the `onnx` package).

- a bigram language model: logits[b, t] = table[input_ids[b, t]]  (Gather on a table);
- a stateful step graph: state_out = state + x, y = sum(state_out) per row, which
  exercises StatefulRunner's IOBinding state path exactly like a KV cache does.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def _save(graph, path: Path) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="chainrule-tests")
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.write_bytes(model.SerializeToString())
    return path


def bigram_table(vocab: int = 6, seed: int = 0) -> np.ndarray:
    """(V, V) logits: row = previous token, column = next token."""
    return np.random.default_rng(seed).normal(0, 2.0, size=(vocab, vocab)).astype(np.float32)


def write_bigram_model(path: Path, table: np.ndarray) -> Path:
    v = table.shape[0]
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "input_ids"], ["logits"], axis=0)],
        "bigram",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "sequence"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", "sequence", v])],
        initializer=[numpy_helper.from_array(table, "table")],
    )
    return _save(graph, path)


def write_accumulator_model(path: Path, width: int = 3) -> Path:
    graph = helper.make_graph(
        [
            helper.make_node("Add", ["state", "x"], ["state_out"]),
            helper.make_node("ReduceSum", ["state_out", "axes"], ["y"], keepdims=0),
        ],
        "accumulator",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", width]),
            helper.make_tensor_value_info("state", TensorProto.FLOAT, ["batch", width]),
        ],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch"]),
            helper.make_tensor_value_info("state_out", TensorProto.FLOAT, ["batch", width]),
        ],
        initializer=[numpy_helper.from_array(np.array([1], dtype=np.int64), "axes")],
    )
    return _save(graph, path)


class OnnxBigramStepModel:
    """A StepModel over the bigram graph: each step feeds the last value of every row."""

    def __init__(self, session):
        self.session = session

    def _logits(self, last: np.ndarray) -> np.ndarray:
        (logits,) = self.session.run({"input_ids": last.reshape(-1, 1).astype(np.int64)})
        return logits[:, -1, :]

    def prefill(self, contexts):
        return self._logits(np.array([c[-1] for c in contexts]))

    def advance(self, values):
        return self._logits(np.asarray(values))
