"""`chainrule generate audio / score --audio / eval --data fsdd.npz / bench audio` on a tiny exported
WaveNet, and the one-line messages for bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from engines.audio.data import load_fsdd
from engines.audio.model import load_audio_model
from engines.audio.scoring import score_audio
from engines.audio.wav import read_audio, write_audio
from engines.cli import main
from engines.registry import read_card
from tests.audio_models import SPEAKERS, export_model_dir, make_wavenet
from tests.cli_helpers import error_line, must_not_generate, run_cli

pytestmark = pytest.mark.usefixtures("isolated_user_models")
MODEL = "tiny-wavenet"


@pytest.fixture(scope="module")
def torch_model():
    pytest.importorskip("torch")  # the tiny model is built in torch: skip without the train extra
    return make_wavenet(seed=3)


@pytest.fixture(scope="module")
def models_dir(torch_model, tmp_path_factory):
    root = tmp_path_factory.mktemp("audio-cli-models")
    export_model_dir(torch_model, root, MODEL)
    export_model_dir(torch_model, root, "fsdd-wavenet")  # the ids `bench audio` looks for
    from tests.audio_models import export_speech_dir, make_speech

    export_speech_dir(*make_speech(seed=4), root, "fsdd-speech")
    return str(root)


def engine(models_dir):
    return load_audio_model(read_card(Path(models_dir) / MODEL))


def test_generate_writes_wavs_reproducibly(capsys, models_dir, tmp_path):
    args = ["generate", "audio", "--model", MODEL, "--digit", "3", "--speaker", "Lucas", "--seconds", "0.02",
            "--temperature", "0.9", "--seed", "5", "--count", "2", "--out", str(tmp_path / "a.wav")]
    first, _ = run_cli(capsys, models_dir, *args)
    paths = [tmp_path / "a_1.wav", tmp_path / "a_2.wav"]
    assert [s["path"] for s in first["samples"]] == [str(p) for p in paths]
    bytes_first = [p.read_bytes() for p in paths]
    second, _ = run_cli(capsys, models_dir, *args)
    assert [p.read_bytes() for p in paths] == bytes_first  # same seed, same files
    assert first["seed"] == 5 and first["settings"]["temperature"] == 0.9 and first["settings"]["speaker"] == "Lucas"
    assert first["samples"] == second["samples"]
    a, b = (read_audio(p) for p in paths)
    assert a.sample_rate == 8000 and len(a.samples) == 160 and sf.info(str(paths[0])).subtype == "PCM_16"
    assert not np.array_equal(a.samples, b.samples)  # two variations
    for s in first["samples"]:
        assert s["n"] == 160 and s["total_logprob"] < 0
        assert s["bits_per_sample"] == pytest.approx(-s["total_logprob"] / np.log(2) / 160)


def test_generate_logprob_is_the_score_of_the_drawn_samples(capsys, models_dir, tmp_path):
    out = tmp_path / "g.flac"
    gen, _ = run_cli(capsys, models_dir, "generate", "audio", "--model", MODEL, "--seconds", "0.01", "--seed", "1",
                 "--out", str(out))
    from engines.audio.generate import generate_audio

    again = generate_audio(engine(models_dir), seconds=0.01, seed=1)
    assert gen["samples"][0]["total_logprob"] == pytest.approx(float(again.logprobs.sum(dtype=np.float64)))
    s = score_audio(engine(models_dir), again.samples[0])
    assert gen["samples"][0]["total_logprob"] == pytest.approx(s.total_logprob, abs=1e-3)
    assert sf.info(str(out)).format == "FLAC"


def test_generate_continues_a_prompt_file(capsys, models_dir, tmp_path):
    prompt = tmp_path / "prompt.wav"
    t = np.arange(44100 // 20) / 44100
    sf.write(str(prompt), np.stack([np.sin(2 * np.pi * 300 * t), np.sin(2 * np.pi * 500 * t)], 1) * 0.5, 44100,
             subtype="PCM_24")  # 50 ms, stereo, 24-bit, 44.1 kHz
    res, err = run_cli(capsys, models_dir, "generate", "audio", "--model", MODEL, "--prompt", str(prompt),
                   "--seconds", "0.01", "--seed", "2", "--out", str(tmp_path / "c.wav"))
    assert "resampled from 44100 Hz to 8000 Hz" in err and "mixed 2 channels to mono" in err
    assert "converted from 24-bit" in err
    assert res["prompt_samples"] == 400 and res["samples"][0]["n"] == 80
    plain, _ = run_cli(capsys, models_dir, "generate", "audio", "--model", MODEL, "--seconds", "0.01", "--seed", "2",
                   "--out", str(tmp_path / "d.wav"))
    assert plain["samples"][0]["total_logprob"] != res["samples"][0]["total_logprob"]


def test_score_reports_per_sample_logprobs(capsys, models_dir, tmp_path):
    path = tmp_path / "x.wav"
    write_audio(path, np.sin(np.arange(800) / 7.0).astype(np.float32) * 0.3, 8000)
    res, _ = run_cli(capsys, models_dir, "score", "--model", MODEL, "--audio", str(path), "--digit", "7",
                 "--speaker", "george")
    expected = score_audio(engine(models_dir), read_audio(path).samples, digit=7, speaker="george")
    assert res["n"] == 800 and len(res["per_element"]) == 800
    np.testing.assert_allclose(res["per_element"], expected.logprobs)
    np.testing.assert_allclose(res["logprobs"], expected.logprobs)
    np.testing.assert_allclose(res["surprise_bits"], expected.surprise_bits)  # the engine's smoothed track
    assert not np.allclose(res["surprise_bits"], -expected.logprobs / np.log(2))  # smoothed, not raw
    assert res["total_logprob"] == pytest.approx(expected.total_logprob)
    assert res["bits_per_dim"] == pytest.approx(expected.bits_per_sample)
    none, _ = run_cli(capsys, models_dir, "score", "--model", MODEL, "--audio", str(path))
    assert none["total_logprob"] != pytest.approx(res["total_logprob"])


def write_fake_fsdd(path: Path, speakers=("george", "jackson", "lucas")) -> None:
    """A few short clips per digit and speaker, takes 0, 3 (test), 6 (val) and 12 (train)."""
    rng = np.random.default_rng(0)
    audio, offsets, labels, names, takes = [], [0], [], [], []
    for digit in (0, 4, 9):
        for speaker in speakers:
            for take in (0, 3, 6, 12):
                n = int(rng.integers(30, 120))
                audio.append((np.sin(np.arange(n) * (digit + 1) / 9.0) * 8000 + rng.normal(0, 300, n)).astype(np.int16))
                offsets.append(offsets[-1] + n)
                labels.append(digit)
                names.append(speaker)
                takes.append(take)
    np.savez(path, audio=np.concatenate(audio), offsets=np.array(offsets), labels=np.array(labels),
             speakers=np.array(names), index=np.array(takes), sample_rate=np.array(8000),
             filenames=np.array([f"{d}_{s}_{t}.wav" for d, s, t in zip(labels, names, takes)]))


def test_eval_equals_the_trainers_evaluate(capsys, models_dir, torch_model, tmp_path):
    from engines.training.train_wavenet import evaluate

    data = tmp_path / "fsdd.npz"
    write_fake_fsdd(data)
    res, _ = run_cli(capsys, models_dir, "eval", "--model", MODEL, "--data", str(data), "--split", "test")
    ref = evaluate(torch_model, load_fsdd(data, "test"))
    assert res["n_examples"] == ref["n_clips"] == 18 and res["n_samples"] == ref["n_samples"]
    assert res["bits_per_sample"] == pytest.approx(ref["bits_per_sample"], rel=1e-6)
    assert res["bits_per_dim"] == res["bits_per_sample"]
    assert res["nats_per_element"] == pytest.approx(ref["nats_per_sample"], rel=1e-6)
    limited, _ = run_cli(capsys, models_dir, "eval", "--model", MODEL, "--data", str(data), "--split", "val",
                     "--limit", "4")
    ref4 = evaluate(torch_model, load_fsdd(data, "val"), limit=4)
    assert limited["n_examples"] == 4 and limited["bits_per_sample"] == pytest.approx(ref4["bits_per_sample"], rel=1e-6)


def test_eval_refuses_data_with_other_speakers(capsys, models_dir, tmp_path):
    data = tmp_path / "other.npz"
    write_fake_fsdd(data, speakers=("george", "zoe"))
    line = error_line(capsys, models_dir, "eval", "--model", MODEL, "--data", str(data))
    assert "unknown speaker 'zoe'" in line and "george, jackson, lucas" in line


def test_bench_reports_the_three_paths(capsys, models_dir, monkeypatch):
    monkeypatch.setattr("engines.audio.bench.N_CACHED", 600)
    monkeypatch.setattr("engines.audio.bench.N_TORCH", 300)
    got = main(["bench", "audio", "--models-dir", models_dir, "--json"])
    out, err = capsys.readouterr()
    assert got == 0, err
    r = json.loads(out)["results"]
    assert r["model"] == "fsdd-wavenet" and r["batch"] == 1
    for key in ("onnx_cached", "onnx_naive", "torch_cached"):
        assert r[key] > 0
    # the ratio is rounded to one decimal (0.75 -> 0.8 on a tiny model, where naive can win)
    assert r["cached_over_naive"] == pytest.approx(r["onnx_cached"] / r["onnx_naive"], rel=0.05, abs=0.051)
    assert r["same_samples_naive"] is True and r["same_samples_torch"] is True
    assert r["samples_timed"] == {"onnx_cached": 600, "onnx_naive": 300, "torch_cached": 300}
    # the engine's share of the studio's path: the Audio tab's chunking, timed beside onnx_cached
    assert r["studio_path_samples_per_s"] > 0 and r["studio_path_chunk_samples"] == 400
    assert r["studio_over_cached"] == pytest.approx(r["studio_path_samples_per_s"] / r["onnx_cached"], rel=0.01)
    assert r["same_samples_studio"] is True
    assert r["repeats"] == 3
    sp = r["speech"]  # the speech pipeline on the tab's path: the prior's frames, then the vocoder
    assert sp["model"] == "fsdd-speech" and sp["frames"] >= 1 and sp["samples"] == sp["frames"] * 4
    assert sp["prior_frames_per_s"] > 0 and sp["vocoder_samples_per_s"] > 0 and sp["first_audio_s"] > 0
    assert 0 < sp["realtime_factor"]  # seconds of audio per second of the whole run (timed on a tiny model)


def test_bench_naive_figure_is_the_median_of_several_runs_of_a_few_hundred_samples(capsys, models_dir, monkeypatch):
    import engines.audio.bench as bench

    runs = []
    real = bench.generate_audio

    def counting(model, **kwargs):
        runs.append((kwargs["method"], round(kwargs["seconds"] * model.sample_rate)))
        return real(model, **kwargs)

    monkeypatch.setattr(bench, "generate_audio", counting)
    monkeypatch.setattr(bench, "N_CACHED", 400)
    r = bench.bench_model(read_card(Path(models_dir) / "fsdd-wavenet"), n_torch=100)
    naive = [n for method, n in runs if method == "naive"]
    assert len(naive) == 3 and all(n >= 200 for n in naive)
    assert r["same_samples_naive"] is True


def test_bench_write_card_records_the_result_in_the_benched_model(capsys, models_dir, monkeypatch, tmp_path):
    import shutil

    monkeypatch.setattr("engines.audio.bench.N_CACHED", 200)
    monkeypatch.setattr("engines.audio.bench.N_NAIVE", 100)
    monkeypatch.setattr("engines.audio.bench.N_TORCH", 100)
    root = tmp_path / "models"
    shutil.copytree(Path(models_dir) / "fsdd-wavenet", root / "fsdd-wavenet")
    shutil.copytree(Path(models_dir) / "fsdd-speech", root / "fsdd-speech")  # else the shipped one's card is written
    assert main(["bench", "audio", "--models-dir", str(root), "--write-card", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)["results"]
    entry = read_card(root / "fsdd-wavenet").card["metrics"]["bench/audio"]
    assert entry["model"] == "fsdd-wavenet" and entry["onnx_cached"] == r["onnx_cached"]
    assert entry["same_samples_naive"] is True and "samples_timed" not in entry  # numbers and strings only
    assert entry["studio_path_samples_per_s"] == r["studio_path_samples_per_s"]
    assert entry["command"] == f"chainrule bench audio --models-dir {root} --json"
    speech = read_card(root / "fsdd-speech").card["metrics"]["bench/audio"]
    assert speech["vocoder_samples_per_s"] == r["speech"]["vocoder_samples_per_s"] and "onnx_cached" not in speech


@pytest.mark.parametrize("argv, expected", [
    (["--speaker", "bob"], "unknown speaker 'bob'"),
    (["--digit", "12"], "digit 12 is out of range"),
    (["--seconds", "0"], "seconds = 0.0 is invalid"),
    (["--seconds", "1e9"], "too long"),
    (["--temperature", "-1"], "temperature = -1.0 is invalid"),
    (["--top-k", "5"], "top-k 5 cannot be used for audio models"),
    (["--strategy", "beam"], "beam search (strategy beam) is not available for audio"),
    (["--count", "0"], "--count 0 is invalid"),
    (["--count", "65"], "--count 65 is invalid: must be in 1..64"),
    (["--out", "/no/such/folder/o.wav"], "folder /no/such/folder does not exist"),
])
def test_bad_generate_input_is_one_clear_line(capsys, models_dir, tmp_path, monkeypatch, argv, expected):
    if "--count" in argv or "--out" in argv:  # refused before any generation
        monkeypatch.setattr("engines.audio.generate.generate_audio_chunks", must_not_generate)
    line = error_line(capsys, models_dir, "generate", "audio", "--model", MODEL, "--seconds", "0.01",
                      "--out", str(tmp_path / "o.wav"), *argv)
    assert expected in line
    if "speaker" in expected:
        assert ", ".join(SPEAKERS) in line
    assert not (tmp_path / "o.wav").exists()


def test_generate_without_out_warns_that_nothing_is_saved(capsys, models_dir):
    res, err = run_cli(capsys, models_dir, "generate", "audio", "--model", MODEL, "--seconds", "0.01", "--seed", "1")
    assert res["samples"][0]["path"] is None and res["samples"][0]["n"] == 80
    assert "warning: no --out given: the audio is not saved" in err


def test_ctrl_c_during_generation_writes_what_was_generated(capsys, models_dir, tmp_path, monkeypatch):
    import engines.audio.generate as generate_module

    real = generate_module.generate_audio_chunks

    def interrupted_after_one_chunk(*args, **kwargs):
        chunks = real(*args, **kwargs)
        yield next(chunks)
        raise KeyboardInterrupt  # the user pressed Ctrl-C while the second chunk was being made

    monkeypatch.setattr(generate_module, "generate_audio_chunks", interrupted_after_one_chunk)
    out = tmp_path / "partial.wav"
    code = main(["generate", "audio", "--model", MODEL, "--seconds", "0.25", "--seed", "4", "--count", "2",
                 "--out", str(out), "--models-dir", models_dir])
    err = capsys.readouterr().err
    assert code == 130 and "interrupted" in err and "wrote what was generated so far" in err
    monkeypatch.setattr(generate_module, "generate_audio_chunks", real)
    full, _ = run_cli(capsys, models_dir, "generate", "audio", "--model", MODEL, "--seconds", "0.25", "--seed", "4",
                  "--count", "2", "--out", str(tmp_path / "full.wav"))
    for row in (1, 2):
        partial = read_audio(tmp_path / f"partial_{row}.wav").samples
        whole = read_audio(tmp_path / f"full_{row}.wav").samples
        assert len(partial) == 800 and len(whole) == 2000  # the first chunk (0.1 s) of each row
        np.testing.assert_array_equal(partial, whole[:800])


@pytest.mark.parametrize("argv, flag", [
    (["score", "--label", "3"], "--label"),
    (["score", "--ensemble", "2"], "--ensemble"),
    (["score", "--ordering", "raster"], "--ordering"),
])
def test_options_for_other_kinds_of_model_are_refused(capsys, models_dir, tmp_path, argv, flag):
    path = tmp_path / "x.wav"
    write_audio(path, np.zeros(100, np.float32), 8000)
    line = error_line(capsys, models_dir, argv[0], "--model", MODEL, "--audio", str(path), *argv[1:])
    assert f"{flag} does not apply to {MODEL}, a WaveNet audio model" in line
    data = tmp_path / "fsdd.npz"
    write_fake_fsdd(data)
    line = error_line(capsys, models_dir, "eval", "--model", MODEL, "--data", str(data), "--ensemble", "2")
    assert "--ensemble does not apply" in line


def test_a_corrupt_fsdd_file_is_one_clear_line_and_the_archive_is_closed(capsys, models_dir, tmp_path, monkeypatch):
    from engines.errors import InputError

    good = tmp_path / "fsdd.npz"
    write_fake_fsdd(good)
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(good.read_bytes()[:200])  # a zip whose directory is gone
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"PK\x03\x04 not really a zip" * 20)
    single = tmp_path / "single.npy"
    np.save(single, np.zeros(3))
    for path in (truncated, garbage, single):
        line = error_line(capsys, models_dir, "eval", "--model", MODEL, "--data", str(path))
        assert str(path) in line, line
        with pytest.raises(InputError):
            load_fsdd(path, "test")
    opened = []
    real_load = np.load
    monkeypatch.setattr(np, "load", lambda *a, **k: opened.append(real_load(*a, **k)) or opened[-1])
    assert len(load_fsdd(good, "test")) == 18
    assert opened and opened[0].fid is None  # closed
    missing = tmp_path / "missing.npz"
    with pytest.raises(InputError, match="no such file"):
        load_fsdd(missing, "test")


def test_bad_files_are_one_clear_line(capsys, models_dir, tmp_path):
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"RIFF this is not audio at all" * 10)
    line = error_line(capsys, models_dir, "score", "--model", MODEL, "--audio", str(junk))
    assert str(junk) in line
    line = error_line(capsys, models_dir, "generate", "audio", "--model", MODEL, "--seconds", "0.01",
                      "--prompt", str(tmp_path / "missing.wav"), "--out", str(tmp_path / "o.wav"))
    assert "missing.wav" in line and "not found" in line
    line = error_line(capsys, models_dir, "generate", "audio", "--model", MODEL, "--seconds", "0.01",
                      "--out", str(tmp_path / "o.mp3"))
    assert ".mp3" in line or "suffix" in line
    line = error_line(capsys, models_dir, "score", "--model", MODEL, "--text", "hello")
    assert "--audio" in line
    prompt = tmp_path / "p.wav"
    write_audio(prompt, np.zeros(100, np.float32), 8000)
    line = error_line(capsys, models_dir, "generate", "audio", "--model", MODEL, "--seconds", "0.01",
                      "--prompt", str(prompt), "--out", str(prompt))
    assert "overwrite" in line
