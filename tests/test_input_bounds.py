"""Issue 13, class 4: every input is bounded and validated before work starts.

Each test runs `chainrule` in-process on the shipped models (assets/models) with inputs made
here, and asserts what a refusal must look like: a non-zero exit, exactly one stderr line
naming the problem, no traceback, no "internal error", no RuntimeWarning (warnings are errors
in this module, and stderr is captured at the file-descriptor level, so ONNX Runtime's own log
lines would show up too).
"""

from __future__ import annotations

import os
import struct
import threading
import zlib

import numpy as np
import pytest

from engines.cli import main

pytestmark = [pytest.mark.usefixtures("isolated_user_models"), pytest.mark.filterwarnings("error")]

TEXT_CHAR, TEXT_BPE = "shakespeare-char", "gutenberg-bpe"
PIXELCNN, NADE, WAVENET, SPEECH = "mnist-pixelcnn", "bmnist-nade", "fsdd-wavenet", "fsdd-speech"


def refused(capfd, *argv: str) -> str:
    """The one stderr line of a command that must be refused (exit 1) before any work."""
    code = main(list(argv))
    out, err = capfd.readouterr()
    assert code == 1, (code, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("chainrule: error: "), err
    assert "internal error" not in err and "Traceback" not in err and "Warning" not in err, err
    return lines[0]


def refused_in_time(capfd, *argv: str, seconds: float = 60) -> str:
    """As `refused`, for an input that once blocked forever (a FIFO): a daemon thread, so a hang
    fails the test instead of the whole run."""
    result: dict = {}
    worker = threading.Thread(target=lambda: result.setdefault("code", main(list(argv))), daemon=True)
    worker.start()
    worker.join(seconds)
    assert not worker.is_alive(), f"chainrule {' '.join(argv)} still runs after {seconds} s"
    out, err = capfd.readouterr()
    assert result["code"] == 1, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("chainrule: error: "), err
    return lines[0]


# --- files made here ------------------------------------------------------------------------------

def png_header(path, width: int, height: int) -> str:
    """A PNG that declares width x height grey pixels but holds no pixel data: reading its header
    costs nothing, decoding it would cost width x height bytes."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))
    return str(path)


def wav_header(path, rate: int, seconds: float, channels: int = 1) -> str:
    """A 16-bit WAV of `seconds` of silence at `rate` Hz, written sparse (the disk holds the header)."""
    n = int(rate * seconds) * channels * 2
    header = (b"RIFF" + struct.pack("<I", 36 + n) + b"WAVEfmt "
              + struct.pack("<IHHIIHH", 16, 1, channels, rate, rate * channels * 2, channels * 2, 16)
              + b"data" + struct.pack("<I", n))
    with open(path, "wb") as f:
        f.write(header)
        f.truncate(len(header) + n)
    return str(path)


def fsdd(path, *, offsets, audio=None, rate=8000) -> str:
    audio = np.zeros(1000, np.int16) if audio is None else audio
    n = len(offsets) - 1 if len(offsets) > 1 else 2
    np.savez(path, audio=audio, offsets=np.asarray(offsets), labels=np.arange(n) % 10,
             speakers=np.array(["jackson"] * n), index=np.arange(n) % 5, sample_rate=np.array(rate))
    return str(path)


def mnist(path, x) -> str:
    np.savez(path, x_train=x, y_train=np.zeros(len(x), np.int64), x_test=x, y_test=np.zeros(len(x), np.int64))
    return str(path)


# --- 1. caps with a clear message ------------------------------------------------------------------

@pytest.mark.parametrize("argv, words", [
    (["generate", "text", "--model", TEXT_CHAR, "--count", "100000", "--max-new-tokens", "1"], "--count 100000"),
    (["generate", "image", "--model", NADE, "--count", "100000000"], "--count 100000000"),
    (["generate", "text", "--model", TEXT_CHAR, "--strategy", "beam", "--num-beams", "100000", "--max-new-tokens", "1"],
     "num-beams = 100000"),
    (["generate", "text", "--model", TEXT_CHAR, "--max-new-tokens", "100000000"], "max new tokens"),
    (["generate", "audio", "--model", WAVENET, "--seconds", "1e9"], "seconds = 1e+09"),
    (["generate", "audio", "--model", WAVENET, "--count", "65", "--seconds", "0.01"], "--count 65"),
])
def test_counts_and_lengths_are_capped(capfd, argv, words):
    assert words in refused(capfd, *argv)


def test_an_image_too_large_is_refused_from_its_header_without_a_bomb_warning(capfd, tmp_path):
    big = png_header(tmp_path / "big.png", 10_000, 10_000)  # Pillow warns above 89 M pixels
    huge = png_header(tmp_path / "huge.png", 20_000, 20_000)  # Pillow refuses above 179 M
    for path in (big, huge):
        line = refused(capfd, "score", "--model", PIXELCNN, "--image", path)
        assert path in line and "too large" in line and "nothing was decoded" in line


def test_audio_too_fast_or_too_long_is_refused_from_its_header(capfd, tmp_path):
    fast = wav_header(tmp_path / "fast.wav", 768_000, 1.0)
    line = refused(capfd, "score", "--model", WAVENET, "--audio", fast)
    assert "768000 Hz" in line
    long = wav_header(tmp_path / "long.wav", 8000, 150.0)
    line = refused(capfd, "score", "--model", WAVENET, "--audio", long)
    assert "150.0 s long" in line
    wide = wav_header(tmp_path / "wide.wav", 192_000, 100.0, channels=2)
    line = refused(capfd, "generate", "audio", "--model", WAVENET, "--prompt", wide, "--seconds", "0.01")
    assert "can be decoded" in line


# --- 2. flags that do not apply are refused ----------------------------------------------------------

@pytest.mark.parametrize("argv, flag", [
    (["generate", "text", "--model", TEXT_CHAR, "--strategy", "beam", "--count", "3"], "--count"),
    (["generate", "text", "--model", TEXT_CHAR, "--num-return-sequences", "3"], "--num-return-sequences"),
    (["generate", "text", "--model", TEXT_CHAR, "--num-beams", "3"], "--num-beams"),
    (["generate", "text", "--model", TEXT_CHAR, "--no-early-stopping"], "--no-early-stopping"),
    (["generate", "text", "--model", TEXT_CHAR, "--strategy", "greedy", "--temperature", "0.5"], "--temperature"),
    (["generate", "text", "--model", TEXT_CHAR, "--strategy", "beam", "--top-k", "5"], "--top-k"),
    (["generate", "image", "--model", PIXELCNN, "--num-return-sequences", "3"], "--num-return-sequences"),
    (["generate", "image", "--model", NADE, "--length-penalty", "2"], "--length-penalty"),
    (["generate", "audio", "--model", WAVENET, "--num-beams", "4", "--seconds", "0.01"], "--num-beams"),
    (["generate", "audio", "--model", SPEECH, "--num-beams", "4"], "--num-beams"),
    (["eval", "--model", PIXELCNN, "--data", "unused.npz", "--seeds", "3"], "--seeds"),
    (["eval", "--model", PIXELCNN, "--data", "unused.npz", "--task", "recognition", "--limit", "3"], "--limit"),
    (["eval", "--model", SPEECH, "--data", "unused.npz", "--task", "generation", "--limit", "3"], "--limit"),
])
def test_flags_that_do_not_apply_are_refused(capfd, argv, flag):
    line = refused(capfd, *argv)
    assert f"{flag} does not apply" in line


def test_frame_temperature_is_refused_when_resynthesising(capfd, tmp_path):
    from engines.audio.wav import write_audio

    wav = tmp_path / "x.wav"
    write_audio(wav, np.zeros(800, np.float32), 8000)
    line = refused(capfd, "generate", "audio", "--model", SPEECH, "--resynth", str(wav), "--frame-temperature", "0.3")
    assert "--frame-temperature does not apply to --resynth" in line


# --- 3. numeric extremes are named refusals ---------------------------------------------------------

@pytest.mark.parametrize("argv, words", [
    (["generate", "text", "--model", TEXT_CHAR, "--temperature", "1e-310"], "temperature = 1e-310"),
    (["generate", "text", "--model", TEXT_CHAR, "--temperature", "1e-30"], "temperature = 1e-30"),
    (["generate", "text", "--model", TEXT_CHAR, "--prompt", "the the", "--repetition-penalty", "1e-320"],
     "repetition-penalty"),
    (["generate", "text", "--model", TEXT_CHAR, "--strategy", "beam", "--length-penalty", "1e300"], "length-penalty"),
    (["generate", "text", "--model", TEXT_CHAR, "--seed", str(2**63 - 2), "--count", "3"], "--count 3"),
    (["generate", "image", "--model", NADE, "--temperature", "1e-40"], "temperature = 1e-40"),
    (["generate", "image", "--model", PIXELCNN, "--seed", str(2**63 - 1), "--count", "2"], "--count 2"),
])
def test_numeric_extremes_are_named_refusals(capfd, argv, words):
    more = ["--max-new-tokens", "2"] if argv[1] == "text" else []  # refused before any token anyway
    assert words in refused(capfd, *argv, *more)


def test_a_sharp_density_temperature_samples_without_overflow(capfd):
    # the stable sigmoid: 0.01 once overflowed exp() in NADE sampling (a RuntimeWarning on stderr)
    assert main(["generate", "image", "--model", NADE, "--temperature", "0.01", "--seed", "1"]) == 0
    assert "Warning" not in capfd.readouterr().err


# --- 4. text a tokenizer cannot take ---------------------------------------------------------------

@pytest.mark.parametrize("model", [TEXT_CHAR, TEXT_BPE])
@pytest.mark.parametrize("text, words", [
    ("ab\udcffc", "byte 0xff at character 3"),  # the shell's invalid UTF-8, as Python holds it
    ("abc\ud800", "U+D800 at character 4"),  # a lone surrogate
])
def test_text_no_tokenizer_can_take_is_refused_with_its_position(capfd, model, text, words):
    assert words in refused(capfd, "score", "--model", model, "--text", text)
    assert words in refused(capfd, "generate", "text", "--model", model, "--prompt", text, "--max-new-tokens", "2")


# --- 5. --data that is not a data set --------------------------------------------------------------

@pytest.mark.parametrize("model", [TEXT_CHAR, PIXELCNN, WAVENET])
def test_a_fifo_as_data_is_refused_without_opening_it(capfd, tmp_path, model):
    fifo = tmp_path / "data.fifo"
    os.mkfifo(fifo)
    line = refused_in_time(capfd, "eval", "--model", model, "--data", str(fifo))
    assert "not a regular file" in line


@pytest.mark.parametrize("model", [PIXELCNN, NADE, WAVENET])
def test_devices_and_folders_as_data_are_refused(capfd, tmp_path, model):
    assert "not a regular file" in refused(capfd, "eval", "--model", model, "--data", "/dev/zero")
    assert "is a folder" in refused(capfd, "eval", "--model", model, "--data", str(tmp_path))


def test_image_data_of_the_wrong_kind_is_refused(capfd, tmp_path):
    npy = tmp_path / "x.npy"
    np.save(npy, np.zeros((3, 28, 28), np.uint8))
    assert "single array (.npy)" in refused(capfd, "eval", "--model", PIXELCNN, "--data", str(npy))
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, foo=np.zeros(3))
    line = refused(capfd, "eval", "--model", PIXELCNN, "--data", str(wrong))
    assert "unknown layout" in line and line.count(str(wrong)) == 1


@pytest.mark.parametrize("x, words", [
    (np.random.default_rng(0).random((4, 28, 28)).astype(np.float32), "float32 values"),
    (np.full((4, 28, 28), np.nan, np.float32), "float32 values"),
    (-np.ones((4, 28, 28), np.int16), "negative values"),
])
def test_float_negative_or_nan_images_are_refused(capfd, tmp_path, x, words):
    data = mnist(tmp_path / "mnist.npz", x)
    assert words in refused(capfd, "eval", "--model", PIXELCNN, "--data", data, "--limit", "2")
    binar = tmp_path / "binarized.npz"
    np.savez(binar, train=x.reshape(4, -1), valid=x.reshape(4, -1), test=x.reshape(4, -1))
    assert words in refused(capfd, "eval", "--model", NADE, "--data", str(binar), "--limit", "2")


@pytest.mark.parametrize("kwargs, words", [
    ({"offsets": [0, 800, 300]}, "offsets must rise"),
    ({"offsets": [0, 0, 600]}, "offsets must rise"),
    ({"offsets": [-5, 300, 600]}, "start at 0"),
    ({"offsets": [0, 300, 5000]}, "end within"),
    ({"offsets": [0.0, 300.0, 600.0]}, "whole numbers"),
    ({"offsets": [0, 300, 600], "audio": np.zeros(1000, np.float32)}, "integer (int16) samples"),
    ({"offsets": [0, 300, 600], "rate": -8000}, "sample_rate -8000"),
])
def test_broken_fsdd_files_are_refused(capfd, tmp_path, kwargs, words):
    data = fsdd(tmp_path / "fsdd.npz", **kwargs)
    for model in (WAVENET, SPEECH):
        assert words in refused(capfd, "eval", "--model", model, "--data", data)


def test_fsdd_offsets_that_do_not_match_the_clips_are_refused(capfd, tmp_path):
    path = tmp_path / "fsdd.npz"
    np.savez(path, audio=np.zeros(1000, np.int16), offsets=np.array([0, 300]), labels=np.array([1, 2]),
             speakers=np.array(["jackson", "jackson"]), index=np.array([0, 1]), sample_rate=np.array(8000))
    assert "expected 3" in refused(capfd, "eval", "--model", WAVENET, "--data", str(path))


# --- 6. ONNX Runtime's errors and logs ------------------------------------------------------------

def test_an_onnx_runtime_run_error_is_one_line_and_ort_logs_nothing(capfd):
    from engines.registry import get_model
    from engines.runtime import ModelRunError, open_session

    ms = open_session(get_model(PIXELCNN).path / "pixel_step.onnx")
    feeds = {"xwin": np.zeros((2, 1, 4), np.float32), "hwin": np.zeros((3, 11, 32, 1), np.float32),
             "link": np.zeros((5, 12, 64), np.float32)}  # batch sizes that disagree: fails inside the graph
    for run in (lambda: ms.run(feeds), lambda: ms.session.run(None, feeds)):
        with pytest.raises(ModelRunError, match="pixel_step.onnx: ONNX Runtime could not run the model") as info:
            run()
        assert "\n" not in str(info.value) and "[ONNXRuntimeError]" not in str(info.value)
    assert capfd.readouterr().err == ""  # ORT's red "[E:onnxruntime:...]" line no longer reaches stderr
