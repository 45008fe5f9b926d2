"""How tokens are coloured: by probability, by GLTR rank bucket, or by entropy (no Qt here).

Each function returns a background colour as '#rrggbb' (light enough for black text), or
None when the record lacks the number (a scored token has no rank): the view then leaves it
uncoloured, with a dotted underline.
"""

from __future__ import annotations

import colorsys
import math

MODES = ("probability", "rank", "entropy")
MODE_LABELS = {"probability": "Probability", "rank": "Rank (GLTR)", "entropy": "Entropy"}

# Probability scale: log10(p) from -4 (red) to 0 (green), as GLTR-like views do: on a linear
# scale nearly every sampled token of a large vocabulary would be the same red.
PROB_FLOOR_LOG10 = -4.0

# GLTR's buckets (Gehrmann et al. 2019): rank among the model's predictions, 1-based.
RANK_BUCKETS = (
    (10, "#b7ecb0", "top 10"),
    (100, "#fbe9a0", "top 100"),
    (1000, "#f6b3ad", "top 1000"),
    (None, "#d9c2f0", "beyond 1000"),
)

# Entropy scale: 0 nats (the model is sure) blue -> ENTROPY_MAX nats (spread out) orange.
ENTROPY_MAX = 5.0


def _hsv(h_deg: float, s: float = 0.38, v: float = 1.0) -> str:
    r, g, b = colorsys.hsv_to_rgb((h_deg % 360) / 360.0, s, v)
    return f"#{round(r * 255):02x}{round(g * 255):02x}{round(b * 255):02x}"


def probability_colour(p: float) -> str:
    """Red (p <= 1e-4) through orange and yellow to green (p = 1)."""
    x = 1.0 if p >= 1 else (0.0 if p <= 0 else (math.log10(p) - PROB_FLOOR_LOG10) / -PROB_FLOOR_LOG10)
    x = min(1.0, max(0.0, x))
    return _hsv(120 * x)


def rank_colour(rank: int | None) -> str | None:
    if rank is None:
        return None
    for limit, colour, _label in RANK_BUCKETS:
        if limit is None or rank <= limit:
            return colour
    return RANK_BUCKETS[-1][1]


_ENTROPY_STOPS = ((0.0, (160, 200, 245)), (0.5, (232, 232, 236)), (1.0, (248, 172, 110)))


def entropy_colour(entropy: float | None) -> str | None:
    """Blue (0 nats: sure) through pale grey to orange (ENTROPY_MAX nats or more: spread out);
    unlike the probability scale, no green, so the two modes are never confused."""
    if entropy is None:
        return None
    x = min(1.0, max(0.0, entropy / ENTROPY_MAX))
    for (x0, c0), (x1, c1) in zip(_ENTROPY_STOPS, _ENTROPY_STOPS[1:]):
        if x <= x1:
            f = (x - x0) / (x1 - x0)
            r, g, b = (round(a + (b_ - a) * f) for a, b_ in zip(c0, c1))
            return f"#{r:02x}{g:02x}{b:02x}"
    return "#%02x%02x%02x" % _ENTROPY_STOPS[-1][1]


def colour_for(record, mode: str) -> str | None:
    if mode == "rank":
        return rank_colour(record.rank)
    if mode == "entropy":
        return entropy_colour(record.entropy)
    return probability_colour(math.exp(record.logprob))


def legend_entries(mode: str) -> list[tuple[str, str]]:
    """(colour, label) pairs for the legend of `mode`."""
    if mode == "rank":
        return [(c, label) for _limit, c, label in RANK_BUCKETS]
    if mode == "entropy":
        return [(entropy_colour(h), f"{h:g}{'+' if h == ENTROPY_MAX else ''} nats")
                for h in (0.0, 1.0, 2.5, ENTROPY_MAX)]
    return [(probability_colour(p), label) for p, label in
            ((1e-4, "p ≤ 0.0001"), (1e-3, "0.001"), (1e-2, "0.01"), (1e-1, "0.1"), (1.0, "1"))]


def legend_caption(mode: str, *, scoring: bool = False) -> str:
    """A short caption before the swatches (the tooltip says more)."""
    if mode == "rank":
        return "Rank:"
    if mode == "entropy":
        return "Entropy:"
    return "Surprise (p):" if scoring else "Probability:"


def legend_tooltip(mode: str, *, scoring: bool = False) -> str:
    if mode == "rank":
        return ("GLTR rank buckets: where the chosen token stood among the model's predictions "
                "(1 = the model's favourite), before any sampler changed them.")
    if mode == "entropy":
        return ("Entropy of the model's distribution at that step, in nats: blue = the model was sure, "
                "orange = it spread its probability over many tokens.")
    return ("Probability the model gave each token (before the sampler chain), on a log scale: "
            + ("red tokens surprised the model, green ones it expected." if scoring
               else "red = unlikely, green = likely."))
