"""Pixel-by-pixel sampling, completion / inpainting, posterior-aware resampling and scoring.

Sampling runs in raster order (row by row, left to right, and R -> G -> B inside a colour
pixel). Each sampled value is streamed as a `PixelEvent` (position, value, its probability
and the full distribution). Two ways of getting the distribution of the next value give
the same numbers (up to float rounding) and therefore the same samples for the same seed:

* naive: the whole network on the whole image, once per sampled value
  (H * W * C full forward passes for a full image);
* fast (Fast PixelCNN++-style caches): the vertical stack once per row (`row_step`, from
  cached features of the rows above), the horizontal stack and head once per pixel
  (`pixel_step`, from cached features of the pixels to the left). Only what a new pixel
  can change is computed.

Both run the same loop and the same sampler chain (`engines.decoding`): one seeded
`rng.random(B)` per sampled value, whichever path produced the logits.

Classifier-free guidance (`guidance` w > 0, label-conditioned models trained with label
dropout): every step runs the label and "no label" together as one batch of 2B rows over the
same image, and the sampler chain gets, per value,

    log p_cond + w (log p_cond - log p_uncond)      (renormalised by the chain's softmax)

so w = 0 is plain sampling. The reported log-probabilities stay those of the unguided
conditional model: guidance buys fidelity to the label at the price of likelihood, visibly.

Completion / inpainting: `mask` (H, W) bool, True = regenerate. Known pixels are kept
exactly; masked pixels are sampled in raster order, so they see the known pixels above and
to the left but not those below / to the right. `posterior_resample` corrects for that:
draw K candidates, weight each by the likelihood of the known pixels that follow the first
masked pixel, and resample one (sampling-importance-resampling).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np

from engines.decoding import build_chain
from engines.decoding.config import DecodingConfig
from engines.decoding.samplers import log_softmax
from engines.decoding.support import check_supported
from engines.errors import InputError
from engines.generation import draw_step
from engines.image.model import ImageModel

METHODS = ("fast", "naive")
MAX_GUIDANCE = 20.0  # w beyond this only sharpens toward the label's mode; more is a typo


def card_guidance(card: dict) -> float:
    """The guidance a model's card says it starts with (`guidance_default`); 0 when absent or not a
    number in range (a card is the user's file: a bad value must not break sampling)."""
    value = card.get("guidance_default", 0.0) if isinstance(card, dict) else 0.0
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    return float(value) if ok and 0 <= value <= MAX_GUIDANCE else 0.0


def check_guidance(model: ImageModel, guidance, label: int | None) -> float:
    """The guidance weight as a float; InputError when it is not a number in 0..MAX_GUIDANCE, or when
    it is asked of a model with no label to guide toward."""
    if isinstance(guidance, bool) or not isinstance(guidance, (int, float)) or not math.isfinite(guidance) \
            or not 0 <= guidance <= MAX_GUIDANCE:
        raise InputError(f"guidance = {guidance!r} is invalid: must be a number in 0..{MAX_GUIDANCE:g} (0 is off)")
    if guidance > 0 and model.n_classes == 0:
        raise InputError(f"guidance needs a label-conditioned model; {model.id!r} is unconditional "
                         "(leave --guidance out)")
    if guidance > 0 and label is None:
        raise InputError("guidance pushes samples toward a label: give --label D too (or leave --guidance out)")
    return float(guidance)
LN2 = math.log(2)


@dataclass(frozen=True)
class PixelEvent:
    index: int  # 0-based index of this value among the sampled ones
    row: int
    col: int
    channel: int  # 0 for grey; 0 R, 1 G, 2 B for colour
    values: np.ndarray  # (B,) chosen value per batch row
    logprobs: np.ndarray  # (B,) log p(value | everything before) under the raw model, nats
    probs: np.ndarray | None  # (B, V) the model's own distribution (None when not asked for)
    probs_sampled: np.ndarray | None  # (B, V) the distribution after the sampler chain (temperature, ...)

    @property
    def value(self) -> int:
        return int(self.values[0])

    @property
    def probability(self) -> float:
        return float(np.exp(self.logprobs[0]))


def check_config(config: DecodingConfig, card: dict | None = None) -> None:
    """Refuse decoding settings that have no meaning for images (beam search, the penalties): the
    declaration of what each modality supports is `engines.decoding.support`, shared with the panel."""
    check_supported(config, "image", card)


def check_mask(model: ImageModel, mask: np.ndarray | None) -> np.ndarray:
    """The (H, W) bool mask to sample (all True when None); InputError when empty or mis-sized."""
    s = model.shape
    if mask is None:
        return np.ones((s.height, s.width), dtype=bool)
    mask = np.asarray(mask).astype(bool)
    if mask.shape != (s.height, s.width):
        raise InputError(f"the mask is {mask.shape[1]}x{mask.shape[0]} but the model's images are {s.width}x{s.height}")
    if not mask.any():
        raise InputError("the mask has no white pixels: there is nothing to regenerate")
    return mask


def check_pixels(model: ImageModel, pixels: np.ndarray, what: str = "the image") -> np.ndarray:
    """(C, H, W) or (B, C, H, W) integer values in range, as float32 (B, C, H, W)."""
    s = model.shape
    x = np.asarray(pixels)
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4 or x.shape[1:] != (s.channels, s.height, s.width):
        raise InputError(f"{what} has shape {tuple(np.shape(pixels))}; the model needs "
                         f"{s.channels}x{s.height}x{s.width} values")
    if x.size and (not np.all(np.isfinite(x)) or x.min() < 0 or x.max() > s.levels - 1 or np.any(x != np.round(x))):
        raise InputError(f"{what} must hold whole values in 0..{s.levels - 1}")
    return x.astype(np.float32)


# --- ways of getting the next distribution ----------------------------------------------

class _Naive:
    """The whole network on the whole image for every sampled value."""

    def __init__(self, model: ImageModel, labels: np.ndarray):
        self.model, self.labels = model, labels

    def start_row(self, img: np.ndarray, r: int) -> None:
        pass

    def logits(self, img: np.ndarray, r: int, c: int, ch: int) -> np.ndarray:
        return self.model.forward(img, self.labels)[:, r, c, ch]  # (B, V')

    def known(self, img: np.ndarray, r: int, c: int) -> None:
        pass

    def commit(self, img: np.ndarray, r: int, c: int) -> None:
        pass


class _Fast:
    """Row step once per row, pixel step once per pixel (per channel for colour), with caches."""

    def __init__(self, model: ImageModel, labels: np.ndarray):
        if not model.has_fast_path:
            raise InputError(f"model {model.id!r} has no row_step/pixel_step graphs: use the naive sampler")
        s = model.shape
        self.model, self.labels, self.s = model, labels, s
        B = len(labels)
        self.vwin = np.zeros((B, s.n_layers - 1, s.n_filters, s.vertical_window, s.width), np.float32)
        self.row_sess, self.pixel_sess = model.row_step.session, model.pixel_step.session
        self._hcol = None

    def start_row(self, img: np.ndarray, r: int) -> None:
        s = self.s
        B = img.shape[0]
        xwin = np.zeros((B, s.channels, s.row_window, s.width), np.float32)  # rows r-row_window..r-1
        lo = max(0, r - s.row_window)
        if r > lo:
            xwin[:, :, s.row_window - (r - lo):] = img[:, :, lo:r]
        link, vrow = self.row_sess.run(["link", "vrow"], {"xwin": xwin, "vwin": self.vwin, "label": self.labels})
        if s.vertical_window > 1:
            self.vwin = np.concatenate([self.vwin[:, :, :, 1:], vrow[:, :, :, None]], axis=3)
        else:
            self.vwin = np.ascontiguousarray(vrow[:, :, :, None])
        self.link = np.ascontiguousarray(link.transpose(3, 0, 1, 2))  # (W, B, L, 2F)
        # image row r with pixel_window-1 zero columns on the left
        self.xrow = np.zeros((B, s.channels, s.width + s.pixel_window - 1), np.float32)
        self.xrow[:, :, s.pixel_window - 1:] = img[:, :, r]
        self.hwin = np.zeros((B, s.n_layers - 1, s.n_filters, s.horizontal_window), np.float32)

    def _run(self, c: int) -> np.ndarray:
        xwin = np.ascontiguousarray(self.xrow[:, :, c:c + self.s.pixel_window])
        logits, self._hcol = self.pixel_sess.run(["logits", "hcol"], {"xwin": xwin, "hwin": self.hwin, "link": self.link[c]})
        return logits

    def logits(self, img: np.ndarray, r: int, c: int, ch: int) -> np.ndarray:
        if ch > 0:  # the channels sampled so far of this pixel
            self.xrow[:, :ch, self.s.pixel_window - 1 + c] = img[:, :ch, r, c]
        return self._run(c)[:, ch]  # (B, V')

    def known(self, img: np.ndarray, r: int, c: int) -> None:
        self._run(c)
        self._push()

    def commit(self, img: np.ndarray, r: int, c: int) -> None:
        self.xrow[:, :, self.s.pixel_window - 1 + c] = img[:, :, r, c]
        self._push()

    def _push(self) -> None:
        if self.s.horizontal_window > 1:
            self.hwin = np.concatenate([self.hwin[..., 1:], self._hcol[..., None]], axis=-1)
        else:
            self.hwin = self._hcol[..., None]


# --- the sampling loop ---------------------------------------------------------------------

class PixelSampler:
    """Samples the masked pixels of a batch of images in raster order.

    `steps()` yields one PixelEvent per sampled value; afterwards `images` (B, C, H, W)
    uint8 holds the results and `sampled_logprobs` (B,) the sum of the sampled values'
    log-probabilities (the known pixels are not included: see `score_images`).
    """

    def __init__(self, model: ImageModel, config: DecodingConfig, seed: int, *, label: int | None = None,
                 init: np.ndarray | None = None, mask: np.ndarray | None = None, batch: int = 1,
                 method: str = "fast", distributions: bool = True, guidance: float = 0.0):
        check_config(config)
        self.guidance = check_guidance(model, guidance, label)
        if method not in METHODS:
            raise InputError(f"method {method!r} is not one of {', '.join(METHODS)}")
        if not isinstance(batch, int) or batch < 1:
            raise InputError(f"batch = {batch!r} is invalid: must be a whole number >= 1")
        s = model.shape
        self.model, self.config, self.seed, self.method = model, config, seed, method
        self.labels = model.labels(label, batch)
        self.label = label
        if init is None:
            if mask is not None:
                raise InputError("a mask needs an initial image (--init) whose unmasked pixels are kept")
            img = np.zeros((batch, s.channels, s.height, s.width), np.float32)
        else:
            if mask is None:
                raise InputError("an initial image needs a mask (white = regenerate) saying which pixels to sample")
            img = check_pixels(model, init, "the initial image")
            img = np.repeat(img, batch, axis=0) if img.shape[0] == 1 else img.copy()
            if img.shape[0] != batch:
                raise InputError(f"{img.shape[0]} initial images for a batch of {batch}")
        self.mask = check_mask(model, mask)
        img[:, :, self.mask] = 0.0  # masked pixels start empty (the model never looks at them before their turn)
        self.image = img
        self.distributions = distributions
        self.sampled_logprobs = np.zeros(batch)
        self.n_sampled = int(self.mask.sum()) * s.channels
        self.finished = False

    @property
    def images(self) -> np.ndarray:
        return self.image.astype(np.uint8)

    def steps(self, should_stop: Callable[[], bool] | None = None) -> Iterator[PixelEvent]:
        model, s = self.model, self.model.shape
        img, mask = self.image, self.mask
        B = img.shape[0]
        chain = build_chain(self.config, self.seed)
        histories: list[list[int]] = [[] for _ in range(B)]  # images use no penalties (check_config)
        w = self.guidance
        labels = self.labels
        if w > 0:  # rows B..2B-1: the same images with no label (one batched call per step, not two)
            labels = np.concatenate([labels, model.labels(None, B)])
            img = np.concatenate([img, img])
            self.image = img[:B]  # a view: readers of `images` see each value as it is drawn
        oracle = _Fast(model, labels) if self.method == "fast" else _Naive(model, labels)
        rows = np.flatnonzero(mask.any(axis=1))
        last_row = int(rows[-1])
        index = 0
        for r in range(last_row + 1):
            oracle.start_row(img, r)
            cols = np.flatnonzero(mask[r])
            if cols.size == 0:
                continue
            for c in range(int(cols[-1]) + 1):
                if not mask[r, c]:
                    oracle.known(img, r, c)
                    continue
                for ch in range(s.channels):
                    if should_stop is not None and should_stop():
                        return
                    logits = model.distribution_logits(oracle.logits(img, r, c, ch))  # (B or 2B, V)
                    own = log_softmax(logits[:B])  # (B, V) the (conditional) model's own distribution
                    if w > 0:
                        logits = own + w * (own - log_softmax(logits[B:]))
                    values, processed = draw_step(chain, logits, histories)  # (B,), (B, V)
                    chain.accept(values)
                    img[:, ch, r, c] = np.tile(values, img.shape[0] // B)
                    lps = own[np.arange(B), values]
                    self.sampled_logprobs += lps
                    yield PixelEvent(
                        index=index, row=r, col=c, channel=ch, values=values, logprobs=lps,
                        probs=np.exp(own) if self.distributions else None,
                        probs_sampled=np.exp(log_softmax(processed)) if self.distributions else None,
                    )
                    index += 1
                oracle.commit(img, r, c)
        self.finished = True

    def run(self, should_stop: Callable[[], bool] | None = None) -> "PixelSampler":
        for _ in self.steps(should_stop):
            pass
        return self


# --- scoring ---------------------------------------------------------------------------------

@dataclass
class ImageScore:
    logprobs: np.ndarray  # (C, H, W) log p(x_i | x_<i), nats
    label: int | None

    @property
    def logprob_map(self) -> np.ndarray:
        """(H, W): log-probability of each pixel (its channels summed)."""
        return self.logprobs.sum(axis=0)

    @property
    def total(self) -> float:
        return float(self.logprobs.sum())

    @property
    def n(self) -> int:
        return int(self.logprobs.size)

    @property
    def bits_per_dim(self) -> float:
        return -self.total / LN2 / self.n


def score_images(model: ImageModel, pixels: np.ndarray, label: int | None = None,
                 labels: np.ndarray | None = None, batch_size: int = 100) -> np.ndarray:
    """Exact per-dimension log-probabilities (B, C, H, W) of images (B, C, H, W); one full forward per batch."""
    x = check_pixels(model, pixels)
    lab = model.labels(label, len(x)) if labels is None else np.asarray(labels, dtype=np.int64)
    out = [model.log_probs(x[i:i + batch_size], lab[i:i + batch_size]) for i in range(0, len(x), batch_size)]
    return np.concatenate(out, axis=0) if out else np.zeros((0,) + x.shape[1:])


def score_image(model: ImageModel, pixels: np.ndarray, label: int | None = None) -> ImageScore:
    """log p(image) exactly, with the per-pixel map; `pixels` (C, H, W) or (1, C, H, W)."""
    x = check_pixels(model, pixels)
    if x.shape[0] != 1:
        raise InputError(f"score_image takes one image, got {x.shape[0]}")
    return ImageScore(score_images(model, x, label)[0], label)


# --- posterior-aware completion ----------------------------------------------------------------

@dataclass
class PosteriorResult:
    image: np.ndarray  # (C, H, W) uint8: the chosen candidate
    chosen: int  # its index among the candidates
    candidates: np.ndarray  # (K, C, H, W) uint8
    known_after_logprobs: np.ndarray  # (K,) log p(known pixels after the first masked one | the rest before them)
    weights: np.ndarray  # (K,) resampling probabilities
    log_evidence: float  # log mean exp(known_after_logprobs): estimates log p(known after | known before)
    effective_sample_size: float  # 1 / sum(w^2)
    n_known_after: int  # how many known dimensions were scored
    sampled_logprobs: np.ndarray  # (K,) sum of log p of each candidate's sampled values
    total_logprobs: np.ndarray  # (K,) log p(candidate image), exact


def known_after(mask: np.ndarray) -> np.ndarray:
    """(H, W) bool: known pixels (mask False) that come after the first masked pixel in raster order."""
    flat = mask.reshape(-1)
    first = int(np.argmax(flat))
    after = np.zeros_like(flat)
    after[first + 1:] = ~flat[first + 1:]
    return after.reshape(mask.shape)


def posterior_resample(model: ImageModel, candidates: np.ndarray, mask: np.ndarray, seed: int,
                       label: int | None = None, sampled_logprobs: np.ndarray | None = None) -> PosteriorResult:
    """Pick one of K raster-order completions in proportion to the likelihood of the known pixels after the mask.

    With candidates drawn from the model's own conditionals (temperature 1, no filters) the
    chosen one is an approximate sample of p(masked | all known pixels), exact as K grows.
    """
    cand = check_pixels(model, candidates, "the candidates")
    K = len(cand)
    lp = score_images(model, cand, label)  # (K, C, H, W)
    after = known_after(np.asarray(mask, bool))
    ll = lp[:, :, after].reshape(K, -1).sum(axis=1)  # (K,)
    m = ll.max()
    w = np.exp(ll - m)
    w /= w.sum()
    rng = np.random.default_rng([int(seed), 0x5EED])
    chosen = int(rng.choice(K, p=w))
    return PosteriorResult(
        image=cand[chosen].astype(np.uint8), chosen=chosen, candidates=cand.astype(np.uint8),
        known_after_logprobs=ll, weights=w, log_evidence=float(m + np.log(np.exp(ll - m).mean())),
        effective_sample_size=float(1.0 / np.sum(w * w)), n_known_after=int(after.sum()) * model.shape.channels,
        sampled_logprobs=np.zeros(K) if sampled_logprobs is None else np.asarray(sampled_logprobs, float),
        total_logprobs=lp.reshape(K, -1).sum(axis=1),
    )
