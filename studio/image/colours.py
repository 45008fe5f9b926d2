"""The likelihood heatmap's colour map (no Qt here): per-pixel surprise, -log2 p, in bits.

Inferno-like: black (the model expected the pixel) through purple and orange to pale
yellow (it was surprised). Perceptually ordered and readable in grey print.
"""

from __future__ import annotations

import numpy as np

# matplotlib's "inferno" sampled at 0, 1/8, ..., 1
_STOPS = np.array([
    (0, 0, 4), (31, 12, 72), (85, 15, 109), (136, 34, 106), (186, 54, 85),
    (227, 89, 51), (249, 140, 10), (249, 201, 50), (252, 255, 164),
], dtype=np.float64)


def heat_rgb(values: np.ndarray, vmax: float) -> np.ndarray:
    """values (...) >= 0 on the scale 0..vmax -> (..., 3) uint8 colours (above vmax: the top colour)."""
    x = np.clip(np.nan_to_num(np.asarray(values, np.float64), nan=0.0) / max(vmax, 1e-12), 0.0, 1.0)
    pos = x * (len(_STOPS) - 1)
    i = np.minimum(pos.astype(int), len(_STOPS) - 2)
    f = (pos - i)[..., None]
    return np.round(_STOPS[i] * (1 - f) + _STOPS[i + 1] * f).astype(np.uint8)


def heat_hex(value: float, vmax: float) -> str:
    r, g, b = heat_rgb(np.array([value]), vmax)[0]
    return f"#{r:02x}{g:02x}{b:02x}"


def nice_vmax(nll_bits: np.ndarray) -> float:
    """The top of the heatmap's scale: the largest surprise in the image, but at least 1 bit,
    rounded up to a whole number of bits so the legend reads cleanly."""
    top = float(np.max(nll_bits)) if np.size(nll_bits) else 0.0
    return float(max(1.0, np.ceil(top)))
