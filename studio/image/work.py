"""The Image tab's background work: generators that run on a TaskRunner's worker thread.

Nothing here touches Qt. Each function returns a generator of small events the tab turns
into pixels on the UI thread:

* `generate_events` - Generate, Complete and Inpaint. Sample i of a run uses seed s + i and
  exactly the `PixelSampler` the CLI uses (`chainrule generate image --seed s --count N`,
  with `--init/--mask` for Complete and Inpaint and `--candidates K` for posterior-aware
  inpainting), so a studio run reproduces a command-line run value for value. Every
  sampled value is streamed as a `PixelStep`; a `Pace` slows the stream down so the image
  visibly paints itself (the wait is on the cancel event, so Stop ends it at once).
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

from engines.decoding import build_chain
from engines.decoding.config import DecodingConfig
from engines.decoding.samplers import log_softmax
from engines.errors import InputError
from engines.registry import ModelInfo
from studio.model_cache import ModelCache

LN2 = math.log(2)
MAX_SAMPLES = 64
MAX_CANDIDATES = 256
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


# --- events --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class RunStarted:
    seed: int
    count: int
    candidates: int | None
    label: int | None
    chain: str
    method: str
    n_values: int  # values sampled per image
    model_id: str
    t: float


@dataclass(frozen=True)
class SampleStarted:
    sample: int
    seed: int
    images: np.ndarray  # (K, C, H, W) uint8: the start (masked pixels empty)


@dataclass(frozen=True)
class PixelStep:
    sample: int
    event: Any  # engines.image.sampler.PixelEvent


@dataclass(frozen=True)
class SampleDone:
    sample: int
    seed: int
    image: np.ndarray  # (C, H, W) uint8: the result (the chosen candidate when posterior-aware)
    total_logprob: float  # log p(image), exact, nats
    bits_per_dim: float
    sampled_logprob: float  # of the values sampled in this run
    n_sampled: int
    chosen: int = 0
    candidates: np.ndarray | None = None  # (K, C, H, W) when posterior-aware
    known_after_logprobs: np.ndarray | None = None  # (K,)
    weights: np.ndarray | None = None  # (K,)
    log_evidence: float | None = None
    effective_sample_size: float | None = None
    n_known_after: int = 0


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


def sampling_method(model) -> str:
    return "fast" if model.has_fast_path else "naive"


def generate_events(info: ModelInfo, config: DecodingConfig, seed: int, *, label: int | None = None,
                    init: np.ndarray | None = None, mask: np.ndarray | None = None, count: int = 1,
                    candidates: int | None = None, pace: Pace | None = None,
                    cancel: threading.Event | None = None, guidance: float = 0.0) -> Iterator[Any]:
    """Sample `count` images (sample i with seed + i), streaming every value; see the module doc."""
    from engines.image.sampler import PixelSampler, check_config, check_guidance, posterior_resample, score_images

    cancel = cancel or threading.Event()
    if not 1 <= count <= MAX_SAMPLES:
        raise InputError(f"samples = {count} is invalid: must be in 1..{MAX_SAMPLES}")
    if candidates is not None:
        if mask is None:
            raise InputError("posterior-aware sampling needs a mask (Inpaint): it weighs completions by how well "
                             "they explain the known pixels after the masked ones")
        if not 1 <= candidates <= MAX_CANDIDATES:
            raise InputError(f"candidates = {candidates} is invalid: must be in 1..{MAX_CANDIDATES}")
    check_config(config)
    model = load_model(info)
    model.label_value(label)  # a bad label is refused before any work
    check_guidance(model, guidance, label)
    if guidance > 0 and candidates is not None:
        raise InputError("posterior-aware inpainting weighs completions drawn from the model's own conditionals; "
                         "with guidance they are not: set guidance to 0 or untick it")
    method = sampling_method(model)
    K = candidates or 1
    s = model.shape
    n_values = (int(np.asarray(mask, bool).sum()) if mask is not None else s.height * s.width) * s.channels
    yield RunStarted(seed, count, candidates, label, build_chain(config, seed).name, method, n_values, info.id,
                     time.perf_counter())
    wait = (pace or Pace()).waiter(cancel)
    for i in range(count):
        sample_seed = seed + i  # as the CLI: each sample is reproducible on its own
        sampler = PixelSampler(model, config, sample_seed, label=label, init=init, mask=mask, batch=K, method=method,
                               guidance=guidance)
        yield SampleStarted(i, sample_seed, sampler.images.copy())
        for ev in sampler.steps(cancel.is_set):
            yield PixelStep(i, ev)
            if wait():
                return
        if cancel.is_set() or not sampler.finished:
            return
        extra: dict[str, Any] = {}
        if candidates is not None:
            post = posterior_resample(model, sampler.images, mask, sample_seed, label, sampler.sampled_logprobs)
            image, k = post.image, post.chosen
            extra = dict(chosen=k, candidates=post.candidates, known_after_logprobs=post.known_after_logprobs,
                         weights=post.weights, log_evidence=post.log_evidence,
                         effective_sample_size=post.effective_sample_size, n_known_after=post.n_known_after)
        else:
            image, k = sampler.images[0], 0
        lp = score_images(model, image, label)[0]
        total = float(lp.sum())
        yield SampleDone(i, sample_seed, image.copy(), total, -total / LN2 / lp.size,
                         float(sampler.sampled_logprobs[k]), sampler.n_sampled, **extra)


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


# --- the command line -----------------------------------------------------------------------------------

def cli_arguments(info: ModelInfo, config: DecodingConfig, seed: int, label: int | None, count: int,
                  guidance: float = 0.0) -> list[str]:
    """`chainrule` arguments that reproduce a Generate run (every sample, same seeds)."""
    from engines.cli import reproducing_arguments

    args = reproducing_arguments(["generate", "image"], info, config) + ["--seed", str(seed)]
    if label is not None:
        args += ["--label", str(label)]
    if guidance > 0:
        args += ["--guidance", repr(float(guidance))]
    if count != 1:
        args += ["--count", str(count)]
    return args
