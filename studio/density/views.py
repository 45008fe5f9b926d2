"""The Density tab's own views, built from the Image tab's widgets.

* `ModelComparison` - "which model finds this digit more likely, and where": a small table
  of log p(image) per model (nats and bits/dim, the most likely one in bold) over one
  `HeatmapView` per model (-log2 p of each pixel given the pixels before it in that model's
  ordering), all on one colour scale (one `HeatLegend`) so the maps compare pixel by pixel.
* `LaneStrip` - Compare orderings: one small read-only `ImageCanvas` per ordering, filling in
  as it is sampled (pixels still to come in slate blue), with a caption and its log p under
  it; clicking one asks for it to be loaded into the canvas.
"""

from __future__ import annotations

import html
import math

import numpy as np
from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QFont, QMouseEvent
from PySide6.QtWidgets import (
    QAbstractItemView,
    QGridLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QSizePolicy,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from studio.image.canvas import ImageCanvas
from studio.image.colours import nice_vmax
from studio.image.drawing import Geometry
from studio.image.likelihood_view import HeatLegend, HeatmapView

LN2 = math.log(2)
MAP_PIXELS = 112  # each model's heatmap: 28x28 at zoom 4
LANE_PIXELS = 112


class ModelComparison(QWidget):
    """A table of log p(image) per model over their per-pixel surprise maps, side by side."""

    hovered = Signal(int, int)  # row, col on any map; (-1, -1) on leaving

    COLUMNS = ("Model", "log p(x), nats", "bits/dim")

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("ModelComparison")
        self.table = QTableWidget(0, len(self.COLUMNS))
        self.table.setObjectName("ComparisonTable")
        self.table.setHorizontalHeaderLabels(self.COLUMNS)
        self.table.verticalHeader().hide()
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.NoSelection)
        self.table.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.table.setWordWrap(False)
        self.table.verticalHeader().setDefaultSectionSize(self.table.fontMetrics().height() + 8)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        for i in (1, 2):
            header.setSectionResizeMode(i, QHeaderView.ResizeMode.ResizeToContents)
        self.table.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.table.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.maps_box = QWidget()
        self.maps_layout = QGridLayout(self.maps_box)
        self.maps_layout.setContentsMargins(0, 0, 0, 0)
        self.maps_layout.setHorizontalSpacing(8)
        self.legend = HeatLegend()
        self.legend.setSizePolicy(QSizePolicy.Policy.Fixed, QSizePolicy.Policy.Fixed)
        self.legend.setToolTip("Surprise of each pixel: −log₂ p(pixel | the pixels before it in that model's "
                               "ordering), in bits, on one scale for every map. Black: the model expected it; "
                               "yellow: it did not.")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.table)
        layout.addWidget(self.maps_box, 0, Qt.AlignmentFlag.AlignLeft)
        layout.addWidget(self.legend)
        self.families: list[str] = []
        self.heatmaps: dict[str, HeatmapView] = {}
        self.captions: dict[str, QLabel] = {}
        self.rows: dict[str, object] = {}  # family -> work.ModelScore of the last scores
        self._shape = (28, 28)
        self._fit_table()

    # --- layout --------------------------------------------------------------------------
    def set_models(self, models: list[tuple[str, str]], height: int, width: int) -> None:
        """One column per (family, model id), in order; the scores are cleared."""
        while self.maps_layout.count():
            item = self.maps_layout.takeAt(0)
            if item.widget() is not None:
                item.widget().deleteLater()
        self.families = [f for f, _ in models]
        self.heatmaps, self.captions, self.rows = {}, {}, {}
        self._shape = (height, width)
        zoom = max(1, MAP_PIXELS // max(height, width))
        self.table.setRowCount(len(models))
        self.legend.setFixedWidth(max(220, len(models) * (width * zoom + 1) + (len(models) - 1) * 8))
        for col, (family, model_id) in enumerate(models):
            title = QLabel(f"<b>{html.escape(_family_name(family))}</b>")
            title.setTextFormat(Qt.TextFormat.RichText)
            title.setToolTip(model_id)
            view = HeatmapView()
            view.setObjectName(f"Heatmap_{family}")
            view.set_shape(height, width, zoom)
            view.placeholder = "not scored yet"
            view.hovered.connect(self._hovered)
            caption = QLabel("")
            caption.setObjectName("Hint")
            caption.setWordWrap(True)
            caption.setFixedWidth(max(view.sizeHint().width(), 120))
            self.maps_layout.addWidget(title, 0, col)
            self.maps_layout.addWidget(view, 1, col, Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop)
            self.maps_layout.addWidget(caption, 2, col, Qt.AlignmentFlag.AlignTop)
            self.heatmaps[family] = view
            self.captions[family] = caption
            for c, text in enumerate((f"{_family_name(family)} · {model_id}", "…", "")):
                self.table.setItem(col, c, QTableWidgetItem(text))
        self._fit_table()

    def _fit_table(self) -> None:
        rows = self.table.rowCount()
        h = self.table.horizontalHeader().sizeHint().height() + 2
        for r in range(rows):
            h += self.table.rowHeight(r)
        self.table.setFixedHeight(max(h, 40))

    # --- scores ----------------------------------------------------------------------------
    def set_scores(self, rows, current: bool = True) -> None:
        """Show work.ModelScore rows (matched to the columns by family) on one colour scale."""
        self.rows = {r.family: r for r in rows}
        ok = [r for r in rows if r.ok]
        vmax = nice_vmax(np.concatenate([r.nll_bits.reshape(-1) for r in ok])) if ok else 1.0
        best = max((r.total for r in ok), default=None)
        self.legend.set_vmax(vmax)
        for i, family in enumerate(self.families):
            r = self.rows.get(family)
            view, caption = self.heatmaps[family], self.captions[family]
            if r is None:
                continue
            items = [self.table.item(i, c) for c in range(3)]
            name = f"{_family_name(family)} · {r.model_id}"
            if not r.ok:
                view.clear("Scoring failed")
                caption.setText("scoring failed")
                caption.setToolTip(r.error or "")
                caption.setStyleSheet("color:#c62828;")
                items[0].setText(name)
                items[1].setText("failed")
                items[1].setToolTip(r.error or "")
                items[2].setText("")
                continue
            caption.setStyleSheet("")
            view.set_map(r.nll_bits, vmax)
            view.set_stale(not current)
            how = _how(r)
            items[0].setText(name + (f" (K = {r.k})" if r.family == "made" else ""))
            items[1].setText(f"{r.total:.2f}")
            items[2].setText(f"{r.bits_per_dim():.4f}")
            for it in items:
                it.setToolTip(how)
            font = QFont(self.table.font())
            font.setBold(best is not None and r.total == best and len(ok) > 1)
            for it in items:
                it.setFont(font)
            one = ", one mask" if r.family == "made" and r.k > 1 else ""
            caption.setText(f"{_ordering_text(r.ordering)}{one}\nsum {r.map_total:.1f} nats")
            tip = (f"The map: −log₂ p of each pixel given the pixels before it in {_ordering_text(r.ordering)} order"
                   f"{one}; it sums to {r.map_total:.2f} nats")
            if r.family == "made" and r.k > 1:
                tip += f" (the table's number is the mixture of K = {r.k} masks: {r.total:.2f} nats)"
            caption.setToolTip(tip)
            view.setToolTip(tip)
        self._fit_table()

    def set_stale(self, stale: bool) -> None:
        for view in self.heatmaps.values():
            view.set_stale(stale)

    def clear(self, placeholder: str | None = None) -> None:
        self.rows = {}
        for i, family in enumerate(self.families):
            self.heatmaps[family].clear(placeholder)
            self.captions[family].setText("")
            for c in (1, 2):
                item = self.table.item(i, c)
                if item is not None:
                    item.setText("…" if c == 1 else "")

    def values(self, family: str) -> np.ndarray | None:
        """The map shown for `family`, -log2 p per pixel (None before a score)."""
        view = self.heatmaps.get(family)
        return None if view is None else view.values()

    def table_text(self) -> list[list[str]]:
        return [[self.table.item(r, c).text() if self.table.item(r, c) else "" for c in range(3)]
                for r in range(self.table.rowCount())]

    # --- hover -------------------------------------------------------------------------------
    def set_hover(self, row: int, col: int) -> None:
        for view in self.heatmaps.values():
            view.set_hover(row, col)

    def _hovered(self, row: int, col: int) -> None:
        self.set_hover(row, col)
        self.hovered.emit(row, col)


def _family_name(family: str) -> str:
    return {"nade": "NADE", "made": "MADE", "pixelcnn": "PixelCNN"}.get(family, family)


def _ordering_text(spec: str) -> str:
    name, _sep, seed = str(spec).partition(":")
    return f"random (seed {seed})" if name == "random" and seed else name


def _how(row) -> str:
    if row.family == "made":
        if row.k > 1:
            return f"log p(x) exactly, the mixture of the first {row.k} masks (log mean exp of their log p)"
        return f"log p(x) exactly, one mask ({_ordering_text(row.ordering)} order)"
    return "log p(x) exactly, raster order"


class LaneCanvas(ImageCanvas):
    """A read-only canvas that reports clicks (a lane of Compare orderings)."""

    clicked = Signal()

    def mousePressEvent(self, event: QMouseEvent) -> None:  # noqa: N802
        if event.button() == Qt.MouseButton.LeftButton:
            self.clicked.emit()
            event.accept()
            return
        super().mousePressEvent(event)


class LaneStrip(QWidget):
    """One read-only canvas per ordering, side by side."""

    picked = Signal(int)  # the lane clicked

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("OrderingLanes")
        self._layout = QHBoxLayout(self)
        self._layout.setContentsMargins(0, 0, 0, 0)
        self._layout.setSpacing(12)
        self._layout.addStretch(1)
        self.canvases: list[LaneCanvas] = []
        self.titles: list[QLabel] = []
        self.captions: list[QLabel] = []

    def reset(self, titles: list[str], geometry: Geometry) -> None:
        while self._layout.count():
            item = self._layout.takeAt(0)
            if item.widget() is not None:
                item.widget().deleteLater()
        self.canvases, self.titles, self.captions = [], [], []
        zoom = max(1, LANE_PIXELS // max(geometry.height, geometry.width))
        for i, text in enumerate(titles):
            box = QWidget()
            v = QVBoxLayout(box)
            v.setContentsMargins(0, 0, 0, 0)
            v.setSpacing(2)
            title = QLabel(f"<b>{html.escape(text)}</b>")
            title.setTextFormat(Qt.TextFormat.RichText)
            canvas = LaneCanvas(geometry, zoom=zoom)
            canvas.set_editable(False)
            canvas.setCursor(Qt.CursorShape.PointingHandCursor)
            canvas.setToolTip("Click to load this result into the canvas")
            canvas.clicked.connect(lambda i=i: self.picked.emit(i))
            caption = QLabel("")
            caption.setObjectName("Hint")
            caption.setWordWrap(True)
            caption.setFixedWidth(max(canvas.sizeHint().width() + 24, 130))
            v.addWidget(title)
            v.addWidget(canvas)
            v.addWidget(caption)
            self._layout.addWidget(box, 0, Qt.AlignmentFlag.AlignTop)
            self.canvases.append(canvas)
            self.titles.append(title)
            self.captions.append(caption)
        self._layout.addStretch(1)

    def set_lane(self, lane: int, pixels: np.ndarray, pending: np.ndarray | None,
                 marker: tuple[int, int] | None = None) -> None:
        """Show lane `lane`'s pixels (C, H, W) with the pixels still to come marked."""
        if not 0 <= lane < len(self.canvases):
            return
        canvas = self.canvases[lane]
        canvas.pixels[...] = pixels
        canvas.set_pending(pending)  # redraws with the new pixels
        canvas.set_marker(*(marker if marker is not None else (None,)))

    def set_caption(self, lane: int, text: str, tooltip: str | None = None) -> None:
        if 0 <= lane < len(self.captions):
            self.captions[lane].setText(text)
            if tooltip is not None:
                self.captions[lane].setToolTip(tooltip)
                self.canvases[lane].setToolTip(tooltip + "\nClick to load this result into the canvas")

    def pixels(self, lane: int) -> np.ndarray:
        return self.canvases[lane].pixels.copy()

    def count(self) -> int:
        return len(self.canvases)
