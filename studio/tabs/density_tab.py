"""The Density tab: NADE and MADE on binary digits, exact likelihoods, orderings and exact inpainting.

Layout: a bar (model, ordering and its seed, ensemble K, samples, speed); drawing tools on
the left; the canvas in the middle with the run buttons under it; on the right the same
digit scored by NADE, MADE and a binarized PixelCNN side by side (a table of nats and one
surprise map per model); the samples of the last run (or the orderings compared) and a
status line at the bottom. Without a NADE or MADE model the tab says how to get one.

Models and orderings
    NADE is trained in raster order and has no other (the other orderings are disabled, with
    a tooltip saying why); MADE samples and scores in raster, reverse, column or a seeded
    random ordering, each through the masks `made_masks` builds for it, and its log p(image)
    is the mixture of its first K masks (K chosen here, default from its card).

Runs (all on a worker, at the chosen speed, Stop ends them at once and keeps what was drawn)
    Sample draws N digits from nothing (sample i with seed s + i), filling in position by
    position in the chosen ordering; the pixels still to come are slate blue, so the ordering
    is seen. Inpaint regenerates the red-masked pixels, any set of them, exactly: MADE puts
    every kept pixel first in its ordering and samples the rest from the exact conditional;
    NADE only when every kept pixel comes before the masked ones (else a message points at
    MADE). Compare orderings runs the same sampling (or, with a mask, the same inpainting)
    with the same seed under every ordering side by side. Each run shows the `chainrule
    generate image ... --ordering O --seed S` command that reproduces it pixel for pixel.

Likelihood
    After every change the canvas is scored on a worker by each model: the exact log p(image)
    in nats (the most likely model in bold) and -log2 p of each pixel given those before it in
    that model's ordering, on one colour scale. Hovering a pixel gives each model's
    probability for it and its place in the chosen ordering.

Requests: every run is one `engines.density.request.DensityRequest` per lane (the CLI's own
type and runner), recorded in the studio's history with its samples as PNGs that carry
`for_sample(i)`'s request. Export: the image as PNG with a JSON of the settings, scores and
reproducing commands (and, after an inpainting, its input image and mask as PNGs the commands
read); when the canvas shows a sample, both carry its request, so `chainrule generate --from`
remakes it and opening the file restores the tab (`apply_request`). `history_state` /
`restore_history_state` keep the tab (canvas, settings, last samples) across restarts.

A run and how it is described live in studio/density/runs.py, the models side by side and
their scoring in studio/density/comparison.py, what the Image and Density tabs share
(tools, canvas, loading, undo, speed, rescoring) in studio/image/drawing_tab.py.
"""

from __future__ import annotations

import html
import math
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QComboBox, QLabel, QStackedWidget, QWidget

from engines.errors import ChainruleError, DecodingError, InputError
from engines.generation import resolve_seed
from studio.context import StudioContext
from studio.density import work
from studio.density.comparison import PREFERRED, DensityComparisonMixin
from studio.density.runs import Run
from studio.density.views import LaneStrip
from studio.image import work as image_work
from studio.image.canvas import MAX_ZOOM
from studio.image.drawing import Geometry, inpaint_mask
from studio.image.drawing_tab import DrawingTabMixin
from studio.image.reads_as import reads_as_text
from studio.image.samples_view import SampleGrid
from studio.model_picker import ModelPickerMixin
from studio.status_line import StatusLineMixin
from studio.tabs import register_tab
from studio.widgets import (
    STRETCH,
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

# Sampling speeds: ordering positions per second (every sample of a run advances together).
SPEEDS: tuple[tuple[str, float], ...] = (
    ("30 px/s", 30.0), ("100 px/s", 100.0), ("300 px/s", 300.0), ("1000 px/s", 1000.0),
    ("3000 px/s", 3000.0), ("instant", math.inf),
)
DEFAULT_SPEED = 2
DEFAULT_SAMPLES = 8
CANVAS_PIXELS = 280  # the canvas on screen: 28x28 at zoom 10
SCORE_DELAY_MS = 120
ORDERING_TIPS = {
    "raster": "Row by row from the top, left to right",
    "reverse": "Raster backwards: from the bottom-right pixel up",
    "column": "Column by column from the left, top to bottom",
    "random": "A random permutation of the pixels, drawn from the ordering seed",
}
NADE_ORDER_TIP = ("NADE is trained in raster order only: its weights are shared along that one ordering, so it "
                  "has no other. Choose a MADE model for reverse, column or random orderings.")
NADE_K_TIP = "NADE is one model in one ordering: there is no ensemble. K is for MADE models."
NADE_COMPARE_TIP = "NADE has a single ordering (raster): choose a MADE model to compare orderings."
TOOL_TIPS = {
    "brush": "Draw ink (right button erases)",
    "eraser": "Erase ink (right button draws)",
    "mask": "Mark pixels for Inpaint to regenerate, shown in red (right button unmarks); any shape, scattered too",
    "unmask": "Unmark pixels: Inpaint keeps them (right button marks)",
}
EMPTY_TEXT = (
    "<h3>No density model installed</h3>"
    "<p>The Density tab works with NADE and MADE models of binary digits (the shipped "
    "<code>bmnist-nade</code> and <code>bmnist-made</code>, or your own): exact log-likelihoods, "
    "sampling in any ordering and exact inpainting of any set of pixels.</p>"
    "<p>To get one, train and export a model on binarized MNIST:</p>"
    "<pre>chainrule train made --data binarized_mnist.npz --out runs/made\n"
    "python -m engines.training.export_density \\\n"
    "    --ckpt runs/made/ckpt.pt --out my-models/bmnist-made</pre>"
    "<p>then add the folder that holds it (<code>my-models</code>) in the <b>Models</b> tab "
    "(File → Add models folder…).</p>"
)


class DensityTab(DensityComparisonMixin, DrawingTabMixin, StatusLineMixin, ModelPickerMixin, QWidget):
    MODEL_KIND = "density"
    SPEEDS = SPEEDS
    LOAD_IMAGE_TITLE = "Load a digit"
    TAB_TITLE = "Density"
    IDLE_HINT = ("Draw a digit (or load one) to see how likely each model finds it; Sample draws new ones in the "
                 "chosen ordering; paint a mask and Inpaint.")

    def __init__(self, ctx: StudioContext, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.ctx = ctx
        self.runner = ctx.task_runner("Density", parent=self)
        self.score_runner = ctx.task_runner("Density score", parent=self)
        self._infos: dict[str, Any] = {}  # density model id -> ModelInfo (usable)
        self._families: dict[str, str] = {}  # density model id -> "nade" | "made"
        self._geometries: dict[str, Geometry] = {}
        self._pixelcnns: dict[str, Any] = {}  # binary image model id -> ModelInfo (for the comparison)
        self._pixelcnn_geoms: dict[str, Geometry] = {}
        self._ks: dict[str, int] = {}  # MADE id -> chosen K
        self.geom: Geometry | None = None
        self._model_id: str | None = None
        self._source_size: tuple[int, int] | None = None
        self.run: Run | None = None
        self._shown_sample: int | None = None
        self._cancel = threading.Event()
        self.pace = image_work.Pace(SPEEDS[DEFAULT_SPEED][1])
        self.score: work.ScoreDone | None = None
        self._score_key: tuple = ()
        self._hover: tuple[int, int] | None = None
        self._init_scoring_lifetime(SCORE_DELAY_MS)
        self._build()
        ctx.modelDirsChanged.connect(self.refresh_models)
        ctx.decodingConfigChanged.connect(lambda key, _c: key == "density" and self._update_status())
        self.runner.busyChanged.connect(lambda _b: self._update_buttons())
        self.refresh_models()

    # --- widgets -----------------------------------------------------------------------
    def _build(self) -> None:
        blank = Geometry(28, 28, 1, 2, "bernoulli", 0)
        # Top bar
        self.model_combo = compact_combo(14, "NADE and MADE models found in the models folders (see the Models tab)")
        self.model_combo.currentIndexChanged.connect(lambda _i: self._model_changed())
        self.ordering_combo = QComboBox()
        for name in work.COMPARE_ORDERINGS:
            self.ordering_combo.addItem(name, name)
            self.ordering_combo.setItemData(self.ordering_combo.count() - 1, ORDERING_TIPS[name],
                                            Qt.ItemDataRole.ToolTipRole)
        self.ordering_combo.currentIndexChanged.connect(lambda _i: self._ordering_changed())
        self.order_seed_spin = spin_box(0, 2 ** 31 - 1, 1, "Seed of the random ordering (the same seed gives the "
                                        "same ordering, as `--ordering random:SEED`)")
        self.order_seed_spin.valueChanged.connect(lambda _v: self._ordering_changed())
        self.order_seed_spin.setMaximumWidth(90)
        self.order_seed_caption = QLabel("ordering seed")
        self.k_spin = spin_box(1, 1)
        self.k_spin.valueChanged.connect(self._k_changed)
        self.k_caption = QLabel("K:")
        self.samples_spin = spin_box(1, work.MAX_SAMPLES, DEFAULT_SAMPLES,
                                     "Samples per run (sample i uses seed + i); they fill in together")
        self._build_speed_controls(DEFAULT_SPEED, 100, 60, "Pixels drawn per second in each image (every sample "
                                   "of a run, and every ordering compared, advances together); changes a running "
                                   "run too")
        bar = labelled_row(("Model:", (self.model_combo, 2)),
                           ("Ordering:", self.ordering_combo, self.order_seed_caption, self.order_seed_spin),
                           (self.k_caption, self.k_spin))
        # under the run buttons: how many, how fast
        pacing = labelled_row(("Samples:", self.samples_spin), ("Speed:", self.speed_slider, self.speed_label))

        # Tools
        tools = self._build_tool_buttons(TOOL_TIPS)
        edits = self._build_edit_buttons(
            "Load digit…", "Any image file: converted to the model's size in black and white (you are told how)")
        tools_box = self._build_tools_box("DensityTools", tools, hbox("Size:", (self.size_spin, 1)), edits, 160)

        # Canvas
        self._build_canvas(blank, CANVAS_PIXELS + 4, zoom=CANVAS_PIXELS // 28)
        self.sample_button = push_button(
            "Sample", "Draw digits from nothing in the chosen ordering (sample i: seed + i)", self.sample)
        self.inpaint_button = push_button(
            "Inpaint", "Regenerate the red-masked pixels from the exact conditional given every other pixel (MADE: "
            "any mask; NADE: only masks after every kept pixel)", self.inpaint)
        self.compare_button = push_button(
            "Compare orderings", "The same sampling (or, with a mask, the same inpainting) and the same seed under "
            "every ordering, side by side", self.compare_orderings)
        self.stop_button = push_button("Stop", "Stop at once; what was drawn is kept", self.stop)
        self.export_button = push_button(
            "Export PNG…", "The image on the canvas as PNG, with a JSON of the settings, the scores and the commands "
            "that reproduce the last run", self.export_png)
        self.progress_label = hint_label()
        centre = column(
            section_title("Canvas"), self.canvas_scroll, self._build_reads_as(),
            hbox(self.sample_button, self.inpaint_button, self.compare_button, self.stop_button, STRETCH),
            pacing, hbox(self.progress_label, STRETCH, self.export_button), STRETCH)

        # Likelihood: the models side by side
        right = self._build_comparison_panel()
        middle = hbox(tools_box, 6, centre, 10, (right, 1))

        # Results: the sample grid, or the orderings side by side
        self.results_title = section_title("Samples and ordering comparisons appear here")
        self.grid = SampleGrid()
        self.grid.picked.connect(self.pick_sample)
        self.lanes = LaneStrip()
        self.lanes.picked.connect(self.pick_lane)
        self.results = QStackedWidget()
        self.results.addWidget(self.grid)
        self.results.addWidget(self.lanes)
        self.results.hide()

        self.status = status_label("DensityStatus")
        main = column(bar, (middle, 1), self.results_title, self.results, self.status)
        self._build_pages(main, EMPTY_TEXT, "DensityEmptyState")

    # --- models ------------------------------------------------------------------------
    def refresh_models(self) -> None:
        problems: list[str] = []
        models = self._usable_models()
        self._infos, self._families, self._geometries = {}, {}, {}
        self._pixelcnns, self._pixelcnn_geoms = {}, {}
        for m in models:
            try:
                if m.kind == "density":
                    family = work.density_family(m)
                    if family is None:
                        raise InputError("its card names no NADE or MADE architecture")
                    self._geometries[m.id] = work.density_geometry(m.card)
                    self._families[m.id] = family
                    self._infos[m.id] = m
                elif m.kind == "image":
                    g = Geometry.from_card(m.card)
                    if g.bernoulli and g.channels == 1 and g.levels == 2:
                        self._pixelcnns[m.id] = m
                        self._pixelcnn_geoms[m.id] = g
            except ChainruleError as exc:
                if m.kind == "density":
                    problems.append(f"{m.id}: {exc}")
        self._fill_model_combo(
            ((model_id, f"{model_id} ({work.FAMILY_LABELS[self._families[model_id]]})",
              f"{m.card.get('name', model_id)} · {self._geometries[model_id].describe()}\n{m.path}")
             for model_id, m in self._infos.items()),
            fallback=PREFERRED["made"])  # the shipped MADE first: it does everything the tab offers
        self._show_models_found(bool(self._infos), EMPTY_TEXT, problems)
        self._find_reader(models)
        if self._run_outlives_refresh():
            # A models folder added or removed while a run goes on, and the model being run is
            # still the chosen one, as it was: the run carries on (stopping it left the canvas
            # read-only before). Only the comparison is rebuilt; it is scored when the run ends.
            self._configure_k()
            self._setup_comparison()
            self.comparison.set_stale(True)
            self._update_buttons()
            self._update_status()
            return
        self._model_id = None  # the comparison's models may have changed: rebuild it
        self._model_changed()

    def _run_outlives_refresh(self) -> bool:
        """A run is going on the model still chosen after the relisting, the same folder and size."""
        run, model_id = self.run, self._model_id
        if run is None or not self.runner.is_busy() or model_id is None:
            return False
        info = self._infos.get(model_id)
        return (self.model_combo.currentData() == model_id and info is not None and info.path == run.info.path
                and self._geometries.get(model_id) == self.geom)

    def family(self) -> str | None:
        return self._families.get(self._model_id) if self._model_id else None

    def _model_changed(self) -> None:
        taken = self._take_chosen_model()
        if taken is None:
            return
        model_id, old, geometry = taken
        notes = ""
        if old is None or (old.height, old.width) != (geometry.height, geometry.width):
            if old is not None and (self.canvas.pixels.any() or self.canvas.mask_layer.any()):
                notes = (f"Model {html.escape(model_id)} draws {geometry.describe()} images: the canvas was "
                         "cleared (undo history too).")
            self.canvas.set_geom(geometry)
            zoom = max(1, min(MAX_ZOOM, CANVAS_PIXELS // max(geometry.height, geometry.width)))
            self.canvas.set_zoom(zoom)
            self._source_size = None
        else:
            self.canvas.geom = geometry  # same image: the drawing and its history stay
        self._configure_orderings()
        self._configure_k()
        info = self._infos.get(model_id)
        # the tab's decoding config starts from this model's card (a filter set for text never reaches it)
        self.ctx.adopt_model_defaults(self.MODEL_KIND, info.card.get("decoding_defaults") if info else None)
        self._setup_comparison()
        self._forget_run_views()
        self._invalidate_score()
        self._update_buttons()
        self._update_status()
        self._update_reads_as()
        if notes:
            self._say(notes)

    def _configure_orderings(self) -> None:
        nade = self.family() == "nade"
        model = self.ordering_combo.model()
        for i in range(self.ordering_combo.count()):
            name = self.ordering_combo.itemData(i)
            item = model.item(i)
            item.setEnabled(not nade or name == "raster")
            item.setToolTip(NADE_ORDER_TIP if nade and name != "raster" else ORDERING_TIPS[name])
        if nade and self.ordering_combo.currentData() != "raster":
            self.ordering_combo.blockSignals(True)
            self.ordering_combo.setCurrentIndex(self.ordering_combo.findData("raster"))
            self.ordering_combo.blockSignals(False)
        self.ordering_combo.setToolTip(NADE_ORDER_TIP if nade else
                                       "The order the pixels are generated in (MADE builds its masks for it)")
        self._ordering_controls()

    def _ordering_controls(self) -> None:
        random = self.ordering_combo.currentData() == "random"
        self.order_seed_spin.setEnabled(random and not self.runner.is_busy())
        self.order_seed_caption.setEnabled(random)

    def _configure_k(self) -> None:
        info = self._infos.get(self._model_id) if self._model_id else None
        n, default = work.made_masks_and_k(info) if info is not None else (1, 1)
        made = self.family() == "made"
        self.k_spin.blockSignals(True)
        self.k_spin.setRange(1, max(1, n))
        self.k_spin.setValue(self._ks.get(self._model_id, default) if made else 1)
        self.k_spin.blockSignals(False)
        self.k_spin.setToolTip(
            f"Ensemble size: log p(image) is the mixture of the first K of the model's {n} masks, "
            f"log mean exp of their log-likelihoods (default {default}, from its card)" if made else NADE_K_TIP)
        self.k_caption.setToolTip(self.k_spin.toolTip())

    # --- ordering, K ----------------------------------------------------------------------
    def ordering_spec(self) -> str:
        return work.ordering_spec(self.ordering_combo.currentData() or "raster", self.order_seed_spin.value())

    def set_ordering(self, name: str, seed: int | None = None) -> bool:
        """Choose an ordering (and the random ordering's seed); NADE refuses all but raster with a message."""
        i = self.ordering_combo.findData(name)
        if i < 0:
            self._say_error(f"unknown ordering {name!r}; choose one of {', '.join(work.COMPARE_ORDERINGS)}")
            return False
        if self.family() == "nade" and name != "raster":
            self._say_error(NADE_ORDER_TIP)
            return False
        if seed is not None:
            self.order_seed_spin.setValue(int(seed))
        self.ordering_combo.setCurrentIndex(i)
        return True

    def _ordering_changed(self) -> None:
        self._ordering_controls()
        self._invalidate_score()
        self._update_status()

    def k(self) -> int:
        return self.k_spin.value()

    def set_k(self, k: int) -> bool:
        """The MADE ensemble size; out of range (or any K for NADE but 1) is refused with a message."""
        info = self._infos.get(self._model_id) if self._model_id else None
        if info is None:
            return False
        try:
            if self.family() != "made" and k != 1:
                raise InputError(f"ensemble K = {k!r} is out of range: {NADE_K_TIP}")
            k = work.check_k(k, info)
        except ChainruleError as exc:
            self._say_error(str(exc))
            return False
        self.k_spin.setValue(k)
        return True

    def _k_changed(self, k: int) -> None:
        if self.family() == "made" and self._model_id:
            self._ks[self._model_id] = k
        self._invalidate_score()

    # --- runs ------------------------------------------------------------------------------------
    def sample(self) -> Run | None:
        return self._start_run("sample")

    def inpaint(self) -> Run | None:
        return self._start_run("inpaint")

    def compare_orderings(self) -> Run | None:
        return self._start_run("compare")

    def _start_run(self, kind: str) -> Run | None:
        info, g = self._model_for_run(), self.geom
        if info is None:
            return None
        family = self.family()
        pixels, layer = self.canvas.state()
        config = self.ctx.decoding_config(self.MODEL_KIND)
        try:
            from engines.density.request import DensityRequest, image_input, mask_input
            from engines.density.sampling import check_config

            temperature = check_config(config)  # a filter a binary pixel cannot use: refused before anything else
            k = work.check_k(self.k(), info) if family == "made" else 1
            regenerate = None
            if kind == "inpaint":
                regenerate = inpaint_mask(layer, (g.height, g.width))
            elif kind == "compare" and layer.any():
                regenerate = inpaint_mask(layer, (g.height, g.width))  # refuses a full mask
            if regenerate is not None and family == "nade" and not work.nade_can_inpaint(regenerate):
                made = [i for i, f in self._families.items() if f == "made"]
                raise InputError(work.NADE_INPAINT_MESSAGE
                                 + (f" ({', '.join(made)} is installed.)" if made else ""))
            if kind == "compare" and family != "made":
                raise InputError(NADE_COMPARE_TIP)
            _n, default_k = work.made_masks_and_k(info)
            request = DensityRequest(
                model=info.id, decoding=config.replace(seed=resolve_seed(config)), count=self.samples_spin.value(),
                ordering=self.ordering_spec(), ensemble_k=k if family == "made" and k != default_k else None,
                init=None if regenerate is None else image_input(pixels),
                mask=None if regenerate is None else mask_input(regenerate))
            if kind == "compare":  # one request per ordering: the same seed, the same known pixels
                lanes = [request.replace(ordering=work.ordering_spec(n, self.order_seed_spin.value()), count=1)
                         for n in work.COMPARE_ORDERINGS]
            else:
                lanes = [request]
        except DecodingError as exc:  # a setting of this tab's decoding config: say where to change it
            self._say_error(f"{exc}. In the Decoding panel (the Density tab's settings): untick it, or Reset to "
                            "model defaults.")
            return None
        except ChainruleError as exc:  # nothing is touched
            self._say_error(str(exc))
            return None
        run = Run(kind, info, family, lanes, (pixels, layer), regenerate, config, temperature, k)
        cancel = self._begin_run(run)
        for i, lane in enumerate(lanes):
            run.run_ids[i] = self.ctx.record_run_started(self.MODEL_KIND, lane.to_json())
        self.comparison.set_stale(True)
        self._show_results_for(run, pixels)
        pace = self.pace
        self._start_on_runner(lambda: work.run_events(info, lanes, pace=pace, cancel=cancel), run)
        self._update_buttons()
        self._update_status()
        return run

    def _show_results_for(self, run: Run, pixels: np.ndarray) -> None:
        g = self.geom
        start = pixels if run.regenerate is not None else g.blank()
        if run.kind == "compare":
            self.lanes.reset([work.ordering_label(ln.ordering) for ln in run.lanes], g)
            for i in range(len(run.lanes)):
                self.lanes.set_lane(i, start, run.regenerate if run.regenerate is not None else
                                    np.ones((g.height, g.width), bool))
            what = "inpainting" if run.regenerate is not None else "sampling"
            self.results_title.setText(f"The same {what} ({run.seeds_text()}) under each ordering: click one to "
                                       "load it")
            self.results.setCurrentWidget(self.lanes)
            self.results.show()
        elif run.count > 1:
            self.grid.reset_samples(run.count, 2, start)
            self.results_title.setText("Samples: click one to load it")
            self.results.setCurrentWidget(self.grid)
            self.results.show()
        else:
            self.results.hide()
            self.results_title.setText("Samples and ordering comparisons appear here")

    def _on_events(self, run: Run, batch: list) -> None:
        if run is not self.run:
            return
        g = self.geom
        changed: set[int] = set()
        for ev in batch:
            if isinstance(ev, work.LaneStep):
                st = ev.step
                imgs = run.images.get(ev.lane)
                if imgs is None:
                    continue
                imgs[st.sample, st.pixel] = st.value
                run.pending[ev.lane][st.sample, st.pixel] = False
                run.last_pixel[ev.lane] = st.pixel
                run.n += 1
                changed.add(ev.lane)
            elif isinstance(ev, work.LaneStarted):
                run.images[ev.lane] = np.tile(ev.start, (ev.count, 1))
                run.pending[ev.lane] = np.tile(ev.pending, (ev.count, 1))
                run.orders[ev.lane] = ev.order
                run.n_sampled = int(ev.pending.sum())
                run.notes = tuple(dict.fromkeys(run.notes + ev.notes))
                if run.kind != "compare" and ev.lane == 0 and not run.touched:
                    self.canvas.history.push(run.before)  # the drawing before the run: one undo step
                    run.touched = True
                    self._shown_sample = 0
                changed.add(ev.lane)
            elif isinstance(ev, work.SampleDone):
                run.results[(ev.lane, ev.sample)] = ev
                run.pending[ev.lane][ev.sample] = False
                changed.add(ev.lane)
                self._sample_done(run, ev)
            elif isinstance(ev, work.RunStarted):
                run.t0 = ev.t
        for lane in changed:
            imgs, pend = run.images[lane], run.pending[lane]
            last = run.last_pixel.get(lane)
            marker = None if last is None or not pend.any() else divmod(last, g.width)
            shape = (1, g.height, g.width)
            if run.kind == "compare":
                self.lanes.set_lane(lane, imgs[0].reshape(shape), pend[0].reshape(g.height, g.width), marker)
                continue
            sample = self._shown_sample or 0
            self.canvas.set_pending(pend[sample] if pend[sample].any() else None)
            self.canvas.set_pixels(imgs[sample].reshape(shape))
            self.canvas.set_marker(*(marker if marker is not None else (None,)))
            if run.count > 1:
                for s in range(run.count):
                    if (lane, s) not in run.results:
                        self.grid.set_image(s, imgs[s].reshape(shape), pending=pend[s].reshape(g.height, g.width))
        self._update_progress()

    def _sample_done(self, run: Run, ev: work.SampleDone) -> None:
        g = self.geom
        shape = (1, g.height, g.width)
        tip = run.sample_tip(ev)
        verdict = run.verdicts[(ev.lane, ev.sample)] = self._judge_sample(ev.image.reshape(shape))
        if verdict is not None:
            tip += f"\n{reads_as_text(verdict)}"
        if run.kind == "compare":
            self.lanes.set_caption(ev.lane, run.lane_caption(ev) + (f"\n{reads_as_text(verdict)}" if verdict else ""),
                                   tip + "\n" + run.command(ev.lane))
        elif run.count > 1:
            self.grid.set_image(ev.sample, ev.image.reshape(shape), tooltip=tip,
                                text=f"{ev.sample + 1}" + (f": {verdict.short()}" if verdict else ""))
        if run.kind != "compare" and ev.sample == (self._shown_sample or 0) and verdict is not None:
            self._show_verdict(verdict)  # the canvas shows this sample

    def _on_end(self, run: Run, state: str) -> None:
        if run is not self.run:
            return
        run.state = state
        run.t_end = time.perf_counter()
        self._record_finished(run, state)
        g = self.geom
        self.canvas.set_marker(None)
        self.canvas.set_pending(None)
        self.canvas.set_editable(True)
        if run.kind == "compare":
            for lane in range(len(run.lanes)):
                if lane in run.images:
                    self.lanes.set_lane(lane, run.images[lane][0].reshape(1, g.height, g.width), None)
        elif run.touched:
            done = run.results.get((0, 0))
            if done is not None and self._shown_sample == 0:
                self.canvas.set_pixels(done.image.reshape(1, g.height, g.width))
            if run.count > 1:
                self.grid.select(self._shown_sample or 0)
                for s in range(run.count):  # a stopped run: the thumbnails keep what was drawn
                    if (0, s) not in run.results and 0 in run.images:
                        self.grid.set_image(s, run.images[0][s].reshape(1, g.height, g.width))
            self.canvas.historyChanged.emit()
        self._invalidate_score()
        self._update_buttons()
        self._update_status()
        self._update_reads_as()

    def pick_sample(self, index: int) -> bool:
        """Load sample `index` of the last run into the canvas (one undo step)."""
        run = self.run
        if not self._may_pick_sample(run is not None and run.kind != "compare" and (0, index) in run.results):
            return False
        g = self.geom
        self.canvas.set_state(pixels=run.results[(0, index)].image.reshape(1, g.height, g.width))
        self._shown_sample = index
        self.grid.select(index)
        self._update_status()
        return True

    def pick_lane(self, lane: int) -> bool:
        """Load the result of ordering lane `lane` into the canvas (one undo step)."""
        run = self.run
        if run is None or run.kind != "compare" or (lane, 0) not in run.results:
            return False
        if self.runner.is_busy():
            self._say_error("Wait for the comparison to finish (or stop it) before picking a result.")
            return False
        g = self.geom
        self.canvas.set_state(pixels=run.results[(lane, 0)].image.reshape(1, g.height, g.width))
        self._shown_sample = lane
        self._update_status()
        return True

    def _forget_run_views(self) -> None:
        run = self.run
        if run is not None and run.state == "running":  # stopped by a model change: its end never comes
            run.state, run.t_end = "stopped", time.perf_counter()
            self._record_finished(run, "stopped")
        self.run = None
        self._shown_sample = None
        self.grid.clear()
        self.results.hide()
        self.results_title.setText("Samples and ordering comparisons appear here")

    # --- the request behind what the canvas shows ------------------------------------------------
    def shown_request(self):
        """The DensityRequest that makes exactly the image on the canvas (a finished sample of the last
        run, unedited), or None (a drawing, an edited sample, a run still going)."""
        run, shown = self.run, self._shown_sample
        if run is None or shown is None or run.state == "running":
            return None
        lane, sample = (shown, 0) if run.kind == "compare" else (0, shown)
        done = run.results.get((lane, sample))
        if done is None or not np.array_equal(self.canvas.pixels.reshape(-1), done.image):
            return None
        return run.lanes[lane].for_sample(sample)

    # --- export -----------------------------------------------------------------------------------
    def export_png(self, path: str | None = None) -> bool:
        """The canvas as PNG + a JSON of settings, scores and the reproducing commands (+ the inpainting's
        input). When the canvas shows a sample of the last run, both carry the request that makes it."""
        g = self.geom
        if g is None:
            return False
        path = save_path(self, path, "Export the image as PNG (with a JSON of the settings)",
                         f"{self._export_stem()}.png", "PNG (*.png)")
        if path is None:
            return False
        png = Path(path)
        json_path = png.with_suffix(".json")
        request = self.shown_request()
        info = self._infos.get(request.model) if request is not None else None

        def write() -> int:
            from engines import atomic
            from engines.density.request import sample_image
            from engines.image.png import write_image
            from engines.requests import embed_in_png, stamp

            stamped = stamp(request.to_json(), info) if request is not None and info is not None else None
            files = [png]
            if stamped is not None:
                embed_in_png(png, sample_image(self.canvas.pixels, g.height, g.width), stamped)
            else:
                write_image(png, self.canvas.pixels, 2)
            init = mask = None
            run = self.run
            if run is not None and run.regenerate is not None and run.lanes[0].init is not None:
                # the very PNGs the run's request carries: the commands read them back bit for bit
                init, mask = png.with_name(f"{png.stem}-init.png"), png.with_name(f"{png.stem}-mask.png")
                atomic.write_bytes(init, run.lanes[0].init.read(1 << 20, "the init image"))
                atomic.write_bytes(mask, run.lanes[0].mask.read(1 << 20, "the mask"))
                files += [init, mask]
            settings = self.export_settings(init and str(init), mask and str(mask))
            if stamped is not None:
                settings["request"] = stamped
            atomic.write_json(json_path, settings)
            return len(files) + 1

        return self._write_export(str(png), write, lambda n: f"Exported the image and its settings ({n} files)")

    def export_settings(self, init: str | None = None, mask: str | None = None) -> dict[str, Any]:
        """What the export's JSON holds: the model and its settings, the scores, the last run's commands."""
        info = self._infos.get(self._model_id) if self._model_id else None
        out: dict[str, Any] = {
            "model": self._model_id, "family": self.family(),
            "ordering": self.ordering_spec(), "ensemble_k": self.k() if self.family() == "made" else None,
            "samples": self.samples_spin.value(), "decoding": self.ctx.decoding_config(self.MODEL_KIND).to_dict(),
            "image": {"height": self.geom.height, "width": self.geom.width,
                      "pixels": self.canvas.pixels[0].astype(int).tolist()},
        }
        if info is not None:
            out["models_dir"] = str(info.path.parent)
        score = self.score
        if score is not None and self._score_current(score):
            out["scores"] = [{"family": r.family, "model": r.model_id, "log_prob_nats": r.total,
                              "bits_per_dim": r.bits_per_dim(), "map_ordering": r.ordering, "k": r.k,
                              "map_log_prob_nats": r.map_total} if r.ok else
                             {"family": r.family, "model": r.model_id, "error": r.error} for r in score.rows]
        run = self.run
        if run is not None:
            out["run"] = {
                "kind": run.kind, "state": run.state, "seed": run.seed, "count": run.count,
                "temperature": run.temperature, "k": run.k,
                "orderings": [ln.ordering for ln in run.lanes],
                "commands": [run.command(i, init, mask) for i in range(len(run.lanes))],
                "requests": [ln.to_json() for ln in run.lanes],
                "samples": [{"ordering": run.lanes[d.lane].ordering, "seed": d.seed,
                             "log_prob_in_ordering": d.order_logprob, "log_prob_ensemble": d.ensemble_logprob,
                             "sampled_logprob": d.sampled_logprob}
                            for (_lane, _s), d in sorted(run.results.items())],
            }
            if init is not None:
                out["run"]["init"], out["run"]["mask"] = init, mask
        return out

    # --- history: runs, requests and the tab's saved state -------------------------------------------
    def _record_finished(self, run: Run, state: str) -> None:
        """Store each lane's finished samples (PNG bytes carrying their requests) and numbers in the history."""
        if run.recorded:
            return
        run.recorded = True
        from engines.density.request import sample_png_bytes
        from engines.requests import stamp

        info = run.info
        g = self._geometries.get(run.model_id) or self.geom
        seconds = (run.t_end or time.perf_counter()) - run.t0
        status = {"done": "done", "stopped": "stopped"}.get(state, "failed")
        for lane, request in enumerate(run.lanes):
            run_id = run.run_ids.get(lane)
            if run_id is None:
                continue
            files, samples = {}, []
            for (ln, s), done in sorted(run.results.items()):
                if ln != lane:
                    continue
                files[f"sample_{s + 1}.png"] = sample_png_bytes(
                    done.image, g.height, g.width, stamp(request.for_sample(s).to_json(), info))
                samples.append({"sample": s + 1, "seed": done.seed, "logprob": done.order_logprob,
                                "ensemble_logprob": done.ensemble_logprob, "sampled_logprob": done.sampled_logprob,
                                "bits_per_dim": -done.order_logprob / math.log(2) / done.image.size})
            summary = {"kind": run.kind, "ordering": request.ordering, "seconds": seconds, "samples": samples,
                       "pixels": run.n}
            if samples:
                summary["logprob"] = samples[0]["logprob"]
            self.ctx.record_run_finished(run_id, files=files, summary=summary, status=status)

    def apply_request(self, request) -> None:
        """Make the tab ready to run `request` again: its model, ordering (and its seed), K, samples,
        canvas (the init image and its mask) and decoding config. InputError (nothing changed) when it
        cannot: another kind, a model not installed, an ordering the model lacks, a run going."""
        from engines.density.request import DensityRequest, parse_ordering, read_binary_png

        if not isinstance(request, DensityRequest):
            raise InputError(f"the Density tab runs density requests, not {getattr(request, 'kind', '?')} ones")
        info, g = self._infos.get(request.model), self._geometries.get(request.model)
        if info is None or g is None:
            raise InputError(f"model {request.model!r} is not installed: add the folder that holds it in the Models "
                             "tab, then open the file again")
        if self.runner.is_busy():
            raise InputError("A run is in progress in the Density tab: stop it first, then open the file again")
        family = self._families[request.model]
        name, order_seed = parse_ordering(request.ordering)
        if name not in work.COMPARE_ORDERINGS:
            raise InputError(f"unknown ordering {request.ordering!r}; the tab offers "
                             f"{', '.join(work.COMPARE_ORDERINGS)}")
        if family == "nade" and name != "raster":
            raise InputError(NADE_ORDER_TIP)
        if request.ensemble_k is not None and family == "made":
            work.check_k(request.ensemble_k, info)
        elif request.ensemble_k not in (None, 1):
            raise InputError(f"ensemble K = {request.ensemble_k} is out of range: {NADE_K_TIP}")
        pixels = regenerate = None
        if request.init is not None:
            request.inputs(g.height, g.width)  # the mask's coverage and both sizes, checked
            pixels = read_binary_png(request.init, "the init image", g.height, g.width).astype(np.uint8)[None]
            regenerate = read_binary_png(request.mask, "the mask", g.height, g.width)
            if family == "nade" and not work.nade_can_inpaint(regenerate):
                raise InputError(work.NADE_INPAINT_MESSAGE)
        self.select_model(request.model)
        self._model_changed()  # a no-op when it was already the tab's model
        if order_seed is None and name == "random":
            order_seed = work.trained_random_seed(info)
        self.set_ordering(name, order_seed)
        if family == "made":
            self.k_spin.setValue(request.ensemble_k or work.made_masks_and_k(info)[1])
        self.samples_spin.setValue(min(request.count, work.MAX_SAMPLES))
        if pixels is not None:
            self.canvas.set_state(pixels=pixels, mask=regenerate)
        self.ctx.set_decoding_config(request.decoding, self.MODEL_KIND)
        action = "Inpaint" if pixels is not None else "Sample"
        more = f" (the tab makes at most {work.MAX_SAMPLES} at a time)" if request.count > work.MAX_SAMPLES else ""
        self._say(f"Restored a request for {html.escape(request.model)}, seed {request.seed}, "
                  f"{html.escape(work.ordering_label(self.ordering_spec()))} ordering{more}: press <b>{action}</b> "
                  f"to make the same {'digit' if request.count == 1 else 'digits'} again.")
        self._update_buttons()

    def history_state(self) -> dict[str, Any]:
        """The tab as it is (JSON, bounded: 28x28 images as rows of 0/1, at most MAX_SAMPLES of them):
        model, ordering, K, samples, speed, decoding config, canvas and the last run's requests and samples."""
        pixels, layer = self.canvas.state()
        state: dict[str, Any] = {
            "version": 1, "model": self._model_id, "ordering": self.ordering_spec(), "k": self.k(),
            "samples": self.samples_spin.value(), "speed": self.speed_slider.value(),
            "decoding": self.ctx.decoding_config(self.MODEL_KIND).to_dict(),
            "canvas": {"pixels": pixels[0].astype(int).tolist(), "mask": layer.astype(int).tolist()},
            "run": None,
        }
        run = self.run
        if run is not None and run.results and run.state != "running":
            state["run"] = {
                "kind": run.kind, "lanes": [ln.to_json() for ln in run.lanes], "shown": self._shown_sample,
                "before": {"pixels": run.before[0][0].astype(int).tolist(),
                           "mask": np.asarray(run.before[1]).astype(int).tolist()},
                "regenerate": None if run.regenerate is None else run.regenerate.astype(int).tolist(),
                "results": [{"lane": d.lane, "sample": d.sample, "seed": d.seed,
                             "pixels": d.image.reshape(self.geom.height, self.geom.width).astype(int).tolist(),
                             "sampled_logprob": d.sampled_logprob,
                             "order_logprob": d.order_logprob, "ensemble_logprob": d.ensemble_logprob,
                             "k": d.k, "n_sampled": d.n_sampled}
                            for _key, d in sorted(run.results.items())[:work.MAX_SAMPLES]],
            }
        return state

    def _restore_state(self, state: Any) -> None:
        from engines.decoding.config import DecodingConfig

        if not self._restore_saved_model(state):
            return
        g = self.geom
        name, order_seed = work.parse_spec(str(state.get("ordering") or "raster"))
        if self.family() == "made" or name == "raster":
            self.set_ordering(name, order_seed)
        if self.family() == "made" and isinstance(state.get("k"), int):
            self.set_k(state["k"])
        self.samples_spin.setValue(int(state.get("samples") or DEFAULT_SAMPLES))
        if isinstance(state.get("speed"), int):
            self.speed_slider.setValue(state["speed"])
        if isinstance(state.get("decoding"), dict):
            self.ctx.set_decoding_config(DecodingConfig.from_dict(state["decoding"]), self.MODEL_KIND)
        canvas = state.get("canvas") or {}
        pixels, mask = _binary_rows(canvas.get("pixels"), g), _binary_rows(canvas.get("mask"), g)
        self.canvas.set_state(pixels=pixels[None].astype(np.uint8), mask=mask.astype(bool))
        if state.get("run"):
            self._restore_run(state["run"])
        self._update_buttons()
        self._update_status()

    def _restore_run(self, saved: dict) -> None:
        """The last run as it finished: its samples in the grid (or its orderings side by side), pickable
        and exportable with their requests."""
        from engines.density.request import DensityRequest
        from engines.density.sampling import check_config
        from engines.requests import request_from_json

        g, info = self.geom, self._infos[self._model_id]
        lanes = [request_from_json(data) for data in saved["lanes"]]
        if not lanes or any(not isinstance(r, DensityRequest) or r.model != self._model_id for r in lanes):
            raise InputError("the saved run is for another model")
        before = saved.get("before") or {}
        before_pixels = _binary_rows(before.get("pixels"), g)[None].astype(np.uint8)
        before_mask = _binary_rows(before.get("mask"), g).astype(bool)
        regenerate = None if saved.get("regenerate") is None else _binary_rows(saved["regenerate"], g).astype(bool)
        kind = saved.get("kind") if saved.get("kind") in Run.KINDS else "sample"
        k = int(saved["results"][0]["k"]) if saved.get("results") else 1
        run = Run(kind, info, self.family(), lanes, (before_pixels, before_mask), regenerate, lanes[0].decoding,
                  check_config(lanes[0].decoding), k)
        run.recorded = True  # it is in the history already
        self._show_results_for(run, before_pixels)
        for r in saved.get("results") or []:
            image = _binary_rows(r["pixels"], g).reshape(-1).astype(np.uint8)
            done = work.SampleDone(int(r["lane"]), int(r["sample"]), int(r["seed"]), image,
                                   float(r["sampled_logprob"]), float(r["order_logprob"]),
                                   float(r["ensemble_logprob"]), int(r["k"]), int(r["n_sampled"]))
            if not 0 <= done.lane < len(lanes) or not 0 <= done.sample < lanes[done.lane].count:
                continue
            run.results[(done.lane, done.sample)] = done
            run.images.setdefault(done.lane, np.zeros((lanes[done.lane].count, g.height * g.width), np.uint8))
            run.images[done.lane][done.sample] = image
            run.n_sampled = done.n_sampled
            self._sample_done(run, done)
            if kind == "compare":
                self.lanes.set_lane(done.lane, image.reshape(1, g.height, g.width), None)
        run.state, run.t_end = "done", run.t0
        self.run = run
        shown = saved.get("shown")
        self._shown_sample = shown if isinstance(shown, int) else None
        if kind != "compare" and run.count > 1 and self._shown_sample is not None:
            self.grid.select(self._shown_sample)

    def _export_stem(self) -> str:
        run = self.run
        if run is not None and self._shown_sample is not None and run.kind != "compare":
            return f"{run.model_id}-seed{run.seed + self._shown_sample}"
        return f"{self._model_id or 'density'}-digit"

    # --- status ------------------------------------------------------------------------------------
    def _run_status_html(self, run: Run) -> str:
        return run.status_html(self._shown_sample)

    # --- buttons -------------------------------------------------------------------------------------
    def _update_buttons(self) -> None:
        has_model, busy = self._update_drawing_buttons()
        made = self.family() == "made"
        for w in (self.sample_button, self.inpaint_button, self.samples_spin, self.ordering_combo):
            w.setEnabled(has_model and not busy)
        self.compare_button.setEnabled(has_model and not busy and made)
        self.compare_button.setToolTip(
            "The same sampling (or, with a mask, the same inpainting) and the same seed under every ordering, side "
            "by side" if made or not has_model else NADE_COMPARE_TIP)
        self.k_spin.setEnabled(has_model and not busy and made)
        self.k_caption.setEnabled(made)
        self.export_button.setEnabled(has_model and not busy)
        self._ordering_controls()


def _binary_rows(rows: Any, g: Geometry) -> np.ndarray:
    """(H, W) uint8 0/1 from saved rows of 0/1; InputError when they do not fit the model's image."""
    a = np.asarray(rows if rows is not None else [], dtype=np.int64)
    if a.shape != (g.height, g.width) or not np.isin(a, (0, 1)).all():
        raise InputError("the saved image does not fit the model any more")
    return a.astype(np.uint8)


@register_tab("Density", order=40)
def make_density_tab(ctx: StudioContext) -> QWidget:
    return DensityTab(ctx)
