"""`chainrule eval --limit N` (the first N, labelled so) and `--sample N --seed S` (a seeded random
subset of the split, labelled "random N of M, seed S"): one selection rule
(`engines.cli_common.eval_indices`) used by every modality, on the shipped models."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest

from engines.cli import main
from engines.cli_common import eval_indices, eval_subset_label
from engines.errors import InputError
from tests.cli_helpers import error_line

pytestmark = pytest.mark.usefixtures("isolated_user_models")  # the shipped models, no user's


def _args(**kw) -> argparse.Namespace:
    base = {"limit": None, "sample": None, "seed": None, "data": "d.npz", "split": "test"}
    return argparse.Namespace(**{**base, **kw})


def _eval(capsys, *argv: str) -> dict:
    assert main(["eval", *argv, "--json"]) == 0, capsys.readouterr().err
    return json.loads(capsys.readouterr().out)


def _eval_text_output(capsys, *argv: str) -> str:
    assert main(["eval", *argv]) == 0
    return capsys.readouterr().out


# --- the selection rule ---------------------------------------------------------------------------
def test_the_examples_each_option_chooses():
    assert eval_indices(10, _args()).tolist() == list(range(10))
    assert eval_indices(10, _args(limit=4)).tolist() == [0, 1, 2, 3]
    a = eval_indices(1000, _args(sample=50, seed=7))
    assert len(a) == 50 and len(set(a.tolist())) == 50 and np.all(np.diff(a) > 0) and 0 <= a[0] and a[-1] < 1000
    assert a[-1] > 500  # spread over the split, not its start
    assert np.array_equal(a, eval_indices(1000, _args(sample=50, seed=7)))  # the seed fixes it
    assert not np.array_equal(a, eval_indices(1000, _args(sample=50, seed=8)))
    assert np.array_equal(eval_indices(1000, _args(sample=50)), eval_indices(1000, _args(sample=50, seed=0)))
    assert eval_indices(5, _args(sample=50)).tolist() == [0, 1, 2, 3, 4]  # more than there are: all


def test_the_labels():
    assert eval_subset_label(500, 10000, _args(limit=500)) == "first 500 of 10000"
    assert eval_subset_label(500, 10000, _args(sample=500, seed=0)) == "random 500 of 10000, seed 0"
    assert eval_subset_label(500, 10000, _args(sample=500)) == "random 500 of 10000, seed 0"
    assert eval_subset_label(10000, 10000, _args()) == "all 10000"
    assert eval_subset_label(7, 7, _args(limit=20)) == "all 7"


@pytest.mark.parametrize("kw, words", [({"sample": 5, "limit": 5}, "give one"),
                                       ({"seed": 3}, "give --sample too"),
                                       ({"sample": 0}, "sample = 0 is invalid")])
def test_options_that_do_not_go_together_are_refused(kw, words):
    with pytest.raises(InputError, match=words):
        eval_indices(10, _args(**kw))


def test_sample_with_limit_is_one_line_before_any_model_is_read(capsys, tmp_path):
    data = tmp_path / "t.txt"
    data.write_text("to be or not to be\n" * 50)
    line = error_line(capsys, str(tmp_path), "eval", "--model", "no-such-model", "--data", str(data),
                      "--sample", "3", "--limit", "3")
    assert "--sample 3 and --limit 3" in line
    line = error_line(capsys, str(tmp_path), "eval", "--model", "bmnist-nade", "--task", "recognition", "--sample", "3")
    assert "--sample does not apply to --task recognition" in line


# --- the mean is over exactly the chosen examples -------------------------------------------------
def _binarized(path: Path, images: np.ndarray) -> str:
    flat = images.reshape(len(images), -1).astype(np.uint8)
    np.savez(path, train=flat[:2], valid=flat[:2], test=flat)
    return str(path)


@pytest.mark.parametrize("model", ["bmnist-nade", "bmnist-pixelcnn"])
def test_sample_scores_exactly_the_chosen_images(capsys, tmp_path, model):
    # 40 images whose likelihoods differ widely (from nearly empty to half ink): a wrong image in
    # the subset moves the mean.
    rng = np.random.default_rng(1)
    density = np.linspace(0.01, 0.5, 40)
    images = (rng.random((40, 28, 28)) < density[:, None, None]).astype(np.uint8)
    data = _binarized(tmp_path / "tiny.npz", images)
    r = _eval(capsys, "--model", model, "--data", data, "--sample", "7", "--seed", "3")
    chosen = eval_indices(40, _args(sample=7, seed=3))
    alone = _eval(capsys, "--model", model, "--data", _binarized(tmp_path / "chosen.npz", images[chosen]))
    assert r["n_examples"] == alone["n_examples"] == 7
    assert r["nats_per_example"] == pytest.approx(alone["nats_per_example"], rel=1e-9)
    assert r["subset"] == "random 7 of 40, seed 3" and alone["subset"] == "all 7"
    other = _eval(capsys, "--model", model, "--data", data, "--sample", "7", "--seed", "4")
    assert other["nats_per_example"] != pytest.approx(r["nats_per_example"], rel=1e-3)
    first = _eval(capsys, "--model", model, "--data", data, "--limit", "7")
    assert first["subset"] == "first 7 of 40"
    assert first["nats_per_example"] == pytest.approx(
        _eval(capsys, "--model", model, "--data", _binarized(tmp_path / "first.npz", images[:7]))["nats_per_example"])
    out = _eval_text_output(capsys, "--model", model, "--data", data, "--sample", "7", "--seed", "3")
    assert "examples scored: random 7 of 40, seed 3 (test split)" in out


def _fsdd(path: Path, picks=None) -> list:
    """A tiny fsdd.npz: 12 short test clips (takes 0-4) of two speakers; `picks` keeps only those clips."""
    rng = np.random.default_rng(0)
    clips = []
    for digit in (1, 5, 8):
        for speaker in ("george", "lucas"):
            for take in (0, 2):
                n = int(rng.integers(40, 160))
                wave = np.sin(np.arange(n) * (digit + 1) / 7.0) * (2000 + 3000 * take) + rng.normal(0, 200 * (digit + 1), n)
                clips.append((wave.astype(np.int16), digit, speaker, take))
    if picks is not None:
        clips = [clips[i] for i in picks]
    offsets = np.cumsum([0] + [len(c[0]) for c in clips])
    np.savez(path, audio=np.concatenate([c[0] for c in clips]), offsets=offsets,
             labels=np.array([c[1] for c in clips]), speakers=np.array([c[2] for c in clips]),
             index=np.array([c[3] for c in clips]), sample_rate=np.array(8000))
    return clips


def test_audio_sample_scores_exactly_the_chosen_clips(capsys, tmp_path):
    clips = _fsdd(tmp_path / "fsdd.npz")
    r = _eval(capsys, "--model", "fsdd-wavenet", "--data", str(tmp_path / "fsdd.npz"), "--sample", "5", "--seed", "2")
    chosen = eval_indices(len(clips), _args(sample=5, seed=2))
    _fsdd(tmp_path / "chosen.npz", picks=chosen.tolist())
    alone = _eval(capsys, "--model", "fsdd-wavenet", "--data", str(tmp_path / "chosen.npz"))
    assert r["n_examples"] == 5 and r["subset"] == f"random 5 of {len(clips)}, seed 2"
    assert r["n_samples"] == alone["n_samples"] == sum(len(clips[i][0]) for i in chosen)
    assert r["bits_per_sample"] == pytest.approx(alone["bits_per_sample"], rel=1e-6)


# --- on the shipped text model: a quick check agrees with the whole split -------------------------
WORDS = ("the king my lord good sir what shall we do now come hither thou art love death night day heart "
         "blood hand sweet fair noble father son brother crown sword speak hear tell know").split()
SPEAKERS = ("KING HENRY", "ROMEO", "JULIET", "FIRST CITIZEN", "GLOUCESTER", "QUEEN MARGARET")
# Relative. The 22 examples' own means spread by ~4% (sd), so the mean of a random 7 of them is off
# by ~1.4% (sd, without replacement); 5% is ~3.5 sd. (Seeds 0-9 measured: all within 4%.)
SAMPLE_TOLERANCE = 0.05


def _play(n_chars: int) -> str:
    """Play-like text in shakespeare-char's alphabet: speeches of seeded random words."""
    rng = np.random.default_rng(5)
    parts, size = [], 0
    while size < n_chars:
        words = [WORDS[i] for i in rng.integers(0, len(WORDS), int(rng.integers(6, 18)))]
        line = " ".join(words).capitalize() + rng.choice([".", ",", "?", "!", ";"])
        speech = f"{SPEAKERS[int(rng.integers(len(SPEAKERS)))]}:\n{line}\n\n"
        parts.append(speech)
        size += len(speech)
    return "".join(parts)


def test_text_sample_mean_agrees_with_the_full_split(capsys, tmp_path):
    data = tmp_path / "play.txt"
    data.write_text(_play(24_000), encoding="utf-8")  # train split: the first 90%, 22 examples of <= 1024 tokens
    full = _eval(capsys, "--model", "shakespeare-char", "--data", str(data), "--split", "train")
    quick = _eval(capsys, "--model", "shakespeare-char", "--data", str(data), "--split", "train",
                  "--sample", "7", "--seed", "0")
    assert full["n_examples"] == 22 and full["subset"] == "all 22"
    assert quick["n_examples"] == 7 and quick["subset"] == "random 7 of 22, seed 0"
    assert quick["nats_per_element"] != full["nats_per_element"]  # a real subset, not the split again
    assert quick["nats_per_element"] == pytest.approx(full["nats_per_element"], rel=SAMPLE_TOLERANCE)
    out = _eval_text_output(capsys, "--model", "shakespeare-char", "--data", str(data), "--split", "train",
                            "--limit", "1")
    assert "examples scored: first 1 of 22 (train split)" in out


def test_the_card_key_says_which_subset(tmp_path, capsys, monkeypatch):
    import shutil

    from engines.registry import shipped_models_dir

    models = tmp_path / "models"
    shutil.copytree(shipped_models_dir() / "bmnist-nade", models / "bmnist-nade")
    monkeypatch.setattr("engines.registry.shipped_models_dir", lambda: tmp_path / "none")
    rng = np.random.default_rng(0)
    data = _binarized(tmp_path / "tiny.npz", (rng.random((20, 28, 28)) < 0.2).astype(np.uint8))
    for flags in (["--sample", "5", "--seed", "1"], ["--limit", "5"]):
        assert main(["eval", "--model", "bmnist-nade", "--models-dir", str(models), "--data", data, *flags,
                     "--write-card"]) == 0
    metrics = json.loads((models / "bmnist-nade" / "card.json").read_text())["metrics"]
    assert metrics["tiny/test/random5-seed1"]["subset"] == "random 5 of 20, seed 1"
    assert metrics["tiny/test/first5"]["subset"] == "first 5 of 20"
