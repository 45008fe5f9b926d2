"""The recognisers (classifier models): export, the registry, the judges (engines.recognise),
`chainrule judge`, and the shipped fsdd-recogniser / mnist-recogniser."""

from __future__ import annotations

import json
import os
import time

import numpy as np
import pytest
from PIL import Image

torch = pytest.importorskip("torch")  # the tiny models are built in torch: skip without the train extra

from engines.audio import mulaw  # noqa: E402
from engines.audio.mel import MelSpec, log_mel  # noqa: E402
from engines.audio.wav import write_audio  # noqa: E402
from engines.card_metrics import key_metrics  # noqa: E402
from engines.cli import main as cli_main  # noqa: E402
from engines.errors import ChainruleError, InputError, ModelLoadError, ModelNotFoundError  # noqa: E402
from engines.recognise import (  # noqa: E402
    AudioJudge,
    ImageJudge,
    Verdict,
    default_judge,
    find_recogniser,
    get_recogniser,
    load_recogniser,
    softmax,
)
from engines.registry import list_models, read_card, shipped_models_dir  # noqa: E402
from tests.recogniser_models import (  # noqa: E402
    SPEAKERS,
    TINY_MEL,
    export_recogniser_dir,
    make_audio_recogniser,
    make_image_recogniser,
)

AUDIO, IMAGE = "tiny-audio-recogniser", "tiny-image-recogniser"


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("recogniser-models")
    audio = make_audio_recogniser(seed=0)
    image = make_image_recogniser(seed=1)
    export_recogniser_dir(audio, root, AUDIO)
    export_recogniser_dir(image, root, IMAGE)
    return root, audio, image


@pytest.fixture
def isolated(isolated_model_dirs):
    return isolated_model_dirs


def speech(seconds: float = 0.5, rate: int = 8000, seed: int = 0) -> np.ndarray:
    """A vowel-like tone burst with silence around it, float32 in [-1, 1]."""
    t = np.arange(int(seconds * rate)) / rate
    env = np.exp(-((t - seconds / 2) / (seconds / 6)) ** 2)
    x = env * (0.4 * np.sin(2 * np.pi * 220 * t) + 0.2 * np.sin(2 * np.pi * 710 * t))
    x += 0.003 * np.random.default_rng(seed).standard_normal(len(t))
    return x.astype(np.float32)


def digit_images(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.random((n, 28, 28)) * 255 * (rng.random((n, 28, 28)) < 0.3)).astype(np.uint8)


# --- export -------------------------------------------------------------------------------------

def test_the_exported_cards_say_what_the_classifiers_read(models_dir):
    root, audio, image = models_dir
    a = json.loads((root / AUDIO / "card.json").read_text())
    assert (a["kind"], a["modality"]) == ("classifier", "audio")
    assert a["labels"] == {"digits": ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight",
                                      "nine"], "speakers": list(SPEAKERS)}
    assert MelSpec.from_dict(a["mel"]) == MelSpec(**TINY_MEL)
    assert a["io"]["model"] == {"inputs": ["mel"], "outputs": ["digit_logits", "speaker_logits"]}
    assert a["parameters"] == sum(p.numel() for p in audio.parameters())
    assert a["metrics"]["fsdd/test"]["digit_accuracy"] == 0.5 and a["metrics"]["fsdd/test"]["speaker_accuracy"] == 0.25
    assert a["data"]["train_command"].startswith("chainrule train recogniser")
    assert a["export_check"]["max_relative_error"] <= 1e-4
    i = json.loads((root / IMAGE / "card.json").read_text())
    assert (i["kind"], i["modality"], i["io"]["model"]["inputs"]) == ("classifier", "image", ["image"])
    assert i["metrics"]["mnist/test"]["binarized_accuracy"] == 0.5


def test_the_exporter_refuses_a_graph_that_disagrees_with_torch(models_dir):
    from engines.training.export_recogniser import _check_against_torch

    root, _audio, image = models_dir
    x = torch.rand(2, 1, 28, 28)
    path = root / IMAGE / "model.onnx"
    assert _check_against_torch(image, path, {"image": x}, ["digit_logits"]) <= 1e-4
    other = make_image_recogniser(seed=9)
    with pytest.raises(ChainruleError, match="differ from torch"):
        _check_against_torch(other, path, {"image": x}, ["digit_logits"])


# --- the registry ---------------------------------------------------------------------------------

def test_the_registry_lists_classifiers_with_their_accuracy(models_dir, isolated):
    root = models_dir[0]
    models = {m.id: m for m in list_models([root])}
    assert models[AUDIO].kind == models[IMAGE].kind == "classifier" and models[AUDIO].usable
    assert key_metrics(models[AUDIO].metrics) == "test digit accuracy 50.0%, speaker 25.0%"
    assert key_metrics(models[IMAGE].metrics) == "test accuracy 75.0% (binarized 50.0%)"


def test_chainrule_models_shows_a_classifier_and_generate_score_eval_refuse_it(models_dir, isolated, capsys):
    root = models_dir[0]
    assert cli_main(["models", "--models-dir", str(root)]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith(AUDIO))
    assert "classifier" in row and "digit accuracy 50.0%" in row and row.rstrip().endswith("ok")
    for argv in (["generate", "audio", "--model", AUDIO], ["eval", "--model", AUDIO, "--data", "x.npz"],
                 ["score", "--model", IMAGE, "--image", "x.png"]):
        assert cli_main([*argv, "--models-dir", str(root)]) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "is a classifier" in err[0] and "chainrule judge" in err[0], err


def test_the_models_view_shows_a_classifier_with_its_accuracy(qtbot, models_dir, isolated):
    from tests.tab_helpers import new_window

    window = new_window(qtbot, models_dir[0])
    view = window.tab("Models")
    ids = [view.table.item(r, 0).text() for r in range(view.table.rowCount())]
    row = ids.index(AUDIO)
    cells = [view.table.item(row, c).text() for c in range(view.table.columnCount())]
    assert cells[1] == "classifier" and cells[4] == "test digit accuracy 50.0%, speaker 25.0%"
    assert cells[6] == "ready"
    view.table.selectRow(row)
    summary = view.summary.toPlainText()
    assert "test digit accuracy 50.0%, speaker 25.0%" in summary and "chainrule train recogniser" in summary


# --- the judges -------------------------------------------------------------------------------------

def test_the_image_judge_reads_the_argmax_of_the_models_logits(models_dir):
    root, _audio, image = models_dir
    judge = load_recogniser(read_card(root / IMAGE))
    assert isinstance(judge, ImageJudge)
    x = digit_images(6)
    verdicts = judge.judge(x, levels=256)
    with torch.no_grad():
        logits = image(torch.from_numpy(x.astype(np.float32) / 255.0)[:, None]).numpy()
    assert [v.label for v in verdicts] == list(logits.argmax(1))
    for v, row in zip(verdicts, logits):
        assert v.probs.sum() == pytest.approx(1.0)
        np.testing.assert_allclose(v.probs, softmax(row), atol=1e-5)
        assert v.probability == pytest.approx(v.probs.max()) and v.name == judge.digit_names[v.label]
        assert v.speaker is None
        top = v.top(3)
        assert [t[0] for t in top] == list(np.argsort(-row)[:3]) and top[0][2] == v.probability
    # (N, 1, H, W) reads the same; binary 0/1 pixels are scaled by 1 (not 1/255)
    assert [v.label for v in judge.judge(x[:, None], levels=256)] == [v.label for v in verdicts]
    binary = (x >= 128).astype(np.uint8)
    with torch.no_grad():
        want = image(torch.from_numpy(binary.astype(np.float32))[:, None]).numpy()
    np.testing.assert_allclose(np.stack([v.probs for v in judge.judge(binary, levels=2)]), softmax(want), atol=1e-5)


def test_the_audio_judge_reads_frames_and_recordings_as_in_training(models_dir):
    root, audio, _image = models_dir
    judge = load_recogniser(read_card(root / AUDIO))
    assert isinstance(judge, AudioJudge) and judge.sample_rate == 8000
    spec = MelSpec(**TINY_MEL)
    x = speech()
    frames = log_mel(mulaw.decode(mulaw.encode(x)), spec)  # the training path: mu-law round trip first
    with torch.no_grad():
        digit, speaker = (t[0].numpy() for t in audio(torch.from_numpy(frames)[None]))
    v = judge.judge(x, 8000)
    assert (v.label, v.speaker) == (int(digit.argmax()), SPEAKERS[int(speaker.argmax())])
    np.testing.assert_allclose(v.probs, softmax(digit), atol=1e-5)
    np.testing.assert_allclose(v.speaker_probs, softmax(speaker), atol=1e-5)
    assert v.speaker_probs.sum() == pytest.approx(1.0) and v.speaker_probability == pytest.approx(v.speaker_probs.max())
    np.testing.assert_allclose(judge.judge_frames(frames).probs, v.probs, atol=1e-6)
    assert v.text() == f"{v.name} ({100 * v.probability:.0f}%), {v.speaker} ({100 * v.speaker_probability:.0f}%)"
    # Another rate is resampled to the card's first: the same as resampling it ourselves.
    import soxr

    x16 = speech(rate=16000)
    want = judge.judge(np.clip(soxr.resample(x16, 16000, 8000, quality="HQ"), -1, 1), 8000)
    np.testing.assert_allclose(judge.judge(x16, 16000).probs, want.probs, atol=1e-6)
    # Frames differ without the round trip on a quiet recording (the judge does not skip it).
    quiet = 0.01 * x
    assert not np.array_equal(log_mel(quiet, spec), judge.frames(quiet, 8000))


@pytest.mark.parametrize("bad, match", [
    (np.zeros(0, np.float32), "0 samples"),
    (np.zeros((2, 100), np.float32), "one channel"),
    (np.array([0.1, np.nan, 0.0], np.float32), "not numbers"),
])
def test_the_audio_judge_refuses_bad_audio_in_one_line(models_dir, bad, match):
    judge = load_recogniser(read_card(models_dir[0] / AUDIO))
    with pytest.raises(InputError, match=match):
        judge.judge(bad, 8000)
    with pytest.raises(InputError, match="sample rate"):
        judge.judge(speech(), 0)
    with pytest.raises(InputError, match=r"\(6, T\)"):
        judge.judge_frames(np.zeros((5, 10), np.float32))


def test_the_image_judge_refuses_bad_images(models_dir):
    judge = load_recogniser(read_card(models_dir[0] / IMAGE))
    with pytest.raises(InputError, match="28"):
        judge.judge(np.zeros((2, 27, 28), np.uint8))
    with pytest.raises(InputError, match="0..1"):
        judge.judge(np.full((1, 28, 28), 2, np.uint8), levels=2)
    with pytest.raises(InputError, match="integer"):
        judge.judge(np.zeros((1, 28, 28), np.float32))
    assert judge.reads(28, 28, 1) and not judge.reads(28, 28, 3) and not judge.reads(6, 7, 1)


def test_judges_are_cached_until_the_model_changes(models_dir, tmp_path):
    root, audio, image = models_dir
    a = load_recogniser(read_card(root / IMAGE))
    assert load_recogniser(read_card(root / IMAGE)) is a  # a fresh listing of the same model
    folder = export_recogniser_dir(image, tmp_path, IMAGE)
    b = load_recogniser(read_card(folder))
    assert b is not a  # another folder
    later = time.time() + 5
    os.utime(folder / "model.onnx", (later, later))
    assert load_recogniser(read_card(folder)) is not b  # re-exported (a new mtime): opened afresh


def test_a_bad_classifier_card_is_one_clear_error(models_dir, tmp_path):
    import shutil

    folder = tmp_path / "bad"
    shutil.copytree(models_dir[0] / AUDIO, folder)
    card = json.loads((folder / "card.json").read_text())
    (folder / "card.json").write_text(json.dumps({**card, "modality": "smell"}))
    with pytest.raises(ModelLoadError, match="modality"):
        load_recogniser(read_card(folder))
    (folder / "card.json").write_text(json.dumps({**card, "modality": "image"}))  # an audio graph
    with pytest.raises(ModelLoadError, match="does not match its model card: missing input"):
        load_recogniser(read_card(folder))
    (folder / "card.json").write_text(json.dumps({**card, "labels": {**card["labels"], "speakers": ["a", "b"]}}))
    with pytest.raises(ModelLoadError, match="speakers names 2 classes but speaker_logits has 3"):
        load_recogniser(read_card(folder))
    del card["mel"]
    (folder / "card.json").write_text(json.dumps(card))
    with pytest.raises(ModelLoadError, match="mel"):
        load_recogniser(read_card(folder))


def test_default_judge_prefers_the_shipped_ids_and_is_none_without_a_recogniser(models_dir, isolated, tmp_path):
    root = models_dir[0]
    assert default_judge("image", [tmp_path / "empty"]) is None
    assert default_judge("audio", [root]).id == AUDIO and default_judge("image", [root]).id == IMAGE
    export_recogniser_dir(make_image_recogniser(seed=2), tmp_path, "mnist-recogniser")
    export_recogniser_dir(make_image_recogniser(seed=3), tmp_path, "a-first-by-id")
    assert find_recogniser(list_models([tmp_path]), "image").id == "mnist-recogniser"
    assert find_recogniser(list_models([tmp_path]), "audio") is None
    with pytest.raises(ModelNotFoundError, match="not a classifier of audio"):
        get_recogniser(IMAGE, "audio", [root])


# --- chainrule judge -------------------------------------------------------------------------------

def test_judge_audio_prints_one_line_per_file_and_json(models_dir, isolated, tmp_path, capsys):
    root = models_dir[0]
    judge = load_recogniser(read_card(root / AUDIO))
    paths = []
    for i, rate in enumerate((8000, 16000)):
        p = tmp_path / f"{i}_clip.wav"
        write_audio(p, speech(rate=rate, seed=i), rate)
        paths.append(str(p))
    want = [judge.judge(write_read(p), 8000) for p in paths]
    assert cli_main(["judge", "audio", *paths, "--models-dir", str(root)]) == 0
    out = capsys.readouterr()
    assert out.out.splitlines() == [f"{p}: {v.text()}" for p, v in zip(paths, want)]
    assert "resampled from 16000 Hz" in out.err  # the conversion is said, on stderr
    assert cli_main(["judge", "audio", *paths, "--json", "--models-dir", str(root), "--model", AUDIO]) == 0
    records = json.loads(capsys.readouterr().out)
    assert [r["file"] for r in records] == paths
    for r, v in zip(records, want):
        assert (r["digit"], r["digit_name"], r["speaker"]) == (v.label, v.name, v.speaker)
        assert r["digit_probability"] == pytest.approx(v.probability)
        assert r["speaker_probability"] == pytest.approx(v.speaker_probability)
        assert [t["digit"] for t in r["top"]] == [t[0] for t in v.top(3)] and len(r["top"]) == 3


def write_read(path) -> np.ndarray:
    from engines.audio.wav import read_audio

    return read_audio(path, 8000).samples


def test_judge_says_each_bad_file_in_one_line_and_exits_non_zero(models_dir, isolated, tmp_path, capsys):
    root = models_dir[0]
    good = tmp_path / "good.wav"
    write_audio(good, speech(), 8000)
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF....WAVEjunk")
    assert cli_main(["judge", "audio", str(bad), str(good), str(tmp_path / "missing.wav"),
                     "--models-dir", str(root)]) == 1
    out = capsys.readouterr()
    assert len(out.out.splitlines()) == 1 and out.out.startswith(f"{good}: ")  # the good file is still judged
    err = out.err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("chainrule: error: ") for line in err)
    assert "bad.wav" in err[0] and "missing.wav" in err[1] and "Traceback" not in out.err


def test_judge_image_reads_28x28_pngs_and_refuses_other_sizes(models_dir, isolated, tmp_path, capsys):
    root = models_dir[0]
    judge = load_recogniser(read_card(root / IMAGE))
    x = digit_images(2, seed=5)
    paths = []
    for i, img in enumerate(x):
        Image.fromarray(img).save(tmp_path / f"d{i}.png")
        paths.append(str(tmp_path / f"d{i}.png"))
    Image.fromarray(np.zeros((30, 30), np.uint8)).save(tmp_path / "big.png")
    want = judge.judge(x)
    assert cli_main(["judge", "image", *paths, "--models-dir", str(root)]) == 0
    assert capsys.readouterr().out.splitlines() == [f"{p}: {v.name} ({100 * v.probability:.0f}%)"
                                                    for p, v in zip(paths, want)]
    assert cli_main(["judge", "image", paths[0], "--json", "--models-dir", str(root)]) == 0
    (record,) = json.loads(capsys.readouterr().out)
    assert record["digit"] == want[0].label and "speaker" not in record
    assert cli_main(["judge", "image", str(tmp_path / "big.png"), "--models-dir", str(root)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "30x30" in err[0] and "28x28" in err[0]


def test_judge_without_a_recogniser_or_with_another_kind_is_one_line(models_dir, isolated, tmp_path, capsys):
    write_audio(tmp_path / "a.wav", speech(), 8000)
    assert cli_main(["judge", "audio", str(tmp_path / "a.wav"), "--models-dir", str(tmp_path / "none")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no audio recogniser is installed" in err[0]
    assert cli_main(["judge", "audio", str(tmp_path / "a.wav"), "--model", IMAGE,
                     "--models-dir", str(models_dir[0])]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a classifier of audio" in err[0]


# --- the shipped recognisers ---------------------------------------------------------------------------

SHIPPED = shipped_models_dir()


@pytest.mark.skipif(not (SHIPPED / "fsdd-recogniser").is_dir(), reason="shipped model not present")
def test_the_shipped_audio_recogniser_loads_and_reads_every_digit_and_speaker_name():
    judge = load_recogniser(read_card(SHIPPED / "fsdd-recogniser", "shipped"))
    assert isinstance(judge, AudioJudge) and judge.spec == MelSpec()
    assert judge.speakers == ("george", "jackson", "lucas", "nicolas", "theo", "yweweler")
    v = judge.judge(speech(seconds=0.6), 8000)
    assert v.probs.shape == (10,) and v.speaker_probs.shape == (6,) and v.speaker in judge.speakers
    assert judge.info.metrics["fsdd/test"]["digit_accuracy"] >= 0.95


def drawn_one() -> np.ndarray:
    """A '1' as MNIST draws it: a thick upright stroke, white on black, centred in 28x28."""
    img = np.zeros((28, 28), np.uint8)
    img[5:23, 13:16] = 255
    img[5:23, 12] = img[5:23, 16] = 120  # anti-aliased edges
    return img


@pytest.mark.skipif(not (SHIPPED / "mnist-recogniser").is_dir(), reason="shipped model not present")
def test_the_shipped_image_recogniser_reads_a_drawn_one_grey_and_binarized():
    judge = load_recogniser(read_card(SHIPPED / "mnist-recogniser", "shipped"))
    assert isinstance(judge, ImageJudge)
    grey, binary = drawn_one()[None], (drawn_one() >= 128).astype(np.uint8)[None]
    for v in (judge.judge(grey, 256)[0], judge.judge(binary, 2)[0]):
        assert isinstance(v, Verdict) and (v.label, v.name) == (1, "one") and v.probability > 0.5
    assert judge.info.metrics["mnist/test"]["accuracy"] >= 0.97
