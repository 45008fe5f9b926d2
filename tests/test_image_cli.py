"""`chainrule generate image / score --image / eval` on tiny exported PixelCNNs, and bad inputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
from PIL import Image  # noqa: E402

from engines.cli import main  # noqa: E402
from tests.image_models import export_model_dir, make_pixelcnn  # noqa: E402

H, W = 6, 7


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("image-cli-models")
    export_model_dir(make_pixelcnn(height=H, width=W, levels=256, n_classes=10), root, "tiny-mnist")
    export_model_dir(make_pixelcnn(height=5, width=5, output="bernoulli", levels=2, n_classes=0), root, "tiny-bmnist")
    return str(root)


@pytest.fixture(autouse=True)
def _isolated_user_dir(tmp_path, monkeypatch):
    monkeypatch.setattr("engines.registry.user_models_dir", lambda: tmp_path / "user-models")
    monkeypatch.delenv("CHAINRULE_MODELS_DIR", raising=False)


def run(capsys, models_dir, *argv, code=0):
    got = main([*argv, "--models-dir", models_dir, "--json"])
    out, err = capsys.readouterr()
    assert got == code, err
    return (json.loads(out) if code == 0 else None), err


def error_line(capsys, models_dir, *argv) -> str:
    _, err = run(capsys, models_dir, *argv, code=1)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("chainrule: error: "), err
    return lines[0]


def save(path: Path, array: np.ndarray) -> str:
    Image.fromarray(array.astype(np.uint8)).save(path)  # (H, W): L, (H, W, 4): RGBA
    return str(path)


def test_generate_writes_pngs_reproducibly_with_exact_likelihoods(capsys, models_dir, tmp_path):
    args = ["generate", "image", "--model", "tiny-mnist", "--label", "3", "--seed", "5", "--temperature", "0.9",
            "--count", "2", "--out", str(tmp_path / "s.png")]
    a, _ = run(capsys, models_dir, *args)
    b, _ = run(capsys, models_dir, *args)
    assert a["model"] == "tiny-mnist" and a["seed"] == 5 and a["settings"]["temperature"] == 0.9
    assert [s["pixels"] for s in a["samples"]] == [s["pixels"] for s in b["samples"]]
    for i, s in enumerate(a["samples"]):
        assert {"path", "total_logprob", "n", "bits_per_dim", "seed", "pixels"} <= set(s)
        assert s["seed"] == 5 + i and s["n"] == H * W
        assert s["total_logprob"] == pytest.approx(s["sampled_logprob"], abs=1e-3)
        saved = np.asarray(Image.open(s["path"]))
        assert saved.shape == (H, W) and np.array_equal(saved, np.array(s["pixels"]))
        sc, _ = run(capsys, models_dir, "score", "--model", "tiny-mnist", "--image", s["path"], "--label", "3")
        assert sc["total_logprob"] == pytest.approx(s["total_logprob"], abs=1e-3)
        assert sum(e["logprob"] for e in sc["per_element"]) == pytest.approx(sc["total_logprob"])
        assert np.sum(sc["logprob_map"]) == pytest.approx(sc["total_logprob"])
        assert {"total_logprob", "n", "bits_per_dim", "per_element"} <= set(sc)
    assert [Path(s["path"]).name for s in a["samples"]] == ["s_1.png", "s_2.png"]


def test_inpainting_keeps_known_pixels_and_posterior_mode_reports_likelihood(capsys, models_dir, tmp_path):
    init = np.random.default_rng(0).integers(0, 2, (5, 5)) * 255
    mask = np.zeros((5, 5))
    mask[1:3, 1:4] = 255
    init_path, mask_path = save(tmp_path / "init.png", init), save(tmp_path / "mask.png", mask)
    out = tmp_path / "done.png"
    r, _ = run(capsys, models_dir, "generate", "image", "--model", "tiny-bmnist", "--init", init_path, "--mask", mask_path,
               "--seed", "1", "--candidates", "8", "--out", str(out))
    s = r["samples"][0]
    done = np.asarray(Image.open(out))
    keep = mask == 0
    assert np.array_equal(done[keep], init[keep])
    post = s["posterior"]
    assert post["candidates"] == 8 and 0 <= post["chosen"] < 8 and len(post["weights"]) == 8
    assert post["known_after_logprob"] == pytest.approx(post["candidate_known_after_logprobs"][post["chosen"]])
    assert s["n_sampled"] == 6 and s["total_logprob"] == pytest.approx(s["sampled_logprob"] + s["known_logprob"])
    # the same run without candidates also keeps the known pixels
    r2, _ = run(capsys, models_dir, "generate", "image", "--model", "tiny-bmnist", "--init", init_path, "--mask", mask_path,
                "--seed", "1")
    assert np.array_equal((np.array(r2["samples"][0]["pixels"]) * 255)[keep], init[keep])


def test_any_size_and_mode_is_converted_with_notes(capsys, models_dir, tmp_path):
    rgba = np.zeros((50, 60, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[..., 3] = 255
    rgba[:10, :10, 3] = 0
    path = save(tmp_path / "big.png", rgba)
    sc, err = run(capsys, models_dir, "score", "--model", "tiny-mnist", "--image", path)
    assert "resized from 60x50 to 7x6" in err and "transparent" in err and "grey" in err
    assert len(sc["per_element"]) == H * W


def test_eval_on_both_npz_layouts(capsys, models_dir, tmp_path):
    rng = np.random.default_rng(0)
    mnist = tmp_path / "mnist.npz"
    np.savez(mnist, x_train=rng.integers(0, 256, (4, H, W), dtype=np.uint8), y_train=np.arange(4),
             x_test=rng.integers(0, 256, (7, H, W), dtype=np.uint8), y_test=np.arange(7) % 10)
    r, _ = run(capsys, models_dir, "eval", "--model", "tiny-mnist", "--data", str(mnist), "--limit", "5")
    assert r["n_examples"] == 5 and r["conditioning"] == "true labels"
    assert r["nats_per_example"] == pytest.approx(r["nats_per_element"] * H * W)
    assert r["bits_per_dim"] == pytest.approx(r["nats_per_element"] / np.log(2))
    binar = tmp_path / "binarized_mnist.npz"
    np.savez(binar, train=rng.integers(0, 2, (3, 25), dtype=np.uint8), valid=rng.integers(0, 2, (3, 25), dtype=np.uint8),
             test=rng.integers(0, 2, (6, 25), dtype=np.uint8))
    r, _ = run(capsys, models_dir, "eval", "--model", "tiny-bmnist", "--data", str(binar), "--split", "val")
    assert r["n_examples"] == 3 and {"nats_per_element", "nats_per_example", "bits_per_dim"} <= set(r)
    assert "binarized" in error_line(capsys, models_dir, "eval", "--model", "tiny-bmnist", "--data", str(mnist))


def test_bad_inputs_give_one_line_errors_and_lose_nothing(capsys, models_dir, tmp_path):
    good = save(tmp_path / "good.png", np.zeros((5, 5)))
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(Path(save(tmp_path / "full.png", np.full((40, 40), 255))).read_bytes()[:60])
    big_mask = save(tmp_path / "big_mask.png", np.full((10, 10), 255))
    empty_mask = save(tmp_path / "empty_mask.png", np.zeros((5, 5)))
    full_mask = save(tmp_path / "full_mask.png", np.full((5, 5), 255))
    gen = ["generate", "image", "--model", "tiny-bmnist"]
    assert "not a readable image" in error_line(capsys, models_dir, "score", "--model", "tiny-bmnist", "--image", str(corrupt))
    assert "not a readable image" in error_line(capsys, models_dir, *gen, "--init", str(truncated), "--mask", good)
    assert "not found" in error_line(capsys, models_dir, *gen, "--init", str(tmp_path / "nope.png"), "--mask", good)
    assert "same size" in error_line(capsys, models_dir, *gen, "--init", good, "--mask", big_mask)
    assert "nothing to regenerate" in error_line(capsys, models_dir, *gen, "--init", good, "--mask", empty_mask)
    assert "white everywhere" in error_line(capsys, models_dir, *gen, "--init", good, "--mask", full_mask)
    assert "--init needs --mask" in error_line(capsys, models_dir, *gen, "--init", good)
    assert "--candidates needs" in error_line(capsys, models_dir, *gen, "--candidates", "4")
    assert "out of range" in error_line(capsys, models_dir, "generate", "image", "--model", "tiny-mnist", "--label", "11")
    assert "out of range" in error_line(capsys, models_dir, "score", "--model", "tiny-mnist", "--image", good, "--label", "-1")
    assert "unconditional" in error_line(capsys, models_dir, *gen, "--label", "3")
    assert "beam" in error_line(capsys, models_dir, *gen, "--strategy", "beam")
    assert "--image" in error_line(capsys, models_dir, "score", "--model", "tiny-bmnist", "--text", "hello")
    # --out may not overwrite the user's drawing
    drawing = save(tmp_path / "drawing.png", np.eye(5) * 255)
    before = Path(drawing).read_bytes()
    assert "overwrite" in error_line(capsys, models_dir, *gen, "--init", drawing, "--mask",
                                     save(tmp_path / "m.png", np.eye(5)[::-1] * 255), "--out", drawing)
    assert Path(drawing).read_bytes() == before
