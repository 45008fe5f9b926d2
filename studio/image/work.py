"""The Image tab's background work: generators that run on a TaskRunner's worker thread.

Nothing here touches Qt. Each function returns a generator of small events the tab turns
into pixels on the UI thread:

* `generate_events` - Generate, Complete and Inpaint: an `ImageRequest` run by
  `engines.image.request.run`, the runner `chainrule generate image` and `--from` use, so a
  studio run and a command-line run of the same request give the same values (sample i: seed
  s + i). Every sampled value is streamed as a `PixelStep`; a `Pace` slows the stream down so
  the image visibly paints itself (the wait is on the cancel event, so Stop ends it at once).
* `score_events` - the likelihood view: `score_image` for the exact per-pixel log-likelihoods
  and one full forward for the model's distribution at every pixel (all conditionals at once).

Also here: the model cache, the GIF writer, frame recording and reading user images/masks.
"""

from __future__ import annotations

import math
import os
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import numpy as np

from engines.decoding.samplers import log_softmax
from engines.errors import InputError
from engines.image import request as request_mod
from engines.image.request import ImageRequest
from engines.registry import ModelInfo
from studio.model_cache import ModelCache

LN2 = math.log(2)
MAX_SAMPLES = 64
MAX_CANDIDATES = 256  # the tab's spin; the engine takes up to engines.limits.MAX_CANDIDATES
GIF_MAX_FRAMES = 120

# --- model cache -----------------------------------------------------------------------------

def _load(info: ModelInfo):
    from engines.image.model import load_image_model

    return load_image_model(info, threads=1)


# load_model on a worker thread (it may load); cached_model never loads: safe on the UI thread.
load_model, cached_model, forget_models = ModelCache(_load, "model").functions()


# --- pace ---------------------------------------------------------------------------------------

class Pace:
    """How fast a run paints: sampled values per second (inf = as fast as the model goes).

    The UI thread may change `values_per_second` while a run goes; the worker reads it
    before every wait.
    """

    def __init__(self, values_per_second: float = math.inf) -> None:
        self.values_per_second = float(values_per_second)

    def waiter(self, cancel: threading.Event) -> Callable[[], bool]:
        """A callable for the worker: call after each value; waits as owed, True when cancelled."""
        state = {"t": time.perf_counter(), "n": 0, "rate": self.values_per_second}

        def wait() -> bool:
            rate = self.values_per_second
            now = time.perf_counter()
            if rate != state["rate"]:  # changed mid-run: pace from here on
                state.update(t=now, n=0, rate=rate)
            state["n"] += 1
            if not math.isfinite(rate) or rate <= 0:
                return cancel.is_set()
            due = state["t"] + state["n"] / rate
            if due - now > 0.001:
                return cancel.wait(due - now)
            if now - due > 0.25:  # far behind (a slow model): do not rush to catch up
                state.update(t=now, n=0)
            return cancel.is_set()

        return wait


# --- events (the engine's: engines.image.request) ------------------------------------------------

RunStarted, SampleStarted, PixelStep, SampleDone = request_mod.RunStarted, request_mod.SampleStarted, \
    request_mod.PixelStep, request_mod.SampleDone


@dataclass(frozen=True)
class ScoreDone:
    model_id: str
    label: int | None
    pixels: np.ndarray  # (C, H, W) the image scored
    logprobs: np.ndarray  # (C, H, W) log p(x_i | x_<i), nats
    probs: np.ndarray  # (H, W, C, V) float32: the model's distribution at every value
    total: float  # log p(image), nats
    bits_per_dim: float

    @property
    def nll_bits(self) -> np.ndarray:
        """(H, W): -log2 p of each pixel (channels summed)."""
        return -self.logprobs.sum(axis=0) / LN2


sampling_method = request_mod.sampling_method


def generate_events(info: ModelInfo, request: ImageRequest, *, pace: Pace | None = None,
                    cancel: threading.Event | None = None) -> Iterator[Any]:
    """`engines.image.request.run` of `request` (sample i: seed + i, exactly as `chainrule generate
    image` and `--from`), with every value's distributions for the live view, paced by `pace`."""
    cancel = cancel or threading.Event()
    model = load_model(info)
    wait = (pace or Pace()).waiter(cancel)
    for ev in request_mod.run(request, info, model=model, should_stop=cancel.is_set, distributions=True):
        yield ev
        if isinstance(ev, PixelStep) and wait():
            return


def score_events(info: ModelInfo, pixels: np.ndarray, label: int | None = None) -> Iterator[ScoreDone]:
    """Exact per-pixel log-likelihoods of `pixels` (C, H, W) and the model's distribution at every pixel."""
    from engines.image.sampler import check_pixels, score_image

    model = load_model(info)
    pixels = np.asarray(pixels).copy()
    score = score_image(model, pixels, label)
    raw = model.forward(check_pixels(model, pixels), model.labels(label, 1))[0]  # (H, W, C, V')
    logits = model.distribution_logits(raw)  # (H, W, C, V)
    V = logits.shape[-1]
    probs = np.exp(log_softmax(logits.reshape(-1, V))).reshape(logits.shape).astype(np.float32)
    yield ScoreDone(info.id, label, pixels, score.logprobs, probs, score.total, score.bits_per_dim)


# --- frames and GIF ------------------------------------------------------------------------------------

class FrameRecorder:
    """Snapshots of a painting for an animated GIF: at most about `max_frames`, evenly spaced."""

    def __init__(self, n_values: int, max_frames: int = GIF_MAX_FRAMES) -> None:
        self.every = max(1, math.ceil(max(1, n_values) / max(1, max_frames - 2)))
        self.frames: list[np.ndarray] = []
        self._n = 0

    def start(self, images: np.ndarray) -> None:
        self.frames = [np.array(images, copy=True)]
        self._n = 0

    def step(self, images: np.ndarray) -> None:
        self._n += 1
        if self._n % self.every == 0:
            self.frames.append(np.array(images, copy=True))

    def finish(self, images: np.ndarray) -> None:
        if not self.frames or not np.array_equal(self.frames[-1], images):
            self.frames.append(np.array(images, copy=True))


def gif_scale(height: int, width: int, target: int = 280) -> int:
    return max(1, min(16, round(target / max(height, width))))


def write_gif(path: str | os.PathLike, frames: list[np.ndarray], levels: int, *, scale: int | None = None,
              frame_ms: int = 40, hold_ms: int = 1500) -> int:
    """An animated GIF of `frames` ((C, H, W) model values each), upscaled without smoothing.

    Written atomically; returns the number of frames. The last frame is held for `hold_ms`.
    """
    from PIL import Image

    from engines.atomic import atomic_path
    from studio.image.drawing import to_8bit

    if len(frames) < 1:
        raise InputError("there is no painting to export: generate an image first")
    _c, h, w = frames[0].shape
    scale = scale or gif_scale(h, w)
    images = []
    for f in frames:
        a = to_8bit(f, levels)
        im = Image.fromarray(np.ascontiguousarray(a[..., 0] if a.shape[2] == 1 else a))
        images.append(im.resize((w * scale, h * scale), Image.Resampling.NEAREST))
    durations = [frame_ms] * (len(images) - 1) + [hold_ms]
    with atomic_path(path) as tmp:
        try:
            images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:], duration=durations,
                           loop=0, optimize=False, disposal=1)
        except OSError as exc:
            raise InputError(f"cannot write {path}: {exc}") from exc
    return len(images)


# --- reading user files ----------------------------------------------------------------------------------

def read_image_file(path: str | os.PathLike, geometry):
    """A user's image at the model's size and mode: `engines.image.png.LoadedImage` (with notes)."""
    from engines.image.png import read_image

    g = geometry
    return read_image(path, channels=g.channels, height=g.height, width=g.width, levels=g.levels)


def read_mask_file(path: str | os.PathLike, geometry, source_size: tuple[int, int] | None = None
                   ) -> tuple[np.ndarray, list[str]]:
    """A mask file (white = regenerate) for the canvas: the canvas's size, or the loaded image's.

    A mask of any other size is refused: it cannot be told where it belongs.
    """
    from PIL import Image

    from engines.image.png import read_mask

    g = geometry
    size = None
    try:
        with Image.open(path) as im:
            size = im.size
    except Exception:  # noqa: BLE001 - read_mask says what is wrong with the file
        pass
    allowed = [g.size] + ([tuple(source_size)] if source_size and tuple(source_size) != g.size else [])
    if size is not None and tuple(size) not in allowed:
        also = f" (or {source_size[0]}x{source_size[1]}, the size of the loaded image)" if len(allowed) > 1 else ""
        raise InputError(f"the mask is {size[0]}x{size[1]} but the canvas is {g.width}x{g.height}{also}: "
                         "a mask must have the same size as the image it goes with")
    return read_mask(path, height=g.height, width=g.width, image_size=size)
