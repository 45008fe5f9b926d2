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
from PySide6.QtCore import QDir, Qt
from PySide6.QtWidgets import (
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
    QSpinBox,
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
    Geometry,
    bits,
    completion_mask,
    convert_drawing,
    ink_value,
    inpaint_mask,
)
from studio.image.drawing_tab import DrawingTabMixin
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


class ImageTab(DrawingTabMixin, StatusLineMixin, ModelPickerMixin, QWidget):
    MODEL_KIND = "image"
    SPEEDS = SPEEDS

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
        self._init_scoring_lifetime(SCORE_DELAY_MS)
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
        tools = self._build_tool_buttons(TOOL_TIPS, text_only=True)
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
        edits = self._build_edit_buttons(
            "Load image…", "Any size or format: converted to the model's size and mode (you are told how)")
        tools_box = self._build_tools_box("ImageTools", tools, form, edits, 176)

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
        self._build_pages(main, EMPTY_TEXT, "ImageEmptyState")

    # --- models ------------------------------------------------------------------------
    def refresh_models(self) -> None:
        current = self.model_combo.currentData()
        problems = []
        models = [m for m in self._usable_models() if m.kind == "image"]
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
        self._show_models_found(bool(usable), EMPTY_TEXT, problems)
        self._model_changed()

    def has_models(self) -> bool:
        return bool(self.model_ids())

    def _model_changed(self) -> None:
        taken = self._take_chosen_model()
        if taken is None:
            return
        model_id, old, geometry = taken
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

    # --- ink -----------------------------------------------------------------------------
    def _ink_changed(self) -> None:
        levels = self.geom.levels if self.geom is not None else 2
        self.canvas.ink = ink_value(self.ink_slider.value(), levels)

    # --- runs ----------------------------------------------------------------------------
    def generate(self) -> Run | None:
        return self._start_run("generate")

    def complete(self) -> Run | None:
        return self._start_run("complete")

    def inpaint(self) -> Run | None:
        return self._start_run("inpaint")

    def _start_run(self, kind: str) -> Run | None:
        info, g = self._model_for_run(), self.geom
        if info is None:
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


@register_tab("Image", order=20)
def make_image_tab(ctx: StudioContext) -> QWidget:
    return ImageTab(ctx)
