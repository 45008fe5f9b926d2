"""Reading users' recordings (any rate, channels, depth, format) and writing WAV/FLAC."""

from __future__ import annotations

import struct

import numpy as np
import pytest
import soundfile as sf

from engines.audio.wav import LoadedAudio, read_audio, to_int16, write_audio
from engines.errors import InputError


def tone(freq: float, rate: int, seconds: float, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def peak_hz(x: np.ndarray, rate: int) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / rate)[int(np.argmax(spec))])


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))


def wav_header(rate: int, channels: int, bits: int, n_bytes: int) -> bytes:
    fmt = struct.pack("<IHHIIHH", 16, 1, channels, rate, rate * channels * bits // 8, channels * bits // 8, bits)
    return b"RIFF" + struct.pack("<I", 36 + n_bytes) + b"WAVEfmt " + fmt + b"data" + struct.pack("<I", n_bytes)


# --- round trips ------------------------------------------------------------------------------
@pytest.mark.parametrize("suffix", [".wav", ".flac"])
def test_write_then_read_round_trips_16_bit(tmp_path, suffix):
    x = np.random.default_rng(0).uniform(-0.9, 0.9, 4000).astype(np.float32)
    path = tmp_path / f"clip{suffix}"
    write_audio(path, x, 8000)
    info = sf.info(str(path))
    assert (info.format, info.subtype, info.samplerate, info.channels) == (suffix[1:].upper(), "PCM_16", 8000, 1)
    back = read_audio(path)
    assert isinstance(back, LoadedAudio)
    assert back.notes == [] and back.sample_rate == back.original_rate == 8000 and back.original_channels == 1
    assert back.samples.dtype == np.float32 and back.samples.shape == (4000,)
    assert back.duration_s == pytest.approx(0.5)
    np.testing.assert_allclose(back.samples, x, atol=1.5 / 32767)
    # Exactly the int16 values written.
    np.testing.assert_array_equal(sf.read(str(path), dtype="int16")[0], to_int16(x))


def test_writing_clips_and_replaces_atomically(tmp_path):
    path = tmp_path / "out.wav"
    write_audio(path, np.array([0.1, 0.2], np.float32), 8000)
    write_audio(path, np.array([2.0, -3.0, 0.5, np.nan], np.float32), 8000)  # replaces the first
    pcm, rate = sf.read(str(path), dtype="int16")
    assert rate == 8000 and pcm.tolist() == [32767, -32767, 16384, 0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.wav"]  # no temporary file left
    write_audio(tmp_path / "col.flac", np.zeros((5, 1), np.float32), 16000)  # (n, 1) is mono too
    assert sf.info(str(tmp_path / "col.flac")).frames == 5


@pytest.mark.parametrize("name, samples, message", [
    ("x.mp3", np.zeros(4, np.float32), "written as .wav (16-bit PCM) or .flac"),
    ("noext", np.zeros(4, np.float32), "without a suffix"),
    ("x.wav", np.zeros(0, np.float32), "no audio (0 samples)"),
    ("x.wav", np.zeros((2, 3), np.float32), "expected mono samples"),
])
def test_bad_writes_are_refused_and_write_nothing(tmp_path, name, samples, message):
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        write_audio(tmp_path / name, samples, 8000)
    assert list(tmp_path.iterdir()) == []


def test_writing_into_a_missing_folder_names_it(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        write_audio(tmp_path / "nope" / "x.wav", np.zeros(4, np.float32), 8000)


# --- conversions ------------------------------------------------------------------------------
def test_a_24_bit_stereo_44k_file_is_resampled_mixed_and_says_so(tmp_path):
    rate = 44100
    left = tone(440, rate, 1.0, amp=0.6)
    stereo = np.stack([left, np.zeros_like(left)], axis=1)  # the right channel is silent
    path = tmp_path / "stereo24.wav"
    sf.write(str(path), stereo, rate, subtype="PCM_24")
    a = read_audio(path)
    assert a.notes == ["converted from 24-bit", "mixed 2 channels to mono", "resampled from 44100 Hz to 8000 Hz"]
    assert (a.sample_rate, a.original_rate, a.original_channels) == (8000, 44100, 2)
    assert abs(len(a.samples) - 8000) <= 1 and a.duration_s == pytest.approx(1.0, abs=1e-3)
    assert peak_hz(a.samples, 8000) == pytest.approx(440, abs=2)  # the pitch survives resampling
    assert rms(a.samples[400:-400]) == pytest.approx(0.3 / np.sqrt(2), rel=0.02)  # mean of the channels
    assert np.abs(a.samples).max() <= 1.0


def test_resampling_filters_instead_of_aliasing(tmp_path):
    # 6 kHz is above the 4 kHz Nyquist of 8 kHz audio: a proper resampler removes it;
    # dropping samples would fold it down to 2 kHz at full strength.
    rate = 48000
    path = tmp_path / "high.flac"
    sf.write(str(path), tone(6000, rate, 0.5, amp=0.8), rate, subtype="PCM_16")
    a = read_audio(path)
    assert "resampled from 48000 Hz to 8000 Hz" in a.notes
    assert rms(a.samples[200:-200]) < 0.01 * (0.8 / np.sqrt(2))
    naive = tone(6000, rate, 0.5, amp=0.8)[::6]
    assert rms(naive) > 0.5  # what the test guards against


def test_upsampling_keeps_the_pitch(tmp_path):
    path = tmp_path / "low.wav"
    sf.write(str(path), tone(500, 4000, 0.5), 4000, subtype="PCM_16")
    a = read_audio(path, sample_rate=8000)
    assert a.notes == ["resampled from 4000 Hz to 8000 Hz"] and abs(len(a.samples) - 4000) <= 1
    assert peak_hz(a.samples, 8000) == pytest.approx(500, abs=3)


@pytest.mark.parametrize("subtype, note", [
    ("PCM_U8", "converted from 8-bit"), ("PCM_32", "converted from 32-bit"),
    ("FLOAT", "converted from 32-bit float"), ("DOUBLE", "converted from 64-bit float"),
    ("ULAW", "converted from 8-bit mu-law"),
])
def test_every_bit_depth_reads_back_the_same_signal(tmp_path, subtype, note):
    x = tone(300, 8000, 0.25)
    path = tmp_path / f"{subtype}.wav"
    sf.write(str(path), x, 8000, subtype=subtype)
    a = read_audio(path)
    assert a.notes == [note]
    tol = {"PCM_U8": 1 / 64, "ULAW": 1 / 32}.get(subtype, 1e-4)
    np.testing.assert_allclose(a.samples, x, atol=tol)


def test_float_files_beyond_full_scale_are_clipped_with_a_count(tmp_path):
    path = tmp_path / "loud.wav"
    sf.write(str(path), np.array([0.5, 1.5, -2.0, 0.0], np.float32), 8000, subtype="FLOAT")
    a = read_audio(path)
    assert "clipped 2 samples outside [-1, 1]" in a.notes
    assert a.samples.tolist() == [0.5, 1.0, -1.0, 0.0]


def test_ogg_vorbis_reads(tmp_path):
    path = tmp_path / "clip.ogg"
    sf.write(str(path), tone(400, 8000, 0.5), 8000, format="OGG", subtype="VORBIS")
    a = read_audio(path)
    assert a.sample_rate == 8000 and abs(len(a.samples) - 4000) < 200
    assert peak_hz(a.samples, 8000) == pytest.approx(400, abs=5)


# --- bad files ----------------------------------------------------------------------------------
def test_bad_files_raise_one_input_error_naming_the_file(tmp_path):
    cases = {}
    cases["missing.wav"] = ("not found", None)
    cases["empty.wav"] = ("empty (0 bytes)", b"")
    cases["text.wav"] = ("not a readable audio file", b"hello, this is not audio at all" * 8)
    cases["nodata.wav"] = ("holds no audio (0 samples)", wav_header(8000, 1, 16, 0))
    cases["nochunk.wav"] = ("not a readable audio file", wav_header(8000, 1, 16, 400)[:30])
    cases["rate.wav"] = ("sample rate of 2000000000 Hz", wav_header(2_000_000_000, 1, 16, 400) + bytes(400))
    cases["channels.wav"] = ("claims 300 channels", wav_header(8000, 300, 16, 600) + bytes(600))
    for name, (message, data) in cases.items():
        path = tmp_path / name
        if data is not None:
            path.write_bytes(data)
        with pytest.raises(InputError) as info:
            read_audio(path)
        assert message in str(info.value), name
        assert name in str(info.value)
    with pytest.raises(InputError, match="is a folder, not a file"):
        read_audio(tmp_path)


def test_nan_samples_and_overlong_files_are_refused(tmp_path, monkeypatch):
    path = tmp_path / "nan.wav"
    sf.write(str(path), np.array([0.0, np.nan, 0.1], np.float32), 8000, subtype="FLOAT")
    with pytest.raises(InputError, match="not numbers"):
        read_audio(path)
    # The length limit is checked from the header, before anything is read.
    monkeypatch.setattr("engines.audio.wav.MAX_SECONDS", 0.5)
    long = tmp_path / "long.wav"
    sf.write(str(long), np.zeros(8000, np.float32), 8000, subtype="PCM_16")
    with pytest.raises(InputError, match="is 1.0 s long; at most 0.5 s"):
        read_audio(long)
    monkeypatch.setattr("soundfile.read", lambda *a, **k: pytest.fail("read a file that is too long"))
    with pytest.raises(InputError):
        read_audio(long)


def test_too_short_to_survive_resampling(tmp_path):
    path = tmp_path / "one.wav"
    sf.write(str(path), np.array([0.5], np.float32), 96000, subtype="PCM_16")
    with pytest.raises(InputError, match="too short"):
        read_audio(path)
