"""engines.decoding.collapse and probes: which settings leave one candidate at most positions of
the shipped models, on exact small rows and on the real models' probe distributions."""

from __future__ import annotations

import time

import numpy as np
import pytest

from engines.decoding.collapse import COLLAPSE_THRESHOLD, check_collapse, collapse_fraction, collapse_warning
from engines.decoding.config import DecodingConfig
from engines.decoding.flags import card_config
from engines.decoding.probes import MAX_PROBE_VALUES, probe_digits, probe_rows
from engines.decoding.samplers import build_chain, log_softmax
from engines.registry import list_models

SHIPPED_SAMPLED = ("shakespeare-char", "gutenberg-bpe", "mnist-pixelcnn", "bmnist-pixelcnn", "bmnist-nade",
                   "bmnist-made")


def _load(info):
    if info.kind == "text":
        from engines.text.model import load_text_model
        return load_text_model(info)
    if info.kind == "image":
        from engines.image.model import load_image_model
        return load_image_model(info, fast=False)
    from engines.density.model import load_density_model
    return load_density_model(info)


@pytest.fixture(scope="module")
def shipped():
    """model id -> (ModelInfo, probe rows) of the shipped models the Decoding panel applies to."""
    infos = {m.id: m for m in list_models() if m.usable}
    out = {}
    for model_id in SHIPPED_SAMPLED:
        if model_id not in infos:
            pytest.skip(f"shipped model {model_id} is not installed")
        info = infos[model_id]
        out[model_id] = (info, probe_rows(info.kind, _load(info)))
    return out


# --- exact, on rows written by hand -------------------------------------------------------------
def test_the_fraction_counts_rows_left_with_one_candidate():
    probs = np.array([[0.95, 0.03, 0.02],   # top-p 0.9: the mode alone
                      [0.50, 0.30, 0.20],   # keeps two
                      [0.91, 0.05, 0.04],   # the mode alone
                      [0.25, 0.25, 0.50]])  # keeps two (0.5 < 0.9)
    rows = np.log(probs)
    assert collapse_fraction(DecodingConfig(top_p=0.9), rows) == 0.5
    assert collapse_fraction(DecodingConfig(top_p=0.96), rows) == 0.0
    assert collapse_fraction(DecodingConfig(min_p=0.5), rows) == 0.5  # rows 1 and 3 keep p >= half the mode
    assert collapse_fraction(DecodingConfig(min_p=0.9), rows) == 1.0  # 0.30 < 0.9 * 0.50, 0.25 < 0.9 * 0.50
    assert collapse_fraction(DecodingConfig(top_k=1, strategy="sample", temperature=0.5), rows) == 1.0
    assert collapse_fraction(DecodingConfig(), rows) == 0.0  # no filter: every value stays


def test_the_fraction_is_what_the_run_s_chain_keeps():
    rng = np.random.default_rng(0)
    rows = log_softmax(rng.normal(0, 3, (200, 50)))
    for config in (DecodingConfig(top_p=0.8), DecodingConfig(min_p=0.2, temperature=0.7),
                   DecodingConfig(typical_p=0.5), DecodingConfig(top_k=3, top_p=0.5)):
        kept = np.isfinite(build_chain(config, 0).process(rows, [()] * 200)).sum(axis=1)
        assert collapse_fraction(config, rows) == np.mean(kept <= 1)
        # the probes sort each row: no filter depends on which value is which without histories
        assert collapse_fraction(config, -np.sort(-rows, axis=1)) == np.mean(kept <= 1)


def test_greedy_on_purpose_is_not_a_collapse():
    rows = np.log(np.array([[0.99, 0.01]] * 4))
    for config in (DecodingConfig(strategy="greedy"), DecodingConfig(temperature=0),
                   DecodingConfig(top_k=1), DecodingConfig(strategy="beam")):
        assert check_collapse(config, rows) is None
        assert collapse_warning(config, rows, "m") is None
    found = check_collapse(DecodingConfig(top_p=0.9), rows)
    assert found.collapses and found.fraction == 1.0 and found.culprit == "top-p 0.9"


def test_the_warning_names_the_filter_that_collapses_or_the_chain():
    rows = np.log(np.array([[0.5, 0.3, 0.2]] * 3))
    assert check_collapse(DecodingConfig(top_k=50, min_p=0.62), rows).culprit == "min-p 0.62"
    # alone each keeps two values; together (top-k 2 renormalises to 0.625, 0.375) one
    config = DecodingConfig(top_k=2, top_p=0.6)
    assert check_collapse(config, rows).culprit == "the sampler chain top-k 2 → top-p 0.6"
    assert collapse_warning(config, rows, "m", "token positions") == (
        "the sampler chain top-k 2 → top-p 0.6 leaves one value at 100% of token positions for m: samples "
        "will be near-deterministic")
    assert check_collapse(DecodingConfig(top_p=0.6), rows).culprit == ""  # no collapse: nothing to blame


def test_the_probe_digits_look_like_mnist_digits():
    digits = probe_digits()
    assert digits.shape == (4, 28, 28) and digits.min() == 0 and digits.max() == 1
    ink = (digits > 0).mean(axis=(1, 2))
    assert np.all((ink > 0.05) & (ink < 0.35))  # strokes on a mostly black background, as in MNIST
    assert not digits[:, :3].any() and not digits[:, -3:].any()  # a margin, as MNIST's 20x20 box in 28x28


# --- the shipped models --------------------------------------------------------------------------
def test_top_p_0_9_collapses_mnist_pixelcnn_and_says_so(shipped):
    info, rows = shipped["mnist-pixelcnn"]
    assert rows.shape == (MAX_PROBE_VALUES // 256, 256)
    found = check_collapse(DecodingConfig(top_p=0.9), rows)
    assert found.fraction > 0.7  # measured 0.77: the background pixels put > 90% on black
    message = collapse_warning(DecodingConfig(top_p=0.9), rows, info.id, "pixel positions", "all-black digits")
    assert message.startswith("top-p 0.9 leaves one value at ")
    assert "% of pixel positions for mnist-pixelcnn: samples will be near-deterministic (all-black digits)" in message


@pytest.mark.parametrize("model_id", SHIPPED_SAMPLED)
def test_no_shipped_model_collapses_at_its_card_defaults(shipped, model_id):
    info, rows = shipped[model_id]
    config = card_config(info.card.get("decoding_defaults"))
    assert config is not None
    found = check_collapse(config, rows)
    assert not found.collapses
    # measured: 0 for the image and density models (temperature 1 filters nothing); text at
    # top-p 0.95: 0.28 (shakespeare-char, a confident character model) and 0.016 (gutenberg-bpe)
    assert found.fraction < (0.4 if info.kind == "text" else 0.01)


def test_text_top_p_0_9_does_not_collapse_shakespeare_char(shipped):
    info, rows = shipped["shakespeare-char"]
    found = check_collapse(DecodingConfig(top_p=0.9), rows)
    assert 0.1 < found.fraction < COLLAPSE_THRESHOLD  # measured 0.32: mostly spelling-determined letters
    assert collapse_warning(DecodingConfig(top_p=0.9), rows, info.id) is None


@pytest.mark.parametrize("model_id", ("bmnist-pixelcnn", "bmnist-nade", "bmnist-made"))
def test_top_p_0_9_collapses_the_black_and_white_models(shipped, model_id):
    _, rows = shipped[model_id]
    assert rows.shape[1] == 2
    assert check_collapse(DecodingConfig(top_p=0.9), rows).fraction > 0.75  # measured 0.84-0.87


def test_a_check_is_cheap_enough_for_every_edit(shipped):
    _, rows = shipped["mnist-pixelcnn"]  # the largest probe: 1024 x 256
    config = DecodingConfig(top_p=0.9, temperature=0.8)
    collapse_warning(config, rows, "m")  # warm up
    best = min(_timed(lambda: collapse_warning(config, rows, "m")) for _ in range(3))
    assert best < 0.2  # measured 11-12 ms idle, ~50 ms with 3 test runs on the 2 cores: generous


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start
