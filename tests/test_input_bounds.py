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
    (["eval", "--model", PIXELCNN, "--task", "recognition", "--limit", "3"], "--limit"),
    (["eval", "--model", SPEECH, "--task", "generation", "--limit", "3"], "--limit"),
])
def test_flags_that_do_not_apply_are_refused(capfd, argv, flag):
    line = refused(capfd, *argv)
    assert f"{flag} does not apply" in line


MNIST_COND = PIXELCNN  # mnist-pixelcnn is label-conditioned: its recognition completes --data's test images
BMNIST_UNCOND = "bmnist-pixelcnn"


@pytest.mark.parametrize("argv, flag", [
    (["eval", "--model", SPEECH, "--task", "generation", "--data", "fsdd.npz"], "--data"),
    (["eval", "--model", SPEECH, "--task", "generation", "--split", "val"], "--split"),
    (["eval", "--model", SPEECH, "--task", "generation", "--split", "test"], "--split"),
    (["eval", "--model", NADE, "--task", "recognition", "--data", "binarized_mnist.npz"], "--data"),
    (["eval", "--model", "bmnist-made", "--task", "recognition", "--split", "val"], "--split"),
    (["eval", "--model", BMNIST_UNCOND, "--task", "recognition", "--data", "binarized_mnist.npz"], "--data"),
    (["eval", "--model", MNIST_COND, "--task", "recognition", "--data", "mnist.npz", "--split", "train"], "--split"),
])
def test_data_and_split_are_refused_where_the_task_reads_no_data(capfd, argv, flag):
    """--data and --split had defaults (and --data was required), so `--task generation` or `recognition`
    ignored them silently: the CLI could not tell them given. Fails on the old parser (exit 0 after the
    whole evaluation, or exit 2 for a missing --data)."""
    line = refused(capfd, *argv)
    assert f"{flag} does not apply to --task " in line and f"leave {flag} out" in line


@pytest.mark.parametrize("task", [None, "likelihood", "resynthesis"])
def test_data_is_still_required_where_the_task_reads_it(capfd, task):
    model = SPEECH if task == "resynthesis" else NADE
    with pytest.raises(SystemExit) as stop:  # a usage error, as argparse's own
        main(["eval", "--model", model, *(["--task", task] if task else [])])
    err = capfd.readouterr().err.strip().splitlines()
    assert stop.value.code == 2 and err[-1].startswith("chainrule: error: --task ") and err[-1].endswith("the argument --data "
                                                                                               "is required"), err


def test_recognition_without_data_and_split_reaches_the_task(capfd, monkeypatch):
    """No --data, no --split: `--task recognition` starts its work (stubbed here) instead of a usage error,
    and a likelihood eval still reads the test split when --split is left out."""
    import engines.density.commands as density
    import engines.image.recognition as recognition

    from engines.errors import InputError

    def recognised(info, n):
        return {"model": info.id, "task": "recognition", "n_samples": n}

    monkeypatch.setattr(recognition, "density_recognition", recognised)
    assert main(["eval", "--model", NADE, "--task", "recognition", "--seeds", "2", "--json"]) == 0
    assert '"n_samples": 20' in capfd.readouterr().out
    splits = []

    def load_split(path, split):
        splits.append(split)
        raise InputError("stub: the split asked for is recorded")

    monkeypatch.setattr(density, "load_split", load_split)
    assert "stub" in refused(capfd, "eval", "--model", NADE, "--data", "binarized_mnist.npz") and splits == ["test"]


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


# --- messages name the file and the fault, never its contents ----------------------------------------

SECRET = "SECRET-IN-FILE"


def _npy_with_header(header: str) -> bytes:
    """A .npy whose header dict numpy cannot use (numpy's own message quotes the header)."""
    text = header.encode() + b" " * (63 - (len(header) + 10) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + len(text).to_bytes(2, "little") + text


@pytest.mark.parametrize("header", [f"{{'descr': '{SECRET}', 'fortran_order': False, 'shape': (2,), }}",
                                    f"{SECRET} is no header"], ids=["bad-descr", "no-dict"])
@pytest.mark.parametrize("model, members", [(NADE, ("train", "valid", "test")),
                                            (WAVENET, ("audio", "offsets", "labels", "speakers", "index",
                                                       "sample_rate"))], ids=["images", "fsdd"])
def test_a_data_file_with_a_bad_array_header_is_refused_without_quoting_it(capfd, tmp_path, header, model, members):
    """Fails on the old readers: numpy's message went out whole ("Cannot parse header: 'SECRET...'")."""
    import zipfile

    path = tmp_path / "bad.npz"
    with zipfile.ZipFile(path, "w") as z:
        for name in members:
            z.writestr(f"{name}.npy", _npy_with_header(header))
    line = refused(capfd, "eval", "--model", model, "--data", str(path))
    assert SECRET not in line and str(path) in line, line


def test_a_pickled_data_file_is_refused_without_advice_to_unpickle_it(capfd, tmp_path):
    path = tmp_path / "pickled.npz"
    path.write_bytes(b"\x80\x04" + SECRET.encode() * 4)
    line = refused(capfd, "eval", "--model", NADE, "--data", str(path))
    assert "allow_pickle" not in line and "pickled Python objects, which are never loaded" in line, line


def test_a_broken_png_chunk_is_refused_without_quoting_its_bytes(capfd, tmp_path):
    """Pillow says "broken PNG file (chunk b'S\\x00C!')": four bytes of the file, once shown as they were."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(buf, "PNG")
    png = buf.getvalue()
    at = png.index(b"IDAT") - 4
    data = png[at + 8:at + 8 + int.from_bytes(png[at:at + 4], "big")]

    def chunk(kind: bytes, body: bytes) -> bytes:
        return len(body).to_bytes(4, "big") + kind + body + zlib.crc32(kind + body).to_bytes(4, "big")

    path = tmp_path / "broken.png"
    path.write_bytes(png[:at] + chunk(b"IDAT", data[:5]) + chunk(b"S\x00C!", SECRET.encode())
                     + chunk(b"IDAT", data[5:]) + chunk(b"IEND", b""))
    line = refused(capfd, "score", "--model", PIXELCNN, "--image", str(path))
    assert "broken PNG file" in line and "S\\x00C" not in line and "b'" not in line, line


def test_text_data_with_characters_the_model_lacks_is_refused_without_quoting_them(capfd, tmp_path):
    path = tmp_path / "odd.txt"
    path.write_text("To be, or not to be \u2603 \u00e9\n" * 40, encoding="utf-8")
    line = refused(capfd, "eval", "--model", TEXT_CHAR, "--data", str(path))
    assert "\u2603" not in line and "\u00e9" not in line and "cannot encode (the first is character" in line, line


def test_recording_metrics_into_a_card_that_is_not_utf8_does_not_quote_its_bytes(tmp_path):
    from types import SimpleNamespace

    from engines.cli import write_card_metric
    from engines.errors import ChainruleError

    (tmp_path / "card.json").write_bytes(b'{"id": "m\xfe"}')
    with pytest.raises(ChainruleError) as exc:
        write_card_metric(SimpleNamespace(id="m", path=tmp_path), "k", {"x": 1}, "chainrule eval")
    assert "0xfe" not in str(exc.value) and "not UTF-8 text" in str(exc.value)


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
