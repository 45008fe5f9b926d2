"""The shared training loop (engines.training.loop.fit): a resumed run continues exactly."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from engines.cli import main  # noqa: E402


@pytest.mark.parametrize("family,extra", [("nade", ["--hidden", "6", "--block", "5"]),
                                          ("made", ["--hidden", "6", "--n-masks", "3", "--default-k", "3", "--eval-k", "2"])])
def test_half_then_resume_equals_straight(tmp_path, capsys, family, extra):
    rng = np.random.default_rng(1)
    data = tmp_path / "binarized_mnist.npz"
    np.savez(data, **{k: rng.integers(0, 2, (n, 16), dtype=np.uint8) for k, n in
                      (("train", 40), ("valid", 8), ("test", 8))})
    # a constant learning rate after the warm-up, so the schedule does not depend on --max-iters
    common = ["train", family, "--data", str(data), "--batch-size", "8", "--eval-interval", "3", "--threads", "1",
              "--warmup-iters", "2", "--lr", "0.05", "--min-lr", "0.05", "--grad-clip", "1.0", "--no-final-eval",
              *extra]
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert main([*common, "--out", str(straight), "--max-iters", "8"]) == 0
    assert main([*common, "--out", str(split), "--max-iters", "4"]) == 0
    assert main([*common, "--out", str(split), "--max-iters", "8", "--resume"]) == 0
    capsys.readouterr()

    a, b = (torch.load(d / "last.pt", weights_only=False) for d in (straight, split))
    assert a["iter"] == b["iter"] == 7
    assert a["model"].keys() == b["model"].keys()
    for name in a["model"]:
        assert torch.equal(a["model"][name], b["model"][name]), name
    sa, sb = a["optimizer"]["state"], b["optimizer"]["state"]
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k][n], sb[k][n]) for k in sa for n in sa[k])

    records = [json.loads(line) for line in (split / "log.jsonl").read_text().splitlines()]
    assert [r["start_iter"] for r in records if r["event"] == "start"] == [0, 4]
    assert [r["iter"] for r in records if r["event"] == "eval"] == [3, 4, 6, 8]
    last = [json.loads(line) for line in (straight / "log.jsonl").read_text().splitlines()][-2]
    assert last["event"] == "eval" and last["iter"] == 8 and last["val_nats_per_image"] == records[-2]["val_nats_per_image"]


def test_a_crafted_checkpoint_cannot_run_code(tmp_path):
    """Checkpoints load with weights_only=True: a pickle that would run code on load is refused instead."""
    import pickle

    import torch

    from engines.training.loop import load_checkpoint, load_resume

    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    (tmp_path / "last.pt").write_bytes(pickle.dumps({"model": Evil()}))
    with pytest.raises(pickle.UnpicklingError):
        load_resume(tmp_path)
    with pytest.raises(pickle.UnpicklingError):
        load_checkpoint(tmp_path / "last.pt", lambda config: torch.nn.Linear(1, 1))
    assert not marker.exists()
