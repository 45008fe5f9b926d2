"""The density engine (numpy + ONNX Runtime) on tiny exported NADE and MADE models: exact
likelihoods and conditionals, the MADE mixture, sampling in every ordering, NADE's incremental
sampler against the naive one, and exact inpainting checked against brute-force enumeration."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")  # the tiny models are built in torch: skip without the train extra

from engines.density.model import MadeModel, NadeModel, load_density_model  # noqa: E402
from engines.density.orderings import known_first_ordering, made_masks, make_ordering, positions  # noqa: E402
from engines.density.sampling import DensityDone, DensityStep, sample, sample_events  # noqa: E402
from engines.errors import InputError  # noqa: E402
from engines.registry import get_model  # noqa: E402
from tests.density_models import all_binary, export_made_dir, export_nade_dir, make_made, make_nade  # noqa: E402

H, W = 2, 4  # D = 8: every test below can enumerate all 2^8 images
D = H * W
ORDERS = ("raster", "random:1", "column")  # the MADE's training (ordering, seed = index) pairs


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("density-engine-models")
    nade_t = make_nade(dims=D, hidden=6, seed=1)
    made_t = make_made(dims=D, hidden=(16, 12), seed=0, noise=0.3)
    export_nade_dir(nade_t, root, "tiny-nade", meta={"command": "test", "iter": 0, "data": {"height": H, "width": W}})
    export_made_dir(made_t, root, "tiny-made", orderings=ORDERS, height=H, width=W)
    nade = load_density_model(get_model("tiny-nade", [str(root)]))
    made = load_density_model(get_model("tiny-made", [str(root)]))
    return {"nade": nade, "made": made, "nade_torch": nade_t, "made_torch": made_t, "root": root}


def _torch_masks(made_t, spec, seed):
    from engines.density.orderings import make_ordering_from_spec

    return [torch.from_numpy(m) for m in made_masks(make_ordering_from_spec(spec, D, H, W), made_t.hidden, seed)]


# --- loading, exact likelihoods, the mixture ---------------------------------------------

def test_cards_become_models(tiny):
    nade, made = tiny["nade"], tiny["made"]
    assert isinstance(nade, NadeModel) and nade.family == "nade" and (nade.height, nade.width, nade.dims) == (H, W, D)
    assert nade.orderings() == ["raster"] and nade.n_masks == 1 and nade.default_k == 1 and nade.hidden == 6
    assert isinstance(made, MadeModel) and made.family == "made" and made.hidden == (16, 12)
    assert made.orderings() == ["raster", "reverse", "column", "random"]
    assert made.n_masks == 3 and made.default_k == 3 and made.trained_orderings == ORDERS


def test_every_score_is_normalised_and_matches_torch(tiny):
    x = all_binary(D)
    nade, made = tiny["nade"], tiny["made"]
    lp = nade.log_prob(x)
    assert abs(np.exp(lp).sum() - 1) < 1e-5
    with torch.no_grad():
        assert np.allclose(lp, tiny["nade_torch"].log_prob(torch.from_numpy(x)).numpy(), atol=1e-4)
    sets = [_torch_masks(tiny["made_torch"], s, i) for i, s in enumerate(ORDERS)]
    for k in (1, 2, 3):
        lp = made.log_prob(x, k)
        assert abs(np.exp(lp).sum() - 1) < 1e-5, k
        with torch.no_grad():
            ref = tiny["made_torch"].log_prob_mixture(torch.from_numpy(x), sets[:k]).numpy()
        assert np.allclose(lp, ref, atol=1e-4)
    assert np.array_equal(made.log_prob(x), made.log_prob(x, 3))  # the card's default K


def test_made_ensemble_is_a_mixture_not_averaged_logits(tiny):
    made, x = tiny["made"], all_binary(D)[::7]
    per = made.log_prob_per_mask(x, 3)  # (K, B)
    assert per.shape == (3, len(x))
    assert np.allclose(made.log_prob(x, 3), np.logaddexp.reduce(per, 0) - np.log(3))
    avg = np.mean([made.logits(x, s, i) for i, s in enumerate(ORDERS)], axis=0).astype(np.float64)
    averaged = -(np.logaddexp(0, avg) - x * avg).sum(1)
    assert np.abs(averaged - made.log_prob(x, 3)).max() > 1e-3


@pytest.mark.parametrize("k", [0, 4, -1, True, 1.5])
def test_ensemble_size_outside_the_masks_is_refused_naming_the_range(tiny, k):
    with pytest.raises(InputError, match=r"1\.\.3"):
        tiny["made"].log_prob(all_binary(D)[:2], k)


def test_nade_has_no_ensemble_and_no_other_ordering(tiny):
    nade, x = tiny["nade"], all_binary(D)[:3]
    assert np.array_equal(nade.log_prob(x, 1), nade.log_prob(x))
    with pytest.raises(InputError, match="K must be 1"):
        nade.log_prob(x, 2)
    with pytest.raises(InputError, match="raster order only.*MADE"):
        nade.conditionals(x, "column")
    with pytest.raises(InputError, match="only 0 and 1"):
        nade.log_prob(x * 0.5)
    with pytest.raises(InputError, match=rf"\(batch, {D}\)"):
        nade.log_prob(np.zeros((2, D + 1)))


@pytest.mark.parametrize("spec", ["raster", "reverse", "column", "random:4"])
def test_made_conditionals_are_autoregressive_in_any_ordering(tiny, spec):
    made = tiny["made"]
    order = made.ordering(spec)
    pos = positions(order)
    x = (np.random.default_rng(0).random((5, D)) < 0.5).astype(np.float32)
    assert abs(np.exp(made.conditionals(all_binary(D), order, 7).sum(1)).sum() - 1) < 1e-5
    for j in range(D):
        flipped = x.copy()
        flipped[:, j] = 1 - flipped[:, j]
        changed = np.abs(made.logits(flipped, order, 7) - made.logits(x, order, 7)).max(0)
        assert changed[pos <= pos[j]].max() == 0, f"pixel {j} leaks into an earlier conditional"


# --- sampling -------------------------------------------------------------------------------

def test_nade_incremental_and_naive_sampling_give_identical_samples(tiny):
    nade = tiny["nade"]
    for seed in (0, 5, 123):
        inc = sample(nade, seed=seed, count=20, method="incremental")
        naive = sample(nade, seed=seed, count=20, method="naive")
        assert np.array_equal(inc.images, naive.images)
        assert np.allclose(inc.sampled_logprob, naive.sampled_logprob, atol=1e-5)
        assert np.allclose(inc.sampled_logprob, nade.log_prob(inc.images), atol=1e-4)
        assert len({im.tobytes() for im in inc.images}) > 5  # really random, not a constant
    # the same with a known top row
    known = np.array([1, 0, 1, 1, 0, 0, 0, 0], np.uint8)
    mask = np.arange(D) < W
    inc = sample(nade, seed=3, count=20, known=known, known_mask=mask, method="incremental")
    naive = sample(nade, seed=3, count=20, known=known, known_mask=mask, method="naive")
    assert np.array_equal(inc.images, naive.images) and (inc.images[:, :W] == known[:W]).all()


def test_sample_i_uses_seed_plus_i_and_events_follow_the_ordering(tiny):
    made = tiny["made"]
    events = list(sample_events(made, order_name="column", seed=10, count=3))
    done = events[-1]
    assert isinstance(done, DensityDone) and done.images.shape == (3, D) and done.images.dtype == np.uint8
    steps = [e for e in events if isinstance(e, DensityStep)]
    assert len(steps) == 3 * D
    order = make_ordering("column", D, H, W)
    assert np.array_equal(done.order, order)
    for e in steps:
        assert e.pixel == order[e.position] and done.images[e.sample, e.pixel] == e.value
    cond = made.conditionals(done.images, done.order, done.mask_seed)  # (3, D) log p(value)
    for e in steps:
        p_value = e.prob_one if e.value == 1 else 1 - e.prob_one
        assert np.log(p_value) == pytest.approx(cond[e.sample, e.pixel], abs=1e-5)
    for i in range(3):
        alone = sample(made, order_name="column", seed=10 + i)
        assert np.array_equal(alone.images[0], done.images[i])
    assert done.mask_seed == 2  # "column" was trained with mask seed 2


def test_made_samples_in_every_ordering_and_ordering_matters(tiny):
    made = tiny["made"]
    got = {}
    for name in ("raster", "reverse", "column", "random", "random:9"):
        done = sample(made, order_name=name, seed=0, count=30, random_seed=4)
        got[name] = done.images
        assert np.allclose(done.sampled_logprob, made.conditionals(done.images, done.order, done.mask_seed).sum(1))
    assert np.array_equal(sample(made, order_name="random", random_seed=4, seed=0).order, make_ordering("random", D, seed=4))
    assert not np.array_equal(got["raster"], got["reverse"])
    assert not np.array_equal(got["random"], got["random:9"])


def test_greedy_and_temperature(tiny):
    made = tiny["made"]
    a = sample(made, seed=0, count=4, temperature=0.0).images
    assert (a == a[0]).all()  # greedy ignores the uniforms
    with pytest.raises(InputError, match="temperature"):
        sample(made, seed=0, temperature=-1.0)


@pytest.mark.parametrize("kwargs,match", [
    ({"order_name": "diagonal"}, "raster, reverse, column, random"),
    ({"method": "fast"}, "incremental, naive"),
    ({"count": 0}, "count"),
    ({"seed": -1}, "seed"),
    ({"known": np.zeros(D), "known_mask": np.ones(D, bool)}, "nothing to sample"),
    ({"known": np.zeros(D)}, "both"),
    ({"known": np.zeros(D - 1), "known_mask": np.zeros(D - 1, bool)}, f"{D} values"),
    ({"known": np.full(D, 2), "known_mask": np.arange(D) < 2}, "0 or 1"),
])
def test_bad_sampling_requests_are_refused(tiny, kwargs, match):
    with pytest.raises(InputError, match=match):
        sample(tiny["made"], **{"seed": 0, **kwargs})


def test_nade_refuses_other_orderings_and_known_pixels_after_the_hole(tiny):
    nade = tiny["nade"]
    with pytest.raises(InputError, match="raster order only.*MADE"):
        sample(nade, seed=0, order_name="column")
    mask = np.zeros(D, bool)
    mask[[0, 5]] = True  # pixel 5 is known but comes after unknown ones
    with pytest.raises(InputError, match="NADE cannot condition on known pixels that come after.*MADE"):
        sample(nade, seed=0, known=np.zeros(D), known_mask=mask)


# --- exact inpainting ---------------------------------------------------------------------

KNOWN = np.array([1, 0, 0, 1, 0, 1, 1, 0], bool)  # scattered: pixels 0, 3, 5, 6
VALUES = np.array([1, 0, 0, 0, 0, 1, 0, 0], np.uint8)


def _brute_force_conditional(made, order, mask_seed):
    """p(unknown | known) for every completion, by enumerating all 2^D images under the masks of
    `order`: p(x) / sum of p over the images that agree on the known pixels. Returns (completions
    (16, D) images, probabilities (16,))."""
    x = all_binary(D)
    lp = made.conditionals(x, order, mask_seed).sum(1)
    agree = (x[:, KNOWN] == VALUES[KNOWN]).all(1)
    lp = lp[agree]
    return x[agree], np.exp(lp - np.logaddexp.reduce(lp))


@pytest.mark.parametrize("base", ["raster", "column", "random:2"])
def test_made_inpainting_keeps_known_pixels_and_samples_the_exact_conditional(tiny, base):
    made = tiny["made"]
    done = sample(made, order_name=base, seed=0, count=4000, known=VALUES, known_mask=KNOWN)
    assert (done.images[:, KNOWN] == VALUES[KNOWN]).all()  # bit-exact
    base_order = made.ordering(base)
    assert np.array_equal(done.order, known_first_ordering(KNOWN, base_order))
    assert done.mask_seed == made.mask_seed_for(base_order)
    completions, exact = _brute_force_conditional(made, done.order, done.mask_seed)
    assert abs(exact.sum() - 1) < 1e-9
    # every sample's reported log-probability is the exact log p(completion | known)
    index = {c.astype(np.uint8).tobytes(): i for i, c in enumerate(completions)}
    drawn = np.array([index[im.tobytes()] for im in done.images])
    assert np.allclose(done.sampled_logprob, np.log(exact[drawn]), atol=1e-5)
    # and the samples are distributed as that conditional (total variation, 4000 draws)
    empirical = np.bincount(drawn, minlength=len(exact)) / len(drawn)
    tv = 0.5 * np.abs(empirical - exact).sum()
    assert tv < 0.05, tv
    # the check has teeth: sampling the unknown pixels in the base ordering (blind to the known
    # pixels that come later) is a different distribution, far outside that tolerance
    cond = made.conditionals(completions, base_order, done.mask_seed)
    blind = np.exp(cond[:, ~KNOWN].sum(1))
    assert abs(blind.sum() - 1) < 1e-5 and 0.5 * np.abs(blind - exact).sum() > 0.1


def test_nade_inpainting_of_a_top_part_is_exact(tiny):
    nade = tiny["nade"]
    mask = np.arange(D) < 3  # pixels 0..2 known
    known = np.array([1, 1, 0, 0, 0, 0, 0, 0], np.uint8)
    done = sample(nade, seed=1, count=50, known=known, known_mask=mask)
    assert (done.images[:, :3] == known[:3]).all()
    x = all_binary(D)
    agree = (x[:, :3] == known[:3]).all(1)
    lp = nade.log_prob(x[agree])
    log_known = np.logaddexp.reduce(lp)
    assert np.allclose(done.sampled_logprob, nade.log_prob(done.images) - log_known, atol=1e-4)
