"""Issue 13, classes 1 and 2: one bad model folder never takes the others down, and nothing is
read from outside a model's folder.

Every hostile folder below was seen to break `chainrule models` (and so every command, since
`get_model` lists the models first), hang, or read a file outside its folder. Each must now be
listed as unusable with its reason, while the shipped models keep working.
"""

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from engines.cli import main
from engines.errors import ModelLoadError, ModelNotFoundError
from engines.registry import ModelInfo, get_model, list_models, read_card, shipped_models_dir

pytestmark = pytest.mark.usefixtures("isolated_user_models")

OPTIMUM = Path(__file__).parent / "fixtures" / "tiny-gpt2-optimum"
GOOD_ARCH = {"n_layer": 2, "n_head": 2, "n_embd": 32, "vocab_size": 400}
OUTSIDE_SECRET = "root:x:0:0:SECRET-OUTSIDE"


def shipped_ids() -> list[str]:
    return sorted(json.loads((p / "card.json").read_text())["id"]
                  for p in shipped_models_dir().iterdir() if (p / "card.json").is_file())


def text_folder(root: Path, name: str, raw: str | None = None, **card) -> Path:
    """A text model folder with the Optimum fixture's real graph and tokenizer and a card."""
    folder = root / name
    folder.mkdir(parents=True)
    shutil.copy(OPTIMUM / "model.onnx", folder / "model.onnx")
    shutil.copy(OPTIMUM / "tokenizer.json", folder / "tokenizer.json")
    full = {"id": name, "kind": "text", "files": {"decoder": "model.onnx"}, "architecture": GOOD_ARCH,
            "context_length": 128, "tokenizer": {"type": "hf", "file": "tokenizer.json"}, **card}
    (folder / "card.json").write_text(raw if raw is not None else json.dumps(full))
    return folder


def optimum_folder(root: Path, name: str, **config) -> Path:
    folder = root / name
    shutil.copytree(OPTIMUM, folder)
    cfg = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**cfg, **config}))
    return folder


def deep_tree(folder: Path, levels: int) -> None:
    """`levels` nested folders, made relative to an open directory (the path would be too long)."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        for _ in range(levels):
            os.mkdir("d", dir_fd=fd)
            inner = os.open("d", os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd = inner
    finally:
        os.close(fd)


@pytest.fixture
def outside(tmp_path) -> Path:
    """A file outside every model folder that a hostile card tries to read."""
    secret = tmp_path / "outside" / "secret.txt"
    secret.parent.mkdir()
    secret.write_text(OUTSIDE_SECRET + "\n")
    return secret


# name -> (builder(root, outside), words the listed problem must hold)
TRIGGERS = {
    "deep-card": (lambda r, o: text_folder(r, "deep-card", raw="[" * 100_000 + "]" * 100_000), "nested deeper than 64"),
    "deep-field": (lambda r, o: text_folder(r, "deep-field", raw='{"id": "deep-field", "x": ' + "[" * 5000 + "]" * 5000 + "}"),
                   "nested deeper than 64"),
    "files-number": (lambda r, o: text_folder(r, "files-number", files={"decoder": 5}), "files.decoder must be a file name"),
    "metrics-string": (lambda r, o: text_folder(r, "metrics-string", metrics="fast"), "metrics must be an object"),
    "defaults-list": (lambda r, o: text_folder(r, "defaults-list", decoding_defaults=[1, 2]),
                      "decoding_defaults must be an object"),
    "defaults-bad-value": (lambda r, o: text_folder(r, "defaults-bad-value", decoding_defaults={"top_p": 0}),
                           "decoding_defaults: top-p = 0 is invalid"),
    "n-head-0": (lambda r, o: text_folder(r, "n-head-0", architecture={**GOOD_ARCH, "n_head": 0}), "n_head = 0"),
    "kv-cache-too-big": (lambda r, o: text_folder(r, "kv-cache-too-big", context_length=1 << 20,
                                                  architecture={**GOOD_ARCH, "n_layer": 1024, "n_embd": 4096}), "GiB"),
    "kind-list": (lambda r, o: text_folder(r, "kind-list", kind=["text"]), "kind"),
    "image-without-architecture": (lambda r, o: text_folder(r, "image-without-architecture", kind="image", architecture=None),
                                   "architecture must be an object"),
    "made-too-big": (lambda r, o: text_folder(r, "made-too-big", kind="density", architecture={
        "family": "made", "dims": 1 << 20, "hidden": [1 << 16], "mask_seeds": [0], "orderings": ["raster"]}), "GiB"),
    "deep-tree": (lambda r, o: deep_tree(text_folder(r, "deep-tree"), 1000), "deeper than 8 levels"),
    "optimum-huge": (lambda r, o: optimum_folder(r, "optimum-huge", n_layer=10**9), "n_layer = 1000000000"),
    "optimum-zero-heads": (lambda r, o: optimum_folder(r, "optimum-zero-heads", n_head=0), "n_head = 0"),
    "optimum-config-list": (lambda r, o: (optimum_folder(r, "optimum-config-list") / "config.json").write_text("[1]"),
                            "config.json must hold a JSON object"),
    # class 2: paths leaving the folder
    "dot-dot": (lambda r, o: text_folder(r, "dot-dot", files={"decoder": "../outside/secret.txt"}), "leaves the model folder"),
    "absolute": (lambda r, o: text_folder(r, "absolute", files={"decoder": str(o)}), "leaves the model folder"),
    "symlinked-graph": (lambda r, o: (text_folder(r, "symlinked-graph", files={"decoder": "link.onnx"}) / "link.onnx")
                        .symlink_to(o), "leads outside the model folder"),
    "tokenizer-absolute": (lambda r, o: text_folder(r, "tokenizer-absolute", tokenizer={"type": "hf", "file": "/etc/passwd"}),
                           "leaves the model folder"),
    "tokenizer-symlink": (lambda r, o: (text_folder(r, "tokenizer-symlink", tokenizer={"type": "hf", "file": "tok.json"})
                                        / "tok.json").symlink_to(o), "leads outside the model folder"),
    "card-symlink": (lambda r, o: _replace_with_link(text_folder(r, "card-symlink") / "card.json", o),
                     "leads outside the model folder"),
    "optimum-config-symlink": (lambda r, o: _replace_with_link(optimum_folder(r, "optimum-config-symlink") / "config.json", o),
                               "leads outside the model folder"),
    "external-data-link": (lambda r, o: (text_folder(r, "external-data-link") / "weights.bin").symlink_to(o),
                           "weights.bin is a link leading outside the model folder"),
}


def _replace_with_link(path: Path, target: Path) -> None:
    path.unlink()
    path.symlink_to(target)


@pytest.fixture
def broken_dir(tmp_path, outside) -> Path:
    """A models dir holding every hostile folder above."""
    root = tmp_path / "broken"
    root.mkdir()
    for build, _ in TRIGGERS.values():
        build(root, outside)
    yield root
    subprocess.run(["rm", "-rf", str(root / "deep-tree")], check=False)  # too deep for shutil.rmtree


def _problem(found: dict, folder_name: str) -> str:
    (info,) = [m for m in found if m.path.name == folder_name]
    assert not info.usable, f"{folder_name} was accepted"
    return info.problem


# --- class 1: a bad folder never takes the others down --------------------------------------------

def test_models_lists_the_shipped_models_beside_a_dir_full_of_broken_folders(broken_dir, capsys):
    code = main(["models", "--models-dir", str(broken_dir)])
    out, err = capsys.readouterr()
    assert code == 0 and err == ""
    rows = {line.split()[0]: line for line in out.splitlines()[1:] if line.strip() and not line.startswith("provider")}
    for model_id in shipped_ids():
        assert rows[model_id].rstrip().endswith("ok"), rows[model_id]
    assert sum("unusable:" in line for line in rows.values()) == len(TRIGGERS)


def test_models_json_through_the_environment_variable_lists_everything(broken_dir, capsys, monkeypatch):
    monkeypatch.setenv("CHAINRULE_MODELS_DIR", str(broken_dir))
    code = main(["models", "--json"])
    out, _ = capsys.readouterr()
    rows = json.loads(out)
    assert code == 0
    assert {r["id"] for r in rows if r["problem"] is None} >= set(shipped_ids())
    assert sum(r["problem"] is not None and r["source"] == "env" for r in rows) == len(TRIGGERS)


@pytest.mark.parametrize("name", sorted(TRIGGERS))
def test_each_trigger_is_listed_with_its_reason(tmp_path, outside, name):
    build, words = TRIGGERS[name]
    root = tmp_path / "m"
    root.mkdir()
    build(root, outside)
    try:
        found = list_models([root])
        problem = _problem(found, name)
        assert words in problem and str(root / name) in problem
        assert "\n" not in problem and OUTSIDE_SECRET not in problem and "root:x" not in problem
        assert {m.id for m in found if m.usable} >= set(shipped_ids())
    finally:
        subprocess.run(["rm", "-rf", str(root)], check=False)


def test_generate_with_a_shipped_model_works_while_broken_folders_sit_in_the_models_dir(broken_dir, capsys):
    code = main(["generate", "text", "--model", "shakespeare-char", "--prompt", "ROMEO:", "--max-new-tokens", "4",
                 "--seed", "1", "--models-dir", str(broken_dir)])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert out.strip() and "shakespeare-char" in err  # the continuation, and the model named on stderr


def test_using_a_broken_model_is_one_line_naming_the_folder_and_the_fault(broken_dir, capsys):
    code = main(["generate", "text", "--model", "n-head-0", "--models-dir", str(broken_dir)])
    _, err = capsys.readouterr()
    assert code == 1 and err.count("\n") == 1 and "Traceback" not in err
    assert str(broken_dir / "n-head-0") in err and "n_head = 0" in err


def test_a_broken_copy_does_not_shadow_a_working_model_of_the_same_id(tmp_path):
    root = tmp_path / "m"
    text_folder(root, "copy", id="shakespeare-char", metrics="broken")
    info = get_model("shakespeare-char", [root])
    assert info.usable and info.source == "shipped"
    same = [m for m in list_models([root]) if m.id == "shakespeare-char"]
    assert sorted(m.usable for m in same) == [False, True]  # the broken copy stays listed, with its reason


def test_any_exception_while_reading_a_folder_stays_with_that_folder(tmp_path, monkeypatch):
    import engines.registry as registry

    root = tmp_path / "m"
    text_folder(root, "fine")
    text_folder(root, "explodes")
    real = registry.scan_folder

    def scan(folder):
        if folder.name == "explodes":
            raise MemoryError("boom")
        return real(folder)

    monkeypatch.setattr(registry, "scan_folder", scan)
    found = {m.path.name: m for m in list_models([root])}
    assert found["fine"].usable
    assert found["explodes"].problem == f"{root / 'explodes'}: cannot be read (MemoryError)"


def test_the_shipped_cards_follow_the_schema():
    from engines.card_schema import check_card

    for folder in shipped_models_dir().iterdir():
        if (folder / "card.json").is_file():
            check_card(json.loads((folder / "card.json").read_text()))


def test_parse_json_is_bounded_in_size_and_nesting():
    from engines.card_schema import CardError, parse_json

    with pytest.raises(CardError, match="nested deeper than 64"):
        parse_json(b"[" * 65 + b"]" * 65)
    assert parse_json(b"[" * 64 + b"]" * 64) is not None
    with pytest.raises(CardError, match="not UTF-8 text .bad byte at offset 9."):
        parse_json(b'{"id": "S\xff"}')
    with pytest.raises(CardError, match="at most"):
        parse_json(b" " * (33 << 20))


# --- control characters ----------------------------------------------------------------------------

def test_printable_escapes_control_characters():
    from engines.card_schema import printable

    assert printable("a\x1b[2J\nb\u202ec\td") == "a\\x1b[2J\\nb\\u202ec\\td"
    assert printable("plain id-1 é ☃") == "plain id-1 é ☃"


def test_ids_names_and_metrics_are_printed_escaped(tmp_path, capsys):
    root = tmp_path / "m"
    evil = "evil\x1b[2J\nfake  text  0  0  -  ok"
    text_folder(root, "esc\x1b[31mfolder", id=evil)
    text_folder(root, "metric", metrics={"val\x1b[2J\nfake": 1.5})
    code = main(["models", "--models-dir", str(root)])
    out, _ = capsys.readouterr()
    assert code == 0 and "\x1b" not in out
    assert not any(line.startswith("fake") for line in out.splitlines())
    assert "evil\\x1b[2J\\nfake" in out and "esc\\x1b[31mfolder" in out
    with pytest.raises(ModelNotFoundError) as exc:
        get_model(evil, [root])
    assert "\x1b" not in str(exc.value) and "\n" not in str(exc.value)


def test_the_models_view_lists_broken_folders_beside_the_shipped_ones_escaped(qtbot, tmp_path):
    pytest.importorskip("PySide6")
    from tests.tab_helpers import new_window

    root = tmp_path / "m"
    text_folder(root, "esc-id", id="evil\x1b[2J\nrow")
    text_folder(root, "n-head-0", architecture={**GOOD_ARCH, "n_head": 0})
    w = new_window(qtbot, root)  # held: the view lives as long as its window
    view = w.tab("Models")
    rows = {view.table.item(r, 0).text(): view.table.item(r, 6).text() for r in range(view.table.rowCount())}
    assert all(rows[i] == "ready" for i in shipped_ids())
    assert rows["evil\\x1b[2J\\nrow"] == "cannot load" and rows["n-head-0"] == "cannot load"


# --- class 2: nothing is read from outside a model's folder -----------------------------------------

def test_model_info_file_refuses_paths_leaving_the_folder(tmp_path, outside):
    from engines.registry import resolve_in_folder

    folder = text_folder(tmp_path / "m", "fine")
    (folder / "link.onnx").symlink_to(outside)
    for name in ("../outside/secret.txt", str(outside), "link.onnx"):
        info = ModelInfo(id="fine", kind="text", path=folder, card={"files": {"decoder": name}}, source="extra")
        with pytest.raises(ModelLoadError, match="leads outside the model folder"):
            info.file("decoder")
    assert resolve_in_folder(folder, "model.onnx", "files.decoder") == folder / "model.onnx"


def test_the_tokenizer_is_never_read_from_outside_the_folder(tmp_path, outside):
    from engines.text.tokenizer import load_tokenizer

    folder = text_folder(tmp_path / "m", "fine")
    (folder / "tok.json").symlink_to(outside)
    for name in ("/etc/passwd", "../outside/secret.txt", "tok.json"):
        with pytest.raises(ModelLoadError, match="leads outside the model folder") as exc:
            load_tokenizer(folder, {"tokenizer": {"type": "hf", "file": name}})
        assert "root:" not in str(exc.value) and OUTSIDE_SECRET not in str(exc.value)


def test_error_messages_never_quote_file_contents(tmp_path, capsys):
    from engines.text.tokenizer import load_tokenizer

    folder = text_folder(tmp_path / "m", "secret-tokenizer")
    # The tokenizers library's own message would quote it: 'invalid type: string "SECRET-..."'.
    (folder / "tokenizer.json").write_text('{"added_tokens": "SECRET-IN-TOKENIZER"}')
    with pytest.raises(ModelLoadError) as exc:
        load_tokenizer(folder, {"tokenizer": {"type": "hf", "file": "tokenizer.json"}})
    assert "SECRET" not in str(exc.value) and str(folder / "tokenizer.json") in str(exc.value)
    assert "line 1 column" in str(exc.value)  # the position is kept
    for name, data in (("not-utf8", b'{"id": "SECRET-CARD\xff"}'), ("not-json", b"SECRET-CARD is not JSON")):
        bad = text_folder(tmp_path / "m", name)
        (bad / "card.json").write_bytes(data)
        problem = read_card(bad).problem
        assert problem and "SECRET" not in problem and str(bad / "card.json") in problem


@pytest.mark.parametrize("content", [b"SECRET-IN-MODEL " * 8, b"\x08\x07SECRET-IN-MODEL" * 8],
                         ids=["not-protobuf", "truncated-protobuf"])
def test_a_model_file_that_is_not_onnx_is_refused_without_quoting_its_bytes(tmp_path, capsys, content):
    """Fails on the old check: "not an ONNX model (unexpected leading byte 0x53)" showed the file's first byte."""
    folder = text_folder(tmp_path / "m", "not-onnx")
    (folder / "model.onnx").write_bytes(content)
    code = main(["generate", "text", "--model", "not-onnx", "--models-dir", str(tmp_path / "m"),
                 "--max-new-tokens", "2"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1, err
    assert str(folder / "model.onnx") in err[0] and "ONNX model" in err[0], err
    assert "SECRET" not in err[0] and "0x" not in err[0] and "byte" not in err[0], err


def test_a_model_array_file_with_a_bad_header_is_refused_without_quoting_it(tmp_path):
    """A NADE folder whose init_a.npy header is not numpy's: the load error names the file, not the header."""
    from engines.density.model import load_density_model

    folder = tmp_path / "m" / "nade"
    shutil.copytree(shipped_models_dir() / "bmnist-nade", folder)
    header = b"SECRET-IN-ARRAY is no header"
    header += b" " * (63 - (len(header) + 10) % 64) + b"\n"
    (folder / "init_a.npy").write_bytes(b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header)
    with pytest.raises(ModelLoadError) as exc:
        load_density_model(read_card(folder))
    assert "SECRET" not in str(exc.value) and str(folder / "init_a.npy") in str(exc.value)


def test_a_card_size_that_is_not_a_number_is_refused_without_quoting_it():
    from engines.text.model import shape_from_card

    with pytest.raises(ModelLoadError) as exc:
        shape_from_card({"id": "m", "architecture": {"n_layer": "SECRET-IN-CONFIG", "n_head": 2, "n_embd": 8},
                         "context_length": 16}, 10)
    assert "SECRET" not in str(exc.value) and "n_layer" in str(exc.value)


def _external_data_model(path: Path, location: str) -> None:
    """A one-Add graph whose initializer W lives in an external file at `location`."""
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.arange(4, dtype=np.float32), "W")
    w.ClearField("raw_data")
    w.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", "16")):
        entry = w.external_data.add()
        entry.key, entry.value = key, value
    graph = helper.make_graph([helper.make_node("Add", ["x", "W"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    path.write_bytes(model.SerializeToString())


def test_onnx_runtime_refuses_external_data_outside_the_folder(tmp_path):
    from engines.runtime import open_session

    folder = tmp_path / "model"
    folder.mkdir()
    weights = np.arange(4, dtype=np.float32).tobytes()
    (tmp_path / "outside.bin").write_bytes(weights)
    (folder / "inside.bin").write_bytes(weights)
    _external_data_model(folder / "inside.onnx", "inside.bin")
    x = np.ones(4, dtype=np.float32)
    assert open_session(folder / "inside.onnx").run({"x": x})[0].tolist() == [1, 2, 3, 4]  # the control
    for name, location in (("up", "../outside.bin"), ("absolute", str(tmp_path / "outside.bin"))):
        _external_data_model(folder / f"{name}.onnx", location)
        with pytest.raises(ModelLoadError, match="xternal data") as exc:
            open_session(folder / f"{name}.onnx")
        assert str(folder / f"{name}.onnx") in str(exc.value)


def test_external_data_reached_through_a_link_is_refused_by_the_registry(tmp_path):
    root = tmp_path / "m"
    folder = root / "linked"
    folder.mkdir(parents=True)
    (tmp_path / "outside.bin").write_bytes(np.arange(4, dtype=np.float32).tobytes())
    (folder / "w.bin").symlink_to(tmp_path / "outside.bin")
    _external_data_model(folder / "model.onnx", "w.bin")
    (folder / "card.json").write_text(json.dumps({"id": "linked", "kind": "text", "files": {"decoder": "model.onnx"}}))
    with pytest.raises(ModelNotFoundError, match="w.bin is a link leading outside the model folder"):
        get_model("linked", [root])
