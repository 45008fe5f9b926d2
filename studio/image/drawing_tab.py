"""What the Image and Density tabs share: a canvas to draw on, runs on a worker, scoring after edits.

Both tabs are a drawing canvas (`self.canvas`, an ImageCanvas, in `self.canvas_scroll`) with
the same tools, undo/redo, clear, load image / load mask, an empty page when no model is
installed, a painting speed, runs that take the canvas over until they end, and a
likelihood that is recomputed a moment after every change and never once the window has
closed (studio/worker_tab.py). They differ in their models, runs and views; this mixin
holds only what is the same, so a fix to the drawing or its lifetime lands in both tabs at once.

A tab using it (listed before QWidget, so its eventFilter/showEvent win) provides:
    SPEEDS               ((name, values per second), ...) for the speed slider
    LOAD_IMAGE_TITLE     the caption of the Load image dialog
    IDLE_HINT            the status line before any run
    ctx, runner, score_runner, geom, pace, run, _model_id, _infos, _source_size, _cancel,
    _shown_sample, _geometries, model_combo, chosen_model (ModelPickerMixin), _say, _say_error
    (StatusLineMixin), status, progress_label, refresh_models, _update_buttons, _start_score,
    _invalidate_score, _hovered, _on_events, _on_end, _run_status_html(run)
and its runs are DrawingRuns (studio/image/runs.py). It lays out `_build_reads_as()` (what the
image recogniser reads in the canvas) and calls `_find_reader` when it lists its models; the
mixin judges the canvas after every edit and once a run ends (studio/image/reads_as.py).
"""

from __future__ import annotations

import html
import math
import threading
import time
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtGui import QKeySequence, QShortcut
from PySide6.QtWidgets import (
    QButtonGroup,
    QFrame,
    QGridLayout,
    QLabel,
    QLayout,
    QScrollArea,
    QSizePolicy,
    QSlider,
    QToolButton,
    QWidget,
)

from studio.image import work
from studio.image.canvas import ImageCanvas
from studio.image.drawing import TOOL_LABELS, TOOLS, Geometry
from studio.image.reads_as import WAITING_TEXT, ImageReader, reads_as_html, reads_as_text, reads_as_tooltip
from studio.status_line import next_seed_text
from studio.widgets import STRETCH, check_box, column, open_path, push_button, section_title, spin_box
from studio.worker_tab import RescoringMixin, RunnerMixin

TOOL_KEYS = {"brush": "B", "eraser": "E", "mask": "M", "unmask": "U"}


class DrawingTabMixin(RunnerMixin, RescoringMixin):
    SPEEDS: tuple[tuple[str, float], ...] = ()
    LOAD_IMAGE_TITLE = "Load an image"
    IDLE_HINT = ""  # the status line before any run (then the seed the next run takes)

    # --- construction ------------------------------------------------------------------------
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
        self.size_spin = spin_box(1, 8, 2, "Brush diameter in image pixels", suffix=" px")
        return tools

    def _build_edit_buttons(self, load_text: str, load_tip: str) -> QGridLayout:
        """Undo, Redo, Clear, Clear mask, Load image and Load mask (self.*_button), and the
        Show mask check (self.show_mask_check), which the caller lays out."""
        self.show_mask_check = check_box("Show mask", checked=True)
        self.undo_button = push_button("Undo", "Undo the last stroke, load, clear or run (Ctrl+Z)", self.undo)
        self.redo_button = push_button("Redo", "Redo (Ctrl+Shift+Z)", self.redo)
        self.clear_button = push_button("Clear", "Erase all ink (the mask stays); undoable", self.clear)
        self.clear_mask_button = push_button("Clear mask", None, self.clear_mask)
        self.load_button = push_button(load_text, load_tip, self.load_image)
        self.load_mask_button = push_button(
            "Load mask…", "A PNG the size of the canvas or of the loaded image: white = regenerate", self.load_mask)
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
        tools_box = column(section_title("Draw"), tools, settings, self.show_mask_check, 6, edits, STRETCH,
                           name=name)
        tools_box.setFixedWidth(width)
        return tools_box

    def _build_speed_controls(self, default: int, width: int, label_width: int, tooltip: str) -> None:
        """The painting speed: a slider over SPEEDS (self.speed_slider) and its value in words
        (self.speed_label), which the caller lays out; `self.pace` follows the slider."""
        self.speed_slider = QSlider(Qt.Orientation.Horizontal)
        self.speed_slider.setRange(0, len(self.SPEEDS) - 1)
        self.speed_slider.setValue(default)
        self.speed_slider.setPageStep(1)
        self.speed_slider.setFixedWidth(width)
        self.speed_slider.setToolTip(tooltip)
        self.speed_label = QLabel()
        self.speed_label.setMinimumWidth(label_width)
        self.speed_slider.valueChanged.connect(self._speed_changed)
        self._speed_changed(self.speed_slider.value())

    def _build_canvas(self, geometry: Geometry, min_size: int, zoom: int | None = None) -> None:
        """The canvas (self.canvas, wired to the tab and to the brush size and Show mask) in a
        scroll area (self.canvas_scroll), which the caller lays out."""
        self.canvas = ImageCanvas(geometry) if zoom is None else ImageCanvas(geometry, zoom=zoom)
        self.canvas.edited.connect(self._canvas_edited)
        self.canvas.hovered.connect(self._hovered)
        self.canvas.historyChanged.connect(self._update_buttons)
        self.size_spin.valueChanged.connect(lambda v: setattr(self.canvas, "brush_size", v))
        self.canvas.brush_size = self.size_spin.value()
        self.show_mask_check.toggled.connect(self.canvas.set_show_mask)
        self.canvas_scroll = QScrollArea()
        self.canvas_scroll.setWidget(self.canvas)
        self.canvas_scroll.setAlignment(Qt.AlignmentFlag.AlignHCenter | Qt.AlignmentFlag.AlignTop)
        self.canvas_scroll.setFrameShape(QFrame.Shape.NoFrame)
        self.canvas_scroll.setWidgetResizable(False)
        self.canvas_scroll.setMinimumSize(min_size, min_size)

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

    # --- models --------------------------------------------------------------------------------
    def _take_chosen_model(self) -> tuple[str, Any, Any] | None:
        """Make the combo's model the tab's (stopping a run): (model id, old geometry, its geometry),
        or None when nothing more is to be done (the same model, or none usable)."""
        model_id = self.model_combo.currentData()
        if model_id == self._model_id and self.geom is not None:
            return None
        if self.runner.is_busy():
            self.stop()
            # The tab forgets the run it stops here, so that run's end never reaches `_on_end`,
            # which would give the canvas back: give it back now (else it stays read-only).
            self._release_canvas()
        geometry = self._geometries.get(model_id) if model_id else None
        old, self._model_id = self.geom, model_id
        if geometry is None:
            self._update_buttons()
            self._update_status()
            return None
        self.geom = geometry
        return model_id, old, geometry

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
        self._update_reads_as()

    # --- what the recogniser reads -------------------------------------------------------------
    def _build_reads_as(self) -> QLabel:
        """The "reads as: 3 (94%)" label under the canvas (self.reads_as_label), which the caller
        lays out; hidden while no image recogniser can read the tab's images."""
        self.reader = ImageReader()
        self.reads_as_verdict = None  # the Verdict the label shows, if any
        self.reads_as_label = QLabel("")
        self.reads_as_label.setObjectName("ReadsAs")
        self.reads_as_label.setTextFormat(Qt.TextFormat.RichText)
        self.reads_as_label.setAlignment(Qt.AlignmentFlag.AlignHCenter)
        self.reads_as_label.hide()
        return self.reads_as_label

    def _find_reader(self, models=None) -> None:
        """Pick the image recogniser among `models` (default: the usable classifiers listed now)."""
        self.reader.set_models(self._usable_models("classifier") if models is None else models)

    def _reads_as_available(self) -> bool:
        g = self.geom
        return g is not None and self.reader.reads(g.height, g.width, g.channels)

    def reads_as_text(self) -> str:
        """What the label says, as plain text ('reads as: 3 (94%)'; '' when it says nothing)."""
        return reads_as_text(self.reads_as_verdict) if self.reads_as_label.isVisible() else ""

    def _show_verdict(self, verdict) -> None:
        self.reads_as_verdict = verdict
        self.reads_as_label.setText(reads_as_html(verdict))
        self.reads_as_label.setToolTip(reads_as_tooltip(verdict, self.reader.model_id))

    def _update_reads_as(self) -> None:
        """Judge the canvas as it is now (not while a run paints it: a half-drawn sample is
        judged when it is finished); a blank canvas reads as nothing."""
        if not self._reads_as_available():
            self.reads_as_verdict = None
            self.reads_as_label.hide()
            return
        self.reads_as_label.show()
        if self.runner.is_busy():
            return
        pixels = self.canvas.pixels
        self._show_verdict(self.reader.judge_one(pixels, self.geom.levels) if pixels.any() else None)

    def _reads_as_waiting(self) -> None:
        """A sample is being painted: the label waits for it to finish."""
        if self.reads_as_label.isVisible():
            self.reads_as_verdict = None
            self.reads_as_label.setText(f"<span style='color:#9ca3af'>{html.escape(WAITING_TEXT)}</span>")
            self.reads_as_label.setToolTip("The recogniser reads the sample when it is finished")

    def _judge_sample(self, pixels) -> Any:
        """The verdict for a finished sample (C, H, W), or None (no recogniser for these images)."""
        if self.geom is None or not self.reads_as_label.isVisible():
            return None
        return self.reader.judge_one(pixels, self.geom.levels)

    # --- loading -------------------------------------------------------------------------------
    def load_image(self, path: str | None = None) -> bool:
        """Load any image file, converted to the model's size and mode (one undo step)."""
        if self.geom is None or self.runner.is_busy():
            return False
        path = open_path(self, path, self.LOAD_IMAGE_TITLE, "Images (*.png *.jpg *.jpeg *.bmp *.gif *.tif *.tiff "
                         "*.webp *.pgm *.ppm);;All files (*)")
        if path is None:
            return False
        loaded = self._read_file(path, lambda: work.read_image_file(path, self.geom))
        if loaded is None:  # the drawing stays as it was
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
        path = open_path(self, path, "Load a mask (white = regenerate)",
                         "Images (*.png *.bmp *.gif *.tif *.tiff *.webp);;All files (*)")
        if path is None:
            return False
        read = self._read_file(path, lambda: work.read_mask_file(path, self.geom, self._source_size), "mask ")
        if read is None:
            return False
        mask, notes = read
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

    def _schedule_score(self) -> None:
        if self._closed or self.geom is None or self._model_id not in self._infos:
            return
        if not self.isVisible():
            # Hidden (another tab is shown, or the window is not yet): the scoring waits until the
            # tab is shown (RescoringMixin.showEvent), so a tab nobody looks at loads no models,
            # takes no CPU from the one in use, and holds up no close.
            self._score_deferred = True
            return
        self._watch_window()
        if not self.runner.is_busy():
            self._score_timer.start()

    def _begin_run(self, run) -> threading.Event:
        """Make `run` the tab's run: scoring waits, the canvas is the run's until it ends; the
        new run's cancel event (set by Stop and by the window's close)."""
        self.run = run
        self._shown_sample = None
        self._cancel = cancel = threading.Event()
        self._score_timer.stop()
        self.score_runner.stop()
        self.canvas.set_editable(False)
        self._reads_as_waiting()
        return cancel

    def _release_canvas(self) -> None:
        """The canvas is the user's again: no run marker, no pixels pending, editable."""
        self.canvas.set_marker(None)
        self.canvas.set_pending(None)
        self.canvas.set_editable(True)

    def _on_error(self, run, message: str) -> None:
        if run is not self.run:
            return
        self._on_end(run, "error")
        self._say_error(message)  # the drawing stays (a partial run is one Undo away)

    def _update_drawing_buttons(self) -> tuple[bool, bool]:
        """Enable what every drawing tab has (Stop, undo/redo, clear, load, the model combo) for
        the state now; (has a model, a run is going) for the tab's own controls."""
        has_model = self.geom is not None and self._model_id in self._infos
        busy = self.runner.is_busy()
        self.stop_button.setEnabled(busy)
        self.undo_button.setEnabled(not busy and self.canvas.history.can_undo())
        self.redo_button.setEnabled(not busy and self.canvas.history.can_redo())
        for w in (self.clear_button, self.clear_mask_button, self.load_button, self.load_mask_button):
            w.setEnabled(has_model and not busy)
        self.model_combo.setEnabled(not busy)
        return has_model, busy

    def _may_pick_sample(self, finished: bool) -> bool:
        """Whether a sample of the last run may be loaded into the canvas (it is `finished`, and
        no run is going); if not, says why when there is something to say."""
        if not finished:
            if self.run is not None and self.runner.is_busy():
                self._say_error("That sample is not finished yet: wait for the run, or stop it.")
            return False
        if self.runner.is_busy():
            self._say_error("Wait for the run to finish (or stop it) before picking a sample.")
            return False
        return True

    # --- status --------------------------------------------------------------------------------
    def _update_progress(self) -> None:
        run = self.run
        if run is not None and run.state == "running":
            self.progress_label.setText(run.progress_text(time.perf_counter() - run.t0))

    def _update_status(self) -> None:
        run = self.run
        if run is None:
            if self.geom is None:
                self.status.setText("")
                return
            self._say(f"{self.IDLE_HINT} Next run: {next_seed_text(self.ctx.decoding_config(self.MODEL_KIND))}.")
            self.progress_label.setText("")
            return
        if run.state != "running":
            self.progress_label.setText(run.drawn_text())
        self._say(self._run_status_html(run))

    # --- restoring a saved state (History) ---------------------------------------------------------
    def restore_history_state(self, state) -> None:
        """Bring back a `history_state()`; what no longer fits (a model gone, a changed geometry) is
        said on the status line and left out, never raised."""
        try:
            self._restore_state(state)
        except Exception as exc:  # noqa: BLE001 - a stale or hostile saved state must not break the tab
            self._say_error(f"The {self.TAB_TITLE} tab's last state could not be restored ({exc}); it starts afresh.")

    def _restore_saved_model(self, state) -> bool:
        """The first step of every `_restore_state`: a known state format whose model is still installed
        becomes the tab's model (True); a gone model is said on the status line (False)."""
        from engines.errors import InputError

        if not isinstance(state, dict) or state.get("version") != 1:
            raise InputError("unknown state format")
        model_id = state.get("model")
        if model_id not in self._infos:
            self._say_error(f"The {self.TAB_TITLE} tab's last model {model_id!r} is no longer installed; its drawing "
                            "and samples were not restored.")
            return False
        if self.runner.is_busy():
            return False
        self.select_model(model_id)
        self._model_changed()
        return True
