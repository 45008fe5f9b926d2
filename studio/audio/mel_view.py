"""The frames a speech model's prior writes, as a log-mel image that grows frame by frame.

One pyqtgraph ImageItem: x is time in seconds (frame f is centred on f * hop / rate, so the image
lines up with the waveform's time axis below it), y the mel bin (low frequencies at the bottom),
colour the log-mel value between the floor (silence) and the highest value seen so far. Frames
known before the prior writes (a continued recording's, or a re-spoken recording's) are shown
in full at once; the prior's own frames follow as they come, and a dashed line marks the join.
"""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QRectF, Qt

JOIN_PEN = pg.mkPen("#f8fafc", width=1, style=Qt.PenStyle.DashLine)
TOP = 2.0  # ln mel power above which nothing is brighter (speech peaks around 0..2)


class MelView(pg.PlotWidget):
    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.setBackground("w")
        self.setMenuEnabled(False)
        self.hideButtons()
        self.setMouseEnabled(x=False, y=False)
        self.getAxis("left").setLabel("mel bin")
        self.getAxis("left").setWidth(58)  # the audio plots' axis width: the time axes line up
        self.getAxis("bottom").enableAutoSIPrefix(False)
        self.image = pg.ImageItem(axisOrder="row-major")
        self.image.setColorMap(pg.colormap.get("inferno"))
        self.addItem(self.image)
        self.join = pg.InfiniteLine(angle=90, pen=JOIN_PEN)
        self.join.setVisible(False)
        self.addItem(self.join)
        self.setMaximumHeight(120)
        self.setMinimumHeight(90)
        self.hop_s = 0.01
        self.floor = -11.5
        self.frames = np.zeros((0, 0), np.float32)  # (n_mels, F)
        self.updates = 0  # image uploads (tests check the frames arrive, not how often)
        self._show_empty()

    def _show_empty(self, seconds: float = 1.0, n_mels: int = 40) -> None:
        """No frames yet: the ranges a clip will use (time from 0, mel bins 0..n_mels), not
        pyqtgraph's default of -0.5..0.5 around nothing."""
        self.setXRange(0, seconds, padding=0)
        self.setYRange(0, n_mels, padding=0)

    def start(self, frames: np.ndarray, floor: float, hop_s: float, total_frames: int | None = None) -> None:
        """A new run: the frames known so far (n_mels, P) and, when known, how many there will be."""
        self.floor, self.hop_s = float(floor), float(hop_s)
        self.frames = np.asarray(frames, np.float32).copy()
        self.join.setVisible(0 < self.frames.shape[1] and total_frames != self.frames.shape[1])
        self.join.setValue((self.frames.shape[1] - 0.5) * self.hop_s)
        self._redraw(total_frames)

    def add(self, frames: list[np.ndarray]) -> None:
        """Frames the prior wrote since the last call, each (n_mels,)."""
        if not frames:
            return
        new = np.stack(frames, axis=1).astype(np.float32)
        self.frames = new if self.frames.size == 0 else np.concatenate([self.frames, new], axis=1)
        self._redraw(None)

    def clear_frames(self) -> None:
        self.frames = np.zeros((0, 0), np.float32)
        self.image.clear()
        self.join.setVisible(False)
        self._show_empty()

    def _redraw(self, total_frames: int | None) -> None:
        if self.frames.size == 0:
            self.image.clear()
            self._show_empty()
            return
        n_mels, F = self.frames.shape
        self.image.setImage(self.frames, levels=(self.floor, TOP), autoLevels=False)
        self.image.setRect(QRectF(-0.5 * self.hop_s, 0, F * self.hop_s, n_mels))
        width = max(F, total_frames or 0, 50) * self.hop_s
        self.setXRange(-0.5 * self.hop_s, width, padding=0)
        self.setYRange(0, n_mels, padding=0)
        self.updates += 1
