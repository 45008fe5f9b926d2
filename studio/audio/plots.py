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

Redraws are cheap by construction: the curves downsample to one (min, max) pair per pixel
column ("peak" mode keeps every spike visible) and clip to the view; the axes (with their
grids) and curves are cached as pixmaps, so the playback cursor moving over them repaints by
copying; the spectrogram is redrawn at most every `SPECTROGRAM_INTERVAL_MS`, however often
audio arrives, and a sound that grows (a run being generated) has only its new frames
computed; ranges and the message are only touched when they change. What is left grows with
the sound only through copies and the pixel-column downsampling.
"""

from __future__ import annotations

import time

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QRectF, Qt, QTimer
from PySide6.QtGui import QFont
from PySide6.QtWidgets import QGraphicsItem

from studio.audio.spectrum import FLOOR_DB, TOP_DB, Spectrogram, spectrogram

SPECTROGRAM_INTERVAL_MS = 200
AXIS_WIDTH = 58  # the same left-axis width in every row keeps the time axes aligned
PEAKS_PER_PIXEL = 1.0  # curves keep one (min, max) pair of samples per pixel column
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
        self._spec: Spectrogram | None = None  # the spectrogram shown, and the samples it was computed from
        self._spec_source = np.zeros(0, np.float32)
        self._times_cache = np.zeros(0, np.float64)  # sample k's time, k / sample_rate, for the curves' x
        self._x_length: tuple | None = None  # (seconds asked for, the view range that gave): set_sound's x range
        self._surprise_top: tuple | None = None  # (top, the view range that gave): the surprise row's y range
        self._message_text: str | None = None
        self.spectrogram_updates = 0  # how many times the FFT ran (tests check the throttle)
        self.spectrogram_frames_computed = 0  # frames the FFT computed in all (a growing sound's are not redone)

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
            for side in ("left", "bottom"):
                # An axis draws its grid across the whole plot: cached as a pixmap, a moving cursor or a
                # growing curve repaints by copying it instead of replaying every tick and grid line.
                plot.getAxis(side).setCacheMode(QGraphicsItem.CacheMode.DeviceCoordinateCache)
                # Ticks, labels and grid lines at the major spacing only: the minor levels' faint grid
                # lines were most of the lines drawn, and a repaint of the tab (shown again, resized)
                # replays every one of them into the cache: 45 ms of a 50 ms budget, 20 ms now.
                plot.getAxis(side).setStyle(maxTickLevel=0)
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

        # Peak downsampling to one (min, max) pair per pixel column: the envelope a waveform shows,
        # at a fifth of the lines pyqtgraph's default (5 samples per pixel) would draw.
        self.prompt_curve = self.wave.plot(pen=PROMPT_PEN, autoDownsampleFactor=PEAKS_PER_PIXEL)
        self.wave_curve = self.wave.plot(pen=WAVE_PEN, autoDownsampleFactor=PEAKS_PER_PIXEL)
        self.surprise_curve = self.surprise.plot(pen=SURPRISE_PEN, connect="finite",
                                                 autoDownsampleFactor=PEAKS_PER_PIXEL)
        for curve in (self.prompt_curve, self.wave_curve, self.surprise_curve):
            curve.setDownsampling(auto=True, method="peak")
            curve.setClipToView(True)
            curve.curve.setCacheMode(QGraphicsItem.CacheMode.DeviceCoordinateCache)
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
        self.image.setCacheMode(QGraphicsItem.CacheMode.DeviceCoordinateCache)
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
        self._times_cache = np.zeros(0, np.float64)
        self._spec = None
        self.spec.setYRange(0, self.sample_rate / 2, padding=0)

    def _times(self, n: int) -> np.ndarray:
        """(n,) seconds of samples 0..n-1: a view of one array, grown (doubling) as the sound grows."""
        if len(self._times_cache) < n:
            self._times_cache = np.arange(max(n, 2 * len(self._times_cache)), dtype=np.float64) / self.sample_rate
        return self._times_cache[:n]

    @staticmethod
    def _set_range_once(plot, axis: str, lo: float, hi: float, padding: float, last: tuple | None) -> tuple:
        """plot's `axis` range to [lo, hi], unless the last call asked the same and the view still shows it."""
        vb = plot.getViewBox()
        view = tuple(vb.viewRange()[0 if axis == "x" else 1])
        if last is not None and last[0] == (lo, hi) and last[1] == view:
            return last
        (plot.setXRange if axis == "x" else plot.setYRange)(lo, hi, padding=padding)
        return (lo, hi), tuple(vb.viewRange()[0 if axis == "x" else 1])

    def set_sound(self, samples: np.ndarray, *, prompt_len: int = 0, total_len: int | None = None,
                  surprise: np.ndarray | None = None) -> None:
        """Show `samples` (n,): the first `prompt_len` are the prompt. `total_len` fixes the
        x range (the length being generated); `surprise` (n,) bits per sample, NaN = unknown."""
        x = np.asarray(samples, dtype=np.float32).reshape(-1)
        self._samples = x
        self._prompt_len = p = max(0, min(int(prompt_len), len(x)))
        t = self._times(len(x))
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
            self._x_length = self._set_range_once(self.wave, "x", 0.0, length / self.sample_rate, 0.01,
                                                  self._x_length)
        self._spec_dirty = True
        self._schedule_spectrogram()

    def set_surprise(self, bits: np.ndarray | None) -> None:
        self._surprise = None if bits is None else np.asarray(bits, dtype=np.float64).reshape(-1)
        if self._surprise is None or not len(self._surprise):
            self.surprise_curve.setData([], [])
            return
        s = self._surprise
        self.surprise_curve.setData(self._times(len(s)), s)
        finite = s[np.isfinite(s)]
        top = max(UNIFORM_BITS + 3.0, float(finite.max()) * 1.05) if len(finite) else UNIFORM_BITS + 3.0
        self._surprise_top = self._set_range_once(self.surprise, "y", 0.0, top, 0, self._surprise_top)

    def clear(self, message: str = "") -> None:
        self.set_sound(np.zeros(0, np.float32))
        self.set_message(message)
        self.set_cursor(None)
        self.flush()

    def set_message(self, text: str) -> None:
        if not text and not self._message_text:
            return  # no message, still none (a growing sound sets none at every redraw)
        self._message_text = text
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
            self._spec = None
            return
        prev, src = self._spec, self._spec_source
        if prev is not None and not (len(src) <= len(x) and np.array_equal(x[: len(src)], src)):
            prev = None  # another sound, not the same one grown: start over
        spec = spectrogram(x, self.sample_rate, previous=prev)
        self._spec, self._spec_source = spec, x.copy()
        self.spectrogram_updates += 1
        self.spectrogram_frames_computed += spec.new_frames
        self.image.setImage(spec.db, autoLevels=False, levels=(FLOOR_DB, TOP_DB))
        # Frame k is centred on k * hop: each pixel spans [k - 1/2, k + 1/2] hops.
        self.image.setRect(QRectF(-spec.hop_s / 2, 0, spec.duration_s, spec.max_hz))

    def spectrogram_image(self) -> np.ndarray | None:
        return self.image.image
