"""The Density tab's background work: generators that run on a TaskRunner's worker thread.

Nothing here touches Qt. Each function returns a generator of small events the tab turns
into pixels and tables on the UI thread:

* `run_events` - Sample, Inpaint and Compare orderings. A run is one or more *lanes*; a lane
  is exactly one `engines.density.request.DensityRequest` carried out by
  `engines.density.request.run` (the runner `chainrule generate image --model ID` uses), so the
  studio and the CLI draw the same pixels and a lane's `to_command` reproduces it.
  Sample / Inpaint is one lane of N samples (sample i uses seed + i and they fill in
  together, position by position); Compare orderings is one lane per ordering with the same
  seed and the same known pixels, stepped in turn so the orderings fill in side by side.
  A `Pace` (shared with the Image tab) slows the stream to a chosen number of ordering
  positions per second, waiting on the cancel event so Stop ends a run at once.
* `score_events` - "which model finds this digit more likely, and where": the same image
  scored by a NADE, a MADE and a binarized PixelCNN. Each row has the exact log p(image) (MADE:
  the mixture of its first K masks) and the per-pixel conditional map, -log p of each pixel
  given the pixels before it in that model's ordering (MADE: the chosen ordering's mask). One
  model failing gives a row with its error; the others are still scored.

Also here: the model cache (density and image models), ordering specs and NADE's inpainting
precondition.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

import numpy as np

from engines.errors import ChainruleError, InputError
from engines.registry import ModelInfo
from studio.image.drawing import Geometry
from studio.image.work import Pace
from studio.model_cache import ModelCache

LN2 = math.log(2)
MAX_SAMPLES = 64
FAMILY_LABELS = {"nade": "NADE", "made": "MADE", "pixelcnn": "PixelCNN"}
COMPARE_ORDERINGS = ("raster", "reverse", "column", "random")

__all__ = ["Pace"]  # re-exported: the tab paces runs like the Image tab does


# --- models ------------------------------------------------------------------------------------

def _load(info: ModelInfo):
    if info.kind == "density":
        from engines.density.model import load_density_model

        return load_density_model(info, threads=1)
    from engines.image.model import load_image_model

    return load_image_model(info, threads=1)


# load_model on a worker thread (it may load); cached_model never loads: safe on the UI thread.
load_model, cached_model, forget_models = ModelCache(_load, "model").functions()


def density_family(info: ModelInfo) -> str | None:
    """"nade" | "made" from a density card (None when it names neither)."""
    family = (info.card.get("architecture") or {}).get("family")
    return family if family in ("nade", "made") else None


def density_geometry(card: dict[str, Any]) -> Geometry:
    """The binary image a density card models (InputError when it is not one channel of 0/1)."""
    image = card.get("image") or {}
    try:
        height, width = int(image.get("height", 28)), int(image.get("width", 28))
    except (TypeError, ValueError):
        raise InputError(f"card of {card.get('id')!r}: image height/width are not whole numbers") from None
    dims = (card.get("architecture") or {}).get("dims")
    if height < 1 or width < 1 or (dims is not None and int(dims) != height * width):
        raise InputError(f"card of {card.get('id')!r}: a {width}x{height} image does not have {dims} pixels")
    if int(image.get("channels", 1)) != 1 or int(image.get("levels", 2)) != 2:
        raise InputError(f"card of {card.get('id')!r}: density models draw one channel of black/white pixels")
    return Geometry(height, width, 1, 2, "bernoulli", 0)


def made_masks_and_k(info: ModelInfo) -> tuple[int, int]:
    """(number of masks, default K) from a MADE card; (1, 1) for anything else."""
    arch = info.card.get("architecture") or {}
    if arch.get("family") != "made":
        return 1, 1
    n = int(arch.get("n_masks", len(arch.get("mask_seeds") or [1])) or 1)
    return n, int(arch.get("default_k", n) or n)


def check_k(k: int, info: ModelInfo) -> int:
    """The ensemble size K for a MADE card; InputError naming the range when it is outside 1..n_masks."""
    n, _default = made_masks_and_k(info)
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= int(k) <= n:
        raise InputError(f"ensemble K = {k!r} is out of range: model {info.id!r} has {n} mask"
                         f"{'s' if n != 1 else ''}, so K must be in 1..{n}")
    return int(k)


# --- orderings -----------------------------------------------------------------------------------

def ordering_spec(name: str, random_seed: int = 0) -> str:
    """The `--ordering` value: a name, or random:SEED for the random ordering."""
    if name == "random":
        return f"random:{int(random_seed)}"
    return name


def parse_spec(spec: str) -> tuple[str, int]:
    """(name, random seed) of an ordering spec (as `chainrule --ordering` reads it)."""
    name, sep, seed = str(spec).partition(":")
    return name, (int(seed) if sep else 0)


def trained_random_seed(info: ModelInfo) -> int:
    """The seed of the first random ordering a MADE card trained (what a bare `random` means); 0 without one."""
    for spec in (info.card.get("architecture") or {}).get("orderings") or ():
        name, sep, seed = str(spec).partition(":")
        if name == "random" and sep and seed.isdigit():
            return int(seed)
    return 0


def ordering_label(spec: str) -> str:
    name, seed = parse_spec(spec)
    return f"random (seed {seed})" if name == "random" else name


def nade_can_inpaint(regenerate: np.ndarray) -> bool:
    """NADE conditions on pixels before a pixel in raster order only: inpainting is exact only when
    every kept pixel comes before every regenerated one (the regenerated part is a raster tail)."""
    known = ~np.asarray(regenerate, bool).reshape(-1)
    n = int(known.sum())
    return bool(known[:n].all())


NADE_INPAINT_MESSAGE = (
    "NADE cannot inpaint this mask exactly: it conditions each pixel only on the pixels before it in raster "
    "order, and some pixels you kept come after the masked ones (it would ignore them). Choose a MADE model "
    "(it puts the known pixels first in its ordering and samples the rest from the exact conditional), or mask "
    "everything from a row on down.")


# --- run events -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class RunStarted:
    model_id: str
    family: str
    temperature: float
    k: int  # the ensemble size the exact log p(image) of each sample uses (1 for NADE)
    t: float


@dataclass(frozen=True)
class LaneStarted:
    lane: int
    ordering: str  # the spec used (random resolved to random:SEED)
    seed: int
    count: int
    order: np.ndarray  # (D,) raster index sampled at each position (known pixels first when inpainting)
    start: np.ndarray  # (D,) uint8: the known pixels, 0 elsewhere
    pending: np.ndarray  # (D,) bool: the pixels this lane samples
    mask_seed: int | None  # MADE: the connectivity seed of the ordering's masks
    notes: tuple[str, ...] = ()  # the run's notes (an ordering the model was not trained in)


@dataclass(frozen=True)
class LaneStep:
    lane: int
    step: Any  # engines.density.sampling.DensityStep (sample, position, pixel, value, prob_one)


@dataclass(frozen=True)
class SampleDone:
    lane: int
    sample: int
    seed: int
    image: np.ndarray  # (D,) uint8 in {0, 1}, raster order
    sampled_logprob: float  # log p(sampled pixels | the known ones), exact, nats
    order_logprob: float  # log p(image) under the mask set it was sampled with (NADE: its only one)
    ensemble_logprob: float  # log p(image): NADE exact; MADE the mixture of its first K masks
    k: int
    n_sampled: int


@dataclass(frozen=True)
class LaneFinished:
    lane: int
    stopped: bool  # the lane ended early (a stop inside the engine); the tab's Stop closes the stream instead


def run_events(info: ModelInfo, requests: Sequence[Any], *, pace: Pace | None = None,
               cancel: threading.Event | None = None) -> Iterator[Any]:
    """Carry out every lane's DensityRequest (see the module doc), all checked before the first event."""
    from engines.density.request import DensityFinished, DensitySample, run
    from engines.density.sampling import check_config
    from engines.density.sampling import DensityStep

    cancel = cancel or threading.Event()
    if not requests:
        raise InputError("nothing to sample: no ordering chosen")
    for request in requests:
        if not 1 <= request.count <= MAX_SAMPLES:
            raise InputError(f"samples = {request.count} is invalid: must be in 1..{MAX_SAMPLES}")
    model = load_model(info)
    gens, starts = [], []
    for request in requests:
        gen = run(request, info, model=model)
        starts.append(next(gen))  # refuses bad input before anything is shown
        gens.append(gen)
    first = starts[0]
    yield RunStarted(info.id, model.family, check_config(first.request.decoding), first.k, time.perf_counter())
    for i, st in enumerate(starts):
        yield LaneStarted(i, st.ordering, st.request.seed, st.request.count, st.order, st.known.copy(),
                          st.pending.copy(), st.mask_seed, st.notes)
    wait = (pace or Pace()).waiter(cancel)
    live = list(range(len(requests)))
    while live:
        for i in list(live):
            # One ordering position of this lane: a step for each of its samples (then, at its end,
            # the samples' scores and the lane's end).
            steps = 0
            while steps < requests[i].count:
                ev = next(gens[i], None)
                if ev is None:
                    live.remove(i)
                    break
                if isinstance(ev, DensityStep):
                    yield LaneStep(i, ev)
                    steps += 1
                elif isinstance(ev, DensitySample):
                    yield SampleDone(i, ev.index, ev.seed, ev.image, ev.sampled_logprob, ev.total_logprob,
                                     ev.ensemble_logprob, ev.k, ev.n_sampled)
                elif isinstance(ev, DensityFinished):
                    yield LaneFinished(i, ev.stopped)
                    live.remove(i)
                    break
            if cancel.is_set():
                return
        if wait():
            return


# --- scoring --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ScoreRequest:
    """One model of the comparison: its family ("nade" | "made" | "pixelcnn") and how to score it."""

    family: str
    info: ModelInfo
    ordering: str = "raster"  # MADE: the ordering of the map (and of its mask); others: raster
    k: int = 1  # MADE: the mixture size of the total


@dataclass(frozen=True)
class ModelScore:
    family: str
    model_id: str
    ordering: str
    k: int
    total: float = float("nan")  # log p(image), nats (MADE: mixture of k masks)
    logprob_map: np.ndarray | None = None  # (H, W) log p(pixel | pixels before it in `ordering`), nats
    order: np.ndarray | None = None  # (D,) the map's ordering
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def map_total(self) -> float:
        """The sum of the map: log p(image) under the map's one ordering (= total except for MADE with K > 1)."""
        return float(self.logprob_map.sum()) if self.logprob_map is not None else float("nan")

    @property
    def nll_bits(self) -> np.ndarray | None:
        return None if self.logprob_map is None else -self.logprob_map / LN2

    def bits_per_dim(self) -> float:
        n = self.logprob_map.size if self.logprob_map is not None else 1
        return -self.total / LN2 / n

    def prob_one(self, pixels: np.ndarray) -> np.ndarray | None:
        """(H, W) p(pixel = 1 | the pixels before it), recovered from the map and the image."""
        if self.logprob_map is None:
            return None
        p = np.exp(self.logprob_map)
        return np.where(np.asarray(pixels).reshape(p.shape) == 1, p, 1.0 - p)


@dataclass(frozen=True)
class ScoreDone:
    pixels: np.ndarray  # (H, W) uint8: the image scored
    key: tuple  # what was asked (models, orderings, K): the tab ignores answers to an old question
    rows: tuple[ModelScore, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class ScoreStep:
    """A scoring is under way: one model loaded, or scored. Nothing to show; it is a point where
    the worker can stop (a stop takes effect at the next yield), so a close or a new scoring
    never waits for more than one model's load."""

    model_id: str
    stage: str  # "loaded" | "scored"


def score_one(request: ScoreRequest, pixels: np.ndarray, model: Any = None) -> ModelScore:
    """One comparison row (raises on failure; `score_events` turns that into the row's error);
    `model` is the request's model already loaded, if it is."""
    model = load_model(request.info) if model is None else model
    h, w = pixels.shape
    if request.family == "pixelcnn":
        from engines.image.sampler import score_images

        lp = score_images(model, pixels.reshape(1, 1, h, w).astype(np.uint8))[0, 0]  # (H, W)
        return ModelScore("pixelcnn", request.info.id, "raster", 1, float(lp.sum()), lp.astype(np.float64),
                          np.arange(h * w, dtype=np.int64))
    if (model.height, model.width) != (h, w):
        raise InputError(f"{request.info.id} models {model.width}x{model.height} images, not {w}x{h}")
    x = pixels.reshape(1, -1).astype(np.float32)
    if request.family == "nade":
        lp = model.conditionals(x)[0]
        return ModelScore("nade", request.info.id, "raster", 1, float(lp.sum()), lp.reshape(h, w),
                          np.arange(h * w, dtype=np.int64))
    k = model.check_k(request.k)
    name, seed = parse_spec(request.ordering)
    order = model.ordering(name, seed)
    lp = model.conditionals(x, order)[0]  # under the mask set the ordering samples with
    total = float(model.log_prob(x, k)[0])
    return ModelScore("made", request.info.id, request.ordering, k, total, lp.reshape(h, w), order)


def _message(exc: BaseException) -> str:
    """One line for the user, as the worker says it (no Qt here)."""
    if isinstance(exc, ChainruleError):
        return str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def score_events(requests: Sequence[ScoreRequest], pixels: np.ndarray,
                 key: tuple = ()) -> Iterator[ScoreStep | ScoreDone]:
    """Score `pixels` (H, W) with every requested model: a ScoreStep after each model's load and
    after its scoring (where a stop takes effect), then one ScoreDone with a row per request."""
    pixels = np.asarray(pixels, np.uint8).copy()
    rows = []
    for req in requests:
        try:
            model = load_model(req.info)
        except Exception as exc:  # noqa: BLE001 - one broken model must not hide the others
            rows.append(ModelScore(req.family, req.info.id, req.ordering, req.k, error=_message(exc)))
            continue
        yield ScoreStep(req.info.id, "loaded")
        try:
            rows.append(score_one(req, pixels, model))
        except Exception as exc:  # noqa: BLE001 - one broken model must not hide the others
            rows.append(ModelScore(req.family, req.info.id, req.ordering, req.k, error=_message(exc)))
        yield ScoreStep(req.info.id, "scored")
    yield ScoreDone(pixels, tuple(key), tuple(rows))
