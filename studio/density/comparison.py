"""The Density tab's comparison: the digit on the canvas scored by NADE, MADE and a PixelCNN.

Which models are compared (the chosen one for its family, else the shipped one, else the
first of that family drawing images of the same size), their scoring on `score_runner`
after every change (work.score_events: the exact log p(image) and -log2 p of each pixel
in each model's ordering), the totals line (`self.totals`: the chosen model's numbers and
how the others rank), the side-by-side view (`self.comparison`, a ModelComparison) and
the hovered pixel's probabilities under each model (`self.hover_info`).

A mixin for the Density tab (with DrawingTabMixin), which provides ctx, runner,
score_runner, canvas, geom, score, _model_id, _infos, _families, _geometries, _pixelcnns,
_pixelcnn_geoms, _ks, _hover, _closed, _schedule_score, family(), k() and ordering_spec().
"""

from __future__ import annotations

import html
from typing import Any

import numpy as np
from PySide6.QtWidgets import QWidget

from studio.density import work
from studio.density.views import ModelComparison
from studio.image.drawing import bits
from studio.widgets import STRETCH, column, hint_label, readout_label, section_title

PREFERRED = {"nade": "bmnist-nade", "made": "bmnist-made", "pixelcnn": "bmnist-pixelcnn"}
FAMILIES = ("nade", "made", "pixelcnn")


class DensityComparisonMixin:
    def _build_comparison_panel(self) -> QWidget:
        """The panel right of the canvas: the question, the totals, the models side by side, the hovered pixel."""
        self.comparison = ModelComparison()
        self.comparison.hovered.connect(self._hovered)
        self.totals = readout_label("DensityTotals")
        self.hover_info = hint_label(wrap=True, rich=True)
        right = column(section_title("Which model finds this digit more likely, and where", wrap=True),
                       self.totals, self.comparison, self.hover_info, STRETCH, name="DensityLikelihood")
        right.setMinimumWidth(300)
        return right

    # --- the models compared -------------------------------------------------------------------
    def _comparison_models(self) -> list[tuple[str, Any]]:
        """(family, ModelInfo) for NADE, MADE and the PixelCNN: the chosen model for its family, else the
        shipped one, else the first of that family drawing images of the same size."""
        g = self.geom
        if g is None:
            return []
        out = []
        chosen_family = self.family()
        for family in FAMILIES:
            if family == chosen_family:
                out.append((family, self._infos[self._model_id]))
                continue
            if family == "pixelcnn":
                pool = {i: m for i, m in self._pixelcnns.items()
                        if (self._pixelcnn_geoms[i].height, self._pixelcnn_geoms[i].width) == (g.height, g.width)}
            else:
                pool = {i: m for i, m in self._infos.items() if self._families[i] == family
                        and (self._geometries[i].height, self._geometries[i].width) == (g.height, g.width)}
            if not pool:
                continue
            out.append((family, pool.get(PREFERRED[family]) or next(iter(pool.values()))))
        return out

    def _setup_comparison(self) -> None:
        g = self.geom
        models = self._comparison_models()
        self.comparison.set_models([(f, m.id) for f, m in models], g.height, g.width)
        self.score = None
        self.hover_info.setText("")

    def comparison_ids(self) -> dict[str, str]:
        """family -> model id of the models scored side by side."""
        return {f: m.id for f, m in self._comparison_models()}

    # --- scoring -------------------------------------------------------------------------------
    def _score_requests(self) -> list[work.ScoreRequest]:
        out = []
        for family, info in self._comparison_models():
            if family == "made":
                ordering = self.ordering_spec() if self.family() == "made" else "raster"
                n, default = work.made_masks_and_k(info)
                k = self.k() if info.id == self._model_id else self._ks.get(info.id, default)
                out.append(work.ScoreRequest("made", info, ordering, min(max(1, k), n)))
            else:
                out.append(work.ScoreRequest(family, info))
        return out

    @staticmethod
    def _request_key(requests: list[work.ScoreRequest]) -> tuple:
        return tuple((r.family, r.info.id, r.ordering, r.k) for r in requests)

    def _invalidate_score(self) -> None:
        self.comparison.set_stale(True)
        self._schedule_score()

    def _start_score(self) -> None:
        if self._closed or self.runner.is_busy() or self.geom is None:
            return
        requests = self._score_requests()
        if not requests:
            return
        key = self._request_key(requests)
        pixels = self.canvas.pixels[0].copy()
        self.score_runner.start(lambda: work.score_events(requests, pixels, key),
                                on_events=self._on_score, on_errored=self._score_failed)

    def _score_current(self, score: work.ScoreDone | None) -> bool:
        return (score is not None and score.pixels.shape == self.canvas.pixels[0].shape
                and np.array_equal(score.pixels, self.canvas.pixels[0])
                and score.key == self._request_key(self._score_requests()))

    def _on_score(self, batch: list) -> None:
        for ev in batch:
            if not isinstance(ev, work.ScoreDone) or ev.pixels.shape != self.canvas.pixels[0].shape:
                continue
            if [r.family for r in ev.rows] != self.comparison.families:
                continue  # scored for another set of models
            self.score = ev
            current = self._score_current(ev)
            self.comparison.set_scores(ev.rows, current)
            self._show_totals(ev, current)
            if not current:
                self._schedule_score()
            if self._hover is not None:
                self.show_pixel(*self._hover)

    def _show_totals(self, ev: work.ScoreDone, current: bool) -> None:
        row = next((r for r in ev.rows if r.model_id == self._model_id), None)
        if row is None:
            return
        if not row.ok:
            self.totals.setStyleSheet("color:#c62828;")
            self.totals.setText(html.escape(f"Scoring failed: {row.error}"))
            return
        self.totals.setStyleSheet("")
        what = (f"mixture of K = {row.k} masks" if row.family == "made" and row.k > 1
                else f"{work.ordering_label(row.ordering)} ordering")
        ok = [r for r in ev.rows if r.ok]
        rank = ""
        if len(ok) > 1:
            best = max(ok, key=lambda r: r.total)
            if best is row:
                rank = " · the most likely of the models here"
            else:
                rank = f" · {work.FAMILY_LABELS[best.family]} finds it {bits(best.total - row.total):.1f} bits more likely"
        self.totals.setText(
            f"<b>{html.escape(self._model_id)}: log p(x) = {row.total:.2f} nats</b> "
            f"({row.bits_per_dim():.4f} bits/dim, exact, {html.escape(what)}){rank}"
            + ("" if current else " · <i>updating…</i>"))

    def _score_failed(self, message: str) -> None:
        self.totals.setStyleSheet("color:#c62828;")
        self.totals.setText(html.escape(f"Scoring failed: {message}"))
        self.comparison.clear("No likelihood: scoring failed")

    def model_total(self, family: str) -> float | None:
        """log p(image) in nats that the comparison shows for `family` (None before a score)."""
        if self.score is None:
            return None
        row = next((r for r in self.score.rows if r.family == family and r.ok), None)
        return None if row is None else row.total

    # --- hover --------------------------------------------------------------------------------
    def _hovered(self, row: int, col: int) -> None:
        self._hover = (row, col) if row >= 0 else None
        self.comparison.set_hover(row, col)
        if self._hover is None:
            self.hover_info.setText("")
        else:
            self.show_pixel(row, col)

    def show_pixel(self, row: int, col: int) -> None:
        """Each model's probability for pixel (row, col) of the scored image, and its place in the ordering."""
        g, score = self.geom, self.score
        if g is None:
            return
        value = int(self.canvas.pixels[0, row, col])
        head = f"pixel ({row}, {col}) · {'ink' if value else 'blank'}"
        if score is None or score.pixels.shape != (g.height, g.width):
            self.hover_info.setText(html.escape(head + " · not scored yet"))
            return
        parts = []
        d = row * g.width + col
        for r in score.rows:
            if not r.ok:
                continue
            lp = float(r.logprob_map[row, col])
            p1 = float(r.prob_one(score.pixels)[row, col])
            parts.append(f"<b>{work.FAMILY_LABELS[r.family]}</b> p(ink) = {p1:.3f}, "
                         f"−log₂ p = {bits(-lp):.2f} bits")
            if r.model_id == self._model_id and r.order is not None:
                k = int(np.flatnonzero(r.order == d)[0])
                head += f" · position {k + 1} of {len(r.order)} in {work.ordering_label(r.ordering)} order"
        stale = "" if self._score_current(score) else " (before your last change)"
        self.hover_info.setText(html.escape(head + stale) + "<br>" + "<br>".join(parts))
