"""The Image tab's likelihood panel: the canvas scored on a worker, and what the model expected.

After every change the image is scored on `score_runner` (work.score_events): -log2 p of
each pixel given the pixels before it as a heatmap (`self.heatmap`, with `self.legend`),
log p(image) in nats and bits/dim (`self.totals`), and the model's full distribution at the
hovered pixel (`self.chart`, `self.hover_info`; one forward pass gives every conditional),
or, while a run paints, at the value being sampled.

A mixin for the Image tab (with DrawingTabMixin), which provides ctx, runner, score_runner,
canvas, geom, score, _model_id, _infos, _hover, _live_probs, _closed, _schedule_score,
label() and _label_name().
"""

from __future__ import annotations

import html
import math

import numpy as np
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QWidget

from studio.image import work
from studio.image.colours import nice_vmax
from studio.image.drawing import bits
from studio.image.likelihood_view import DistributionChart, HeatLegend, HeatmapView
from studio.widgets import column, hbox, hint_label, readout_label, section_title


class LikelihoodPanelMixin:
    def _build_likelihood_panel(self) -> QWidget:
        """The panel right of the canvas: title, totals, heatmap, legend, hovered pixel, chart."""
        self.heatmap = HeatmapView()
        self.heatmap.hovered.connect(self._hovered)
        self.legend = HeatLegend()
        self.totals = readout_label("ImageTotals")
        self.hover_info = hint_label(wrap=True)
        self.chart = DistributionChart()
        heat_wrap = hbox()
        heat_wrap.addWidget(self.heatmap, 0, Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop)
        heat_wrap.addStretch(1)
        right = column(section_title("Likelihood"), self.totals, heat_wrap, self.legend, 4, self.hover_info,
                       (self.chart, 1), name="LikelihoodPanel")
        right.setMinimumWidth(240)
        return right

    # --- scoring -------------------------------------------------------------------------------
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
