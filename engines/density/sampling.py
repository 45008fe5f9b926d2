"""Sampling NADE and MADE pixel by pixel in a chosen ordering, and exact inpainting.

One loop for every path: sample i draws its uniforms once, u = default_rng(seed + i).random(D),
and the pixel at ordering position k is drawn at u[k] by the sampler chain every modality uses
(`engines.generation.draw_step`): its logit z becomes the 2-value row [0, z], temperature divides
it, and the inverse CDF makes the pixel 1 when u[k] >= p(x_d = 0 | pixels before it) (greedy: 1
when z > 0). Which graph produced the logit does not enter the draw, so:

* NADE "incremental" (step.onnx: the running pre-activation a_d = c + sum_{j<d} x_j W[:, j] is
  updated by one column per pixel, O(H) per pixel) and NADE "naive" (the full O(DH) graph on
  the partly sampled image for every pixel) give the same samples for the same seed;
* MADE always runs its full graph per pixel, under the masks of the chosen ordering.

Orderings: NADE is trained in raster order, so it samples in raster order only. MADE samples in
any ordering (raster, reverse, column, random with a seed): its masks are built for it.

Inpainting (known pixels kept bit-exactly):
* MADE reorders the pixels with `known_first_ordering` (every known pixel first, then the
  unknown ones, each group in the chosen ordering's relative order). Under that ordering the
  product of the unknown pixels' conditionals *is* p(unknown | known): the sample is from the
  exact conditional of the model (the one defined by those masks), for any set of known pixels.
* NADE can do the same only when every known pixel comes before every unknown one in raster
  order (a top part of the image); otherwise it would ignore known pixels below the hole, so it
  refuses and points at MADE.

Events: a `DensityStep` per sampled pixel and sample (the studio paints them as they come), then
one `DensityDone`. Stopping early is closing the generator (stop iterating).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np

from engines.density.model import DensityModel, MadeModel, NadeModel
from engines.density.orderings import known_first_ordering
from engines.decoding.config import DecodingConfig
from engines.decoding.support import check_supported
from engines.errors import InputError
from engines.generation import draw_step, temperature_chain, two_value_rows

METHODS = ("incremental", "naive")


@dataclass(frozen=True)
class DensityStep:
    sample: int  # which of the `count` samples
    position: int  # k: place of the pixel in the ordering
    pixel: int  # d: raster index (row = d // width, col = d % width)
    value: int  # 0 or 1, the sampled value
    prob_one: float  # p(x_d = 1 | pixels before it) under the model itself


@dataclass(frozen=True)
class DensityDone:
    images: np.ndarray  # (count, D) uint8 in {0, 1}, raster order
    sampled_logprob: np.ndarray  # (count,) float64: sum of log p(value) over the sampled pixels
    order: np.ndarray  # (D,) the ordering actually used (known pixels first when inpainting)
    mask_seed: int | None = None  # MADE: the connectivity seed used; None for NADE


def _check_known(model: DensityModel, known, known_mask) -> tuple[np.ndarray | None, np.ndarray | None]:
    if known is None and known_mask is None:
        return None, None
    if known is None or known_mask is None:
        raise InputError("inpainting needs both the known pixel values and the mask of which pixels are known")
    D = model.dims
    kv, km = np.asarray(known), np.asarray(known_mask)
    if kv.shape != (D,) or km.shape != (D,):
        raise InputError(f"known pixels and their mask must each have {D} values (raster order), "
                         f"got shapes {kv.shape} and {km.shape}")
    if km.dtype != bool:
        if not np.isin(km, (0, 1)).all():
            raise InputError("the known-pixel mask must be boolean (True = known, kept)")
        km = km.astype(bool)
    if not np.isin(kv[km], (0, 1)).all():
        raise InputError("known pixels must be 0 or 1 (binary image)")
    if km.all():
        raise InputError("every pixel is known: there is nothing to sample")
    if not km.any():
        return None, None
    return np.where(km, kv, 0).astype(np.float32), km


def sampling_order(model: DensityModel, order_name: str = "raster", known_mask: np.ndarray | None = None,
                   random_seed: int = 0) -> tuple[np.ndarray, int | None]:
    """(ordering (D,), MADE mask seed or None) that `sample_events` uses; InputError when impossible."""
    if isinstance(model, NadeModel):
        if str(order_name) != "raster":
            raise InputError(f"NADE model {model.id!r} samples in raster order only (it is trained in that order), "
                             f"not {order_name!r}; use a MADE model for reverse, column or random orderings")
        order = np.arange(model.dims, dtype=np.int64)
        if known_mask is not None and known_mask.any():
            n = int(known_mask.sum())
            if not known_mask[:n].all():
                raise InputError("NADE cannot condition on known pixels that come after the masked ones in raster "
                                 "order (it would ignore them); use a MADE model, which inpaints any set of pixels "
                                 "exactly")
        return order, None
    if not isinstance(model, MadeModel):
        raise InputError(f"model {model.id!r} is not a NADE or MADE model")
    base = model.ordering(order_name, random_seed)
    seed = model.mask_seed_for(base)
    if known_mask is not None and known_mask.any():
        return known_first_ordering(known_mask, base), seed
    return base, seed


def check_config(config: DecodingConfig) -> float:
    """The temperature a density model samples at (0 = greedy); DecodingError naming the first setting
    a black-or-white pixel cannot use (the declaration is `engines.decoding.support`, shared with
    the Decoding panel and every other modality)."""
    check_supported(config, "density")
    return 0.0 if config.is_greedy else float(config.temperature)


def sample_events(model: DensityModel, *, order_name: str = "raster", seed: int, count: int = 1,
                  known: np.ndarray | None = None, known_mask: np.ndarray | None = None,
                  method: str = "incremental", random_seed: int = 0,
                  temperature: float = 1.0) -> Iterator[DensityStep | DensityDone]:
    """Sample `count` images (sample i from seed + i) pixel by pixel; see the module doc.

    order_name: raster | reverse | column | random (with random_seed) | "random:<seed>".
    known (D,) 0/1 and known_mask (D,) bool (True = known, kept): inpainting.
    method: NADE "incremental" (step graph) or "naive" (full graph per pixel); MADE ignores it.
    temperature: p(1) = sigmoid(logit / T) for the draw (0 = greedy; `check_config` turns a
    DecodingConfig into it); the reported
    probabilities and log-probabilities are always the model's own (T = 1).
    """
    if method not in METHODS:
        raise InputError(f"method {method!r} is not one of {', '.join(METHODS)}")
    if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 1:
        raise InputError(f"count = {count!r} is invalid: must be a whole number >= 1")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InputError(f"seed = {seed!r} is invalid: must be a whole number >= 0")
    if not np.isfinite(temperature) or temperature < 0:
        raise InputError(f"temperature = {temperature!r} is invalid: must be >= 0 (0 means greedy)")
    kv, km = _check_known(model, known, known_mask)
    order, mask_seed = sampling_order(model, order_name, km, random_seed)
    return _run(model, order, mask_seed, int(seed), int(count), kv, km, method, float(temperature))


def _run(model, order, mask_seed, seed, count, kv, km, method, temperature) -> Iterator[DensityStep | DensityDone]:
    D = model.dims
    chain = temperature_chain(temperature)  # the same temperature and draw code as pixels, text and audio
    histories = None  # binary pixels use no penalties (engines.decoding.support)
    uniforms = np.stack([np.random.default_rng(seed + i).random(D) for i in range(count)])  # (count, D)
    x = np.zeros((count, D), dtype=np.float32)
    n_known = 0
    if km is not None:
        x[:, km] = kv[km]
        n_known = int(km.sum())
    lp = np.zeros(count, dtype=np.float64)
    incremental = isinstance(model, NadeModel) and method == "incremental"
    if incremental:
        a = np.tile(model.init_a, (count, 1))  # (count, H)
    for k in range(D):
        d = int(order[k])
        if incremental:  # raster order: k == d; fold pixel d - 1 into a, get pixel d's logit
            prev = max(d - 1, 0)
            x_prev = x[:, prev] if d > 0 else np.zeros(count, dtype=np.float32)
            a, logit = model.step_logit(a, x_prev, prev, d)
        elif k < n_known:
            continue
        elif isinstance(model, NadeModel):
            logit = model.logits(x)[:, d]
        else:
            logit = model.logits(x, order, mask_seed)[:, d]
        if k < n_known:  # NADE: a known top part only advances the running state
            continue
        z = np.asarray(logit, dtype=np.float64)  # (count,)
        softplus = np.logaddexp(0.0, z)  # ln(1 + e^z), never overflows: ln p(1) = z - it, ln p(0) = -it
        p_model = np.exp(z - softplus)  # (count,) p(1) under the model itself
        draws, _ = draw_step(chain, two_value_rows(z), histories, uniforms[:, k])  # the shared chain and draw
        values = draws.astype(np.float32)
        x[:, d] = values
        lp += draws * z - softplus  # log_bernoulli(z, values), reusing the softplus
        for i in range(count):
            yield DensityStep(i, k, d, int(values[i]), float(p_model[i]))
    yield DensityDone(x.astype(np.uint8), lp, np.asarray(order, dtype=np.int64).copy(), mask_seed)


def sample(model: DensityModel, **kwargs) -> DensityDone:
    """Run `sample_events` to the end and return its `DensityDone`."""
    done = None
    for event in sample_events(model, **kwargs):
        if isinstance(event, DensityDone):
            done = event
    return done
