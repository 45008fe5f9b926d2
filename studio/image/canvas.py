"""The drawing canvas: the model's image at its own resolution, zoomed by a whole factor.

Pixels are painted as blocks (nearest neighbour) with grid lines once they are large
enough; the mask layer is a translucent red overlay. Left button: the chosen tool; right
button: its opposite (brush <-> eraser, mask <-> unmask). A stroke is one undo step, and
`edited` fires when it ends (not on every mouse move). Ctrl+wheel zooms.

While a run paints (`set_editable(False)`), the tab writes into the canvas with
`set_pixels` and marks the value being sampled with `set_marker`. A run that samples in
another order than raster (the Density tab) also marks the pixels not sampled yet with
`set_pending`, so the ordering is seen filling in (a sampled 0 and a pixel still to come
would otherwise both look black).
"""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import QPoint, QRect, QSize, Qt, Signal
from PySide6.QtGui import QColor, QImage, QMouseEvent, QPainter, QPen, QWheelEvent
from PySide6.QtWidgets import QSizePolicy, QWidget

from studio.image.drawing import TOOLS, Geometry, History, brush_offsets, line_cells, stamp, to_8bit

MIN_ZOOM, MAX_ZOOM = 1, 48
GRID_ZOOM = 8  # grid lines from this zoom on
MASK_RGBA = (235, 45, 45, 120)
PENDING_RGB = (71, 85, 125)  # slate blue: a value not sampled yet (neither blank nor ink)
OPPOSITE = {"brush": "eraser", "eraser": "brush", "mask": "unmask", "unmask": "mask"}


def to_qimage(pixels: np.ndarray, levels: int, pending: np.ndarray | None = None) -> QImage:
    """(C, H, W) model values -> a QImage that owns its data.

    `pending` (H, W) bool: pixels not sampled yet, painted PENDING_RGB (the image becomes RGB).
    """
    a = np.ascontiguousarray(to_8bit(pixels, levels))
    h, w, c = a.shape
    if pending is not None and np.any(pending):
        rgb = np.repeat(a, 3, axis=2) if c == 1 else a.copy()
        rgb[np.asarray(pending, bool)] = PENDING_RGB
        rgb = np.ascontiguousarray(rgb)
        return QImage(rgb.data, w, h, 3 * w, QImage.Format.Format_RGB888).copy()
    if c == 1:
        g = np.ascontiguousarray(a[..., 0])
        return QImage(g.data, w, h, w, QImage.Format.Format_Grayscale8).copy()
    return QImage(a.data, w, h, 3 * w, QImage.Format.Format_RGB888).copy()


def mask_qimage(mask: np.ndarray) -> QImage:
    h, w = mask.shape
    rgba = np.zeros((h, w, 4), np.uint8)
    rgba[mask] = MASK_RGBA
    return QImage(rgba.data, w, h, 4 * w, QImage.Format.Format_RGBA8888).copy()


class ImageCanvas(QWidget):
    edited = Signal()  # pixels or mask changed by the user (a stroke ended, undo, clear, ...)
    hovered = Signal(int, int)  # row, col under the cursor; (-1, -1) when it leaves
    historyChanged = Signal()
    zoomChanged = Signal(int)

    def __init__(self, geometry: Geometry, zoom: int = 12, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("ImageCanvas")
        self.setMouseTracking(True)
        self.setCursor(Qt.CursorShape.CrossCursor)
        self.setSizePolicy(QSizePolicy.Policy.Fixed, QSizePolicy.Policy.Fixed)
        self.setFocusPolicy(Qt.FocusPolicy.ClickFocus)
        self.history = History()
        self.tool = "brush"
        self.brush_size = 2
        self.ink = 1
        self.show_mask = True
        self._zoom = zoom
        self._editable = True
        self._marker: tuple[int, int] | None = None
        self._pending: np.ndarray | None = None  # (H, W) bool: not sampled yet (a run's overlay)
        self._hover: tuple[int, int] | None = None
        self._stroke: dict | None = None
        self.set_geom(geometry)

    # --- state ----------------------------------------------------------------------------
    def set_geom(self, geometry: Geometry, pixels: np.ndarray | None = None, mask: np.ndarray | None = None) -> None:
        """A new image size/mode (another model): the drawing given, or blank; history cleared."""
        self.geom = geometry
        self.pixels = geometry.blank() if pixels is None else np.array(pixels, np.uint8)
        self.mask_layer = geometry.blank_mask() if mask is None else np.array(mask, bool)
        self.ink = min(max(1, self.ink), geometry.levels - 1)
        self.history.clear()
        self._stroke = None
        self._marker = self._hover = None
        self._pending = None
        self._refresh_images()
        self.updateGeometry()
        self.resize(self.sizeHint())
        self.historyChanged.emit()

    def state(self) -> tuple[np.ndarray, np.ndarray]:
        return self.pixels.copy(), self.mask_layer.copy()

    def set_state(self, pixels: np.ndarray | None = None, mask: np.ndarray | None = None, *,
                  undoable: bool = True, emit: bool = True) -> None:
        """Replace the pixels and/or the mask; with `undoable` the drawing before is one undo step."""
        if undoable:
            self.push_undo()
        if pixels is not None:
            pixels = np.asarray(pixels, np.uint8)
            if pixels.shape != self.pixels.shape:
                raise ValueError(f"pixels of shape {pixels.shape} for a {self.pixels.shape} canvas")
            self.pixels = pixels.copy()
        if mask is not None:
            mask = np.asarray(mask, bool)
            if mask.shape != self.mask_layer.shape:
                raise ValueError(f"mask of shape {mask.shape} for a {self.mask_layer.shape} canvas")
            self.mask_layer = mask.copy()
        self._refresh_images()
        if emit:
            self.edited.emit()

    def set_pixels(self, pixels: np.ndarray) -> None:
        """Show `pixels` now (a run painting): no undo step, no `edited`."""
        self.pixels[...] = pixels
        self._image = to_qimage(self.pixels, self.geom.levels, self._pending)
        self.update()

    def set_pending(self, pending: np.ndarray | None) -> None:
        """Mark (H, W) pixels as not sampled yet (drawn slate blue); None clears the marks."""
        self._pending = None if pending is None else np.array(pending, bool).reshape(self.geom.height, self.geom.width)
        self._image = to_qimage(self.pixels, self.geom.levels, self._pending)
        self.update()

    def pending(self) -> np.ndarray | None:
        return None if self._pending is None else self._pending.copy()

    def push_undo(self) -> None:
        self.history.push(self.state())
        self.historyChanged.emit()

    def undo(self) -> bool:
        return self._restore(self.history.undo(self.state()))

    def redo(self) -> bool:
        return self._restore(self.history.redo(self.state()))

    def _restore(self, state) -> bool:
        if state is None or state[0].shape != self.pixels.shape:
            return False
        self.pixels, self.mask_layer = state
        self._refresh_images()
        self.historyChanged.emit()
        self.edited.emit()
        return True

    def clear(self) -> None:
        """Erase all ink (one undo step); the mask stays."""
        if self.pixels.any():
            self.set_state(pixels=np.zeros_like(self.pixels))

    def clear_mask(self) -> None:
        if self.mask_layer.any():
            self.set_state(mask=np.zeros_like(self.mask_layer))

    # --- look ---------------------------------------------------------------------------------
    @property
    def zoom(self) -> int:
        return self._zoom

    def set_zoom(self, zoom: int) -> None:
        zoom = int(min(MAX_ZOOM, max(MIN_ZOOM, zoom)))
        if zoom != self._zoom:
            self._zoom = zoom
            self.updateGeometry()
            self.resize(self.sizeHint())
            self.update()
            self.zoomChanged.emit(zoom)

    def set_editable(self, editable: bool) -> None:
        self._editable = editable
        self._stroke = None
        self.setCursor(Qt.CursorShape.CrossCursor if editable else Qt.CursorShape.ArrowCursor)
        self.update()

    def is_editable(self) -> bool:
        return self._editable

    def set_marker(self, row: int | None, col: int | None = None) -> None:
        self._marker = None if row is None else (int(row), int(col))
        self.update()

    def set_show_mask(self, show: bool) -> None:
        self.show_mask = show
        self.update()

    def _refresh_images(self) -> None:
        self._image = to_qimage(self.pixels, self.geom.levels, self._pending)
        self._mask_image = mask_qimage(self.mask_layer)
        self.update()

    def sizeHint(self) -> QSize:  # noqa: N802 - Qt's name
        return QSize(self.geom.width * self._zoom + 1, self.geom.height * self._zoom + 1)

    def minimumSizeHint(self) -> QSize:  # noqa: N802
        return self.sizeHint()

    def cell_rect(self, row: int, col: int) -> QRect:
        z = self._zoom
        return QRect(col * z, row * z, z, z)

    def cell_at(self, pos: QPoint) -> tuple[int, int] | None:
        z = self._zoom
        r, c = pos.y() // z, pos.x() // z
        if 0 <= r < self.geom.height and 0 <= c < self.geom.width and pos.x() >= 0 and pos.y() >= 0:
            return int(r), int(c)
        return None

    def cell_centre(self, row: int, col: int) -> QPoint:
        """Widget coordinates of a pixel's centre (for tests and scripted drawing)."""
        return self.cell_rect(row, col).center()

    def paintEvent(self, _event) -> None:  # noqa: N802
        g, z = self.geom, self._zoom
        target = QRect(0, 0, g.width * z, g.height * z)
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, False)
        p.drawImage(target, self._image)
        if self.show_mask and self.mask_layer.any():
            p.drawImage(target, self._mask_image)
        if z >= GRID_ZOOM:
            p.setPen(QPen(QColor(128, 128, 128, 45), 1))
            for c in range(1, g.width):
                p.drawLine(c * z, 0, c * z, g.height * z)
            for r in range(1, g.height):
                p.drawLine(0, r * z, g.width * z, r * z)
        if self._marker is not None:
            p.setPen(QPen(QColor("#facc15"), 2))
            p.setBrush(Qt.BrushStyle.NoBrush)
            p.drawRect(self.cell_rect(*self._marker).adjusted(1, 1, -1, -1))
        if self._editable and self._hover is not None:  # the brush's footprint
            colour = QColor("#ef4444") if self.tool in ("mask", "unmask") else QColor("#38bdf8")
            p.setPen(QPen(colour, 1))
            r0, c0 = self._hover
            for dr, dc in brush_offsets(self.brush_size):
                r, c = r0 + dr, c0 + dc
                if 0 <= r < g.height and 0 <= c < g.width:
                    p.drawRect(self.cell_rect(r, c).adjusted(0, 0, -1, -1))
        p.setPen(QPen(QColor(110, 110, 110), 1))
        p.setBrush(Qt.BrushStyle.NoBrush)
        p.drawRect(target.adjusted(0, 0, 0, 0))
        p.end()

    # --- mouse ------------------------------------------------------------------------------------
    def mousePressEvent(self, event: QMouseEvent) -> None:  # noqa: N802
        cell = self.cell_at(event.position().toPoint())
        if not self._editable or cell is None:
            return super().mousePressEvent(event)
        if event.button() == Qt.MouseButton.LeftButton:
            tool = self.tool
        elif event.button() == Qt.MouseButton.RightButton:
            tool = OPPOSITE[self.tool]
        else:
            return super().mousePressEvent(event)
        self._stroke = {"tool": tool, "last": cell, "before": self.state(), "changed": False}
        self._apply([cell])
        event.accept()

    def mouseMoveEvent(self, event: QMouseEvent) -> None:  # noqa: N802
        cell = self.cell_at(event.position().toPoint())
        if cell != self._hover:
            self._hover = cell
            self.hovered.emit(*(cell if cell is not None else (-1, -1)))
            self.update()
        if self._stroke is not None and cell is not None:
            self._apply(line_cells(*self._stroke["last"], *cell))
            self._stroke["last"] = cell

    def mouseReleaseEvent(self, event: QMouseEvent) -> None:  # noqa: N802
        stroke, self._stroke = self._stroke, None
        if stroke is None:
            return super().mouseReleaseEvent(event)
        cell = self.cell_at(event.position().toPoint())
        if cell is not None and cell != stroke["last"]:
            self._stroke = stroke
            self._apply(line_cells(*stroke["last"], *cell))
            self._stroke = None
        if stroke["changed"]:
            self.history.push(stroke["before"])
            self.historyChanged.emit()
            self.edited.emit()

    def leaveEvent(self, event) -> None:  # noqa: N802
        if self._hover is not None:
            self._hover = None
            self.hovered.emit(-1, -1)
            self.update()
        super().leaveEvent(event)

    def wheelEvent(self, event: QWheelEvent) -> None:  # noqa: N802
        if event.modifiers() & Qt.KeyboardModifier.ControlModifier:
            step = 1 if event.angleDelta().y() > 0 else -1
            self.set_zoom(self._zoom + step * max(1, self._zoom // 8))
            event.accept()
        else:
            super().wheelEvent(event)

    def _apply(self, cells) -> None:
        stroke = self._stroke
        if stroke is None:
            return
        assert stroke["tool"] in TOOLS
        if stamp(self.pixels, self.mask_layer, cells, stroke["tool"], self.brush_size, self.ink):
            stroke["changed"] = True
            self._refresh_images()
