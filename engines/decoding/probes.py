"""Probe distributions: what a model's next-value distributions look like on typical inputs.

`engines.decoding.collapse` asks whether a decoding config would collapse these distributions
(leave one candidate) before the user runs anything. A probe is a (N, V) array of log-probability
rows, one per position, each the model's distribution of the next value given true inputs
before it (teacher forcing), computed in ONE forward pass per modality:

* text: the next-token distributions over `PROBE_TEXT` (public-domain Shakespeare), the first
  `context_length` tokens of it (one window: one pass);
* PixelCNN: the per-pixel distributions of a few digit-like images (`probe_digits`: strokes
  drawn here, anti-aliased like MNIST) scored in one batch by the full graph, unconditionally;
* NADE / MADE: the per-pixel Bernoulli probabilities of the same digits, binarised, as 2-value
  rows [log p(0), log p(1)].

The models are passed in loaded (duck-typed: `engines.text.model.TextModel`,
`engines.image.model.ImageModel`, `engines.density.model.DensityModel`), so this module imports
no modality and no runtime.

What is kept is what `collapse` needs, made cheap for a check at every edit (< 20 ms): rows are
float32, each sorted in decreasing order (without histories a filter does not care which value
is which, and the filters' argsort is fast on sorted rows), and at most `MAX_PROBE_VALUES`
numbers in all: a larger probe keeps evenly spaced positions (every digit, every region).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from engines.decoding.samplers import log_softmax

# Romeo and Juliet, act 2 scene 2 (public domain), laid out like the Tiny Shakespeare corpus.
PROBE_TEXT = (
    "ROMEO:\n"
    "But, soft! what light through yonder window breaks?\n"
    "It is the east, and Juliet is the sun.\n"
    "Arise, fair sun, and kill the envious moon,\n"
    "Who is already sick and pale with grief,\n"
    "That thou her maid art far more fair than she:\n"
    "Be not her maid, since she is envious;\n"
    "Her vestal livery is but sick and green\n"
    "And none but fools do wear it; cast it off.\n"
)

# Each digit as strokes in a 28 x 28 box (row, col) like MNIST's centred 20 x 20 digits:
# a polyline per stroke, ellipses as (centre row, centre col, radius rows, radius cols).
_DIGIT_STROKES: dict[str, dict[str, list]] = {
    "0": {"ellipses": [(14, 14, 8.0, 5.5)], "lines": []},
    "1": {"ellipses": [], "lines": [[(6, 15), (22, 13)]]},
    "4": {"ellipses": [], "lines": [[(6, 10), (16, 7), (16, 20)], [(7, 17), (22, 17)]]},
    "7": {"ellipses": [], "lines": [[(6, 8), (6, 20), (22, 12)]]},
}
STROKE_HALF_WIDTH = 1.3  # pixels of full ink either side of a stroke's centre line
STROKE_SOFT_EDGE = 1.0  # then ink fades to 0 over this many pixels (MNIST's anti-aliasing)


def _segment_distance(rr: np.ndarray, cc: np.ndarray, a: tuple, b: tuple) -> np.ndarray:
    """Distance (H, W) of every pixel centre to the segment a-b."""
    ar, ac = a
    br, bc = b
    dr, dc = br - ar, bc - ac
    length2 = dr * dr + dc * dc
    t = np.clip(((rr - ar) * dr + (cc - ac) * dc) / max(length2, 1e-9), 0.0, 1.0)
    return np.hypot(rr - (ar + t * dr), cc - (ac + t * dc))


def probe_digits(height: int = 28, width: int = 28) -> np.ndarray:
    """Digit-like images (K, H, W) float64 ink in [0, 1]: '0', '1', '4', '7' drawn as strokes,
    scaled to the image size (written for 28 x 28)."""
    rr, cc = np.meshgrid(np.arange(height) * 28 / height, np.arange(width) * 28 / width, indexing="ij")
    out = []
    for strokes in _DIGIT_STROKES.values():
        dist = np.full((height, width), np.inf)
        for cr, ccen, ar, ac in strokes["ellipses"]:
            # distance to an ellipse, approximated by the radial distance scaled by the mean radius
            radial = np.hypot((rr - cr) / ar, (cc - ccen) / ac)
            dist = np.minimum(dist, np.abs(radial - 1.0) * (ar + ac) / 2)
        for line in strokes["lines"]:
            for a, b in zip(line[:-1], line[1:]):
                dist = np.minimum(dist, _segment_distance(rr, cc, a, b))
        out.append(np.clip((STROKE_HALF_WIDTH + STROKE_SOFT_EDGE - dist) / STROKE_SOFT_EDGE, 0.0, 1.0))
    return np.stack(out)


MAX_PROBE_VALUES = 2**18  # N * V cap: 1024 positions of 256 grey levels, 128 tokens of 2048


def _rows(logits: np.ndarray) -> np.ndarray:
    """Logits (..., V) -> log-probability rows (N, V) float32, each sorted decreasing; at most
    MAX_PROBE_VALUES numbers (evenly spaced positions when there are more)."""
    logits = np.asarray(logits, dtype=np.float64)
    rows = logits.reshape(-1, logits.shape[-1])  # (N, V)
    keep = max(1, MAX_PROBE_VALUES // rows.shape[1])
    if rows.shape[0] > keep:
        rows = rows[np.linspace(0, rows.shape[0] - 1, keep).round().astype(np.int64)]
    return -np.sort(-log_softmax(rows), axis=1).astype(np.float32)


def text_probe(model: Any, text: str = PROBE_TEXT) -> np.ndarray:
    """(N, V): the next-token distribution at every token of `text` (after the start token), one
    forward pass over the first context window."""
    tok = model.tokenizer
    ids = [tok.start_id, *tok.encode(text)][: model.context_length]
    if len(ids) < 2:
        return np.zeros((0, 0), np.float32)
    logits = model.decoder.forward(np.asarray([ids], dtype=np.int64))  # (1, T, V)
    return _rows(logits[0, : len(ids) - 1])  # the last position predicts past the text


def image_probe(model: Any) -> np.ndarray:
    """(N, V): per-dimension distributions of the probe digits under a PixelCNN (no label), one
    batch through the full graph: N = digits * H * W * C."""
    s = model.shape
    ink = probe_digits(s.height, s.width)  # (K, H, W)
    levels = s.levels
    if levels == 2:
        values = (ink >= 0.5).astype(np.float32)
    else:
        values = np.round(ink * (levels - 1)).astype(np.float32)
    pixels = np.repeat(values[:, None], s.channels, axis=1)  # (K, C, H, W) grey on every channel
    raw = model.forward(pixels, model.labels(None, len(pixels)))  # (K, H, W, C, V')
    return _rows(model.distribution_logits(raw))


def density_probe(model: Any) -> np.ndarray:
    """(N, 2): [log p(0), log p(1)] of every pixel of the binarised probe digits under a NADE or
    MADE model (its default ordering), one pass: N = digits * D."""
    ink = probe_digits(model.height, model.width)
    x = (ink >= 0.5).astype(np.float32).reshape(len(ink), -1)  # (K, D)
    logit_one = np.asarray(model.logits(x), dtype=np.float64)  # (K, D)
    two = np.stack([np.zeros_like(logit_one), logit_one], axis=-1)  # logits of values 0 and 1
    return _rows(two)


PROBES = {"text": text_probe, "image": image_probe, "density": density_probe}


def probe_rows(kind: str, model: Any) -> np.ndarray | None:
    """The probe rows (N, V) of a loaded model of `kind`, or None for a kind without a probe (or a
    model with no position to probe, e.g. a context of one token)."""
    probe = PROBES.get(kind)
    rows = None if probe is None else probe(model)
    return rows if rows is not None and rows.shape[0] > 0 else None
