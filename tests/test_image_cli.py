"""`chainrule generate image / score --image / eval` on tiny exported PixelCNNs, and bad inputs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
from PIL import Image  # noqa: E402

from engines.cli import main  # noqa: E402
from tests.cli_helpers import error_line, must_not_generate, run_cli, save_png  # noqa: E402
from tests.image_models import export_model_dir, make_pixelcnn  # noqa: E402

pytestmark = pytest.mark.usefixtures("isolated_user_models")
H, W = 6, 7


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("image-cli-models")
    export_model_dir(make_pixelcnn(height=H, width=W, levels=256, n_classes=10), root, "tiny-mnist")
    export_model_dir(make_pixelcnn(height=5, width=5, output="bernoulli", levels=2, n_classes=0), root, "tiny-bmnist")
    return str(root)


def test_generate_writes_pngs_reproducibly_with_exact_likelihoods(capsys, models_dir, tmp_path):
    args = ["generate", "image", "--model", "tiny-mnist", "--label", "3", "--seed", "5", "--temperature", "0.9",
            "--count", "2", "--out", str(tmp_path / "s.png")]
    a, _ = run_cli(capsys, models_dir, *args)
    b, _ = run_cli(capsys, models_dir, *args)
    assert a["model"] == "tiny-mnist" and a["seed"] == 5 and a["settings"]["temperature"] == 0.9
    assert [s["pixels"] for s in a["samples"]] == [s["pixels"] for s in b["samples"]]
    for i, s in enumerate(a["samples"]):
        assert {"path", "total_logprob", "n", "bits_per_dim", "seed", "pixels"} <= set(s)
        assert s["seed"] == 5 + i and s["n"] == H * W
        assert s["total_logprob"] == pytest.approx(s["sampled_logprob"], abs=1e-3)
        saved = np.asarray(Image.open(s["path"]))
        assert saved.shape == (H, W) and np.array_equal(saved, np.array(s["pixels"]))
        sc, _ = run_cli(capsys, models_dir, "score", "--model", "tiny-mnist", "--image", s["path"], "--label", "3")
        assert sc["total_logprob"] == pytest.approx(s["total_logprob"], abs=1e-3)
        assert sum(e["logprob"] for e in sc["per_element"]) == pytest.approx(sc["total_logprob"])
        assert np.sum(sc["logprob_map"]) == pytest.approx(sc["total_logprob"])
        assert {"total_logprob", "n", "bits_per_dim", "per_element"} <= set(sc)
    assert [Path(s["path"]).name for s in a["samples"]] == ["s_1.png", "s_2.png"]


def test_inpainting_keeps_known_pixels_and_posterior_mode_reports_likelihood(capsys, models_dir, tmp_path):
    init = np.random.default_rng(0).integers(0, 2, (5, 5)) * 255
    mask = np.zeros((5, 5))
    mask[1:3, 1:4] = 255
    init_path, mask_path = save_png(tmp_path / "init.png", init), save_png(tmp_path / "mask.png", mask)
    out = tmp_path / "done.png"
    r, _ = run_cli(capsys, models_dir, "generate", "image", "--model", "tiny-bmnist", "--init", init_path, "--mask", mask_path,
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
    r2, _ = run_cli(capsys, models_dir, "generate", "image", "--model", "tiny-bmnist", "--init", init_path, "--mask", mask_path,
                "--seed", "1")
    assert np.array_equal((np.array(r2["samples"][0]["pixels"]) * 255)[keep], init[keep])


def test_any_size_and_mode_is_converted_with_notes(capsys, models_dir, tmp_path):
    rgba = np.zeros((50, 60, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[..., 3] = 255
    rgba[:10, :10, 3] = 0
    path = save_png(tmp_path / "big.png", rgba)
    sc, err = run_cli(capsys, models_dir, "score", "--model", "tiny-mnist", "--image", path)
    assert "resized from 60x50 to 7x6" in err and "transparent" in err and "grey" in err
    assert len(sc["per_element"]) == H * W


def test_eval_on_both_npz_layouts(capsys, models_dir, tmp_path):
    rng = np.random.default_rng(0)
    mnist = tmp_path / "mnist.npz"
    np.savez(mnist, x_train=rng.integers(0, 256, (4, H, W), dtype=np.uint8), y_train=np.arange(4),
             x_test=rng.integers(0, 256, (7, H, W), dtype=np.uint8), y_test=np.arange(7) % 10)
    r, _ = run_cli(capsys, models_dir, "eval", "--model", "tiny-mnist", "--data", str(mnist), "--limit", "5")
    assert r["n_examples"] == 5 and r["conditioning"] == "true labels"
    assert r["nats_per_example"] == pytest.approx(r["nats_per_element"] * H * W)
    assert r["bits_per_dim"] == pytest.approx(r["nats_per_element"] / np.log(2))
    binar = tmp_path / "binarized_mnist.npz"
    np.savez(binar, train=rng.integers(0, 2, (3, 25), dtype=np.uint8), valid=rng.integers(0, 2, (3, 25), dtype=np.uint8),
             test=rng.integers(0, 2, (6, 25), dtype=np.uint8))
    r, _ = run_cli(capsys, models_dir, "eval", "--model", "tiny-bmnist", "--data", str(binar), "--split", "val")
    assert r["n_examples"] == 3 and {"nats_per_element", "nats_per_example", "bits_per_dim"} <= set(r)
    assert "binarized" in error_line(capsys, models_dir, "eval", "--model", "tiny-bmnist", "--data", str(mnist))


def test_bad_inputs_give_one_line_errors_and_lose_nothing(capsys, models_dir, tmp_path):
    good = save_png(tmp_path / "good.png", np.zeros((5, 5)))
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(Path(save_png(tmp_path / "full.png", np.full((40, 40), 255))).read_bytes()[:60])
    big_mask = save_png(tmp_path / "big_mask.png", np.full((10, 10), 255))
    empty_mask = save_png(tmp_path / "empty_mask.png", np.zeros((5, 5)))
    full_mask = save_png(tmp_path / "full_mask.png", np.full((5, 5), 255))
    gen = ["generate", "image", "--model", "tiny-bmnist"]
    assert "not a readable image" in error_line(capsys, models_dir, "score", "--model", "tiny-bmnist", "--image", str(corrupt))
    assert "not a readable image" in error_line(capsys, models_dir, *gen, "--init", str(truncated), "--mask", good)
    assert "not found" in error_line(capsys, models_dir, *gen, "--init", str(tmp_path / "nope.png"), "--mask", good)
    assert "same size" in error_line(capsys, models_dir, *gen, "--init", good, "--mask", big_mask)
    assert "nothing to regenerate" in error_line(capsys, models_dir, *gen, "--init", good, "--mask", empty_mask)
    assert "white everywhere" in error_line(capsys, models_dir, *gen, "--init", good, "--mask", full_mask)
    assert "--init needs --mask" in error_line(capsys, models_dir, *gen, "--init", good)
    assert "candidates need an init image and a mask" in error_line(capsys, models_dir, *gen, "--candidates", "4")
    assert "out of range" in error_line(capsys, models_dir, "generate", "image", "--model", "tiny-mnist", "--label", "11")
    assert "out of range" in error_line(capsys, models_dir, "score", "--model", "tiny-mnist", "--image", good, "--label", "-1")
    assert "unconditional" in error_line(capsys, models_dir, *gen, "--label", "3")
    assert "beam" in error_line(capsys, models_dir, *gen, "--strategy", "beam")
    assert "--image" in error_line(capsys, models_dir, "score", "--model", "tiny-bmnist", "--text", "hello")
    # --out may not overwrite the user's drawing
    drawing = save_png(tmp_path / "drawing.png", np.eye(5) * 255)
    before = Path(drawing).read_bytes()
    assert "overwrite" in error_line(capsys, models_dir, *gen, "--init", drawing, "--mask",
                                     save_png(tmp_path / "m.png", np.eye(5)[::-1] * 255), "--out", drawing)
    assert Path(drawing).read_bytes() == before


def test_a_model_without_step_graphs_generates_with_the_naive_sampler(capsys, models_dir, tmp_path):
    """A card without row_step/pixel_step is a model too: every pixel runs the full network, same samples."""
    slow = tmp_path / "slow-models"
    slow.mkdir()
    folder = shutil.copytree(Path(models_dir) / "tiny-mnist", slow / "tiny-slow")
    card = json.loads((folder / "card.json").read_text())
    card["id"] = "tiny-slow"
    for role in ("row_step", "pixel_step"):
        (folder / card["files"].pop(role)).unlink()
        (card.get("io") or {}).pop(role, None)
    (folder / "card.json").write_text(json.dumps(card))
    args = ["generate", "image", "--label", "2", "--seed", "7", "--count", "2"]
    fast, _ = run_cli(capsys, models_dir, *args, "--model", "tiny-mnist")
    naive, _ = run_cli(capsys, str(slow), *args, "--model", "tiny-slow")
    assert fast["settings"]["method"] == "fast" and naive["settings"]["method"] == "naive"
    assert [s["pixels"] for s in naive["samples"]] == [s["pixels"] for s in fast["samples"]]
    for a, b in zip(naive["samples"], fast["samples"]):
        assert a["total_logprob"] == pytest.approx(b["total_logprob"], abs=1e-4)


def test_a_bad_out_folder_is_refused_before_any_generation(capsys, models_dir, tmp_path, monkeypatch):
    monkeypatch.setattr("engines.image.sampler.PixelSampler", must_not_generate)
    gen = ["generate", "image", "--model", "tiny-bmnist", "--seed", "1"]
    line = error_line(capsys, models_dir, *gen, "--out", str(tmp_path / "missing" / "s.png"))
    assert "missing" in line and "does not exist" in line and "nothing was generated" in line
    assert "is a folder" in error_line(capsys, models_dir, *gen, "--out", str(tmp_path))


@pytest.mark.parametrize("flags, named", [(["--temperature", "0.8"], "temperature 0.8"),
                                          (["--top-k", "1"], "greedy"),
                                          (["--strategy", "greedy"], "greedy"),
                                          (["--top-p", "0.9"], "top-p 0.9"),
                                          (["--min-p", "0.1"], "min-p 0.1")])
def test_posterior_candidates_need_plain_sampling(capsys, models_dir, tmp_path, monkeypatch, flags, named):
    """SIR weights p(known after | candidate) are right only for candidates drawn from the model itself."""
    monkeypatch.setattr("engines.image.sampler.PixelSampler", must_not_generate)
    init = save_png(tmp_path / "init.png", np.eye(5) * 255)
    mask = np.zeros((5, 5))
    mask[1:3] = 255
    line = error_line(capsys, models_dir, "generate", "image", "--model", "tiny-bmnist", "--init", init,
                      "--mask", save_png(tmp_path / "mask.png", mask), "--candidates", "4", *flags)
    assert "candidates need plain sampling" in line and named in line


def test_a_mask_at_the_models_size_goes_with_an_init_of_another_size(capsys, models_dir, tmp_path):
    init = np.zeros((10, 10))  # twice the model's 5x5
    init[:4] = 255
    mask = np.zeros((5, 5))
    mask[3:, 1:4] = 255  # at the model's size, as the studio saves it
    init_path, mask_path = save_png(tmp_path / "init.png", init), save_png(tmp_path / "mask.png", mask)
    r, err = run_cli(capsys, models_dir, "generate", "image", "--model", "tiny-bmnist", "--init", init_path,
                 "--mask", mask_path, "--seed", "3")
    assert "resized from 10x10 to 5x5" in err
    pixels = np.array(r["samples"][0]["pixels"])
    assert np.array_equal(pixels[mask == 0], (init[::2, ::2] > 0)[mask == 0])  # known pixels kept
    assert r["samples"][0]["n_sampled"] == 6
    line = error_line(capsys, models_dir, "generate", "image", "--model", "tiny-bmnist", "--init", init_path,
                      "--mask", save_png(tmp_path / "odd.png", np.full((7, 7), 255)))
    assert "7x7" in line and "10x10" in line and "5x5, the model's size" in line and "odd.png" in line


def test_an_image_mode_that_cannot_be_converted_names_the_file(tmp_path, monkeypatch):
    from engines.errors import InputError
    from engines.image.png import read_image, read_mask

    path = save_png(tmp_path / "odd-mode.png", np.zeros((5, 5)))
    # Pillow has modes it cannot convert to RGB/RGBA ("La": premultiplied grey + alpha raises ValueError)
    monkeypatch.setattr("engines.image.png._open", lambda p, what: Image.new("La", (5, 5)))
    with pytest.raises(InputError, match="odd-mode.png.*'La'"):
        read_image(path, channels=1, height=5, width=5, levels=2)
    with pytest.raises(InputError, match="odd-mode.png.*'La'"):
        read_mask(path, height=5, width=5)


@pytest.mark.parametrize("argv, flag", [
    (["score", "--model", "tiny-mnist", "--ensemble", "2"], "--ensemble"),
    (["score", "--model", "tiny-mnist", "--digit", "3"], "--digit"),
    (["score", "--model", "tiny-mnist", "--speaker", "lucas"], "--speaker"),
    (["score", "--model", "tiny-mnist", "--ordering", "column"], "--ordering"),
    (["score", "--model", "tiny-mnist", "--prompt", "hello"], "--prompt"),
])
def test_options_for_other_kinds_of_model_are_refused(capsys, models_dir, tmp_path, argv, flag):
    good = save_png(tmp_path / "good.png", np.zeros((H, W)))
    line = error_line(capsys, models_dir, *argv, "--image", good)
    assert f"{flag} does not apply to tiny-mnist" in line and "PixelCNN" in line
    rng = np.random.default_rng(0)
    mnist = tmp_path / "mnist.npz"
    np.savez(mnist, x_train=rng.integers(0, 256, (2, H, W), dtype=np.uint8), y_train=np.arange(2),
             x_test=rng.integers(0, 256, (2, H, W), dtype=np.uint8), y_test=np.arange(2))
    line = error_line(capsys, models_dir, "eval", "--model", "tiny-mnist", "--data", str(mnist), "--ensemble", "2")
    assert "--ensemble does not apply" in line


def test_bench_image_times_both_samplers_and_writes_each_models_card(capsys, tmp_path, monkeypatch):
    monkeypatch.setattr("engines.registry.shipped_models_dir", lambda: tmp_path / "no-shipped-models")
    root = tmp_path / "bench-models"
    export_model_dir(make_pixelcnn(height=4, width=5, levels=256, n_classes=10), root, "mnist-pixelcnn")
    export_model_dir(make_pixelcnn(height=4, width=4, output="bernoulli", levels=2, n_classes=0), root,
                     "bmnist-pixelcnn")
    assert main(["bench", "image", "--models-dir", str(root), "--json", "--write-card"]) == 0
    out, err = capsys.readouterr()
    r = json.loads(out)["results"]
    assert r["model"] == "mnist-pixelcnn" and r["image"] == "5x4x1" and r["batch"] == 1
    for res in (r, r["others"]["bmnist-pixelcnn"]):
        assert res["naive_seconds_per_image"] > 0 and res["fast_seconds_per_image"] > 0
        assert res["same_samples"] is True  # the cached path draws exactly what the full network draws
        assert res["speedup"] == pytest.approx(res["naive_seconds_per_image"] / res["fast_seconds_per_image"], rel=0.2)
    assert r["naive_forward_passes"] == 20 and r["others"]["bmnist-pixelcnn"]["naive_forward_passes"] == 16
    # --write-card: each model's own figures in its own card, with the command that measured them
    for model_id, res in (("mnist-pixelcnn", r), ("bmnist-pixelcnn", r["others"]["bmnist-pixelcnn"])):
        card = json.loads((root / model_id / "card.json").read_text())["metrics"]["bench/image"]
        assert card["model"] == model_id and card["same_samples"] is True
        assert card["fast_seconds_per_image"] == res["fast_seconds_per_image"]
        assert card["command"] == f"chainrule bench image --models-dir {root} --json"
        assert "others" not in card
        assert str(root / model_id / "card.json") in err
