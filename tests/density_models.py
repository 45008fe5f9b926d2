"""Tiny random NADE and MADE models (and their exported folders) for the density tests.

The weights are random but spread out, so every allowed dependency really shows in the
outputs (a test of "x_i does not depend on x_j" is only meaningful if other pixels do).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tests.torch_models import spread_out


def make_nade(dims: int = 8, hidden: int = 6, seed: int = 0, noise: float = 0.5):
    from engines.training.nade import NADE

    return spread_out(lambda: NADE(dims=dims, hidden=hidden), seed, noise)


def make_made(dims: int = 9, hidden=(12, 10), seed: int = 0, noise: float = 0.5):
    from engines.training.made import MADE

    return spread_out(lambda: MADE(dims=dims, hidden=hidden), seed, noise)


def mask_set(model, spec: str = "raster", seed: int = 0, height: int = 3, width: int = 3):
    """made_masks of (ordering spec, seed) for `model`, as float32 numpy arrays."""
    from engines.density.orderings import made_masks, make_ordering_from_spec

    return made_masks(make_ordering_from_spec(spec, model.dims, height, width), model.hidden, seed)


def all_binary(dims: int) -> np.ndarray:
    """Every binary vector of length `dims`, (2**dims, dims) float32."""
    codes = np.arange(2 ** dims)[:, None]
    return ((codes >> np.arange(dims)[None, :]) & 1).astype(np.float32)


def export_nade_dir(model, root: Path, model_id: str = "tiny-nade", meta: dict | None = None,
                    height: int | None = None, width: int | None = None) -> Path:
    """Export a NADE model folder; `height` x `width` (default 1 x dims) is the image it models."""
    from engines.training.export_density import export_nade

    folder = Path(root) / model_id
    base = {"command": "test", "iter": 0}
    if meta is None:
        base["data"] = {"height": height or 1, "width": width or model.dims}
    export_nade(model, folder, {**base, **(meta or {})})
    return folder


def export_made_dir(model, root: Path, model_id: str = "tiny-made", orderings=("raster", "random:1", "column"),
                    height: int = 3, width: int = 3, meta: dict | None = None) -> Path:
    """Export with a card listing `orderings` (mask seeds 0, 1, ...) for a height x width image."""
    from engines.training.export_density import export_made

    folder = Path(root) / model_id
    made = {"n_masks": len(orderings), "mask_seeds": list(range(len(orderings))), "orderings": list(orderings),
            "default_k": len(orderings)}
    export_made(model, folder, {"command": "test", "iter": 0, "made": made,
                                "data": {"height": height, "width": width}, **(meta or {})})
    return folder
