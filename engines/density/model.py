"""A loaded density model (NADE or MADE): its ONNX graphs, what its card says, exact scores.

Both families output one Bernoulli logit per pixel: logit d is the logit of
p(x_d = 1 | the pixels before d in the model's ordering), so one pass gives every
conditional and log p(x) is their sum (exact, no sampling, no bound).

* NADE (`NadeModel`) is trained in raster order only. `model.onnx` gives all D logits in one
  O(DH) pass; `step.onnx` plus `init_a.npy` give one logit in O(H) for sampling
  (see `engines.density.sampling`).
* MADE (`MadeModel`) takes its connectivity masks as graph inputs, so one graph serves every
  ordering. The card lists the M (ordering, mask seed) pairs it was trained over; the masks
  are rebuilt from those numbers with `engines.density.orderings.made_masks`. Its score is the
  mixture of the first K of them: log p(x) = logsumexp_k log p_k(x) - log K (a mixture of
  models, not an average of logits, which would be a different, unnormalised thing).

Shapes: B batch, D = height * width pixels in raster order (d = row * width + col).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from engines.density.orderings import (ORDERING_NAMES, check_ordering, made_masks, make_ordering,
                                       make_ordering_from_spec)
from engines.errors import InputError, ModelLoadError, file_fault
from engines.registry import ModelInfo
from engines.runtime import ModelSession, open_session

FAMILIES = ("nade", "made")
MASK_CACHE_EXTRA = 8  # mask sets kept beyond the training ones (inpainting makes a new ordering per mask)


def log_bernoulli(logits: np.ndarray, x: np.ndarray) -> np.ndarray:
    """log p(x | logit) elementwise in float64: x log sigmoid(l) + (1 - x) log sigmoid(-l), stably."""
    z = np.asarray(logits, dtype=np.float64)
    return -(np.logaddexp(0.0, z) - np.asarray(x, dtype=np.float64) * z)


def check_binary(x: np.ndarray, dims: int, what: str = "x") -> np.ndarray:
    """x as float32 (B, D) after checking its shape and that it only holds 0 and 1."""
    a = np.asarray(x)
    if a.ndim == 1:
        a = a[None, :]
    if a.ndim != 2 or a.shape[1] != dims:
        raise InputError(f"{what} must be (batch, {dims}) binary pixels, got shape {np.asarray(x).shape}")
    if a.size and not np.isin(a, (0, 1)).all():
        raise InputError(f"{what} must hold only 0 and 1 (binary pixels)")
    return np.ascontiguousarray(a, dtype=np.float32)


@dataclass
class DensityModel:
    """What NADE and MADE share; use `load_density_model` to get one."""

    info: ModelInfo
    family: str
    dims: int
    height: int
    width: int
    full: ModelSession
    decoding_defaults: dict[str, Any] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return self.info.id

    @property
    def levels(self) -> int:
        return 2

    @property
    def n_masks(self) -> int:
        return 1

    @property
    def default_k(self) -> int:
        return 1

    @property
    def eval_batch(self) -> int:
        """Images per graph call when scoring a data set (measured fastest on the CPU)."""
        return 100

    def orderings(self) -> list[str]:
        return ["raster"]

    def ordering(self, name: str = "raster", random_seed: int = 0) -> np.ndarray:
        """The permutation (D,) for an ordering name (or "random:<seed>"); InputError when unknown."""
        name = str(name)
        if ":" in name:
            return make_ordering_from_spec(name, self.dims, self.height, self.width)
        return make_ordering(name, self.dims, self.height, self.width, seed=int(random_seed))

    def is_trained_ordering(self, order: np.ndarray) -> bool:
        """Whether the model was trained in this ordering (D,): NADE in raster order only."""
        return bool(np.array_equal(np.asarray(order), np.arange(self.dims)))

    def trained_random_seed(self) -> int | None:
        """The seed of the first random ordering the model was trained in (None: none was)."""
        return None

    def check_k(self, k: int | None) -> int:
        """The ensemble size to use (the card's default when None); InputError outside 1..n_masks."""
        if k is None:
            return self.default_k
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= int(k) <= self.n_masks:
            if self.n_masks == 1:
                raise InputError(f"ensemble K = {k!r} is out of range: {self.family.upper()} model {self.id!r} has a "
                                 "single ordering, so K must be 1 (ensembles are for MADE models)")
            raise InputError(f"ensemble K = {k!r} is out of range: model {self.id!r} has {self.n_masks} masks, "
                             f"so K must be in 1..{self.n_masks}")
        return int(k)

    # --- scores ------------------------------------------------------------------------
    def logits(self, x: np.ndarray, order=None, mask_seed: int | None = None) -> np.ndarray:
        raise NotImplementedError

    def conditionals(self, x: np.ndarray, order=None, mask_seed: int | None = None) -> np.ndarray:
        """log p(x_d | the pixels before d in the ordering) for every pixel: (B, D) float64 nats."""
        x = check_binary(x, self.dims)
        return log_bernoulli(self.logits(x, order, mask_seed), x)

    def log_prob_per_mask(self, x: np.ndarray, k: int | None = None) -> np.ndarray:
        """log p_k(x) under each of the first K mask sets: (K, B) float64 nats."""
        raise NotImplementedError

    def log_prob(self, x: np.ndarray, k: int | None = None) -> np.ndarray:
        """Exact log p(x) (B,) in nats; for MADE the mixture of the first k masks (default: the card's)."""
        per = self.log_prob_per_mask(x, k)  # (K, B)
        if len(per) == 1:
            return per[0]
        return np.logaddexp.reduce(per, axis=0) - np.log(len(per))


@dataclass
class NadeModel(DensityModel):
    hidden: int = 0
    step: ModelSession | None = None
    init_a: np.ndarray | None = None  # (H,) float32: the hidden bias c, where the running pre-activation starts

    @property
    def eval_batch(self) -> int:
        # The full graph holds (B, D, H) tensors (157 MB at B=100, D=784, H=500): small batches stay
        # in cache and ran 2-3x faster per image than B=100 (CPU, 28x28, H=500).
        return 4

    def _raster_only(self, order, mask_seed) -> None:
        if order is None:
            return
        if isinstance(order, str):
            if order == "raster":
                return
            raise InputError(f"NADE model {self.id!r} is trained in raster order only, not {order!r}; "
                             "use a MADE model for other orderings")
        if not np.array_equal(np.asarray(order), np.arange(self.dims)):
            raise InputError(f"NADE model {self.id!r} is trained in raster order only; "
                             "use a MADE model for other orderings")

    def logits(self, x: np.ndarray, order=None, mask_seed: int | None = None) -> np.ndarray:
        """Raw logits (B, D) float32 of p(x_d = 1 | x_<d) in raster order, one pass."""
        self._raster_only(order, mask_seed)
        x = check_binary(x, self.dims)
        return self.full.run({"x": x}, ["logits"])[0]

    def log_prob_per_mask(self, x: np.ndarray, k: int | None = None) -> np.ndarray:
        self.check_k(k)
        return self.conditionals(x).sum(axis=1)[None, :]

    def step_logit(self, a: np.ndarray, x_prev: np.ndarray, prev: int, d: int) -> tuple[np.ndarray, np.ndarray]:
        """One O(H) step: a (B, H), x_prev (B,) value of pixel `prev` -> (a_next (B, H), logit of pixel d (B,))."""
        a_next, logit = self.step.run({
            "a": np.ascontiguousarray(a, dtype=np.float32),
            "x_prev": np.ascontiguousarray(np.asarray(x_prev, dtype=np.float32).reshape(-1, 1)),
            "prev": np.array([prev], dtype=np.int64), "d": np.array([d], dtype=np.int64),
        }, ["a_next", "logit"])
        return a_next, logit[:, 0]


@dataclass
class MadeModel(DensityModel):
    hidden: tuple[int, ...] = ()
    mask_names: tuple[str, ...] = ()  # graph inputs after x, in made_masks order
    trained_orderings: tuple[str, ...] = ()  # the card's spec per training mask
    mask_seeds: tuple[int, ...] = ()
    card_default_k: int = 1
    _orders: list[np.ndarray] = field(default_factory=list, repr=False)
    _masks: "OrderedDict[tuple[bytes, int], list[np.ndarray]]" = field(default_factory=OrderedDict, repr=False)

    @property
    def n_masks(self) -> int:
        return len(self.mask_seeds)

    @property
    def default_k(self) -> int:
        return self.card_default_k

    def orderings(self) -> list[str]:
        return list(ORDERING_NAMES)

    def training_order(self, i: int) -> np.ndarray:
        """The ordering of training mask i (0-based)."""
        return self._orders[i]

    def is_trained_ordering(self, order: np.ndarray) -> bool:
        """Whether one of the card's training mask sets used this ordering (D,)."""
        order = np.asarray(order)
        return any(np.array_equal(o, order) for o in self._orders)

    def trained_random_seed(self) -> int | None:
        """The seed of the first ``random:<seed>`` ordering of the card (what `--ordering random` means)."""
        for spec in self.trained_orderings:
            name, sep, seed = str(spec).partition(":")
            if name == "random":
                try:
                    return int(seed) if sep else 0
                except ValueError:
                    continue
        return None

    def mask_seed_for(self, order: np.ndarray) -> int:
        """The connectivity seed to pair with `order`: the one it was trained with when it is one of
        the card's orderings (the first match), else the first training seed (still exact)."""
        order = np.asarray(order)
        for o, seed in zip(self._orders, self.mask_seeds):
            if np.array_equal(o, order):
                return seed
        return self.mask_seeds[0]

    def resolve(self, order=None, mask_seed: int | None = None) -> tuple[np.ndarray, int]:
        """(order (D,), mask seed): None = the first training mask; a name/spec or a permutation."""
        if order is None:
            order_arr = self._orders[0]
            seed = self.mask_seeds[0] if mask_seed is None else mask_seed
            return order_arr, int(seed)
        order_arr = self.ordering(order) if isinstance(order, str) else check_ordering(order, self.dims)
        seed = self.mask_seed_for(order_arr) if mask_seed is None else mask_seed
        return order_arr, int(seed)

    def masks(self, order: np.ndarray, mask_seed: int) -> list[np.ndarray]:
        """The float32 mask set for (order, seed). Every training set (an ensemble reuses them on every
        batch) plus a few more are cached as uint8 (masks are 0/1): 1.6 MB per set at D=784,
        H=500,500 and 3.2 MB at 1000,1000, a quarter of float32; building a set costs ~50-100 ms,
        converting a cached one ~2 ms."""
        key = (np.asarray(order, dtype=np.int64).tobytes(), int(mask_seed))
        got = self._masks.get(key)
        if got is None:
            got = [np.ascontiguousarray(m, dtype=np.uint8) for m in made_masks(order, self.hidden, int(mask_seed))]
            self._masks[key] = got
            while len(self._masks) > self.n_masks + MASK_CACHE_EXTRA:
                self._masks.popitem(last=False)
        else:
            self._masks.move_to_end(key)
        return [m.astype(np.float32) for m in got]

    def logits(self, x: np.ndarray, order=None, mask_seed: int | None = None) -> np.ndarray:
        """Raw logits (B, D) float32 under one (ordering, seed) mask set (default: training mask 0)."""
        x = check_binary(x, self.dims)
        order_arr, seed = self.resolve(order, mask_seed)
        masks = self.masks(order_arr, seed)
        return self.full.run({"x": x, **dict(zip(self.mask_names, masks))}, ["logits"])[0]

    def log_prob_per_mask(self, x: np.ndarray, k: int | None = None) -> np.ndarray:
        k = self.check_k(k)
        x = check_binary(x, self.dims)
        return np.stack([log_bernoulli(self.logits(x, self._orders[i], self.mask_seeds[i]), x).sum(axis=1)
                         for i in range(k)])


def _int(value: Any, what: str, info: ModelInfo) -> int:
    if isinstance(value, bool):
        raise ModelLoadError(f"{info.path / 'card.json'}: {what} must be a whole number, got {value!r}")
    try:
        return int(value)
    except (TypeError, ValueError) as exc:
        raise ModelLoadError(f"{info.path / 'card.json'}: {what} must be a whole number, got {value!r}") from exc


def _session(info: ModelInfo, role: str, threads: int | None) -> ModelSession:
    spec = (info.card.get("io") or {}).get(role, {})
    return open_session(info.file(role), expect_inputs=spec.get("inputs"), expect_outputs=spec.get("outputs"),
                        intra_op_threads=threads)


def _check_width(session: ModelSession, name: str, want: int, axis: int = 1) -> None:
    for i in session.session.get_inputs():
        if i.name == name:
            dims = i.shape
            if len(dims) <= axis or (isinstance(dims[axis], int) and dims[axis] != want):
                raise ModelLoadError(f"{session.path}: input {name!r} has shape {dims}, the card says {want} on axis {axis}")


def load_density_model(info: ModelInfo, threads: int | None = 1) -> DensityModel:
    """Open the graphs named in a density card; `threads` is for the full graph (NADE's step uses 1)."""
    card = info.card
    card_path = info.path / "card.json"
    arch = card.get("architecture") or {}
    family = arch.get("family")
    if family not in FAMILIES:
        raise ModelLoadError(f"{card_path}: architecture.family {family!r} is not one of {', '.join(FAMILIES)}")
    image = card.get("image") or {}
    dims = _int(arch.get("dims"), "architecture.dims", info)
    height = _int(image.get("height", 28), "image.height", info)
    width = _int(image.get("width", 28), "image.width", info)
    if height * width != dims or image.get("channels", 1) != 1 or image.get("levels", 2) != 2:
        raise ModelLoadError(f"{card_path}: a density model needs a one-channel binary image of height x width = "
                             f"dims; the card says {height}x{width}, {image.get('channels', 1)} channel(s), "
                             f"{image.get('levels', 2)} levels, dims {dims}")
    defaults = dict(card.get("decoding_defaults", {}) or {})
    full = _session(info, "model", threads)
    _check_width(full, "x", dims)
    if family == "nade":
        hidden = _int(arch.get("hidden"), "architecture.hidden", info)
        if arch.get("ordering", "raster") != "raster":
            raise ModelLoadError(f"{card_path}: NADE models are raster-order only, the card says {arch.get('ordering')!r}")
        step = _session(info, "step", 1)
        init_path = info.file("init_a")
        try:
            init_a = np.load(init_path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"{init_path}: cannot read the initial hidden state: {file_fault(exc)}") from exc
        if init_a.shape != (hidden,):
            raise ModelLoadError(f"{init_path}: shape {init_a.shape}, expected ({hidden},) (architecture.hidden)")
        return NadeModel(info, "nade", dims, height, width, full, defaults, hidden=hidden, step=step,
                         init_a=np.ascontiguousarray(init_a, dtype=np.float32))
    hidden_list = arch.get("hidden")
    if not isinstance(hidden_list, (list, tuple)) or not hidden_list:
        raise ModelLoadError(f"{card_path}: architecture.hidden must be a list of layer sizes, got {hidden_list!r}")
    hidden_t = tuple(_int(h, "architecture.hidden", info) for h in hidden_list)
    seeds = arch.get("mask_seeds") or []
    specs = arch.get("orderings") or []
    n_masks = _int(arch.get("n_masks", len(seeds)), "architecture.n_masks", info)
    if n_masks < 1 or len(seeds) != n_masks or len(specs) != n_masks:
        raise ModelLoadError(f"{card_path}: architecture.n_masks = {n_masks} but {len(seeds)} mask_seeds and "
                             f"{len(specs)} orderings are listed; they must agree (and be >= 1)")
    default_k = _int(arch.get("default_k", n_masks), "architecture.default_k", info)
    if not 1 <= default_k <= n_masks:
        raise ModelLoadError(f"{card_path}: architecture.default_k = {default_k} is outside 1..{n_masks}")
    try:
        orders = [make_ordering_from_spec(s, dims, height, width) for s in specs]
    except InputError as exc:
        raise ModelLoadError(f"{card_path}: {exc}") from exc
    mask_names = tuple(f"mask{i}" for i in range(len(hidden_t) + 1)) + ("mask_direct",)
    missing = [n for n in ("x", *mask_names) if n not in full.input_names]
    if missing:
        raise ModelLoadError(f"{full.path}: lacks input(s) {', '.join(missing)} for a MADE with "
                             f"{len(hidden_t)} hidden layers")
    return MadeModel(info, "made", dims, height, width, full, defaults, hidden=hidden_t, mask_names=mask_names,
                     trained_orderings=tuple(str(s) for s in specs),
                     mask_seeds=tuple(_int(s, "architecture.mask_seeds", info) for s in seeds),
                     card_default_k=default_k, _orders=orders)
