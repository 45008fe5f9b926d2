"""`chainrule quantize`: int8 / int4 copies of text models made with ONNX Runtime's quantization tools.

The Optimum fixture (a foreign folder) and the shipped char GPT (a folder with a card) are quantized
into tmp; each copy must load and generate through the ordinary loader (no special casing), carry
its record (quantized_from, the command, measured quality and speed), and every refusal is one line
with nothing written. Speed rounds are cut to one (`--repeats 1`) to keep the tests fast.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnx")

from engines.cli import main  # noqa: E402
from engines.registry import get_model, read_card  # noqa: E402
from tests.cli_helpers import error_line, run_cli  # noqa: E402

pytestmark = pytest.mark.usefixtures("isolated_user_models")
FIXTURES = Path(__file__).parent / "fixtures"
OPTIMUM = "tiny-gpt2-optimum"
SHAKESPEARE = ("First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n\n"
               "First Citizen:\nYou are all resolved rather to die than to famish?\n\nAll:\nResolved. resolved.\n\n") * 6


def _graph_ops(path: Path) -> set[str]:
    import onnx

    return {n.op_type for n in onnx.load(str(path), load_external_data=False).graph.node}


def _greedy(info, prompt_ids: list[int], n: int) -> list[int]:
    from engines.decoding.config import DecodingConfig
    from engines.generation import generate_steps
    from engines.text.decoder import KVCacheStepModel
    from engines.text.model import load_text_model

    model = load_text_model(info)
    return [int(ev.value) for ev in generate_steps(KVCacheStepModel(model.decoder), [prompt_ids],
                                                  DecodingConfig(strategy="greedy"), n, seed=0, n_alternatives=0)]


@pytest.fixture(scope="module")
def optimum_copies(tmp_path_factory):
    """int8 and int4 copies of the Optimum fixture (made once for the module)."""
    out = tmp_path_factory.mktemp("quantized")
    for bits in (8, 4):
        code = main(["quantize", "--model", OPTIMUM, "--models-dir", str(FIXTURES), "--bits", str(bits),
                     "--out", str(out / f"tiny-int{bits}"), "--repeats", "1", "--json"])
        assert code == 0
    return out


@pytest.mark.parametrize("bits, op", [(8, "MatMulInteger"), (4, "MatMulNBits")])
def test_an_optimum_copy_stays_an_optimum_folder_and_loads_and_generates(optimum_copies, capsys, bits, op):
    folder = optimum_copies / f"tiny-int{bits}"
    info = read_card(folder)
    assert info is not None and info.usable and info.card.get("foreign") == "optimum"  # no card.json: recognised as any export
    assert not (folder / "card.json").exists()
    assert op in _graph_ops(folder / "model.onnx") and "Gemm" not in _graph_ops(folder / "model.onnx")
    assert (folder / "model.onnx").stat().st_size < (FIXTURES / OPTIMUM / "model.onnx").stat().st_size
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "generation_config.json"):
        assert (folder / name).read_bytes() == (FIXTURES / OPTIMUM / name).read_bytes()
    record = json.loads((folder / "quantization.json").read_text())
    assert record["id"] == f"tiny-int{bits}"
    assert record["quantized_from"]["id"] == OPTIMUM and len(record["quantized_from"]["fingerprint"]) == 16
    q = record["quantization"]
    assert q["bits"] == bits and q["command"].startswith(f"chainrule quantize --model {OPTIMUM} ")
    assert q["gemm_rewritten_as_matmul"] == 8  # Optimum's GPT-2 Conv1D layers: Gemm, which no quantizer takes
    assert q["quality"]["measured"] is False and "not measured" in q["quality"]["note"]
    assert q["speed"]["source"] > 0 and q["speed"]["copy"] > 0 and q["speed"]["greedy_tokens"] == 256
    assert q["file_bytes"]["copy"] == (folder / "model.onnx").stat().st_size
    if bits == 8:
        assert {c["weight_type"] for c in q["candidates"]} == {"QInt8", "QUInt8"}
        assert q["weight_type"] in ("QInt8", "QUInt8") and q["chosen_because"]
    gen, _ = run_cli(capsys, str(optimum_copies), "generate", "text", "--model", f"tiny-int{bits}", "--prompt", "ROMEO:",
                     "--max-new-tokens", "12", "--seed", "3")
    assert gen["samples"][0]["n"] == 12 and np.isfinite(gen["samples"][0]["total_logprob"])


def test_greedy_tokens_of_the_int8_copy_mostly_agree_with_the_float_model(optimum_copies):
    expected = json.loads((FIXTURES / OPTIMUM / "expected_greedy.json").read_text())
    source = get_model(OPTIMUM, [str(FIXTURES)])
    copy = read_card(optimum_copies / "tiny-int8")
    same = total = 0
    for case in expected["cases"]:
        ids = case["prompt_ids"] or [0]
        want = _greedy(source, ids, len(case["generated_ids"]))
        assert want == case["generated_ids"]  # the float model is transformers' greedy (the fixture's record)
        got = _greedy(copy, ids, len(want))
        same += sum(a == b for a, b in zip(want, got))
        total += len(want)
    assert same / total >= 0.6, f"int8 greedy tokens agree with float at {same}/{total} positions"


def test_a_card_model_gets_its_own_card_with_measured_quality(tmp_path, capsys):
    data = tmp_path / "plays.txt"
    data.write_text(SHAKESPEARE)
    out, _ = run_cli(capsys, str(tmp_path / "none"), "quantize", "--model", "shakespeare-char", "--bits", "8",
                     "--data", str(data), "--weight-type", "qint8", "--repeats", "1")
    folder = Path(out["path"])  # default: the user models folder, <id>-int8
    assert folder == tmp_path / "user-models" / "shakespeare-char-int8" and out["model"] == "shakespeare-char-int8"
    info = get_model("shakespeare-char-int8")
    card = info.card
    source = get_model("shakespeare-char")
    assert card["id"] == "shakespeare-char-int8" and card["name"].endswith("(int8)")
    assert card["architecture"] == source.card["architecture"] and card["tokenizer"] == source.card["tokenizer"]
    from engines.requests import model_fingerprint

    assert card["quantized_from"] == {"id": "shakespeare-char", "fingerprint": model_fingerprint(source)}
    q = card["quantization"]
    assert q["weight_type"] == "QInt8" and [c["weight_type"] for c in q["candidates"]] == ["QInt8"]
    assert q["command"] == (f"chainrule quantize --model shakespeare-char --bits 8 --data {data} --weight-type qint8 "
                            f"--repeats 1 --models-dir {tmp_path / 'none'} --json")
    quality = q["quality"]
    assert quality["measured"] and quality["metric"] == "nats_per_char" and quality["split"] == "val"
    assert quality["data"] == str(data)
    # the same numbers `chainrule eval` gives for each model on that split
    for model_id, key in (("shakespeare-char", "source"), ("shakespeare-char-int8", "copy")):
        ev, _ = run_cli(capsys, str(tmp_path / "none"), "eval", "--model", model_id, "--data", str(data), "--split", "val")
        assert ev["nats_per_char"] == pytest.approx(quality[key], rel=1e-9)
    assert quality["relative_change"] == pytest.approx((quality["copy"] - quality["source"]) / quality["source"])
    assert abs(quality["relative_change"]) < 0.01
    assert card["metrics"]["plays/val"]["nats_per_char"] == quality["copy"]
    assert card["metrics"]["plays/val"]["command"].startswith("chainrule eval --model shakespeare-char-int8 ")
    assert q["speed"]["source"] > 0 and q["speed"]["copy"] > 0
    assert q["file_bytes"]["copy"] * 3 < q["file_bytes"]["source"]
    gen, _ = run_cli(capsys, str(tmp_path / "none"), "generate", "text", "--model", "shakespeare-char-int8",
                     "--prompt", "ROMEO:", "--max-new-tokens", "20", "--seed", "1")
    assert gen["samples"][0]["n"] == 20


def test_plain_output_says_what_was_measured(tmp_path, capsys):
    assert main(["quantize", "--model", OPTIMUM, "--models-dir", str(FIXTURES), "--bits", "4",
                 "--out", str(tmp_path / "t4"), "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    assert "wrote t4 to" in out and "quality: not measured" in out and "tokens/s" in out


def _entries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_refusals_are_one_line_and_write_nothing(tmp_path, capsys):
    models = str(FIXTURES)
    existing = tmp_path / "there"
    existing.mkdir()
    line = error_line(capsys, models, "quantize", "--model", OPTIMUM, "--bits", "8", "--out", str(existing))
    assert "already exists" in line and _entries(existing) == []
    line = error_line(capsys, models, "quantize", "--model", "bmnist-nade", "--bits", "8", "--out", str(tmp_path / "n"))
    assert "density model" in line and "text models" in line
    line = error_line(capsys, models, "quantize", "--model", OPTIMUM, "--bits", "8", "--out", str(tmp_path / "no" / "x"))
    assert "does not exist" in line
    line = error_line(capsys, models, "quantize", "--model", OPTIMUM, "--bits", "8", "--out", str(tmp_path / "d"),
                      "--data", str(tmp_path / "missing.txt"))
    assert "missing.txt" in line
    line = error_line(capsys, models, "quantize", "--model", OPTIMUM, "--bits", "4", "--weight-type", "qint8",
                      "--out", str(tmp_path / "w"))
    assert "--weight-type" in line
    line = error_line(capsys, models, "quantize", "--model", OPTIMUM, "--bits", "8", "--split", "test",
                      "--out", str(tmp_path / "s"))
    assert "give --data too" in line
    line = error_line(capsys, models, "quantize", "--model", OPTIMUM, "--bits", "8", "--repeats", "0",
                      "--out", str(tmp_path / "r"))
    assert "--repeats 0" in line
    assert _entries(tmp_path) == ["there", "user-models"] or _entries(tmp_path) == ["there"]
    with pytest.raises(SystemExit) as exc:  # --bits outside 8|4: a usage error
        main(["quantize", "--model", OPTIMUM, "--bits", "3"])
    assert exc.value.code == 2 and "invalid choice: 3" in capsys.readouterr().err


def test_a_graph_with_nothing_to_quantize_is_one_line(optimum_copies, tmp_path, capsys):
    # the int8 copy has no float MatMul with a constant weight left
    line = error_line(capsys, str(optimum_copies), "quantize", "--model", "tiny-int8", "--bits", "8",
                      "--out", str(tmp_path / "again"))
    assert "no MatMul with a constant weight" in line and "nothing was written" in line
    assert _entries(tmp_path) in ([], ["user-models"])


def test_a_failure_half_way_leaves_no_partial_folder(tmp_path, monkeypatch, capsys):
    import engines.text.quantize as quantize

    def broken(*args, **kwargs):
        raise KeyboardInterrupt  # after the copies were made: the temporary folder holds graphs by now

    monkeypatch.setattr(quantize, "measure_speed", broken)
    out = tmp_path / "models"
    out.mkdir()
    assert main(["quantize", "--model", OPTIMUM, "--models-dir", str(FIXTURES), "--bits", "8",
                 "--out", str(out / "tiny-int8")]) == 130
    assert _entries(out) == []  # neither the folder nor its hidden temporary one
    monkeypatch.setattr(quantize, "measure_speed", lambda *a, **k: (_ for _ in ()).throw(OSError(28, "No space left on device")))
    assert main(["quantize", "--model", OPTIMUM, "--models-dir", str(FIXTURES), "--bits", "4",
                 "--out", str(out / "tiny-int4")]) == 1
    assert "No space left on device" in capsys.readouterr().err
    assert _entries(out) == []


def test_gemm_rewrite_keeps_the_arithmetic(tmp_path):
    """Gemm(A, W, C) with transB, rewritten as MatMul + Add, gives the same numbers (before quantizing)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from engines.text.quantize import _gemm_to_matmul

    rng = np.random.default_rng(0)
    w, c = rng.normal(size=(5, 4)).astype(np.float32), rng.normal(size=(5,)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["a", "w", "c"], ["y"], transB=1)], "g",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, [3, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 5])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(c, "c")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    assert _gemm_to_matmul(model) == 1
    assert [n.op_type for n in model.graph.node] == ["MatMul", "Add"]
    onnx.save(model, tmp_path / "m.onnx")
    import onnxruntime as ort

    a = rng.normal(size=(3, 4)).astype(np.float32)
    (y,) = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"]).run(None, {"a": a})
    np.testing.assert_allclose(y, a @ w.T + c, rtol=1e-5, atol=1e-5)


def test_copying_refuses_a_link_leading_outside(tmp_path, capsys):
    src = tmp_path / "models" / "linked"
    shutil.copytree(FIXTURES / OPTIMUM, src)
    (tmp_path / "secret.txt").write_text("x")
    (src / "notes.txt").symlink_to(tmp_path / "secret.txt")
    line = error_line(capsys, str(tmp_path / "models"), "quantize", "--model", "linked", "--bits", "8",
                      "--out", str(tmp_path / "q"))
    assert "leads outside" in line or "outside the model folder" in line
    assert not (tmp_path / "q").exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".q.")]


def test_without_onnx_the_command_says_what_to_install(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "onnx", None)  # import onnx -> ImportError
    monkeypatch.setitem(sys.modules, "onnxruntime.quantization", None)
    line = error_line(capsys, str(FIXTURES), "quantize", "--model", OPTIMUM, "--bits", "8", "--out", str(tmp_path / "x"))
    assert "needs the onnx package" in line and "chainrule-studio[quantize]" in line
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("bits", [8, 4])
def test_a_graph_with_external_data_gets_its_own_data_file(tmp_path, capsys, bits):
    """Weights in `model.onnx.data` beside the graph (big exports, onnxruntime-genai folders): the copy
    keeps that layout, its graph names its own data file, and it loads and generates."""
    import onnx

    src = tmp_path / "models" / "ext"
    shutil.copytree(FIXTURES / OPTIMUM, src)
    model = onnx.load(str(src / "model.onnx"))
    onnx.save_model(model, str(src / "model.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="model.onnx.data", size_threshold=0)
    assert (src / "model.onnx.data").is_file()
    (tmp_path / "q").mkdir()
    out, _ = run_cli(capsys, str(tmp_path / "models"), "quantize", "--model", "ext", "--bits", str(bits),
                     "--out", str(tmp_path / "q" / "ext-q"), "--repeats", "1")
    folder = tmp_path / "q" / "ext-q"
    assert sorted(p.name for p in folder.iterdir() if "model.onnx" in p.name) == ["model.onnx", "model.onnx.data"]
    from engines.text.quantize import _external_files

    assert _external_files(onnx, folder / "model.onnx") == ["model.onnx.data"]
    assert out["quantization"]["file_bytes"]["copy"] == sum((folder / n).stat().st_size
                                                            for n in ("model.onnx", "model.onnx.data"))
    gen, _ = run_cli(capsys, str(tmp_path / "q"), "generate", "text", "--model", "ext-q", "--prompt", "ROMEO:",
                     "--max-new-tokens", "8", "--seed", "1")
    assert gen["samples"][0]["n"] == 8


def test_an_unreadable_graph_or_an_empty_out_is_one_line(tmp_path, capsys):
    src = tmp_path / "models" / "broken"
    shutil.copytree(FIXTURES / OPTIMUM, src)
    (src / "model.onnx").write_bytes(b"\x08\x07 this is not an ONNX graph \xff\xff\xff")
    line = error_line(capsys, str(tmp_path / "models"), "quantize", "--model", "broken", "--bits", "8",
                      "--out", str(tmp_path / "b8"))
    assert "model.onnx" in line and "nothing was written" in line
    line = error_line(capsys, str(FIXTURES), "quantize", "--model", OPTIMUM, "--bits", "8", "--out", " ")
    assert "--out is empty" in line
    assert sorted(p.name for p in tmp_path.iterdir()) in (["models"], ["models", "user-models"])
