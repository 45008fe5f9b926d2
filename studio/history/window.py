"""What the main window does with the history and with exported files, kept out of main_window.py.

* The History tab's store (studio/tabs/history_tab.py) and re-opening a run in its own tab.
* Each tab's last state: saved at close (`history_state()`), restored when the history is
  attached at the next start (`restore_history_state(state)`); tabs lacking them are skipped.
* File > Open sample… and files dropped on the window: the request an exported PNG, WAV, FLAC
  or JSON carries (`engines.requests.read_request_file`) goes to the tab whose MODEL_KIND is the
  request's kind (`apply_request`). Every failure is one status line naming the reason.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping

from PySide6.QtCore import QCoreApplication, QDir, QEvent, QObject
from PySide6.QtWidgets import QFileDialog, QMainWindow, QWidget

from engines.errors import ChainruleError, InputError
from studio.history.panel import HistoryPanel
from studio.history.store import HistoryStore

log = logging.getLogger(__name__)

SAMPLE_FILTER = "Chainrule exports (*.png *.wav *.flac *.json *.txt);;All files (*)"


DECODING_STATE = "decoding"  # the saved state holding every tab's decoding config


def tab_key(widget: QWidget) -> str:
    """The key a tab's state is saved under: its MODEL_KIND, else its object name."""
    return getattr(widget, "MODEL_KIND", None) or widget.objectName()


class WindowHistory(QObject):
    """The History tab's store, tab states and opening exported files, for one main window."""

    def __init__(self, window: QMainWindow) -> None:
        super().__init__(window)
        self.window = window
        self.ctx = window.ctx
        self.store: HistoryStore | None = None
        self._panel: HistoryPanel | None = None
        window.setAcceptDrops(True)
        window.installEventFilter(self)  # drops anywhere that does not take them itself

    @property
    def panel(self) -> HistoryPanel:
        """The window's History tab (studio/tabs/history_tab.py); a window built without one (a test's
        own tabs) gets a panel of its own that is never shown."""
        if self._panel is None:
            found = [w for w in self._tabs() if isinstance(w, HistoryPanel)]
            self._panel = found[0] if found else HistoryPanel(self.ctx)
            self._panel.reopenRequested.connect(self.reopen_run)
        return self._panel

    def show_panel(self) -> None:
        """View > History: switch to the History tab."""
        if self.panel in self._tabs():
            self.window.tabs.setCurrentWidget(self.panel)

    # --- the store -------------------------------------------------------------------------
    def attach(self, store: HistoryStore | None, reason: str = "") -> None:
        """Record runs in `store` from now on and restore each tab's last state from it;
        None: run without history (`reason`, one line, is shown in the panel and status line)."""
        self.store = store
        self.ctx.history = store
        self.panel.set_store(store, reason)
        if store is None:
            if reason:
                self.ctx.show_error(reason)
            return
        self.restore_tab_states()
        if store.recovered:
            self.ctx.show_message(f"History: {len(store.recovered)} run(s) were cut off when the studio last "
                                  "closed unexpectedly; they are listed as failed (interrupted)", 10000)

    def close(self) -> None:
        """At window close (workers already stopped): let the tabs record how their runs ended,
        save every tab's state, then close the database."""
        if self.store is None:
            return
        # Runs stopped by the close report it through queued signals: deliver those now, so they are
        # recorded 'stopped' rather than found 'running' (interrupted) at the next start.
        QCoreApplication.sendPostedEvents(None, QEvent.Type.MetaCall.value)
        self.save_tab_states()
        store, self.store = self.store, None
        self.ctx.history = None
        self.panel.set_store(None, "History is closed.")
        store.close()

    # --- tab states --------------------------------------------------------------------------
    def _tabs(self) -> list[QWidget]:
        tabs = self.window.tabs
        return [tabs.widget(i) for i in range(tabs.count())]

    def save_tab_states(self) -> int:
        """Save `history_state()` of every tab that has one; how many were saved."""
        saved = 0
        for widget in self._tabs():
            get_state = getattr(widget, "history_state", None)
            if not callable(get_state):
                continue
            try:
                state = get_state()
                if isinstance(state, Mapping):
                    self.store.save_tab_state(tab_key(widget), state)
                    saved += 1
            except Exception:  # noqa: BLE001 - one tab's state must not stop the others or the close
                log.exception("history: saving the %s tab's state failed", tab_key(widget))
        self._save_decoding_configs()
        return saved

    def _save_decoding_configs(self) -> None:
        """Each tab's own decoding config (what the Decoding panel showed for it), as one saved state."""
        from studio.context import TAB_KEYS

        try:
            configs = {key: self.ctx.decoding_config(key).to_dict() for key in TAB_KEYS}
            self.store.save_tab_state(DECODING_STATE, {"configs": configs})
        except Exception:  # noqa: BLE001
            log.exception("history: saving the decoding configs failed")

    def _restore_decoding_configs(self) -> None:
        """After the tabs' states (a tab restoring its model adopts that card's defaults): each tab's
        config as the user left it. A saved config this version refuses is skipped, with a line."""
        from engines.decoding.config import DecodingConfig
        from studio.context import TAB_KEYS

        state = self.store.tab_state(DECODING_STATE)
        configs = state.get("configs") if isinstance(state, Mapping) else None
        if not isinstance(configs, Mapping):
            return
        for key, data in configs.items():
            if key not in TAB_KEYS or not isinstance(data, Mapping):
                continue
            try:
                self.ctx.set_decoding_config(DecodingConfig.from_dict(data), key)
            except Exception as exc:  # noqa: BLE001 - a stale setting must not stop the studio starting
                self.ctx.show_error(f"The {key} tab's saved decoding settings were not restored: {_one_line(exc)}")

    def restore_tab_states(self) -> int:
        """Give each tab with `restore_history_state` its saved state; how many were restored."""
        restored = 0
        for widget in self._tabs():
            restore = getattr(widget, "restore_history_state", None)
            if not callable(restore):
                continue
            try:
                state = self.store.tab_state(tab_key(widget))
                if state is None:
                    continue
                restore(state)
                restored += 1
            except Exception as exc:  # noqa: BLE001 - a stale state must not stop the studio starting
                log.exception("history: restoring the %s tab's state failed", tab_key(widget))
                self.ctx.show_error(f"The {tab_key(widget)} tab could not restore its last state: {_one_line(exc)}")
        try:
            self._restore_decoding_configs()
        except Exception:  # noqa: BLE001
            log.exception("history: restoring the decoding configs failed")
        return restored

    # --- requests into tabs --------------------------------------------------------------------
    def tab_for_kind(self, kind: str) -> QWidget | None:
        for widget in self._tabs():
            if getattr(widget, "MODEL_KIND", None) == kind:
                return widget
        return None

    def apply_request_json(self, data: Mapping[str, Any]) -> QWidget:
        """Validate a stored request, switch to its tab and restore the tab to it; the tab.
        ChainruleError (one line) when it cannot be."""
        from engines.requests import request_from_json

        try:
            request = request_from_json(data)
        except ImportError:
            kind = data.get("kind") if isinstance(data, Mapping) else None
            raise InputError(f"this build cannot read {kind} requests yet") from None
        tab = self.tab_for_kind(request.kind)
        if tab is None:
            raise InputError(f"this is a {request.kind} request and this window has no {request.kind} tab")
        if not callable(getattr(tab, "apply_request", None)):
            raise InputError(f"the {request.kind} tab cannot restore requests yet")
        self.window.tabs.setCurrentWidget(tab)
        tab.apply_request(request)
        return tab

    def open_sample(self, path: str | Path | None = None) -> bool:
        """Open an exported file (asked for when `path` is None): its tab restored to its request.
        False (with a status line saying why) when it cannot be."""
        from engines.requests import read_request_file

        if path is None:
            path, _ = QFileDialog.getOpenFileName(self.window, "Open sample", QDir.homePath(), SAMPLE_FILTER)
            if not path:
                return False
        name = Path(path).name
        try:
            tab = self.apply_request_json(read_request_file(path))
        except ChainruleError as exc:
            self.ctx.show_error(f"Cannot open {name}: {_one_line(exc)}")
            return False
        except Exception as exc:  # noqa: BLE001 - a hostile file must never take the studio down
            log.exception("opening %s failed", path)
            self.ctx.show_error(f"Cannot open {name}: {type(exc).__name__}: {_one_line(exc)}")
            return False
        self.ctx.show_message(f"Opened {name}: the {tab_key(tab)} tab is set to its request; run it to make it again")
        return True

    def reopen_run(self, run_id: int) -> bool:
        """Switch to a recorded run's tab and restore its request (and its outputs, where the tab
        has `show_history_outputs(paths)`)."""
        if self.store is None:
            return False
        data = self.store.request(run_id)
        if data is None:
            self.ctx.show_error(f"Run #{run_id} is no longer in the history")
            return False
        try:
            tab = self.apply_request_json(data)
            show = getattr(tab, "show_history_outputs", None)
            if callable(show):
                row = self.store.get_run(run_id)
                show(self.store.output_paths(run_id), request_json=data, summary=row.summary if row else None)
        except ChainruleError as exc:
            self.ctx.show_error(f"Cannot re-open run #{run_id}: {_one_line(exc)}")
            return False
        except Exception as exc:  # noqa: BLE001
            log.exception("re-opening run %s failed", run_id)
            self.ctx.show_error(f"Cannot re-open run #{run_id}: {type(exc).__name__}: {_one_line(exc)}")
            return False
        self.ctx.show_message(f"Re-opened run #{run_id} in the {tab_key(tab)} tab")
        return True

    # --- drag and drop ---------------------------------------------------------------------------
    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # noqa: N802 - Qt naming
        if watched is self.window and event.type() in (QEvent.Type.DragEnter, QEvent.Type.DragMove):
            if _dropped_files(event):
                event.acceptProposedAction()
                return True
        elif watched is self.window and event.type() == QEvent.Type.Drop:
            files = _dropped_files(event)
            if files:
                event.acceptProposedAction()
                self.open_sample(files[0])
                if len(files) > 1:
                    log.info("dropped %d files; opened only %s", len(files), files[0])
                return True
        return False


def _dropped_files(event) -> list[str]:
    mime = event.mimeData()
    if mime is None or not mime.hasUrls():
        return []
    return [u.toLocalFile() for u in mime.urls() if u.isLocalFile()]


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
