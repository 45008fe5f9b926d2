"""The Audio tab with a speech model (a tiny mel prior + vocoder): Generate writes the frames into the mel
view, then speaks them, the same sound as the engine and the CLI; both levels' log-likelihoods and the
recogniser's verdict are shown; Re-speak says a loaded recording again; WaveNet-only settings are off."""

from __future__ import annotations

import shlex

import numpy as np
import pytest

pytest.importorskip("torch")

from engines.audio.speech import load_speech_model, run_to_end, speak  # noqa: E402
from engines.audio.wav import write_audio  # noqa: E402
from engines.cli import main as cli_main  # noqa: E402
from engines.registry import read_card  # noqa: E402
from tests import tab_helpers  # noqa: E402
from tests.audio_models import TINY_MEL, export_model_dir, export_speech_dir, make_speech, make_wavenet  # noqa: E402
from tests.tab_helpers import shown_window  # noqa: E402

MODEL = "tiny-speech"
RUN_TIMEOUT_MS = 20_000

pytestmark = pytest.mark.usefixtures("isolated_model_dirs")


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory):
    import torch

    root = tmp_path_factory.mktemp("speech-tab-models")
    vocoder, prior = make_speech(seed=0)
    with torch.no_grad():
        prior.head.bias[-1] = -2.5  # utterances of a few frames
    export_speech_dir(vocoder, prior, root, MODEL)
    export_model_dir(make_wavenet(seed=2), root, "tiny-wavenet")
    from tests.recogniser_models import export_recogniser_dir, make_audio_recogniser

    export_recogniser_dir(make_audio_recogniser(seed=1), root, "tiny-recogniser")  # what "heard as" asks
    return root


@pytest.fixture
def tab(qtbot, models_dir):
    for window in shown_window(qtbot, models_dir, "Audio", timeout_ms=RUN_TIMEOUT_MS,
                               stop=lambda t: (t.stop(), t.stop_playback())):
        t = window.tab("Audio")
        assert t.select_model(MODEL)
        t.live_check.setChecked(False)
        yield t


def run_and_wait(qtbot, tab, action):
    return tab_helpers.run_and_wait(qtbot, tab, action, RUN_TIMEOUT_MS)


def test_speech_model_turns_wavenet_settings_off_and_frames_on(tab):
    assert tab._speech and tab.mel_view.isVisibleTo(tab)
    assert not tab.seconds_spin.isEnabled() and not tab.batch_spin.isEnabled()
    from engines.training.export_speech import DECODING_DEFAULTS

    assert tab.frame_temp_spin.isEnabled()
    assert tab.frame_temp_spin.value() == pytest.approx(DECODING_DEFAULTS["frame_temperature"])  # the card's
    assert not tab.respeak_button.isEnabled()  # no recording yet
    assert tab.select_model("tiny-wavenet")
    assert not tab.mel_view.isVisibleTo(tab) and tab.seconds_spin.isEnabled() and not tab.frame_temp_spin.isEnabled()


def test_generate_writes_frames_then_speaks_them_like_the_engine_and_the_cli(qtbot, tab, models_dir, tmp_path, capsys):
    tab.set_seed(9, fixed=True)
    assert tab.set_digit(4) and tab.set_speaker("lucas")
    tab.frame_temp_spin.setValue(0.8)
    run = run_and_wait(qtbot, tab, tab.generate)
    assert run.state == "done" and run.speech and run.mode == "generation"
    model = load_speech_model(read_card(models_dir / MODEL))
    want = run_to_end(model, speak(model, seed=9, digit=4, speaker="lucas", frame_temperature=0.8, temperature=1.0))
    assert np.array_equal(run.generated(0), want.samples)
    assert run.n_prior_frames == want.frames.shape[1] == len(run.frames)
    assert run.prior_logprob == pytest.approx(want.prior_logprob, abs=1e-3)
    assert tab.mel_view.frames.shape == want.frames.shape and np.allclose(tab.mel_view.frames, want.frames)
    text = tab.totals.text()
    assert "log p(frames | digit 4, speaker lucas)" in text and "log p(audio | frames)" in text
    from engines.recognise import load_recogniser

    verdict = load_recogniser(read_card(models_dir / "tiny-recogniser")).judge(run.generated(0), 8000)
    assert tab.heard_label.text() == f"heard as: <b>{verdict.text()}</b>"
    # the command the status shows makes the same sound
    out = tmp_path / "cli.wav"
    args = shlex.split(run.cli)[1:]
    args[args.index("--out") + 1] = str(out)
    assert cli_main([*args, "--models-dir", str(models_dir)]) == 0
    capsys.readouterr()
    import soundfile as sf

    from engines.audio.wav import to_int16

    assert np.array_equal(sf.read(str(out), dtype="int16")[0], to_int16(run.generated(0)))


def test_respeak_says_the_recording_again_in_another_voice(qtbot, tab, tmp_path):
    path = tmp_path / "rec.wav"
    write_audio(path, (0.3 * np.sin(np.arange(200) / 3.0)).astype(np.float32), TINY_MEL["sample_rate"])
    assert tab.load_recording(str(path))
    qtbot.waitUntil(lambda: tab.recording.score is not None, timeout=RUN_TIMEOUT_MS)
    assert "log p(frames |" in tab.totals.text()  # both levels for a recording too
    assert tab.respeak_button.isEnabled()
    tab.set_seed(1, fixed=True)
    assert tab.set_speaker("jackson")
    run = run_and_wait(qtbot, tab, tab.respeak)
    assert run.mode == "resynthesis" and run.n_done == 200 and run.n_prior_frames == 0
    assert tab.mel_view.frames.shape[1] == 1 + 200 // TINY_MEL["hop"]
    assert "--resynth" in run.cli and "--speaker jackson" in run.cli


def test_continue_primes_both_levels_with_the_recording(qtbot, tab, models_dir, tmp_path):
    path = tmp_path / "rec.wav"
    rec = (0.3 * np.sin(np.arange(120) / 5.0)).astype(np.float32)
    write_audio(path, rec, TINY_MEL["sample_rate"])
    assert tab.load_recording(str(path))
    tab.continue_check.setChecked(True)
    tab.set_seed(2, fixed=True)
    assert tab.set_digit(8) and tab.set_speaker("george")
    run = run_and_wait(qtbot, tab, tab.generate)
    assert run.mode == "continuation" and "--prompt" in run.cli
    n_prompt = 1 + 120 // TINY_MEL["hop"]
    assert run.prompt_frames == n_prompt and len(run.frames) == n_prompt + run.n_prior_frames
    model = load_speech_model(read_card(models_dir / MODEL))
    from engines.audio.wav import read_audio

    loaded = read_audio(path).samples  # what the tab read (16-bit)
    want = run_to_end(model, speak(model, seed=2, digit=8, speaker="george",
                                   frame_temperature=tab.frame_temp_spin.value(), prompt=loaded))
    assert np.array_equal(run.generated(0), want.samples)
    assert np.array_equal(run.sound(0)[:120], loaded)  # the recording, then the continuation
