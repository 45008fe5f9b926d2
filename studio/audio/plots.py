"""The Audio tab's plots (pyqtgraph): waveform, surprise track and spectrogram, on one time axis.

Three rows of one `GraphicsLayoutWidget` share the x axis (seconds), so the surprise under
a stretch of waveform is straight below it and zooming one zooms all:

* waveform in [-1, 1]; a prompt (the user's recording being continued) in grey, the
  generated part in blue, a dashed line where generation took over;
* surprise in bits per sample (-log2 p, smoothed over 10 ms), with the 8-bit line of a
  model that knows nothing (uniform over 256 mu-law classes) for scale;
* spectrogram in dB relative to full scale, on a fixed colour scale (inferno).

A red cursor in every row follows playback. While audio is generated the x range is fixed
to the whole requested length, so the sound grows left to right instead of rescaling.

Redraws are cheap by construction: the curves downsample to the pixels shown ("peak" mode
keeps every spike visible) and clip to the view, and the spectrogram (an FFT over the whole
sound) is recomputed at most every `SPECTROGRAM_INTERVAL_MS`, however often audio arrives.
"""

from __future__ import annotations

import time

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QRectF, Qt, QTimer
from PySide6.QtGui import QFont

from studio.audio.spectrum import FLOOR_DB, TOP_DB, spectrogram

SPECTROGRAM_INTERVAL_MS = 200
AXIS_WIDTH = 58  # the same left-axis width in every row keeps the time axes aligned
UNIFORM_BITS = 8.0  # log2(256): the surprise of a model that knows nothing
WAVE_PEN = pg.mkPen("#1d4ed8", width=1)
PROMPT_PEN = pg.mkPen("#9ca3af", width=1)
SURPRISE_PEN = pg.mkPen("#b45309", width=1.5)
CURSOR_PEN = pg.mkPen("#dc2626", width=1.5)
BOUNDARY_PEN = pg.mkPen("#4b5563", width=1, style=Qt.PenStyle.DashLine)


class AudioPlots(pg.GraphicsLayoutWidget):
    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.setBackground("w")
        self.sample_rate = 8000
        self._samples = np.zeros(0, np.float32)
        self._prompt_len = 0
        self._surprise: np.ndarray | None = None
        self._spec_dirty = False
        self._spec_t = 0.0
        self.spectrogram_updates = 0  # how many times the FFT ran (tests check the throttle)

        self.wave = self.addPlot(row=0, col=0)
        self.surprise = self.addPlot(row=1, col=0)
        self.spec = self.addPlot(row=2, col=0)
        self.ci.layout.setRowStretchFactor(0, 4)
        self.ci.layout.setRowStretchFactor(1, 2)
        self.ci.layout.setRowStretchFactor(2, 3)
        small = QFont()
        small.setPointSizeF(8.5)
        for plot, label in ((self.wave, "amplitude"), (self.surprise, "surprise (bits)"), (self.spec, "Hz")):
            plot.setMouseEnabled(x=True, y=False)
            plot.setMenuEnabled(False)
            plot.hideButtons()
            plot.showGrid(x=True, y=True, alpha=0.15)
            for side in ("left", "bottom"):  # seconds stay seconds: no "(x0.001)" rescaling
                plot.getAxis(side).enableAutoSIPrefix(False)
            left = plot.getAxis("left")
            left.setWidth(AXIS_WIDTH)
            left.setLabel(label)
            left.label.setFont(small)
            if plot is not self.spec:
                plot.getAxis("bottom").setStyle(showValues=False)
                plot.getAxis("bottom").setHeight(6)
            if plot is not self.wave:
                plot.setXLink(self.wave)
        self.spec.getAxis("bottom").setLabel("time (s)")
        self.wave.setYRange(-1.0, 1.0, padding=0.02)
        self.spec.setYRange(0, self.sample_rate / 2, padding=0)

        self.prompt_curve = self.wave.plot(pen=PROMPT_PEN)
        self.wave_curve = self.wave.plot(pen=WAVE_PEN)
        self.surprise_curve = self.surprise.plot(pen=SURPRISE_PEN, connect="finite")
        for curve in (self.prompt_curve, self.wave_curve, self.surprise_curve):
            curve.setDownsampling(auto=True, method="peak")
            curve.setClipToView(True)
        self.uniform_line = pg.InfiniteLine(pos=UNIFORM_BITS, angle=0, movable=False,
                                            pen=pg.mkPen("#9ca3af", width=1, style=Qt.PenStyle.DotLine),
                                            label="8 bits = knows nothing",
                                            labelOpts={"position": 0.99, "color": "#6b7280",
                                                       "anchors": [(1, 1), (1, 1)]})
        self.uniform_line.label.setFont(small)
        self.surprise.addItem(self.uniform_line)
        self.surprise.setYRange(0, UNIFORM_BITS + 3.0, padding=0)

        self.image = pg.ImageItem(axisOrder="col-major")
        self.image.setColorMap(pg.colormap.get("inferno"))
        self.image.setLevels((FLOOR_DB, TOP_DB))
        self.spec.addItem(self.image)

        self.cursors = []
        self.boundaries = []
        for plot in (self.wave, self.surprise, self.spec):
            cursor = pg.InfiniteLine(pos=0, angle=90, movable=False, pen=CURSOR_PEN)
            cursor.setZValue(20)
            cursor.hide()
            plot.addItem(cursor)
            self.cursors.append(cursor)
            boundary = pg.InfiniteLine(pos=0, angle=90, movable=False, pen=BOUNDARY_PEN)
            boundary.setZValue(10)
            boundary.hide()
            plot.addItem(boundary)
            self.boundaries.append(boundary)

        self.message = pg.TextItem("", color="#6b7280", anchor=(0.5, 0.5))
        self.wave.addItem(self.message, ignoreBounds=True)

        self._spec_timer = QTimer(self)
        self._spec_timer.setSingleShot(True)
        self._spec_timer.timeout.connect(self._redraw_spectrogram)
        self.set_message("Generate, or load a recording")

    # --- data -------------------------------------------------------------------------------
    def set_sample_rate(self, rate: int) -> None:
        self.sample_rate = int(rate)
        self.spec.setYRange(0, self.sample_rate / 2, padding=0)

    def set_sound(self, samples: np.ndarray, *, prompt_len: int = 0, total_len: int | None = None,
                  surprise: np.ndarray | None = None) -> None:
        """Show `samples` (n,): the first `prompt_len` are the prompt. `total_len` fixes the
        x range (the length being generated); `surprise` (n,) bits per sample, NaN = unknown."""
        x = np.asarray(samples, dtype=np.float32).reshape(-1)
        self._samples = x
        self._prompt_len = p = max(0, min(int(prompt_len), len(x)))
        t = np.arange(len(x), dtype=np.float64) / self.sample_rate
        if p:
            # The prompt's curve ends on the first generated sample so the line is unbroken.
            self.prompt_curve.setData(t[: p + 1], x[: p + 1])
        else:
            self.prompt_curve.setData([], [])
        self.wave_curve.setData(t[p:], x[p:])
        for b in self.boundaries:
            b.setPos(p / self.sample_rate)
            b.setVisible(p > 0)
        self.set_surprise(surprise)
        self.set_message("" if len(x) else "No audio")
        length = max(len(x), int(total_len or 0))
        if length:
            self.wave.setXRange(0, length / self.sample_rate, padding=0.01)
        self._spec_dirty = True
        self._schedule_spectrogram()

    def set_surprise(self, bits: np.ndarray | None) -> None:
        self._surprise = None if bits is None else np.asarray(bits, dtype=np.float64).reshape(-1)
        if self._surprise is None or not len(self._surprise):
            self.surprise_curve.setData([], [])
            return
        s = self._surprise
        t = np.arange(len(s), dtype=np.float64) / self.sample_rate
        self.surprise_curve.setData(t, s)
        finite = s[np.isfinite(s)]
        top = max(UNIFORM_BITS + 3.0, float(finite.max()) * 1.05) if len(finite) else UNIFORM_BITS + 3.0
        self.surprise.setYRange(0, top, padding=0)

    def clear(self, message: str = "") -> None:
        self.set_sound(np.zeros(0, np.float32))
        self.set_message(message)
        self.set_cursor(None)
        self.flush()

    def set_message(self, text: str) -> None:
        self.message.setText(text)
        self.message.setVisible(bool(text))
        vb = self.wave.getViewBox()
        (x0, x1), _ = vb.viewRange()
        self.message.setPos((x0 + x1) / 2, 0)

    # --- cursor ------------------------------------------------------------------------------
    def set_cursor(self, seconds: float | None) -> None:
        for c in self.cursors:
            if seconds is None:
                c.hide()
            else:
                c.setPos(seconds)
                c.show()

    def cursor_seconds(self) -> float | None:
        c = self.cursors[0]
        return float(c.value()) if c.isVisible() else None

    # --- spectrogram ---------------------------------------------------------------------------
    def _schedule_spectrogram(self) -> None:
        if self._spec_timer.isActive():
            return  # a redraw is due: it will take the newest samples
        wait_ms = SPECTROGRAM_INTERVAL_MS - (time.monotonic() - self._spec_t) * 1000
        self._spec_timer.start(int(max(0, wait_ms)))

    def flush(self) -> None:
        """Redraw the spectrogram now if it is behind (at the end of a run)."""
        if self._spec_dirty:
            self._spec_timer.stop()
            self._redraw_spectrogram()

    def _redraw_spectrogram(self) -> None:
        self._spec_dirty = False
        self._spec_t = time.monotonic()
        x = self._samples
        if not len(x):
            self.image.clear()
            return
        spec = spectrogram(x, self.sample_rate)
        self.spectrogram_updates += 1
        self.image.setImage(spec.db, autoLevels=False, levels=(FLOOR_DB, TOP_DB))
        # Frame k is centred on k * hop: each pixel spans [k - 1/2, k + 1/2] hops.
        self.image.setRect(QRectF(-spec.hop_s / 2, 0, spec.duration_s, spec.max_hz))

    def spectrogram_image(self) -> np.ndarray | None:
        return self.image.image
