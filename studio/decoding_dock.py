"""What the Decoding dock holds: whose settings these are, "Reset to model defaults", the
DecodingPanel, and a warning when the settings would collapse the model's distributions.

Each tab owns its decoding config (`StudioContext.decoding_config(key)`); the dock shows and
edits the active tab's only. `show_tab(key, name, tab)` switches it to another tab's config
(the panel's edits then go to that key, never to the tab shown before).

The collapse warning is computed before any run: the tab's model's probe rows
(`engines.decoding.probes`, one forward pass, computed once per model on a worker and cached)
go through the config's sampler chain (`engines.decoding.collapse`) at every config change, a
numpy pass of a few milliseconds on the UI thread.
"""

from __future__ import annotations

import html
import logging
import time
from typing import Any

import numpy as np
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget

from engines.decoding.collapse import collapse_warning
from engines.decoding.config import DecodingConfig
from engines.decoding.support import supported_samplers
from studio.context import StudioContext
from studio.decoding_panel import DecodingPanel

log = logging.getLogger(__name__)

MAX_VERDICTS = 256  # collapse verdicts remembered (a few bytes each)

# How a collapse reads in each tab: what a position is, and what the samples then look like.
POSITIONS = {"text": "token positions", "image": "pixel positions", "density": "pixel positions"}
CONSEQUENCE = {"text": "the same likely words again and again", "image": "all-black digits",
               "density": "all-black digits"}


def _load_model(kind: str, info) -> Any:
    """The tab's own loaded model (its work module's cache, so a run later reuses it). Worker thread."""
    if kind == "text":
        from studio.text.work import load_model
    elif kind == "image":
        from studio.image.work import load_model
    elif kind == "density":
        from studio.density.work import load_model
    else:
        return None
    return load_model(info)


def probe_events(kind: str, info):
    """Worker: yields the model's probe rows (N, V) once (engines.decoding.probes)."""
    from engines.decoding.probes import probe_rows

    model = _load_model(kind, info)
    yield probe_rows(kind, model) if model is not None else None


def same_settings(a: DecodingConfig, b: DecodingConfig) -> bool:
    """Equal apart from the seed (Reset keeps the seed, so it never makes a config 'edited')."""
    return a.replace(seed=None) == b.replace(seed=None)


class DecodingDock(QWidget):
    """The dock's contents; `panel` is the DecodingPanel it edits the active tab's config with."""

    def __init__(self, ctx: StudioContext, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("DecodingSettings")
        self.ctx = ctx
        self._key: str | None = None  # the tab whose config is shown (None: none yet)
        self._tab_name = ""
        self._tab: QWidget | None = None
        self._info = None  # the tab's model (engines.registry.ModelInfo) or None
        self._probes: dict[tuple, np.ndarray | None] = {}  # (kind, id, folder) -> probe rows
        self._probing: dict[str, tuple] = {}  # tab key -> the model whose probe is being computed
        # (probe key, config without its seed) -> warning or None: a tab switch recomputes nothing
        self._verdicts: dict[tuple, str | None] = {}
        self.last_check_ms = 0.0  # how long the last collapse check took (the UI thread's cost)
        self.probes_started = 0  # model probes started (once per model: then cached)
        self._runners: dict = {}  # tab key -> its TaskRunner: a tab switch does not cancel a probe

        self.owner = QLabel("Settings")
        self.owner.setObjectName("DecodingOwner")
        self.owner.setWordWrap(True)
        self.owner.setTextFormat(Qt.TextFormat.RichText)
        self.reset_button = QPushButton("Reset to model defaults")
        self.reset_button.setObjectName("ResetDecoding")
        self.reset_button.setToolTip("Set this tab's decoding back to its model card's defaults (the seed stays)")
        self.reset_button.clicked.connect(self.reset_to_defaults)
        self.warning = QLabel()
        self.warning.setObjectName("CollapseWarning")
        self.warning.setWordWrap(True)
        self.warning.setStyleSheet("color: #b45309; font-weight: bold;")
        self.warning.hide()
        self.panel = DecodingPanel(ctx.decoding_config())
        self.panel.configChanged.connect(self._panel_changed)

        header = QWidget()
        hv = QVBoxLayout(header)
        hv.setContentsMargins(8, 8, 8, 0)
        hv.setSpacing(4)
        hv.addWidget(self.owner)
        row = QHBoxLayout()
        row.addWidget(self.reset_button)
        row.addStretch(1)
        hv.addLayout(row)
        hv.addWidget(self.warning)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(0)
        layout.addWidget(header)
        layout.addWidget(self.panel, 1)

        ctx.decodingConfigChanged.connect(self._config_changed)
        ctx.modelDefaultsChanged.connect(self._model_changed)

    # --- public API ------------------------------------------------------------------------
    def key(self) -> str | None:
        return self._key

    def show_tab(self, key: str, name: str, tab: QWidget | None = None) -> None:
        """Show and edit tab `key`'s config (tab `name`, the widget `tab` for its model)."""
        self._key, self._tab_name, self._tab = key, name, tab
        self.ctx.set_active_decoding_tab(key)
        self._info = self._model_of(tab)
        self._show_config(self.ctx.decoding_config(key))
        self._apply_supported()
        self._ensure_probe()
        self.refresh()

    def model_changed(self) -> None:
        """The shown tab's model may have changed (its combo moved): header, support, probes."""
        info = self._model_of(self._tab)
        if info is self._info:
            return
        self._info = info
        self._apply_supported()
        self._ensure_probe()
        self.refresh()

    def reset_to_defaults(self) -> None:
        if self._key is not None:
            self.ctx.reset_to_model_defaults(self._key)

    def is_edited(self) -> bool:
        if self._key is None:
            return False
        return not same_settings(self.ctx.decoding_config(self._key), self.ctx.model_defaults(self._key))

    def owner_text(self) -> str:
        return self.owner.text()

    def warning_text(self) -> str:
        """The collapse warning shown ('' when none)."""
        return self.warning.text() if not self.warning.isHidden() else ""

    def probe_ready(self) -> bool:
        """The shown tab's model has its probe rows (or has none to compute)."""
        key = self._probe_key()
        return key is None or key in self._probes

    def refresh(self) -> None:
        """Header, Reset button and collapse warning for the shown tab's current config."""
        if self._key is None:
            return
        model = self._info.id if self._info is not None else None
        state = "edited" if self.is_edited() else "card defaults"
        text = f"Settings of the <b>{html.escape(self._tab_name)}</b> tab"
        text += f" · {html.escape(model)} ({state})" if model else " (no model chosen)"
        self.owner.setText(text)
        self.reset_button.setEnabled(model is not None and self.is_edited())
        self._update_warning()

    # --- reactions -----------------------------------------------------------------------------
    def _panel_changed(self, config: DecodingConfig) -> None:
        if self._key is not None:
            self.ctx.set_decoding_config(config, self._key)  # this tab's, never another's

    def _config_changed(self, key: str, config: DecodingConfig) -> None:
        if key != self._key:
            return
        if config != self.panel.config():  # set by the tab (a restored request) or by Reset
            self._show_config(config)
        self.refresh()

    def _model_changed(self, key: str) -> None:
        if key == self._key:
            self._info = None  # always re-read: the same model may have been chosen again
            self.model_changed()

    def _show_config(self, config: DecodingConfig) -> None:
        """The panel shows `config`; what the panel echoes back goes to the same tab (no change)."""
        self.panel.set_config(config)

    @staticmethod
    def _model_of(tab: QWidget | None):
        getter = getattr(tab, "current_model_info", None)
        try:
            return getter() if callable(getter) else None
        except Exception:  # noqa: BLE001 - a tab without a model picker: no model
            return None

    # --- what the model supports (engines.decoding.support) -------------------------------------
    def _apply_supported(self) -> None:
        """Grey out the samplers the shown tab's model cannot use, the reason on hover."""
        if self._key is None:
            return
        card = self._info.card if self._info is not None else None
        try:
            self.panel.set_supported(supported_samplers(self._key, card))
        except Exception:  # noqa: BLE001 - greying is help, it must never stop the panel
            log.exception("supported samplers of %s", self._key)

    # --- the collapse warning ------------------------------------------------------------------
    def _probe_key(self) -> tuple | None:
        if self._info is None or self._key not in POSITIONS:
            return None
        return (self._key, self._info.id, str(self._info.path))

    def showEvent(self, event) -> None:  # noqa: N802 - Qt naming
        super().showEvent(event)
        self._ensure_probe()  # put off while hidden (the dock closed, a window never shown)

    def _ensure_probe(self) -> None:
        """Start computing the shown model's probe rows on a worker unless known, under way, or
        nobody sees the dock (then when it is shown)."""
        key = self._probe_key()
        if key is None or key in self._probes or key in self._probing.values() or not self.isVisible():
            return
        kind, info = self._key, self._info
        self._probing[kind] = key  # a probe of this tab's previous model is superseded
        self.probes_started += 1
        if kind not in self._runners:
            self._runners[kind] = self.ctx.task_runner(f"Decoding probes ({kind})", self)
        self._runners[kind].start(
            lambda: probe_events(kind, info),
            on_events=lambda batch: self._probe_done(key, batch[-1] if batch else None),
            on_errored=lambda message: self._probe_failed(key, message),
        )

    def _probe_done(self, key: tuple, rows) -> None:
        self._probes[key] = rows
        if self._probing.get(key[0]) == key:
            del self._probing[key[0]]
        self._update_warning()

    def _probe_failed(self, key: tuple, message: str) -> None:
        # No probe, no warning: the run itself will say what is wrong with the model.
        log.warning("probing %s failed: %s", key[1], message)
        self._probe_done(key, None)

    def _update_warning(self) -> None:
        key = self._probe_key()
        rows = self._probes.get(key) if key is not None else None
        message = None
        if rows is not None:
            config = self.ctx.decoding_config(self._key).replace(seed=None)  # the seed changes nothing
            verdict = (key, config)
            if verdict not in self._verdicts:
                start = time.perf_counter()
                try:
                    self._verdicts[verdict] = collapse_warning(config, rows, self._info.id, POSITIONS[self._key],
                                                               CONSEQUENCE[self._key])
                except Exception:  # noqa: BLE001 - a warning that cannot be computed is not shown
                    log.exception("collapse check")
                    self._verdicts[verdict] = None
                self.last_check_ms = (time.perf_counter() - start) * 1000
                if len(self._verdicts) > MAX_VERDICTS:  # oldest first (dicts keep insertion order)
                    del self._verdicts[next(iter(self._verdicts))]
            message = self._verdicts[verdict]
        self.warning.setText(message or "")
        self.warning.setToolTip(
            "Checked on the model's own distributions over typical inputs before any run: the settings "
            "leave a single candidate at most positions, so every sample comes out nearly the same."
            if message else "")
        self.warning.setVisible(bool(message))
