"""Mirostat v2 (Basu et al. 2021), with llama.cpp's `llama_sampler_mirostat_v2` semantics.

A selector with one running threshold `mu` per batch row, in bits. Each step, per row:

1. keep the values whose surprise -log2 p is <= mu (always at least the most likely one),
   where p is the distribution the filters before it left;
2. renormalise over the kept values and draw one (inverse CDF, like `CategoricalSelector`);
3. once the step's value is accepted, mu -= eta * (surprise - tau), the surprise being that of
   the accepted value under the renormalised distribution.

mu starts at 2 * tau. tau is the target surprise per value in bits (lower: more focused text),
eta the learning rate. Each `select` makes exactly one `rng.random(B)` call.
"""

from __future__ import annotations

import math

import numpy as np

from engines.decoding.samplers import (TokenSelector, _as_rows, _bad, _fmt, _is_real, _is_whole, _quiet_log_probs,
                                       inverse_cdf, log_softmax)

LN2 = math.log(2)
_TOL = 1e-9  # a surprise equal to mu in decimal counts as kept despite float rounding


class MirostatV2(TokenSelector):
    """Mirostat v2 selector: see the module doc. State: `mu` (B,) once the first step has run."""

    def __init__(self, tau: float, eta: float, seed: int) -> None:
        if not _is_real(tau) or tau <= 0:
            raise _bad("mirostat-tau", tau, "the Mirostat selector needs a target surprise > 0 bits")
        if not _is_real(eta) or not 0 < eta <= 1:
            raise _bad("mirostat-eta", eta, "must be in (0, 1]")
        if not _is_whole(seed) or not 0 <= seed < 2**63:
            raise _bad("seed", seed, "must be a whole number in [0, 2**63)")
        self.tau, self.eta, self.seed = float(tau), float(eta), int(seed)
        self.name = f"mirostat-v2 tau {_fmt(self.tau)} eta {_fmt(self.eta)} seed {self.seed}"
        self.rng = np.random.Generator(np.random.PCG64(self.seed))
        self.mu: np.ndarray | None = None  # (B,) bits
        self._renormalised: np.ndarray | None = None  # (B, V) log p over the kept values, last draw

    def truncate(self, logits: np.ndarray) -> np.ndarray:
        """logits (B, V) with every value whose surprise exceeds the row's mu set to -inf."""
        x = _as_rows(logits)  # (B, V)
        lp = log_softmax(x)  # (B, V); raises when a row has nothing left
        if self.mu is None:
            self.mu = np.full(x.shape[0], 2.0 * self.tau)
        elif self.mu.shape[0] != x.shape[0]:
            raise ValueError(f"Mirostat keeps one mu per row: {self.mu.shape[0]} rows before, {x.shape[0]} now")
        keep = -lp / LN2 <= self.mu[:, None] + _TOL  # (B, V)
        keep[np.arange(x.shape[0]), np.argmax(lp, axis=1)] = True  # the most likely value always stays
        return np.where(keep, x, -np.inf)

    def draw(self, logits: np.ndarray, u: np.ndarray) -> np.ndarray:
        kept = self.truncate(logits)  # (B, V)
        self._renormalised = _quiet_log_probs(kept)
        return inverse_cdf(kept, u)

    def select(self, logits: np.ndarray) -> np.ndarray:
        x = _as_rows(logits)
        return self.draw(x, self.rng.random(x.shape[0]))

    def accept(self, tokens: np.ndarray) -> None:
        """Move mu toward tau by the accepted values' surprise. A value outside its row's kept set
        (a finished row padded with its stop value) leaves that row's mu as it is."""
        if self._renormalised is None or self.mu is None:
            return
        tokens = np.asarray(tokens, dtype=np.int64)
        surprise = -self._renormalised[np.arange(len(tokens)), tokens] / LN2  # (B,) bits; inf if not kept
        self.mu = np.where(np.isfinite(surprise), self.mu - self.eta * (surprise - self.tau), self.mu)
        self._renormalised = None
