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

Requests
    Every run is an `engines.image.request.ImageRequest` built from the widgets, the tab's own
    decoding config (which starts from the model card's defaults), and the canvas as init image
    and mask; `engines.image.request.run` carries it out, as for `chainrule generate image`. Runs
    are recorded in the studio's history (their PNGs carry their requests); `apply_request`
    restores the tab to a request (an opened or dropped PNG, a History entry), and
    `history_state` / `restore_history_state` keep the canvas, the settings and the last grid
    across restarts.

Export: the image as PNG (carrying the request of the sample on the canvas while it is unedited,
so `chainrule generate --from` regenerates it), optionally with an N-times larger copy
NAME@Nx.png beside it; and the last painting as an animated GIF.

What a run is and how it is described lives in studio/image/runs.py, the likelihood
panel in studio/image/likelihood_panel.py, what the Image and Density tabs share (tools,
canvas, loading, undo, speed, rescoring) in studio/image/drawing_tab.py.
"""

from __future__ import annotations

import html
import math
import os
import shlex
import threading
import time
from typing import Any

import numpy as np
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QComboBox, QDoubleSpinBox, QGridLayout, QLabel, QSlider, QWidget

from engines.decoding import build_chain
from engines.errors import ChainruleError, InputError
from engines.image.request import ImageRequest, PixelArray, candidates_config_problems
from studio.context import StudioContext
from studio.image import work
from studio.image.canvas import MAX_ZOOM
from studio.image.drawing import Geometry, completion_mask, convert_drawing, ink_value, inpaint_mask
from studio.image.drawing_tab import DrawingTabMixin
from studio.image.likelihood_panel import LikelihoodPanelMixin
from studio.image.reads_as import reads_as_text
from studio.image.runs import Run, sample_tooltip
from studio.image.samples_view import SampleGrid
from studio.model_picker import ModelPickerMixin
from studio.status_line import StatusLineMixin
from studio.tabs import register_tab
from studio.widgets import (
    STRETCH,
    check_box,
    column,
    compact_combo,
    hbox,
    hint_label,
    labelled_row,
    push_button,
    save_path,
    section_title,
    spin_box,
    status_label,
)

# Painting speeds: sampled values per second (inf: as fast as the model goes).
SPEEDS: tuple[tuple[str, float], ...] = (
    ("10 px/s", 10.0), ("30 px/s", 30.0), ("100 px/s", 100.0), ("300 px/s", 300.0),
    ("1000 px/s", 1000.0), ("3000 px/s", 3000.0), ("instant", math.inf),
)
DEFAULT_SPEED = 3
# Export PNG sizes: the model's size only, or also a display copy N times larger (NAME@Nx.png)
EXPORT_SCALES: tuple[tuple[str, int], ...] = (("model size", 1), ("+ 4× copy", 4), ("+ 8× copy", 8),
                                             ("+ 16× copy", 16))
HISTORY_MAX_SAMPLES = 64  # samples of the last grid kept in the tab's saved state
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


class ImageTab(LikelihoodPanelMixin, DrawingTabMixin, StatusLineMixin, ModelPickerMixin, QWidget):
    MODEL_KIND = "image"
    SPEEDS = SPEEDS
    IDLE_HINT = "Draw with the brush, then Complete; or Generate from nothing."
    TAB_TITLE = "Image"

    def prefers_model(self, info) -> bool:
        """A fresh Image tab opens on a digit-conditioned model (its card's conditioning has classes:
        mnist-pixelcnn): pick a digit, and the guided drawing shows what the tab does."""
        geometry = self._geometries.get(info.id)
        return geometry is not None and geometry.n_classes > 0

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
        ctx.decodingConfigChanged.connect(lambda key, _c: key == "image" and self._update_status())
        self.runner.busyChanged.connect(lambda _b: self._update_buttons())
        self.refresh_models()

    # --- widgets -----------------------------------------------------------------------
    def _build(self) -> None:
        blank = Geometry(28, 28, 1, 2, "bernoulli", 0)
        # Top bar
        self.model_combo = compact_combo(16, "Image models found in the models folders (see the Models tab)")
        self.model_combo.currentIndexChanged.connect(lambda _i: self._model_changed())
        self.label_combo = QComboBox()
        self.label_combo.setToolTip("The digit the model draws (a class-conditional model); "
                                    "“any” samples without a label")
        self.label_combo.currentIndexChanged.connect(lambda _i: self._label_changed())
        self.guidance_spin = QDoubleSpinBox()
        self.guidance_spin.setRange(0.0, 20.0)
        self.guidance_spin.setDecimals(1)
        self.guidance_spin.setSingleStep(0.5)
        self.guidance_spin.setValue(0.0)
        self.guidance_spin.setSpecialValueText("off")
        self.guidance_spin.setToolTip(
            "Classifier-free guidance toward the digit: each pixel is drawn from log p(x|digit) + w (log p(x|digit) "
            "- log p(x)). Higher w: more clearly the digit asked for, less likely under the model. The likelihoods "
            "shown stay those of the unguided conditional model. Needs a digit (not “any”).")
        self.samples_spin = spin_box(1, work.MAX_SAMPLES, 1, "Samples per run (sample i uses seed + i); more than "
                                     "one shows a grid to choose from")
        self._build_speed_controls(DEFAULT_SPEED, 120, 64,
                                   "How fast the image paints itself (changes a running painting too)")
        bar = labelled_row(("Model:", (self.model_combo, 2)), ("Digit:", self.label_combo),
                           ("Guidance:", self.guidance_spin), ("Samples:", self.samples_spin),
                           ("Speed:", self.speed_slider, self.speed_label),
                           spacing=10)

        # Tools
        tools = self._build_tool_buttons(TOOL_TIPS, text_only=True)
        self.ink_slider = QSlider(Qt.Orientation.Horizontal)
        self.ink_slider.setRange(1, 255)
        self.ink_slider.setValue(255)
        self.ink_slider.setToolTip("Ink intensity (grey models); going over a stroke never lightens it")
        self.ink_caption = QLabel("Ink:")
        self.zoom_spin = spin_box(1, MAX_ZOOM, None, "Zoom (Ctrl+wheel on the canvas)", suffix="×")
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
        self._build_canvas(blank, 240)
        self.canvas.zoomChanged.connect(self._canvas_zoomed)
        self.ink_slider.valueChanged.connect(lambda _v: self._ink_changed())
        self.zoom_spin.valueChanged.connect(self.canvas.set_zoom)

        self.generate_button = push_button(
            "Generate", "Draw from nothing, pixel by pixel (the decoding panel's settings)", self.generate)
        self.complete_button = push_button(
            "Complete", "Keep your drawing up to its last inked pixel (row by row from the top) and let the model "
            "draw everything after it", self.complete)
        self.inpaint_button = push_button(
            "Inpaint", "Regenerate the red-masked pixels; every other pixel is kept exactly", self.inpaint)
        self.stop_button = push_button("Stop", "Stop at once; what was painted is kept", self.stop)
        self.posterior_check = check_box(
            "Inpaint posterior-aware, K =", "Inpaint draws K candidates and picks one in proportion to how well it "
            "explains the known pixels after the mask (which raster-order sampling cannot see): an approximate "
            "sample of p(masked | everything known). On by default: on MNIST middle-band inpainting it is read as "
            "the true digit more often than plain inpainting (the model card's recognition figures). It needs the "
            "model's own conditionals: under a temperature, a filter or guidance, Inpaint runs plainly and says so. "
            "Complete never uses it: nothing known follows the part it draws.", checked=True)
        self.candidates_spin = spin_box(2, work.MAX_CANDIDATES, 8, "Candidates per inpainting")
        self.export_png_button = push_button(
            "Export PNG…", "The image on the canvas at the model's size", self.export_png)
        self.export_scale_combo = QComboBox()
        for text, scale in EXPORT_SCALES:
            self.export_scale_combo.addItem(text, scale)
        self.export_scale_combo.setToolTip(
            "Export PNG writes the image at the model's size; a larger size adds NAME@Nx.png beside it, scaled "
            "without smoothing. Both carry the run's request when the canvas shows an unedited sample.")
        self.export_gif_button = push_button(
            "Export GIF…", "An animation of the painting of the sample on the canvas", self.export_gif)
        self.progress_label = hint_label()
        centre = column(
            section_title("Canvas"), (self.canvas_scroll, 1), self._build_reads_as(),
            hbox(self.generate_button, self.complete_button, self.inpaint_button, self.stop_button, STRETCH),
            hbox(self.posterior_check, self.candidates_spin, STRETCH),
            hbox(self.progress_label, STRETCH, self.export_png_button, self.export_scale_combo,
                 self.export_gif_button))

        # Likelihood
        right = self._build_likelihood_panel()
        middle = hbox(tools_box, 6, (centre, 1), 6, (right, 1))

        self.samples_title = section_title("Samples: click one to load it")
        self.grid = SampleGrid()
        self.grid.picked.connect(self.pick_sample)
        self.samples_title.hide()
        self.grid.hide()

        self.status = status_label("ImageStatus")
        main = column(bar, (middle, 1), self.samples_title, self.grid, self.status)

        # No model: how to get one
        self._build_pages(main, EMPTY_TEXT, "ImageEmptyState")

    # --- models ------------------------------------------------------------------------
    def refresh_models(self) -> None:
        problems = []
        usable = []
        for m in self._usable_models("image"):
            try:
                self._geometries[m.id] = Geometry.from_card(m.card)
            except ChainruleError as exc:
                problems.append(f"{m.id}: {exc}")
                continue
            self._infos[m.id] = m
            usable.append(m)
        self._fill_model_combo((m.id, m.id, self._model_tooltip(m)) for m in usable)
        self._show_models_found(bool(usable), EMPTY_TEXT, problems)
        self._find_reader()
        self._model_changed()
        self._update_reads_as()  # the same model (no change) may have a recogniser now

    def _model_tooltip(self, m) -> str:
        g = self._geometries[m.id]
        tip = f"{m.card.get('name', m.id)} · {g.describe()}"
        if g.n_classes:
            tip += f" · digits 0–{g.n_classes - 1}"
        return f"{tip}\n{m.path}"

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
        from engines.image.sampler import card_guidance

        info = self._infos.get(model_id)
        self.guidance_spin.setValue(card_guidance(info.card) if info is not None else 0.0)
        # the tab's decoding config starts from this model's card (top-p set for text never reaches it)
        self.ctx.adopt_model_defaults(self.MODEL_KIND, info.card.get("decoding_defaults") if info else None)
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
        self._update_reads_as()
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
        self._update_buttons()  # guidance needs a digit
        self._update_status()

    def _label_name(self, label: int) -> str:
        g = self.geom
        return g.label_names[label] if g is not None and 0 <= label < len(g.label_names) else str(label)

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
        try:
            request, plain_because = self._request_for(kind, info, pixels, layer)
        except ChainruleError as exc:  # nothing is touched
            self._say_error(str(exc))
            return None
        cli = None  # Complete and Inpaint start from the canvas, which the CLI reads from files
        if kind == "generate":
            cli = shlex.join(["chainrule", *request.to_command(info)])
        run = Run(kind, request, (pixels, layer), cli)
        run.plain_because = plain_because
        run.chain = build_chain(request.decoding, request.seed).name + (
            f" · guidance {run.guidance:g}" if run.guidance else "")
        run.run_id = self.ctx.record_run_started(self.MODEL_KIND, request.to_json())
        self._live_probs = None
        cancel = self._begin_run(run)
        self.heatmap.set_stale(True)
        if self.score is None:
            self.heatmap.clear("The likelihood is computed when the painting is done")
        count = request.count
        if count > 1:
            self.grid.reset_samples(count, g.levels, pixels if request.init is not None else g.blank())
            self.grid.show()
            self.samples_title.show()
        else:
            self.grid.clear()
            self.grid.hide()
            self.samples_title.hide()
        pace = self.pace
        self._start_on_runner(lambda: work.generate_events(info, request, pace=pace, cancel=cancel), run)
        self._update_buttons()
        self._update_status()
        return run

    def _request_for(self, kind: str, info, pixels: np.ndarray, layer: np.ndarray) -> tuple[ImageRequest, str]:
        """The resolved ImageRequest a `kind` run of the canvas makes, from the widgets and the tab's
        decoding config, and why Inpaint runs plainly when posterior-aware was asked for ('' if not).
        InputError / DecodingError when the settings or the canvas cannot make a run."""
        g = self.geom
        config = self.ctx.decoding_config(self.MODEL_KIND)
        label = self.label()
        if label is not None and not 0 <= label < g.n_classes:
            raise InputError(f"label {label} is out of range: model {info.id!r} knows digits 0–{g.n_classes - 1}")
        if kind == "complete":
            init, mask = pixels, completion_mask(pixels)
        elif kind == "inpaint":
            init, mask = pixels, inpaint_mask(layer, (g.height, g.width))
        else:
            init = mask = None
        guidance = self.guidance_spin.value() if label is not None else 0.0
        candidates, plain_because = None, ""
        if kind == "inpaint" and self.posterior_check.isChecked():
            candidates = self.candidates_spin.value()
            problems = candidates_config_problems(config) + ([f"guidance {guidance:g}"] if guidance > 0 else [])
            if problems:  # weights are only right for the model's own conditionals: inpaint plainly, and say so
                candidates = None
                plain_because = f"plain, not posterior-aware: {', '.join(problems)}"
        request = ImageRequest(
            model=info.id, decoding=config, count=self.samples_spin.value(), label=label, guidance=guidance,
            init=None if init is None else PixelArray.of(init),
            mask=None if mask is None else PixelArray.of(np.asarray(mask, np.uint8)), candidates=candidates)
        return request.resolved(info), plain_because

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
                self._reads_as_waiting()
                painted = True
            elif isinstance(ev, work.SampleDone):
                self._sample_done(run, ev)
            elif isinstance(ev, work.RunStarted):
                run.chain, run.method, run.n_values = ev.chain, ev.method, ev.n_values
                if run.guidance:
                    run.chain += f" · guidance {run.guidance:g} (likelihoods: the unguided model's)"
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
        verdict = run.verdicts[ev.sample] = self._judge_sample(ev.image)
        if run.count > 1:
            tip = sample_tooltip(ev)
            self.grid.set_image(ev.sample, ev.image, tooltip=tip + (f"\n{reads_as_text(verdict)}" if verdict else ""),
                                text=f"{ev.sample + 1}" + (f": {verdict.short()}" if verdict else ""))
        self._shown_sample = ev.sample
        self.canvas.set_pixels(ev.image)
        self.canvas.set_marker(None)
        if verdict is not None:
            self._show_verdict(verdict)

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
        self._record_finished(run, state)
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
        self._update_reads_as()  # the canvas as the run left it (a stopped painting: what was painted)

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
        if not self._may_pick_sample(run is not None and index in run.results):
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

    # --- export ----------------------------------------------------------------------------------
    def export_png(self, path: str | None = None, scale: int | None = None) -> bool:
        """The canvas as a PNG at the model's size and, at a display scale above 1 (the Export size
        choice), a NAME@Nx.png copy beside it (nearest neighbour). A sample of the last run, unedited,
        carries the request that makes it (`chainrule generate --from` regenerates it)."""
        g = self.geom
        if g is None:
            return False
        path = save_path(self, path, "Export the image as PNG", f"{self._export_stem()}.png", "PNG (*.png)")
        if path is None:
            return False
        scale = self.export_scale() if scale is None else scale
        from engines.image.png import write_sample
        from engines.requests import stamp

        pixels = self.canvas.pixels.copy()
        request = self._request_of_canvas()
        info = self._infos.get(request.model) if request is not None else None
        stamped = stamp(request.to_json(), info) if request is not None and info is not None else None
        size = f"{g.width}x{g.height}"
        if scale > 1:
            size += f", and {g.width * scale}x{g.height * scale} as @{scale}x"
        said = f"Exported the image ({size})" + ("" if stamped else "; it was drawn or edited here, so it carries "
                                                   "no request to regenerate it")
        return self._write_export(path, lambda: write_sample(path, pixels, g.levels, stamped, scale), said)

    def export_scale(self) -> int:
        return int(self.export_scale_combo.currentData() or 1)

    def _request_of_canvas(self) -> ImageRequest | None:
        """The request that makes exactly what the canvas shows: the shown sample of the last run,
        while it is unedited; None otherwise."""
        run = self.run
        if run is None or self._shown_sample is None:
            return None
        done = run.results.get(self._shown_sample)
        if done is None or done.request is None or not np.array_equal(done.image, self.canvas.pixels):
            return None
        return done.request

    def export_gif(self, path: str | None = None) -> bool:
        g = self.geom
        if g is None:
            return False
        if len(self._gif_frames) < 2:
            self._say_error("Nothing to animate: Generate, Complete or Inpaint first; the painting of the sample "
                            "on the canvas is exported.")
            return False
        path = save_path(self, path, "Export the painting as an animated GIF",
                         f"{self._gif_title or self._export_stem()}.gif", "GIF (*.gif)")
        if path is None:
            return False
        return self._write_export(path, lambda: work.write_gif(path, self._gif_frames, g.levels),
                            lambda n: f"Exported the painting ({n} frames)")

    def _export_stem(self) -> str:
        run = self.run
        if run is not None and self._shown_sample is not None:
            return f"{run.model_id}-seed{run.seed + self._shown_sample}"
        return f"{self._model_id or 'image'}-drawing"

    # --- history: runs, requests and the tab's saved state -------------------------------------------
    def _record_finished(self, run: Run, state: str) -> None:
        """Store the run's finished samples (PNG bytes carrying their requests) and numbers in the history."""
        if run.run_id is None:
            return
        from engines.image.png import png_bytes
        from engines.requests import stamp

        info = self._infos.get(run.model_id)
        levels = self._geometries[run.model_id].levels if run.model_id in self._geometries else 2
        files, summary = {}, {"samples": [], "seconds": (run.t_end or time.perf_counter()) - run.t0,
                              "kind": run.kind, "values": run.n}
        for i in sorted(run.results):
            done = run.results[i]
            stamped = stamp(done.request.to_json(), info) if info is not None else done.request.to_json()
            files[f"sample_{i + 1}.png"] = png_bytes(done.image, levels, stamped)
            summary["samples"].append({"sample": i + 1, "seed": done.seed, "logprob": done.total_logprob,
                                       "bits_per_dim": done.bits_per_dim, "sampled_logprob": done.sampled_logprob,
                                       "n_sampled": done.n_sampled})
        if summary["samples"]:
            summary["logprob"] = summary["samples"][0]["logprob"]
        status = {"done": "done", "stopped": "stopped"}.get(state, "failed")
        self.ctx.record_run_finished(run.run_id, files=files, summary=summary, status=status)

    def apply_request(self, request) -> None:
        """Make the tab ready to run `request` again: its model, digit, guidance, samples,
        posterior-aware setting, canvas (the init image and its mask) and decoding config.
        InputError (nothing changed) when it cannot: another kind, a model not installed, a run going."""
        if not isinstance(request, ImageRequest):
            raise InputError(f"the Image tab runs image requests, not {getattr(request, 'kind', '?')} ones")
        g = self._geometries.get(request.model)
        if request.model not in self._infos or g is None:
            raise InputError(f"model {request.model!r} is not installed: add the folder that holds it in the Models "
                             "tab, then open the file again")
        if self.runner.is_busy():
            raise InputError("A run is in progress in the Image tab: stop it first, then open the file again")
        if request.init is not None and request.init.shape != (g.channels, g.height, g.width):
            raise InputError(f"the request's image is {'x'.join(map(str, request.init.shape))} but model "
                             f"{request.model!r} draws {g.channels}x{g.height}x{g.width} images")
        if request.label is not None and not request.label < g.n_classes:
            raise InputError(f"label {request.label} is out of range for model {request.model!r}")
        self.select_model(request.model)
        self._model_changed()  # a no-op when it was already the tab's model
        self._set_label_quietly(request.label)
        info = self._infos[request.model]
        self.guidance_spin.setValue(request.guidance if request.guidance is not None
                                    else request.default_guidance(info))
        self.samples_spin.setValue(min(request.count, work.MAX_SAMPLES))
        if request.candidates is not None:
            self.posterior_check.setChecked(True)
            self.candidates_spin.setValue(min(max(request.candidates, 2), work.MAX_CANDIDATES))
        elif request.mask is not None:
            self.posterior_check.setChecked(False)
        if request.init is not None:
            self.canvas.set_state(pixels=request.init_pixels(), mask=request.mask_array())
        self.ctx.set_decoding_config(request.decoding, self.MODEL_KIND)
        action = "Generate" if request.init is None else "Complete" if self._is_completion(request) else "Inpaint"
        more = f" (the tab makes at most {work.MAX_SAMPLES} at a time)" if request.count > work.MAX_SAMPLES else ""
        self._say(f"Restored a request for {html.escape(request.model)}, seed {request.seed}{more}: press "
                  f"<b>{action}</b> to make the same {'image' if request.count == 1 else 'images'} again.")
        self._update_buttons()

    @staticmethod
    def _is_completion(request: ImageRequest) -> bool:
        """Whether Complete makes this request's mask from its image (else it is an inpainting)."""
        try:
            return np.array_equal(request.mask_array(), completion_mask(request.init_pixels()))
        except ChainruleError:  # nothing drawn, or nothing after the drawing
            return False

    def _set_label_quietly(self, label: int | None) -> None:
        i = 0 if label is None else self.label_combo.findData(label)
        if i >= 0:
            self.label_combo.setCurrentIndex(i)

    def history_state(self) -> dict:
        """The tab as it is (JSON, bounded): model, settings, canvas, decoding config and the last
        run's request with its finished samples (at most HISTORY_MAX_SAMPLES)."""
        pixels, layer = self.canvas.state()
        state: dict[str, Any] = {
            "version": 1, "model": self._model_id, "label": self.label(), "guidance": self.guidance_spin.value(),
            "samples": self.samples_spin.value(), "posterior": self.posterior_check.isChecked(),
            "candidates": self.candidates_spin.value(), "export_scale": self.export_scale(),
            "speed": self.speed_slider.value(),
            "decoding": self.ctx.decoding_config(self.MODEL_KIND).to_dict(),
            "canvas": {"pixels": PixelArray.of(pixels).to_json(), "mask": PixelArray.of(layer).to_json()},
            "run": None,
        }
        run = self.run
        if run is not None and run.results and run.state != "running":
            state["run"] = {
                "kind": run.kind, "request": run.request.to_json(), "shown": self._shown_sample,
                "samples": [{"sample": i, "seed": d.seed, "total_logprob": d.total_logprob,
                             "bits_per_dim": d.bits_per_dim, "sampled_logprob": d.sampled_logprob,
                             "n_sampled": d.n_sampled, "pixels": PixelArray.of(d.image).to_json()}
                            for i, d in sorted(run.results.items())[:HISTORY_MAX_SAMPLES]],
            }
        return state

    def _restore_state(self, state) -> None:
        if not self._restore_saved_model(state):
            return
        g = self.geom
        self._set_label_quietly(state.get("label"))
        self.guidance_spin.setValue(float(state.get("guidance") or 0.0))
        self.samples_spin.setValue(int(state.get("samples") or 1))
        self.posterior_check.setChecked(bool(state.get("posterior", True)))
        self.candidates_spin.setValue(int(state.get("candidates") or 8))
        i = self.export_scale_combo.findData(state.get("export_scale", 1))
        self.export_scale_combo.setCurrentIndex(max(0, i))
        if isinstance(state.get("speed"), int):
            self.speed_slider.setValue(state["speed"])
        if isinstance(state.get("decoding"), dict):
            from engines.decoding.config import DecodingConfig

            self.ctx.set_decoding_config(DecodingConfig.from_dict(state["decoding"]), self.MODEL_KIND)
        canvas = state.get("canvas") or {}
        pixels = PixelArray.from_json(canvas.get("pixels"), "canvas pixels").array()
        mask = PixelArray.from_json(canvas.get("mask"), "canvas mask").array().astype(bool)
        if pixels.shape != (g.channels, g.height, g.width) or mask.shape != (g.height, g.width) \
                or int(pixels.max(initial=0)) >= g.levels:
            raise InputError("the saved drawing does not fit the model any more")
        self.canvas.set_state(pixels=pixels, mask=mask)
        if state.get("run"):
            self._restore_run(state["run"], pixels, mask)
        self._update_buttons()
        self._update_status()

    def show_history_outputs(self, paths, request_json=None, summary=None) -> None:
        """A re-opened run (History tab): its stored samples back in the grid, the first on the canvas,
        pickable and exportable with their requests. Files or numbers that do not fit are left out."""
        import re

        from engines.image.png import read_image

        if not isinstance(request_json, dict) or not isinstance(summary, dict):
            return
        known = {s.get("sample"): s for s in summary.get("samples") or [] if isinstance(s, dict)}
        g = self.geom
        samples = []
        for path in paths:
            m = re.fullmatch(r"sample_(\d+)\.png", os.path.basename(path))
            info = known.get(int(m.group(1))) if m else None
            if info is None or not {"seed", "logprob", "bits_per_dim", "sampled_logprob", "n_sampled"} <= set(info):
                continue
            image = read_image(path, channels=g.channels, height=g.height, width=g.width, levels=g.levels).pixels
            samples.append({"sample": int(m.group(1)) - 1, "seed": info["seed"], "total_logprob": info["logprob"],
                            "bits_per_dim": info["bits_per_dim"], "sampled_logprob": info["sampled_logprob"],
                            "n_sampled": info["n_sampled"], "pixels": PixelArray.of(image).to_json()})
        if not samples:
            return
        pixels, mask = self.canvas.state()  # the request's init and mask, as apply_request set them
        self._restore_run({"kind": summary.get("kind"), "request": request_json, "samples": samples}, pixels, mask)
        if self.run is not None and self.run.results:
            self.pick_sample(min(self.run.results))

    def _restore_run(self, saved: dict, pixels: np.ndarray, mask: np.ndarray) -> None:
        """The last run as finished: its samples in the grid, pickable and exportable with their requests."""
        from engines.requests import request_from_json

        g = self.geom
        request = request_from_json(saved["request"])
        if not isinstance(request, ImageRequest) or request.model != self._model_id:
            return
        run = Run(saved.get("kind") if saved.get("kind") in Run.KINDS else "generate", request, (pixels, mask), None)
        if run.kind == "generate" and self._infos.get(request.model) is not None:
            run.cli = shlex.join(["chainrule", *request.to_command(self._infos[request.model])])
        for s in saved.get("samples") or []:
            i = int(s["sample"])
            image = PixelArray.from_json(s["pixels"], "sample").array()
            if not 0 <= i < request.count or image.shape != (g.channels, g.height, g.width):
                continue
            run.results[i] = work.SampleDone(
                i, int(s["seed"]), image, float(s["total_logprob"]), float(s["bits_per_dim"]),
                float(s["sampled_logprob"]), int(s["n_sampled"]), n=image.size, levels=g.levels,
                request=request.for_sample(i))
        if not run.results:
            return
        run.state, run.t_end = "done", run.t0
        run.n = sum(d.n_sampled for d in run.results.values())
        self.run = run
        if request.count > 1:
            self.grid.reset_samples(request.count, g.levels, g.blank())
            for i, done in run.results.items():
                self.grid.set_image(i, done.image, tooltip=sample_tooltip(done), text=f"{i + 1}")
            self.grid.show()
            self.samples_title.show()
        shown = saved.get("shown")
        if isinstance(shown, int) and shown in run.results and np.array_equal(run.results[shown].image, pixels):
            self._shown_sample = shown
            self.grid.select(shown)

    # --- status ------------------------------------------------------------------------------------
    def _run_status_html(self, run: Run) -> str:
        shown = run.results.get(self._shown_sample) if self._shown_sample is not None else None
        return run.status_html(shown, None if run.label is None else self._label_name(run.label))

    # --- buttons -------------------------------------------------------------------------------------
    def _update_buttons(self) -> None:
        has_model, busy = self._update_drawing_buttons()
        for w in (self.generate_button, self.complete_button, self.inpaint_button, self.samples_spin):
            w.setEnabled(has_model and not busy)
        self.label_combo.setEnabled(has_model and not busy and bool(self.geom.n_classes))
        self.guidance_spin.setEnabled(has_model and not busy and bool(self.geom.n_classes) and self.label() is not None)
        self.export_png_button.setEnabled(has_model and not busy)
        self.export_gif_button.setEnabled(not busy and len(self._gif_frames) > 1)


@register_tab("Image", order=20)
def make_image_tab(ctx: StudioContext) -> QWidget:
    return ImageTab(ctx)
