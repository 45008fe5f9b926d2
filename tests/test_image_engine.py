"""Image engine (ONNX Runtime only): naive and fast sampling agree, inpainting keeps known
pixels, probabilities are exact (they sum to 1 over every image of a tiny grid), scoring maps
sum to the totals, posterior-aware resampling, and events."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

pytest.importorskip("torch")

from engines.decoding.config import DecodingConfig  # noqa: E402
from engines.errors import DecodingError, InputError  # noqa: E402
from engines.image.model import load_image_model  # noqa: E402
from engines.image.sampler import (  # noqa: E402
    PixelSampler, known_after, posterior_resample, score_image, score_images,
)
from engines.registry import read_card  # noqa: E402
from tests.image_models import export_model_dir, make_pixelcnn  # noqa: E402


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("image-models")
    specs = {
        "grey": dict(levels=4, n_classes=3),
        "binary": dict(output="bernoulli", levels=2, n_classes=0),
        "rgb": dict(channels=3, levels=5, n_classes=0),
        "grid": dict(height=3, width=3, output="bernoulli", levels=2, n_classes=0, n_filters=8, head_filters=16),
    }
    out = {}
    for name, kw in specs.items():
        folder = export_model_dir(make_pixelcnn(seed=len(name), **kw), root, f"tiny-{name}")
        out[name] = load_image_model(read_card(folder))
    return out


@pytest.mark.parametrize("name", ["grey", "binary", "rgb"])
@pytest.mark.parametrize("temperature", [1.0, 0.7, 0.0])
def test_fast_and_naive_give_the_same_samples_for_the_same_seed(models, name, temperature):
    model = models[name]
    config = DecodingConfig(temperature=temperature, top_p=0.9 if temperature == 0.7 else 1.0)
    label = 2 if model.n_classes else None
    a = PixelSampler(model, config, 11, label=label, batch=2, method="naive").run()
    b = PixelSampler(model, config, 11, label=label, batch=2, method="fast").run()
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_allclose(a.sampled_logprobs, b.sampled_logprobs, atol=1e-4)
    c = PixelSampler(model, config, 12, label=label, batch=2, method="fast").run()
    if temperature > 0:
        assert not np.array_equal(b.images, c.images)


def test_inpainting_keeps_known_pixels_exactly_and_matches_naive(models):
    model = models["grey"]
    s = model.shape
    rng = np.random.default_rng(0)
    init = rng.integers(0, s.levels, (1, s.height, s.width))
    mask = np.zeros((s.height, s.width), bool)
    mask[1:4, 2:5] = True
    mask[5, 0] = True
    config = DecodingConfig()
    fast = PixelSampler(model, config, 3, label=1, init=init, mask=mask, batch=4, method="fast")
    events = list(fast.steps())
    naive = PixelSampler(model, config, 3, label=1, init=init, mask=mask, batch=4, method="naive").run()
    np.testing.assert_array_equal(fast.images, naive.images)
    assert np.array_equal(fast.images[:, :, ~mask], np.repeat(init[None], 4, 0)[:, :, ~mask])
    assert [(e.row, e.col) for e in events] == [tuple(p) for p in np.argwhere(mask)]  # raster order
    # the sampled values' log-probs are the model's own conditionals of the final images
    lp = score_images(model, fast.images, 1)  # (B, C, H, W)
    np.testing.assert_allclose(lp[:, 0][:, mask].sum(axis=1), fast.sampled_logprobs, atol=1e-4)


def test_events_carry_position_value_probability_and_distribution(models):
    model = models["grey"]
    sampler = PixelSampler(model, DecodingConfig(temperature=0.5), 5, label=0)
    events = list(sampler.steps())
    assert len(events) == model.shape.dims
    for i, e in enumerate(events[:10]):
        assert e.index == i and (e.row, e.col) == divmod(i, model.shape.width)
        assert e.probs.shape == (1, model.values) and e.probs.sum() == pytest.approx(1.0)
        assert e.probability == pytest.approx(e.probs[0, e.value])
        assert e.probs_sampled.sum() == pytest.approx(1.0)
        assert sampler.images[0, 0, e.row, e.col] == e.value


def test_stopping_between_pixels(models):
    calls = []
    sampler = PixelSampler(models["grey"], DecodingConfig(), 1)
    events = list(sampler.steps(should_stop=lambda: len(calls.append(1) or calls) > 5))
    assert len(events) == 5 and not sampler.finished


def test_probabilities_of_every_image_of_a_3x3_grid_sum_to_one(models):
    model = models["grid"]
    images = np.array(list(itertools.product([0, 1], repeat=9)), dtype=np.uint8).reshape(-1, 1, 3, 3)  # (512, 1, 3, 3)
    total = score_images(model, images, batch_size=512).reshape(512, -1).sum(axis=1)
    assert np.exp(total).sum() == pytest.approx(1.0, abs=1e-5)
    # and sampling agrees with scoring
    s = PixelSampler(model, DecodingConfig(), 4, batch=8).run()
    np.testing.assert_allclose(s.sampled_logprobs, score_images(model, s.images).reshape(8, -1).sum(1), atol=1e-5)


def test_score_map_sums_to_the_total_and_bits_per_dim(models):
    model = models["rgb"]
    s = model.shape
    x = np.random.default_rng(1).integers(0, s.levels, (s.channels, s.height, s.width))
    sc = score_image(model, x)
    assert sc.logprob_map.shape == (s.height, s.width)
    assert sc.logprob_map.sum() == pytest.approx(sc.total)
    assert sc.n == s.dims and sc.bits_per_dim == pytest.approx(-sc.total / np.log(2) / s.dims)
    assert (sc.logprobs <= 0).all()


def test_posterior_resampling_weights_by_the_known_pixels_after_the_mask(models):
    model = models["binary"]
    s = model.shape
    init = np.zeros((1, s.height, s.width), np.uint8)
    init[0, 3:, :] = 1
    mask = np.zeros((s.height, s.width), bool)
    mask[1, 1:4] = True
    after = known_after(mask)
    assert not after[:1].any() and not after[1, :2].any() and after[1, 4:].all() and after[2:].all()
    K = 16
    sampler = PixelSampler(model, DecodingConfig(), 9, init=init, mask=mask, batch=K).run()
    post = posterior_resample(model, sampler.images, mask, 9, sampled_logprobs=sampler.sampled_logprobs)
    lp = score_images(model, sampler.images)
    np.testing.assert_allclose(post.known_after_logprobs, lp[:, :, after].reshape(K, -1).sum(1))
    assert post.weights.sum() == pytest.approx(1.0) and 1.0 <= post.effective_sample_size <= K
    assert np.array_equal(post.image, sampler.images[post.chosen])
    assert post.n_known_after == int(after.sum())
    again = posterior_resample(model, sampler.images, mask, 9)
    assert again.chosen == post.chosen  # the resampling draw is seeded
    assert post.log_evidence <= post.known_after_logprobs.max() + 1e-9


def test_bad_settings_and_inputs(models):
    model = models["grey"]
    with pytest.raises(DecodingError, match="beam"):
        PixelSampler(model, DecodingConfig(strategy="beam"), 0)
    with pytest.raises(DecodingError, match="repetition"):
        PixelSampler(model, DecodingConfig(repetition_penalty=1.2), 0)
    with pytest.raises(InputError, match="out of range"):
        PixelSampler(model, DecodingConfig(), 0, label=3)
    with pytest.raises(InputError, match="unconditional"):
        PixelSampler(models["binary"], DecodingConfig(), 0, label=1)
    init = np.zeros((1, model.shape.height, model.shape.width))
    with pytest.raises(InputError, match="nothing to regenerate"):
        PixelSampler(model, DecodingConfig(), 0, init=init, mask=np.zeros((model.shape.height, model.shape.width)))
    with pytest.raises(InputError, match="mask is"):
        PixelSampler(model, DecodingConfig(), 0, init=init, mask=np.ones((2, 2)))
    with pytest.raises(InputError, match="0..3"):
        PixelSampler(model, DecodingConfig(), 0, init=init + 7, mask=np.ones((model.shape.height, model.shape.width)))
