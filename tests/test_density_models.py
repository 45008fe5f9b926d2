"""NADE and MADE exactness: normalisation over all 2^D vectors, the autoregressive property by
perturbation, ONNX/torch parity (full graph and NADE's incremental step graph), the MADE
mixture, the orderings and masks, and the two trainers end to end on made-up data."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")  # a run without the train extra skips these instead of failing

from engines.density.orderings import (ORDERING_NAMES, known_first_ordering, made_masks, make_ordering,  # noqa: E402
                                       make_ordering_from_spec, positions)
from engines.errors import InputError  # noqa: E402
from engines.training.nade import nll_blocked  # noqa: E402
from tests.density_models import (all_binary, export_made_dir, export_nade_dir, make_made, make_nade,  # noqa: E402
                                  mask_set)

H3, W3 = 3, 3  # MADE test images are 3 x 3 (D = 9)
MADE_SPECS = [("raster", 0), ("reverse", 3), ("column", 1), ("random:5", 2), ("random:11", 7)]


def _session(path):
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _log_probs_from_logits(logits: np.ndarray, x: np.ndarray) -> np.ndarray:
    """sum_d log Bernoulli(x_d; sigmoid(logit_d)) in float64."""
    z = logits.astype(np.float64)
    return -(np.logaddexp(0.0, z) - x * z).sum(-1)


# --- orderings and masks -------------------------------------------------------------

def test_orderings_are_the_named_permutations():
    assert list(make_ordering("raster", 6, 2, 3)) == [0, 1, 2, 3, 4, 5]
    assert list(make_ordering("reverse", 6, 2, 3)) == [5, 4, 3, 2, 1, 0]
    assert list(make_ordering("column", 6, 2, 3)) == [0, 3, 1, 4, 2, 5]
    r = make_ordering("random", 784, seed=4)
    assert sorted(r) == list(range(784)) and not np.array_equal(r, np.arange(784))
    assert np.array_equal(r, make_ordering_from_spec("random:4"))
    assert not np.array_equal(r, make_ordering("random", 784, seed=5))
    assert set(ORDERING_NAMES) == {"raster", "reverse", "column", "random"}
    with pytest.raises(InputError, match="raster, reverse, column, random"):
        make_ordering("diagonal")
    with pytest.raises(InputError, match="seed"):
        make_ordering_from_spec("random:x")


def test_known_first_ordering_keeps_relative_order():
    base = make_ordering("random", 10, seed=3)
    known = np.zeros(10, bool)
    known[[1, 4, 7, 8]] = True
    order = known_first_ordering(known, base)
    assert sorted(order) == list(range(10))
    assert known[order[:4]].all() and not known[order[4:]].any()
    pos = positions(base)
    assert list(pos[order[:4]]) == sorted(pos[order[:4]]) and list(pos[order[4:]]) == sorted(pos[order[4:]])


def test_made_masks_are_a_pure_function_with_the_paper_degrees():
    order = make_ordering("random", 9, seed=1)
    a, b = made_masks(order, (12, 10), 3), made_masks(order, (12, 10), 3)
    assert len(a) == 4 and [m.shape for m in a] == [(9, 12), (12, 10), (10, 9), (9, 9)]
    assert all(np.array_equal(x, y) for x, y in zip(a, b)) and all(m.dtype == np.float32 for m in a)
    assert not all(np.array_equal(x, y) for x, y in zip(a, made_masks(order, (12, 10), 4)))
    direct = a[-1]
    pos = positions(order)
    assert np.array_equal(direct, (pos[None, :] > pos[:, None]).astype(np.float32))
    # the first pixel in the ordering sees nothing; every hidden unit has at least one input
    assert (a[2][:, order[0]] == 0).all() and (direct[:, order[0]] == 0).all()
    assert (a[0].sum(0) > 0).all() and (a[1].sum(0) > 0).all()


# --- normalisation over all 2^D binary vectors ----------------------------------------

def test_nade_probabilities_sum_to_one_in_torch_and_onnx(tmp_path):
    model = make_nade(dims=8, hidden=6)
    x = all_binary(8)
    with torch.no_grad():
        lp = model.double().log_prob(torch.from_numpy(x).double()).numpy()
    assert abs(np.exp(lp).sum() - 1.0) < 1e-5
    folder = export_nade_dir(make_nade(dims=8, hidden=6), tmp_path)
    logits = _session(folder / "model.onnx").run(["logits"], {"x": x})[0]
    assert abs(np.exp(_log_probs_from_logits(logits, x)).sum() - 1.0) < 1e-5
    assert np.allclose(_log_probs_from_logits(logits, x), lp, atol=1e-4)


@pytest.mark.parametrize("spec,seed", MADE_SPECS)
def test_made_probabilities_sum_to_one_for_each_ordering(spec, seed):
    model = make_made().double()
    masks = [torch.from_numpy(m).double() for m in mask_set(model, spec, seed)]
    with torch.no_grad():
        lp = model.log_prob(torch.from_numpy(all_binary(9)).double(), masks).numpy()
    assert abs(np.exp(lp).sum() - 1.0) < 1e-5


def test_made_onnx_sums_to_one_and_matches_torch_for_several_orderings(tmp_path):
    model = make_made()
    folder = export_made_dir(model, tmp_path)
    card = json.loads((folder / "card.json").read_text())
    assert card["kind"] == "density" and card["architecture"]["family"] == "made"
    assert card["io"]["model"]["inputs"] == ["x", "mask0", "mask1", "mask2", "mask_direct"]
    sess = _session(folder / "model.onnx")
    x = all_binary(9)
    for spec, seed in MADE_SPECS:
        masks = mask_set(model, spec, seed)
        feed = {"x": x, **{n: m for n, m in zip(card["io"]["model"]["inputs"][1:], masks)}}
        logits = sess.run(["logits"], feed)[0]
        assert abs(np.exp(_log_probs_from_logits(logits, x)).sum() - 1.0) < 1e-5
        with torch.no_grad():
            ref = model(torch.from_numpy(x), [torch.from_numpy(m) for m in masks]).numpy()
        assert np.abs(logits - ref).max() < 1e-5


def test_a_broken_mask_breaks_normalisation():
    """The sum-to-one check can fail: letting output d see x_d itself ruins it."""
    model = make_made().double()
    masks = [torch.from_numpy(m).double() for m in mask_set(model, "raster", 0)]
    masks[-1] = masks[-1] + torch.eye(9, dtype=torch.float64)  # direct connection x_d -> output d
    with torch.no_grad():
        lp = model.log_prob(torch.from_numpy(all_binary(9)).double(), masks).numpy()
    assert abs(np.exp(lp).sum() - 1.0) > 1e-3


# --- autoregressive property by perturbation -----------------------------------------

def _check_autoregressive(logits_fn, order: np.ndarray, dims: int, seed: int = 0):
    """Flipping x_j leaves the logit of every pixel at or before j in `order` unchanged (and
    changes some later one, so the dependencies really exist)."""
    pos = positions(order)
    x = (np.random.default_rng(seed).random((4, dims)) < 0.5).astype(np.float64)
    base = logits_fn(x)
    for j in range(dims):
        flipped = x.copy()
        flipped[:, j] = 1 - flipped[:, j]
        diff = np.abs(logits_fn(flipped) - base).max(0)  # (D,)
        assert diff[pos <= pos[j]].max() < 1e-12, f"pixel {j} leaks into an earlier conditional"
        if pos[j] < dims - 1:
            assert diff[pos > pos[j]].max() > 1e-6, f"pixel {j} affects no later conditional"


def test_nade_is_autoregressive_in_raster_order():
    model = make_nade(dims=10, hidden=7).double()
    with torch.no_grad():
        _check_autoregressive(lambda x: model(torch.from_numpy(x)).numpy(), np.arange(10), 10)
        _check_autoregressive(lambda x: _nade_blocked_logits(model, x), np.arange(10), 10)


def _nade_blocked_logits(model, x):
    """The logits of the blocked training pass (blocks of 3 pixels)."""
    from engines.training.nade import _BlockedLogits

    return _BlockedLogits.apply(torch.from_numpy(x), model.W, model.c, model.V, model.b, 3).numpy()


@pytest.mark.parametrize("spec,seed", MADE_SPECS)
def test_made_is_autoregressive_in_its_ordering(spec, seed):
    model = make_made().double()
    masks = [torch.from_numpy(m).double() for m in mask_set(model, spec, seed)]
    order = make_ordering_from_spec(spec, 9, H3, W3)
    with torch.no_grad():
        _check_autoregressive(lambda x: model(torch.from_numpy(x), masks).numpy(), order, 9, seed)


def test_made_known_first_ordering_is_autoregressive():
    model = make_made().double()
    known = np.array([1, 0, 0, 1, 0, 1, 0, 0, 1], bool)  # scattered
    order = known_first_ordering(known, make_ordering("raster", 9))
    masks = [torch.from_numpy(m).double() for m in made_masks(order, model.hidden, 4)]
    with torch.no_grad():
        _check_autoregressive(lambda x: model(torch.from_numpy(x), masks).numpy(), order, 9)


def test_perturbation_check_catches_a_leak():
    model = make_made().double()
    masks = [torch.from_numpy(m).double() for m in mask_set(model, "raster", 0)]
    masks[-1] = torch.ones(9, 9, dtype=torch.float64)  # direct connection sees everything
    with torch.no_grad(), pytest.raises(AssertionError, match="leaks"):
        _check_autoregressive(lambda x: model(torch.from_numpy(x), masks).numpy(), np.arange(9), 9)


# --- NADE: blocked training pass, step graph ------------------------------------------

@pytest.mark.parametrize("block", [1, 3, 4, 16])
def test_nade_blocked_pass_matches_forward_and_its_gradients(block):
    model = make_nade(dims=10, hidden=7, seed=2).double()
    x = torch.from_numpy((np.random.default_rng(1).random((5, 10)) < 0.5).astype(np.float64))
    ref = -model.log_prob(x)
    g_ref = torch.autograd.grad(ref.sum(), list(model.parameters()))
    got = nll_blocked(model, x, block)
    g_got = torch.autograd.grad(got.sum(), list(model.parameters()))
    assert torch.allclose(got, ref, atol=1e-12)
    for a, b in zip(g_got, g_ref):
        assert torch.allclose(a, b, atol=1e-12)


def test_nade_step_graph_accumulated_equals_full_graph(tmp_path):
    model = make_nade(dims=10, hidden=7, seed=3)
    folder = export_nade_dir(model, tmp_path)
    card = json.loads((folder / "card.json").read_text())
    assert card["architecture"] == {"family": "nade", "dims": 10, "hidden": 7, "ordering": "raster"}
    assert card["files"] == {"model": "model.onnx", "step": "step.onnx", "init_a": "init_a.npy"}
    x = (np.random.default_rng(4).random((3, 10)) < 0.5).astype(np.float32)
    full = _session(folder / "model.onnx").run(["logits"], {"x": x})[0]
    with torch.no_grad():
        assert np.abs(full - model(torch.from_numpy(x)).numpy()).max() < 1e-5
    step = _session(folder / "step.onnx")
    a = np.tile(np.load(folder / "init_a.npy"), (3, 1)).astype(np.float32)  # (B, H)
    assert a.shape == (3, 7)
    got = np.zeros_like(full)
    for d in range(10):
        x_prev = np.zeros((3, 1), np.float32) if d == 0 else x[:, d - 1:d]
        prev = np.array([max(d - 1, 0)], np.int64)
        a, logit = step.run(["a_next", "logit"], {"a": a, "x_prev": x_prev, "prev": prev,
                                                  "d": np.array([d], np.int64)})
        got[:, d] = logit[:, 0]
    assert np.abs(got - full).max() < 1e-5


# --- MADE mixture ----------------------------------------------------------------------

def test_made_mixture_is_logmeanexp_and_normalised():
    model = make_made().double()
    sets = [[torch.from_numpy(m).double() for m in mask_set(model, s, k)] for s, k in MADE_SPECS]
    x = torch.from_numpy(all_binary(9)).double()
    with torch.no_grad():
        mix = model.log_prob_mixture(x, sets)
        per = torch.stack([model.log_prob(x, m) for m in sets])  # (K, 2^D)
    assert torch.allclose(mix, torch.logsumexp(per, 0) - np.log(len(sets)), atol=1e-12)
    assert abs(mix.exp().sum().item() - 1.0) < 1e-5
    # averaging the logits instead is a different (unnormalised-in-general) model: not what we compute
    with torch.no_grad():
        avg_logits = torch.stack([model(x, m) for m in sets]).mean(0)
    avg = -torch.nn.functional.binary_cross_entropy_with_logits(avg_logits, x, reduction="none").sum(-1)
    assert (avg - mix).abs().max() > 1e-3


# --- trainers end to end --------------------------------------------------------------

def _tiny_data(tmp_path):
    rng = np.random.default_rng(0)
    base = (rng.random(16) < 0.3)
    make = lambda n: (base ^ (rng.random((n, 16)) < 0.1)).astype(np.uint8)  # noqa: E731
    path = tmp_path / "binarized_mnist.npz"
    np.savez(path, train=make(48), valid=make(10), test=make(10))
    return path


def _records(out):
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("family,extra", [("nade", ["--hidden", "8", "--block", "5"]),
                                          ("made", ["--hidden", "8,8", "--n-masks", "3", "--default-k", "3",
                                                    "--orderings", "raster,random,column"])])
def test_trainer_writes_checkpoints_resumes_and_exports(tmp_path, capsys, family, extra):
    from engines.cli import main
    from engines.training.export_density import main as export_main

    data, out = _tiny_data(tmp_path), tmp_path / "run"
    common = ["train", family, "--data", str(data), "--out", str(out), "--batch-size", "8", "--eval-interval", "2",
              "--threads", "1", "--warmup-iters", "1", "--lr", "1e-2", *extra]
    assert main([*common, "--max-iters", "4", "--no-final-eval"]) == 0
    assert (out / "ckpt.pt").exists() and (out / "last.pt").exists()
    assert main([*common, "--max-iters", "8", "--resume"]) == 0
    records = _records(out)
    starts = [r for r in records if r["event"] == "start"]
    assert starts[0]["command"].startswith(f"chainrule train {family} --data") and starts[1]["start_iter"] == 4
    evals = [r for r in records if r["event"] == "eval"]
    assert [r["iter"] for r in evals] == [2, 4, 6, 8]
    assert evals[-1]["val_nats_per_image"] < 16 * np.log(2)  # learnt something beyond coin flips
    final = [r for r in records if r["event"] == "final_eval"][0]
    assert final["test"]["n_images"] == 10
    ck = torch.load(out / "ckpt.pt", weights_only=False)
    assert ck["family"] == family and ck["metrics"]["test"] == final["test"]
    if family == "made":
        assert ck["made"]["orderings"] == ["raster", "random:1", "column"] and ck["made"]["mask_seeds"] == [0, 1, 2]
        assert final["test"]["k"] == 3 and final["test_k1"]["k"] == 1

    assert export_main(["--ckpt", str(out / "ckpt.pt"), "--out", str(tmp_path / "models" / f"tiny-{family}")]) == 0
    card = json.loads((tmp_path / "models" / f"tiny-{family}" / "card.json").read_text())
    assert card["kind"] == "density" and card["architecture"]["family"] == family
    assert card["data"]["train_command"] in {s["command"] for s in starts}  # the run that saved the best
    assert card["metrics"]["test_nats_per_image"] == final["test"]["nats_per_image"]
    assert card["image"] == {"height": 4, "width": 4, "channels": 1, "levels": 2, "mode": "L"}
    # the exported graph scores like the checkpoint did
    x = np.load(data)["test"].astype(np.float32)
    sess = _session(tmp_path / "models" / f"tiny-{family}" / "model.onnx")
    if family == "nade":
        lp = _log_probs_from_logits(sess.run(["logits"], {"x": x})[0], x)
    else:
        arch = card["architecture"]
        per = []
        for spec, seed in zip(arch["orderings"], arch["mask_seeds"]):
            masks = made_masks(make_ordering_from_spec(spec, 16, 4, 4), tuple(arch["hidden"]), seed)
            feed = {"x": x, **dict(zip(card["io"]["model"]["inputs"][1:], masks))}
            per.append(_log_probs_from_logits(sess.run(["logits"], feed)[0], x))
        lp = np.logaddexp.reduce(np.stack(per), axis=0) - np.log(len(per))
    assert -lp.mean() == pytest.approx(final["test"]["nats_per_image"], rel=1e-4)
