"""Would a decoding config collapse a model's distributions? Said before the run, not after.

Nucleus sampling at top-p 0.9 suits text, but a PixelCNN's background pixels put more than 90%
on black, so the nucleus keeps only black and the samples come out all-black digits. Given a
model's probe rows (`engines.decoding.probes`: its next-value log-probabilities on typical
inputs, (N, V)), `collapse_fraction` runs the config's sampler chain over them
(`build_chain(...).process`, exactly what a run applies) and counts the positions where at most
one candidate is left. Above `COLLAPSE_THRESHOLD` the studio warns.

Greedy decoding (strategy greedy or beam, temperature 0, top-k 1) is deterministic by the
user's choice, not by accident: it is not reported as a collapse.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engines.decoding.config import DecodingConfig
from engines.decoding.samplers import build_chain

COLLAPSE_THRESHOLD = 0.5  # warn when more than this fraction of positions keep one candidate


@dataclass(frozen=True)
class Collapse:
    fraction: float  # of probe positions left with at most one candidate, in [0, 1]
    positions: int  # N: probe positions counted
    culprit: str  # the filters that do it, in words ("top-p 0.9"), or "the sampler chain ..."; "" if no collapse

    @property
    def collapses(self) -> bool:
        return self.fraction > COLLAPSE_THRESHOLD


def collapse_fraction(config: DecodingConfig, rows: np.ndarray) -> float:
    """Fraction of the rows (N, V) of log-probabilities where `config`'s chain keeps <= 1 value.

    No histories are given (the penalties see none): they ban repeats, which probes of true
    text do not measure. A config whose chain has no filter keeps every value: 0.
    """
    rows = np.asarray(rows)
    if rows.ndim != 2 or rows.shape[0] == 0:
        raise ValueError(f"probe rows must have shape (N, V) with N > 0, got {rows.shape}")
    chain = build_chain(config, 0)
    if not chain.filters:
        return 0.0
    processed = chain.process(rows, [()] * rows.shape[0])  # (N, V); removed values are -inf
    kept = np.isfinite(processed).sum(axis=1)  # (N,)
    return float(np.mean(kept <= 1))


def is_deliberately_greedy(config: DecodingConfig) -> bool:
    return config.strategy != "sample" or config.is_greedy


def check_collapse(config: DecodingConfig, rows: np.ndarray) -> Collapse | None:
    """The collapse `config` causes on the probe rows (collapsing or not), or None when the
    config is greedy on purpose."""
    if is_deliberately_greedy(config):
        return None
    fraction = collapse_fraction(config, rows)
    culprit = _culprit(config, rows) if fraction > COLLAPSE_THRESHOLD else ""
    return Collapse(fraction, int(np.asarray(rows).shape[0]), culprit)


def _culprit(config: DecodingConfig, rows: np.ndarray) -> str:
    """The filters that collapse on their own (each one alone over the rows), else the chain."""
    chain = build_chain(config, 0)
    if len(chain.filters) == 1:  # the one filter does it: no second pass
        return chain.filters[0].name
    alone = []
    for f in chain.filters:
        kept = np.isfinite(f.apply(rows, [()] * len(rows))).sum(axis=1)
        if np.mean(kept <= 1) > COLLAPSE_THRESHOLD:
            alone.append(f.name)
    return " and ".join(alone) if alone else "the sampler chain " + " → ".join(f.name for f in chain.filters)


def collapse_warning(config: DecodingConfig, rows: np.ndarray, model_id: str, what: str = "positions",
                     consequence: str = "") -> str | None:
    """One line for the user when `config` collapses the model's probe rows, else None, e.g.
    "top-p 0.9 leaves one value at 97% of pixel positions for mnist-pixelcnn: samples will be
    near-deterministic (all-black digits)"."""
    found = check_collapse(config, rows)
    if found is None or not found.collapses:
        return None
    tail = f" ({consequence})" if consequence else ""
    return (f"{found.culprit} leaves one value at {found.fraction:.0%} of {what} for {model_id}: "
            f"samples will be near-deterministic{tail}")
