"""The Audio tab: a WaveNet speaks a digit in a speaker's voice, you hear it as it is made,
and see where the model was surprised.

Layout: two bars of settings (model, digit, speaker, seconds, temperature, seed, variations;
then Generate / Stop, playback, the recording); the plots (waveform, surprise track under
it, spectrogram, one time axis, a cursor following playback); a line with the shown sound's
log-likelihood; the status line (run, seed, speed, the equivalent `chainrule` command).
Without an audio model the tab says how to get one.

Generation
    Generate builds an `AudioRequest` (engines/audio/request.py) from the settings and runs it
    on a worker with `engines.audio.request.run`, the runner `chainrule generate audio` uses;
    N variations are one batch, variation i is the request's sample i (seed + i), so
    `chainrule generate audio --seed s --count N` gives the same N sounds (the command shown is
    `request.to_command`). Every run is recorded in the history (its request, each
    variation's WAV carrying its own request, log-likelihoods, timing). The waveform,
    surprise and spectrogram grow as chunks arrive (redraws throttled). Stop ends the run at
    once and keeps what was generated; an error keeps it too. The last MAX_RUNS runs stay in
    the Show list, to compare, play and export.

Playback
    Play / stop / loop through `engines.audio.playback.Player`. With "play while generating"
    the player is fed each chunk of the chosen variation as it arrives. The player is told
    the run's length and measures how fast the model generates, so it waits just long
    enough (the pre-roll) for a slower-than-real-time model to play through without a gap,
    and a fast one starts at once; while it waits the status says how fast the model runs
    and when the sound starts. The status reports underruns. Without PortAudio or an output
    device the tab says so in its status and disables the playback controls; everything
    else works.

Recordings
    Load WAV/FLAC/OGG (any rate, channels or depth: converted, and the tab says how): the
    recording is shown and scored on a worker (`score_audio`: the surprise of every sample
    under the chosen digit and speaker, rescored when they change). "Continue this
    recording" primes the next Generate with it: the sound is the recording, then the
    model's continuation (a dashed line marks the join).

Export: the shown sound as 16-bit WAV or FLAC carrying its request (comment tag and a JSON
beside it, with the seed, conditioning, temperature, log-likelihood and command), so
`chainrule generate --from FILE` makes it again bit for bit; opening such a file sets the tab
to its request (`apply_request`). The settings and the last runs' sounds survive a restart
(`history_state`); both live in studio/audio/history.py.

Runs and recordings live in studio/audio/runs.py, the player and its cursor in
studio/audio/playback_control.py, the export in studio/audio/export.py; the runner,
rescoring and the window's close in studio/worker_tab.py.
"""

from __future__ import annotations

import html
import random
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from PySide6.QtCore import QSize
from PySide6.QtWidgets import QComboBox, QDoubleSpinBox, QFrame, QToolButton, QWidget

from engines.errors import ChainruleError, InputError
from studio.audio import speech_work, work
from studio.audio.mel_view import MelView
from studio.audio.export import AudioExportMixin
from studio.audio.history import AudioHistoryMixin
from studio.audio.playback_control import AudioPlaybackMixin
from studio.audio.plots import AudioPlots
from studio.audio.runs import Recording, Run, conditioning_text
from studio.audio.show_list import ShowListMixin
from studio.context import StudioContext
from studio.decoding_panel import SeedSpinBox, dice_icon
from studio.model_picker import ModelPickerMixin
from studio.status_line import StatusLineMixin
from studio.tabs import register_tab
from studio.worker import EventThrottle
from studio.widgets import (
    check_box,
    column,
    compact_combo,
    hbox,
    labelled_row,
    open_path,
    push_button,
    readout_label,
    spin_box,
    status_label,
    steady,
)
from studio.worker_tab import RescoringMixin, RunnerMixin

RESCORE_DELAY_MS = 150  # a recording is rescored this long after the last change of conditioning
# While a run streams in, the plots, totals and status follow at most this often (the player is fed at
# once, every batch): each redraw is UI-thread time the model's worker does not get on a busy machine.
LIVE_REDRAW_MS = 100
MAX_RUNS = 12  # runs kept in the Show list (the last one and earlier ones, to compare)
AUDIO_FILES = "Audio (*.wav *.flac *.ogg *.aiff *.aif);;All files (*)"
EMPTY_TEXT = (
    "<h3>No audio model installed</h3>"
    "<p>The Audio tab speaks with an autoregressive audio model: a WaveNet trained on the Free Spoken Digit "
    "Dataset (the shipped <code>fsdd-wavenet</code>, or your own), conditioned on the digit and the speaker.</p>"
    "<p>To get one, train and export a WaveNet:</p>"
    "<pre>chainrule train wavenet --data fsdd.npz --out runs/wavenet\n"
    "python -m engines.training.export_wavenet \\\n"
    "    --ckpt runs/wavenet/ckpt.pt --out my-models/fsdd-wavenet</pre>"
    "<p>then add the folder that holds it (<code>my-models</code>) in the <b>Models</b> tab "
    "(File → Add models folder…). Audio models appear here as soon as their folder is added.</p>"
)


class AudioTab(ShowListMixin, AudioPlaybackMixin, AudioExportMixin, AudioHistoryMixin, RunnerMixin, RescoringMixin,
               StatusLineMixin, ModelPickerMixin, QWidget):
    MODEL_KIND = "audio"
    MAX_RUNS = MAX_RUNS
    uses_decoding_panel = False  # temperature and seed are the tab's own (the step graph samples)

    def __init__(self, ctx: StudioContext, parent: QWidget | None = None, *, player=None) -> None:
        super().__init__(parent)
        self.ctx = ctx
        self.runner = ctx.task_runner("Audio", parent=self)
        self.score_runner = ctx.task_runner("Audio score", parent=self)
        self._infos: dict[str, Any] = {}  # model id -> ModelInfo (audio, usable)
        self._model_id: str | None = None
        self._speech = False  # the chosen model is a speech model (a mel prior + a vocoder)
        self._new_frames: list = []  # frames the prior wrote since the last redraw
        self._judge_info = None  # the audio recogniser's ModelInfo (engines.recognise), or None
        self.sample_rate = work.DEFAULT_RATE
        self.run: Run | None = None  # the last run
        self._runs: dict[int, Run] = {}  # id -> run: the last MAX_RUNS, oldest first (the Show list)
        self.recording: Recording | None = None
        self._cancel = threading.Event()
        self._init_playback()
        self._init_scoring_lifetime(RESCORE_DELAY_MS)  # once the window closes, nothing may start
        self._build()
        self._live_redraw = EventThrottle(self._redraw_live, LIVE_REDRAW_MS, self)
        self.player = None
        self.set_player(player)
        ctx.modelDirsChanged.connect(self.refresh_models)
        self.runner.busyChanged.connect(lambda _b: self._update_buttons())
        self.refresh_models()

    # --- widgets -----------------------------------------------------------------------------
    def _build(self) -> None:
        self.model_combo = compact_combo(14, "Audio models found in the models folders (see the Models tab)")
        self.model_combo.currentIndexChanged.connect(lambda _i: self._model_changed())
        self.digit_combo = QComboBox()
        self.digit_combo.setToolTip("The digit to say; “none” leaves it to the model")
        self.digit_combo.currentIndexChanged.connect(lambda _i: self._conditioning_changed())
        self.speaker_combo = QComboBox()
        self.speaker_combo.setMinimumContentsLength(8)
        self.speaker_combo.setToolTip("Whose voice; “none” leaves it to the model")
        self.speaker_combo.currentIndexChanged.connect(lambda _i: self._conditioning_changed())
        self.seconds_spin = QDoubleSpinBox()
        self.seconds_spin.setRange(work.MIN_SECONDS, work.MAX_SECONDS)
        self.seconds_spin.setDecimals(2)
        self.seconds_spin.setSingleStep(0.25)
        self.seconds_spin.setValue(1.0)
        self.seconds_spin.setSuffix(" s")
        self.seconds_spin.setToolTip("How much new audio to generate (after the recording, when continuing one)")
        self.temperature_spin = QDoubleSpinBox()
        self.temperature_spin.setRange(0.0, 3.0)
        self.temperature_spin.setDecimals(2)
        self.temperature_spin.setSingleStep(0.05)
        self.temperature_spin.setValue(1.0)
        self.temperature_spin.setSpecialValueText("0 (greedy)")
        self.temperature_spin.setToolTip("Below 1: safer, flatter speech; above 1: wilder; 0 always takes the most "
                                         "likely sample (the surprise track is always measured at temperature 1)")
        self.seed_spin = SeedSpinBox()
        self.seed_spin.setValue(random.randrange(2**31))
        self.seed_spin.setMinimumWidth(110)
        self.seed_spin.setToolTip("The seed of the run: the same seed and settings give the same sound")
        self.dice = QToolButton()
        self.dice.setIcon(dice_icon())
        self.dice.setIconSize(QSize(18, 18))
        self.dice.setToolTip("A random seed")
        self.dice.clicked.connect(self.randomize_seed)
        self.new_seed_check = check_box("new each run", "Ticked: Generate picks a fresh seed first (shown here, so "
                                        "any run can be repeated). Unticked: every Generate uses this seed.",
                                        checked=True)
        self.batch_spin = spin_box(1, work.MAX_BATCH, 1, "Variations generated at once (one batch, same seed): pick "
                                   "one below to see, play and export")
        self.frame_temp_spin = QDoubleSpinBox()
        self.frame_temp_spin.setRange(0.0, 3.0)
        self.frame_temp_spin.setDecimals(2)
        self.frame_temp_spin.setSingleStep(0.05)
        self.frame_temp_spin.setValue(0.6)
        self.frame_temp_spin.setSpecialValueText("0 (most likely)")
        self.frame_temp_spin.setToolTip("Speech models: how freely the prior writes the mel frames (the word's "
                                        "shape and timing). Lower: clearer, more typical; higher: more varied. "
                                        "The likelihoods are always those of the model itself")
        bar = labelled_row(("Model:", (self.model_combo, 2)), ("Digit:", self.digit_combo),
                           ("Speaker:", (self.speaker_combo, 1)), ("Seconds:", self.seconds_spin),
                           ("Temperature:", self.temperature_spin))
        bar2 = labelled_row(("Seed:", self.seed_spin, self.dice, self.new_seed_check),
                            ("Variations:", self.batch_spin), ("Frame temperature:", self.frame_temp_spin), spacing=12)

        # Run, playback and recording controls
        self.generate_button = push_button("Generate", "Generate new audio with these settings", self.generate)
        self.stop_button = push_button("Stop", "Stop generating at once (and the sound playing with it); what was "
                                       "made is kept", self.stop)
        self._build_playback_controls()
        self.show_combo = compact_combo(18, "Which sound to show, play and export: a variation of the last run, or "
                                        "the loaded recording")
        self.show_combo.currentIndexChanged.connect(lambda _i: self._shown_changed())
        self.load_button = push_button(
            "Load audio…", "A WAV, FLAC or OGG file of any rate, channels or bit depth (converted to the model's mono "
            "rate; you are told how): scored, or continued", lambda: self.load_recording())
        self.continue_check = check_box("Continue this recording", "Generate goes on from the end of the loaded "
                                        "recording (the model hears it first)")
        self.continue_check.toggled.connect(lambda _c: self._update_status())
        self.respeak_button = push_button(
            "Re-speak", "Speech models: the vocoder says the loaded recording again from its own mel frames, in the "
            "chosen speaker's voice (or its own, with speaker none)", self.respeak)
        self._build_export_controls()
        controls = hbox(self.generate_button, self.stop_button, self._separator(), self.play_button,
                       self.stop_play_button, self.loop_check, self.live_check, self._separator(),
                       "Show:", (self.show_combo, 1))
        # steady(): these labels change several times a second while a run plays; a new text must not
        # lay the window out again (studio.widgets.SteadyLabel)
        controls2 = hbox(self.load_button, self.continue_check, self.respeak_button, (steady(self.playback_label), 1),
                         self.with_prompt_check, self.export_wav_button, self.export_flac_button)

        self.plots = AudioPlots()
        self.plots.setMinimumHeight(260)
        self.mel_view = MelView()
        self.mel_view.setToolTip("The mel frames the prior writes (or the recording's, when re-speaking), "
                                 "left to right as they come; the vocoder then speaks them")
        self.mel_view.setVisible(False)
        self.totals = readout_label("AudioTotals")
        self.heard_label = readout_label("AudioHeard")
        self.heard_label.setToolTip("What the recogniser (a digit and speaker classifier on log-mel frames) hears "
                                    "in the shown sound")
        self.status = status_label("AudioStatus")
        # Each keeps the height of its usual text when it is empty or shorter: the totals and what is
        # heard fill in at a run's start and end, the status is a line or two; none moves the plots.
        main = column(bar, bar2, controls, controls2, self.mel_view, (self.plots, 1),
                      steady(self.totals, reserve="<b>0</b>"), steady(self.heard_label, reserve="<b>0</b>"),
                      steady(self.status, reserve="0<br>0"))
        self._build_model_pages(main, EMPTY_TEXT, "AudioEmptyState")

    @staticmethod
    def _separator() -> QFrame:
        line = QFrame()
        line.setFrameShape(QFrame.Shape.VLine)
        line.setFrameShadow(QFrame.Shadow.Sunken)
        return line

    # --- models ----------------------------------------------------------------------------------
    def refresh_models(self) -> None:
        from engines.recognise import find_recogniser

        usable = self._usable_models()  # one scan of the models folders for the tab's models and its recogniser
        models = [m for m in usable if m.kind == "audio"]
        self._judge_info = find_recogniser(usable, "audio")  # says what a sound is heard as
        self._infos = {m.id: m for m in models}
        self._fill_model_combo((m.id, m.id, self._model_tooltip(m)) for m in models)
        self._show_models_found(bool(models), EMPTY_TEXT)
        self._model_changed()

    @staticmethod
    def _model_tooltip(m) -> str:
        speakers = work.card_speakers(m.card)
        tip = f"{m.card.get('name', m.id)} · {work.card_sample_rate(m.card)} Hz"
        if speakers:
            tip += " · speakers " + ", ".join(speakers)
        return f"{tip}\n{m.path}"

    def _model_changed(self) -> None:
        model_id = self.model_combo.currentData()
        if model_id == self._model_id:
            self._update_buttons()
            return
        if self.runner.is_busy():
            self.stop()
        self._model_id = model_id
        info = self._infos.get(model_id) if model_id else None
        self._speech = info is not None and speech_work.is_speech_card(info.card)
        self.mel_view.setVisible(self._speech)
        if self._speech:
            self.frame_temp_spin.setValue(speech_work.card_frame_temperature(info.card))
        if info is not None:
            from engines.audio.request import card_decoding_defaults

            # the tab's config starts from the card's defaults; its temperature box shows the card's
            config = self.ctx.adopt_model_defaults(self.MODEL_KIND, card_decoding_defaults(info.card))
            self.temperature_spin.setValue(0.0 if config.strategy == "greedy" else config.temperature)
            self.sample_rate = work.card_sample_rate(info.card)
            self.plots.set_sample_rate(self.sample_rate)
            self._player_for_rate()
            self._fill_conditioning(info)
            if self.recording is not None and self.recording.sample_rate != self.sample_rate:
                self._forget_recording("it was read at another sample rate than this model's")
        self._invalidate_score()
        self._update_buttons()
        self._update_status()

    def _fill_conditioning(self, info) -> None:
        digit, speaker = self.digit(), self.speaker()
        for combo in (self.digit_combo, self.speaker_combo):
            combo.blockSignals(True)
            combo.clear()
            combo.addItem("none", None)
        for d in range(work.card_n_digits(info.card)):
            self.digit_combo.addItem(str(d), d)
        for name in work.card_speakers(info.card):
            self.speaker_combo.addItem(name, name)
        self.digit_combo.setCurrentIndex(max(0, self.digit_combo.findData(digit)))
        i = self.speaker_combo.findData(speaker) if speaker is not None else 0
        self.speaker_combo.setCurrentIndex(max(0, i))
        self.speaker_combo.setEnabled(self.speaker_combo.count() > 1)
        for combo in (self.digit_combo, self.speaker_combo):
            combo.blockSignals(False)

    # --- settings ---------------------------------------------------------------------------------
    def digit(self) -> int | None:
        return self.digit_combo.currentData()

    def speaker(self) -> str | None:
        return self.speaker_combo.currentData()

    def set_digit(self, digit: int | None) -> bool:
        i = self.digit_combo.findData(digit)
        if i < 0:
            self._say_error(f"digit {digit} is out of range: choose none or 0–{self.digit_combo.count() - 2}")
            return False
        self.digit_combo.setCurrentIndex(i)
        return True

    def set_speaker(self, name: str | None) -> bool:
        if name is not None:
            names = [self.speaker_combo.itemData(i) for i in range(1, self.speaker_combo.count())]
            match = [n for n in names if n.lower() == str(name).lower()]
            if not match:
                self._say_error(f"unknown speaker {name!r}: choose none or one of {', '.join(names) or '(none)'}")
                return False
            name = match[0]
        self.speaker_combo.setCurrentIndex(max(0, self.speaker_combo.findData(name)))
        return True

    def set_seed(self, seed: int, fixed: bool = True) -> None:
        self.seed_spin.setValue(seed)
        self.new_seed_check.setChecked(not fixed)

    def randomize_seed(self) -> None:
        # 31 bits: short enough to read out and type back; any seed below 2**63 is accepted.
        self.seed_spin.setValue(random.randrange(2**31))

    def _conditioning_changed(self) -> None:
        self._invalidate_score()
        self._update_status()

    # --- generation ---------------------------------------------------------------------------------
    def stop(self) -> None:
        """Stop generating at once (and the sound fed by it); what was generated is kept."""
        super().stop()
        run = self.run
        if run is not None and self._live(run) and run.state == "running":
            self.stop_playback()

    def generate(self) -> Run | None:
        info = self.chosen_model()
        if info is None:
            return None
        if self.runner.is_busy():
            self._say_error("A run is in progress: stop it first.")
            return None
        seconds, temperature, batch = self.seconds_spin.value(), self.temperature_spin.value(), self.batch_spin.value()
        digit, speaker = self.digit(), self.speaker()
        if self._speech:
            return self._start_speech(info, resynth=False)
        prompt = rec = None
        try:
            work.check_settings(seconds, temperature, batch)
            if self.continue_check.isChecked():
                rec = self.recording
                if rec is None:
                    raise InputError("“Continue this recording” is ticked but no recording is loaded: load one, or "
                                     "untick it")
                prompt = rec.samples.copy()
        except ChainruleError as exc:
            self._say_error(str(exc))
            return None
        if self.new_seed_check.isChecked():
            self.randomize_seed()
        seed = self.seed_spin.value()
        try:
            request = work.build_request(info, seed=seed, seconds=seconds, temperature=temperature, digit=digit,
                                         speaker=speaker, batch=batch, prompt_path=self._recording_source(rec))
        except ChainruleError as exc:
            self._say_error(str(exc))
            return None
        prompt_surprise = None
        if rec is not None and rec.score is not None and self._score_matches(rec.score, info.id, digit, speaker):
            prompt_surprise = rec.score.surprise_bits
        cli = work.request_command(request, info, f"{info.id}-seed{seed}.wav")
        run = Run(info.id, seed, batch, seconds, temperature, digit, speaker, self.sample_rate, prompt,
                  rec.name if rec else None, rec.path if rec else None, list(rec.loaded.notes) if rec else [],
                  prompt_surprise, cli)
        run.recording_id = rec.id if rec is not None else None
        self._begin_run(run, request)
        self._cancel = cancel = threading.Event()
        self._fill_show_combo(select=("run", 0))
        self._show()
        if self.live_check.isChecked() and self._play_available:
            self._start_live_playback(run)
        rate, judge = self.sample_rate, self._judge_info
        self._start_on_runner(
            lambda: speech_work.judged_wavenet_events(work.generate_events(info, request, cancel=cancel), prompt,
                                                      rate, judge), run)
        self._update_buttons()
        self._update_status()
        return run

    # --- speech models: the prior writes frames, the vocoder speaks them ---------------------------------
    def respeak(self) -> Run | None:
        """The vocoder says the loaded recording again from its own frames, in the chosen speaker's voice."""
        info = self.chosen_model()
        if info is None:
            return None
        if not self._speech:
            self._say_error("Re-speak needs a speech model (a mel prior + a vocoder, e.g. fsdd-speech)")
            return None
        if self.recording is None:
            self._say_error("Load a recording first: Re-speak says it again from its own mel frames")
            return None
        return self._start_speech(info, resynth=True)

    def _start_speech(self, info, *, resynth: bool) -> Run | None:
        if self.runner.is_busy():
            self._say_error("A run is in progress: stop it first.")
            return None
        temperature, ft = self.temperature_spin.value(), self.frame_temp_spin.value()
        digit, speaker = self.digit(), self.speaker()
        rec = self.recording if (resynth or self.continue_check.isChecked()) else None
        if not resynth and self.continue_check.isChecked() and rec is None:
            self._say_error("“Continue this recording” is ticked but no recording is loaded: load one, or untick it")
            return None
        prompt = rec.samples.copy() if rec is not None and not resynth else None
        if self.new_seed_check.isChecked():
            self.randomize_seed()
        seed = self.seed_spin.value()
        mode = "resynthesis" if resynth else ("continuation" if prompt is not None else "generation")
        try:
            request = work.build_request(info, seed=seed, temperature=temperature,
                                         digit=None if resynth else digit, speaker=speaker,
                                         prompt_path=self._recording_source(rec) if prompt is not None else None,
                                         resynth_path=self._recording_source(rec) if resynth else None,
                                         frame_temperature=None if resynth else ft)
        except ChainruleError as exc:
            self._say_error(str(exc))
            return None
        cli = work.request_command(request, info, f"{info.id}-seed{seed}.wav")
        prompt_surprise = None
        if prompt is not None and rec.score is not None and self._score_matches(rec.score, info.id, digit, speaker):
            prompt_surprise = rec.score.surprise_bits
        run = Run(info.id, seed, 1, work.MIN_SECONDS, temperature, None if resynth else digit, speaker,
                  self.sample_rate, prompt, rec.name if prompt is not None else None,
                  rec.path if prompt is not None else None, list(rec.loaded.notes) if prompt is not None else [],
                  prompt_surprise, cli)
        run.speech, run.mode, run.frame_temperature = True, mode, ft
        run.source_name = rec.name if rec is not None else None
        run.recording_id = rec.id if prompt is not None else None
        self._begin_run(run, request)
        self._new_frames = []
        self.mel_view.clear_frames()
        self._cancel = cancel = threading.Event()
        self._fill_show_combo(select=("run", 0))
        self._show()
        if self.live_check.isChecked() and self._play_available:
            self._start_live_playback(run)
        judge = self._judge_info
        self._start_on_runner(
            lambda: speech_work.speech_events(info, request, cancel=cancel, judge_info=judge), run)
        self._update_buttons()
        self._update_status()
        return run

    @staticmethod
    def _recording_source(rec: Recording | None):
        """What a request names for a recording: the InputRef it was reopened from, else its path."""
        if rec is None:
            return None
        return rec.ref if rec.ref is not None else rec.path

    def _begin_run(self, run: Run, request) -> None:
        """`run` becomes the last run (kept in the Show list) and is recorded in the history."""
        run.request = request
        self.run = run
        self._runs[run.id] = run
        while len(self._runs) > MAX_RUNS:  # earlier runs are kept to compare, up to a point
            del self._runs[next(iter(self._runs))]
        run.history_id = self.ctx.record_run_started(self.MODEL_KIND, request.to_json())

    def _record_run_end(self, run: Run, status: str) -> None:
        """Store the run's sounds (WAV with the request in its tag) and numbers in the history."""
        if run.history_id is None:
            return
        files = {}
        info = self._infos.get(run.model_id)
        if info is not None and run.request is not None and run.n_done:
            from engines.audio.request import audio_bytes

            for v in range(run.batch):
                try:
                    files[f"sample_{v + 1}.wav"] = audio_bytes(self._run_audio(run, v), run.sample_rate,
                                                               run.request.for_sample(v), info)
                except ChainruleError:  # pragma: no cover - a sound that cannot be written is left out
                    continue
        totals = [run.total_logprob(v) for v in range(run.batch)]
        summary = {"logprob": totals[0] if run.batch == 1 else totals, "seconds": run.n_done / run.sample_rate,
                   "wall_seconds": run.elapsed(), "variations": run.batch, "samples": run.n_done,
                   "bits_per_sample": [(-t / work.LN2 / run.n_done) if run.n_done else None for t in totals]}
        if run.speech:
            summary.update(mode=run.mode, prior_logprob=run.prior_logprob if run.n_prior_frames else None,
                           frames=len(run.frames))
        self.ctx.record_run_finished(run.history_id, files=files, summary=summary,
                                     status={"error": "failed"}.get(status, status))
        run.history_id = None  # recorded once

    @staticmethod
    def _run_audio(run: Run, v: int) -> np.ndarray:
        """Variation v as `chainrule generate --from` writes it: a WaveNet's new samples; a speech
        continuation with its recording in front."""
        if run.speech and run.mode == "continuation" and run.prompt is not None:
            return run.sound(v)
        return run.generated(v)

    def _hop_seconds(self) -> float:
        info = self._infos.get(self._model_id) if self._model_id else None
        mel = (info.card.get("mel") if info is not None else None) or {}
        hop = mel.get("hop", 80) if isinstance(mel, dict) else 80
        return float(hop) / self.sample_rate if isinstance(hop, (int, float)) and hop > 0 else 0.01

    def _on_speech_event(self, run: Run, ev) -> None:
        if isinstance(ev, speech_work.FramesStarted):
            run.frames = [f for f in ev.frames.T]
            run.prompt_frames = ev.frames.shape[1]
            self._new_frames = []
            self.mel_view.start(ev.frames, ev.floor, self._hop_seconds())
        elif isinstance(ev, speech_work.FrameWritten):
            run.frames.append(ev.frame)
            run.prior_logprob += ev.logprob
            run.n_prior_frames += 1
            self._new_frames.append(ev.frame)
        elif isinstance(ev, speech_work.Heard):
            run.heard[ev.variation] = ev
            self._show_heard()

    def _on_events(self, run: Run, batch: list) -> None:
        if run is not self.run:
            return
        fed = []
        for ev in batch:
            if isinstance(ev, (speech_work.FramesStarted, speech_work.FrameWritten, speech_work.Heard)):
                self._on_speech_event(run, ev)
            elif isinstance(ev, work.RunFinished):
                run.finished = ev.finished
            elif isinstance(ev, work.Chunk):
                run.add(ev)
                if run.streamed is not None:
                    fed.append(ev.samples[run.streamed])
            elif isinstance(ev, work.RunStarted):
                run.t0 = ev.t
                if ev.n_samples != run.n_samples:  # the engine's count wins
                    run.n_samples = ev.n_samples
                    if self._live(run):
                        self.player.set_stream_length(run.prompt_len + ev.n_samples)
                    run.samples = np.zeros((run.batch, ev.n_samples), np.float32)
                    run.logprobs = np.full((run.batch, ev.n_samples), np.nan)
        if fed and self._live(run):
            self.player.feed(np.concatenate(fed))
        self._live_redraw.push(run)  # the plots and status follow (_redraw_live), at most every LIVE_REDRAW_MS

    def _redraw_live(self, runs: list) -> None:
        run = runs[-1]
        if run is not self.run:
            return
        if self._new_frames:  # the frames the prior wrote since the last redraw
            self.mel_view.add(self._new_frames)
            self._new_frames = []
        if self.shown_run() is run:
            self._show(live=True)
        self._update_status()

    def _on_end(self, run: Run, state: str) -> None:
        if run is not self.run:
            return
        self._live_redraw.clear()  # the end redraws everything
        if self._new_frames:
            self.mel_view.add(self._new_frames)
            self._new_frames = []
        run.state = state
        run.t_end = time.perf_counter()
        self._record_run_end(run, state)
        if self._live(run):
            if state == "stopped":
                self.stop_playback()
            else:
                self.player.end_stream()  # play out what was made
        self._show()
        self.plots.flush()
        self._update_buttons()
        self._update_status()

    def _on_error(self, run: Run, message: str) -> None:
        if run is not self.run:
            return
        self._on_end(run, "error")
        self._say_error(message + ("" if not run.n_done else " (what was generated is kept)"))

    # --- what is shown -------------------------------------------------------------------------------
    def _show(self, live: bool = False) -> None:
        what = self.shown()
        run, rec = self.shown_run(), self.recording
        if what is None or (what[0] == "run" and run is None) or (what[0] == "recording" and rec is None):
            self.plots.clear("Generate, or load a recording")
            self.totals.setText("")
            return
        if what[0] == "run":
            v = what[1]
            total = run.prompt_len + run.n_samples
            # views of the run's buffers, with the key that tells the plots it is the same sound grown:
            # a redraw costs the same at the end of a long run as at its start
            self.plots.set_sound(run.sound_view(v), prompt_len=run.prompt_len, total_len=total,
                                 surprise=run.surprise_view(v), key=run.surprise_key(v))
            if not run.n_done:
                self.plots.set_message("generating…" if run.state == "running" else "nothing was generated")
            self._show_run_totals(run, v)
        else:
            score = rec.score if rec.score is not None and self._score_current(rec.score) else None
            self.plots.set_sound(rec.samples, surprise=None if rec.score is None else rec.score.surprise_bits)
            self._show_recording_totals(rec, score)
        self._show_heard()
        if not live:
            self.plots.flush()

    def _show_run_totals(self, run: Run, v: int) -> None:
        if run.speech:
            self._show_speech_totals(run)
            return
        if not run.n_done:
            self.totals.setText("")
            return
        lp = run.total_logprob(v)
        n = run.n_done
        cond = conditioning_text(run.digit, run.speaker)
        prompt = f" after the {run.prompt_len / run.sample_rate:.2f} s recording" if run.prompt is not None else ""
        self.totals.setStyleSheet("")
        self.totals.setText(
            f"<b>{-lp / work.LN2 / n:.3f} bits/sample</b> · log p = {lp:.1f} nats over {n:,} generated samples "
            f"({n / run.sample_rate:.2f} s){prompt} · {cond} · measured at temperature 1")

    def _show_speech_totals(self, run: Run) -> None:
        parts = []
        if run.n_prior_frames:
            parts.append(f"log p(frames | {conditioning_text(run.digit, run.speaker)}) = {run.prior_logprob:.1f} nats "
                         f"over {run.n_prior_frames} frames ({run.prior_logprob / run.n_prior_frames:.2f}/frame)")
        elif run.mode == "resynthesis":
            parts.append(f"re-speaking {html.escape(run.source_name or 'the recording')} from its own "
                         f"{len(run.frames)} frames, speaker {html.escape(run.speaker or 'none')}")
        if run.n_done:
            lp, n = run.total_logprob(0), run.n_done
            parts.append(f"<b>log p(audio | frames) = {lp:.1f} nats</b> ({-lp / work.LN2 / n:.3f} bits/sample over "
                         f"{n:,} samples, {n / run.sample_rate:.2f} s)")
        parts.append("measured at temperature 1")
        self.totals.setStyleSheet("")
        self.totals.setText(" · ".join(parts))

    def _show_heard(self) -> None:
        """What the recogniser hears in the shown sound (blank when nothing was judged)."""
        what = self.shown()
        heard = None
        if what is not None and what[0] == "run":
            run = self.shown_run()
            heard = run.heard.get(what[1]) if run is not None else None
        elif what is not None and self.recording is not None:
            heard = self.recording.heard
        self.heard_label.setText("" if heard is None else f"heard as: <b>{html.escape(heard.text())}</b>")

    def _show_recording_totals(self, rec: Recording, score: work.ScoreDone | None) -> None:
        notes = ""
        if rec.loaded.notes:
            notes = " · <span style='color:#92400e'>" + html.escape("; ".join(rec.loaded.notes)) + "</span>"
        head = f"{html.escape(rec.name)}: {rec.loaded.duration_s:.2f} s at {rec.sample_rate} Hz{notes}"
        self.totals.setStyleSheet("")
        if rec.score is None:
            self.totals.setText(head + " · <i>scoring…</i>" if self.has_model() else head)
            return
        s = rec.score
        stale = "" if score is not None else " · <i>updating…</i>"
        prior = getattr(s, "prior_logprob", None)
        if prior is not None and s.n_frames:
            self.totals.setText(
                f"<b>{s.bits_per_sample:.3f} bits/sample</b> given its frames · log p(audio | frames) = "
                f"{s.total_logprob:.1f} nats · log p(frames | {conditioning_text(s.digit, s.speaker)}) = {prior:.1f} "
                f"nats ({prior / s.n_frames:.2f}/frame) · {head}{stale}")
            return
        self.totals.setText(
            f"<b>{s.bits_per_sample:.3f} bits/sample</b> · log p = {s.total_logprob:.1f} nats · "
            f"{conditioning_text(s.digit, s.speaker)} · {head}{stale}")

    def has_model(self) -> bool:
        return self._model_id in self._infos

    # --- recordings -----------------------------------------------------------------------------------
    def load_recording(self, path: str | None = None) -> bool:
        if self.runner.is_busy():
            self._say_error("Wait for the run to finish (or stop it) before loading a recording.")
            return False
        path = open_path(self, path, "Load a recording", AUDIO_FILES)
        if path is None:
            return False
        loaded = self._read_file(path, lambda: work.read_recording(path, self.sample_rate))
        if loaded is None:  # what was there stays
            return False
        self.recording = Recording(str(path), loaded)
        self._fill_show_combo(select=("recording", 0))
        self._show()
        self._invalidate_score()
        self._update_buttons()
        name = html.escape(Path(path).name)
        conv = ""
        if loaded.notes:
            conv = " <span style='color:#92400e'>Converted: " + html.escape("; ".join(loaded.notes)) + ".</span>"
        self._say(f"Loaded {name} ({loaded.duration_s:.2f} s).{conv} Tick “Continue this recording” to let the "
                  "model go on from its end.")
        self.ctx.show_message(f"Loaded {Path(path).name}")
        return True

    def _forget_recording(self, why: str) -> None:
        self.recording = None
        self.continue_check.setChecked(False)
        self._fill_show_combo()
        self._show()
        self._say(f"The loaded recording was put aside: {html.escape(why)}. Load it again to use it.")

    # --- scoring -------------------------------------------------------------------------------------
    def _score_key(self) -> tuple | None:
        rec = self.recording
        if rec is None or self._model_id is None:
            return None
        return (rec.id, self._model_id, self.digit(), self.speaker())

    @staticmethod
    def _score_matches(score: work.ScoreDone, model_id: str, digit, speaker) -> bool:
        return score.model_id == model_id and score.digit == digit and score.speaker == speaker

    def _score_current(self, score: work.ScoreDone) -> bool:
        return score.key == self._score_key()

    def _invalidate_score(self) -> None:
        if self._closed or self.recording is None or not self.has_model():
            return
        if self.recording.score is not None and self._score_current(self.recording.score):
            return
        self._watch_window()
        self._score_timer.start()
        if self.shown() == ("recording", 0):
            self._show()

    def _start_score(self) -> None:
        if self._closed:
            return
        rec = self.recording
        info = self._infos.get(self._model_id) if self._model_id else None
        key = self._score_key()
        if rec is None or info is None or key is None:
            return
        samples, digit, speaker = rec.samples, self.digit(), self.speaker()
        events = speech_work.speech_score_events if self._speech else speech_work.judged_score_events
        judge = self._judge_info
        self.score_runner.start(lambda: events(info, samples, digit, speaker, key, judge_info=judge),
                                on_events=self._on_score, on_errored=self._score_failed)

    def _on_score(self, batch: list) -> None:
        rec = self.recording
        for ev in batch:
            if isinstance(ev, speech_work.Heard) and rec is not None and ev.key is not None and ev.key[0] == rec.id:
                rec.heard = ev
                self._show_heard()
                continue
            if not isinstance(ev, work.ScoreDone) or rec is None or ev.key is None or ev.key[0] != rec.id:
                continue  # an answer about a recording that is gone
            rec.score = ev
            for run in self._runs.values():
                if (run.recording_id == rec.id and run.prompt_surprise is None
                        and self._score_matches(ev, run.model_id, run.digit, run.speaker)):
                    run.prompt_surprise = ev.surprise_bits  # the continued recording's own surprise, in front
                    if self.shown_run() is run:
                        self._show(live=run.state == "running")
            if self.shown() == ("recording", 0):
                self._show()
            if not self._score_current(ev):
                self._invalidate_score()
            self._update_status()

    def _score_failed(self, message: str) -> None:
        self.totals.setStyleSheet("color:#c62828;")
        self.totals.setText(html.escape(f"Scoring failed: {message}"))

    # --- status ------------------------------------------------------------------------------------------
    def _update_status(self) -> None:
        run = self.shown_run() or self.run
        lines = []
        if not self.has_model():
            self.status.setText("")
            return
        rec = self.recording
        if self.shown() == ("recording", 0) and rec is not None:
            lines.append(f"Showing {html.escape(rec.name)}: the surprise of each sample under the chosen digit and "
                         "speaker (change them to rescore). Tick “Continue this recording” and Generate to let the "
                         "model go on from its end.")
        elif run is None:
            lines.append("Choose a digit and a speaker, then Generate (or load a recording to hear how surprising "
                         "the model finds it).")
        if run is not None and self.shown() != ("recording", 0):
            parts = [f"<b>seed {run.seed}</b>", conditioning_text(run.digit, run.speaker),
                     f"temperature {run.temperature:g}"]
            if run.batch > 1:
                parts.append(f"{run.batch} variations")
            if run.prompt is not None:
                parts.append(f"continuing {html.escape(run.prompt_name or 'the recording')}")
            done_s, want_s = run.seconds_done(), run.n_samples / run.sample_rate
            elapsed = run.elapsed()
            rate = run.n_done / elapsed if elapsed > 0.05 and run.n_done else 0.0
            speed = f" · {rate:,.0f} samples/s ({rate / run.sample_rate:.2f}× real time)" if rate else ""
            state = {"running": f"generating… {done_s:.2f} / {want_s:.2f} s",
                     "done": f"done: {done_s:.2f} s in {elapsed:.2f} s",
                     "stopped": f"stopped at {done_s:.2f} of {want_s:.2f} s (what was generated is kept)",
                     "error": f"failed at {done_s:.2f} s"}[run.state]
            lines.append(" · ".join(parts) + " · " + state + speed)
            buffering = self._buffering_text(run)
            if buffering:
                lines.append(buffering)
            if run.streamed is not None:
                lines.append(f"played while generating: {run.underruns} underrun{'s' if run.underruns != 1 else ''}"
                             + (" (the model was slower than real time; the player waited for it)"
                                if run.underruns else ""))
            if run.cli and run.state != "running":
                lines.append(f"<span style='color:#6b7280'>CLI: <code>{html.escape(run.cli)}</code></span>")
        if not self._play_available:
            lines.append(f"<span style='color:#92400e'>Playback is off: {html.escape(self._play_reason)}. "
                         "Generation, plots and export still work.</span>")
        self._say("<br>".join(lines))

    # --- buttons ---------------------------------------------------------------------------------------
    def _update_buttons(self) -> None:
        has_model = self.has_model()
        busy = self.runner.is_busy()
        has_sound = self.shown_length() > 0
        self.generate_button.setEnabled(has_model and not busy)
        self.stop_button.setEnabled(busy)
        for w in (self.digit_combo, self.temperature_spin, self.seed_spin, self.dice, self.new_seed_check,
                  self.load_button):
            w.setEnabled(has_model and not busy)
        # a speech model's prior decides the length, and it speaks one utterance per run
        for w in (self.seconds_spin, self.batch_spin):
            w.setEnabled(has_model and not busy and not self._speech)
            w.setToolTip(w.toolTip().split("\n")[0] + ("\n(a speech model's prior decides the length, one "
                                                       "utterance per run)" if self._speech else ""))
        self.frame_temp_spin.setEnabled(has_model and not busy and self._speech)
        self.respeak_button.setEnabled(has_model and not busy and self._speech and self.recording is not None)
        self.speaker_combo.setEnabled(has_model and not busy and self.speaker_combo.count() > 1)
        self.model_combo.setEnabled(not busy)
        self.continue_check.setEnabled(not busy and self.recording is not None)
        play = self._play_available
        playing = play and self.player is not None and self.player.is_playing
        self.play_button.setEnabled(play and has_sound)
        self.stop_play_button.setEnabled(playing)
        self.loop_check.setEnabled(play)
        self.live_check.setEnabled(play)
        for w in (self.export_wav_button, self.export_flac_button):
            w.setEnabled(has_sound and not busy)
        what = self.shown()
        run = self.shown_run()
        self.with_prompt_check.setVisible(what is not None and what[0] == "run" and run is not None
                                          and run.prompt is not None and not run.speech)

    # --- lifetime --------------------------------------------------------------------------------------
    def _window_closed(self) -> None:
        self.stop_playback()


@register_tab("Audio", order=30)
def make_audio_tab(ctx: StudioContext) -> QWidget:
    return AudioTab(ctx)
