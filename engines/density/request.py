"""One NADE/MADE run as a value: `DensityRequest`, and `run`, the one function that carries it out.

A request is everything that makes a run of a density model: the model id, the pixel ordering
(raster | reverse | column | random | random:SEED), the MADE ensemble size K its log p(image) is
reported with, the init image and mask of a completion (inpainting), the decoding config (its
seed is the run's) and the count. `chainrule generate image --model <density model>` parses flags
into one (engines/density/commands.py); the Density tab builds one from its widgets; both run it
with `run` and write it into every output, so `chainrule generate --from FILE` and the studio's
open/drop make the same sample again, pixel for pixel.

Inputs by content: the init image and the mask travel inside the request as small binary PNGs
(`InputRef` with the bytes and their sha256; a 28x28 one is ~100 bytes) of the model's size,
exactly the pixels the run used (a CLI `--init photo.jpg` is converted first, with notes, and its
path kept only to name it in the command). Init: white = 1. Mask: white = regenerate.

The seed-per-sample rule lives here: sample i of a request draws from seed + i, whatever group it
is drawn in, so `for_sample(i)` (count 1, seed + i) makes sample i alone, bit for bit.

What decoding a density model reads is declared once, in `engines.decoding.support` (the table the
Decoding panel greys its rows from): a binary pixel has two values, so truncation filters and
penalties do nothing or collapse it; a request refuses them on creation, in the panel's words.
"""

from __future__ import annotations

import dataclasses
import io
import math
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Iterator, Mapping

import numpy as np

from engines import limits
from engines.decoding.config import DecodingConfig
from engines.density.sampling import DensityDone, check_config, sample_events, sampling_order
from engines.errors import InputError
from engines.generation import resolve_seed
from engines.requests import MAX_EMBEDDED_INPUT_BYTES, InputRef, envelope, open_request

KIND = "density"
LN2 = math.log(2)
ORDERING_NAMES = ("raster", "reverse", "column", "random")
# Samples drawn together (one model run per pixel serves them all). A larger count is drawn in
# groups of this size, each reported (and written by the CLI) as soon as it is finished: a stop
# then keeps every finished group. Up to here a larger batch is much cheaper per sample (MADE on
# 2 cores: 2.2 s for 1 sample, 9.5 s for 128); beyond it, a little. Sample i draws from seed + i
# whatever group it is in.
SAMPLE_GROUP = 256


# --- orderings -----------------------------------------------------------------------------------

def parse_ordering(spec: str) -> tuple[str, int | None]:
    """(name, random seed or None) of raster | reverse | column | random | random:SEED; InputError otherwise."""
    if not isinstance(spec, str) or not spec.strip():
        raise InputError(f"ordering {spec!r} is invalid: choose one of {', '.join(ORDERING_NAMES)} (random:SEED)")
    name, sep, seed_text = spec.strip().partition(":")
    if not sep:
        return name, None
    if name != "random":
        raise InputError(f"ordering {spec!r}: only 'random' takes a seed (random:SEED)")
    try:
        seed = int(seed_text)
    except ValueError:
        raise InputError(f"ordering {spec!r}: the seed after 'random:' must be a whole number") from None
    if seed < 0:
        raise InputError(f"ordering {spec!r}: the seed must be >= 0")
    return name, seed


def ordering_label(name: str, random_seed: int) -> str:
    return f"random:{random_seed}" if name == "random" else name


def resolve_ordering(model, spec: str | None, what: str = "samples") -> tuple[str, int, list[str]]:
    """(ordering name, random seed, notes) for `model` from raster | reverse | column | random | random:SEED.

    `random` without a seed is the card's first trained random ordering (a MADE is only good in
    orderings like those it was trained on); an ordering the card did not train is exact but gets a
    note (`what` may be poorer). InputError when the model has no such ordering."""
    spec = (spec or "raster").strip()
    base, random_seed = parse_ordering(spec)
    if base not in model.orderings():
        if model.family == "nade" and base in ("reverse", "column", "random"):
            raise InputError(f"NADE model {model.id!r} is trained in raster order only, not {base!r}; "
                             "use a MADE model for reverse, column or random orderings")
        raise InputError(f"unknown ordering {spec!r}; {model.id} offers: {', '.join(model.orderings())}"
                         + (" (random takes a seed: random:SEED)" if "random" in model.orderings() else ""))
    if random_seed is None:
        trained = model.trained_random_seed() if base == "random" else None
        random_seed = trained if trained is not None else 0
    notes = []
    if not model.is_trained_ordering(model.ordering(base, random_seed)):
        trained_specs = list(dict.fromkeys(getattr(model, "trained_orderings", ("raster",))))
        shown = ", ".join(trained_specs[:6]) + (", ..." if len(trained_specs) > 6 else "")
        notes.append(f"ordering {ordering_label(base, random_seed)}: exact, but this ordering was not trained; "
                     f"{what} may be poorer ({model.id} was trained on {shown})")
    return base, random_seed, notes


# --- the init image and mask, by content ---------------------------------------------------------

def binary_png(image: np.ndarray) -> bytes:
    """(H, W) 0/1 (or bool) as the bytes of a black-and-white PNG (white = 1)."""
    from PIL import Image

    a = (np.asarray(image).reshape(np.shape(image)[-2:]) != 0).astype(np.uint8) * 255
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(a)).save(buf, format="PNG")
    return buf.getvalue()


def image_input(pixels: np.ndarray, path: str | None = None) -> InputRef:
    """The init image (H, W) or (1, H, W) of 0/1 as an input carried in the request (white = 1)."""
    return InputRef.from_bytes(binary_png(pixels), path)


def mask_input(regenerate: np.ndarray, path: str | None = None) -> InputRef:
    """The mask (H, W) bool, True = regenerate, as an input carried in the request (white = regenerate)."""
    return InputRef.from_bytes(binary_png(regenerate), path)


def read_binary_png(ref: InputRef, what: str, height: int, width: int) -> np.ndarray:
    """(H, W) bool of an embedded black-and-white PNG (white >= 128 = True), checked to be H x W."""
    from PIL import Image

    data = ref.read(MAX_EMBEDDED_INPUT_BYTES, what)
    try:
        with Image.open(io.BytesIO(data)) as im:
            if im.format != "PNG":
                raise InputError(f"{what} is not a PNG")
            if im.size != (width, height):
                raise InputError(f"{what} is {im.size[0]}x{im.size[1]} but the model draws {width}x{height} images")
            a = np.asarray(im.convert("L"))
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 - PIL raises many types on hostile bytes
        raise InputError(f"{what} is not a readable PNG ({type(exc).__name__})") from None
    return a >= 128


# --- the request ------------------------------------------------------------------------------------

def _whole(value: Any, what: str, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low or \
            (high is not None and value > high):
        bound = f"in {low}..{high:,}" if high is not None else f">= {low}"
        raise InputError(f"{what} = {value!r} is invalid: must be a whole number {bound}")
    return int(value)


@dataclass(frozen=True)
class DensityRequest:
    """A NADE/MADE run (see the module doc). Validated on creation; `check` against the model."""

    kind: ClassVar[str] = KIND
    model: str
    decoding: DecodingConfig = field(default_factory=DecodingConfig)  # its seed is the run's (None: drawn)
    count: int = 1  # samples; sample i draws from seed + i
    ordering: str = "raster"  # raster | reverse | column | random (the card's trained one) | random:SEED
    ensemble_k: int | None = None  # MADE: log p(image) is the mixture of the first K masks (None: the card's)
    init: InputRef | None = None  # completion: the image whose unmasked pixels are kept (white = 1)
    mask: InputRef | None = None  # completion: white = regenerate

    def __post_init__(self) -> None:
        if not isinstance(self.model, str) or not self.model.strip():
            raise InputError("model is missing: name a density model id")
        if not isinstance(self.decoding, DecodingConfig):
            raise InputError("decoding is invalid: expected a decoding config")
        limits.count_in_range(self.count, "count")
        limits.check_seed_range(self.decoding.seed, self.count)
        parse_ordering(self.ordering)
        if self.ensemble_k is not None:
            _whole(self.ensemble_k, "ensemble K", 1)
        if (self.init is None) != (self.mask is None):
            raise InputError("a completion needs both the init image and the mask (white = regenerate)"
                             if self.mask is None else "the mask needs the init image whose other pixels are kept")
        check_config(self.decoding)

    # --- what it is -----------------------------------------------------------------------------
    @property
    def seed(self) -> int | None:
        return self.decoding.seed

    @property
    def is_completion(self) -> bool:
        return self.init is not None

    def resolved(self) -> "DensityRequest":
        """This request with its seed drawn (itself when it has one)."""
        if self.decoding.seed is not None:
            return self
        return dataclasses.replace(self, decoding=self.decoding.replace(seed=resolve_seed(self.decoding)))

    def for_sample(self, i: int) -> "DensityRequest":
        """The request that makes sample i alone: count 1, seed + i (the seed-per-sample rule)."""
        r = self.resolved()
        _whole(i, "sample", 0, r.count - 1)
        return dataclasses.replace(r, count=1, decoding=r.decoding.replace(seed=r.decoding.seed + i))

    def replace(self, **changes: Any) -> "DensityRequest":
        return dataclasses.replace(self, **changes)

    # --- against the model ------------------------------------------------------------------------
    def check(self, model) -> list[str]:
        """Check against a loaded DensityModel (ordering, K, inputs, NADE's inpainting rule); the notes."""
        if model.id != self.model:
            raise InputError(f"this request is for model {self.model!r}, not {model.id!r}")
        base, random_seed, notes = resolve_ordering(model, self.ordering)
        model.check_k(self.ensemble_k)
        _known, regenerate = self.inputs(model.height, model.width)
        sampling_order(model, base, None if regenerate is None else ~regenerate, random_seed)
        return notes

    def inputs(self, height: int, width: int) -> tuple[np.ndarray | None, np.ndarray | None]:
        """(known pixels (D,) uint8 0/1 with 0 where regenerated, regenerate (D,) bool) or (None, None)."""
        if self.init is None:
            return None, None
        image = read_binary_png(self.init, "the init image", height, width).reshape(-1)
        regenerate = read_binary_png(self.mask, "the mask", height, width).reshape(-1)
        if not regenerate.any():
            raise InputError("the mask marks no pixel to regenerate (white = regenerate, black = keep)")
        if regenerate.all():
            raise InputError("the mask marks every pixel: nothing of the init image would be kept (sample without "
                             "an init image and mask instead)")
        return np.where(regenerate, 0, image).astype(np.uint8), regenerate

    # --- conversions -----------------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        return envelope(KIND, {
            "model": self.model, "decoding": self.decoding.to_dict(), "count": self.count,
            "ordering": self.ordering, "ensemble_k": self.ensemble_k,
            "init": None if self.init is None else self.init.to_json(),
            "mask": None if self.mask is None else self.mask.to_json(),
        })

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "DensityRequest":
        body, config = open_request(data, KIND, ("model", "decoding", "count", "ordering", "ensemble_k", "init", "mask"))
        ordering = body.get("ordering", "raster")
        if not isinstance(ordering, str):
            raise InputError("density request: \"ordering\" must be a string")
        init = None if body.get("init") is None else InputRef.from_json(body["init"], "init")
        mask = None if body.get("mask") is None else InputRef.from_json(body["mask"], "mask")
        return cls(model=body["model"], decoding=config, count=body.get("count", 1),
                   ordering=ordering, ensemble_k=body.get("ensemble_k"), init=init, mask=mask)

    def to_command(self, info=None, *, init_path: str | None = None, mask_path: str | None = None) -> list[str]:
        """The `chainrule generate image` argv that makes the same samples. The init image and mask are
        files there: `init_path` / `mask_path`, else where they were read from, else INIT.png / MASK.png."""
        from engines.decoding.flags import decoding_arguments, model_arguments

        argv = ["generate", "image"]  # without the program name, as every request's to_command
        argv += model_arguments(info) if info is not None else ["--model", self.model]
        argv += decoding_arguments(self.decoding, info.card.get("decoding_defaults") if info is not None else None)
        if self.ordering != "raster":
            argv += ["--ordering", self.ordering]
        if self.decoding.seed is not None:
            argv += ["--seed", str(self.decoding.seed)]
        if self.count != 1:
            argv += ["--count", str(self.count)]
        if self.ensemble_k is not None:
            argv += ["--ensemble", str(self.ensemble_k)]
        if self.init is not None:
            argv += ["--init", init_path or self.init.path or "INIT.png",
                     "--mask", mask_path or self.mask.path or "MASK.png"]
        return argv


REQUEST_TYPE = DensityRequest


# --- events ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class DensityStarted:
    """The run is checked and about to draw: what it will do (first event)."""

    request: DensityRequest  # resolved: its seed is the one used
    ordering: str  # the spec used (`random` resolved to random:SEED)
    order: np.ndarray  # (D,) raster index drawn at each position (known pixels first when completing)
    mask_seed: int | None  # MADE: the connectivity seed of the ordering's masks
    known: np.ndarray  # (D,) uint8: the kept pixels, 0 elsewhere
    pending: np.ndarray  # (D,) bool: the pixels each sample draws
    k: int  # the ensemble size of `ensemble_logprob` (1 for NADE)
    family: str  # "nade" | "made"
    notes: tuple[str, ...]


@dataclass(frozen=True)
class DensityDrawn:
    """Samples start .. start + len(images) - 1 are drawn (their scores follow): written at once by the CLI."""

    start: int
    images: np.ndarray  # (n, D) uint8 in {0, 1}, raster order


@dataclass(frozen=True)
class DensitySample:
    """One finished sample with its exact log-likelihoods (nats)."""

    index: int
    seed: int  # seed + index
    image: np.ndarray  # (D,) uint8 in {0, 1}, raster order
    sampled_logprob: float  # log p(drawn pixels | the kept ones)
    total_logprob: float  # log p(image) under the mask set it was drawn with (NADE: its only one)
    ensemble_logprob: float  # log p(image): NADE exact; MADE the mixture of its first K masks
    k: int
    n_sampled: int


@dataclass(frozen=True)
class DensityFinished:
    """The last event: every finished sample, in order (fewer than `count` when stopped)."""

    request: DensityRequest
    ordering: str
    samples: tuple[DensitySample, ...]
    notes: tuple[str, ...]
    mask_seed: int | None
    stopped: bool = False


def load_model(info, threads: int | None = 1):
    from engines.density.model import load_density_model

    return load_density_model(info, threads=threads)


def run(request: DensityRequest, info, *, should_stop: Callable[[], bool] | None = None, model=None,
        method: str = "incremental") -> Iterator[Any]:
    """Carry out `request`: DensityStarted, then a DensityStep (engines.density.sampling; `sample` is the
    sample's index in the request) per drawn pixel and sample, a DensityDrawn and its DensitySamples per
    group, and DensityFinished. `model`: the loaded model of `info` (loaded here when None). Everything is
    checked before the first event; `should_stop()` true ends the run early, keeping finished groups."""
    request = request.resolved()
    model = load_model(info) if model is None else model
    notes = request.check(model)
    temperature = check_config(request.decoding)
    base, random_seed, _ = resolve_ordering(model, request.ordering)
    k = model.check_k(request.ensemble_k)
    known, regenerate = request.inputs(model.height, model.width)
    known_mask = None if regenerate is None else ~regenerate
    seed = request.decoding.seed
    groups = [(start, min(SAMPLE_GROUP, request.count - start)) for start in range(0, request.count, SAMPLE_GROUP)]

    def group_events(start: int, n: int):
        return sample_events(model, order_name=base, seed=seed + start, count=n, known=known,
                             known_mask=known_mask, random_seed=random_seed, temperature=temperature, method=method)

    first = group_events(*groups[0])  # refuses bad input now
    order, mask_seed = sampling_order(model, base, known_mask, random_seed)
    ordering = ordering_label(base, random_seed)
    pending = np.ones(model.dims, bool) if regenerate is None else regenerate.copy()
    start_pixels = np.zeros(model.dims, np.uint8) if known is None else known.copy()
    yield DensityStarted(request, ordering, order, mask_seed, start_pixels, pending, k, model.family, tuple(notes))
    samples: list[DensitySample] = []
    stop = should_stop or (lambda: False)
    n_sampled = int(pending.sum())
    for g, (start, n) in enumerate(groups):
        done = None
        for event in first if g == 0 else group_events(start, n):
            if isinstance(event, DensityDone):
                done = event
            else:
                yield event if start == 0 else dataclasses.replace(event, sample=start + event.sample)
                if event.sample == n - 1 and stop():
                    yield DensityFinished(request, ordering, tuple(samples), tuple(notes), mask_seed, stopped=True)
                    return
        yield DensityDrawn(start, done.images)
        for sample in _scored(model, done, start, seed, k, n_sampled):
            samples.append(sample)
            yield sample
    yield DensityFinished(request, ordering, tuple(samples), tuple(notes), mask_seed)


def _scored(model, done, start: int, seed: int, k: int, n_sampled: int) -> Iterator[DensitySample]:
    images = done.images.astype(np.float32)  # (n, D)
    order_lp = model.conditionals(images, done.order, done.mask_seed).sum(axis=1)  # (n,) under the sampling masks
    ensemble = model.log_prob(images, k) if model.family == "made" else order_lp
    for i in range(len(images)):
        yield DensitySample(start + i, seed + start + i, done.images[i].copy(), float(done.sampled_logprob[i]),
                            float(order_lp[i]), float(ensemble[i]), k, n_sampled)


def sample_image(image: np.ndarray, height: int, width: int):
    """A sample (D,) 0/1 as a black-and-white PIL image of the model's size."""
    from PIL import Image

    return Image.fromarray((np.asarray(image).reshape(height, width) != 0).astype(np.uint8) * 255)


def sample_png_bytes(image: np.ndarray, height: int, width: int, request_json: Mapping[str, Any]) -> bytes:
    """The bytes of the PNG `embed_in_png` writes: the sample with the request in its text chunk."""
    from PIL import PngImagePlugin

    from engines.requests import PNG_CHUNK_KEY, dumps

    chunk = PngImagePlugin.PngInfo()
    chunk.add_itxt(PNG_CHUNK_KEY, dumps(request_json), zip=True)
    buf = io.BytesIO()
    sample_image(image, height, width).save(buf, format="PNG", pnginfo=chunk)
    return buf.getvalue()
