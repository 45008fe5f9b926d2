"""The Audio tab on a tiny exported WaveNet: runs that match the engine and the CLI, variations,
stop, playing while generating (a hand-driven stream), no device, recordings (score, continue),
bad input, export; and the plots' numbers (spectrogram, surprise smoothing, throttled redraws)."""

from __future__ import annotations

import json
import math
import re
import shlex
import threading
import time

import numpy as np
import pytest
import soundfile as sf

pytest.importorskip("torch")

from engines.audio import playback  # noqa: E402
from engines.audio.generate import generate_audio  # noqa: E402
from engines.audio.model import load_audio_model  # noqa: E402
from engines.audio.playback import Player  # noqa: E402
from engines.audio.scoring import score_audio  # noqa: E402
from engines.audio.wav import read_audio, to_int16  # noqa: E402
from engines.cli import main as cli_main  # noqa: E402
from engines.registry import read_card  # noqa: E402
from studio.audio import spectrum  # noqa: E402
from studio.audio.work import CHUNK_SAMPLES as CHUNK  # noqa: E402
from studio.audio.plots import AudioPlots  # noqa: E402
from tests import tab_helpers  # noqa: E402
from tests.audio_models import SPEAKERS, export_model_dir, make_wavenet  # noqa: E402
from tests.tab_helpers import new_window, shown_window  # noqa: E402
from tests.test_audio_playback import FakeStream  # noqa: E402

MODEL = "tiny-wavenet"
RATE = 8000
RUN_TIMEOUT_MS = 20_000

pytestmark = pytest.mark.usefixtures("isolated_model_dirs")


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("audio-tab-models")
    export_model_dir(make_wavenet(seed=2), root, MODEL)
    return root


@pytest.fixture(scope="module")
def engine_model(models_dir):
    return load_audio_model(read_card(models_dir / MODEL))


@pytest.fixture
def window(qtbot, models_dir):
    yield from shown_window(qtbot, models_dir, "Audio", timeout_ms=RUN_TIMEOUT_MS,
                            stop=lambda tab: (tab.stop(), tab.stop_playback()))


@pytest.fixture
def tab(window):
    t = window.tab("Audio")
    FakeStream.made = []
    t.set_player(Player(RATE, stream_factory=FakeStream))  # a stream the test drives by hand
    assert t.select_model(MODEL)
    return t


def settings(tab, *, seed=5, seconds=0.05, temperature=1.0, batch=1, digit=None, speaker=None, live=False):
    tab.set_seed(seed, fixed=True)
    tab.seconds_spin.setValue(seconds)
    tab.temperature_spin.setValue(temperature)
    tab.batch_spin.setValue(batch)
    assert tab.set_digit(digit) and tab.set_speaker(speaker)
    tab.live_check.setChecked(live)


def run_and_wait(qtbot, tab):
    return tab_helpers.run_and_wait(qtbot, tab, tab.generate, RUN_TIMEOUT_MS)


def curve_y(curve) -> np.ndarray:
    return np.asarray(curve.yData if curve.yData is not None else [], dtype=np.float64)


def write_tone(path, rate=44100, seconds=0.2, channels=2, subtype="PCM_24"):
    t = np.arange(int(rate * seconds)) / rate
    x = 0.4 * np.sin(2 * np.pi * 300 * t) * np.hanning(len(t))
    data = np.stack([x] * channels, axis=1) if channels > 1 else x
    sf.write(str(path), data, rate, subtype=subtype)
    return path


# --- models ---------------------------------------------------------------------------------------
def test_the_tab_lists_audio_models_with_their_digits_and_speakers(window, tab):
    names = window.tab_names()
    assert "Audio" in names and names.index("Audio") == names.index("Image") + 1
    assert tab.model_ids() == [MODEL] and tab.pages.currentIndex() == 1
    assert [tab.digit_combo.itemText(i) for i in range(tab.digit_combo.count())] == ["none", *map(str, range(10))]
    assert [tab.speaker_combo.itemText(i) for i in range(tab.speaker_combo.count())] == ["none", *SPEAKERS]
    assert tab.set_speaker("JACKSON") and tab.speaker() == "jackson"  # names are case-insensitive
    assert not tab.set_speaker("nobody")
    assert "unknown speaker 'nobody'" in tab.status_text() and "george" in tab.status_text()


def test_without_an_audio_model_the_tab_says_how_to_get_one(qtbot, tmp_path):
    w = new_window(qtbot, tmp_path)
    tab = w.tab("Audio")
    assert tab.pages.currentIndex() == 0
    assert "No audio model installed" in tab.empty_label.text() and "Models" in tab.empty_label.text()
    assert tab.generate() is None
    w.close()


# --- runs ---------------------------------------------------------------------------------------------
def test_generate_matches_the_engine_and_the_command_it_shows(window, tab, qtbot, engine_model, tmp_path,
                                                               monkeypatch):
    settings(tab, seed=11, seconds=0.06, temperature=0.9, batch=2, digit=3, speaker="lucas")
    run = run_and_wait(qtbot, tab)
    assert run.state == "done" and run.n_done == 480 and run.seed == 11 == tab.seed_spin.value()
    expected = generate_audio(engine_model, seconds=0.06, temperature=0.9, seed=11, digit=3, speaker="lucas", batch=2)
    np.testing.assert_array_equal(run.samples, expected.samples)
    np.testing.assert_allclose(run.logprobs, expected.logprobs, atol=1e-5)
    status = tab.status_text()
    assert "seed 11" in status and "digit 3" in status and "lucas" in status and "2 variations" in status
    assert "0 underruns" not in status  # nothing was played
    # The command shown reproduces both variations.
    args = shlex.split(run.cli)
    assert args[:3] == ["chainrule", "generate", "audio"] and "--count" in args
    out = tmp_path / "cli.wav"
    args[args.index("--out") + 1] = str(out)
    assert cli_main(args[1:]) == 0
    for v in range(2):
        path = tmp_path / f"cli_{v + 1}.wav"
        pcm, rate = sf.read(str(path), dtype="int16")
        assert rate == RATE
        np.testing.assert_array_equal(pcm, to_int16(run.samples[v]))


def test_the_variation_selector_shows_each_variation(tab, qtbot):
    settings(tab, seed=3, batch=3)
    run = run_and_wait(qtbot, tab)
    assert tab.show_combo.count() == 3
    for v in range(3):
        assert tab.show_variation(v)
        np.testing.assert_allclose(curve_y(tab.plots.wave_curve), run.samples[v], atol=1e-7)
        assert tab.shown_sound().tolist() == run.samples[v].tolist()
    assert not np.array_equal(run.samples[0], run.samples[1])  # variations differ


def test_earlier_runs_stay_in_the_show_list(tab, qtbot, tmp_path):
    settings(tab, seed=31, digit=2)
    first = run_and_wait(qtbot, tab)
    settings(tab, seed=32, batch=2)
    second = run_and_wait(qtbot, tab)
    items = [tab.show_combo.itemText(i) for i in range(tab.show_combo.count())]
    assert items == ["variation 1 of 2 · seed 32", "variation 2 of 2 · seed 32",
                     "earlier: digit 2, any speaker · generated · seed 31"]
    assert tab.show_variation(0, first)
    assert tab.shown_run() is first and tab.shown_sound().tolist() == first.samples[0].tolist()
    assert "seed 31" in tab.status_text() and "digit 2" in tab.status_text()
    assert tab.export_audio(str(tmp_path / "old.wav"))
    assert json.loads((tmp_path / "old.json").read_text())["seed"] == 31
    assert tab.run is second


def test_a_fixed_seed_repeats_and_new_each_run_draws_and_shows_a_fresh_one(tab, qtbot):
    settings(tab, seed=42)
    a = run_and_wait(qtbot, tab)
    b = run_and_wait(qtbot, tab)
    np.testing.assert_array_equal(a.samples, b.samples)
    tab.new_seed_check.setChecked(True)
    c = run_and_wait(qtbot, tab)
    assert c.seed == tab.seed_spin.value() and f"seed {c.seed}" in tab.status_text()


def test_the_surprise_of_a_generated_sound_is_its_score(tab, qtbot, engine_model):
    settings(tab, seed=8, seconds=0.05, digit=7, speaker="george")
    run = run_and_wait(qtbot, tab)
    score = score_audio(engine_model, run.generated(0), digit=7, speaker="george")
    np.testing.assert_allclose(run.logprobs[0], score.logprobs, atol=1e-4)
    np.testing.assert_allclose(curve_y(tab.plots.surprise_curve), score.surprise_bits, atol=1e-3)
    assert f"{-score.total_logprob / math.log(2) / len(score.logprobs):.3f} bits/sample" in tab.totals.text()


def test_stop_ends_a_long_run_at_once_and_keeps_what_was_generated(tab, qtbot, tmp_path):
    settings(tab, seed=1, seconds=30.0)
    run = tab.generate()
    qtbot.waitUntil(lambda: run.n_done >= 800, timeout=RUN_TIMEOUT_MS)
    t0 = time.perf_counter()
    tab.stop_button.click()
    qtbot.waitUntil(lambda: not tab.is_running(), timeout=3000)
    assert time.perf_counter() - t0 < 2.0
    n = run.n_done
    qtbot.wait(200)
    assert run.n_done == n < run.n_samples and run.state == "stopped"
    assert "stopped" in tab.status_text() and "kept" in tab.status_text()
    assert len(tab.shown_sound()) == n
    assert tab.export_audio(str(tmp_path / "partial.wav"))  # nothing generated is lost
    assert sf.info(str(tmp_path / "partial.wav")).frames == n


# --- playback ---------------------------------------------------------------------------------------------
def test_play_while_generating_feeds_the_player_and_the_cursor_follows(tab, qtbot):
    settings(tab, seed=4, seconds=0.1, live=True)
    run = run_and_wait(qtbot, tab)
    (stream,) = FakeStream.made
    assert stream.started and tab.player.state in ("buffering", "playing")
    played = stream.pull(3)  # 768 samples; the whole run is 800 and ended: no pre-roll wait
    np.testing.assert_array_equal(played, run.sound(0)[:768])
    tab._tick_cursor()
    assert tab.cursor_seconds() == pytest.approx(768 / RATE)
    assert "0 underruns" in tab.status_text()
    stream.pull(2)
    assert stream.finished and not tab.player.is_playing
    tab._tick_cursor()
    assert tab.cursor_seconds() is None  # the cursor goes when the sound ends


def test_a_slow_model_buffers_and_the_status_says_when_the_sound_starts(tab, qtbot):
    # The player's clock runs so that the model generates at exactly 0.6x real time.
    tab.set_player(Player(RATE, stream_factory=FakeStream,
                          clock=lambda: (tab.run.n_done if tab.run else 0) / (0.6 * RATE)))
    settings(tab, seed=3, seconds=30.0, live=True)
    run = tab.generate()
    p = tab.player
    # ... and until the status has caught up with everything fed (it follows every LIVE_REDRAW_MS)
    qtbot.waitUntil(lambda: run.n_done >= 2400 and p.generation_rate is not None
                    and tab._live_redraw.pending() == 0 and "generation runs at" in tab.status_text(),
                    timeout=RUN_TIMEOUT_MS)
    (stream,) = FakeStream.made
    assert not stream.pull(4).any() and p.is_buffering
    assert p.generation_rate == pytest.approx(0.6 * RATE)
    total = run.prompt_len + run.n_samples  # the tab told the player the run's length
    slack = p.preroll_target - math.ceil(total * 0.4) - 256  # R (1 - r / sr), a block and the largest feed
    # The largest feed is a whole number of chunks (the tab feeds chunks that arrived together
    # at once; how many depends on the machine's load), give or take one sample of rounding.
    chunks = round(slack / CHUNK)
    assert chunks >= 1 and abs(slack - chunks * CHUNK) <= 1
    status = tab.status_text()
    eta = float(re.search(r"buffering: generation runs at 0\.60× real time, playback starts in ~([\d.]+) s",
                          status).group(1))
    assert eta == pytest.approx(p.starts_in, abs=0.051) and eta > 10  # 30 s at 0.6x: waits for 40 %
    tab._tick_cursor()
    assert tab.playback_label.text() == f"buffering… ~{p.starts_in:.1f} s"
    tab.stop()
    qtbot.waitUntil(lambda: not tab.is_running(), timeout=3000)
    assert "buffering" not in tab.status_text()


def test_play_loop_and_stop_buttons_drive_the_player(tab, qtbot):
    settings(tab, seed=6, seconds=0.05)
    run = run_and_wait(qtbot, tab)
    assert FakeStream.made == [] and tab.play_button.isEnabled()
    tab.loop_check.setChecked(True)
    tab.play_button.click()
    (stream,) = FakeStream.made
    out = stream.pull(4)  # 1024 samples of a 400-sample sound, looped
    np.testing.assert_array_equal(out, np.tile(run.sound(0), 3)[:1024])
    assert tab.stop_play_button.isEnabled()
    tab.stop_play_button.click()
    assert stream.aborted and stream.closed and not tab.player.is_playing
    assert tab.cursor_seconds() is None


def test_stop_also_stops_the_sound_fed_by_the_run(tab, qtbot):
    settings(tab, seed=2, seconds=30.0, live=True)
    run = tab.generate()
    qtbot.waitUntil(lambda: run.n_done >= 400, timeout=RUN_TIMEOUT_MS)
    tab.stop()
    (stream,) = FakeStream.made
    assert stream.aborted and not tab.player.is_playing
    qtbot.waitUntil(lambda: not tab.is_running(), timeout=3000)


def test_without_a_device_playback_is_off_but_generation_and_export_work(tab, qtbot, monkeypatch, tmp_path):
    def no_portaudio():
        raise OSError("PortAudio library not found")

    monkeypatch.setattr(playback, "_import_sounddevice", no_portaudio)
    tab.set_player(Player(RATE))
    assert not tab.playback_available()
    assert "Playback is off" in tab.status_text() and "PortAudio" in tab.status_text()
    assert "Playback off" in tab.playback_label.text()
    settings(tab, seed=9, live=True)
    run = run_and_wait(qtbot, tab)
    assert run.state == "done" and run.n_done == 400 and run.streamed is None
    for w in (tab.play_button, tab.stop_play_button, tab.loop_check, tab.live_check):
        assert not w.isEnabled()
    assert "Playback is off" in tab.status_text()  # still said, after the run too
    assert not tab.play()
    assert "Cannot play" in tab.status_text() and not FakeStream.made
    assert tab.export_audio(str(tmp_path / "x.flac"))


# --- recordings --------------------------------------------------------------------------------------------
def test_a_loaded_recording_is_converted_scored_and_rescored(tab, qtbot, tmp_path, engine_model):
    path = write_tone(tmp_path / "voice.wav")
    assert tab.load_recording(str(path))
    status = tab.status_text()
    assert "resampled from 44100 Hz to 8000 Hz" in status and "mixed 2 channels to mono" in status
    assert "converted from 24-bit" in status
    assert tab.shown() == ("recording", 0)
    qtbot.waitUntil(lambda: tab.recording.score is not None and tab.is_idle(), timeout=RUN_TIMEOUT_MS)
    loaded = read_audio(path)
    expected = score_audio(engine_model, loaded.samples)
    assert tab.recording.score.total_logprob == pytest.approx(expected.total_logprob, abs=1e-3)
    np.testing.assert_allclose(curve_y(tab.plots.surprise_curve), expected.surprise_bits, atol=1e-3)
    assert f"{expected.bits_per_sample:.3f} bits/sample" in tab.totals.text()
    # New conditioning: the recording is scored again under it.
    assert tab.set_digit(5) and tab.set_speaker("george")
    qtbot.waitUntil(lambda: tab.recording.score.digit == 5 and tab.is_idle(), timeout=RUN_TIMEOUT_MS)
    again = score_audio(engine_model, loaded.samples, digit=5, speaker="george")
    assert tab.recording.score.total_logprob == pytest.approx(again.total_logprob, abs=1e-3)
    assert "digit 5, speaker george" in tab.totals.text()


def test_continue_this_recording_primes_generation(tab, qtbot, tmp_path, engine_model):
    path = write_tone(tmp_path / "start.flac", rate=8000, seconds=0.05, channels=1, subtype="PCM_16")
    assert tab.load_recording(str(path))
    tab.continue_check.setChecked(True)
    settings(tab, seed=12, seconds=0.05, digit=1)
    run = run_and_wait(qtbot, tab)
    prompt = read_audio(path).samples
    np.testing.assert_array_equal(run.prompt, prompt)
    expected = generate_audio(engine_model, seconds=0.05, seed=12, digit=1, prompt=prompt)
    np.testing.assert_array_equal(run.samples, expected.samples)
    np.testing.assert_array_equal(tab.shown_sound(), np.concatenate([prompt, expected.samples[0]]))
    assert "--prompt" in run.cli and str(path) in run.cli
    assert tab.plots.boundaries[0].isVisible()
    assert tab.plots.boundaries[0].value() == pytest.approx(len(prompt) / RATE)
    assert "continuing start.flac" in tab.status_text()
    # The recording's own surprise (scored under the run's digit) stands in front of the continuation's.
    qtbot.waitUntil(lambda: run.prompt_surprise is not None, timeout=RUN_TIMEOUT_MS)
    own = score_audio(engine_model, prompt, digit=1).surprise_bits
    np.testing.assert_allclose(curve_y(tab.plots.surprise_curve)[: len(prompt)], own, atol=1e-6)
    assert len(curve_y(tab.plots.surprise_curve)) == len(prompt) + run.n_done


def test_bad_recordings_and_settings_give_messages_and_lose_nothing(tab, qtbot, tmp_path):
    settings(tab, seed=3)
    run = run_and_wait(qtbot, tab)
    before = tab.shown_sound().copy()
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk" * 3)
    assert not tab.load_recording(str(bad))
    assert "broken.wav" in tab.status_text() and "not a readable audio file" in tab.status_text()
    assert not tab.load_recording(str(tmp_path / "missing.wav"))
    assert "not found" in tab.status_text()
    empty = tmp_path / "empty.flac"
    empty.write_bytes(b"")
    assert not tab.load_recording(str(empty))
    assert "empty" in tab.status_text()
    assert tab.recording is None and tab.run is run
    np.testing.assert_array_equal(tab.shown_sound(), before)
    # Continue ticked with nothing loaded: refused, nothing runs.
    tab.continue_check.setChecked(True)
    assert tab.generate() is None and "no recording is loaded" in tab.status_text()
    assert tab.run is run
    assert not tab.set_digit(12) and "digit 12 is out of range" in tab.status_text()


# --- export ---------------------------------------------------------------------------------------------------
def test_export_wav_and_flac_with_their_settings(tab, qtbot, tmp_path):
    settings(tab, seed=21, seconds=0.05, temperature=0.8, batch=2, digit=4, speaker="jackson")
    run = run_and_wait(qtbot, tab)
    assert tab.show_variation(1)
    wav = tmp_path / "take.wav"
    assert tab.export_audio(str(wav))
    pcm, rate = sf.read(str(wav), dtype="int16")
    assert rate == RATE and sf.info(str(wav)).subtype == "PCM_16"
    np.testing.assert_array_equal(pcm, to_int16(run.samples[1]))
    meta = json.loads((tmp_path / "take.json").read_text())
    assert (meta["seed"], meta["variation"], meta["variations"], meta["digit"], meta["speaker"]) == (21, 2, 2, 4,
                                                                                                    "jackson")
    assert meta["temperature"] == 0.8 and meta["complete"] and meta["command"] == run.cli
    assert meta["total_logprob"] == pytest.approx(run.total_logprob(1))
    flac = tmp_path / "take2"
    assert tab.export_audio(str(flac), fmt="flac")
    assert sf.info(str(tmp_path / "take2.flac")).format == "FLAC"
    np.testing.assert_array_equal(sf.read(str(tmp_path / "take2.flac"), dtype="int16")[0], pcm)
    assert (tmp_path / "take2.json").exists()
    assert not tab.export_audio(str(tmp_path / "nope" / "x.wav"))
    assert "does not exist" in tab.status_text()
    assert not tab.export_audio(str(tmp_path / "x.mp3"))
    assert "WAV or FLAC" in tab.status_text()


# --- plots ------------------------------------------------------------------------------------------------------
def test_spectrogram_puts_a_tone_at_its_frequency_in_dbfs():
    t = np.arange(RATE) / RATE
    spec = spectrum.spectrogram((0.5 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32), RATE)
    assert spec.db.shape[1] == spectrum.N_FFT // 2 + 1 and spec.max_hz == 4000
    middle = spec.db[len(spec.db) // 2]
    assert int(np.argmax(middle)) * RATE / spectrum.N_FFT == 1000
    assert middle.max() == pytest.approx(20 * math.log10(0.5), abs=0.1)  # a half-scale sine: -6 dBFS
    assert spec.db.min() >= spectrum.FLOOR_DB
    assert spectrum.spectrogram(np.zeros(0, np.float32), RATE).db.shape[0] == 1


def test_surprise_smoothing_matches_the_engine_and_skips_unknown_values(engine_model):
    rng = np.random.default_rng(0)
    x = (0.3 * rng.standard_normal(600)).clip(-1, 1).astype(np.float32)
    score = score_audio(engine_model, x)
    np.testing.assert_allclose(spectrum.surprise_bits(score.logprobs), score.surprise_bits, atol=1e-9)
    lp = np.full(10, -math.log(2))  # one bit each
    lp[:3] = np.nan
    out = spectrum.surprise_bits(lp, window=4)
    assert np.isnan(out[:3]).all() and np.allclose(out[3:], 1.0)


def test_the_spectrogram_redraw_is_throttled(qtbot):
    plots = AudioPlots()
    qtbot.addWidget(plots)
    x = np.zeros(0, np.float32)
    for _ in range(50):  # 50 chunks arriving within a few milliseconds
        x = np.concatenate([x, np.random.default_rng(len(x)).uniform(-0.5, 0.5, 80).astype(np.float32)])
        plots.set_sound(x, total_len=4000)
    assert plots.spectrogram_updates <= 1
    assert len(curve_y(plots.wave_curve)) == 4000  # the waveform itself is always current
    plots.flush()
    assert plots.spectrogram_updates <= 2 and plots.spectrogram_image().shape[0] == len(
        spectrum.spectrogram(x, RATE).db)
    plots.set_cursor(0.25)
    assert plots.cursor_seconds() == 0.25
    plots.set_cursor(None)
    assert plots.cursor_seconds() is None


# --- keeping up with the model: what a run costs the UI thread ---------------------------------------------
def test_chunks_reach_the_player_at_once_and_the_plots_and_status_at_most_every_live_interval(tab, qtbot,
                                                                                             monkeypatch):
    # Every redraw is UI time the model's worker does not get on a busy machine: the tab used to redraw
    # plots, totals and status for every batch of chunks (~30 a second), which halved its speed.
    from studio.audio import work
    from studio.tabs import audio_tab

    def quiet_worker(info, request, *, cancel, **kw):  # the test hands the tab its chunks itself
        cancel.wait(RUN_TIMEOUT_MS / 1000)
        return
        yield

    monkeypatch.setattr(work, "generate_events", quiet_worker)
    settings(tab, seed=1, seconds=1.0, live=True)
    run = tab.generate()
    fed, shown = [], []
    monkeypatch.setattr(tab.player, "feed", lambda x, **kw: fed.append(len(x)))
    set_sound = tab.plots.set_sound
    monkeypatch.setattr(tab.plots, "set_sound", lambda x, **kw: (shown.append(len(x)), set_sound(x, **kw)))
    rng = np.random.default_rng(0)
    for k in range(20):  # twenty batches in a row, faster than any redraw
        tab._on_events(run, [work.Chunk(k * CHUNK, rng.uniform(-0.1, 0.1, (1, CHUNK)).astype(np.float32),
                                        np.full((1, CHUNK), -5.0, np.float32))])
    assert fed == [CHUNK] * 20  # the player heard every chunk at once
    assert shown == [] and "generating… 0.00 / 1.00 s" in tab.status_text()  # nothing was redrawn yet
    qtbot.waitUntil(lambda: len(shown) == 1, timeout=RUN_TIMEOUT_MS)
    assert shown == [20 * CHUNK] and "generating… 1.00 / 1.00 s" in tab.status_text()  # one redraw shows all
    qtbot.wait(3 * audio_tab.LIVE_REDRAW_MS)
    assert len(shown) == 1  # and nothing is redrawn without news
    # every sample is in what the curve draws from (it is handed their envelope: 8000 samples > MAX_POINTS)
    np.testing.assert_array_equal(tab.plots.wave_envelope.data, run.samples[0, : 20 * CHUNK])
    tab.stop()
    qtbot.waitUntil(lambda: not tab.is_running(), timeout=RUN_TIMEOUT_MS)


def test_a_new_status_or_playback_text_repaints_the_label_not_the_plots(tab, qtbot):
    # A label's new text asks for a new layout, which Qt's QTabWidget answers by repainting the whole
    # page: every button and the three plots, ten times a second while a run streams in. The window's
    # tabs (studio.main_window.PageTabs) repaint only what changed.
    from PySide6.QtCore import QEvent, QObject

    settings(tab, seed=6, seconds=0.1)
    run_and_wait(qtbot, tab)  # plots with a sound in them
    painted = []

    names = {}

    class Paints(QObject):
        def eventFilter(self, obj, event):
            if event.type() == QEvent.Type.Paint:
                painted.append(names.get(id(obj), "?"))
            elif event.type() == QEvent.Type.LayoutRequest:
                painted.append(f"layout of {names.get(id(obj), '?')}")
            return False

    spy = Paints()
    # the labels' boxes (studio.widgets.SteadyLabel) keep a new text from laying out the page and window
    page = [tab.status.parentWidget().parentWidget()]
    while page[-1].parentWidget() is not None:
        page.append(page[-1].parentWidget())
    names.update({id(tab.plots.viewport()): "plots", id(tab.generate_button): "button", id(tab.seed_spin): "seed",
                  id(tab.status): "status", **{id(w): f"page {type(w).__name__}" for w in page}})
    watched = [tab.plots.viewport(), tab.generate_button, tab.seed_spin, tab.status, *page]
    for w in watched:
        w.installEventFilter(spy)
    tab._say("settling")  # one line, as below: the labels keep their height, so nothing moves
    qtbot.waitUntil(lambda: "status" in painted)
    qtbot.wait(300)  # whatever the run's end still had to draw
    painted.clear()
    for i in range(3):
        tab._say(f"<b>seed 6</b> · generating… {i / 10:.2f} / 3.00 s · {4000 + 7 * i:,} samples/s")
        tab.totals.setText(f"<b>{6 + i / 1000:.3f} bits/sample</b> · log p = {-100.5 * i:.1f} nats")
        tab.playback_label.setText(f"playing {i / 10:.1f} s")
        qtbot.wait(40)
    assert "status" in painted  # the label itself is repainted (its parents paint the background under it) ...
    # ... and nothing is laid out again, nor repainted elsewhere: not the plots, not the buttons
    assert not {"plots", "button", "seed"} & set(painted) and not [p for p in painted if p.startswith("layout")], \
        painted
    for w in watched:
        w.removeEventFilter(spy)


def test_a_growing_sound_computes_each_spectrogram_frame_once(qtbot):
    plots = AudioPlots()
    qtbot.addWidget(plots)
    x = np.random.default_rng(3).uniform(-0.5, 0.5, 4000).astype(np.float32)
    for n in range(400, 4001, 400):  # ten chunks arrive, and the spectrogram is redrawn after each
        plots.set_sound(x[:n], total_len=4000)
        plots.flush()
    full = spectrum.spectrogram(x, RATE)
    assert plots.spectrogram_updates == 10
    np.testing.assert_array_equal(plots.spectrogram_image(), full.db)  # the same as computing it whole
    assert plots.spectrogram_frames_computed == len(full.db)  # each frame once, not once per redraw
    y = x[::-1].copy()  # another sound: not mistaken for the old one grown
    plots.set_sound(y[:2000])
    plots.flush()
    np.testing.assert_array_equal(plots.spectrogram_image(), spectrum.spectrogram(y[:2000], RATE).db)


def test_a_growing_surprise_track_computes_only_its_new_values():
    rng = np.random.default_rng(4)
    lp = -rng.uniform(1.0, 7.0, 3000)
    lp[500:520] = np.nan  # unknown values stay unknown
    track = None
    for n in range(400, 3001, 400):
        track = spectrum.surprise_bits(lp[:n], previous=track)
        np.testing.assert_allclose(track, spectrum.surprise_bits(lp[:n]), rtol=1e-12, atol=1e-12, equal_nan=True)
    # What was computed is reused, not recomputed: change ln p far behind the newest samples, and
    # the values there do not move (a whole recomputation would change them).
    old = spectrum.surprise_bits(lp[:2000])
    changed = lp.copy()
    changed[:1900] = -1.0
    grown = spectrum.surprise_bits(changed[:2400], previous=old)
    np.testing.assert_array_equal(grown[:1900], old[:1900])
    np.testing.assert_allclose(grown[1990:], spectrum.surprise_bits(lp[:2400])[1990:], rtol=1e-12)
    # A run's surprise track grows the same way, chunk by chunk, and equals the track of the whole.
    from studio.audio.runs import Run
    from studio.audio.work import Chunk

    run = Run("m", 1, 1, 3000 / RATE, 1.0, None, None, RATE, None, None, None, [], None, None)
    for start in range(0, 3000, CHUNK):
        end = min(start + CHUNK, 3000)
        run.add(Chunk(start, np.zeros((1, end - start), np.float32), lp[None, start:end].astype(np.float32)))
        run.surprise(0)
    np.testing.assert_allclose(run.surprise(0), spectrum.surprise_bits(lp.astype(np.float32)), rtol=1e-9,
                               atol=1e-9, equal_nan=True)


# --- redraws that cost the same however long the clip (issue 13, class 7) ---------------------------------
def test_the_envelope_pyramid_grows_by_its_new_samples_and_matches_the_whole():
    from studio.audio.envelope import BASE, Envelope

    rng = np.random.default_rng(8)
    x = rng.standard_normal(60_000)
    x[7_000:7_300] = np.nan  # unknown values are skipped; a block of them only stays unknown
    env, reads, n = Envelope(), [], 0
    for end in range(800, len(x) + 1, 800):
        before = env.values_read
        env.update(x[:end], start=max(0, n - 100))  # the last 100 values changed, the rest only grew
        reads.append(env.values_read - before)
        n = end
    # each update reads its new (and changed) values and their blocks at each level (a third more in
    # all), not the whole signal: as much at 60,000 samples as at 1,600
    assert max(reads) <= 2 * 900 and reads[-1] <= reads[1] + 4 * BASE * len(env.levels)
    for level in env.levels:
        b = level.block
        blocks = [x[j * b:(j + 1) * b] for j in range(math.ceil(len(x) / b))]
        want = [np.nan if np.isnan(v).all() else np.nanmax(v) for v in blocks]
        np.testing.assert_array_equal(level.maxs[: level.count], want)
    assert env.extremes() == (np.nanmin(x), np.nanmax(x))
    t, y = env.points(0, len(x), 4096)
    assert len(t) <= 4096 and np.nanmax(y) == np.nanmax(x) and np.nanmin(y) == np.nanmin(x)  # no spike lost
    t, y = env.points(1_000, 3_000, 4096)  # a view that fits: the samples themselves
    np.testing.assert_array_equal(t, np.arange(1_000, 3_000))
    np.testing.assert_array_equal(y, x[1_000:3_000])


def _count_handed(monkeypatch, plots) -> list:
    """Every setData of the plots' curves: (curve name, points handed)."""
    handed = []
    for name in ("prompt_curve", "wave_curve", "surprise_curve"):
        curve = getattr(plots, name)
        orig = curve.setData
        monkeypatch.setattr(curve, "setData", lambda *a, _o=orig, _n=name, **kw: (
            handed.append((_n, len(a[0]) if a else 0)), _o(*a, **kw))[1])
    return handed


def test_a_redraw_hands_the_plots_as_much_at_the_end_of_a_long_clip_as_at_its_start(qtbot, monkeypatch):
    # 30 s generated at 8 kHz, shown every 800 samples as the tab does (a run and variation's key): the
    # curves were handed every sample so far (240,000 at the end) and the spectrogram image was set
    # whole, so the UI work per chunk grew from 10 ms to 40-60 ms over the clip.
    from studio.audio import plots as plots_module

    plots = AudioPlots()
    qtbot.addWidget(plots)
    plots.resize(1200, 500)
    plots.show()
    total = 30 * RATE
    rng = np.random.default_rng(5)
    x = (0.4 * np.sin(np.arange(total) / 9.0) * rng.uniform(0.2, 1.0, total)).astype(np.float32)
    bits = rng.uniform(1.0, 9.0, total)
    handed = _count_handed(monkeypatch, plots)
    per_redraw, coloured = [], []
    for n in range(800, total + 1, 800):
        handed.clear()
        before_cols, before_reads = plots.image.columns_coloured, plots.wave_envelope.values_read
        plots.set_sound(x[:n], total_len=total, surprise=bits[:n], key=("run", 0))
        plots.flush()  # the spectrogram redrawn after every chunk (worst case: no throttle)
        per_redraw.append((max(k for _name, k in handed), plots.wave_envelope.values_read - before_reads))
        coloured.append(plots.image.columns_coloured - before_cols)
    points, reads = zip(*per_redraw)
    assert max(points) <= plots_module.MAX_POINTS  # never every sample of a long clip ...
    assert max(reads[1:]) <= 2 * 800  # ... only the new samples read (and their blocks): as much at 30 s as at 0.1 s
    assert max(coloured) <= 800 // spectrum.HOP + 1  # only the new spectrogram columns are coloured
    assert plots.image.capacity() >= spectrum.spectrogram_length(total)  # allocated once for the whole clip
    np.testing.assert_array_equal(plots.spectrogram_image(), spectrum.spectrogram(x, RATE).db)
    t, y = plots.wave_curve.xData, plots.wave_curve.yData
    assert y.max() == x.max() and y.min() == x.min() and t[-1] <= total / RATE  # the envelope keeps every peak
    # Zoomed in, the curve is handed the samples of the view themselves, exactly.
    plots.wave.setXRange(10.0, 10.1, padding=0)
    t, y = plots.wave_curve.xData, plots.wave_curve.yData
    i0 = int(round(t[0] * RATE))
    assert len(y) <= plots_module.MAX_POINTS and t[0] <= 10.0 <= 10.1 <= t[-1]
    np.testing.assert_array_equal(y, x[i0: i0 + len(y)])
    # Without a key, the same samples with another surprise track (a recording rescored): the new track.
    plots.set_sound(x[:3000], surprise=np.full(3000, 1.0))
    plots.set_sound(x[:3000], surprise=np.full(3000, 5.0))
    assert len(plots.surprise_curve.yData) and np.all(plots.surprise_curve.yData == 5.0)


def test_a_growing_run_is_shown_from_views_of_its_buffers(qtbot):
    # The tab shows a run with sound_view / surprise_view (no copy of the whole run per redraw) and the
    # run's key: the prompt's surprise arriving (its score) changes the key, so the track is redone.
    from studio.audio.runs import Run
    from studio.audio.work import Chunk

    prompt = np.linspace(-0.5, 0.5, 300).astype(np.float32)
    run = Run("m", 1, 2, 2000 / RATE, 1.0, None, None, RATE, prompt, "p", None, [], None, None)
    rng = np.random.default_rng(6)
    samples = rng.uniform(-0.3, 0.3, (2, 2000)).astype(np.float32)
    lp = -rng.uniform(1.0, 7.0, (2, 2000))
    keys = []
    for start in range(0, 2000, CHUNK):
        run.add(Chunk(start, samples[:, start:start + CHUNK], lp[:, start:start + CHUNK]))
        view = run.sound_view(1)
        assert view.base is not None  # a view, not a copy
        np.testing.assert_array_equal(view, np.concatenate([prompt, samples[1, : run.n_done]]))
        track = run.surprise_view(1)
        np.testing.assert_allclose(track[300:], spectrum.surprise_bits(lp[1, : run.n_done]), rtol=1e-9, atol=1e-9)
        assert np.isnan(track[:300]).all()
        keys.append(run.surprise_key(1))
    assert len(set(keys)) == 1
    run.prompt_surprise = np.full(300, 2.5)  # the recording's score came in
    assert run.surprise_key(1) != keys[0]
    np.testing.assert_array_equal(run.surprise_view(1)[:300], 2.5)
    np.testing.assert_array_equal(run.surprise(1), run.surprise_view(1))  # surprise(): the same, a copy


def test_the_engine_bench_times_the_chunking_the_tab_uses():
    # `chainrule bench audio` reports `studio_path_samples_per_s`: the tab's engine call, with its chunk size.
    from engines.audio import bench
    from studio.audio import work

    assert bench.STUDIO_CHUNK == work.CHUNK_SAMPLES == CHUNK


def test_an_empty_mel_view_shows_the_ranges_a_clip_will_use(qtbot):
    """Before any frame: time from 0 and the 40 mel bins, not pyqtgraph's -0.5..0.5 around nothing."""
    from studio.audio.mel_view import MelView

    view = MelView()
    qtbot.addWidget(view)
    (x0, x1), (y0, y1) = view.viewRange()
    assert x0 == pytest.approx(0) and x1 == pytest.approx(1.0) and y0 == pytest.approx(0) and y1 == pytest.approx(40)
    view.start(np.zeros((40, 3), np.float32), floor=-11.5, hop_s=0.01)
    assert view.viewRange()[0][1] == pytest.approx(0.5)  # at least 50 frames wide
    view.clear_frames()
    assert view.viewRange()[1] == pytest.approx([0, 40])
