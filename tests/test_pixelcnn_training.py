"""`chainrule train pixelcnn` end to end on a tiny data file: log, checkpoints, resume, export, engine."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("torch")

from engines.cli import main  # noqa: E402


def test_train_resume_export_and_score(tmp_path, capsys):
    rng = np.random.default_rng(0)
    data = tmp_path / "binarized_mnist.npz"
    np.savez(data, train=rng.integers(0, 2, (40, 16), dtype=np.uint8), valid=rng.integers(0, 2, (10, 16), dtype=np.uint8),
             test=rng.integers(0, 2, (10, 16), dtype=np.uint8))
    out = tmp_path / "run"
    common = ["train", "pixelcnn", "--data", str(data), "--out", str(out), "--n-filters", "6", "--n-layers", "2",
              "--head-filters", "8", "--first-kernel-size", "3", "--batch-size", "8", "--eval-interval", "2",
              "--threads", "1", "--warmup-iters", "1"]
    assert main([*common, "--max-iters", "4", "--no-final-eval"]) == 0
    assert main([*common, "--max-iters", "6", "--resume", "--bf16"]) == 0  # bfloat16 autocast path too
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    starts = [r for r in records if r["event"] == "start"]
    assert starts[0]["command"].startswith("chainrule train pixelcnn --data") and starts[1]["start_iter"] == 4
    assert [r["iter"] for r in records if r["event"] == "eval"] == [2, 4, 6]
    final = [r for r in records if r["event"] == "final_eval"][0]
    assert final["test"]["n_images"] == 10 and final["val"]["n_images"] == 10
    assert (out / "ckpt.pt").exists() and (out / "last.pt").exists()

    from engines.training.export_pixelcnn import main as export_main

    models = tmp_path / "models"
    assert export_main(["--ckpt", str(out / "ckpt.pt"), "--out", str(models / "tiny-trained")]) == 0
    card = json.loads((models / "tiny-trained" / "card.json").read_text())
    assert card["kind"] == "image" and card["output"] == "bernoulli" and card["conditioning"]["type"] == "none"
    assert card["data"]["train_command"].startswith("chainrule train pixelcnn")
    assert card["metrics"]["test_nats_per_image"] == pytest.approx(final["test"]["nats_per_image"])
    capsys.readouterr()
    assert main(["eval", "--model", "tiny-trained", "--models-dir", str(models), "--data", str(data), "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["nats_per_example"] == pytest.approx(final["test"]["nats_per_image"], rel=1e-4)
