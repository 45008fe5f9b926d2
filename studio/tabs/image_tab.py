"""The Image tab: draw, let a PixelCNN finish it pixel by pixel, and see where it was surprised.

Layout: a bar (model, digit, samples, painting speed); tools on the left; the canvas in
the middle with the run buttons under it; the likelihood view on the right (heatmap,
legend, totals, the distribution at the hovered pixel); the samples of the last run and
a status line at the bottom. Without an image model the tab says how to get one.

Drawing
    Brush / Eraser / Mask / Unmask with a round brush (right button: the opposite tool),
    ink intensity for grey models (binary models draw ink = 1), undo/redo of every stroke,
    load, clear, Generate, Complete, Inpaint and picking a sample. Loading an image of any
    size or mode converts it to the model's size and mode and says how; a file that cannot
    be used leaves the drawing as it was.

Runs
    Generate samples from nothing; Complete keeps the drawing up to its last inked pixel (in
    raster order) and samples everything after it; Inpaint samples the red-masked pixels and
    keeps the rest exactly, optionally posterior-aware (K candidates, one picked by how well
    it explains the known pixels after the mask). Sample i of a run uses seed s + i, as
    `chainrule generate image --seed s --count N` does, so the CLI reproduces it; the seed is
    always shown. The image paints itself value by value at the chosen speed; Stop ends the
    run at once and keeps what was painted. A run is one undo step.

Likelihood
    After every change the image is scored on a worker: -log2 p of each pixel given the
    pixels before it as a heatmap, log p(image) in nats and bits/dim, and the model's full
    distribution at the hovered pixel (one forward pass gives every conditional).

Export: the image as PNG, and the last painting as an animated GIF.
"""

from __future__ import annotations

import html
import logging
import math
import shlex
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from PySide6.QtCore import QDir, QEvent, QObject, Qt, QTimer
from PySide6.QtGui import QKeySequence, QShortcut
from PySide6.QtWidgets import (
    QButtonGroup,
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFrame,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QScrollArea,
    QSlider,
    QSizePolicy,
    QSpinBox,
    QStackedWidget,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from engines.decoding import build_chain
from engines.errors import ChainruleError, InputError
from engines.generation import resolve_seed
from studio.context import StudioContext
from studio.model_picker import ModelPickerMixin
from studio.status_line import StatusLineMixin
from studio.image import work
from studio.image.canvas import MAX_ZOOM, ImageCanvas
from studio.image.colours import nice_vmax
from studio.image.drawing import (
    TOOL_LABELS,
    TOOLS,
    Geometry,
    bits,
    completion_mask,
    convert_drawing,
    ink_value,
    inpaint_mask,
)
from studio.image.likelihood_view import DistributionChart, HeatLegend, HeatmapView
from studio.image.samples_view import SampleGrid
from studio.tabs import register_tab

log = logging.getLogger(__name__)

# Painting speeds: sampled values per second (inf: as fast as the model goes).
SPEEDS: tuple[tuple[str, float], ...] = (
    ("10 px/s", 10.0), ("30 px/s", 30.0), ("100 px/s", 100.0), ("300 px/s", 300.0),
    ("1000 px/s", 1000.0), ("3000 px/s", 3000.0), ("instant", math.inf),
)
DEFAULT_SPEED = 3
CANVAS_PIXELS = 336  # the canvas's default size on screen: 28x28 at zoom 12
SCORE_DELAY_MS = 120  # rescoring waits this long after the last change
TOOL_KEYS = {"brush": "B", "eraser": "E", "mask": "M", "unmask": "U"}
TOOL_TIPS = {
    "brush": "Draw ink (right button erases)",
    "eraser": "Erase ink back to black (right button draws)",
    "mask": "Mark pixels for Inpaint to regenerate, shown in red (right button unmarks)",
    "unmask": "Unmark pixels: Inpaint keeps them (right button marks)",
}
EMPTY_TEXT = (
    "<h3>No image model installed</h3>"
    "<p>The Image tab draws with an autoregressive image model: a Gated PixelCNN trained on MNIST digits "
    "(the shipped <code>bmnist-pixelcnn</code> and <code>mnist-pixelcnn</code>, or your own).</p>"
    "<p>To get one, train and export a PixelCNN:</p>"
    "<pre>chainrule train pixelcnn --data mnist.npz --out runs/pixelcnn\n"
    "python -m engines.training.export_pixelcnn \\\n"
    "    --ckpt runs/pixelcnn/ckpt.pt --out my-models/mnist-pixelcnn</pre>"
    "<p>then add the folder that holds it (<code>my-models</code>) in the <b>Models</b> tab "
    "(File → Add models folder…). Image models appear here as soon as their folder is added.</p>"
)


class Run:
    """The current (or last) run: what it paints and what it has produced so far."""

    def __init__(self, kind: str, model_id: str, seed: int, count: int, candidates: int | None,
                 label: int | None, before: tuple[np.ndarray, np.ndarray], cli: str | None) -> None:
        self.kind, self.model_id, self.seed, self.count = kind, model_id, seed, count
        self.candidates, self.label, self.before, self.cli = candidates, label, before, cli
        self.chain = ""
        self.method = ""
        self.n_values = 0
        self.images: dict[int, np.ndarray] = {}  # sample -> (K, C, H, W) as painted so far
        self.recorders: dict[int, work.FrameRecorder] = {}
        self.results: dict[int, work.SampleDone] = {}
        self.current = 0  # the sample being painted
        self.n = 0  # values painted in all
        self.t0 = time.perf_counter()
        self.t_end: float | None = None
        self.state = "running"  # running | done | stopped | error
        self.touched = False  # the canvas shows this run (the drawing before is an undo step)

    def frames(self, sample: int) -> list[np.ndarray]:
        """(C, H, W) frames of one sample's painting: the chosen candidate's when posterior-aware."""
        rec = self.recorders.get(sample)
        if rec is None:
            return []
        done = self.results.get(sample)
        k = done.chosen if done is not None else 0
        return [f[k] for f in rec.frames]

    def seeds_text(self) -> str:
        return f"seed {self.seed}" if self.count == 1 else f"seeds {self.seed}–{self.seed + self.count - 1}"


class ImageTab(StatusLineMixin, ModelPickerMixin, QWidget):
    MODEL_KIND = "image"

    def __init__(self, ctx: StudioContext, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.ctx = ctx
        self.runner = ctx.task_runner("Image", parent=self)
        self.score_runner = ctx.task_runner("Image score", parent=self)
        self._infos: dict[str, Any] = {}  # model id -> ModelInfo (image, usable)
        self._geometries: dict[str, Geometry] = {}
        self.geom: Geometry | None = None
        self._model_id: str | None = None
        self._source_size: tuple[int, int] | None = None  # the last loaded image's own size (for masks)
        self.run: Run | None = None
        self._shown_sample: int | None = None  # which sample of `run` the canvas holds, if any
        self._gif_frames: list[np.ndarray] = []
        self._gif_title = ""
        self._cancel = threading.Event()
        self.pace = work.Pace(SPEEDS[DEFAULT_SPEED][1])
        self.score: work.ScoreDone | None = None
        self._live_probs: tuple[int, int, np.ndarray] | None = None  # (row, col, (C, V)) of the value being sampled
        self._hover: tuple[int, int] | None = None  # the pixel under the cursor (canvas or heatmap)
        self._closed = False
        self._filtering = False
        self._score_timer = QTimer(self)
        self._score_timer.setSingleShot(True)
        self._score_timer.setInterval(SCORE_DELAY_MS)
        self._score_timer.timeout.connect(self._start_score)
        window = ctx.parent()  # the main window: once it closes, no scoring may start
        if isinstance(window, QWidget):
            window.installEventFilter(self)
            self._filtering = True
        self._build()
        ctx.modelDirsChanged.connect(self.refresh_models)
        ctx.decodingConfigChanged.connect(lambda _c: self._update_status())
        self.runner.busyChanged.connect(lambda _b: self._update_buttons())
        self.refresh_models()

    # --- widgets -----------------------------------------------------------------------
    def _build(self) -> None:
        blank = Geometry(28, 28, 1, 2, "bernoulli", 0)
        # Top bar
        self.model_combo = QComboBox()
        self.model_combo.setMinimumContentsLength(16)
        self.model_combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.model_combo.setToolTip("Image models found in the models folders (see the Models tab)")
        self.model_combo.currentIndexChanged.connect(lambda _i: self._model_changed())
        self.label_combo = QComboBox()
        self.label_combo.setToolTip("The digit the model draws (a class-conditional model); "
                                    "“any” samples without a label")
        self.label_combo.currentIndexChanged.connect(lambda _i: self._label_changed())
        self.samples_spin = QSpinBox()
        self.samples_spin.setRange(1, work.MAX_SAMPLES)
        self.samples_spin.setValue(1)
        self.samples_spin.setToolTip("Samples per run (sample i uses seed + i); more than one shows a grid to "
                                     "choose from")
        self.speed_slider = QSlider(Qt.Orientation.Horizontal)
        self.speed_slider.setRange(0, len(SPEEDS) - 1)
        self.speed_slider.setValue(DEFAULT_SPEED)
        self.speed_slider.setPageStep(1)
        self.speed_slider.setFixedWidth(120)
        self.speed_slider.setToolTip("How fast the image paints itself (changes a running painting too)")
        self.speed_label = QLabel()
        self.speed_label.setMinimumWidth(64)
        self.speed_slider.valueChanged.connect(self._speed_changed)
        self._speed_changed(self.speed_slider.value())
        bar = QHBoxLayout()
        bar.addWidget(QLabel("Model:"))
        bar.addWidget(self.model_combo, 2)
        bar.addSpacing(10)
        bar.addWidget(QLabel("Digit:"))
        bar.addWidget(self.label_combo)
        bar.addSpacing(10)
        bar.addWidget(QLabel("Samples:"))
        bar.addWidget(self.samples_spin)
        bar.addSpacing(10)
        bar.addWidget(QLabel("Speed:"))
        bar.addWidget(self.speed_slider)
        bar.addWidget(self.speed_label)
        bar.addStretch(1)

        # Tools
        self.tool_group = QButtonGroup(self)
        self.tool_group.setExclusive(True)
        self.tool_buttons: dict[str, QToolButton] = {}
        tools = QGridLayout()
        for i, tool in enumerate(TOOLS):
            b = QToolButton()
            b.setText(TOOL_LABELS[tool])
            b.setCheckable(True)
            b.setToolTip(f"{TOOL_TIPS[tool]} ({TOOL_KEYS[tool]})")
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
        self.ink_slider = QSlider(Qt.Orientation.Horizontal)
        self.ink_slider.setRange(1, 255)
        self.ink_slider.setValue(255)
        self.ink_slider.setToolTip("Ink intensity (grey models); going over a stroke never lightens it")
        self.ink_caption = QLabel("Ink:")
        self.zoom_spin = QSpinBox()
        self.zoom_spin.setRange(1, MAX_ZOOM)
        self.zoom_spin.setSuffix("×")
        self.zoom_spin.setToolTip("Zoom (Ctrl+wheel on the canvas)")
        form = QGridLayout()
        form.addWidget(QLabel("Size:"), 0, 0)
        form.addWidget(self.size_spin, 0, 1)
        form.addWidget(self.ink_caption, 1, 0)
        form.addWidget(self.ink_slider, 1, 1)
        form.addWidget(QLabel("Zoom:"), 2, 0)
        form.addWidget(self.zoom_spin, 2, 1)
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
        self.load_button = QPushButton("Load image…")
        self.load_button.setToolTip("Any size or format: converted to the model's size and mode (you are told how)")
        self.load_button.clicked.connect(self.load_image)
        self.load_mask_button = QPushButton("Load mask…")
        self.load_mask_button.setToolTip("A PNG the size of the canvas or of the loaded image: white = regenerate")
        self.load_mask_button.clicked.connect(self.load_mask)
        self.show_mask_check = QCheckBox("Show mask")
        self.show_mask_check.setChecked(True)
        edits = QGridLayout()
        edits.addWidget(self.undo_button, 0, 0)
        edits.addWidget(self.redo_button, 0, 1)
        edits.addWidget(self.clear_button, 1, 0)
        edits.addWidget(self.clear_mask_button, 1, 1)
        edits.addWidget(self.load_button, 2, 0, 1, 2)
        edits.addWidget(self.load_mask_button, 3, 0, 1, 2)
        tools_box = QWidget()
        tools_box.setObjectName("ImageTools")
        tv = QVBoxLayout(tools_box)
        tv.setContentsMargins(0, 0, 0, 0)
        tv.addWidget(self._title("Draw"))
        tv.addLayout(tools)
        tv.addLayout(form)
        tv.addWidget(self.show_mask_check)
        tv.addSpacing(6)
        tv.addLayout(edits)
        tv.addStretch(1)
        tools_box.setFixedWidth(176)

        # Canvas
        self.canvas = ImageCanvas(blank)
        self.canvas.edited.connect(self._canvas_edited)
        self.canvas.hovered.connect(self._hovered)
        self.canvas.historyChanged.connect(self._update_buttons)
        self.canvas.zoomChanged.connect(self._canvas_zoomed)
        self.size_spin.valueChanged.connect(lambda v: setattr(self.canvas, "brush_size", v))
        self.canvas.brush_size = self.size_spin.value()
        self.ink_slider.valueChanged.connect(lambda _v: self._ink_changed())
        self.zoom_spin.valueChanged.connect(self.canvas.set_zoom)
        self.show_mask_check.toggled.connect(self.canvas.set_show_mask)
        self.canvas_scroll = QScrollArea()
        self.canvas_scroll.setWidget(self.canvas)
        self.canvas_scroll.setAlignment(Qt.AlignmentFlag.AlignHCenter | Qt.AlignmentFlag.AlignTop)
        self.canvas_scroll.setFrameShape(QFrame.Shape.NoFrame)
        self.canvas_scroll.setWidgetResizable(False)
        self.canvas_scroll.setMinimumSize(240, 240)

        self.generate_button = QPushButton("Generate")
        self.generate_button.setToolTip("Draw from nothing, pixel by pixel (the decoding panel's settings)")
        self.generate_button.clicked.connect(self.generate)
        self.complete_button = QPushButton("Complete")
        self.complete_button.setToolTip("Keep your drawing up to its last inked pixel (row by row from the top) "
                                        "and let the model draw everything after it")
        self.complete_button.clicked.connect(self.complete)
        self.inpaint_button = QPushButton("Inpaint")
        self.inpaint_button.setToolTip("Regenerate the red-masked pixels; every other pixel is kept exactly")
        self.inpaint_button.clicked.connect(self.inpaint)
        self.stop_button = QPushButton("Stop")
        self.stop_button.setToolTip("Stop at once; what was painted is kept")
        self.stop_button.clicked.connect(self.stop)
        self.posterior_check = QCheckBox("Inpaint posterior-aware, K =")
        self.posterior_check.setToolTip(
            "Inpaint draws K candidates and picks one in proportion to how well it explains the known pixels "
            "after the mask (which raster-order sampling cannot see): an approximate sample of "
            "p(masked | everything known)")
        self.candidates_spin = QSpinBox()
        self.candidates_spin.setRange(2, work.MAX_CANDIDATES)
        self.candidates_spin.setValue(8)
        self.candidates_spin.setToolTip("Candidates per inpainting")
        self.export_png_button = QPushButton("Export PNG…")
        self.export_png_button.setToolTip("The image on the canvas at the model's size")
        self.export_png_button.clicked.connect(self.export_png)
        self.export_gif_button = QPushButton("Export GIF…")
        self.export_gif_button.setToolTip("An animation of the painting of the sample on the canvas")
        self.export_gif_button.clicked.connect(self.export_gif)
        runs = QHBoxLayout()
        for b in (self.generate_button, self.complete_button, self.inpaint_button, self.stop_button):
            runs.addWidget(b)
        runs.addStretch(1)
        posterior = QHBoxLayout()
        posterior.addWidget(self.posterior_check)
        posterior.addWidget(self.candidates_spin)
        posterior.addStretch(1)
        exports = QHBoxLayout()
        exports.addStretch(1)
        exports.addWidget(self.export_png_button)
        exports.addWidget(self.export_gif_button)
        self.progress_label = QLabel()
        self.progress_label.setObjectName("Hint")
        exports.insertWidget(0, self.progress_label)
        centre = QWidget()
        cv = QVBoxLayout(centre)
        cv.setContentsMargins(0, 0, 0, 0)
        cv.addWidget(self._title("Canvas"))
        cv.addWidget(self.canvas_scroll, 1)
        cv.addLayout(runs)
        cv.addLayout(posterior)
        cv.addLayout(exports)

        # Likelihood
        self.heatmap = HeatmapView()
        self.heatmap.hovered.connect(self._hovered)
        self.legend = HeatLegend()
        self.totals = QLabel("")
        self.totals.setObjectName("ImageTotals")
        self.totals.setWordWrap(True)
        self.totals.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.hover_info = QLabel("")
        self.hover_info.setObjectName("Hint")
        self.hover_info.setWordWrap(True)
        self.chart = DistributionChart()
        heat_wrap = QHBoxLayout()
        heat_wrap.addWidget(self.heatmap, 0, Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop)
        heat_wrap.addStretch(1)
        right = QWidget()
        right.setObjectName("LikelihoodPanel")
        rv = QVBoxLayout(right)
        rv.setContentsMargins(0, 0, 0, 0)
        rv.addWidget(self._title("Likelihood"))
        rv.addWidget(self.totals)
        rv.addLayout(heat_wrap)
        rv.addWidget(self.legend)
        rv.addSpacing(4)
        rv.addWidget(self.hover_info)
        rv.addWidget(self.chart, 1)
        right.setMinimumWidth(240)

        middle = QHBoxLayout()
        middle.addWidget(tools_box)
        middle.addSpacing(6)
        middle.addWidget(centre, 1)
        middle.addSpacing(6)
        middle.addWidget(right, 1)

        self.samples_title = self._title("Samples: click one to load it")
        self.grid = SampleGrid()
        self.grid.picked.connect(self.pick_sample)
        self.samples_title.hide()
        self.grid.hide()

        self.status = QLabel()
        self.status.setObjectName("ImageStatus")
        self.status.setWordWrap(True)
        self.status.setTextFormat(Qt.TextFormat.RichText)
        self.status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)

        main = QWidget()
        mv = QVBoxLayout(main)
        mv.setContentsMargins(0, 0, 0, 0)
        mv.addLayout(bar)
        mv.addLayout(middle, 1)
        mv.addWidget(self.samples_title)
        mv.addWidget(self.grid)
        mv.addWidget(self.status)

        # No model: how to get one
        self.empty_label = QLabel(EMPTY_TEXT)
        self.empty_label.setObjectName("ImageEmptyState")
        self.empty_label.setWordWrap(True)
        self.empty_label.setTextFormat(Qt.TextFormat.RichText)
        self.empty_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.empty_label.setFixedWidth(600)  # a fixed width lets the wrapped text get its full height
        rescan = QPushButton("Look again")
        rescan.setToolTip("Search the models folders again")
        rescan.clicked.connect(self.refresh_models)
        empty = QWidget()
        ev = QVBoxLayout(empty)
        ev.addStretch(1)
        ev.addWidget(self.empty_label, 0, Qt.AlignmentFlag.AlignHCenter)
        ev.addWidget(rescan, 0, Qt.AlignmentFlag.AlignHCenter)
        ev.addStretch(2)

        self.pages = QStackedWidget()
        self.pages.addWidget(empty)
        self.pages.addWidget(main)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(10, 10, 10, 6)
        layout.addWidget(self.pages)

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

    # --- models ------------------------------------------------------------------------
    def refresh_models(self) -> None:
        current = self.model_combo.currentData()
        problems = []
        try:
            models = [m for m in self.ctx.list_models() if m.kind == "image" and m.usable]
        except ChainruleError as exc:
            models = []
            self._say_error(str(exc))
        except Exception as exc:  # noqa: BLE001 - a broken folder must not take the tab down
            log.exception("listing models failed")
            models = []
            self._say_error(f"Listing models failed: {type(exc).__name__}: {exc}")
        usable = []
        for m in models:
            try:
                self._geometries[m.id] = Geometry.from_card(m.card)
            except ChainruleError as exc:
                problems.append(f"{m.id}: {exc}")
                continue
            self._infos[m.id] = m
            usable.append(m)
        self.model_combo.blockSignals(True)
        self.model_combo.clear()
        for m in usable:
            self.model_combo.addItem(m.id, m.id)
            g = self._geometries[m.id]
            tip = f"{m.card.get('name', m.id)} · {g.describe()}"
            if g.n_classes:
                tip += f" · digits 0–{g.n_classes - 1}"
            self.model_combo.setItemData(self.model_combo.count() - 1, f"{tip}\n{m.path}", Qt.ItemDataRole.ToolTipRole)
        index = self.model_combo.findData(current) if current else -1
        self.model_combo.setCurrentIndex(max(0, index))
        self.model_combo.blockSignals(False)
        self.pages.setCurrentIndex(1 if usable else 0)
        text = EMPTY_TEXT
        if problems:
            text += "<p style='color:#c62828'>Found but not usable: " + html.escape("; ".join(problems)) + "</p>"
        self.empty_label.setText(text)
        # A wrapped rich-text label underestimates its height in a layout: ask it for the real one.
        self.empty_label.setMinimumHeight(self.empty_label.heightForWidth(self.empty_label.width()) + 24)
        self._model_changed()

    def model_ids(self) -> list[str]:
        return [self.model_combo.itemData(i) for i in range(self.model_combo.count())
                if self.model_combo.itemData(i) is not None]

    def has_models(self) -> bool:
        return bool(self.model_ids())

    def _model_changed(self) -> None:
        model_id = self.model_combo.currentData()
        if model_id == self._model_id and self.geom is not None:
            return
        if self.runner.is_busy():
            self.stop()
        geometry = self._geometries.get(model_id) if model_id else None
        old, self._model_id = self.geom, model_id
        if geometry is None:
            self._update_buttons()
            self._update_status()
            return
        self.geom = geometry
        notes: list[str] = []
        if old is None or old == geometry:
            if old is None:
                self.canvas.set_geom(geometry)
        elif (old.height, old.width, old.channels, old.levels) == (geometry.height, geometry.width,
                                                                   geometry.channels, geometry.levels):
            self.canvas.geom = geometry  # same image: the drawing and its history stay
        else:
            pixels, mask, notes = convert_drawing(self.canvas.pixels, self.canvas.mask_layer, old, geometry)
            self.canvas.set_geom(geometry, pixels, mask)
            self._source_size = None
        self._fill_labels(geometry)
        binary = geometry.levels == 2
        self.ink_slider.setVisible(not binary)
        self.ink_caption.setVisible(not binary)
        self._ink_changed()
        zoom = max(1, min(MAX_ZOOM, CANVAS_PIXELS // max(geometry.height, geometry.width)))
        self.zoom_spin.setValue(zoom)
        self.canvas.set_zoom(zoom)
        self.heatmap.set_shape(geometry.height, geometry.width, self._heat_zoom(zoom))
        self.chart.levels = geometry.levels
        self.chart.clear()
        self.hover_info.setText("")
        self.score = None
        self._forget_run_views()
        self._invalidate_score()
        self._update_buttons()
        self._update_status()
        if notes:
            self._say(f"Model {html.escape(model_id)} draws {geometry.describe()} images: the drawing was "
                      + html.escape("; ".join(notes)) + " (undo history cleared).")

    def _fill_labels(self, g: Geometry) -> None:
        current = self.label_combo.currentData()
        self.label_combo.blockSignals(True)
        self.label_combo.clear()
        if g.n_classes:
            self.label_combo.addItem("any", None)
            for i, name in enumerate(g.label_names):
                self.label_combo.addItem(name, i)
            i = self.label_combo.findData(current) if current is not None else 0
            self.label_combo.setCurrentIndex(max(0, i))
            self.label_combo.setEnabled(True)
        else:
            self.label_combo.addItem("— (unconditional)", None)
            self.label_combo.setEnabled(False)
        self.label_combo.blockSignals(False)

    def label(self) -> int | None:
        return self.label_combo.currentData()

    def set_label(self, label: int | None) -> bool:
        """Choose the digit; a label the model does not know is refused with a message."""
        g = self.geom
        if label is not None and (g is None or not 0 <= int(label) < g.n_classes):
            known = f"digits 0–{g.n_classes - 1}" if g is not None and g.n_classes else "no labels (unconditional)"
            self._say_error(f"label {label} is out of range: model {self._model_id!r} knows {known}")
            return False
        i = self.label_combo.findData(label)
        if i < 0:
            return False
        self.label_combo.setCurrentIndex(i)
        return True

    def _label_changed(self) -> None:
        self._invalidate_score()
        self._update_status()

    def _heat_zoom(self, zoom: int) -> int:
        g = self.geom
        if g is None:
            return zoom
        return max(1, min(zoom, 260 // max(g.height, g.width)))

    def _canvas_zoomed(self, zoom: int) -> None:
        if self.zoom_spin.value() != zoom:
            self.zoom_spin.setValue(zoom)

    # --- tools ---------------------------------------------------------------------------
    def set_tool(self, tool: str) -> None:
        if tool not in TOOLS:
            raise ValueError(f"unknown tool {tool!r}")
        self.canvas.tool = tool
        self.tool_buttons[tool].setChecked(True)
        if tool in ("mask", "unmask") and not self.show_mask_check.isChecked():
            self.show_mask_check.setChecked(True)

    def _ink_changed(self) -> None:
        levels = self.geom.levels if self.geom is not None else 2
        self.canvas.ink = ink_value(self.ink_slider.value(), levels)

    def _speed_changed(self, index: int) -> None:
        name, rate = SPEEDS[index]
        self.speed_label.setText(name)
        self.pace.values_per_second = rate

    def set_speed(self, values_per_second: float) -> None:
        """The slider position closest to `values_per_second` (inf: instant)."""
        best = min(range(len(SPEEDS)), key=lambda i: abs(math.log10(min(SPEEDS[i][1], 1e9))
                                                          - math.log10(min(max(values_per_second, 1e-3), 1e9))))
        self.speed_slider.setValue(best)

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

    # --- loading ---------------------------------------------------------------------------
    def load_image(self, path: str | None = None) -> bool:
        if self.geom is None or self.runner.is_busy():
            return False
        if path is None:
            path, _ = QFileDialog.getOpenFileName(self, "Load an image", QDir.homePath(),
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

    # --- runs ----------------------------------------------------------------------------
    def generate(self) -> Run | None:
        return self._start_run("generate")

    def complete(self) -> Run | None:
        return self._start_run("complete")

    def inpaint(self) -> Run | None:
        return self._start_run("inpaint")

    def is_running(self) -> bool:
        return self.runner.is_busy()

    def is_idle(self) -> bool:
        """No run, no scoring and no scoring waiting to start."""
        return not (self.runner.is_busy() or self.score_runner.is_busy() or self._score_timer.isActive())

    def stop(self) -> None:
        self.runner.stop()  # first: not one more event is delivered after this
        self._cancel.set()  # then wake the worker from its pacing wait and end the loop

    def _start_run(self, kind: str) -> Run | None:
        info = self.chosen_model()
        g = self.geom
        if info is None or g is None:
            return None
        if self.runner.is_busy():
            self._say_error("A run is in progress: stop it first.")
            return None
        pixels, layer = self.canvas.state()
        config = self.ctx.decoding_config()
        label = self.label()
        try:
            from engines.image.sampler import check_config

            check_config(config)
            if label is not None and not 0 <= label < g.n_classes:
                raise InputError(f"label {label} is out of range: model {info.id!r} knows digits 0–{g.n_classes - 1}")
            if kind == "complete":
                init, mask = pixels, completion_mask(pixels)
            elif kind == "inpaint":
                init, mask = pixels, inpaint_mask(layer, (g.height, g.width))
            else:
                init = mask = None
        except ChainruleError as exc:  # nothing is touched
            self._say_error(str(exc))
            return None
        candidates = self.candidates_spin.value() if kind == "inpaint" and self.posterior_check.isChecked() else None
        if candidates is not None:
            from engines.image.commands import candidates_config_problems

            problems = candidates_config_problems(config)
            if problems:
                self._say_error("Posterior-aware inpainting needs plain sampling: set temperature 1 and turn off "
                                f"the filters in the Decoding panel (now: {', '.join(problems)}), or untick it.")
                return None
        count = self.samples_spin.value()
        seed = resolve_seed(config)
        cli = None  # Complete and Inpaint start from the canvas, which the CLI reads from files
        if kind == "generate":
            cli = shlex.join(["chainrule", *work.cli_arguments(info, config, seed, label, count)])
        run = Run(kind, info.id, seed, count, candidates, label, (pixels, layer), cli)
        run.chain = build_chain(config, seed).name
        self.run = run
        self._shown_sample = None
        self._live_probs = None
        self._cancel = cancel = threading.Event()
        self._score_timer.stop()
        self.score_runner.stop()
        self.heatmap.set_stale(True)
        if self.score is None:
            self.heatmap.clear("The likelihood is computed when the painting is done")
        self.canvas.set_editable(False)
        if count > 1:
            self.grid.reset_samples(count, g.levels, pixels if init is not None else g.blank())
            self.grid.show()
            self.samples_title.show()
        else:
            self.grid.clear()
            self.grid.hide()
            self.samples_title.hide()
        pace = self.pace
        self.runner.start(
            lambda: work.generate_events(info, config, seed, label=label, init=init, mask=mask, count=count,
                                         candidates=candidates, pace=pace, cancel=cancel),
            on_events=lambda batch: self._on_events(run, batch),
            on_finished=lambda: self._on_end(run, "done"),
            on_stopped=lambda: self._on_end(run, "stopped"),
            on_errored=lambda message: self._on_error(run, message),
        )
        self._update_buttons()
        self._update_status()
        return run

    def _on_events(self, run: Run, batch: list) -> None:
        if run is not self.run:
            return
        painted = False
        last = None
        for ev in batch:
            if isinstance(ev, work.PixelStep):
                imgs = run.images.get(ev.sample)
                if imgs is None:
                    continue
                e = ev.event
                imgs[:, e.channel, e.row, e.col] = e.values
                run.recorders[ev.sample].step(imgs)
                run.n += 1
                painted = True
                last = ev
            elif isinstance(ev, work.SampleStarted):
                run.current = ev.sample
                run.images[ev.sample] = ev.images.copy()
                rec = work.FrameRecorder(run.n_values)
                rec.start(ev.images)
                run.recorders[ev.sample] = rec
                if not run.touched:  # the canvas is about to change: the drawing before is one undo step
                    self.canvas.history.push(run.before)
                    run.touched = True
                self._shown_sample = ev.sample
                self.canvas.set_pixels(ev.images[0])
                painted = True
            elif isinstance(ev, work.SampleDone):
                self._sample_done(run, ev)
            elif isinstance(ev, work.RunStarted):
                run.chain, run.method, run.n_values = ev.chain, ev.method, ev.n_values
                run.t0 = ev.t
        if painted and run.current in run.images and not run.results.get(run.current):
            imgs = run.images[run.current]
            self.canvas.set_pixels(imgs[0])
            if last is not None and last.sample == run.current:
                e = last.event
                self.canvas.set_marker(e.row, e.col)
                if e.probs is not None:
                    self._live_probs = (e.row, e.col, e.probs[0])
                    self._show_live_distribution()
            if run.count > 1:
                self.grid.set_image(run.current, imgs[0])
        self._update_progress()

    def _sample_done(self, run: Run, ev: work.SampleDone) -> None:
        run.results[ev.sample] = ev
        rec = run.recorders.get(ev.sample)
        if rec is not None:
            final = run.images[ev.sample].copy()
            if ev.candidates is not None:
                final = ev.candidates.copy()
            rec.finish(final)
        if run.count > 1:
            self.grid.set_image(ev.sample, ev.image, tooltip=self._sample_tooltip(run, ev))
        self._shown_sample = ev.sample
        self.canvas.set_pixels(ev.image)
        self.canvas.set_marker(None)

    def _sample_tooltip(self, run: Run, ev: work.SampleDone) -> str:
        tip = (f"sample {ev.sample + 1} · seed {ev.seed}\nlog p(image) = {ev.total_logprob:.2f} nats "
               f"({ev.bits_per_dim:.4f} bits/dim)")
        if ev.candidates is not None and ev.known_after_logprobs is not None:
            tip += (f"\ncandidate {ev.chosen + 1} of {len(ev.candidates)} chosen: log p(known pixels after the mask) "
                    f"= {ev.known_after_logprobs[ev.chosen]:.2f} nats")
        return tip

    def _on_end(self, run: Run, state: str) -> None:
        if run is not self.run:
            return
        run.state = state
        run.t_end = time.perf_counter()
        for i, rec in run.recorders.items():  # a stopped painting ends on what was painted
            if i not in run.results:
                rec.finish(run.images[i])
        self.canvas.set_marker(None)
        self.canvas.set_editable(True)
        if state == "done" and run.count > 1 and 0 in run.results:
            self._show_sample(run, 0)
        elif run.touched:
            sample = self._shown_sample if self._shown_sample is not None else run.current
            self._set_gif(run, sample)
        self._live_probs = None
        self._refresh_pixel_view()
        if run.touched:
            self.canvas.historyChanged.emit()
            self._invalidate_score()
        else:
            self.heatmap.set_stale(False)
        self._update_buttons()
        self._update_status()

    def _on_error(self, run: Run, message: str) -> None:
        if run is not self.run:
            return
        self._on_end(run, "error")
        self._say_error(message)  # the drawing stays (a partial painting is one Undo away)

    def _show_sample(self, run: Run, sample: int) -> None:
        done = run.results[sample]
        self.canvas.set_pixels(done.image)
        self._shown_sample = sample
        self.grid.select(sample)
        self._set_gif(run, sample)

    def _set_gif(self, run: Run, sample: int) -> None:
        self._gif_frames = run.frames(sample)
        seed = run.seed + sample
        self._gif_title = f"{run.model_id}-seed{seed}"

    def pick_sample(self, index: int) -> bool:
        """Load sample `index` of the last run into the canvas (one undo step)."""
        run = self.run
        if run is None or index not in run.results:
            if run is not None and self.runner.is_busy():
                self._say_error("That sample is not finished yet: wait for the run, or stop it.")
            return False
        if self.runner.is_busy():
            self._say_error("Wait for the run to finish (or stop it) before picking a sample.")
            return False
        done = run.results[index]
        self.canvas.set_state(pixels=done.image)
        self._shown_sample = index
        self.grid.select(index)
        self._set_gif(run, index)
        self._update_status()
        return True

    def _forget_run_views(self) -> None:
        self.run = None
        self._shown_sample = None
        self._gif_frames = []
        self.grid.clear()
        self.grid.hide()
        self.samples_title.hide()

    # --- likelihood ------------------------------------------------------------------------
    def _invalidate_score(self) -> None:
        self.heatmap.set_stale(True)
        self._schedule_score()

    def _schedule_score(self) -> None:
        if self._closed or self.geom is None or self._model_id not in self._infos:
            return
        self._watch_window()
        if not self.runner.is_busy():
            self._score_timer.start()

    def _start_score(self) -> None:
        if self._closed or self.runner.is_busy():
            return
        info = self._infos.get(self._model_id) if self._model_id else None
        if info is None:
            return
        pixels = self.canvas.pixels.copy()
        label = self.label()
        self.score_runner.start(lambda: work.score_events(info, pixels, label),
                                on_events=self._on_score, on_errored=self._score_failed)

    def rescore(self) -> None:
        """Score the canvas now (no waiting)."""
        self._score_timer.stop()
        self._start_score()

    def _score_current(self, score: work.ScoreDone | None) -> bool:
        return (score is not None and score.model_id == self._model_id and score.label == self.label()
                and score.pixels.shape == self.canvas.pixels.shape and np.array_equal(score.pixels, self.canvas.pixels))

    def _on_score(self, batch: list) -> None:
        for ev in batch:
            if not isinstance(ev, work.ScoreDone):
                continue
            if ev.model_id != self._model_id or ev.pixels.shape != self.canvas.pixels.shape:
                continue
            self.score = ev
            nll = ev.nll_bits
            vmax = nice_vmax(nll)
            self.heatmap.set_map(nll, vmax)
            self.legend.set_vmax(vmax)
            current = self._score_current(ev)
            self.heatmap.set_stale(not current)
            n = ev.logprobs.size
            self.totals.setStyleSheet("")
            self.totals.setText(
                f"<b>{ev.bits_per_dim:.4f} bits/dim</b> · NLL {-ev.total:.2f} nats "
                f"({bits(-ev.total):.1f} bits) over {n} values"
                + ("" if ev.label is None else f" · digit {html.escape(self._label_name(ev.label))}")
                + ("" if current else " · <i>updating…</i>"))
            if not current:
                self._schedule_score()
            if self._hover is not None and not self.runner.is_busy():
                self.show_pixel(*self._hover)

    def _label_name(self, label: int) -> str:
        g = self.geom
        return g.label_names[label] if g is not None and 0 <= label < len(g.label_names) else str(label)

    def _score_failed(self, message: str) -> None:
        self.totals.setStyleSheet("color:#c62828;")
        self.totals.setText(html.escape(f"Scoring failed: {message}"))
        self.heatmap.clear("No likelihood: scoring failed")

    def heatmap_total(self) -> float | None:
        """log p(image) in nats of the image on the heatmap (None before a score)."""
        return None if self.score is None else self.score.total

    # --- hover --------------------------------------------------------------------------------
    def _hovered(self, row: int, col: int) -> None:
        self.heatmap.set_hover(row, col)
        self._hover = (row, col) if row >= 0 else None
        self._refresh_pixel_view()

    def _refresh_pixel_view(self) -> None:
        """The chart: the hovered pixel's distribution, else the value being sampled, else a hint."""
        if self._hover is not None and not self.runner.is_busy():
            self.show_pixel(*self._hover)
        elif self._live_probs is not None:
            self._show_live_distribution()
        else:
            self.hover_info.setText("")
            self.chart.clear("Hover a pixel to see what the model expected there.")

    def show_pixel(self, row: int, col: int) -> None:
        """The model's distribution at pixel (row, col) of the scored image, in the chart."""
        score, g = self.score, self.geom
        if g is None:
            return
        value = self.canvas.pixels[:, row, col]
        vtext = ", ".join(str(int(v)) for v in value)
        if score is None or score.pixels.shape != self.canvas.pixels.shape:
            self.hover_info.setText(f"pixel ({row}, {col}) · value {vtext} · not scored yet")
            self.chart.clear("The likelihood of this image is being computed…")
            return
        scored = score.pixels[:, row, col]
        lp = float(score.logprobs[:, row, col].sum())
        stale = "" if np.array_equal(scored, value) and self._score_current(score) else " (before your last change)"
        self.hover_info.setText(
            f"pixel ({row}, {col}) · value {', '.join(str(int(v)) for v in scored)} · "
            f"−log₂ p = {bits(-lp):.3f} bits (p = {math.exp(lp):.4f}){stale}")
        self.chart.set_distribution(score.probs[row, col], scored, levels=g.levels)

    def _show_live_distribution(self) -> None:
        if self._live_probs is None:
            return
        r, c, probs = self._live_probs
        self.hover_info.setText(f"sampling pixel ({r}, {c}): the model's distribution")
        self.chart.set_distribution(probs[None], None)

    # --- export ----------------------------------------------------------------------------------
    def export_png(self, path: str | None = None) -> bool:
        g = self.geom
        if g is None:
            return False
        if path is None:
            start = str(Path(QDir.homePath()) / f"{self._export_stem()}.png")
            path, _ = QFileDialog.getSaveFileName(self, "Export the image as PNG", start, "PNG (*.png);;All files (*)")
            if not path:
                return False
        if Path(path).suffix.lower() != ".png":
            path = str(path) + ".png"
        from engines.image.png import write_image

        return self._write_export(path, lambda: write_image(path, self.canvas.pixels, g.levels),
                            f"Exported the image ({g.width}x{g.height})")

    def export_gif(self, path: str | None = None) -> bool:
        g = self.geom
        if g is None:
            return False
        if len(self._gif_frames) < 2:
            self._say_error("Nothing to animate: Generate, Complete or Inpaint first; the painting of the sample "
                            "on the canvas is exported.")
            return False
        if path is None:
            start = str(Path(QDir.homePath()) / f"{self._gif_title or self._export_stem()}.gif")
            path, _ = QFileDialog.getSaveFileName(self, "Export the painting as an animated GIF", start,
                                                  "GIF (*.gif);;All files (*)")
            if not path:
                return False
        if Path(path).suffix.lower() != ".gif":
            path = str(path) + ".gif"
        return self._write_export(path, lambda: work.write_gif(path, self._gif_frames, g.levels),
                            lambda n: f"Exported the painting ({n} frames)")

    def _export_stem(self) -> str:
        run = self.run
        if run is not None and self._shown_sample is not None:
            return f"{run.model_id}-seed{run.seed + self._shown_sample}"
        return f"{self._model_id or 'image'}-drawing"

    # --- status ------------------------------------------------------------------------------------
    def _update_progress(self) -> None:
        run = self.run
        if run is None or run.state != "running":
            return
        total = max(1, run.n_values * run.count)
        elapsed = time.perf_counter() - run.t0
        rate = f" · {run.n / elapsed:.0f} values/s" if elapsed > 0.05 and run.n else ""
        sample = f"sample {run.current + 1}/{run.count} · " if run.count > 1 else ""
        self.progress_label.setText(f"{sample}{run.n}/{total} values{rate}")

    def _update_status(self) -> None:
        run = self.run
        if run is None:
            cfg = self.ctx.decoding_config()
            seed = f"fixed seed {cfg.seed}" if cfg.seed is not None else "a fresh seed each run (shown here)"
            if self.geom is None:
                self.status.setText("")
                return
            self._say(f"Draw with the brush, then Complete; or Generate from nothing. Next run: {seed}.")
            self.progress_label.setText("")
            return
        what = {"generate": "Generate", "complete": "Complete", "inpaint": "Inpaint"}[run.kind]
        parts = [f"<b>{what} · {run.seeds_text()}</b>"]
        if run.label is not None:
            parts.append(f"digit {html.escape(self._label_name(run.label))}")
        if run.chain:
            parts.append(html.escape(run.chain))
        if run.method:
            parts.append(f"{run.method} sampler")
        if run.candidates:
            parts.append(f"posterior-aware, K = {run.candidates}")
        state = {"running": "painting…", "done": "done", "stopped": "stopped (what was painted is kept)",
                 "error": "failed"}[run.state]
        if run.state != "running" and run.t_end is not None:
            state += f" in {run.t_end - run.t0:.2f} s"
        parts.append(state)
        text = " · ".join(parts)
        shown = run.results.get(self._shown_sample) if self._shown_sample is not None else None
        if shown is not None:
            text += (f"<br>sample {shown.sample + 1}: seed {shown.seed} · "
                     f"log p(image) = {shown.total_logprob:.2f} nats "
                     f"({shown.bits_per_dim:.4f} bits/dim) · {shown.n_sampled} values sampled")
            if shown.candidates is not None and shown.known_after_logprobs is not None:
                k = shown.chosen
                text += (f"<br>posterior-aware: candidate {k + 1} of {len(shown.candidates)} chosen, "
                         f"log p(known pixels after the mask) = {shown.known_after_logprobs[k]:.2f} nats "
                         f"over {shown.n_known_after} values · weight {shown.weights[k]:.3f} · "
                         f"effective sample size {shown.effective_sample_size:.1f}")
        if run.cli and run.state == "done":
            text += f"<br><span style='color:#6b7280'>CLI: <code>{html.escape(run.cli)}</code></span>"
        if run.state != "running":
            self.progress_label.setText(f"{run.n} values painted")
        self._say(text)

    # --- buttons -------------------------------------------------------------------------------------
    def _update_buttons(self) -> None:
        has_model = self.geom is not None and self._model_id in self._infos
        busy = self.runner.is_busy()
        for b in (self.generate_button, self.complete_button, self.inpaint_button):
            b.setEnabled(has_model and not busy)
        self.stop_button.setEnabled(busy)
        self.undo_button.setEnabled(not busy and self.canvas.history.can_undo())
        self.redo_button.setEnabled(not busy and self.canvas.history.can_redo())
        for w in (self.clear_button, self.clear_mask_button, self.load_button, self.load_mask_button,
                  self.samples_spin):
            w.setEnabled(has_model and not busy)
        self.model_combo.setEnabled(not busy)
        self.label_combo.setEnabled(has_model and not busy and bool(self.geom.n_classes))
        self.export_png_button.setEnabled(has_model and not busy)
        self.export_gif_button.setEnabled(not busy and len(self._gif_frames) > 1)

    # --- lifetime ---------------------------------------------------------------------------------------
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


@register_tab("Image", order=20)
def make_image_tab(ctx: StudioContext) -> QWidget:
    return ImageTab(ctx)
