"""What the Image and Density tabs share: a canvas to draw on, runs on a worker, scoring after edits.

Both tabs are a drawing canvas (`self.canvas`, an ImageCanvas) with the same tools, undo/redo,
clear, load image / load mask, an empty page when no model is installed, a painting speed,
and a likelihood that is recomputed a moment after every change and never once the window
has closed. They differ in their models, runs and views; this mixin holds only what is the
same, so a fix to the drawing or its lifetime lands in both tabs at once.

A tab using it (listed before QWidget, so its eventFilter/showEvent win) provides:
    SPEEDS               ((name, values per second), ...) for the speed slider
    LOAD_IMAGE_TITLE     the caption of the Load image dialog
    ctx, runner, score_runner, canvas, geom, pace, _model_id, _infos, _source_size, _cancel
    _geometries, model_combo, chosen_model (ModelPickerMixin), _say, _say_error (StatusLineMixin),
    refresh_models, _update_status, _update_buttons, _start_score, _invalidate_score
"""

from __future__ import annotations

import html
import logging
import math
from pathlib import Path
from typing import Any

from PySide6.QtCore import QDir, QEvent, QObject, Qt, QTimer
from PySide6.QtGui import QKeySequence, QShortcut
from PySide6.QtWidgets import (
    QButtonGroup,
    QCheckBox,
    QFileDialog,
    QGridLayout,
    QLabel,
    QLayout,
    QPushButton,
    QSizePolicy,
    QSpinBox,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from engines.errors import ChainruleError
from studio.image import work
from studio.image.drawing import TOOL_LABELS, TOOLS

log = logging.getLogger(__name__)

TOOL_KEYS = {"brush": "B", "eraser": "E", "mask": "M", "unmask": "U"}


class DrawingTabMixin:
    SPEEDS: tuple[tuple[str, float], ...] = ()
    LOAD_IMAGE_TITLE = "Load an image"

    # --- construction ------------------------------------------------------------------------
    def _init_scoring_lifetime(self, delay_ms: int) -> None:
        """The rescoring timer, and the window's close (once it closes, no scoring may start)."""
        self._closed = False
        self._filtering = False
        self._score_timer = QTimer(self)
        self._score_timer.setSingleShot(True)
        self._score_timer.setInterval(delay_ms)
        self._score_timer.timeout.connect(self._start_score)
        window = self.ctx.parent()  # the main window
        if isinstance(window, QWidget):
            window.installEventFilter(self)
            self._filtering = True

    def _build_tool_buttons(self, tips: dict[str, str], text_only: bool = False) -> QGridLayout:
        """The Brush / Eraser / Mask / Unmask buttons (self.tool_buttons) with their shortcut keys,
        and the brush size spin (self.size_spin), which the caller lays out."""
        self.tool_group = QButtonGroup(self)
        self.tool_group.setExclusive(True)
        self.tool_buttons: dict[str, QToolButton] = {}
        tools = QGridLayout()
        for i, tool in enumerate(TOOLS):
            b = QToolButton()
            b.setText(TOOL_LABELS[tool])
            b.setCheckable(True)
            b.setToolTip(f"{tips[tool]} ({TOOL_KEYS[tool]})")
            if text_only:
                b.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextOnly)
            b.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
            b.clicked.connect(lambda _c=False, t=tool: self.set_tool(t))
            self.tool_group.addButton(b)
            self.tool_buttons[tool] = b
            tools.addWidget(b, i // 2, i % 2)
            self._shortcut(TOOL_KEYS[tool], lambda t=tool: self.set_tool(t))
        self.tool_buttons["brush"].setChecked(True)
        self.size_spin = QSpinBox()
        self.size_spin.setRange(1, 8)
        self.size_spin.setValue(2)
        self.size_spin.setSuffix(" px")
        self.size_spin.setToolTip("Brush diameter in image pixels")
        return tools

    def _build_edit_buttons(self, load_text: str, load_tip: str) -> QGridLayout:
        """Undo, Redo, Clear, Clear mask, Load image and Load mask (self.*_button), and the
        Show mask check (self.show_mask_check), which the caller lays out."""
        self.show_mask_check = QCheckBox("Show mask")
        self.show_mask_check.setChecked(True)
        self.undo_button = QPushButton("Undo")
        self.undo_button.setToolTip("Undo the last stroke, load, clear or run (Ctrl+Z)")
        self.undo_button.clicked.connect(self.undo)
        self.redo_button = QPushButton("Redo")
        self.redo_button.setToolTip("Redo (Ctrl+Shift+Z)")
        self.redo_button.clicked.connect(self.redo)
        self.clear_button = QPushButton("Clear")
        self.clear_button.setToolTip("Erase all ink (the mask stays); undoable")
        self.clear_button.clicked.connect(self.clear)
        self.clear_mask_button = QPushButton("Clear mask")
        self.clear_mask_button.clicked.connect(self.clear_mask)
        self.load_button = QPushButton(load_text)
        self.load_button.setToolTip(load_tip)
        self.load_button.clicked.connect(self.load_image)
        self.load_mask_button = QPushButton("Load mask…")
        self.load_mask_button.setToolTip("A PNG the size of the canvas or of the loaded image: white = regenerate")
        self.load_mask_button.clicked.connect(self.load_mask)
        edits = QGridLayout()
        edits.addWidget(self.undo_button, 0, 0)
        edits.addWidget(self.redo_button, 0, 1)
        edits.addWidget(self.clear_button, 1, 0)
        edits.addWidget(self.clear_mask_button, 1, 1)
        edits.addWidget(self.load_button, 2, 0, 1, 2)
        edits.addWidget(self.load_mask_button, 3, 0, 1, 2)
        return edits

    def _build_tools_box(self, name: str, tools: QLayout, settings: QLayout, edits: QLayout,
                         width: int) -> QWidget:
        """The column left of the canvas: tools, their settings, Show mask, then the edit buttons."""
        tools_box = QWidget()
        tools_box.setObjectName(name)
        tv = QVBoxLayout(tools_box)
        tv.setContentsMargins(0, 0, 0, 0)
        tv.addWidget(self._title("Draw"))
        tv.addLayout(tools)
        tv.addLayout(settings)
        tv.addWidget(self.show_mask_check)
        tv.addSpacing(6)
        tv.addLayout(edits)
        tv.addStretch(1)
        tools_box.setFixedWidth(width)
        return tools_box

    def _build_pages(self, main: QWidget, empty_text: str, empty_name: str) -> None:
        """Page 0 says how to get a model (self.empty_label), page 1 is `main`; the undo keys."""
        self._build_model_pages(main, empty_text, empty_name)

        self._shortcut(QKeySequence.StandardKey.Undo, self.undo)
        self._shortcut(QKeySequence.StandardKey.Redo, self.redo)
        self._shortcut("Ctrl+Y", self.redo)

    def _shortcut(self, key, slot) -> QShortcut:
        """A shortcut that works while focus is anywhere in this tab (not in the other tabs)."""
        sc = QShortcut(QKeySequence(key), self)
        sc.setContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
        sc.activated.connect(slot)
        return sc

    @staticmethod
    def _title(text: str) -> QLabel:
        label = QLabel(text)
        label.setObjectName("SectionTitle")
        return label

    # --- models --------------------------------------------------------------------------------
    def _show_models_found(self, any_usable: bool, empty_text: str, problems: list[str]) -> None:
        """The page to show, and the empty page's text with the models found but not usable."""
        self.pages.setCurrentIndex(1 if any_usable else 0)
        text = empty_text
        if problems:
            text += "<p style='color:#c62828'>Found but not usable: " + html.escape("; ".join(problems)) + "</p>"
        self.empty_label.setText(text)
        # A wrapped rich-text label underestimates its height in a layout: ask it for the real one.
        self.empty_label.setMinimumHeight(self.empty_label.heightForWidth(self.empty_label.width()) + 24)

    def _usable_models(self) -> list:
        """The usable models in the models folders; a folder that cannot be listed is said, not raised."""
        try:
            return [m for m in self.ctx.list_models() if m.usable]
        except ChainruleError as exc:
            self._say_error(str(exc))
        except Exception as exc:  # noqa: BLE001 - a broken folder must not take the tab down
            log.exception("listing models failed")
            self._say_error(f"Listing models failed: {type(exc).__name__}: {exc}")
        return []

    def _take_chosen_model(self) -> tuple[str, Any, Any] | None:
        """Make the combo's model the tab's (stopping a run): (model id, old geometry, its geometry),
        or None when nothing more is to be done (the same model, or none usable)."""
        model_id = self.model_combo.currentData()
        if model_id == self._model_id and self.geom is not None:
            return None
        if self.runner.is_busy():
            self.stop()
        geometry = self._geometries.get(model_id) if model_id else None
        old, self._model_id = self.geom, model_id
        if geometry is None:
            self._update_buttons()
            self._update_status()
            return None
        self.geom = geometry
        return model_id, old, geometry

    def model_ids(self) -> list[str]:
        return [self.model_combo.itemData(i) for i in range(self.model_combo.count())
                if self.model_combo.itemData(i) is not None]

    # --- speed -----------------------------------------------------------------------------------
    def _speed_changed(self, index: int) -> None:
        name, rate = self.SPEEDS[index]
        self.speed_label.setText(name)
        self.pace.values_per_second = rate

    def set_speed(self, values_per_second: float) -> None:
        """The slider position closest to `values_per_second` (inf: instant)."""
        speeds = self.SPEEDS
        best = min(range(len(speeds)), key=lambda i: abs(math.log10(min(speeds[i][1], 1e9))
                                                          - math.log10(min(max(values_per_second, 1e-3), 1e9))))
        self.speed_slider.setValue(best)

    # --- tools ---------------------------------------------------------------------------------
    def set_tool(self, tool: str) -> None:
        if tool not in TOOLS:
            raise ValueError(f"unknown tool {tool!r}")
        self.canvas.tool = tool
        self.tool_buttons[tool].setChecked(True)
        if tool in ("mask", "unmask") and not self.show_mask_check.isChecked():
            self.show_mask_check.setChecked(True)

    def undo(self) -> None:
        if not self.runner.is_busy():  # a run owns the canvas until it ends
            self.canvas.undo()

    def redo(self) -> None:
        if not self.runner.is_busy():
            self.canvas.redo()

    def clear(self) -> None:
        if not self.runner.is_busy():
            self.canvas.clear()

    def clear_mask(self) -> None:
        if not self.runner.is_busy():
            self.canvas.clear_mask()

    def _canvas_edited(self) -> None:
        self._invalidate_score()
        self._update_buttons()

    # --- loading -------------------------------------------------------------------------------
    def load_image(self, path: str | None = None) -> bool:
        """Load any image file, converted to the model's size and mode (one undo step)."""
        if self.geom is None or self.runner.is_busy():
            return False
        if path is None:
            path, _ = QFileDialog.getOpenFileName(self, self.LOAD_IMAGE_TITLE, QDir.homePath(),
                                                  "Images (*.png *.jpg *.jpeg *.bmp *.gif *.tif *.tiff *.webp *.pgm "
                                                  "*.ppm);;All files (*)")
            if not path:
                return False
        try:
            loaded = work.read_image_file(path, self.geom)
        except ChainruleError as exc:  # the drawing stays as it was
            self._say_error(str(exc))
            return False
        except Exception as exc:  # noqa: BLE001 - any unreadable file: a message, never a crash
            log.exception("loading %s failed", path)
            self._say_error(f"cannot read {path}: {type(exc).__name__}: {exc}")
            return False
        self.canvas.set_state(pixels=loaded.pixels)
        self._source_size = tuple(loaded.original_size)
        name = html.escape(Path(path).name)
        if loaded.notes:
            self._say(f"Loaded {name}. <span style='color:#92400e'>Converted: "
                      + html.escape("; ".join(n.removeprefix("image: ") for n in loaded.notes)) + ".</span>")
        else:
            self._say(f"Loaded {name}.")
        self.ctx.show_message(f"Loaded {Path(path).name}")
        return True

    def load_mask(self, path: str | None = None) -> bool:
        if self.geom is None or self.runner.is_busy():
            return False
        if path is None:
            path, _ = QFileDialog.getOpenFileName(self, "Load a mask (white = regenerate)", QDir.homePath(),
                                                  "Images (*.png *.bmp *.gif *.tif *.tiff *.webp);;All files (*)")
            if not path:
                return False
        try:
            mask, notes = work.read_mask_file(path, self.geom, self._source_size)
        except ChainruleError as exc:
            self._say_error(str(exc))
            return False
        except Exception as exc:  # noqa: BLE001
            log.exception("loading mask %s failed", path)
            self._say_error(f"cannot read {path}: {type(exc).__name__}: {exc}")
            return False
        self.canvas.set_state(mask=mask)
        self.show_mask_check.setChecked(True)
        extra = list(notes)
        if not mask.any():
            extra.append("it marks nothing: Inpaint needs some white (regenerate) pixels")
        elif mask.all():
            extra.append("it marks every pixel: Inpaint needs some pixels kept")
        self._say(f"Loaded mask {html.escape(Path(path).name)} ({int(mask.sum())} pixels to regenerate)."
                  + (" <span style='color:#92400e'>" + html.escape("; ".join(extra)) + ".</span>" if extra else ""))
        return True

    # --- runs and scoring ----------------------------------------------------------------------
    def _model_for_run(self):
        """The chosen ModelInfo when a run may start: None without a model or while a run is going
        (said on the status line)."""
        info = self.chosen_model()
        if info is None or self.geom is None:
            return None
        if self.runner.is_busy():
            self._say_error("A run is in progress: stop it first.")
            return None
        return info

    def is_running(self) -> bool:
        return self.runner.is_busy()

    def is_idle(self) -> bool:
        """No run, no scoring and no scoring waiting to start."""
        return not (self.runner.is_busy() or self.score_runner.is_busy() or self._score_timer.isActive())

    def stop(self) -> None:
        self.runner.stop()  # first: not one more event is delivered after this
        self._cancel.set()  # then wake the worker from its pacing wait and end the loop

    def _schedule_score(self) -> None:
        if self._closed or self.geom is None or self._model_id not in self._infos:
            return
        self._watch_window()
        if not self.runner.is_busy():
            self._score_timer.start()

    def rescore(self) -> None:
        """Score the canvas now (no waiting)."""
        self._score_timer.stop()
        self._start_score()

    # --- lifetime ------------------------------------------------------------------------------
    def _watch_window(self) -> None:
        """Stop scoring for good once the window closes (a pending timer must not start work after)."""
        win = self.window()
        if win is not self and not self._filtering:
            win.installEventFilter(self)
            self._filtering = True

    def eventFilter(self, obj: QObject, event: QEvent) -> bool:  # noqa: N802
        if event.type() == QEvent.Type.Close:
            self._closed = True
            self._score_timer.stop()
            self._cancel.set()
        return False

    def showEvent(self, event) -> None:  # noqa: N802
        self._closed = False
        super().showEvent(event)
