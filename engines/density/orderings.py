"""Pixel orderings and MADE connectivity masks (numpy only: used by training, export and the engine).

An *ordering* is a permutation ``order`` of the D pixel indices (raster index d = row * W + col):
``order[k]`` is the pixel generated k-th, so the model factors p(x) = prod_k p(x_order[k] |
x_order[<k]). NADE is trained in raster order only; MADE is trained over a set of
(ordering, mask seed) pairs, and any ordering can be turned into MADE masks with `made_masks`
(exact for every ordering; good only for orderings like those it was trained on).

`known_first_ordering` is what makes MADE inpainting exact: with every known pixel placed
before every unknown one, the product of the conditionals of the unknown pixels is exactly
p(unknown | known), whatever the shape of the known set.

The masks are a pure function of (order, hidden sizes, seed), so the studio, the exporter and
the trainer rebuild identical masks from the few numbers stored in a model card.
"""

from __future__ import annotations

import numpy as np

from engines.errors import InputError

ORDERING_NAMES = ("raster", "reverse", "column", "random")


def make_ordering(name: str, dims: int = 784, height: int = 28, width: int = 28, seed: int = 0) -> np.ndarray:
    """The permutation (dims,) int64 for ordering `name`: order[k] = raster index of the k-th pixel.

    * ``raster``: row by row, left to right (0, 1, ..., D-1);
    * ``reverse``: raster backwards (bottom-right pixel first);
    * ``column``: column by column, top to bottom (needs height * width == dims);
    * ``random``: a uniformly random permutation drawn from ``np.random.default_rng(seed)``.
    """
    if dims < 1:
        raise InputError(f"an ordering needs at least one pixel, got dims={dims}")
    if name == "raster":
        return np.arange(dims, dtype=np.int64)
    if name == "reverse":
        return np.arange(dims - 1, -1, -1, dtype=np.int64)
    if name == "column":
        if height * width != dims:
            raise InputError(f"column ordering: {height} x {width} image does not have {dims} pixels")
        return np.arange(dims, dtype=np.int64).reshape(height, width).T.reshape(-1).copy()
    if name == "random":
        return np.random.default_rng(seed).permutation(dims).astype(np.int64)
    raise InputError(f"unknown ordering {name!r}; choose one of {', '.join(ORDERING_NAMES)}")


def make_ordering_from_spec(spec: str, dims: int = 784, height: int = 28, width: int = 28) -> np.ndarray:
    """An ordering from a card's spec string: a name of ORDERING_NAMES, or ``random:<seed>``."""
    name, sep, seed_text = str(spec).partition(":")
    seed = 0
    if sep:
        if name != "random":
            raise InputError(f"ordering spec {spec!r}: only 'random' takes a seed (random:<seed>)")
        try:
            seed = int(seed_text)
        except ValueError:
            raise InputError(f"ordering spec {spec!r}: the seed after 'random:' must be an integer") from None
    return make_ordering(name, dims=dims, height=height, width=width, seed=seed)


def check_ordering(order: np.ndarray, dims: int | None = None) -> np.ndarray:
    """`order` as int64 after checking that it is a permutation of 0..D-1 (InputError otherwise)."""
    order = np.asarray(order)
    if order.ndim != 1 or (dims is not None and len(order) != dims):
        raise InputError(f"an ordering must be a 1-D permutation of {dims or 'D'} pixels, got shape {order.shape}")
    if not np.array_equal(np.sort(order), np.arange(len(order))):
        raise InputError("the ordering is not a permutation of the pixel indices")
    return order.astype(np.int64)


def positions(order: np.ndarray) -> np.ndarray:
    """Inverse permutation (D,) int64: positions(order)[d] = k where order[k] = d."""
    order = np.asarray(order)
    pos = np.empty(len(order), dtype=np.int64)
    pos[order] = np.arange(len(order), dtype=np.int64)
    return pos


def known_first_ordering(known: np.ndarray, base_order: np.ndarray) -> np.ndarray:
    """All known pixels first, then the unknown ones; each group keeps base_order's relative order.

    known: (D,) bool, True = the pixel's value is given. base_order: (D,) permutation.
    """
    known = np.asarray(known, dtype=bool)
    base = check_ordering(base_order, len(known))
    if known.ndim != 1:
        raise InputError(f"the known-pixel mask must be 1-D, got shape {known.shape}")
    k = known[base]  # (D,) known flag in base order
    return np.concatenate([base[k], base[~k]]).astype(np.int64)


def made_masks(order: np.ndarray, hidden: tuple[int, ...], seed: int) -> list[np.ndarray]:
    """MADE masks (Germain et al. 2015) for `order`, as float32 (in, out) matrices for ``x @ (W * M)``.

    Degrees: input/output unit d has degree m0[d] = its position in `order` (0..D-1); the units
    of hidden layer l get degrees drawn uniformly in [min(degrees of layer l-1), D-2] from
    ``np.random.default_rng(seed)`` (layer by layer), so no hidden unit is useless. A hidden unit
    of degree m may see inputs of degree <= m; output d may see hidden units of degree < m0[d].
    Returns len(hidden) + 1 layer masks (D, H1), (H1, H2), ..., (HL, D), then the mask (D, D) of
    the direct input -> output connection (input j feeds output d iff m0[j] < m0[d]).
    """
    order = check_ordering(order)
    dims = len(order)
    if dims < 2:
        raise InputError(f"MADE needs at least 2 dimensions, got {dims}")
    hidden = tuple(int(h) for h in hidden)
    if not hidden or min(hidden) < 1:
        raise InputError(f"MADE needs at least one hidden layer of positive size, got {hidden}")
    rng = np.random.default_rng(seed)
    m0 = positions(order)  # (D,)
    degrees = [m0]
    for size in hidden:
        low = int(degrees[-1].min())
        degrees.append(rng.integers(low, dims - 1, size=size))  # uniform in [low, D-2]
    masks = [(degrees[i + 1][None, :] >= degrees[i][:, None]).astype(np.float32) for i in range(len(hidden))]
    masks.append((m0[None, :] > degrees[-1][:, None]).astype(np.float32))  # (HL, D) strict
    masks.append((m0[None, :] > m0[:, None]).astype(np.float32))  # (D, D) direct, strict
    return masks
