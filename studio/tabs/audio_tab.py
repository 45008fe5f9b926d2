"""The Audio tab: a WaveNet speaks a digit in a speaker's voice, you hear it as it is made,
and see where the model was surprised.

Layout: two bars of settings (model, digit, speaker, seconds, temperature, seed, variations;
then Generate / Stop, playback, the recording); the plots (waveform, surprise track under
it, spectrogram, one time axis, a cursor following playback); a line with the shown sound's
log-likelihood; the status line (run, seed, speed, the equivalent `chainrule` command).
Without an audio model the tab says how to get one.

Generation
    Generate runs `generate_audio_chunks` on a worker with the tab's seed; N variations are
    one batch, variation i is row i as the engine draws it, so `chainrule generate audio
    --seed s --count N` gives the same N sounds (the command is shown). The waveform,
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

Export: the shown sound as 16-bit WAV or FLAC, with a JSON of the settings that made it
(seed, conditioning, temperature, log-likelihood, command) beside it.
"""

from __future__ import annotations

import html
import logging
import random
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from PySide6.QtCore import QDir, QEvent, QObject, QSize, Qt, QTimer
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFrame,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSizePolicy,
    QSpinBox,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from engines.errors import ChainruleError, InputError
from studio.audio import work
from studio.audio.plots import AudioPlots
from studio.audio.spectrum import surprise_bits
from studio.context import StudioContext
from studio.decoding_panel import SeedSpinBox, dice_icon
from studio.model_picker import ModelPickerMixin
from studio.status_line import StatusLineMixin
from studio.tabs import register_tab

log = logging.getLogger(__name__)

CURSOR_MS = 30  # the playback cursor moves ~33 times a second
RESCORE_DELAY_MS = 150
MAX_RUNS = 12  # runs kept in the Show list (the last one and earlier ones, to compare)  # a recording is rescored this long after the last change of conditioning
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


class Run:
    """The current (or last) generation: its settings and every variation generated so far."""

    _ids = 0

    def __init__(self, model_id: str, seed: int, batch: int, seconds: float, temperature: float,
                 digit: int | None, speaker: str | None, sample_rate: int, prompt: np.ndarray | None,
                 prompt_name: str | None, prompt_path: str | None, prompt_notes: list[str],
                 prompt_surprise: np.ndarray | None, cli: str | None) -> None:
        Run._ids += 1
        self.id = Run._ids
        self.model_id, self.seed, self.batch, self.seconds = model_id, seed, batch, seconds
        self.temperature, self.digit, self.speaker = temperature, digit, speaker
        self.sample_rate = sample_rate
        self.prompt = prompt
        self.prompt_name, self.prompt_path, self.prompt_notes = prompt_name, prompt_path, prompt_notes
        self.prompt_surprise = prompt_surprise  # (len(prompt),) bits, or None (not scored alike)
        self.cli = cli
        self.n_samples = work.n_new_samples(seconds, sample_rate)
        self.samples = np.zeros((batch, self.n_samples), np.float32)
        self.logprobs = np.full((batch, self.n_samples), np.nan, np.float64)
        self.n_done = 0
        self.t0 = time.perf_counter()
        self.t_end: float | None = None
        self.state = "running"  # running | done | stopped | error
        self.recording_id: int | None = None  # the Recording continued (its score fills the prompt's surprise)
        self.streamed: int | None = None  # the variation played while generating
        self.underruns = 0

    @property
    def prompt_len(self) -> int:
        return 0 if self.prompt is None else len(self.prompt)

    def add(self, chunk: work.Chunk) -> None:
        n = chunk.samples.shape[1]
        end = min(chunk.start + n, self.n_samples)
        if end > self.samples.shape[1]:  # the engine made more than asked: keep it all
            grow = end - self.samples.shape[1]
            self.samples = np.pad(self.samples, ((0, 0), (0, grow)))
            self.logprobs = np.pad(self.logprobs, ((0, 0), (0, grow)), constant_values=np.nan)
        k = end - chunk.start
        self.samples[:, chunk.start:end] = chunk.samples[:, :k]
        self.logprobs[:, chunk.start:end] = chunk.logprobs[:, :k]
        self.n_done = max(self.n_done, end)

    def sound(self, v: int) -> np.ndarray:
        """Variation v as heard: the prompt, then what was generated so far."""
        gen = self.samples[v, : self.n_done]
        return gen.copy() if self.prompt is None else np.concatenate([self.prompt, gen])

    def generated(self, v: int) -> np.ndarray:
        return self.samples[v, : self.n_done].copy()

    def surprise(self, v: int) -> np.ndarray:
        bits = surprise_bits(self.logprobs[v, : self.n_done])
        if self.prompt is None:
            return bits
        before = self.prompt_surprise if self.prompt_surprise is not None else np.full(self.prompt_len, np.nan)
        return np.concatenate([before, bits])

    def total_logprob(self, v: int) -> float:
        return float(self.logprobs[v, : self.n_done].sum())

    def seconds_done(self) -> float:
        return self.n_done / self.sample_rate

    def elapsed(self) -> float:
        return (self.t_end or time.perf_counter()) - self.t0


class Recording:
    """A loaded recording, at the model's rate, and its score (when it has one)."""

    _ids = 0

    def __init__(self, path: str, loaded) -> None:  # noqa: D107
        Recording._ids += 1
        self.id = Recording._ids
        self.path = path
        self.name = Path(path).name
        self.loaded = loaded  # engines.audio.wav.LoadedAudio
        self.score: work.ScoreDone | None = None

    @property
    def samples(self) -> np.ndarray:
        return self.loaded.samples

    @property
    def sample_rate(self) -> int:
        return self.loaded.sample_rate


class AudioTab(StatusLineMixin, ModelPickerMixin, QWidget):
    MODEL_KIND = "audio"
    uses_decoding_panel = False  # temperature and seed are the tab's own (the step graph samples)

    def __init__(self, ctx: StudioContext, parent: QWidget | None = None, *, player=None) -> None:
        super().__init__(parent)
        self.ctx = ctx
        self.runner = ctx.task_runner("Audio", parent=self)
        self.score_runner = ctx.task_runner("Audio score", parent=self)
        self._infos: dict[str, Any] = {}  # model id -> ModelInfo (audio, usable)
        self._model_id: str | None = None
        self.sample_rate = work.DEFAULT_RATE
        self.run: Run | None = None  # the last run
        self._runs: dict[int, Run] = {}  # id -> run: the last MAX_RUNS, oldest first (the Show list)
        self.recording: Recording | None = None
        self._cancel = threading.Event()
        self._closed = False
        self._filtering = False
        self._play_available = False
        self._play_reason = ""
        self._playing_what: tuple | None = None  # what the player holds: ("run", run, v) / ("recording", rec)
        self._was_buffering = False  # the player was waiting for its pre-roll at the last cursor tick
        self._rescore_timer = QTimer(self)
        self._rescore_timer.setSingleShot(True)
        self._rescore_timer.setInterval(RESCORE_DELAY_MS)
        self._rescore_timer.timeout.connect(self._start_score)
        self._cursor_timer = QTimer(self)
        self._cursor_timer.setInterval(CURSOR_MS)
        self._cursor_timer.timeout.connect(self._tick_cursor)
        window = ctx.parent()  # the main window: once it closes, nothing may start
        if isinstance(window, QWidget):
            window.installEventFilter(self)
            self._filtering = True
        self._build()
        self.player = None
        self.set_player(player)
        ctx.modelDirsChanged.connect(self.refresh_models)
        self.runner.busyChanged.connect(lambda _b: self._update_buttons())
        self.refresh_models()

    # --- widgets -----------------------------------------------------------------------------
    def _build(self) -> None:
        self.model_combo = QComboBox()
        self.model_combo.setMinimumContentsLength(14)
        self.model_combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.model_combo.setToolTip("Audio models found in the models folders (see the Models tab)")
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
        self.new_seed_check = QCheckBox("new each run")
        self.new_seed_check.setChecked(True)
        self.new_seed_check.setToolTip("Ticked: Generate picks a fresh seed first (shown here, so any run can be "
                                       "repeated). Unticked: every Generate uses this seed.")
        self.batch_spin = QSpinBox()
        self.batch_spin.setRange(1, work.MAX_BATCH)
        self.batch_spin.setValue(1)
        self.batch_spin.setToolTip("Variations generated at once (one batch, same seed): pick one below to see, "
                                   "play and export")

        bar = QHBoxLayout()
        bar.addWidget(QLabel("Model:"))
        bar.addWidget(self.model_combo, 2)
        bar.addSpacing(8)
        bar.addWidget(QLabel("Digit:"))
        bar.addWidget(self.digit_combo)
        bar.addSpacing(8)
        bar.addWidget(QLabel("Speaker:"))
        bar.addWidget(self.speaker_combo, 1)
        bar.addSpacing(8)
        bar.addWidget(QLabel("Seconds:"))
        bar.addWidget(self.seconds_spin)
        bar.addSpacing(8)
        bar.addWidget(QLabel("Temperature:"))
        bar.addWidget(self.temperature_spin)
        bar.addStretch(1)
        bar2 = QHBoxLayout()
        bar2.addWidget(QLabel("Seed:"))
        bar2.addWidget(self.seed_spin)
        bar2.addWidget(self.dice)
        bar2.addWidget(self.new_seed_check)
        bar2.addSpacing(12)
        bar2.addWidget(QLabel("Variations:"))
        bar2.addWidget(self.batch_spin)
        bar2.addStretch(1)

        # Run, playback and recording controls
        self.generate_button = QPushButton("Generate")
        self.generate_button.setToolTip("Generate new audio with these settings")
        self.generate_button.clicked.connect(self.generate)
        self.stop_button = QPushButton("Stop")
        self.stop_button.setToolTip("Stop generating at once (and the sound playing with it); what was made is kept")
        self.stop_button.clicked.connect(self.stop)
        self.play_button = QPushButton("▶ Play")
        self.play_button.setToolTip("Play the shown sound")
        self.play_button.clicked.connect(self.play)
        self.stop_play_button = QPushButton("■")
        self.stop_play_button.setToolTip("Stop playing")
        self.stop_play_button.setFixedWidth(36)
        self.stop_play_button.clicked.connect(self.stop_playback)
        self.loop_check = QCheckBox("Loop")
        self.loop_check.setToolTip("Start over at the end")
        self.loop_check.toggled.connect(self._loop_toggled)
        self.live_check = QCheckBox("Play while generating")
        self.live_check.setChecked(True)
        self.live_check.setToolTip("Hear the sound as the model makes it (after a quarter-second pre-roll; "
                                   "variation 1 when there are several)")
        self.show_combo = QComboBox()
        self.show_combo.setMinimumContentsLength(18)
        self.show_combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.show_combo.setToolTip("Which sound to show, play and export: a variation of the last run, or the "
                                   "loaded recording")
        self.show_combo.currentIndexChanged.connect(lambda _i: self._shown_changed())
        self.load_button = QPushButton("Load audio…")
        self.load_button.setToolTip("A WAV, FLAC or OGG file of any rate, channels or bit depth (converted to the "
                                    "model's mono rate; you are told how): scored, or continued")
        self.load_button.clicked.connect(lambda: self.load_recording())
        self.continue_check = QCheckBox("Continue this recording")
        self.continue_check.setToolTip("Generate goes on from the end of the loaded recording (the model hears it "
                                       "first)")
        self.continue_check.toggled.connect(lambda _c: self._update_status())
        self.with_prompt_check = QCheckBox("with the recording")
        self.with_prompt_check.setToolTip("Export the recording and its continuation as one sound (unticked: the "
                                          "generated part only, as `chainrule generate audio --prompt` writes it)")
        self.export_wav_button = QPushButton("Export WAV…")
        self.export_wav_button.setToolTip("The shown sound as 16-bit WAV, with a .json of its settings")
        self.export_wav_button.clicked.connect(lambda: self.export_audio(fmt="wav"))
        self.export_flac_button = QPushButton("Export FLAC…")
        self.export_flac_button.setToolTip("The shown sound as 16-bit FLAC, with a .json of its settings")
        self.export_flac_button.clicked.connect(lambda: self.export_audio(fmt="flac"))

        controls = QHBoxLayout()
        controls.addWidget(self.generate_button)
        controls.addWidget(self.stop_button)
        controls.addWidget(self._separator())
        controls.addWidget(self.play_button)
        controls.addWidget(self.stop_play_button)
        controls.addWidget(self.loop_check)
        controls.addWidget(self.live_check)
        controls.addWidget(self._separator())
        controls.addWidget(QLabel("Show:"))
        controls.addWidget(self.show_combo, 1)
        controls2 = QHBoxLayout()
        controls2.addWidget(self.load_button)
        controls2.addWidget(self.continue_check)
        self.playback_label = QLabel("")
        self.playback_label.setObjectName("Hint")
        # A long reason must not widen the window: it is cut to the room there is (tooltip: all of it).
        self.playback_label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.playback_label.setMinimumWidth(60)
        self.playback_label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        controls2.addWidget(self.playback_label, 1)
        controls2.addWidget(self.with_prompt_check)
        controls2.addWidget(self.export_wav_button)
        controls2.addWidget(self.export_flac_button)

        self.plots = AudioPlots()
        self.plots.setMinimumHeight(260)
        self.totals = QLabel("")
        self.totals.setObjectName("AudioTotals")
        self.totals.setWordWrap(True)
        self.totals.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.status = QLabel()
        self.status.setObjectName("AudioStatus")
        self.status.setWordWrap(True)
        self.status.setTextFormat(Qt.TextFormat.RichText)
        self.status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)

        main = QWidget()
        mv = QVBoxLayout(main)
        mv.setContentsMargins(0, 0, 0, 0)
        mv.addLayout(bar)
        mv.addLayout(bar2)
        mv.addLayout(controls)
        mv.addLayout(controls2)
        mv.addWidget(self.plots, 1)
        mv.addWidget(self.totals)
        mv.addWidget(self.status)

        self._build_model_pages(main, EMPTY_TEXT, "AudioEmptyState")

    @staticmethod
    def _separator() -> QFrame:
        line = QFrame()
        line.setFrameShape(QFrame.Shape.VLine)
        line.setFrameShadow(QFrame.Shadow.Sunken)
        return line

    # --- the player ----------------------------------------------------------------------------
    def set_player(self, player=None) -> None:
        """Use `player` (an `engines.audio.playback.Player`; None: one on the default device)
        and ask it whether sound can be played; the playback controls follow the answer."""
        from engines.audio.playback import Player

        if self.player is not None:
            self.player.stop()
        self._cursor_timer.stop()
        self._playing_what = None
        self.player = player if player is not None else Player(self.sample_rate)
        try:
            ok, reason = self.player.availability()
        except Exception as exc:  # noqa: BLE001 - availability should never raise; be sure
            ok, reason = False, f"{type(exc).__name__}: {exc}"
        self._play_available, self._play_reason = bool(ok), str(reason)
        self._update_playback_label()
        self._update_buttons()
        self._update_status()

    def playback_available(self) -> bool:
        return self._play_available

    def _player_for_rate(self) -> None:
        """A model at another rate needs a player at that rate (tests' players are kept)."""
        if self.player is not None and self.player.sample_rate != self.sample_rate:
            from engines.audio.playback import Player

            factory = getattr(self.player, "_factory", None)
            self.set_player(Player(self.sample_rate, stream_factory=factory))

    def _update_playback_label(self) -> None:
        if not self._play_available:
            self.playback_label.setStyleSheet("color:#92400e;")
            self.playback_label.setText("Playback off")  # why: in the tooltip and the status line
            self.playback_label.setToolTip(self._play_reason)
            return
        self.playback_label.setStyleSheet("")
        p = self.player
        if p is not None and p.is_playing:
            eta = p.starts_in if p.is_buffering else None
            what = (f"playing {p.position / p.sample_rate:.2f} s" if not p.is_buffering
                    else "buffering…" if eta is None else f"buffering… ~{eta:.1f} s")
            self.playback_label.setText(what)
        else:
            self.playback_label.setText("")
        self.playback_label.setToolTip(self._play_reason)

    # --- models ----------------------------------------------------------------------------------
    def refresh_models(self) -> None:
        current = self.model_combo.currentData()
        try:
            models = [m for m in self.ctx.list_models() if m.kind == "audio" and m.usable]
        except ChainruleError as exc:
            models = []
            self._say_error(str(exc))
        except Exception as exc:  # noqa: BLE001 - a broken folder must not take the tab down
            log.exception("listing models failed")
            models = []
            self._say_error(f"Listing models failed: {type(exc).__name__}: {exc}")
        self._infos = {m.id: m for m in models}
        self.model_combo.blockSignals(True)
        self.model_combo.clear()
        for m in models:
            self.model_combo.addItem(m.id, m.id)
            speakers = work.card_speakers(m.card)
            tip = f"{m.card.get('name', m.id)} · {work.card_sample_rate(m.card)} Hz"
            if speakers:
                tip += " · speakers " + ", ".join(speakers)
            self.model_combo.setItemData(self.model_combo.count() - 1, f"{tip}\n{m.path}", Qt.ItemDataRole.ToolTipRole)
        index = self.model_combo.findData(current) if current else -1
        self.model_combo.setCurrentIndex(max(0, index))
        self.model_combo.blockSignals(False)
        self.pages.setCurrentIndex(1 if models else 0)
        self.empty_label.setMinimumHeight(self.empty_label.heightForWidth(self.empty_label.width()) + 24)
        self._model_changed()

    def model_ids(self) -> list[str]:
        return [self.model_combo.itemData(i) for i in range(self.model_combo.count())
                if self.model_combo.itemData(i) is not None]

    def _model_changed(self) -> None:
        model_id = self.model_combo.currentData()
        if model_id == self._model_id:
            self._update_buttons()
            return
        if self.runner.is_busy():
            self.stop()
        self._model_id = model_id
        info = self._infos.get(model_id) if model_id else None
        if info is not None:
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
    def is_running(self) -> bool:
        return self.runner.is_busy()

    def is_idle(self) -> bool:
        """No run, no scoring and no scoring waiting to start."""
        return not (self.runner.is_busy() or self.score_runner.is_busy() or self._rescore_timer.isActive())

    def stop(self) -> None:
        """Stop generating at once (and the sound fed by it); what was generated is kept."""
        self.runner.stop()  # first: not one more event is delivered after this
        self._cancel.set()
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
        prompt_surprise = None
        if rec is not None and rec.score is not None and self._score_matches(rec.score, info.id, digit, speaker):
            prompt_surprise = rec.score.surprise_bits
        out = f"{info.id}-seed{seed}.wav"
        cli = work.command_line(work.cli_arguments(
            info, seed=seed, seconds=seconds, temperature=temperature, digit=digit, speaker=speaker, batch=batch,
            prompt_path=rec.path if rec is not None else None, out=out))
        run = Run(info.id, seed, batch, seconds, temperature, digit, speaker, self.sample_rate, prompt,
                  rec.name if rec else None, rec.path if rec else None, list(rec.loaded.notes) if rec else [],
                  prompt_surprise, cli)
        run.recording_id = rec.id if rec is not None else None
        self.run = run
        self._runs[run.id] = run
        while len(self._runs) > MAX_RUNS:  # earlier runs are kept to compare, up to a point
            del self._runs[next(iter(self._runs))]
        self._cancel = cancel = threading.Event()
        self._fill_show_combo(select=("run", 0))
        self._show()
        if self.live_check.isChecked() and self._play_available:
            self._start_live_playback(run)
        self.runner.start(
            lambda: work.generate_events(info, seconds=seconds, temperature=temperature, seed=seed, digit=digit,
                                         speaker=speaker, batch=batch, prompt=prompt, cancel=cancel),
            on_events=lambda batch_: self._on_events(run, batch_),
            on_finished=lambda: self._on_end(run, "done"),
            on_stopped=lambda: self._on_end(run, "stopped"),
            on_errored=lambda message: self._on_error(run, message),
        )
        self._update_buttons()
        self._update_status()
        return run

    def _start_live_playback(self, run: Run) -> None:
        from engines.audio.playback import PlaybackError

        try:
            # The length sizes the pre-roll to the model's speed (see engines.audio.playback).
            self.player.start_stream(loop=self.loop_check.isChecked(), total_samples=run.prompt_len + run.n_samples)
        except PlaybackError as exc:  # the run goes on without sound
            self._say_error(f"{exc} (generating without sound)")
            return
        run.streamed = 0
        self._playing_what = ("live", run, 0)
        if run.prompt is not None:
            self.player.feed(run.prompt, generated=False)  # buffered, but not part of the generation rate
        self._cursor_timer.start()

    def _on_events(self, run: Run, batch: list) -> None:
        if run is not self.run:
            return
        fed = []
        for ev in batch:
            if isinstance(ev, work.Chunk):
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
        if self.shown_run() is run:
            self._show(live=True)
        self._update_status()

    def _live(self, run: Run) -> bool:
        """The player is being fed by `run` (play while generating)."""
        w = self._playing_what
        return w is not None and w[0] == "live" and w[1] is run and self.player is not None

    def _on_end(self, run: Run, state: str) -> None:
        if run is not self.run:
            return
        run.state = state
        run.t_end = time.perf_counter()
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
    def _fill_show_combo(self, select: tuple | None = None) -> None:
        """The Show list: the last run's variations, the recording, then earlier runs (newest first).

        Item data are "run:ID:V" / "recording:0:0" strings (Qt's findData does not compare
        Python tuples)."""
        current = self._show_key(select) if select is not None else self.show_combo.currentData()
        self.show_combo.blockSignals(True)
        self.show_combo.clear()
        runs = list(self._runs.values())[::-1]
        for k, run in enumerate(runs):
            if k == 1 and self.recording is not None:
                self._add_recording_item()
            for v in range(run.batch):
                label = f"variation {v + 1} of {run.batch}" if run.batch > 1 else "generated"
                if k:
                    label = f"earlier: {self._conditioning_text(run.digit, run.speaker, plain=True)} · {label}"
                self.show_combo.addItem(f"{label} · seed {run.seed}", f"run:{run.id}:{v}")
        if self.recording is not None and len(runs) <= 1:
            self._add_recording_item()
        i = self.show_combo.findData(current) if current is not None else -1
        self.show_combo.setCurrentIndex(max(0, i))
        self.show_combo.blockSignals(False)
        self.show_combo.setEnabled(self.show_combo.count() > 0)

    def _add_recording_item(self) -> None:
        self.show_combo.addItem(f"recording: {self.recording.name}", "recording:0:0")

    def _parse_show_key(self) -> tuple[str, int, int] | None:
        key = self.show_combo.currentData()
        if not key:
            return None
        kind, a, b = (str(key).split(":") + ["0", "0"])[:3]
        return kind, int(a), int(b)

    def shown(self) -> tuple | None:
        """("run", variation) or ("recording", 0), or None when there is nothing to show."""
        parsed = self._parse_show_key()
        if parsed is None:
            return None
        kind, _run_id, v = parsed
        return (kind, v if kind == "run" else 0)

    def shown_run(self) -> Run | None:
        """The run whose variation is shown (the last run, or an earlier one), else None."""
        parsed = self._parse_show_key()
        if parsed is None or parsed[0] != "run":
            return None
        return self._runs.get(parsed[1])

    def _show_key(self, what: tuple) -> str:
        """("run", v[, run]) -> its item data (the last run unless given); ("recording", 0) likewise."""
        if what[0] == "run":
            run = what[2] if len(what) > 2 else self.run
            return f"run:{run.id if run is not None else -1}:{what[1]}"
        return "recording:0:0"

    def show_variation(self, v: int, run: Run | None = None) -> bool:
        """Show variation `v` of `run` (default: the last run)."""
        i = self.show_combo.findData(self._show_key(("run", v, run or self.run)))
        if i >= 0:
            self.show_combo.setCurrentIndex(i)
        return i >= 0

    def show_recording(self) -> bool:
        i = self.show_combo.findData("recording:0:0")
        if i >= 0:
            self.show_combo.setCurrentIndex(i)
        return i >= 0

    def _shown_changed(self) -> None:
        self._show()
        self._update_buttons()
        self._update_status()

    def shown_sound(self) -> np.ndarray | None:
        what = self.shown()
        if what is None:
            return None
        run = self.shown_run()
        if what[0] == "run" and run is not None:
            return run.sound(what[1])
        if what[0] == "recording" and self.recording is not None:
            return self.recording.samples
        return None

    def shown_surprise(self) -> np.ndarray | None:
        what = self.shown()
        if what is None:
            return None
        run = self.shown_run()
        if what[0] == "run" and run is not None:
            return run.surprise(what[1])
        rec = self.recording
        if what[0] == "recording" and rec is not None and rec.score is not None:
            return rec.score.surprise_bits
        return None

    def shown_length(self) -> int:
        """Samples in the shown sound (cheap: nothing is copied)."""
        what = self.shown()
        if what is None:
            return 0
        run = self.shown_run()
        if what[0] == "run" and run is not None:
            return run.prompt_len + run.n_done
        if what[0] == "recording" and self.recording is not None:
            return len(self.recording.samples)
        return 0

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
            self.plots.set_sound(run.sound(v), prompt_len=run.prompt_len, total_len=total,
                                 surprise=run.surprise(v))
            if not run.n_done:
                self.plots.set_message("generating…" if run.state == "running" else "nothing was generated")
            self._show_run_totals(run, v)
        else:
            score = rec.score if rec.score is not None and self._score_current(rec.score) else None
            self.plots.set_sound(rec.samples, surprise=None if rec.score is None else rec.score.surprise_bits)
            self._show_recording_totals(rec, score)
        if not live:
            self.plots.flush()

    def _show_run_totals(self, run: Run, v: int) -> None:
        if not run.n_done:
            self.totals.setText("")
            return
        lp = run.total_logprob(v)
        n = run.n_done
        cond = self._conditioning_text(run.digit, run.speaker)
        prompt = f" after the {run.prompt_len / run.sample_rate:.2f} s recording" if run.prompt is not None else ""
        self.totals.setStyleSheet("")
        self.totals.setText(
            f"<b>{-lp / work.LN2 / n:.3f} bits/sample</b> · log p = {lp:.1f} nats over {n:,} generated samples "
            f"({n / run.sample_rate:.2f} s){prompt} · {cond} · measured at temperature 1")

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
        self.totals.setText(
            f"<b>{s.bits_per_sample:.3f} bits/sample</b> · log p = {s.total_logprob:.1f} nats · "
            f"{self._conditioning_text(s.digit, s.speaker)} · {head}{stale}")

    @staticmethod
    def _conditioning_text(digit: int | None, speaker: str | None, plain: bool = False) -> str:
        d = "any digit" if digit is None else f"digit {digit}"
        s = "any speaker" if speaker is None else f"speaker {speaker if plain else html.escape(speaker)}"
        return f"{d}, {s}"

    def has_model(self) -> bool:
        return self._model_id in self._infos

    # --- recordings -----------------------------------------------------------------------------------
    def load_recording(self, path: str | None = None) -> bool:
        if self.runner.is_busy():
            self._say_error("Wait for the run to finish (or stop it) before loading a recording.")
            return False
        if path is None:
            path, _ = QFileDialog.getOpenFileName(self, "Load a recording", QDir.homePath(), AUDIO_FILES)
            if not path:
                return False
        try:
            loaded = work.read_recording(path, self.sample_rate)
        except ChainruleError as exc:  # what was there stays
            self._say_error(str(exc))
            return False
        except Exception as exc:  # noqa: BLE001 - any unreadable file: a message, never a crash
            log.exception("loading %s failed", path)
            self._say_error(f"cannot read {path}: {type(exc).__name__}: {exc}")
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
        self._rescore_timer.start()
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
        self.score_runner.start(lambda: work.score_events(info, samples, digit, speaker, key),
                                on_events=self._on_score, on_errored=self._score_failed)

    def rescore(self) -> None:
        """Score the loaded recording now (no waiting)."""
        self._rescore_timer.stop()
        self._start_score()

    def _on_score(self, batch: list) -> None:
        rec = self.recording
        for ev in batch:
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

    # --- playback -------------------------------------------------------------------------------------
    def play(self) -> bool:
        """Play the shown sound from the start."""
        from engines.audio.playback import PlaybackError

        if not self._play_available:
            self._say_error(f"Cannot play: {self._play_reason}")
            return False
        what = self.shown()
        sound = self.shown_sound()
        if what is None or sound is None or not len(sound):
            self._say_error("Nothing to play yet: Generate, or load a recording.")
            return False
        try:
            self.player.play(sound, loop=self.loop_check.isChecked())
        except PlaybackError as exc:
            self._say_error(str(exc))
            return False
        self._playing_what = ("run", self.shown_run(), what[1]) if what[0] == "run" else ("recording", self.recording)
        self._cursor_timer.start()
        self._tick_cursor()
        self._update_buttons()
        return True

    def stop_playback(self) -> None:
        if self.player is not None:
            self.player.stop()
        self._playing_what = None
        self._was_buffering = False
        self._cursor_timer.stop()
        self.plots.set_cursor(None)
        self._update_playback_label()
        self._update_buttons()

    def _loop_toggled(self, on: bool) -> None:
        if self.player is not None:
            self.player.loop = on

    def _tick_cursor(self) -> None:
        p = self.player
        if p is None:
            return
        run = self.run
        if run is not None and self._live(run) and run.streamed is not None:
            run.underruns = p.underruns
        buffering = p.is_buffering
        if buffering != self._was_buffering:  # the status's "buffering" line comes or goes
            self._was_buffering = buffering
            self._update_status()
        if p.is_playing:
            if self._playing_matches_shown():
                self.plots.set_cursor(p.position / p.sample_rate)
            else:
                self.plots.set_cursor(None)
        else:
            self._cursor_timer.stop()
            self.plots.set_cursor(None)
            self._update_status()
        self._update_playback_label()
        self._update_buttons()

    def _playing_matches_shown(self) -> bool:
        w, what = self._playing_what, self.shown()
        if w is None or what is None:
            return False
        if w[0] in ("run", "live"):
            return what == ("run", w[2]) and w[1] is self.shown_run()
        return what == ("recording", 0) and w[1] is self.recording

    def cursor_seconds(self) -> float | None:
        return self.plots.cursor_seconds()

    # --- export ----------------------------------------------------------------------------------------
    def export_audio(self, path: str | None = None, fmt: str | None = None) -> bool:
        """The shown sound as 16-bit WAV or FLAC (by `fmt`, else the suffix), with its settings as JSON."""
        what = self.shown()
        sound = self.export_sound()
        if sound is None or what is None or not len(sound):
            self._say_error("Nothing to export: Generate, or load a recording.")
            return False
        if self.runner.is_busy():
            self._say_error("Wait for the run to finish (or stop it) before exporting.")
            return False
        fmt = (fmt or (Path(path).suffix.lstrip(".").lower() if path else "wav")) or "wav"
        if fmt not in ("wav", "flac"):
            self._say_error(f"Export failed: audio is exported as WAV or FLAC, not {fmt!r}")
            return False
        if path is None:
            start = str(Path(QDir.homePath()) / f"{self._export_stem()}.{fmt}")
            label = "WAV (*.wav)" if fmt == "wav" else "FLAC (*.flac)"
            path, _ = QFileDialog.getSaveFileName(self, f"Export the sound as {fmt.upper()}", start,
                                                  f"{label};;All files (*)")
            if not path:
                return False
        if Path(path).suffix.lower() != f".{fmt}":
            path = f"{path}.{fmt}"
        settings = self.export_settings(Path(path).name)
        run = self.shown_run()
        rate = run.sample_rate if what[0] == "run" and run is not None else self.sample_rate

        def write() -> int:
            from engines.audio.wav import write_audio

            write_audio(path, sound, rate)
            work.write_settings(work.settings_path(path), settings)
            return len(sound)

        return self._write_export(path, write, lambda n: f"Exported {n / rate:.2f} s ({fmt.upper()}, 16-bit) "
                                                         f"and its settings (.json)")

    def export_sound(self) -> np.ndarray | None:
        """What Export writes: the shown sound; for a continuation, the generated part unless
        "with the recording" is ticked (the CLI writes the generated part)."""
        what = self.shown()
        run = self.shown_run()
        if what is not None and what[0] == "run" and run is not None and not self._export_with_prompt():
            return run.generated(what[1])
        return self.shown_sound()

    def _export_with_prompt(self) -> bool:
        run = self.shown_run()
        return run is not None and run.prompt is not None and self.with_prompt_check.isChecked()

    def export_settings(self, file_name: str = "") -> dict:
        """What made the shown sound, for the JSON beside an export."""
        what = self.shown()
        if what is None:
            return {}
        if what[0] == "run" and self.shown_run() is not None:
            run, v = self.shown_run(), what[1]
            n = run.n_done
            lp = run.total_logprob(v)
            return {
                "file": file_name,
                "kind": "generated",
                "model": run.model_id,
                "seed": run.seed,
                "variation": v + 1,
                "variations": run.batch,
                "seconds": run.seconds,
                "temperature": run.temperature,
                "digit": run.digit,
                "speaker": run.speaker,
                "prompt": None if run.prompt is None else {
                    "file": run.prompt_path, "samples": run.prompt_len,
                    "seconds": run.prompt_len / run.sample_rate, "notes": run.prompt_notes},
                "sample_rate": run.sample_rate,
                "includes_prompt": self._export_with_prompt(),
                "samples": (run.prompt_len if self._export_with_prompt() else 0) + n,
                "generated_samples": n,
                "complete": run.state == "done",
                "state": run.state,
                "total_logprob": lp,
                "bits_per_sample": (-lp / work.LN2 / n) if n else None,
                "command": run.cli,
            }
        rec = self.recording
        if rec is None:
            return {}
        s = rec.score
        return {
            "file": file_name,
            "kind": "recording",
            "source": rec.path,
            "notes": list(rec.loaded.notes),
            "original_rate": rec.loaded.original_rate,
            "original_channels": rec.loaded.original_channels,
            "sample_rate": rec.sample_rate,
            "samples": len(rec.samples),
            "score": None if s is None else {
                "model": s.model_id, "digit": s.digit, "speaker": s.speaker,
                "total_logprob": s.total_logprob, "bits_per_sample": s.bits_per_sample},
        }

    def _export_stem(self) -> str:
        what = self.shown()
        run = self.shown_run()
        if what is not None and what[0] == "run" and run is not None:
            return f"{run.model_id}-seed{run.seed}" + (f"-v{what[1] + 1}" if run.batch > 1 else "")
        if self.recording is not None:
            return f"{Path(self.recording.name).stem}-{self.sample_rate // 1000}k"
        return "audio"

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
            parts = [f"<b>seed {run.seed}</b>", self._conditioning_text(run.digit, run.speaker),
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

    def _buffering_text(self, run: Run) -> str | None:
        """While `run` feeds the player and it waits for its pre-roll: how fast the model runs and
        about when the sound starts (or resumes, after an underrun); else None."""
        p = self.player
        if run is not self.run or not self._live(run) or not p.is_buffering:
            return None
        rate = p.generation_rate
        if not rate:
            return "buffering: measuring how fast the model generates…"
        eta = p.starts_in
        when = "" if eta is None else f", playback {'resumes' if p.position else 'starts'} in ~{eta:.1f} s"
        return f"buffering: generation runs at {rate / p.sample_rate:.2f}× real time{when}"

    # --- buttons ---------------------------------------------------------------------------------------
    def _update_buttons(self) -> None:
        has_model = self.has_model()
        busy = self.runner.is_busy()
        has_sound = self.shown_length() > 0
        self.generate_button.setEnabled(has_model and not busy)
        self.stop_button.setEnabled(busy)
        for w in (self.digit_combo, self.seconds_spin, self.temperature_spin, self.seed_spin, self.dice,
                  self.new_seed_check, self.batch_spin, self.load_button):
            w.setEnabled(has_model and not busy)
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
                                          and run.prompt is not None)

    # --- lifetime --------------------------------------------------------------------------------------
    def _watch_window(self) -> None:
        """Stop for good once the window closes (a pending timer must not start work after)."""
        win = self.window()
        if win is not self and not self._filtering:
            win.installEventFilter(self)
            self._filtering = True

    def eventFilter(self, obj: QObject, event: QEvent) -> bool:  # noqa: N802
        if event.type() == QEvent.Type.Close:
            self._closed = True
            self._rescore_timer.stop()
            self._cancel.set()
            self.stop_playback()
        return False

    def showEvent(self, event) -> None:  # noqa: N802
        self._closed = False
        super().showEvent(event)


@register_tab("Audio", order=30)
def make_audio_tab(ctx: StudioContext) -> QWidget:
    return AudioTab(ctx)
