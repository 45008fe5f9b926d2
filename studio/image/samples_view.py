"""A row of thumbnails, one per sample of a run: click one to load it into the canvas.

Each cell is wide enough for its caption ("8: 3 (100%)": the sample's number and what the
image recogniser reads in it), so the caption is never cut short."""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import QSize, Qt, Signal
from PySide6.QtGui import QIcon, QPixmap
from PySide6.QtWidgets import QAbstractItemView, QListView, QListWidget, QListWidgetItem, QWidget

from studio.image.canvas import to_qimage

THUMB = 64
WIDEST_CAPTION = "88: 8 (100%)"


class SampleGrid(QListWidget):
    picked = Signal(int)  # the sample clicked

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("SampleGrid")
        self.setViewMode(QListView.ViewMode.IconMode)
        self.setFlow(QListView.Flow.LeftToRight)
        self.setWrapping(True)
        self.setResizeMode(QListView.ResizeMode.Adjust)
        self.setMovement(QListView.Movement.Static)
        self.setIconSize(QSize(THUMB, THUMB))
        self.setSpacing(4)
        self.setUniformItemSizes(True)
        # A fixed cell (the thumbnail over the widest caption), given to every item too: sizes
        # would otherwise be measured on the first caption, "1", and longer ones elided.
        fm = self.fontMetrics()
        self.setGridSize(QSize(max(THUMB, fm.horizontalAdvance(WIDEST_CAPTION)) + 12, THUMB + fm.height() + 14))
        self.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.setFixedHeight(THUMB + 44)
        self.itemClicked.connect(lambda item: self.picked.emit(int(item.data(Qt.ItemDataRole.UserRole))))
        self._levels = 2

    def reset_samples(self, count: int, levels: int, blank: np.ndarray) -> None:
        self._levels = levels
        self.clear()
        for i in range(count):
            item = QListWidgetItem(f"{i + 1}")
            item.setData(Qt.ItemDataRole.UserRole, i)
            item.setTextAlignment(Qt.AlignmentFlag.AlignHCenter)
            item.setSizeHint(self.gridSize() - QSize(4, 4))  # room for the caption a finished sample gets
            self.addItem(item)
            self.set_image(i, blank)

    def set_image(self, index: int, pixels: np.ndarray, *, text: str | None = None,
                  tooltip: str | None = None, pending: np.ndarray | None = None) -> None:
        """Show `pixels` (C, H, W) as thumbnail `index`; `pending` (H, W) marks values not sampled yet."""
        item = self.item(index)
        if item is None:
            return
        image = to_qimage(pixels, self._levels, pending)
        pix = QPixmap.fromImage(image.scaled(THUMB, THUMB, Qt.AspectRatioMode.KeepAspectRatio,
                                             Qt.TransformationMode.FastTransformation))
        item.setIcon(QIcon(pix))
        if text is not None:
            item.setText(text)
        if tooltip is not None:
            item.setToolTip(tooltip)

    def select(self, index: int) -> None:
        item = self.item(index)
        if item is not None:
            self.blockSignals(True)
            self.setCurrentItem(item)
            self.blockSignals(False)
