"""`chainrule generate image / score / eval / bench density` with tiny exported NADE and MADE models,
and the bad inputs a user can give (one clear line, non-zero exit)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")  # the tiny models are built in torch: skip without the train extra
from PIL import Image  # noqa: E402

from engines.cli import main  # noqa: E402
from engines.density.orderings import made_masks, make_ordering_from_spec  # noqa: E402
from tests.cli_helpers import error_line, run_cli, save_png  # noqa: E402
from tests.density_models import export_made_dir, export_nade_dir, make_made, make_nade  # noqa: E402

pytestmark = pytest.mark.usefixtures("isolated_user_models")
S = 3  # 3 x 3 images, D = 9
D = S * S
ORDERS = ("raster", "random:1", "column")


def _export(root: Path, nade_id="tiny-nade", made_id="tiny-made"):
    nade = make_nade(dims=D, hidden=6, seed=2)
    made = make_made(dims=D, hidden=(12, 10), seed=1)
    if nade_id:
        export_nade_dir(nade, root, nade_id, meta={"command": "test", "iter": 0, "data": {"height": S, "width": S}})
    if made_id:
        export_made_dir(made, root, made_id, orderings=ORDERS, height=S, width=S)
    return nade, made


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("density-cli-models")
    nade, made = _export(root)
    return {"dir": str(root), "nade": nade, "made": made}


def _torch_log_prob(models, family, x: np.ndarray, k: int | None = None) -> np.ndarray:
    """log p(x) from the torch models the tiny ONNX graphs were exported from."""
    t = torch.from_numpy(x.astype(np.float32))
    with torch.no_grad():
        if family == "nade":
            return models["nade"].log_prob(t).numpy()
        sets = [[torch.from_numpy(m) for m in made_masks(make_ordering_from_spec(s, D, S, S), (12, 10), i)]
                for i, s in enumerate(ORDERS)][:k or len(ORDERS)]
        return models["made"].log_prob_mixture(t, sets).numpy()


# --- generate and score ---------------------------------------------------------------------

@pytest.mark.parametrize("model_id", ["tiny-nade", "tiny-made"])
def test_generate_writes_pngs_reproducibly_and_score_agrees(capsys, models, tmp_path, model_id):
    args = ["generate", "image", "--model", model_id, "--seed", "4", "--count", "3", "--out", str(tmp_path / "s.png")]
    a, _ = run_cli(capsys, models["dir"], *args)
    b, _ = run_cli(capsys, models["dir"], *args)
    assert a["model"] == model_id and a["seed"] == 4 and a["settings"]["ordering"] == "raster"
    assert [s["pixels"] for s in a["samples"]] == [s["pixels"] for s in b["samples"]]
    assert [Path(s["path"]).name for s in a["samples"]] == ["s_1.png", "s_2.png", "s_3.png"]
    for i, s in enumerate(a["samples"]):
        assert s["seed"] == 4 + i and s["n"] == D and s["n_sampled"] == D and s["known_logprob"] == 0.0
        assert s["total_logprob"] == pytest.approx(s["sampled_logprob"], abs=1e-4)
        assert s["bits_per_dim"] == pytest.approx(-s["total_logprob"] / np.log(2) / D)
        saved = np.asarray(Image.open(s["path"]))
        assert saved.shape == (S, S) and np.array_equal(saved, np.array(s["pixels"]) * 255)
        sc, _ = run_cli(capsys, models["dir"], "score", "--model", model_id, "--image", s["path"])
        x = np.array(s["pixels"]).reshape(1, D)
        assert sc["total_logprob"] == pytest.approx(float(_torch_log_prob(models, model_id[5:], x)[0]), abs=1e-4)
        assert sum(e["logprob"] for e in sc["per_element"]) == pytest.approx(sc["per_element_logprob"])
        assert np.sum(sc["logprob_map"]) == pytest.approx(sc["per_element_logprob"])
        if model_id == "tiny-nade":
            assert sc["total_logprob"] == pytest.approx(s["total_logprob"], abs=1e-4)
            assert sc["per_element_logprob"] == pytest.approx(sc["total_logprob"])
        else:  # sampled in raster order = training mask 0, so K = 1 is the sampling model; default K the mixture
            assert s["mask_seed"] == 0 and s["ensemble_k"] == 3
            assert sc["ensemble_k"] == 3 and sc["total_logprob"] == pytest.approx(s["ensemble_logprob"], abs=1e-4)
            one, _ = run_cli(capsys, models["dir"], "score", "--model", model_id, "--image", s["path"], "--ensemble", "1")
            assert one["total_logprob"] == pytest.approx(s["total_logprob"], abs=1e-4)


def test_made_generates_in_any_ordering(capsys, models):
    seen = {}
    for ordering in ("raster", "reverse", "column", "random:7"):
        r, err = run_cli(capsys, models["dir"], "generate", "image", "--model", "tiny-made", "--ordering", ordering,
                     "--seed", "0", "--count", "6")
        assert r["settings"]["ordering"] == ordering and r["samples"][0]["ordering"] == ordering
        for s in r["samples"]:
            assert s["total_logprob"] == pytest.approx(s["sampled_logprob"], abs=1e-4)
        seen[ordering] = [s["pixels"] for s in r["samples"]]
        # the card trained raster, random:1 and column: the others are exact but get a note
        untrained = ordering not in ORDERS
        assert ("exact, but this ordering was not trained; samples may be poorer" in err) == untrained, (ordering, err)
        assert any("not trained" in n for n in r["notes"]) == untrained
    assert seen["raster"] != seen["reverse"]
    # `random` without a seed is the card's first trained random ordering, not an untrained random:0
    r, err = run_cli(capsys, models["dir"], "generate", "image", "--model", "tiny-made", "--ordering", "random", "--seed", "0")
    assert r["settings"]["ordering"] == "random:1" and "not trained" not in err
    explicit, _ = run_cli(capsys, models["dir"], "generate", "image", "--model", "tiny-made", "--ordering", "random:1",
                      "--seed", "0")
    assert explicit["samples"][0]["pixels"] == r["samples"][0]["pixels"]


def _torch_conditionals(models, spec: str, mask_seed: int, x: np.ndarray) -> np.ndarray:
    """(D,) log p(x_d | pixels before d) from the torch MADE under the masks of (spec, seed)."""
    from engines.density.model import log_bernoulli

    masks = [torch.from_numpy(m) for m in made_masks(make_ordering_from_spec(spec, D, S, S), (12, 10), mask_seed)]
    with torch.no_grad():
        logits = models["made"](torch.from_numpy(x.astype(np.float32)), masks).numpy()
    return log_bernoulli(logits, x)[0]


def test_score_gives_the_conditionals_of_the_asked_ordering(capsys, models, tmp_path):
    image = np.array([[255, 0, 255], [0, 255, 0], [255, 255, 0]])
    path = save_png(tmp_path / "x.png", image)
    x = (image.reshape(1, D) > 0).astype(np.float32)
    default, _ = run_cli(capsys, models["dir"], "score", "--model", "tiny-made", "--image", path)
    assert default["per_element_ordering"] == "raster"
    per_ordering = {}
    for asked, spec, seed in [("column", "column", 2), ("random", "random:1", 1), ("random:1", "random:1", 1),
                              ("reverse", "reverse", 0), ("random:12345", "random:12345", 0)]:
        r, err = run_cli(capsys, models["dir"], "score", "--model", "tiny-made", "--image", path, "--ordering", asked)
        assert r["per_element_ordering"] == spec and r["per_element_mask_seed"] == seed
        got = np.array([e["logprob"] for e in r["per_element"]])
        np.testing.assert_allclose(got, _torch_conditionals(models, spec, seed, x), atol=1e-5)
        assert r["per_element_logprob"] == pytest.approx(got.sum())
        order = make_ordering_from_spec(spec, D, S, S)
        assert [e["position"] for e in r["per_element"]] == np.argsort(order).tolist()
        assert r["total_logprob"] == pytest.approx(default["total_logprob"])  # the score stays the mixture
        untrained = spec not in ORDERS
        assert r["per_element_ordering_trained"] is not untrained
        assert ("this ordering was not trained" in err) == untrained, (asked, err)
        per_ordering[spec] = got
    assert not np.allclose(per_ordering["column"], per_ordering["reverse"])  # the ordering really changes them
    # NADE has raster only; a PixelCNN has no orderings to choose
    nade, _ = run_cli(capsys, models["dir"], "score", "--model", "tiny-nade", "--image", path, "--ordering", "raster")
    assert nade["per_element_ordering"] == "raster"
    assert "raster order only" in error_line(capsys, models["dir"], "score", "--model", "tiny-nade", "--image", path,
                                             "--ordering", "column")


def test_made_inpaints_a_scattered_mask_exactly(capsys, models, tmp_path):
    init = np.array([[255, 0, 255], [0, 0, 0], [255, 255, 0]])
    mask = np.array([[0, 255, 0], [255, 0, 255], [0, 255, 0]])  # a checkerboard: scattered
    init_path, mask_path = save_png(tmp_path / "init.png", init), save_png(tmp_path / "mask.png", mask)
    out = tmp_path / "done.png"
    r, _ = run_cli(capsys, models["dir"], "generate", "image", "--model", "tiny-made", "--init", init_path,
               "--mask", mask_path, "--ordering", "column", "--seed", "2", "--count", "4", "--out", str(out))
    keep = mask == 0
    for s in r["samples"]:
        done = np.asarray(Image.open(s["path"]))
        assert np.array_equal(done[keep], init[keep])  # bit-exact
        assert s["n_sampled"] == int((~keep).sum()) and s["inpainting"].startswith("exact")
        assert s["total_logprob"] == pytest.approx(s["sampled_logprob"] + s["known_logprob"])
        assert s["sampled_logprob"] < 0 and s["known_logprob"] < 0
    # NADE inpaints a top part; a hole with known pixels below it is refused with a pointer to MADE
    top = np.zeros((S, S))
    top[1:] = 255
    r, _ = run_cli(capsys, models["dir"], "generate", "image", "--model", "tiny-nade", "--init", init_path,
               "--mask", save_png(tmp_path / "top.png", top), "--seed", "2")
    assert np.array_equal((np.array(r["samples"][0]["pixels"]) * 255)[0], init[0])
    line = error_line(capsys, models["dir"], "generate", "image", "--model", "tiny-nade", "--init", init_path,
                      "--mask", mask_path)
    assert "NADE cannot condition" in line and "MADE" in line


# --- eval -------------------------------------------------------------------------------------

def _binarized(tmp_path) -> tuple[str, np.ndarray]:
    rng = np.random.default_rng(0)
    test = rng.integers(0, 2, (13, D), dtype=np.uint8)
    path = tmp_path / "binarized_mnist.npz"
    np.savez(path, train=rng.integers(0, 2, (4, D), dtype=np.uint8), valid=rng.integers(0, 2, (5, D), dtype=np.uint8),
             test=test)
    return str(path), test


def test_eval_reports_exact_nats_per_image_with_the_ensemble(capsys, models, tmp_path):
    data, test = _binarized(tmp_path)
    r, _ = run_cli(capsys, models["dir"], "eval", "--model", "tiny-nade", "--data", data)
    assert r["split"] == "test" and r["n_examples"] == 13 and r["family"] == "nade"
    assert r["nats_per_example"] == pytest.approx(-_torch_log_prob(models, "nade", test).mean(), rel=1e-5)
    assert r["bits_per_dim"] == pytest.approx(r["nats_per_example"] / D / np.log(2))
    r, _ = run_cli(capsys, models["dir"], "eval", "--model", "tiny-made", "--data", data, "--limit", "10")
    assert r["n_examples"] == 10 and r["ensemble_k"] == 3 and r["n_masks"] == 3
    assert r["nats_per_example"] == pytest.approx(-_torch_log_prob(models, "made", test[:10], 3).mean(), rel=1e-5)
    assert r["nats_per_example_k1"] == pytest.approx(-_torch_log_prob(models, "made", test[:10], 1).mean(), rel=1e-5)
    assert len(r["nats_per_example_per_mask"]) == 3
    r2, _ = run_cli(capsys, models["dir"], "eval", "--model", "tiny-made", "--data", data, "--limit", "10", "--ensemble", "2")
    assert r2["ensemble_k"] == 2
    assert r2["nats_per_example"] == pytest.approx(-_torch_log_prob(models, "made", test[:10], 2).mean(), rel=1e-5)
    assert r2["nats_per_example_k1"] == pytest.approx(r["nats_per_example_k1"])
    main(["eval", "--model", "tiny-made", "--data", data, "--limit", "10", "--models-dir", models["dir"]])
    out = capsys.readouterr().out
    assert "nats/image" in out and "K=3 of 3 masks" in out and "single mask" in out


def test_eval_write_card_keys_by_ensemble(capsys, tmp_path):
    root = tmp_path / "models"
    _export(root, nade_id=None)
    data, _ = _binarized(tmp_path)
    for k in ("1", "3"):
        assert main(["eval", "--model", "tiny-made", "--data", data, "--ensemble", k, "--write-card",
                     "--models-dir", str(root)]) == 0
    metrics = json.loads((root / "tiny-made" / "card.json").read_text())["metrics"]
    assert metrics["binarized_mnist/test/k1"]["ensemble_k"] == 1 and metrics["binarized_mnist/test/k3"]["ensemble_k"] == 3
    assert "--ensemble 3" in metrics["binarized_mnist/test/k3"]["command"]


# --- bad input ----------------------------------------------------------------------------------

def test_bad_input_is_one_clear_line(capsys, models, tmp_path):
    d = models["dir"]
    good = save_png(tmp_path / "good.png", np.zeros((S, S)))
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    empty_mask = save_png(tmp_path / "black.png", np.zeros((S, S)))
    full_mask = save_png(tmp_path / "white.png", np.full((S, S), 255))
    big_mask = save_png(tmp_path / "big.png", np.full((S + 1, S + 1), 255))
    data, _ = _binarized(tmp_path)
    mnist = tmp_path / "mnist.npz"
    np.savez(mnist, x_train=np.zeros((2, S, S), np.uint8), y_train=np.zeros(2), x_test=np.full((2, S, S), 200, np.uint8),
             y_test=np.zeros(2))
    wrong_size = tmp_path / "wrong.npz"
    np.savez(wrong_size, train=np.zeros((2, 16), np.uint8), valid=np.zeros((2, 16), np.uint8), test=np.zeros((2, 16), np.uint8))
    cases = [
        (["score", "--model", "tiny-made", "--image", str(broken)], "not a readable image"),
        (["score", "--model", "tiny-made", "--image", str(tmp_path / "nope.png")], "not found"),
        (["score", "--model", "tiny-made", "--text", "hello"], "--image PNG"),
        (["score", "--model", "tiny-made", "--image", good, "--ensemble", "4"], "1..3"),
        (["score", "--model", "tiny-made", "--image", good, "--ensemble", "0"], "1..3"),
        (["score", "--model", "tiny-nade", "--image", good, "--ensemble", "2"], "K must be 1"),
        (["score", "--model", "tiny-nade", "--image", good, "--label", "3"], "unconditional"),
        (["score", "--model", "tiny-made", "--image", good, "--digit", "3"], "--digit does not apply"),
        (["score", "--model", "tiny-made", "--image", good, "--speaker", "lucas"], "--speaker does not apply"),
        (["score", "--model", "tiny-made", "--image", good, "--prompt", "hi"], "--prompt does not apply"),
        (["score", "--model", "tiny-made", "--image", good, "--ordering", "diagonal"], "unknown ordering"),
        (["generate", "image", "--model", "tiny-made", "--out", str(tmp_path / "no-such-dir" / "s.png")],
         "does not exist"),
        (["generate", "image", "--model", "tiny-made", "--out", str(tmp_path)], "is a folder"),
        (["eval", "--model", "tiny-made", "--data", data, "--ensemble", "9"], "1..3"),
        (["eval", "--model", "tiny-made", "--data", str(mnist)], "binarized_mnist.npz"),
        (["eval", "--model", "tiny-nade", "--data", str(wrong_size)], "1x4x4 images"),
        (["eval", "--model", "tiny-nade", "--data", str(tmp_path / "missing.npz")], "not found"),
        (["eval", "--model", "tiny-nade", "--data", data, "--limit", "0"], "limit"),
        (["generate", "image", "--model", "tiny-made", "--ordering", "diagonal"], "raster, reverse, column, random"),
        (["generate", "image", "--model", "tiny-made", "--ordering", "column:3"], "only 'random' takes a seed"),
        (["generate", "image", "--model", "tiny-nade", "--ordering", "column"], "raster order only"),
        (["generate", "image", "--model", "tiny-made", "--init", good, "--mask", empty_mask], "no white pixels"),
        (["generate", "image", "--model", "tiny-made", "--init", good, "--mask", full_mask], "white everywhere"),
        (["generate", "image", "--model", "tiny-made", "--init", good, "--mask", big_mask], "same size"),
        (["generate", "image", "--model", "tiny-made", "--init", str(broken), "--mask", full_mask], "not a readable image"),
        (["generate", "image", "--model", "tiny-made", "--init", good], "--init needs --mask"),
        (["generate", "image", "--model", "tiny-made", "--init", good, "--mask", good, "--out", good], "overwrite"),
        (["generate", "image", "--model", "tiny-made", "--candidates", "4"], "inpaint exactly"),
        (["generate", "image", "--model", "tiny-made", "--top-p", "0.5"], "top-p"),
        (["generate", "image", "--model", "tiny-made", "--strategy", "beam"], "beam"),
        (["generate", "image", "--model", "tiny-made", "--count", "0"], "count"),
    ]
    for argv, expected in cases:
        line = error_line(capsys, d, *argv)
        assert expected in line, (argv, line)
    assert np.asarray(Image.open(good)).shape == (S, S)  # nothing overwritten


# --- bench ---------------------------------------------------------------------------------------

def test_bench_density_reports_both_models_and_says_when_one_is_missing(capsys, tmp_path, monkeypatch):
    monkeypatch.setattr("engines.registry.shipped_models_dir", lambda: tmp_path / "no-shipped-models")
    both = tmp_path / "both"
    _export(both, nade_id="bmnist-nade", made_id="bmnist-made")
    argv = ["bench", "density", "--models-dir", str(both), "--json", "--write-card"]
    assert main(argv) == 0
    r = json.loads(capsys.readouterr().out)["results"]
    assert r["nade_model"] == "bmnist-nade" and r["made_model"] == "bmnist-made" and "missing" not in r
    # --write-card: each model's part of the result goes to its own card, with the command (less --write-card)
    nade_card = json.loads((both / "bmnist-nade" / "card.json").read_text())["metrics"]["bench/density"]
    made_card = json.loads((both / "bmnist-made" / "card.json").read_text())["metrics"]["bench/density"]
    assert nade_card["nade_model"] == "bmnist-nade" and nade_card["nade_speedup"] == r["nade_speedup"]
    assert made_card["made_model"] == "bmnist-made" and made_card["made_n_masks"] == 3
    assert not any(k.startswith("made_") for k in nade_card) and not any(k.startswith("nade_") for k in made_card)
    assert "made_hidden" not in made_card  # numbers and strings only
    for card in (nade_card, made_card):
        assert card["command"] == f"chainrule bench density --models-dir {both} --json"
        assert card["provider"] == r["provider"]
    assert r["nade_same_samples"] is True and r["nade_naive_forward_passes"] == D
    for key in ("nade_incremental_seconds_per_image", "nade_naive_seconds_per_image", "nade_speedup",
                "nade_eval_images_per_second", "made_eval_images_per_second_k1",
                "made_eval_images_per_second_default_k", "made_sample_seconds_per_image"):
        assert isinstance(r[key], (int, float)) and r[key] > 0, key
    assert r["made_default_k"] == 3
    only = tmp_path / "only"
    _export(only, made_id=None, nade_id="bmnist-nade")
    assert main(["bench", "density", "--models-dir", str(only), "--json"]) == 0
    r = json.loads(capsys.readouterr().out)["results"]
    assert "nade_speedup" in r and "made_model" not in r
    assert len(r["missing"]) == 1 and "bmnist-made is not installed" in r["missing"][0]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["bench", "density", "--models-dir", str(empty)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no density model to benchmark" in err[0] and "bmnist-made" in err[0]
