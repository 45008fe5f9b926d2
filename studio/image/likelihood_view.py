"""The likelihood view: where the model was surprised, and what it expected at a pixel.

* `HeatmapView` - each pixel's surprise, -log2 p(pixel | the pixels before it) in bits,
  coloured from black (expected) to pale yellow (surprising), at the canvas's zoom.
* `HeatLegend` - the colour scale with its range in bits.
* `DistributionChart` - the model's distribution at one pixel: bars over the values
  (256 intensities, or blank / ink for a binary model), the pixel's actual value marked.
"""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import QPoint, QRect, QRectF, QSize, Qt, Signal
from PySide6.QtGui import QColor, QFont, QImage, QLinearGradient, QMouseEvent, QPainter, QPen
from PySide6.QtWidgets import QSizePolicy, QWidget

from studio.image.colours import heat_hex, heat_rgb

CHANNEL_COLOURS = ("#4b5563",)  # grey models
RGB_COLOURS = ("#ef4444", "#22c55e", "#3b82f6")
ACTUAL_COLOUR = "#f59e0b"  # the pixel's own value
BINARY_COLOURS = ("#6b7280", "#38bdf8")  # blank, ink


class HeatmapView(QWidget):
    hovered = Signal(int, int)  # row, col; (-1, -1) on leaving

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("LikelihoodHeatmap")
        self.setMouseTracking(True)
        self.setSizePolicy(QSizePolicy.Policy.Fixed, QSizePolicy.Policy.Fixed)
        self._shape = (28, 28)
        self._zoom = 8
        self._map: np.ndarray | None = None  # (H, W) bits
        self._vmax = 1.0
        self._image: QImage | None = None
        self._hover: tuple[int, int] | None = None
        self._stale = False
        self.placeholder = "No likelihood yet"

    def set_shape(self, height: int, width: int, zoom: int) -> None:
        self._shape = (height, width)
        self._zoom = max(1, int(zoom))
        self.clear()
        self.updateGeometry()
        self.resize(self.sizeHint())

    def set_zoom(self, zoom: int) -> None:
        self._zoom = max(1, int(zoom))
        self.updateGeometry()
        self.resize(self.sizeHint())
        self.update()

    def set_map(self, nll_bits: np.ndarray, vmax: float) -> None:
        self._map = np.asarray(nll_bits, np.float64)
        self._vmax = vmax
        rgb = np.ascontiguousarray(heat_rgb(self._map, vmax))
        h, w = self._map.shape
        self._image = QImage(rgb.data, w, h, 3 * w, QImage.Format.Format_RGB888).copy()
        self._stale = False
        self.update()

    def clear(self, placeholder: str | None = None) -> None:
        self._map = None
        self._image = None
        if placeholder is not None:
            self.placeholder = placeholder
        self.update()

    def set_stale(self, stale: bool) -> None:
        """Dim the map while the image has changed and the new score is not in yet."""
        if stale != self._stale:
            self._stale = stale
            self.update()

    def set_hover(self, row: int, col: int) -> None:
        cell = (row, col) if row >= 0 else None
        if cell != self._hover:
            self._hover = cell
            self.update()

    def values(self) -> np.ndarray | None:
        return None if self._map is None else self._map.copy()

    def sizeHint(self) -> QSize:  # noqa: N802
        h, w = self._shape
        return QSize(w * self._zoom + 1, h * self._zoom + 1)

    def minimumSizeHint(self) -> QSize:  # noqa: N802
        return self.sizeHint()

    def paintEvent(self, _event) -> None:  # noqa: N802
        h, w = self._shape
        z = self._zoom
        target = QRect(0, 0, w * z, h * z)
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, False)
        if self._image is None:
            p.fillRect(target, QColor("#1f2937"))
            p.setPen(QColor("#9ca3af"))
            p.drawText(target.adjusted(8, 8, -8, -8), Qt.AlignmentFlag.AlignCenter | Qt.TextFlag.TextWordWrap,
                       self.placeholder)
        else:
            p.drawImage(target, self._image)
            if self._stale:
                p.fillRect(target, QColor(17, 24, 39, 110))
        if self._hover is not None:
            r, c = self._hover
            p.setPen(QPen(QColor("#38bdf8"), 2))
            p.drawRect(QRect(c * z, r * z, z, z).adjusted(1, 1, -1, -1))
        p.setPen(QPen(QColor(110, 110, 110), 1))
        p.drawRect(target)
        p.end()

    def mouseMoveEvent(self, event: QMouseEvent) -> None:  # noqa: N802
        pos = event.position().toPoint()
        h, w = self._shape
        r, c = pos.y() // self._zoom, pos.x() // self._zoom
        cell = (int(r), int(c)) if 0 <= r < h and 0 <= c < w and pos.x() >= 0 and pos.y() >= 0 else (-1, -1)
        self.set_hover(*cell)
        self.hovered.emit(*cell)

    def leaveEvent(self, event) -> None:  # noqa: N802
        self.set_hover(-1, -1)
        self.hovered.emit(-1, -1)
        super().leaveEvent(event)


class HeatLegend(QWidget):
    """The heatmap's colour scale: 0 bits on the left, `vmax` bits on the right."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.vmax = 1.0
        self.setMinimumHeight(34)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.setToolTip("Surprise of each pixel: −log₂ p(pixel | every pixel before it, in raster order), in bits. "
                        "Black: the model expected it; yellow: it did not.")

    def set_vmax(self, vmax: float) -> None:
        self.vmax = vmax
        self.update()

    def sizeHint(self) -> QSize:  # noqa: N802
        return QSize(220, 34)

    def paintEvent(self, _event) -> None:  # noqa: N802
        p = QPainter(self)
        bar = QRectF(4, 2, max(10, self.width() - 8), 12)
        grad = QLinearGradient(bar.topLeft(), bar.topRight())
        for i in range(9):
            grad.setColorAt(i / 8, QColor(heat_hex(i / 8 * self.vmax, self.vmax)))
        p.fillRect(bar, grad)
        p.setPen(QColor(110, 110, 110))
        p.drawRect(bar)
        p.setPen(self.palette().text().color())
        font = QFont(self.font())
        font.setPointSizeF(max(7.0, font.pointSizeF() - 1))
        p.setFont(font)
        y = int(bar.bottom()) + 14
        p.drawText(QPoint(4, y), "0 bits")
        mid = "−log₂ p per pixel"
        fm = p.fontMetrics()
        p.drawText(QPoint(int(bar.center().x() - fm.horizontalAdvance(mid) / 2), y), mid)
        top = f"≥ {self.vmax:g} bits"
        p.drawText(QPoint(int(bar.right() - fm.horizontalAdvance(top)), y), top)
        p.end()


class DistributionChart(QWidget):
    """Bars of the model's distribution at one pixel (one row of bars per channel)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("PixelDistribution")
        self.setMinimumSize(220, 120)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
        self.probs: np.ndarray | None = None  # (C, V)
        self.actual: np.ndarray | None = None  # (C,) or None
        self.levels = 256
        self.placeholder = "Hover a pixel to see what the model expected there."

    def set_distribution(self, probs: np.ndarray | None, actual: np.ndarray | None = None, *,
                         levels: int | None = None) -> None:
        self.probs = None if probs is None else np.asarray(probs, np.float64).reshape(-1, np.shape(probs)[-1])
        self.actual = None if actual is None else np.asarray(actual).reshape(-1)
        if levels is not None:
            self.levels = levels
        self.update()

    def clear(self, placeholder: str | None = None) -> None:
        if placeholder is not None:
            self.placeholder = placeholder
        self.set_distribution(None)

    def sizeHint(self) -> QSize:  # noqa: N802
        return QSize(260, 140)

    def paintEvent(self, _event) -> None:  # noqa: N802
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing, False)
        text = self.palette().text().color()
        rect = self.rect().adjusted(2, 2, -2, -2)
        if self.probs is None:
            p.setPen(QColor("#6b7280"))
            p.drawText(rect, Qt.AlignmentFlag.AlignCenter | Qt.TextFlag.TextWordWrap, self.placeholder)
            p.end()
            return
        C, V = self.probs.shape
        fm = p.fontMetrics()
        row_h = rect.height() / C
        colours = RGB_COLOURS if C == 3 else CHANNEL_COLOURS * C
        for ch in range(C):
            top = rect.top() + ch * row_h
            area = QRectF(rect.left() + 2, top + 2, rect.width() - 4,
                          min(row_h - fm.height() - 6, 58.0 if V == 2 else 150.0))
            probs = self.probs[ch]
            actual = None if self.actual is None else int(self.actual[ch])
            if V == 2:  # binary: two labelled bars
                self._binary(p, area, probs, actual, text)
            else:
                self._bars(p, area, probs, actual, colours[ch])
            p.setPen(text)
            label_y = int(area.bottom() + fm.ascent() + 3)
            if V == 2:
                caption = f"p(ink) = {probs[1]:.3f}"
            else:
                caption = f"values 0–{V - 1} · peak p {probs.max():.3f} at {int(probs.argmax())}"
            if actual is not None:
                caption += f" · orange: this pixel ({('blank', 'ink')[actual] if V == 2 else actual})"
            p.drawText(QPoint(int(area.left()), label_y), caption)
        p.end()

    def _bars(self, p: QPainter, area: QRectF, probs: np.ndarray, actual: int | None, colour: str) -> None:
        V = len(probs)
        top = max(float(probs.max()), 1e-12)
        p.fillRect(area, QColor(127, 127, 127, 25))
        w = area.width() / V
        p.setPen(Qt.PenStyle.NoPen)
        for v in range(V):
            h = area.height() * probs[v] / top
            if h <= 0:
                continue
            c = QColor(ACTUAL_COLOUR) if v == actual else QColor(colour)
            p.setBrush(c)
            p.drawRect(QRectF(area.left() + v * w, area.bottom() - h, max(w, 1.0), h))
        if actual is not None:  # a tick under the actual value, visible even when its bar is tiny
            p.setPen(QPen(QColor(ACTUAL_COLOUR), 2))
            x = area.left() + (actual + 0.5) * w
            p.drawLine(int(x), int(area.bottom()) - 4, int(x), int(area.bottom()) + 2)

    def _binary(self, p: QPainter, area: QRectF, probs: np.ndarray, actual: int | None, text: QColor) -> None:
        labels = ("blank", "ink")
        bar_h = min(26.0, (area.height() - 6) / 2)
        fm = p.fontMetrics()
        label_w = fm.horizontalAdvance("blank ") + 4
        for v in range(2):
            y = area.top() + v * (bar_h + 6)
            full = QRectF(area.left() + label_w, y, area.width() - label_w - fm.horizontalAdvance(" 0.000") - 4, bar_h)
            p.fillRect(full, QColor(127, 127, 127, 25))
            bar = QRectF(full.left(), full.top(), full.width() * float(probs[v]), full.height())
            p.fillRect(bar, QColor(ACTUAL_COLOUR) if v == actual else QColor(BINARY_COLOURS[v]))
            p.setPen(text)
            p.drawText(QPoint(int(area.left()), int(y + bar_h / 2 + fm.ascent() / 2 - 1)), labels[v])
            p.drawText(QPoint(int(full.right() + 4), int(y + bar_h / 2 + fm.ascent() / 2 - 1)), f"{probs[v]:.3f}")
