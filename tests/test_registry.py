import json

import pytest

from engines.errors import ModelNotFoundError
from engines.registry import get_model, list_models, shipped_models_dir
from tests.model_dirs import make_model_dir


pytestmark = pytest.mark.usefixtures("isolated_user_models")


def test_finds_models_in_extra_dirs_with_card_fields(tmp_path):
    make_model_dir(tmp_path / "m", "tiny", parameters=36)
    found = {m.id: m for m in list_models([tmp_path / "m"])}
    m = found["tiny"]
    assert m.kind == "text" and m.usable and m.parameters == 36 and m.source == "extra"
    assert m.size_bytes > 0 and m.metrics == {"val_nats_per_char": 1.5}
    assert m.file("decoder").name == "model.onnx"


def test_broken_cards_are_listed_with_the_reason(tmp_path):
    root = tmp_path / "m"
    make_model_dir(root, "nofile")
    (root / "nofile" / "model.onnx").unlink()
    (root / "badjson").mkdir()
    (root / "badjson" / "card.json").write_text("{not json")
    make_model_dir(root, "badkind", kind="video")
    (root / "not-a-model").mkdir()
    found = {m.id: m for m in list_models([root])}
    assert "not-a-model" not in found
    assert "missing" in found["nofile"].problem and "model.onnx" in found["nofile"].problem
    assert "not valid JSON" in found["badjson"].problem
    assert "video" in found["badkind"].problem
    with pytest.raises(ModelNotFoundError, match="cannot be used"):
        get_model("nofile", [root])


def test_earlier_dirs_win_and_user_and_env_dirs_are_searched(tmp_path, monkeypatch):
    make_model_dir(tmp_path / "a", "same", metrics={"x": 1})
    make_model_dir(tmp_path / "b", "same", metrics={"x": 2})
    assert get_model("same", [tmp_path / "a", tmp_path / "b"]).metrics == {"x": 1}
    make_model_dir(tmp_path / "user-models", "mine")
    assert get_model("mine").source == "user"
    make_model_dir(tmp_path / "env", "fromenv")
    monkeypatch.setenv("CHAINRULE_MODELS_DIR", str(tmp_path / "env"))
    assert get_model("fromenv").source == "env"


def test_unknown_id_lists_the_choices(tmp_path):
    make_model_dir(tmp_path / "m", "alpha")
    with pytest.raises(ModelNotFoundError, match="alpha"):
        get_model("beta", [tmp_path / "m"])
    with pytest.raises(ModelNotFoundError, match="not a image model"):
        get_model("alpha", [tmp_path / "m"], kind="image")


def test_shipped_models_have_valid_cards():
    # every model shipped in assets/ must be usable and carry measured metrics
    shipped = shipped_models_dir()
    folders = sorted(p for p in shipped.iterdir() if p.is_dir()) if shipped.is_dir() else []
    for folder in folders:
        card = json.loads((folder / "card.json").read_text())
        info = get_model(card["id"])
        assert info.source == "shipped" and info.usable
        assert info.metrics, f"{info.id} ships without measured metrics"


def test_atomic_writes_get_the_permissions_of_a_plain_open(tmp_path):
    import os
    import stat

    from engines import atomic

    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    atomic.write_text(tmp_path / "atomic.txt", "x")
    mode = lambda p: stat.S_IMODE(os.stat(p).st_mode)  # noqa: E731
    assert mode(tmp_path / "atomic.txt") == mode(plain)


def test_write_json_is_atomic_indented_utf8_with_a_final_newline(tmp_path, monkeypatch):
    from engines import atomic

    path = tmp_path / "card.json"
    atomic.write_json(path, {"name": "Café", "n": [1, 2]})
    text = path.read_text(encoding="utf-8")
    assert text.endswith("}\n") and '"name": "Café"' in text and '\n  "n": [' in text
    # A failing serialisation leaves the old file whole and no temporary file behind.
    with pytest.raises(TypeError):
        atomic.write_json(path, {"bad": object()})
    assert path.read_text(encoding="utf-8") == text and list(tmp_path.iterdir()) == [path]
