"""The CLI contract: command names, JSON keys and one-line errors."""

import json
import subprocess
import sys

import pytest

from engines.cli import config_from_args, build_parser, main
from tests.model_dirs import make_model_dir


@pytest.fixture(autouse=True)
def _isolated_user_dir(tmp_path, monkeypatch):
    monkeypatch.setattr("engines.registry.user_models_dir", lambda: tmp_path / "user-models")
    monkeypatch.delenv("CHAINRULE_MODELS_DIR", raising=False)


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_models_json_has_the_contract_keys(tmp_path, capsys):
    make_model_dir(tmp_path / "m", "tiny")
    code, out, err = run(capsys, "models", "--json", "--models-dir", str(tmp_path / "m"))
    assert code == 0 and err == ""
    rows = {r["id"]: r for r in json.loads(out)}
    row = rows["tiny"]
    assert {"id", "kind", "parameters", "size", "metrics", "provider"} <= set(row)
    assert row["provider"] in ("CPUExecutionProvider", "CUDAExecutionProvider")


def test_models_table_lists_models(tmp_path, capsys):
    make_model_dir(tmp_path / "m", "tiny")
    code, out, _ = run(capsys, "models", "--models-dir", str(tmp_path / "m"))
    assert code == 0 and "tiny" in out and "provider:" in out


@pytest.mark.parametrize(
    "argv, words",
    [
        (["generate", "text", "--model", "nope"], "unknown model 'nope'"),
        (["generate", "text", "--model", "x", "--top-p", "0"], "top-p = 0.0 is invalid"),
        (["generate", "text", "--model", "x", "--temperature", "-1"], "temperature = -1.0 is invalid"),
        (["generate", "text", "--model", "x", "--chain", "top-k,warp"], "unknown sampler(s) warp"),
        (["score", "--model", "nope", "--text", "hi"], "unknown model"),
    ],
)
def test_errors_are_one_line_and_nonzero(capsys, argv, words):
    code, out, err = run(capsys, *argv)
    assert code != 0
    assert words in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_usage_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["generate", "video", "--model", "x"])
    assert exc.value.code == 2


def test_decoding_options_override_card_defaults():
    args = build_parser().parse_args(
        ["generate", "text", "--model", "m", "--top-k", "5", "--chain", "temperature,top-k", "--seed", "9"]
    )
    cfg = config_from_args(args, {"temperature": 0.7, "top_k": 40})
    assert cfg.temperature == 0.7 and cfg.top_k == 5 and cfg.seed == 9
    assert cfg.chain == ("temperature", "top_k")


def test_module_entry_point_and_help():
    out = subprocess.run([sys.executable, "-m", "engines", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    for word in ("models", "generate", "score", "eval", "bench", "train"):
        assert word in out.stdout
