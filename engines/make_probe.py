"""Writes engines/probe.onnx, the one-node graph `runtime_info()` opens to learn which
provider really runs on this machine. Run `python -m engines.make_probe` (needs `onnx`)."""

from pathlib import Path


def build_probe():
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "probe", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="chainrule")
    model.ir_version = 8  # readable by onnxruntime >= 1.10
    onnx.checker.check_model(model)
    return model


if __name__ == "__main__":
    out = Path(__file__).with_name("probe.onnx")
    out.write_bytes(build_probe().SerializeToString())
    print(f"wrote {out}")
