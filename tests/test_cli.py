"""The CLI contract: command names, JSON keys and one-line errors."""

import json
import subprocess
import sys

import pytest

from engines.cli import config_from_args, build_parser, main
from tests.model_dirs import make_model_dir

pytestmark = pytest.mark.usefixtures("isolated_user_models")


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


def _eval_args(model_dir, data="binarized_mnist.npz"):
    args = build_parser().parse_args(["eval", "--model", "tiny", "--data", data, "--write-card",
                                      "--models-dir", str(model_dir)])
    args.argv = ["eval", "--model", "tiny", "--data", data, "--write-card", "--models-dir", str(model_dir)]
    return args


def test_record_metrics_writes_the_result_and_its_command(tmp_path):
    from engines.cli import record_metrics
    from engines.registry import read_card

    folder = make_model_dir(tmp_path / "m", "tiny")
    record_metrics(read_card(folder), _eval_args(tmp_path / "m"), {"bits_per_dim": 0.5, "n": 3, "notes": ["x"]})
    entry = json.loads((folder / "card.json").read_text())["metrics"]["binarized_mnist/test"]
    assert entry["bits_per_dim"] == 0.5 and entry["n"] == 3 and "notes" not in entry  # numbers and strings only
    assert entry["command"] == f"chainrule eval --model tiny --data binarized_mnist.npz --models-dir {tmp_path / 'm'}"


@pytest.mark.parametrize("text", ['{"id": "tiny", "metrics": ', "[1, 2]", '{"metrics": [1]}', "\udcff"])
def test_record_metrics_into_a_corrupt_card_is_one_line_naming_it(tmp_path, text):
    from engines.cli import record_metrics
    from engines.errors import ChainruleError
    from engines.registry import read_card

    folder = make_model_dir(tmp_path / "m", "tiny")
    info = read_card(folder)  # read while it was fine; the card breaks before the result is written
    card = folder / "card.json"
    card.write_bytes(text.encode("utf-8", "surrogateescape"))
    with pytest.raises(ChainruleError) as exc:
        record_metrics(info, _eval_args(tmp_path / "m"), {"bits_per_dim": 0.5})
    assert str(card) in str(exc.value) and "\n" not in str(exc.value)
    assert card.read_bytes() == text.encode("utf-8", "surrogateescape")  # left as it was


def test_a_bench_result_that_names_no_model_is_not_written(tmp_path):
    import types

    from engines.cli import bench_card_parts
    from engines.errors import ChainruleError

    with pytest.raises(ChainruleError, match="which model"):
        bench_card_parts(types.SimpleNamespace(), {"tokens_per_second": 3.0})
    assert bench_card_parts(types.SimpleNamespace(), {"model": "m", "x": 1}) == {"m": {"model": "m", "x": 1}}
