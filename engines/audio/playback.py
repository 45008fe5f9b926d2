"""Playing audio through the sound card while it is still being generated (Qt-free).

`Player` wraps a `sounddevice.OutputStream` in *callback* mode: PortAudio's audio thread asks
for the next block of samples every `blocksize` samples, and the callback copies them from a
buffer that the UI thread appends to. That one design covers every way the Audio tab plays:

* `play(samples, loop=False)` - the whole sound is in the buffer at once (Play, Loop);
* `start_stream(total_samples=n)`, then `feed(chunk)` as chunks arrive, then `end_stream()`
  - playing while generating. Output waits until a pre-roll is buffered, so a generator
  that is slower than real time starts late rather than stuttering. If the buffer runs dry
  mid-way, the callback outputs silence, counts one underrun and waits for a fresh pre-roll
  before going on (a clean gap, not a crackle of tiny fragments); nothing fed is ever
  skipped. Fed faster than real time it never runs dry.
* `stop()` - at once: the stream is aborted (queued blocks dropped) and closed.

The pre-roll adapts to the generator. `feed` measures the generation rate r: samples fed
per wall second over the last RATE_WINDOW seconds of generated chunks (the start-up time
before the first chunk does not count, nor does a prompt fed with `generated=False`).
Playing the R samples still to play takes R / sr seconds; generating the part of them not
buffered yet, R - B, takes (R - B) / r. Playback never catches up with generation when
(R - B) / r <= R / sr, i.e. when

    B >= R * (1 - r / sr)

so that is the pre-roll (plus one chunk and one block: generation arrives in chunks and
playback reads in blocks, not as smooth flows), clamped to [preroll_seconds, R]. A
generator at half real time waits for half the sound, then plays it through without a
gap; one faster than real time starts after the minimum pre-roll, `preroll_seconds`.
The pre-roll is worked out again at every feed, so after an underrun (the generator
slowed down) the wait before resuming is sized to what is left at the rate of late.
Without `total_samples` R is unknown and the pre-roll is the fixed `preroll_seconds`;
with it, until the rate is measured (at the second generated chunk) it is all of R.

The buffer (`_Track`) is a growing float32 array with a read position, behind a lock held
only for copying a block: the audio thread never waits on model work. The callback never
raises anything but `StreamFinished` (an exception escaping a PortAudio callback would be
printed on every block); the default stream turns that into `sounddevice.CallbackStop`,
which plays the last block and ends the stream.

Devices: `availability()` says, without raising, whether PortAudio loads and an output
device exists, with a plain reason when not (the tab shows it and disables playback; the
rest of the tab works). A device that cannot play 8 kHz directly (WASAPI shared mode, some
USB DACs) gets the audio resampled with soxr to its own rate; `position` is always counted
in samples of the sound, at `sample_rate`.

`stream_factory` replaces `sounddevice.OutputStream` (same keyword arguments: samplerate,
blocksize, channels, dtype, callback; methods start, abort, close): tests inject a fake
stream that calls the callback by hand, so every behaviour above is tested without a device.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from typing import Any, Callable

import numpy as np

from engines.errors import ChainruleError

log = logging.getLogger(__name__)

IDLE, BUFFERING, PLAYING, DONE = "idle", "buffering", "playing", "done"
RATE_WINDOW = 2.0  # seconds of feeds the generation rate is measured over


class StreamFinished(Exception):
    """Raised by the player's callback after it filled the last block: end the stream."""


class PlaybackError(ChainruleError):
    """The audio output cannot be opened or started (names the device problem)."""


def _import_sounddevice():
    """sounddevice, or an exception: ImportError (not installed) or OSError (no PortAudio)."""
    import sounddevice

    return sounddevice


def output_availability(sample_rate: int = 8000) -> tuple[bool, str]:
    """(True, the output device's name) or (False, why nothing can be played). Never raises."""
    try:
        sd = _import_sounddevice()
    except ImportError:
        return False, "the sounddevice package is not installed (pip install sounddevice)"
    except OSError as exc:
        return False, ("the PortAudio library is not installed, so sound cannot be played "
                       f"(on Debian/Ubuntu: apt install libportaudio2): {exc}")
    except Exception as exc:  # noqa: BLE001 - whatever a broken install raises, say it
        return False, f"sounddevice failed to load: {type(exc).__name__}: {exc}"
    try:
        device = sd.query_devices(kind="output")
    except Exception:  # noqa: BLE001 - PortAudioError / ValueError when there is none
        return False, "no audio output device was found"
    try:
        name = str(device["name"])
        channels = int(device["max_output_channels"])
    except Exception:  # noqa: BLE001
        return False, "no audio output device was found"
    if channels < 1:
        return False, f"the default audio device {name!r} has no output channels"
    return True, f"audio output: {name}"


def _device_rate(sd, sample_rate: int) -> int:
    """`sample_rate` if the default output takes it, else the device's own default rate."""
    try:
        sd.check_output_settings(samplerate=sample_rate, channels=1, dtype="float32")
        return sample_rate
    except Exception:  # noqa: BLE001 - refused: resample to what the device runs at
        try:
            rate = int(sd.query_devices(kind="output")["default_samplerate"])
        except Exception:  # noqa: BLE001
            return sample_rate
        return rate if rate > 0 else sample_rate


class _Track:
    """A growing float32 buffer (amortised doubling); the reader copies blocks out of it."""

    def __init__(self, capacity: int = 8192) -> None:
        self.data = np.zeros(max(1, capacity), np.float32)
        self.n = 0

    def append(self, x: np.ndarray) -> None:
        need = self.n + len(x)
        if need > len(self.data):
            grown = np.zeros(max(need, 2 * len(self.data)), np.float32)
            grown[: self.n] = self.data[: self.n]
            self.data = grown
        self.data[self.n: need] = x
        self.n = need


class Player:
    """Plays mono float32 audio in [-1, 1] through a callback stream; see the module doc.

    Call every method from one thread (the UI thread); the callback runs on the audio thread.
    `preroll_seconds` is the minimum pre-roll of a stream (the whole pre-roll when its
    length is not known); `clock` (seconds, monotonic) times the chunks fed, to measure
    the generation rate: tests pass a fake one.
    """

    def __init__(self, sample_rate: int = 8000, *, blocksize: int = 256, preroll_seconds: float = 0.25,
                 stream_factory: Callable[..., Any] | None = None, output_rate: int | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if sample_rate <= 0:
            raise ValueError(f"sample_rate = {sample_rate} is invalid: must be > 0")
        if blocksize <= 0:
            raise ValueError(f"blocksize = {blocksize} is invalid: must be > 0")
        if not preroll_seconds >= 0:
            raise ValueError(f"preroll_seconds = {preroll_seconds} is invalid: must be >= 0")
        self.sample_rate = int(sample_rate)
        self.blocksize = int(blocksize)
        self.preroll_seconds = float(preroll_seconds)
        self._factory = stream_factory
        self._fixed_output_rate = output_rate
        self._out_rate = int(output_rate or sample_rate)
        self._lock = threading.Lock()
        self._track = _Track()
        self._pos = 0  # next sample of the track to output (output rate)
        self._state = IDLE
        self._ended = True  # the whole sound is in the track (False while streaming)
        self._loop = False
        self._underruns = 0
        self._device_underflows = 0
        self._loops = 0
        self._stream: Any = None
        self._resampler: Any = None  # soxr.ResampleStream while streaming to a device at another rate
        self._preroll = 0  # output-rate samples to buffer before output starts or resumes
        self._clock = clock
        # The stream's generation, in samples of the sound (at sample_rate):
        self._total: int | None = None  # samples the stream will have in all (None: not known)
        self._fed = 0  # samples fed so far
        self._max_chunk = 0  # the largest generated feed
        self._gen_n = 0  # generated samples fed so far
        self._gen_log: deque[tuple[float, int]] = deque()  # (clock, _gen_n) at the feeds of the last RATE_WINDOW s
        self._rate: float | None = None  # generated samples per wall second (None: not measured yet)

    # --- device ---------------------------------------------------------------------------
    def availability(self) -> tuple[bool, str]:
        """(True, description) when sound can be played, else (False, a plain reason). Never raises."""
        if self._factory is not None:
            return True, "audio output: a custom stream"
        return output_availability(self.sample_rate)

    @property
    def output_rate(self) -> int:
        """The rate the output stream runs at (the sound's own, unless the device refuses it)."""
        return self._out_rate

    # --- queries (any thread) -------------------------------------------------------------
    @property
    def state(self) -> str:
        """idle | buffering (waiting for the pre-roll) | playing | done."""
        return self._state

    @property
    def is_playing(self) -> bool:
        """The stream is running and the sound has not ended (pre-roll and rebuffering included)."""
        return self._state in (BUFFERING, PLAYING)

    @property
    def is_buffering(self) -> bool:
        return self._state == BUFFERING

    @property
    def position(self) -> int:
        """Samples of the sound handed to the device so far, at `sample_rate` (for a cursor).

        Counts from the start of the sound; when looping it wraps back to 0 each pass.
        """
        pos = self._pos
        if self._out_rate != self.sample_rate:
            pos = int(round(pos * self.sample_rate / self._out_rate))
        return pos

    @property
    def buffered(self) -> int:
        """Samples (at `sample_rate`) in the buffer that have not been played yet."""
        with self._lock:
            ahead = self._track.n - self._pos
        return int(round(ahead * self.sample_rate / self._out_rate))

    @property
    def generation_rate(self) -> float | None:
        """Samples the stream's generator makes per wall second (None until two chunks came)."""
        return self._rate

    @property
    def preroll_target(self) -> int:
        """Samples (at `sample_rate`) that must be buffered before output starts or resumes."""
        return int(math.ceil(self._preroll * self.sample_rate / self._out_rate))

    @property
    def starts_in(self) -> float | None:
        """While buffering: about how many seconds until output starts, at the measured rate
        (None when not buffering or the rate is not measured yet)."""
        rate = self._rate
        if self._state != BUFFERING or not rate:
            return None
        return max(0.0, (self.preroll_target - self.buffered) / rate)

    @property
    def underruns(self) -> int:
        """How many times the buffer ran dry while playing a stream (silence was played)."""
        return self._underruns

    @property
    def device_underflows(self) -> int:
        """Blocks the device itself reported late (the system was too busy to call back in time)."""
        return self._device_underflows

    @property
    def loop(self) -> bool:
        return self._loop

    @loop.setter
    def loop(self, value: bool) -> None:
        """Start over at the end (takes effect at the end of the pass being played)."""
        with self._lock:
            self._loop = bool(value)

    # --- control ----------------------------------------------------------------------------
    def play(self, samples: np.ndarray, loop: bool = False) -> None:
        """Play `samples` (n,) from the start, replacing whatever was playing."""
        self.stop()
        factory, callback = self._stream_setup()
        x = self._mono(samples)
        if self._out_rate != self.sample_rate and len(x):
            import soxr

            x = soxr.resample(x, self.sample_rate, self._out_rate, quality="HQ").astype(np.float32)
        self._open(factory, callback, x, ended=True, loop=loop)

    def start_stream(self, loop: bool = False, *, total_samples: int | None = None) -> None:
        """Start an empty stream for `feed`; output begins once the pre-roll is buffered.

        `total_samples`: how many samples will be fed in all (a prompt included), which sizes
        the pre-roll to the generation rate; None: the fixed `preroll_seconds` pre-roll.
        """
        self._check_total(total_samples)
        self.stop()
        factory, callback = self._stream_setup()
        self._open(factory, callback, np.zeros(0, np.float32), ended=False, loop=loop,
                   total=total_samples)
        if self._out_rate != self.sample_rate:
            import soxr

            self._resampler = soxr.ResampleStream(self.sample_rate, self._out_rate, 1, dtype="float32",
                                                  quality="HQ")

    def set_stream_length(self, total_samples: int | None) -> None:
        """Correct the streamed sound's expected length (None: not known; see `start_stream`)."""
        self._check_total(total_samples)
        with self._lock:
            self._total = None if total_samples is None else int(total_samples)
            self._preroll = self._stream_preroll()

    def feed(self, samples: np.ndarray, *, generated: bool = True) -> bool:
        """Append samples to the stream; False (ignored) when no stream is taking them.

        `generated=False` for samples that were not just generated (a prompt): they are
        buffered and played like the others but not counted in the generation rate.
        """
        with self._lock:
            if self._ended or self._state in (IDLE, DONE):
                return False
        x = self._mono(samples)
        n = len(x)  # samples of the sound (before any resampling)
        now = self._clock()
        if self._resampler is not None:
            x = self._resampler.resample_chunk(x).astype(np.float32)
        with self._lock:
            if self._ended or self._state in (IDLE, DONE):  # stopped meanwhile
                return False
            self._track.append(x)
            self._fed += n
            if generated and n:
                self._max_chunk = max(self._max_chunk, n)
                self._gen_n += n
                log_ = self._gen_log
                log_.append((now, self._gen_n))
                while len(log_) > 2 and now - log_[1][0] >= RATE_WINDOW:
                    log_.popleft()  # the rate of the last RATE_WINDOW seconds: it follows a slowdown
                t0, n0 = log_[0]  # samples up to the oldest feed were made before t0: not counted
                if now > t0:
                    self._rate = (self._gen_n - n0) / (now - t0)
            self._preroll = self._stream_preroll()
        return True

    def end_stream(self) -> None:
        """No more samples will come: play out what is buffered (pre-roll or not), then end."""
        tail = None
        if self._resampler is not None:
            tail = self._resampler.resample_chunk(np.zeros(0, np.float32), last=True).astype(np.float32)
            self._resampler = None
        with self._lock:
            if tail is not None and not self._ended and len(tail):
                self._track.append(tail)
            self._ended = True

    def stop(self) -> None:
        """Stop at once (queued blocks are dropped) and close the stream; safe when idle."""
        with self._lock:
            if self._state in (BUFFERING, PLAYING):
                self._state = IDLE
            self._ended = True
            stream, self._stream = self._stream, None
        self._resampler = None
        self._close(stream)

    close = stop

    # --- internals ----------------------------------------------------------------------------
    @staticmethod
    def _check_total(total_samples: int | None) -> None:
        if total_samples is not None and not (isinstance(total_samples, (int, np.integer)) and total_samples >= 0):
            raise ValueError(f"total_samples = {total_samples!r} is invalid: must be an int >= 0 or None")

    def _stream_preroll(self) -> int:
        """The pre-roll in output-rate samples, from the measured rate (see the module doc).

        Called with the lock held, after each feed: while buffering the play position does
        not move, so only a feed can change whether output may start.
        """
        sr, to_out = self.sample_rate, self._out_rate / self.sample_rate
        minimum = int(math.ceil(self.preroll_seconds * sr))
        if self._total is None:
            need = minimum
        else:
            played = int(self._pos / to_out)  # samples of the sound already handed to the device
            remaining = max(self._total, self._fed) - played
            rate = self._rate
            if rate is None:
                need = remaining  # not measured yet: wait for the next chunk (or the end)
            elif rate >= sr:
                need = minimum
            else:
                slack = self._max_chunk + int(math.ceil(self.blocksize / to_out))
                need = int(math.ceil(remaining * (1.0 - rate / sr))) + slack
            need = min(max(need, minimum), remaining)
        return int(math.ceil(need * to_out))

    @staticmethod
    def _mono(samples: np.ndarray) -> np.ndarray:
        x = np.asarray(samples, dtype=np.float32)
        if x.ndim != 1:
            x = x.reshape(-1)
        return np.clip(np.nan_to_num(x, nan=0.0), -1.0, 1.0)

    @staticmethod
    def _close(stream: Any) -> None:
        # Never under the lock: abort() waits for a running callback, which takes the lock.
        if stream is None:
            return
        for method in ("abort", "close"):
            try:
                getattr(stream, method)()
            except Exception:  # noqa: BLE001 - a stream that already ended may complain
                log.debug("stream.%s() raised", method, exc_info=True)

    def _stream_setup(self) -> tuple[Callable[..., Any], Callable]:
        """The stream factory and callback for a new stream; settles the output rate first."""
        if self._factory is not None:
            return self._factory, self._callback
        try:
            sd = _import_sounddevice()
        except Exception as exc:  # noqa: BLE001
            raise PlaybackError(f"cannot play sound: {output_availability(self.sample_rate)[1]}") from exc
        if self._fixed_output_rate is None:
            self._out_rate = _device_rate(sd, self.sample_rate)
        return sd.OutputStream, self._sounddevice_callback(sd)

    def _open(self, factory: Callable[..., Any], callback: Callable, x: np.ndarray, *, ended: bool,
              loop: bool, total: int | None = None) -> None:
        with self._lock:
            self._track = _Track(max(8192, len(x)))
            self._track.append(x)
            self._pos = 0
            self._ended = ended
            self._loop = bool(loop)
            self._underruns = 0
            self._device_underflows = 0
            self._loops = 0
            self._total = None if total is None else int(total)
            self._fed, self._max_chunk, self._gen_n, self._rate = 0, 0, 0, None
            self._gen_log.clear()
            self._preroll = self._stream_preroll()
            self._state = BUFFERING
        try:
            stream = factory(samplerate=self._out_rate, blocksize=self.blocksize, channels=1, dtype="float32",
                             callback=callback)
            with self._lock:
                self._stream = stream
            stream.start()
        except Exception as exc:  # noqa: BLE001 - PortAudioError, a busy or vanished device
            with self._lock:
                self._state = IDLE
                self._ended = True
                stream, self._stream = self._stream, None
            self._close(stream)
            raise PlaybackError(f"cannot open the audio output: {exc}") from exc

    def _sounddevice_callback(self, sd) -> Callable:
        stop_exc = sd.CallbackStop

        def callback(outdata, frames, time_info, status):
            try:
                self._callback(outdata, frames, time_info, status)
            except StreamFinished:
                raise stop_exc from None

        return callback

    def _callback(self, outdata: np.ndarray, frames: int, time_info: Any, status: Any) -> None:
        """Fill `outdata` (frames, 1) with the next samples; raise StreamFinished after the last."""
        try:
            finished = self._fill(outdata, frames, status)
        except Exception:  # noqa: BLE001 - never let an error loose in the audio thread
            log.exception("audio callback failed; playback stopped")
            outdata.fill(0)
            with self._lock:
                self._state = IDLE
            finished = True
        if finished:
            raise StreamFinished

    def _fill(self, outdata: np.ndarray, frames: int, status: Any) -> bool:
        out = outdata[:, 0] if outdata.ndim == 2 else outdata  # a view: writes reach the device
        if status is not None and getattr(status, "output_underflow", False):
            self._device_underflows += 1
        with self._lock:
            if self._state not in (BUFFERING, PLAYING):  # stopped, or the sound has ended
                outdata.fill(0)
                return True
            track = self._track
            if self._state == BUFFERING:
                ahead = track.n - self._pos
                if self._ended or (ahead > 0 and ahead >= self._preroll):
                    self._state = PLAYING
                else:
                    outdata.fill(0)  # pre-roll: silence until enough is buffered
                    return False
            written = 0
            while written < frames:
                avail = track.n - self._pos
                if avail > 0:
                    k = min(avail, frames - written)
                    out[written: written + k] = track.data[self._pos: self._pos + k]
                    self._pos += k
                    written += k
                    continue
                outdata[written:] = 0
                if not self._ended:  # starved mid-stream: silence, count it, rebuffer
                    self._underruns += 1
                    self._state = BUFFERING
                    return False
                if self._loop and track.n > 0:
                    self._pos = 0
                    self._loops += 1
                    continue
                self._state = DONE
                return True
            return False
