"""What a tab whose model work runs on workers shares: its runs, its rescoring, its end.

RunnerMixin
    A tab's runs on `self.runner` (a TaskRunner, studio/worker.py): start one with its
    events, end, stop and error wired to the tab's `_on_events(run, batch)`,
    `_on_end(run, state)` and `_on_error(run, message)`; Stop (the runner first, so not one
    more event arrives, then `self._cancel`, which ends the generator's loop); is_running.

RescoringMixin
    A tab that scores what it shows on `self.score_runner` a moment after each change (a
    single-shot `self._score_timer` calling the tab's `_start_score`; a tab may defer it while
    hidden by setting `self._score_deferred`, and its `_schedule_score` runs once it is shown),
    and never once the window has closed: the close stops the timer and sets `self._cancel`, then calls the
    tab's `_window_closed` (for anything else to stop). Listed before QWidget, so its
    eventFilter and showEvent are the ones Qt calls.

Both expect `self._cancel` (a threading.Event, replaced for each run); RescoringMixin also
`self.ctx` (StudioContext), whose parent is the main window.
"""

from __future__ import annotations

from typing import Any, Callable

from PySide6.QtCore import QEvent, QObject, QTimer
from PySide6.QtWidgets import QWidget


class RunnerMixin:
    def is_running(self) -> bool:
        return self.runner.is_busy()

    def stop(self) -> None:
        self.runner.stop()  # first: not one more event is delivered after this
        self._cancel.set()  # then wake the worker (from a pacing wait) and end its loop

    def _start_on_runner(self, gen_factory: Callable[[], Any], run: Any) -> None:
        """Start `gen_factory` on the runner; its events and its end go to the tab's handlers
        with `run` (the run's object, or its key), which tell a superseded run by it."""
        self.runner.start(
            gen_factory,
            on_events=lambda batch: self._on_events(run, batch),
            on_finished=lambda: self._on_end(run, "done"),
            on_stopped=lambda: self._on_end(run, "stopped"),
            on_errored=lambda message: self._on_error(run, message),
        )


class RescoringMixin:
    # --- construction ------------------------------------------------------------------------
    def _init_scoring_lifetime(self, delay_ms: int) -> None:
        """The rescoring timer, and the window's close (once it closes, no scoring may start)."""
        self._closed = False
        self._filtering = False
        self._score_deferred = False  # a scoring asked for while hidden: it starts when shown
        self._score_timer = QTimer(self)
        self._score_timer.setSingleShot(True)
        self._score_timer.setInterval(delay_ms)
        self._score_timer.timeout.connect(self._start_score)
        window = self.ctx.parent()  # the main window
        if isinstance(window, QWidget):
            window.installEventFilter(self)
            self._filtering = True

    # --- scoring -------------------------------------------------------------------------------
    def is_idle(self) -> bool:
        """No run, no scoring and no scoring waiting to start."""
        return not (self.runner.is_busy() or self.score_runner.is_busy() or self._score_timer.isActive())

    def rescore(self) -> None:
        """Score now (no waiting)."""
        self._score_timer.stop()
        self._start_score()

    # --- lifetime ------------------------------------------------------------------------------
    def _watch_window(self) -> None:
        """Stop for good once the window closes (a pending timer must not start work after)."""
        win = self.window()
        if win is not self and not self._filtering:
            win.installEventFilter(self)
            self._filtering = True

    def _window_closed(self) -> None:
        """What else to stop when the window closes (nothing, unless a tab says)."""

    def eventFilter(self, obj: QObject, event: QEvent) -> bool:  # noqa: N802
        if event.type() == QEvent.Type.Close:
            self._closed = True
            self._score_timer.stop()
            self._cancel.set()
            self._window_closed()
        return False

    def showEvent(self, event) -> None:  # noqa: N802
        self._closed = False
        super().showEvent(event)
        if self._score_deferred:  # set by a tab's `_schedule_score` while it was hidden
            self._score_deferred = False
            self._schedule_score()
