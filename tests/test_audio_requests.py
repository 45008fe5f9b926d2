"""AudioRequest (engines/audio/request.py): one validated value per audio run, written into every
WAV/FLAC the CLI makes, so `chainrule generate --from FILE` makes the same samples bit for bit."""

from __future__ import annotations

import json
import shlex
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

pytest.importorskip("torch")  # the tiny models are built in torch

from engines.audio.request import AudioRequest, run_to_end  # noqa: E402
from engines.audio.wav import write_audio  # noqa: E402
from engines.decoding.config import DecodingConfig  # noqa: E402
from engines.errors import DecodingError, InputError  # noqa: E402
from engines.registry import read_card  # noqa: E402
from engines.requests import MAX_EMBEDDED_INPUT_BYTES, InputRef, read_request_file, request_from_json  # noqa: E402
from tests.audio_models import export_model_dir, export_speech_dir, make_speech, make_wavenet  # noqa: E402
from tests.cli_helpers import error_line, run_cli  # noqa: E402

pytestmark = pytest.mark.usefixtures("isolated_user_models")
WAVENET, SPEECH = "tiny-wavenet", "tiny-speech"


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("audio-request-models")
    export_model_dir(make_wavenet(seed=3), root, WAVENET)
    export_speech_dir(*make_speech(seed=4), root, SPEECH)
    return str(root)


def pcm(path) -> np.ndarray:
    data, rate = sf.read(str(path), dtype="int16")
    assert rate == 8000
    return data


def generate_from(capsys, models_dir, source, out):
    return run_cli(capsys, models_dir, "generate", "--from", str(source), "--out", str(out))


# --- the request value --------------------------------------------------------------------------

def test_request_round_trips_and_refuses_what_it_cannot_run():
    ref = InputRef.from_bytes(b"RIFF....", path="/tmp/p.wav")
    r = AudioRequest(model="m", decoding=DecodingConfig(temperature=0.7, seed=10), count=3, digit=4,
                     speaker="lucas", seconds=0.5, prompt=ref)
    back = AudioRequest.from_json(json.loads(json.dumps(r.to_json())))
    assert back == r and request_from_json(r.to_json()) == r
    one = r.for_sample(2)
    assert one.count == 1 and one.seed == 12 and one.digit == 4 and one.prompt == ref
    assert r.mode == "continuation" and r.temperature == 0.7
    with pytest.raises(InputError, match="audio request: unknown field"):
        AudioRequest.from_json({**r.to_json(), "guidance": 2})
    with pytest.raises(DecodingError, match="top-p 0.9 cannot be used for audio models"):
        AudioRequest(model="m", decoding=DecodingConfig(top_p=0.9))
    with pytest.raises(InputError, match="count 0 is invalid"):
        AudioRequest(model="m", count=0)
    with pytest.raises(InputError, match="do not go together"):
        AudioRequest(model="m", prompt=ref, resynth=ref)
    with pytest.raises(InputError, match="frame temperature does not apply to re-speaking"):
        AudioRequest(model="m", resynth=ref, frame_temperature=0.5)
    with pytest.raises(InputError, match="this is a image request"):
        AudioRequest.from_json({**r.to_json(), "kind": "image"})


def test_a_wavenet_request_refuses_speech_settings(models_dir):
    info = read_card(Path(models_dir) / WAVENET)
    with pytest.raises(InputError, match="frame temperature does not apply to tiny-wavenet"):
        run_to_end(AudioRequest(model=WAVENET, frame_temperature=0.5, seconds=0.01), info)


def test_to_command_runs_the_same_request(capsys, models_dir, tmp_path):
    info = read_card(Path(models_dir) / WAVENET)
    request = AudioRequest(model=WAVENET, decoding=DecodingConfig(temperature=0.8, seed=21), count=2, digit=2,
                           speaker="lucas", seconds=0.01)
    done = run_to_end(request, info)
    argv = request.to_command(info)
    assert shlex.join(argv).startswith("generate audio --model tiny-wavenet") and "--count" in argv
    run_cli(capsys, models_dir, *argv, "--out", str(tmp_path / "c.wav"))
    for i in range(2):
        from engines.audio.wav import to_int16

        np.testing.assert_array_equal(pcm(tmp_path / f"c_{i + 1}.wav"), to_int16(done.samples[i]))


# --- files that remember -------------------------------------------------------------------------

@pytest.mark.parametrize("model, extra", [
    (WAVENET, ["--seconds", "0.02", "--digit", "3", "--speaker", "lucas", "--temperature", "0.9"]),
    (SPEECH, ["--digit", "3", "--speaker", "jackson", "--frame-temperature", "0.5"]),
])
def test_the_second_file_of_a_seeded_pair_regenerates_bit_for_bit(capsys, models_dir, tmp_path, model, extra):
    first, _ = run_cli(capsys, models_dir, "generate", "audio", "--model", model, "--seed", "5", "--count", "2",
                       *extra, "--out", str(tmp_path / "a.flac" if model == SPEECH else tmp_path / "a.wav"))
    suffix = ".flac" if model == SPEECH else ".wav"
    second = tmp_path / f"a_2{suffix}"
    stored = read_request_file(second)
    assert stored["count"] == 1 and stored["decoding"]["seed"] == 6 and stored["model_fingerprint"]
    assert json.loads((tmp_path / "a_2.json").read_text())["request"] == stored  # the sidecar
    with sf.SoundFile(str(second)) as f:
        assert json.loads(f.comment) == stored  # and the comment tag
    again, _ = generate_from(capsys, models_dir, second, tmp_path / f"b{suffix}")
    np.testing.assert_array_equal(pcm(tmp_path / f"b{suffix}"), pcm(second))
    assert not np.array_equal(pcm(tmp_path / f"a_1{suffix}"), pcm(second))  # two different samples
    assert again["seed"] == 6 and again["request"]["count"] == 1
    # the tag alone carries it too (the sidecar lost)
    (tmp_path / "a_2.json").unlink()
    generate_from(capsys, models_dir, second, tmp_path / f"c{suffix}")
    np.testing.assert_array_equal(pcm(tmp_path / f"c{suffix}"), pcm(second))


def test_a_small_prompt_travels_inside_the_request(capsys, models_dir, tmp_path):
    prompt = tmp_path / "p.wav"
    write_audio(prompt, (0.3 * np.sin(np.arange(400) / 3.0)).astype(np.float32), 8000)
    run_cli(capsys, models_dir, "generate", "audio", "--model", WAVENET, "--prompt", str(prompt), "--seconds",
            "0.01", "--seed", "2", "--out", str(tmp_path / "cont.wav"))
    prompt.rename(tmp_path / "gone.wav")  # embedded: the request does not need the file
    generate_from(capsys, models_dir, tmp_path / "cont.wav", tmp_path / "again.wav")
    np.testing.assert_array_equal(pcm(tmp_path / "again.wav"), pcm(tmp_path / "cont.wav"))


def test_a_large_prompt_is_checked_by_hash_and_a_moved_one_is_named(capsys, models_dir, tmp_path):
    # 2 s of 44.1 kHz stereo: larger than a request embeds, so it is kept by path and sha256
    t = np.arange(88200) / 44100.0
    stereo = np.stack([0.3 * np.sin(2 * np.pi * 220 * t), 0.2 * np.sin(2 * np.pi * 330 * t)], axis=1)
    prompt = tmp_path / "long.wav"
    sf.write(str(prompt), stereo, 44100, subtype="PCM_16")
    assert prompt.stat().st_size > MAX_EMBEDDED_INPUT_BYTES
    run_cli(capsys, models_dir, "generate", "audio", "--model", WAVENET, "--prompt", str(prompt), "--seconds",
            "0.01", "--seed", "2", "--out", str(tmp_path / "cont.wav"))
    stored = read_request_file(tmp_path / "cont.wav")
    assert stored["prompt"]["path"] == str(prompt) and "data" not in stored["prompt"]
    generate_from(capsys, models_dir, tmp_path / "cont.wav", tmp_path / "again.wav")
    np.testing.assert_array_equal(pcm(tmp_path / "again.wav"), pcm(tmp_path / "cont.wav"))
    shutil.move(prompt, tmp_path / "elsewhere.wav")
    line = error_line(capsys, models_dir, "generate", "--from", str(tmp_path / "cont.wav"), "--out",
                      str(tmp_path / "x.wav"))
    assert str(prompt) in line and stored["prompt"]["sha256"][:12] in line and "prompt recording" in line
    assert not (tmp_path / "x.wav").exists()
    # a different file put in its place is refused too
    write_audio(prompt, np.zeros(100, np.float32), 8000)
    line = error_line(capsys, models_dir, "generate", "--from", str(tmp_path / "cont.wav"), "--out",
                      str(tmp_path / "x.wav"))
    assert "not the file this request was made with" in line


def test_speech_resynthesis_regenerates_from_its_file(capsys, models_dir, tmp_path):
    rec = tmp_path / "rec.wav"
    write_audio(rec, (0.3 * np.sin(np.arange(160) / 4.0)).astype(np.float32), 8000)
    r, _ = run_cli(capsys, models_dir, "generate", "audio", "--model", SPEECH, "--resynth", str(rec), "--speaker",
                   "jackson", "--seed", "1", "--out", str(tmp_path / "re.wav"))
    assert r["settings"]["mode"] == "resynthesis"
    generate_from(capsys, models_dir, tmp_path / "re.wav", tmp_path / "re2.wav")
    np.testing.assert_array_equal(pcm(tmp_path / "re2.wav"), pcm(tmp_path / "re.wav"))


def test_a_stopped_run_finishes_with_what_was_made(models_dir):
    info = read_card(Path(models_dir) / WAVENET)
    asked = []
    done = run_to_end(AudioRequest(model=WAVENET, decoding=DecodingConfig(seed=1), count=2, seconds=0.05), info,
                      chunk_samples=100, should_stop=lambda: asked.append(1) or len(asked) >= 2)
    assert done.stopped and len(done.samples) == 2 and all(len(s) == 200 for s in done.samples)
