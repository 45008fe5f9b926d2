"""Classifier-free guidance in the PixelCNN sampler and `generate image --guidance`: the guided
distribution is log p(x|y) + w (log p(x|y) - log p(x)), w = 0 changes nothing, the reported
log-probabilities stay the conditional model's, fast = naive, and guidance is refused where it
has no meaning."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")

from engines.decoding.config import DecodingConfig  # noqa: E402
from engines.decoding.samplers import log_softmax  # noqa: E402
from engines.image.model import load_image_model  # noqa: E402
from engines.image.sampler import PixelSampler, score_images  # noqa: E402
from engines.registry import read_card  # noqa: E402
from tests.cli_helpers import error_line, run_cli  # noqa: E402
from tests.image_models import export_model_dir, make_pixelcnn  # noqa: E402

pytestmark = pytest.mark.usefixtures("isolated_user_models")
H = W = 6
PLAIN = DecodingConfig(strategy="sample", temperature=1.0)


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("guidance-models")
    export_model_dir(make_pixelcnn(seed=3, height=H, width=W, levels=256, n_classes=10), root, "tiny-mnist")
    export_model_dir(make_pixelcnn(height=5, width=5, output="bernoulli", levels=2, n_classes=0), root, "tiny-bmnist")
    return root


@pytest.fixture(scope="module")
def model(models_dir):
    return load_image_model(read_card(Path(models_dir) / "tiny-mnist"))


def test_guided_distribution_is_the_formula_and_the_reported_logprob_the_conditional_one(model):
    w = 2.5
    sampler = PixelSampler(model, PLAIN, 7, label=4, method="naive", guidance=w)
    img = np.zeros((1, 1, H, W), np.float32)
    for ev in sampler.steps():
        cond = log_softmax(model.distribution_logits(model.forward(img, model.labels(4, 1))[:, ev.row, ev.col, 0]))
        unc = log_softmax(model.distribution_logits(model.forward(img, model.labels(None, 1))[:, ev.row, ev.col, 0]))
        want = np.exp(log_softmax(cond + w * (cond - unc)))
        np.testing.assert_allclose(ev.probs_sampled, want, atol=1e-6)
        np.testing.assert_allclose(ev.probs, np.exp(cond), atol=1e-6)  # what the tab shows: the model's own
        assert ev.logprobs[0] == pytest.approx(cond[0, ev.value], abs=1e-6)
        img[0, 0, ev.row, ev.col] = ev.value
    # the sum of reported log-probabilities is the conditional model's exact log-likelihood of the image
    assert sampler.sampled_logprobs[0] == pytest.approx(score_images(model, sampler.images, 4).sum(), abs=1e-3)


def test_zero_guidance_is_plain_sampling_and_fast_equals_naive(model):
    plain = PixelSampler(model, PLAIN, 11, label=2, batch=3).run().images
    zero = PixelSampler(model, PLAIN, 11, label=2, batch=3, guidance=0.0).run().images
    assert np.array_equal(plain, zero)
    fast = PixelSampler(model, PLAIN, 11, label=2, batch=3, guidance=4.0, method="fast").run().images
    naive = PixelSampler(model, PLAIN, 11, label=2, batch=3, guidance=4.0, method="naive").run().images
    assert np.array_equal(fast, naive)
    assert not np.array_equal(fast, plain)  # guidance changed what was drawn


def test_guided_images_are_visible_while_they_are_drawn(model):
    sampler = PixelSampler(model, PLAIN, 1, label=5, guidance=2.0)
    for ev in sampler.steps():
        assert sampler.images[0, 0, ev.row, ev.col] == ev.value
        break


@pytest.mark.parametrize("extra, words", [
    (["--guidance", "2"], "give a label too"),
    (["--label", "1", "--guidance", "-1"], "guidance = -1.0 is invalid"),
    (["--label", "1", "--guidance", "nan"], "guidance = nan is invalid"),
    (["--label", "1", "--guidance", "99"], "must be a number in 0..20"),
])
def test_cli_refuses_bad_guidance(capsys, models_dir, extra, words):
    assert words in error_line(capsys, str(models_dir), "generate", "image", "--model", "tiny-mnist", *extra)


def test_cli_refuses_guidance_without_a_condition_or_with_candidates(capsys, models_dir, tmp_path):
    line = error_line(capsys, str(models_dir), "generate", "image", "--model", "tiny-bmnist", "--guidance", "2")
    assert "unconditional" in line
    from tests.cli_helpers import save_png

    init = save_png(tmp_path / "i.png", np.zeros((H, W)))
    half = np.zeros((H, W))
    half[H // 2:] = 255
    mask = save_png(tmp_path / "m.png", half)
    line = error_line(capsys, str(models_dir), "generate", "image", "--model", "tiny-mnist", "--label", "1",
                      "--guidance", "2", "--init", init, "--mask", mask, "--candidates", "4")
    assert "candidates" in line and "guidance" in line


def test_cli_guidance_is_recorded_and_says_whose_likelihood_it_reports(capsys, models_dir, tmp_path):
    r, err = run_cli(capsys, str(models_dir), "generate", "image", "--model", "tiny-mnist", "--label", "3",
                     "--guidance", "1.5", "--seed", "2", "--out", str(tmp_path / "g.png"))
    assert r["settings"]["guidance"] == 1.5
    assert "unguided conditional model" in err
    s = r["samples"][0]
    model = load_image_model(read_card(Path(models_dir) / "tiny-mnist"))
    img = np.array(s["pixels"], dtype=np.float32).reshape(1, 1, H, W)
    assert s["total_logprob"] == pytest.approx(score_images(model, img, 3).sum(), abs=1e-3)


def test_image_tab_guides_toward_the_digit_like_the_cli(qtbot, models_dir, capsys):
    from engines.cli import main as cli_main
    from tests import tab_helpers
    from tests.tab_helpers import shown_window

    for window in shown_window(qtbot, models_dir, "Image"):
        tab = window.tab("Image")
        assert tab.select_model("tiny-mnist")
        assert not tab.guidance_spin.isEnabled()  # "any" digit: nothing to guide toward
        assert tab.set_label(6)
        assert tab.guidance_spin.isEnabled()
        tab.guidance_spin.setValue(2.5)
        tab_helpers.set_config(window, seed=4, temperature=1.0)
        run = tab_helpers.run_and_wait(qtbot, tab, tab.generate)
        assert "--guidance 2.5" in run.cli and "guidance 2.5" in run.chain
        model = load_image_model(read_card(Path(models_dir) / "tiny-mnist"))
        want = PixelSampler(model, PLAIN, 4, label=6, guidance=2.5).run().images[0]
        got = tab.canvas.state()[0]
        assert np.array_equal(np.asarray(got).reshape(want.shape), want)


def test_card_default_guidance_applies_with_a_label_and_is_refused_when_absurd(capsys, models_dir, tmp_path):
    import json
    import shutil

    from engines.image.sampler import card_guidance

    root = tmp_path / "m"
    shutil.copytree(Path(models_dir) / "tiny-mnist", root / "tiny-mnist")
    card_path = root / "tiny-mnist" / "card.json"
    card = json.loads(card_path.read_text())
    card["guidance_default"] = 2.0
    card_path.write_text(json.dumps(card))
    r, _ = run_cli(capsys, str(root), "generate", "image", "--model", "tiny-mnist", "--label", "1", "--seed", "0")
    assert r["settings"]["guidance"] == 2.0
    r, _ = run_cli(capsys, str(root), "generate", "image", "--model", "tiny-mnist", "--seed", "0")
    assert r["settings"]["guidance"] == 0.0  # no label: nothing to guide toward
    r, _ = run_cli(capsys, str(root), "generate", "image", "--model", "tiny-mnist", "--label", "1", "--guidance", "0",
                   "--seed", "0")
    assert r["settings"]["guidance"] == 0.0
    for bad in ("x", -3, 1e9, float("nan"), True, None):
        assert card_guidance({"guidance_default": bad}) == 0.0
