"""The Audio tab and AudioRequest: exports that carry their request (and regenerate bit for bit with
`chainrule generate --from`), a tab restored to a request, runs recorded in the history with their
WAVs, and the tab's bounded state across a restart."""

from __future__ import annotations

import base64
import io
import json
import shutil

import numpy as np
import pytest
import soundfile as sf

pytest.importorskip("torch")

from engines.audio.wav import to_int16, write_audio  # noqa: E402
from engines.cli import main as cli_main  # noqa: E402
from engines.errors import InputError  # noqa: E402
from engines.requests import MAX_EMBEDDED_INPUT_BYTES, read_request_file, request_from_json  # noqa: E402
from tests import tab_helpers  # noqa: E402
from tests.audio_models import export_model_dir, export_speech_dir, make_speech, make_wavenet  # noqa: E402
from tests.tab_helpers import new_window, shown_window  # noqa: E402

WAVENET, SPEECH = "tiny-wavenet", "tiny-speech"
RUN_TIMEOUT_MS = 20_000

pytestmark = pytest.mark.usefixtures("isolated_model_dirs")


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory):
    import torch

    root = tmp_path_factory.mktemp("audio-tab-request-models")
    export_model_dir(make_wavenet(seed=2), root, WAVENET)
    vocoder, prior = make_speech(seed=0)
    with torch.no_grad():
        prior.head.bias[-1] = -2.5  # utterances of a few frames
    export_speech_dir(vocoder, prior, root, SPEECH)
    return root


class Recorder:
    """Stands in for the history store: what the tab records."""

    def __init__(self):
        self.started, self.finished = [], []

    def start_run(self, tab, request_json, parent=None):
        self.started.append((tab, request_json, parent))
        return len(self.started)

    def finish_run(self, run_id, *, files, summary, status):
        self.finished.append((run_id, files, summary, status))


@pytest.fixture
def window(qtbot, models_dir):
    yield from shown_window(qtbot, models_dir, "Audio", timeout_ms=RUN_TIMEOUT_MS,
                            stop=lambda tab: (tab.stop(), tab.stop_playback()))


@pytest.fixture
def tab(window):
    t = window.tab("Audio")
    t.live_check.setChecked(False)
    assert t.select_model(WAVENET)
    return t


def run_and_wait(qtbot, tab, action=None):
    return tab_helpers.run_and_wait(qtbot, tab, action or tab.generate, RUN_TIMEOUT_MS)


def wavenet_settings(tab, *, seed=31, seconds=0.05, temperature=0.9, batch=2, digit=5, speaker="lucas"):
    tab.set_seed(seed, fixed=True)
    tab.seconds_spin.setValue(seconds)
    tab.temperature_spin.setValue(temperature)
    tab.batch_spin.setValue(batch)
    assert tab.set_digit(digit) and tab.set_speaker(speaker)


def pcm(path) -> np.ndarray:
    return sf.read(str(path), dtype="int16")[0]


def from_file(models_dir, source, out) -> None:
    assert cli_main(["generate", "--from", str(source), "--out", str(out), "--models-dir", str(models_dir)]) == 0


def test_an_exported_variation_regenerates_bit_for_bit_and_reopens_the_tab(qtbot, tab, models_dir, tmp_path,
                                                                          capsys):
    wavenet_settings(tab)
    run = run_and_wait(qtbot, tab)
    assert run.state == "done" and run.request.seed == 31 and run.request.count == 2
    assert tab.show_variation(1)
    assert tab.export_audio(str(tmp_path / "take.wav"))
    stored = read_request_file(tmp_path / "take.wav")
    assert stored["decoding"]["seed"] == 32 and stored["count"] == 1 and stored["digit"] == 5  # variation 2
    meta = json.loads((tmp_path / "take.json").read_text())
    assert meta["request"] == stored and meta["variation"] == 2 and meta["command"] == run.cli
    with sf.SoundFile(str(tmp_path / "take.wav")) as f:
        assert json.loads(f.comment) == stored
    from_file(models_dir, tmp_path / "take.wav", tmp_path / "again.wav")
    capsys.readouterr()
    np.testing.assert_array_equal(pcm(tmp_path / "again.wav"), pcm(tmp_path / "take.wav"))
    np.testing.assert_array_equal(pcm(tmp_path / "take.wav"), to_int16(run.samples[1]))
    # The command the tab shows makes the same pair.
    assert "--count 2" in run.cli and "--seed 31" in run.cli and "--digit 5" in run.cli

    # Reopened: the tab is set to that variation's request; Generate makes the same sound.
    wavenet_settings(tab, seed=1, seconds=0.1, temperature=0.5, batch=3, digit=0, speaker="george")
    assert tab.apply_request(request_from_json(stored)) is None
    assert (tab.digit(), tab.speaker(), tab.batch_spin.value(), tab.seed_spin.value()) == (5, "lucas", 1, 32)
    assert tab.seconds_spin.value() == pytest.approx(0.05) and tab.temperature_spin.value() == pytest.approx(0.9)
    assert not tab.new_seed_check.isChecked()
    again = run_and_wait(qtbot, tab)
    np.testing.assert_array_equal(to_int16(again.samples[0]), pcm(tmp_path / "take.wav"))


def test_a_request_that_does_not_fit_leaves_the_tab_as_it_was(qtbot, tab, tmp_path):
    from engines.audio.request import AudioRequest, recording_ref
    from engines.decoding.config import DecodingConfig

    wavenet_settings(tab, seed=7, digit=2)
    with pytest.raises(InputError, match="model 'gone-model' is not installed"):
        tab.apply_request(AudioRequest(model="gone-model", seconds=0.1))
    # a recording larger than a request embeds, since moved: named, with its hash
    big = tmp_path / "long.wav"
    t = np.arange(88200) / 44100.0
    sf.write(str(big), np.stack([0.3 * np.sin(2 * np.pi * 220 * t)] * 2, axis=1), 44100, subtype="PCM_16")
    assert big.stat().st_size > MAX_EMBEDDED_INPUT_BYTES
    ref = recording_ref(str(big))
    request = AudioRequest(model=WAVENET, decoding=DecodingConfig(seed=3), seconds=0.05, digit=9, prompt=ref)
    shutil.move(big, tmp_path / "moved.wav")
    with pytest.raises(InputError) as err:
        tab.apply_request(request)
    assert str(big) in str(err.value) and ref.sha256[:12] in str(err.value)
    assert (tab.digit(), tab.seed_spin.value()) == (2, 7)  # unchanged
    # back in place: the recording is loaded, "continue" ticked, and the run continues it
    shutil.move(tmp_path / "moved.wav", big)
    tab.apply_request(request)
    assert tab.recording is not None and tab.continue_check.isChecked() and tab.digit() == 9
    run = run_and_wait(qtbot, tab)
    assert run.request.prompt == ref and run.prompt_len == tab.recording.loaded.samples.shape[0]


def test_runs_are_recorded_with_their_wavs_and_numbers(qtbot, window, tab):
    recorder = Recorder()
    window.ctx.history = recorder
    try:
        wavenet_settings(tab, seed=40, batch=2)
        run = run_and_wait(qtbot, tab)
    finally:
        window.ctx.history = None
    (kind, request_json, parent), = recorder.started
    assert kind == "audio" and request_json == run.request.to_json() and parent is None
    (run_id, files, summary, status), = recorder.finished
    assert run_id == 1 and status == "done" and sorted(files) == ["sample_1.wav", "sample_2.wav"]
    for v in range(2):
        data, rate = sf.read(io.BytesIO(files[f"sample_{v + 1}.wav"]), dtype="int16")
        np.testing.assert_array_equal(data, to_int16(run.samples[v]))
        with sf.SoundFile(io.BytesIO(files[f"sample_{v + 1}.wav"])) as f:
            assert json.loads(f.comment)["decoding"]["seed"] == 40 + v
    assert summary["logprob"] == pytest.approx([run.total_logprob(0), run.total_logprob(1)])
    assert summary["seconds"] == pytest.approx(0.05) and summary["wall_seconds"] > 0


def test_the_state_survives_a_restart_bounded(qtbot, window, tab, models_dir):
    wavenet_settings(tab, seed=50, seconds=0.1, batch=2)
    runs = [run_and_wait(qtbot, tab) for _ in range(2)]
    wavenet_settings(tab, seed=60, seconds=0.05, batch=1, digit=3, speaker="george")
    state = tab.history_state()
    assert len(json.dumps(state)) < 2_000_000 and len(state["runs"]) == 2
    # long runs: only the newest that fit the budget are kept (here each is ~0.96 MB of sound + log-probs)
    import copy

    for k in range(3):
        long = copy.copy(runs[-1])
        long.id = 1000 + k
        long.samples = np.full((4, 60_000), 0.1 * (k + 1), np.float32)
        long.logprobs = np.full((4, 60_000), -1.0)
        long.n_done, long.batch = 60_000, 4
        long.request = runs[-1].request.replace(count=4)
        tab._runs[long.id] = long
    big = tab.history_state()
    kept = [r for r in big["runs"] if r["n"] == 60_000]
    assert len(json.dumps(big)) < 2_000_000 and len(big["runs"]) <= 4 and len(kept) == 1
    first = np.frombuffer(base64.b64decode(kept[0]["samples"]), "<i2")[0]
    assert abs(int(first) - round(0.3 * 32767)) <= 1  # the newest
    for k in range(3):
        del tab._runs[1000 + k]

    w2 = new_window(qtbot, models_dir)
    try:
        fresh = w2.tab("Audio")
        fresh.restore_history_state(state)
        assert (fresh.digit(), fresh.speaker(), fresh.seed_spin.value()) == (3, "george", 60)
        assert fresh.run is not None and len(fresh._runs) == 2
        np.testing.assert_array_equal(to_int16(fresh.run.samples), to_int16(runs[-1].samples))
        assert fresh.run.request == runs[-1].request and "Restored 2 runs" in fresh.status_text()
        np.testing.assert_allclose(fresh.run.total_logprob(0), runs[-1].total_logprob(0), rtol=1e-2)
        # a state whose model is gone: said, not raised; the tab stays usable
        fresh.restore_history_state({**state, "model": "gone-model", "runs": [{"request": {"bad": 1}}]})
        assert "gone-model" in fresh.status_text() and fresh.generate_button.isEnabled()
    finally:
        w2.close()


def test_a_speech_export_regenerates_bit_for_bit(qtbot, window, models_dir, tmp_path, capsys):
    tab = window.tab("Audio")
    tab.live_check.setChecked(False)
    assert tab.select_model(SPEECH)
    tab.set_seed(12, fixed=True)
    assert tab.set_digit(2) and tab.set_speaker("jackson")
    tab.frame_temp_spin.setValue(0.7)
    run = run_and_wait(qtbot, tab)
    assert run.state == "done" and run.request.frame_temperature == pytest.approx(0.7)
    assert tab.export_audio(str(tmp_path / "said.flac"))
    from_file(models_dir, tmp_path / "said.flac", tmp_path / "again.flac")
    capsys.readouterr()
    np.testing.assert_array_equal(pcm(tmp_path / "again.flac"), pcm(tmp_path / "said.flac"))
    # a continuation: exported whole (recording + continuation), as the CLI writes it
    rec = tmp_path / "rec.wav"
    write_audio(rec, (0.3 * np.sin(np.arange(400) / 4.0)).astype(np.float32), 8000)
    assert tab.load_recording(str(rec))
    tab.continue_check.setChecked(True)
    cont = run_and_wait(qtbot, tab)
    assert cont.mode == "continuation"
    assert tab.show_variation(0) and tab.export_audio(str(tmp_path / "cont.wav"))
    assert len(pcm(tmp_path / "cont.wav")) == cont.prompt_len + cont.n_done
    from_file(models_dir, tmp_path / "cont.wav", tmp_path / "cont2.wav")
    capsys.readouterr()
    np.testing.assert_array_equal(pcm(tmp_path / "cont2.wav"), pcm(tmp_path / "cont.wav"))
