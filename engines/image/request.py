"""One PixelCNN run as a value: `ImageRequest`, and `run`, the one function that carries it out.

`chainrule generate image` parses its flags into an ImageRequest; the studio's Image tab builds
one from its widgets; `chainrule generate --from sample.png` reads one back from a PNG. All three
run it with `run(request, info)`, which yields the same events (one `PixelStep` per sampled
value), so a sample made anywhere is regenerated anywhere else value for value.

What a request holds:
* the model id, the decoding config (its seed is the run's seed), the sample count;
* the conditioning: a label (digit) and a classifier-free guidance weight (None: the card's
  `guidance_default` toward a label, 0 without one; `resolved(info)` fills it in);
* the inputs of a completion / inpainting: the init image and the regenerate mask, at the
  model's size, as the pixel values themselves (`PixelArray`: zlib + base64 with a sha256), so a
  request is self-contained: an exported PNG regenerates without the files it was made from;
* `candidates`: K for posterior-aware completion (one of K raster-order completions resampled by
  the likelihood of the known pixels after the mask).

The rules live here and nowhere else: validation (without a model in `__post_init__`, against it
in `check`), the guidance default, the notes a run reports, and the seed-per-sample rule (sample
i of a run is `for_sample(i)`: count 1, seed + i), so a PNG of sample 2 of 4 carries the request
that makes exactly that sample.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import math
import time
import zlib
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Iterator, Mapping

import numpy as np

from engines import limits
from engines.decoding.config import DecodingConfig
from engines.errors import ChainruleError, InputError
from engines.generation import resolve_seed
from engines.requests import envelope, open_request

LN2 = math.log(2)
MAX_CANDIDATES = limits.MAX_CANDIDATES
MAX_INPUT_VALUES = 1 << 20  # values in an init image or mask a request may hold (28x28 is 784)


# --- inputs: pixel arrays by value ------------------------------------------------------------


@dataclass(frozen=True)
class PixelArray:
    """A small uint8 array (an init image (C, H, W) or a mask (H, W) of 0/1) stored by value.

    Frozen and comparable (equal arrays are equal values); JSON is the zlib-compressed bytes in
    base64 with the shape and a sha256 of the raw bytes, checked when read back."""

    shape: tuple[int, ...]
    data: bytes  # the raw C-order uint8 bytes

    @classmethod
    def of(cls, array) -> "PixelArray":
        a = np.ascontiguousarray(np.asarray(array), dtype=np.uint8)
        return cls(tuple(int(d) for d in a.shape), a.tobytes())

    def array(self) -> np.ndarray:
        return np.frombuffer(self.data, dtype=np.uint8).reshape(self.shape).copy()

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    def to_json(self) -> dict[str, Any]:
        return {"shape": list(self.shape), "sha256": self.sha256,
                "data": base64.b64encode(zlib.compress(self.data, 9)).decode("ascii")}

    @classmethod
    def from_json(cls, data: Any, what: str) -> "PixelArray":
        if not isinstance(data, Mapping) or set(data) != {"shape", "sha256", "data"}:
            raise InputError(f"{what} is invalid: expected an object with shape, sha256 and data")
        shape = data["shape"]
        if not isinstance(shape, list) or not 1 <= len(shape) <= 3 or any(
                isinstance(d, bool) or not isinstance(d, int) or not 1 <= d <= 4096 for d in shape):
            raise InputError(f"{what}.shape is invalid: expected 2 or 3 whole numbers in 1..4096")
        n = math.prod(shape)
        if n > MAX_INPUT_VALUES:
            raise InputError(f"{what} holds {n:,} values; at most {MAX_INPUT_VALUES:,} fit in a request")
        raw = data["data"]
        if not isinstance(raw, str) or len(raw) > 2 * MAX_INPUT_VALUES:
            raise InputError(f"{what}.data is invalid: expected base64 text")
        try:
            packed = base64.b64decode(raw, validate=True)
            inflate = zlib.decompressobj()
            values = inflate.decompress(packed, n + 1)  # bounded: a zip bomb stops at n + 1 bytes
        except (ValueError, zlib.error):
            raise InputError(f"{what}.data is invalid: not zlib-compressed base64") from None
        if len(values) != n or inflate.unconsumed_tail:
            raise InputError(f"{what}.data holds the wrong number of values for shape {shape}")
        if hashlib.sha256(values).hexdigest() != data["sha256"]:
            raise InputError(f"{what}.data does not match its sha256")
        return cls(tuple(shape), values)


# --- posterior-aware completion needs the model's own conditionals --------------------------------


def candidates_config_problems(config: DecodingConfig) -> list[str]:
    """Settings that make posterior-aware completion wrong, in words ("temperature 0.8",
    "top-p 0.9"); empty when it is fine.

    It weights candidates by p(known after | candidate), which is only the right importance
    weight when candidates come from the model's own conditionals: temperature 1, no filters,
    a categorical draw (the table of samplers says which settings change that)."""
    from engines.decoding.support import changes_from_plain

    return changes_from_plain(config)


# --- the request ------------------------------------------------------------------------------------

_FIELDS = ("model", "decoding", "count", "label", "guidance", "init", "mask", "candidates")


@dataclass(frozen=True)
class ImageRequest:
    kind: ClassVar[str] = "image"
    model: str
    decoding: DecodingConfig = field(default_factory=DecodingConfig)
    count: int = 1
    label: int | None = None
    guidance: float | None = None  # None: the card's default toward a label (see `resolved`)
    init: PixelArray | None = None  # (C, H, W) model values; the masked ones are stored as 0
    mask: PixelArray | None = None  # (H, W) 1 = regenerate
    candidates: int | None = None  # K: posterior-aware completion

    def __post_init__(self) -> None:
        from engines.image.sampler import MAX_GUIDANCE, check_config

        if not isinstance(self.model, str) or not self.model:
            raise InputError("model is invalid: expected a model id")
        if not isinstance(self.decoding, DecodingConfig):
            raise InputError("decoding is invalid: expected a decoding config")
        check_config(self.decoding)
        limits.count_in_range(self.count, "count", limits.MAX_COUNT)
        limits.check_seed_range(self.decoding.seed, self.count)
        if self.label is not None and (isinstance(self.label, bool) or not isinstance(self.label, int)
                                       or self.label < 0):
            raise InputError(f"label {self.label!r} is invalid: expected a whole number >= 0")
        g = self.guidance
        if g is not None:
            if isinstance(g, bool) or not isinstance(g, (int, float)) or not math.isfinite(g) \
                    or not 0 <= g <= MAX_GUIDANCE:
                raise InputError(f"guidance = {g!r} is invalid: must be a number in 0..{MAX_GUIDANCE:g} (0 is off)")
            object.__setattr__(self, "guidance", float(g))
        self._check_inputs()
        if self.candidates is not None:
            k = self.candidates
            if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_CANDIDATES:
                raise InputError(f"candidates = {k!r} is invalid: must be in 1..{MAX_CANDIDATES}")
            if self.mask is None:
                raise InputError("posterior-aware candidates need an init image and a mask: they resample "
                                 "completions by how well they explain the known pixels after the masked ones")
            changed = candidates_config_problems(self.decoding)
            if changed:
                raise InputError("posterior-aware candidates need plain sampling (temperature 1, no top-k, top-p, "
                                 f"min-p or typical-p); got {', '.join(changed)}: their weights are only right for "
                                 "samples from the model's own conditionals")
            if self.guidance:
                raise InputError("posterior-aware candidates weigh completions drawn from the model's own "
                                 "conditionals; with guidance they are not: use candidates or guidance, not both")

    def _check_inputs(self) -> None:
        init, mask = self.init, self.mask
        if init is None and mask is None:
            return
        if init is None:
            raise InputError("a mask needs an init image: the image whose unmasked pixels are kept")
        if mask is None:
            raise InputError("an init image needs a mask: white where pixels are regenerated")
        if not isinstance(init, PixelArray) or not isinstance(mask, PixelArray):
            raise InputError("init and mask are invalid: expected pixel arrays")
        if len(init.shape) != 3 or len(mask.shape) != 2 or init.shape[1:] != mask.shape:
            raise InputError(f"the init image is {'x'.join(map(str, init.shape))} and the mask "
                             f"{'x'.join(map(str, mask.shape))}: they must be C x H x W and H x W of the same size")
        m = mask.array()
        if m.max(initial=0) > 1:
            raise InputError("the mask must hold 0 (keep) and 1 (regenerate) only")
        if not m.any():
            raise InputError("the mask has no white pixels: there is nothing to regenerate")
        if m.all():
            raise InputError("the mask is white everywhere: every pixel would be regenerated and nothing of the "
                             "image kept; generate from scratch instead")
        a = init.array()
        if a[:, m.astype(bool)].any():  # canonical: masked values are never read, so they are stored as 0
            a[:, m.astype(bool)] = 0
            object.__setattr__(self, "init", PixelArray.of(a))

    # --- derived requests ---------------------------------------------------------------------
    def replace(self, **changes: Any) -> "ImageRequest":
        return dataclasses.replace(self, **changes)

    @property
    def seed(self) -> int | None:
        return self.decoding.seed

    def default_guidance(self, info) -> float:
        """The guidance a run uses when none is given: the card's, toward a label, without candidates."""
        from engines.image.sampler import card_guidance

        return card_guidance(info.card) if self.label is not None and self.candidates is None else 0.0

    def resolved(self, info=None) -> "ImageRequest":
        """A copy with the seed drawn (when none is set) and, given the model's `info`, the guidance
        filled in from its card: what a run actually does, and what its outputs record."""
        out = self
        if self.decoding.seed is None:
            out = out.replace(decoding=self.decoding.replace(seed=resolve_seed(self.decoding)))
        if out.guidance is None and info is not None:
            out = out.replace(guidance=self.default_guidance(info))
        return out

    def for_sample(self, i: int) -> "ImageRequest":
        """The request that makes sample `i` of this run alone: count 1, seed + i."""
        if self.decoding.seed is None:
            raise InputError("the request has no seed yet: resolve it first (resolved())")
        if not 0 <= i < self.count:
            raise InputError(f"sample {i + 1} is invalid: this run makes {self.count}")
        return self.replace(count=1, decoding=self.decoding.replace(seed=self.decoding.seed + i))

    def init_pixels(self) -> np.ndarray | None:
        return None if self.init is None else self.init.array()

    def mask_array(self) -> np.ndarray | None:
        return None if self.mask is None else self.mask.array().astype(bool)

    # --- against the model ---------------------------------------------------------------------
    def check(self, model) -> None:
        """Refuse what the loaded ImageModel `model` cannot do (label, guidance, input geometry)."""
        from engines.image.sampler import check_config

        if model.id != self.model:
            raise InputError(f"this request is for model {self.model!r}, not {model.id!r}")
        check_config(self.decoding, model.info.card)  # what this model's distribution can use (e.g. Bernoulli)
        model.label_value(self.label)
        if self.guidance:
            if model.n_classes == 0:
                raise InputError(f"guidance needs a label-conditioned model; {model.id!r} is unconditional "
                                 "(set guidance to 0)")
            if self.label is None:
                raise InputError("guidance pushes samples toward a label: give a label too (or set guidance to 0)")
        if self.init is not None:
            s = model.shape
            want = (s.channels, s.height, s.width)
            if self.init.shape != want:
                raise InputError(f"the init image is {'x'.join(map(str, self.init.shape))} but model {model.id!r} "
                                 f"draws {'x'.join(map(str, want))} images")
            if int(self.init.array().max(initial=0)) > s.levels - 1:
                raise InputError(f"the init image must hold whole values in 0..{s.levels - 1} for model {model.id!r}")

    # --- JSON and the command line ------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.model, "decoding": self.decoding.to_dict(), "count": self.count,
                                "label": self.label, "guidance": self.guidance, "candidates": self.candidates,
                                "init": None if self.init is None else self.init.to_json(),
                                "mask": None if self.mask is None else self.mask.to_json()}
        return envelope(self.kind, body)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "ImageRequest":
        body, config = open_request(data, cls.kind, _FIELDS)
        kwargs = {**{k: body[k] for k in _FIELDS if k in body}, "decoding": config}
        for name in ("init", "mask"):
            if kwargs.get(name) is not None:
                kwargs[name] = PixelArray.from_json(kwargs[name], name)
        try:
            return cls(**kwargs)
        except TypeError as exc:  # a field of the wrong type that validation did not name
            raise InputError(f"image request is invalid: {exc}") from None

    def input_file_names(self) -> dict[str, str]:
        """The file names `to_command` gives the init image and mask (see `write_inputs`)."""
        if self.init is None or self.mask is None:
            return {}
        return {"init": f"init-{self.init.sha256[:12]}.png", "mask": f"mask-{self.mask.sha256[:12]}.png"}

    def write_inputs(self, folder, levels: int) -> dict[str, str]:
        """Write the init image and mask as PNGs into `folder` (the names `to_command` uses); their paths."""
        from pathlib import Path

        from engines.image.png import write_image

        paths = {}
        for name, file_name in self.input_file_names().items():
            path = Path(folder) / file_name
            if name == "init":
                write_image(path, self.init.array(), levels)
            else:
                write_image(path, self.mask.array()[None], 2)
            paths[name] = str(path)
        return paths

    def to_command(self, info=None) -> list[str]:
        """The `chainrule` argv (without the program name) that runs this request; an inpainting one
        names its inputs by `input_file_names` (write them with `write_inputs`)."""
        from engines.decoding.flags import decoding_arguments, model_arguments

        card = info.card if info is not None else {}
        args = ["generate", "image", *(model_arguments(info) if info is not None else ["--model", self.model])]
        args += decoding_arguments(self.decoding, card.get("decoding_defaults"))
        if self.decoding.seed is not None:
            args += ["--seed", str(self.decoding.seed)]
        if self.label is not None:
            args += ["--label", str(self.label)]
        default = self.default_guidance(info) if info is not None else 0.0
        if self.guidance is not None and self.guidance != default:
            args += ["--guidance", repr(float(self.guidance))]
        for name, file_name in self.input_file_names().items():
            args += [f"--{name}", file_name]
        if self.candidates is not None:
            args += ["--candidates", str(self.candidates)]
        if self.count != 1:
            args += ["--count", str(self.count)]
        return args


REQUEST_TYPE = ImageRequest


# --- events --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunStarted:
    request: ImageRequest  # resolved: seed and guidance as run
    seed: int
    count: int
    candidates: int | None
    label: int | None
    chain: str  # the sampler chain's name
    method: str  # "fast" | "naive"
    n_values: int  # values sampled per image
    model_id: str
    notes: tuple[str, ...]
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
    n: int = 0  # values in the image
    levels: int = 2  # values per channel (for writing the image)
    request: ImageRequest | None = None  # `for_sample(sample)` of the run's request


def sampling_method(model) -> str:
    """The step graphs are optional in a card: without them every pixel runs the full network (same samples)."""
    return "fast" if model.has_fast_path else "naive"


def run_notes(request: ImageRequest) -> list[str]:
    """What a run says besides its samples (a resolved request)."""
    if request.guidance:
        w = request.guidance
        return [f"guidance {w:g}: samples follow log p(x|label) + {w:g} (log p(x|label) - log p(x)); the "
                "log-probabilities reported are the unguided conditional model's"]
    return []


def run(request: ImageRequest, info, *, model=None, should_stop: Callable[[], bool] | None = None,
        distributions: bool = False) -> Iterator[Any]:
    """Carry out `request` on the model `info` (loaded unless `model` is given): RunStarted, then per
    sample SampleStarted, a PixelStep per sampled value and SampleDone. Sample i is
    `request.for_sample(i)` (seed + i) and carries it. Stops quietly when `should_stop()` is true."""
    from engines.decoding import build_chain
    from engines.image.model import load_image_model
    from engines.image.sampler import PixelSampler, posterior_resample, score_images

    if model is None:
        model = load_image_model(info)
    request = request.resolved(info)
    request.check(model)
    seed, label, guidance = request.seed, request.label, request.guidance or 0.0
    init, mask = request.init_pixels(), request.mask_array()
    method = sampling_method(model)
    K = request.candidates or 1
    s = model.shape
    n_values = (int(mask.sum()) if mask is not None else s.height * s.width) * s.channels
    yield RunStarted(request, seed, request.count, request.candidates, label, build_chain(request.decoding, seed).name,
                     method, n_values, info.id, tuple(run_notes(request)), time.perf_counter())
    stop = should_stop or (lambda: False)
    for i in range(request.count):
        one = request.for_sample(i)  # the seed-per-sample rule: seed + i
        sampler = PixelSampler(model, one.decoding, one.seed, label=label, init=init, mask=mask, batch=K,
                               method=method, distributions=distributions, guidance=guidance)
        yield SampleStarted(i, one.seed, sampler.images.copy())
        for ev in sampler.steps(stop):
            yield PixelStep(i, ev)
        if stop() or not sampler.finished:
            return
        extra: dict[str, Any] = {}
        if request.candidates is not None:
            post = posterior_resample(model, sampler.images, mask, one.seed, label, sampler.sampled_logprobs)
            image, k = post.image, post.chosen
            extra = dict(chosen=k, candidates=post.candidates, known_after_logprobs=post.known_after_logprobs,
                         weights=post.weights, log_evidence=post.log_evidence,
                         effective_sample_size=post.effective_sample_size, n_known_after=post.n_known_after)
        else:
            image, k = sampler.images[0], 0
        lp = score_images(model, image, label)[0]  # (C, H, W) exact conditionals of the final image
        total = float(lp.sum())
        yield SampleDone(i, one.seed, image.copy(), total, -total / LN2 / lp.size, float(sampler.sampled_logprobs[k]),
                         sampler.n_sampled, n=int(lp.size), levels=s.levels, request=one, **extra)


def run_all(request: ImageRequest, info, **kw) -> tuple[RunStarted, list[SampleDone]]:
    """`run` to the end: its start and every finished sample."""
    started, done = None, []
    for ev in run(request, info, **kw):
        if isinstance(ev, RunStarted):
            started = ev
        elif isinstance(ev, SampleDone):
            done.append(ev)
    if started is None:  # pragma: no cover - run always starts
        raise ChainruleError("the image run did not start")
    return started, done
