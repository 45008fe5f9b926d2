"""`chainrule generate text / score / eval` on the committed Optimum GPT-2 fixture."""

import json
from pathlib import Path

import pytest

from engines.cli import main
from tests.cli_helpers import run_cli

pytestmark = pytest.mark.usefixtures("isolated_user_models")
FIXTURES = str(Path(__file__).parent / "fixtures")


def test_generate_json_contract_and_seed_reproducibility(capsys, tmp_path):
    args = ["generate", "text", "--model", "tiny-gpt2-optimum", "--prompt", "ROMEO:", "--max-new-tokens", "12",
            "--temperature", "1.2", "--top-k", "50", "--seed", "123", "--count", "2", "--out", str(tmp_path / "s.txt")]
    a, _ = run_cli(capsys, FIXTURES, *args)
    b, _ = run_cli(capsys, FIXTURES, *args)
    assert a["model"] == "tiny-gpt2-optimum" and a["seed"] == 123
    assert a["settings"]["top_k"] == 50 and a["settings"]["temperature"] == 1.2
    assert [s["text"] for s in a["samples"]] == [s["text"] for s in b["samples"]]
    for s in a["samples"]:
        assert {"path", "total_logprob", "n", "text", "tokens", "logprobs"} <= set(s)
        assert s["n"] == len(s["tokens"]) == len(s["logprobs"]) == 12
        assert s["total_logprob"] == pytest.approx(sum(s["logprobs"]))
        assert "".join(s["tokens"]) == s["text"]
        assert Path(s["path"]).read_text() == s["text"]
    assert [Path(s["path"]).name for s in a["samples"]] == ["s_1.txt", "s_2.txt"]
    c, _ = run_cli(capsys, FIXTURES, *args[:-6], "--seed", "124", "--count", "1")
    assert c["samples"][0]["text"] != a["samples"][0]["text"]


def test_generated_logprobs_equal_scoring_the_same_text(capsys):
    gen, _ = run_cli(capsys, FIXTURES, "generate", "text", "--model", "tiny-gpt2-optimum", "--prompt", "KING:", "--max-new-tokens", "15", "--seed", "5")
    sample = gen["samples"][0]
    sc, _ = run_cli(capsys, FIXTURES, "score", "--model", "tiny-gpt2-optimum", "--prompt", "KING:", "--text", sample["text"])
    # BPE may split the re-encoded text differently; compare the totals of the same string
    if [e["id"] for e in sc["per_element"]] == sample["token_ids"]:
        assert sc["total_logprob"] == pytest.approx(sample["total_logprob"], abs=1e-3)
    assert {"total_logprob", "n", "bits_per_dim", "per_element"} <= set(sc)


def test_beam_returns_sequences_with_exact_likelihoods(capsys):
    out, _ = run_cli(capsys, FIXTURES, "generate", "text", "--model", "tiny-gpt2-optimum", "--prompt", "KING:", "--max-new-tokens", "6",
                      "--strategy", "beam", "--num-beams", "3", "--num-return-sequences", "2")
    assert len(out["samples"]) == 2
    assert out["samples"][0]["beam_score"] >= out["samples"][1]["beam_score"]
    for s in out["samples"]:
        assert s["total_logprob"] == pytest.approx(sum(s["logprobs"]))


def test_empty_prompt_is_explained(capsys):
    out, err = run_cli(capsys, FIXTURES, "generate", "text", "--model", "tiny-gpt2-optimum", "--prompt", "", "--max-new-tokens", "3", "--seed", "1")
    assert "empty prompt: starting from <|endoftext|>" in err
    assert out["notes"]


def test_eval_on_a_small_text_file(capsys, tmp_path):
    data = tmp_path / "t.txt"
    data.write_text("ROMEO:\nWhat is their name, and what their king?\n" * 40)
    out, _ = run_cli(capsys, FIXTURES, "eval", "--model", "tiny-gpt2-optimum", "--data", str(data), "--split", "val", "--limit", "1")
    assert out["n_examples"] == 1 and out["nats_per_element"] > 0
    assert {"nats_per_element", "nats_per_example", "bits_per_dim", "n_examples"} <= set(out)


@pytest.mark.parametrize(
    "argv, words",
    [
        (["generate", "text", "--model", "tiny-gpt2-optimum", "--max-new-tokens", "0"], "max new tokens"),
        (["eval", "--model", "tiny-gpt2-optimum", "--data", "/nonexistent/x.txt"], "cannot read /nonexistent/x.txt"),
        (["score", "--model", "tiny-gpt2-optimum", "--text", ""], "nothing to score"),
        (["score", "--model", "tiny-gpt2-optimum", "--image", "x.png"], "score it with --text"),
        (["generate", "text", "--model", "tiny-gpt2-optimum", "--out", "/nonexistent/dir/a.txt"], "does not exist"),
    ],
)
def test_text_errors_are_one_line(capsys, argv, words):
    code = main([*argv, "--models-dir", FIXTURES])
    _, err = capsys.readouterr()
    assert code == 1 and words in err and err.count("\n") == 1


def test_tokenizer_model_mismatch_is_refused(capsys, tmp_path):
    import shutil

    folder = tmp_path / "m" / "broken"
    shutil.copytree(Path(FIXTURES) / "tiny-gpt2-optimum", folder)
    card = {"id": "broken", "kind": "text", "files": {"decoder": "model.onnx"}, "context_length": 128,
            "architecture": {"n_layer": 2, "n_head": 2, "n_embd": 32}, "tokenizer": {"type": "char", "vocab": list("abc")}}
    (folder / "card.json").write_text(json.dumps(card))
    code = main(["generate", "text", "--model", "broken", "--models-dir", str(tmp_path / "m"), "--prompt", "abc"])
    _, err = capsys.readouterr()
    assert code == 1 and "do not match" in err


def test_eval_write_card_records_result_and_command(capsys, tmp_path):
    import shutil

    root = tmp_path / "m"
    shutil.copytree(Path(FIXTURES) / "tiny-gpt2-optimum", root / "tiny")
    card = {"id": "tiny", "kind": "text", "files": {"decoder": "model.onnx"}, "context_length": 128,
            "architecture": {"n_layer": 2, "n_head": 2, "n_embd": 32}, "tokenizer": {"type": "hf", "file": "tokenizer.json"}}
    (root / "tiny" / "card.json").write_text(json.dumps(card))
    data = tmp_path / "d.txt"
    data.write_text("ROMEO:\nWhat is their name?\n" * 30)
    code = main(["eval", "--model", "tiny", "--models-dir", str(root), "--data", str(data), "--split", "val", "--write-card"])
    assert code == 0
    metrics = json.loads((root / "tiny" / "card.json").read_text())["metrics"]["d/val"]
    assert metrics["nats_per_element"] > 0 and metrics["command"].startswith("chainrule eval --model tiny")
    assert "--write-card" not in metrics["command"]
