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

Redraws cost the same however long the sound: the curves are handed at most `MAX_POINTS`
points per redraw, the samples of the view when they fit, else the (min, max) pairs of a
pyramid (`studio.audio.envelope`) that a growing sound (a run being generated, passed with its
`key`) extends by its new samples only; the spectrogram is an image preallocated for the
length being generated (`SpectrogramImage`) whose new columns only are computed and coloured,
redrawn at most every `SPECTROGRAM_INTERVAL_MS` however often audio arrives; the axes (with
their grids) and curves are cached as pixmaps, so the playback cursor moving over them
repaints by copying; ranges and the message are only touched when they change.
"""

from __future__ import annotations

import math
import time

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QEvent, QRectF, Qt, QTimer
from PySide6.QtGui import QFont, QGuiApplication, QImage, QPixmapCache
from PySide6.QtWidgets import QGraphicsItem

from studio.audio.envelope import Envelope
from studio.audio.spectrum import (
    FLOOR_DB,
    HOP,
    N_FFT,
    TOP_DB,
    spectrogram_frames,
    spectrogram_length,
    surprise_window,
)

SPECTROGRAM_INTERVAL_MS = 200
AXIS_WIDTH = 58  # the same left-axis width in every row keeps the time axes aligned
PEAKS_PER_PIXEL = 1.0  # curves keep one (min, max) pair of samples per pixel column
MAX_POINTS = 4096  # points handed to a curve per redraw, at most (the samples, or their (min, max) envelope)
# The item caches (axes with their grids, curves, the spectrogram: about ten layers the size of the
# plots) live in Qt's QPixmapCache, 10 MB by default: at 2500 x 1400 they did not fit, and every
# switch to the tab drew the axes again (22 axis paints, 50-70 ms). Room for a dozen screens' worth.
PIXMAP_CACHE_SCREENS = 12
PIXMAP_CACHE_MIN_KB = 64 * 1024
UNIFORM_BITS = 8.0  # log2(256): the surprise of a model that knows nothing
WAVE_PEN = pg.mkPen("#1d4ed8", width=1)
PROMPT_PEN = pg.mkPen("#9ca3af", width=1)
SURPRISE_PEN = pg.mkPen("#b45309", width=1.5)
CURSOR_PEN = pg.mkPen("#dc2626", width=1.5)
BOUNDARY_PEN = pg.mkPen("#4b5563", width=1, style=Qt.PenStyle.DashLine)


def _make_room_for_caches() -> None:
    """Raise (never lower) QPixmapCache's limit to hold the plots' item caches at full screen."""
    screen = QGuiApplication.primaryScreen()
    kb = PIXMAP_CACHE_MIN_KB
    if screen is not None:
        size, ratio = screen.size(), screen.devicePixelRatio()
        kb = max(kb, int(PIXMAP_CACHE_SCREENS * size.width() * size.height() * ratio * ratio * 4 / 1024))
    if QPixmapCache.cacheLimit() < kb:
        QPixmapCache.setCacheLimit(kb)


class SteadyAxis(pg.AxisItem):
    """An axis whose cached pixmap survives the tab being hidden and shown again.

    A QGraphicsWidget repaints itself when its scene is activated or deactivated (for palettes that
    differ between active and inactive windows), and a scene is deactivated whenever its last view
    is hidden: each time the Audio tab was shown, its six axes (whose grids span the plots) were
    drawn again into their caches, most of the 40-60 ms a switch to the tab took. These axes' pens
    are their own, the same active or not: the event changes nothing here."""

    def event(self, ev) -> bool:  # noqa: D401 - Qt's name
        if ev.type() in (QEvent.Type.WindowActivate, QEvent.Type.WindowDeactivate):
            return True
        return super().event(ev)


class SpectrogramImage(pg.GraphicsObject):
    """A spectrogram that grows column by column: an RGB image allocated once for the frames to come,
    into which only new frames are coloured, drawn (its filled columns) over [-hop/2, frames * hop) x
    [0, Nyquist]. A pg.ImageItem would colour and convert the whole image again at every redraw."""

    def __init__(self) -> None:
        super().__init__()
        lut = pg.colormap.get("inferno").getLookupTable(nPts=256, alpha=False).astype(np.uint32)
        self._lut = (0xFF000000 | (lut[:, 0] << 16) | (lut[:, 1] << 8) | lut[:, 2]).astype(np.uint32)
        self._pixels = np.zeros((1, 1), np.uint32)  # (bins, capacity): row = frequency bin, column = frame
        self._qimage: QImage | None = None
        self.frames = 0  # columns filled
        self.hop_s = 1.0
        self.max_hz = 1.0
        self.columns_coloured = 0  # in all (tests check each redraw colours only the new frames)

    def reset(self, bins: int, capacity: int, hop_s: float, max_hz: float) -> None:
        self._pixels = np.zeros((bins, max(1, capacity)), np.uint32)
        self._qimage = None
        self.hop_s, self.max_hz = float(hop_s), float(max_hz)
        self._set_frames(0)

    def capacity(self) -> int:
        return self._pixels.shape[1]

    def write(self, first: int, db: np.ndarray) -> None:
        """Frames first.. (k, bins) in dB: coloured into the image, which then shows first + k frames."""
        end = first + len(db)
        if end > self.capacity():  # longer than expected: double (amortised), keeping what is coloured
            grown = np.zeros((self._pixels.shape[0], max(end, 2 * self.capacity())), np.uint32)
            grown[:, : self.frames] = self._pixels[:, : self.frames]
            self._pixels, self._qimage = grown, None
        idx = np.clip((db - FLOOR_DB) * (256.0 / (TOP_DB - FLOOR_DB)), 0, 255).astype(np.uint8)
        self._pixels[:, first:end] = self._lut[idx.T]
        self.columns_coloured += len(db)
        self._set_frames(end)

    def clear(self) -> None:
        self._set_frames(0)

    def _set_frames(self, n: int) -> None:
        self.prepareGeometryChange()
        self.frames = n
        self.update()

    def boundingRect(self) -> QRectF:
        return QRectF(-self.hop_s / 2, 0, max(self.frames, 1) * self.hop_s, self.max_hz)

    def paint(self, painter, *_args) -> None:
        if not self.frames:
            return
        if self._qimage is None:  # the image reads the pixels in place (kept alive with it)
            h, w = self._pixels.shape
            self._qimage = QImage(self._pixels.data, w, h, 4 * w, QImage.Format.Format_RGB32)
        painter.drawImage(QRectF(-self.hop_s / 2, 0, self.frames * self.hop_s, self.max_hz), self._qimage,
                          QRectF(0, 0, self.frames, self._pixels.shape[0]))


class AudioPlots(pg.GraphicsLayoutWidget):
    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.setBackground("w")
        _make_room_for_caches()
        self.sample_rate = 8000
        self._samples = np.zeros(0, np.float32)
        self._prompt_len = 0
        self._surprise: np.ndarray | None = None
        self._key = None  # what the caller said the shown sound is (a growing sound keeps its key)
        self._total_len = 0
        self._spec_dirty = False
        self._spec_t = 0.0
        # the frames shown (dB, preallocated), how many, and the samples they were computed from
        self._spec_db = np.zeros((0, N_FFT // 2 + 1), np.float32)
        self._spec_frames = 0
        self._spec_len = 0  # samples seen by the last redraw (0: start over)
        self._spec_source = np.zeros(0, np.float32)  # a copy, for sounds given without a key
        self.wave_envelope = Envelope()
        self.surprise_envelope = Envelope()
        self._curve_view: tuple | None = None  # the sample range the curves were last handed
        self._x_length: tuple | None = None  # (seconds asked for, the view range that gave): set_sound's x range
        self._surprise_top: tuple | None = None  # (top, the view range that gave): the surprise row's y range
        self._message_text: str | None = None
        self.spectrogram_updates = 0  # how many times the FFT ran (tests check the throttle)
        self.spectrogram_frames_computed = 0  # frames the FFT computed in all (a growing sound's are not redone)

        def axes() -> dict:
            return {side: SteadyAxis(side) for side in ("left", "bottom")}

        self.wave = self.addPlot(row=0, col=0, axisItems=axes())
        self.surprise = self.addPlot(row=1, col=0, axisItems=axes())
        self.spec = self.addPlot(row=2, col=0, axisItems=axes())
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

        self.image = SpectrogramImage()
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
        # zooming or panning hands the curves the samples (or envelope) of the new view
        self.wave.getViewBox().sigXRangeChanged.connect(lambda *_a: self._update_curves())
        self.set_message("Generate, or load a recording")

    # --- data -------------------------------------------------------------------------------
    def set_sample_rate(self, rate: int) -> None:
        self.sample_rate = int(rate)
        self._spec_len = 0
        self._key = None
        self.spec.setYRange(0, self.sample_rate / 2, padding=0)

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
                  surprise: np.ndarray | None = None, key=None) -> None:
        """Show `samples` (n,): the first `prompt_len` are the prompt. `total_len` fixes the
        x range (the length being generated); `surprise` (n,) bits per sample, NaN = unknown.

        `key`: what the sound is (e.g. a run and variation). Given the key of the sound shown, with at
        least as many samples, `samples` is that sound grown: its samples shown so far are the same,
        and its surprise changed at most in its last `surprise_window()` values (a smoothing window),
        so only what is new is computed (the cost of a redraw does not grow with the sound). Without
        a key the samples are compared with the last ones to find out."""
        x = np.asarray(samples, dtype=np.float32).reshape(-1)
        before = len(self._samples)
        if key is not None:
            grown = key == self._key and len(x) >= before
            self._spec_source = np.zeros(0, np.float32)
        else:  # the caller does not say: compare (and keep a copy to compare the next one with)
            src = self._spec_source
            grown = self._key is None and 0 < len(src) <= len(x) and np.array_equal(x[: len(src)], src)
            self._spec_source = x.copy()
        self._key = key
        self._samples = x
        self._total_len = max(len(x), int(total_len or 0))
        self.wave_envelope.update(x, before if grown else 0, capacity=self._total_len)
        self._prompt_len = p = max(0, min(int(prompt_len), len(x)))
        for b in self.boundaries:
            b.setPos(p / self.sample_rate)
            b.setVisible(p > 0)
        # without a key nothing says the surprise track is the same one grown (a rescored recording's is not)
        self._set_surprise_data(surprise, grown and key is not None)
        self.set_message("" if len(x) else "No audio")
        self._updating = True  # one update of the curves below, not one per range change
        try:
            if self._total_len:
                self._x_length = self._set_range_once(self.wave, "x", 0.0, self._total_len / self.sample_rate,
                                                      0.01, self._x_length)
        finally:
            self._updating = False
        self._update_curves()
        if not grown:
            self._spec_len = 0  # another sound: its spectrogram starts over
        self._spec_dirty = True
        self._schedule_spectrogram()

    def set_surprise(self, bits: np.ndarray | None) -> None:
        self._set_surprise_data(bits, grown=False)
        self._update_curves()

    def _set_surprise_data(self, bits: np.ndarray | None, grown: bool) -> None:
        self._surprise = None if bits is None else np.asarray(bits, dtype=np.float64).reshape(-1)
        if self._surprise is None or not len(self._surprise):
            self.surprise_envelope.update(np.zeros(0))
            return
        s = self._surprise
        start = max(0, len(self.surprise_envelope) - surprise_window()) if grown else 0
        self.surprise_envelope.update(s, start, capacity=self._total_len)
        peak = self.surprise_envelope.extremes()[1]
        top = max(UNIFORM_BITS + 3.0, peak * 1.05) if math.isfinite(peak) else UNIFORM_BITS + 3.0
        self._surprise_top = self._set_range_once(self.surprise, "y", 0.0, top, 0, self._surprise_top)

    def _update_curves(self) -> None:
        """Hand the curves the points of the samples in view: at most MAX_POINTS each."""
        if getattr(self, "_updating", False):
            return
        (x0, x1), _ = self.wave.getViewBox().viewRange()
        rate = self.sample_rate
        i0, i1 = math.floor(x0 * rate) - 1, math.ceil(x1 * rate) + 2
        p = self._prompt_len
        env = self.wave_envelope
        if p:  # the prompt's curve ends on the first generated sample so the line is unbroken
            t, y = env.points(i0, min(i1, p + 1), MAX_POINTS)
            self.prompt_curve.setData(t / rate, y)
        else:
            self.prompt_curve.setData([], [])
        t, y = env.points(max(i0, p), i1, MAX_POINTS)
        self.wave_curve.setData(t / rate, y)
        t, y = self.surprise_envelope.points(i0, i1, MAX_POINTS)
        self.surprise_curve.setData(t / rate, y)

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

    def close(self):  # noqa: D102 - pyqtgraph's (returns what it returns)
        self._spec_timer.stop()  # pyqtgraph's close() deletes the items a pending redraw would draw into
        return super().close()

    def _redraw_spectrogram(self) -> None:
        if getattr(self, "closed", False):  # closed (pyqtgraph's flag): its items are gone
            return
        self._spec_dirty = False
        self._spec_t = time.monotonic()
        x = self._samples
        n = len(x)
        if not n:
            self.image.clear()
            self._spec_frames = self._spec_len = 0
            return
        total = spectrogram_length(n)
        # Frames computed from a sound of at least half a window are final (spectrogram_frames):
        # a sound that grew has only its new frames computed and coloured.
        first = self._spec_frames if self._spec_len >= N_FFT // 2 and self._spec_frames <= total else 0
        bins = N_FFT // 2 + 1
        if first == 0:
            capacity = spectrogram_length(max(n, self._total_len))  # the length being generated, at once
            self._spec_db = np.zeros((capacity, bins), np.float32)
            self.image.reset(bins, capacity, HOP / self.sample_rate, self.sample_rate / 2)
        elif total > len(self._spec_db):  # longer than said: double (amortised)
            grown = np.zeros((max(total, 2 * len(self._spec_db)), bins), np.float32)
            grown[:first] = self._spec_db[:first]
            self._spec_db = grown
        new = spectrogram_frames(x, first, total)
        self._spec_db[first:total] = new
        self._spec_frames, self._spec_len = total, n
        self.spectrogram_updates += 1
        self.spectrogram_frames_computed += total - first
        # Frame k is centred on k * hop: each column spans [k - 1/2, k + 1/2] hops.
        self.image.write(first, new)

    def spectrogram_image(self) -> np.ndarray | None:
        """(frames, bins) dB of the spectrogram shown, or None."""
        return self._spec_db[: self._spec_frames] if self._spec_frames else None
