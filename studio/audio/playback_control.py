"""The Audio tab's playback: the player, the cursor that follows it, play while generating.

Play / stop / loop through `engines.audio.playback.Player` (`self.player`). With "play
while generating" the player is fed each chunk of the chosen variation as it arrives
(`_start_live_playback`, `_live`); it is told the run's length and measures how fast the
model generates, so it waits just long enough (the pre-roll) for a slower-than-real-time
model to play through without a gap, and while it waits the status says how fast the model
runs and when the sound starts (`_buffering_text`). A cursor timer moves the plots' cursor
with the sound and counts underruns. Without PortAudio or an output device the player
says why (`availability`): the controls are disabled and the reason shown.

A mixin for the Audio tab, which provides run, recording, sample_rate, plots, shown(),
shown_run(), shown_sound(), _say_error, _update_status and _update_buttons.
"""

from __future__ import annotations

from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import QSizePolicy

from studio.audio.runs import Run
from studio.widgets import check_box, hint_label, push_button

CURSOR_MS = 30  # the playback cursor moves ~33 times a second


class AudioPlaybackMixin:
    def _init_playback(self) -> None:
        """Nothing playing yet, and the cursor's timer (the player itself comes with set_player)."""
        self._play_available = False
        self._play_reason = ""
        self._playing_what: tuple | None = None  # what the player holds: ("run", run, v) / ("recording", rec)
        self._was_buffering = False  # the player was waiting for its pre-roll at the last cursor tick
        self._cursor_timer = QTimer(self)
        self._cursor_timer.setInterval(CURSOR_MS)
        self._cursor_timer.timeout.connect(self._tick_cursor)

    def _build_playback_controls(self) -> None:
        """Play, stop playing, Loop, Play while generating and the playback note (self.playback_label),
        which the caller lays out."""
        self.play_button = push_button("▶ Play", "Play the shown sound", self.play)
        self.stop_play_button = push_button("■", "Stop playing", self.stop_playback)
        self.stop_play_button.setFixedWidth(36)
        self.loop_check = check_box("Loop", "Start over at the end")
        self.loop_check.toggled.connect(self._loop_toggled)
        self.live_check = check_box("Play while generating", "Hear the sound as the model makes it (after a "
                                    "quarter-second pre-roll; variation 1 when there are several)", checked=True)
        self.playback_label = hint_label()
        # A long reason must not widen the window: it is cut to the room there is (tooltip: all of it).
        self.playback_label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.playback_label.setMinimumWidth(60)
        self.playback_label.setAlignment(Qt.AlignmentFlag.AlignCenter)

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

    def _live(self, run: Run) -> bool:
        """The player is being fed by `run` (play while generating)."""
        w = self._playing_what
        return w is not None and w[0] == "live" and w[1] is run and self.player is not None

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
