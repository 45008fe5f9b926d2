"""`eval --task recognition`: the recogniser reads a model's samples. A stand-in judge that reads every
image as a fixed digit makes the figures known, so the counting (digits asked for, guidance, the
completion split, the spread of an unconditional model's digits) is what is tested."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")

from engines.image import recognition  # noqa: E402
from engines.recognise import Verdict  # noqa: E402
from engines.registry import read_card  # noqa: E402
from tests.cli_helpers import run_cli  # noqa: E402
from tests.image_models import export_model_dir, make_pixelcnn  # noqa: E402

pytestmark = pytest.mark.usefixtures("isolated_user_models")


class ReadsAll:
    """Reads every image as `digit` with confidence 0.9, and counts what it was shown."""

    id = "stand-in"

    def __init__(self, digit: int):
        self.digit, self.seen = digit, []

    def judge(self, images, levels=256):
        images = np.asarray(images)
        self.seen.append((images.shape, levels))
        probs = np.full(10, 0.1 / 9)
        probs[self.digit] = 0.9
        return [Verdict(self.digit, recognition.DIGIT_NAMES[self.digit], 0.9, probs) for _ in range(len(images))]


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("recognition-models")
    export_model_dir(make_pixelcnn(seed=1, height=28, width=28, levels=256, n_classes=10, n_filters=4, n_layers=2,
                                   head_filters=8), root, "tiny-mnist28")
    return root


def fake_mnist(path: Path) -> str:
    rng = np.random.default_rng(0)
    np.savez(path, x_train=rng.integers(0, 256, (20, 28, 28), dtype=np.uint8), y_train=np.arange(20) % 10,
             x_test=rng.integers(0, 256, (30, 28, 28), dtype=np.uint8), y_test=(np.arange(30) % 10).astype(np.uint8))
    return str(path)


def test_conditional_and_completion_figures_count_the_digits_asked_for(models_dir, tmp_path, monkeypatch):
    judge = ReadsAll(3)
    monkeypatch.setattr(recognition, "_judge", lambda: judge)
    r = recognition.pixelcnn_recognition(read_card(models_dir / "tiny-mnist28"), per_digit=1,
                                         data=fake_mnist(tmp_path / "m.npz"), candidates=2)
    # 10 digits x 1 sample, once plain and once guided: only the samples asked to be a 3 are read right
    assert r["conditional_accuracy_w0"] == pytest.approx(0.1) and r["conditional_accuracy_guided"] == pytest.approx(0.1)
    assert r["conditional_confidence_w0"] == pytest.approx(0.1 * 0.9 + 0.9 * 0.1 / 9)
    assert r["completion_images"] == 10 and r["completion_accuracy"] == pytest.approx(0.1)
    assert r["completion_posterior_accuracy"] == pytest.approx(0.1) and r["guidance"] == recognition.DEFAULT_GUIDANCE
    assert r["inpainting_accuracy"] == pytest.approx(0.1) and r["inpainting_posterior_accuracy"] == pytest.approx(0.1)
    assert all(shape[1:] == (28, 28) for shape, _ in judge.seen)


def test_unconditional_spread_and_cli_card(capsys, models_dir, tmp_path, monkeypatch):
    import shutil

    root = tmp_path / "models"
    export_model_dir(make_pixelcnn(seed=2, height=28, width=28, output="bernoulli", levels=2, n_classes=0,
                                   n_filters=4, n_layers=2, head_filters=8), root, "tiny-bmnist28")
    monkeypatch.setattr(recognition, "_judge", lambda: ReadsAll(7))
    r, _ = run_cli(capsys, str(root), "eval", "--model", "tiny-bmnist28", "--task",
                   "recognition", "--seeds", "1", "--write-card")
    assert r["n_samples"] == 10 and r["digits_drawn"] == 1 and r["read_as_seven"] == 10
    assert r["digit_entropy_bits"] == 0.0 and r["mean_confidence"] == pytest.approx(0.9)
    card = read_card(root / "tiny-bmnist28").card
    assert card["metrics"]["recognition"]["read_as_seven"] == 10
    assert "--task recognition" in card["metrics"]["recognition"]["command"]
    shutil.rmtree(root)
