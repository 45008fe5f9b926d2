"""Sampler chains: logits filters followed by exactly one token selector.

The design follows llama.cpp's sampler chain and HF transformers' logits processors:

* a `LogitsFilter` is a small object whose settings are checked in `__init__` (a bad
  value raises `DecodingError` naming the setting); `apply` takes logits (B, V) and the
  per-row histories and returns a NEW float64 array with removed entries set to -inf,
  never touching its input;
* a `TokenSelector` comes last, owns the random generator (if any) and turns the
  processed logits (B, V) into one id per row (B,);
* a `SamplerChain` runs the filters in the user's order, then the selector; every link
  has a display `name` ("top-k 40 → temp 0.8 → dist seed 7") and `accept(tokens)` is
  called by the caller after each step so stateful samplers can update.

`build_chain(config, seed)` turns a `DecodingConfig` into a chain.

Boundaries (top-p mass reached, min-p threshold met, typical-p mass) are compared with a
tolerance of `_TOL` so that a mass that reaches p exactly in decimal counts as reached
despite float rounding (probabilities [0.5, 0.25, ...] with top-p 0.75 keep two values).
"""

from __future__ import annotations

import math
import numbers
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from engines.errors import DecodingError

if TYPE_CHECKING:
    from engines.decoding.config import DecodingConfig

__all__ = [
    "LogitsFilter",
    "Temperature",
    "TopK",
    "TopP",
    "MinP",
    "TypicalP",
    "RepetitionPenalty",
    "NoRepeatNGram",
    "TokenSelector",
    "GreedySelector",
    "CategoricalSelector",
    "inverse_cdf",
    "SamplerChain",
    "build_chain",
    "log_softmax",
    "top_alternatives",
]

_TOL = 1e-9  # absolute tolerance on probability mass / log-probability boundaries
_NEG_INF = -np.inf


# --- helpers -------------------------------------------------------------------------

def _bad(setting: str, value: Any, why: str) -> DecodingError:
    """The same one-line message shape as DecodingConfig's validation."""
    return DecodingError(f"{setting} = {value!r} is invalid: {why}")


def _is_real(x: Any) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool) and math.isfinite(x)


def _is_whole(x: Any) -> bool:
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def _fmt(x: float) -> str:
    return f"{x:g}"


def _as_rows(logits: np.ndarray) -> np.ndarray:
    """float64 view/copy of logits (B, V); callers must not write into the result."""
    x = np.asarray(logits, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"logits must have shape (B, V), got shape {x.shape}")
    return x


def _check_histories(histories: Sequence[Sequence[int]] | None, rows: int) -> Sequence[Sequence[int]]:
    if histories is None or len(histories) != rows:
        got = "none" if histories is None else len(histories)
        raise ValueError(f"need one history per row: {rows} rows, {got} histories")
    return histories


def _quiet_log_probs(x: np.ndarray) -> np.ndarray:
    """Row-wise log-softmax of x (B, V) that leaves all -inf rows all -inf (no error)."""
    m = np.max(x, axis=1, keepdims=True)  # (B, 1)
    m = np.where(np.isfinite(m), m, 0.0)
    shifted = x - m  # (B, V)
    with np.errstate(divide="ignore"):
        lse = np.log(np.sum(np.exp(shifted), axis=1, keepdims=True))  # (B, 1)
    lse = np.where(np.isfinite(lse), lse, 0.0)
    return shifted - lse


def _scatter_back(order: np.ndarray, sorted_mask: np.ndarray) -> np.ndarray:
    """Undo a row-wise sort: mask[b, order[b, j]] = sorted_mask[b, j]; both (B, V)."""
    mask = np.empty_like(sorted_mask)
    np.put_along_axis(mask, order, sorted_mask, axis=1)
    return mask


_SAMPLE_STRIDE = 8  # big rows: the threshold comes from every 8th value (see _top_indices)


def _top_indices(values: np.ndarray, n: int) -> np.ndarray:
    """Indices of the n largest finite entries of a 1-D array, largest first, ties by lower index.

    On a big row (a 50k-token vocabulary, every step the views are read) selecting over the whole
    row costs ~0.4 ms; instead the n-th largest finite value of a strided subsample is a threshold
    t that can only be at or below the row's own n-th largest (the subsample's values are the row's),
    so every value >= t holds the true top n and all their ties. Sorting those few gives exactly
    the full selection's answer."""
    if n > 0 and values.size >= 64 * n:
        sample = values[::_SAMPLE_STRIDE]
        sample = sample[np.isfinite(sample)]
        if sample.size >= n:
            t = np.partition(sample, sample.size - n)[sample.size - n]
            candidates = np.flatnonzero(values >= t)  # NaN and -inf never pass a finite threshold
            vals = values[candidates]
            finite = np.isfinite(vals)  # +inf would pass: it is not a value that can be listed
            candidates, vals = candidates[finite], vals[finite]
            order = np.lexsort((candidates, -vals))  # value descending, then index ascending
            return candidates[order][:n].astype(np.int64)
    finite = np.flatnonzero(np.isfinite(values))  # (F,)
    if n <= 0 or finite.size == 0:
        return np.zeros(0, dtype=np.int64)
    vals = values[finite]
    if n < finite.size:
        kth = np.partition(vals, finite.size - n)[finite.size - n]
        keep = vals >= kth  # everything tied with the n-th value, so ties resolve by index
        finite, vals = finite[keep], vals[keep]
    order = np.lexsort((finite, -vals))  # primary: value descending; then index ascending
    return finite[order][:n].astype(np.int64)


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise log-softmax over the last axis of (V,) or (B, V); -inf stays -inf.

    Raises DecodingError when a row has no finite value left ("every value was filtered
    out") or contains NaN / +inf.
    """
    x = np.asarray(logits, dtype=np.float64)
    if x.ndim not in (1, 2):
        raise ValueError(f"logits must have shape (V,) or (B, V), got shape {x.shape}")
    rows = _check_selectable(x.reshape(1, -1) if x.ndim == 1 else x)  # (B, V)
    return _quiet_log_probs(rows).reshape(x.shape)


def _check_selectable(x: np.ndarray) -> np.ndarray:
    """x (B, V) unchanged, or DecodingError when a row has NaN / +inf or nothing finite left."""
    if np.isnan(x).any() or np.isposinf(x).any():
        raise DecodingError("the model produced NaN or infinite scores")
    if x.shape[1] == 0 or not np.isfinite(x).any(axis=1).all():
        raise DecodingError("every value was filtered out: loosen the sampler settings")
    return x


def top_alternatives(logprobs_row: np.ndarray, n: int) -> list[tuple[int, float]]:
    """The n most likely (id, probability) pairs of a log-prob row (V,), most likely first.

    Entries at -inf (filtered out) are never listed; ties list the lower id first.
    """
    row = np.asarray(logprobs_row, dtype=np.float64)
    if row.ndim != 1:
        raise ValueError(f"expected one row of log-probs (V,), got shape {row.shape}")
    ids = _top_indices(row, int(n))
    return [(int(i), float(np.exp(row[i]))) for i in ids]


# --- filters ---------------------------------------------------------------------------

class LogitsFilter:
    """Base class: `apply(logits (B, V), histories) -> new (B, V) float64`; -inf = removed."""

    name: str = "filter"

    def apply(self, logits: np.ndarray, histories: Sequence[Sequence[int]]) -> np.ndarray:
        raise NotImplementedError

    def accept(self, tokens: np.ndarray) -> None:
        """Called by the caller with the chosen ids (B,) after each step; default no-op."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"


class Temperature(LogitsFilter):
    """Divide logits by t > 0 (t < 1 sharpens, t > 1 flattens). t = 0 is greedy, handled by build_chain."""

    def __init__(self, t: float) -> None:
        if not _is_real(t) or t <= 0:
            raise _bad("temperature", t, "the temperature filter needs a number > 0 (0 means greedy: use the greedy selector)")
        self.t = float(t)
        self.name = f"temp {_fmt(self.t)}"

    def apply(self, logits, histories=None):
        x = _as_rows(logits)  # (B, V)
        return x / self.t


class TopK(LogitsFilter):
    """Keep the k largest values of each row.

    Exactly k values survive even when several tie with the k-th value: ties are broken
    by lower index (the value that comes first in the vocabulary is kept).
    """

    def __init__(self, k: int) -> None:
        if not _is_whole(k) or k < 1:
            raise _bad("top-k", k, "the top-k filter needs a whole number >= 1")
        self.k = int(k)
        self.name = f"top-k {self.k}"

    def apply(self, logits, histories=None):
        x = _as_rows(logits)  # (B, V)
        if self.k >= x.shape[1]:
            return x.copy()
        order = np.argsort(-x, axis=1, kind="stable")  # (B, V) descending, ties by lower index
        keep = np.zeros(x.shape, dtype=bool)
        np.put_along_axis(keep, order[:, : self.k], True, axis=1)
        return np.where(keep, x, _NEG_INF)


class TopP(LogitsFilter):
    """Nucleus: keep the smallest set of most likely values whose mass reaches p.

    The most likely value is always kept; p = 1 changes nothing. Ties in probability are
    ordered by lower index.
    """

    def __init__(self, p: float) -> None:
        if not _is_real(p) or not 0 < p <= 1:
            raise _bad("top-p", p, "must be in (0, 1]; 1 turns it off (0 would keep nothing)")
        self.p = float(p)
        self.name = f"top-p {_fmt(self.p)}"

    def apply(self, logits, histories=None):
        x = _as_rows(logits)  # (B, V)
        if self.p >= 1:
            return x.copy()
        probs = np.exp(_quiet_log_probs(x))  # (B, V)
        order = np.argsort(-x, axis=1, kind="stable")  # (B, V)
        sorted_p = np.take_along_axis(probs, order, axis=1)  # (B, V)
        mass_before = np.cumsum(sorted_p, axis=1) - sorted_p  # (B, V) mass of the values ranked above
        keep_sorted = mass_before < self.p - _TOL  # (B, V) still short of p before this value
        keep_sorted[:, 0] = True
        return np.where(_scatter_back(order, keep_sorted), x, _NEG_INF)


class MinP(LogitsFilter):
    """Drop values whose probability is below p x the row's top probability (0 = off)."""

    def __init__(self, p: float) -> None:
        if not _is_real(p) or not 0 <= p < 1:
            raise _bad("min-p", p, "must be in [0, 1); 0 turns it off")
        self.p = float(p)
        self.name = f"min-p {_fmt(self.p)}"

    def apply(self, logits, histories=None):
        x = _as_rows(logits)  # (B, V)
        if self.p == 0:
            return x.copy()
        lp = _quiet_log_probs(x)  # (B, V)
        threshold = np.max(lp, axis=1, keepdims=True) + math.log(self.p)  # (B, 1) log(p * p_max)
        return np.where(lp >= threshold - _TOL, x, _NEG_INF)


class TypicalP(LogitsFilter):
    """Locally typical sampling (Meister et al.), HF `TypicalLogitsWarper` semantics.

    Values are ranked by how close their surprisal -log p is to the row's entropy; the
    smallest such prefix with mass >= p is kept (plus anything tied with its last value),
    and at least one value always survives. p = 1 changes nothing.
    """

    def __init__(self, p: float) -> None:
        if not _is_real(p) or not 0 < p <= 1:
            raise _bad("typical-p", p, "must be in (0, 1]; 1 turns it off")
        self.p = float(p)
        self.name = f"typical {_fmt(self.p)}"

    def apply(self, logits, histories=None):
        x = _as_rows(logits)  # (B, V)
        if self.p >= 1:
            return x.copy()
        rows = np.arange(x.shape[0])
        lp = _quiet_log_probs(x)  # (B, V)
        probs = np.exp(lp)  # (B, V)
        with np.errstate(invalid="ignore"):
            entropy = -np.sum(np.where(probs > 0, lp * probs, 0.0), axis=1, keepdims=True)  # (B, 1)
            distance = np.abs(-lp - entropy)  # (B, V); inf for removed values
        order = np.argsort(distance, axis=1, kind="stable")  # (B, V) most typical first
        sorted_d = np.take_along_axis(distance, order, axis=1)  # (B, V)
        cum = np.cumsum(np.take_along_axis(probs, order, axis=1), axis=1)  # (B, V)
        last = np.minimum(np.sum(cum < self.p - _TOL, axis=1), x.shape[1] - 1)  # (B,)
        keep = distance <= sorted_d[rows, last][:, None]  # (B, V); always holds for the most typical value
        return np.where(keep, x, _NEG_INF)


class RepetitionPenalty(LogitsFilter):
    """CTRL / HF penalty on every id in the row's history: logit > 0 -> logit / penalty, else logit * penalty.

    Ids outside [0, V) in a history (e.g. special tokens the head never emits) are ignored.
    """

    def __init__(self, penalty: float) -> None:
        if not _is_real(penalty) or penalty <= 0:
            raise _bad("repetition-penalty", penalty, "must be > 0; 1 turns it off")
        self.penalty = float(penalty)
        self.name = f"rep-penalty {_fmt(self.penalty)}"

    def apply(self, logits, histories):
        x = _as_rows(logits)  # (B, V)
        histories = _check_histories(histories, x.shape[0])
        B, V = x.shape
        ids = [np.asarray(h, dtype=np.int64).reshape(-1) for h in histories]
        rows = np.concatenate([np.full(len(h), b, dtype=np.int64) for b, h in enumerate(ids)] + [np.zeros(0, np.int64)])
        cols = np.concatenate(ids + [np.zeros(0, np.int64)])  # (N,) all seen ids, row-major
        ok = (cols >= 0) & (cols < V)
        seen = np.zeros((B, V), dtype=bool)
        seen[rows[ok], cols[ok]] = True
        penalised = np.where(x > 0, x / self.penalty, x * self.penalty)  # (B, V)
        return np.where(seen, penalised, x)


class NoRepeatNGram(LogitsFilter):
    """HF `NoRepeatNGramLogitsProcessor`: ban every id that would complete an n-gram already in the history.

    n = 1 bans every id already seen. Loops over rows (each has its own history).
    """

    def __init__(self, n: int) -> None:
        if not _is_whole(n) or n < 1:
            raise _bad("no-repeat-ngram", n, "the n-gram filter needs a whole number >= 1")
        self.n = int(n)
        self.name = f"no-repeat-{self.n}gram"

    def banned(self, history: Sequence[int]) -> np.ndarray:
        """Ids (K,) that would repeat an n-gram of `history` if chosen next."""
        h = np.asarray(history, dtype=np.int64).reshape(-1)  # (L,)
        n = self.n
        if h.size < n:  # no complete n-gram yet
            return np.zeros(0, dtype=np.int64)
        windows = np.lib.stride_tricks.sliding_window_view(h, n)  # (L - n + 1, n)
        prefix = h[h.size - n + 1 :]  # (n - 1,) the n-1 most recent ids
        match = np.all(windows[:, :-1] == prefix, axis=1)  # (L - n + 1,)
        return np.unique(windows[match, -1])

    def apply(self, logits, histories):
        x = _as_rows(logits)  # (B, V)
        histories = _check_histories(histories, x.shape[0])
        V = x.shape[1]
        ban = np.zeros(x.shape, dtype=bool)  # (B, V)
        for b, history in enumerate(histories):
            ids = self.banned(history)
            ban[b, ids[(ids >= 0) & (ids < V)]] = True
        return np.where(ban, _NEG_INF, x)


# --- selectors ---------------------------------------------------------------------------

class TokenSelector:
    """Last link of a chain: processed logits (B, V) -> chosen ids (B,) int64.

    `select(logits)` draws its own uniforms (if it needs any) from the generator it owns;
    `draw(logits, u)` takes them from the caller (u (B,) in [0, 1)): the density sampler draws
    one uniform stream per sample and the audio sampler hands the ONNX step graph the same
    uniforms, so both need the draw without the selector's generator.
    """

    name: str = "selector"

    def select(self, logits: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def draw(self, logits: np.ndarray, u: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def accept(self, tokens: np.ndarray) -> None:
        """Called after each step with the chosen ids (B,); default no-op."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"


class GreedySelector(TokenSelector):
    """Argmax of each row; the lowest index wins ties."""

    name = "greedy"

    def select(self, logits: np.ndarray) -> np.ndarray:
        x = np.asarray(logits)
        if x.dtype != np.float32 or x.ndim != 2:  # float32 rows as they are: float64 keeps their order
            x = _as_rows(x)  # (B, V)
        # NaN, +inf and a row filtered out entirely all show in the row's maximum (one pass, no copy)
        if x.shape[1] == 0 or not np.isfinite(x.max(axis=1)).all():
            _check_selectable(x)  # raises, naming which
        return np.argmax(x, axis=1).astype(np.int64)

    def draw(self, logits: np.ndarray, u: np.ndarray | None = None) -> np.ndarray:
        return self.select(logits)  # the uniforms are not needed


def inverse_cdf(logits: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Draw one id per row (B,) from softmax(logits (B, V)) at the uniforms u (B,) in [0, 1).

    The id is the number of cumulative (unnormalised) probabilities <= u x their total, i.e. the
    first id whose cumulative probability passes u: an id of probability 0 (-inf) is never
    drawn, and scaling u by the total means float rounding in the sum cannot run past the end.
    DecodingError when a row has NaN / +inf or nothing finite left. Every sampler that draws
    from a categorical (text, pixels, binary pixels as 2-value rows, audio samples, mixture
    components) draws here.
    """
    x = _as_rows(logits)  # (B, V)
    if x.shape[1] == 0:
        _check_selectable(x)
    # ndarray methods rather than np.* functions: this runs once per pixel, and on (B, 2) rows
    # numpy's dispatch costs more than the arithmetic
    m = x.max(axis=1, keepdims=True)  # (B, 1)
    if not math.isfinite(m.sum()):  # NaN anywhere, +inf, or a row filtered out entirely (or a huge sum)
        _check_selectable(x)
    e = np.exp(x - m)  # (B, V) unnormalised probabilities; the row's largest is 1
    if x.shape[1] == 2:
        # Binary values (a NADE/MADE pixel, a stop bit): the general rule below, spelled out, since it
        # runs once per pixel. cdf = [e0, e0 + e1] and the last entry never passes u x total (u < 1,
        # total >= 1), so the id is 1 exactly when e0 <= u x (e0 + e1): the same float operations.
        return (e[:, 0] <= np.asarray(u, dtype=np.float64).reshape(-1) * (e[:, 0] + e[:, 1])).astype(np.int64)
    cdf = e.cumsum(axis=1)  # (B, V) rises only on values with p > 0
    target = np.asarray(u, dtype=np.float64).reshape(-1, 1) * cdf[:, -1:]  # (B, 1)
    return (cdf <= target).sum(axis=1, dtype=np.int64)


class CategoricalSelector(TokenSelector):
    """Draw from softmax(logits) per row by inverse CDF (`inverse_cdf`).

    Each `select` makes exactly one `rng.random(B)` call, so the same seed and the same
    processed distributions give the same draws, however the filters removed values.
    Entries at -inf have probability 0 and are never drawn.
    """

    def __init__(self, seed: int) -> None:
        if not _is_whole(seed) or not 0 <= seed < 2**63:
            raise _bad("seed", seed, "must be a whole number in [0, 2**63)")
        self.seed = int(seed)
        self.name = f"dist seed {self.seed}"
        self.rng = np.random.Generator(np.random.PCG64(self.seed))

    def select(self, logits: np.ndarray) -> np.ndarray:
        x = _as_rows(logits)  # (B, V)
        return self.draw(x, self.rng.random(x.shape[0]))  # (B,) uniforms in [0, 1)

    def draw(self, logits: np.ndarray, u: np.ndarray) -> np.ndarray:
        return inverse_cdf(logits, u)


# --- chain ----------------------------------------------------------------------------

class SamplerChain:
    """Filters in the user's order, then one selector."""

    def __init__(self, filters: Sequence[LogitsFilter], selector: TokenSelector) -> None:
        filters = list(filters)
        for f in filters:
            if not isinstance(f, LogitsFilter):
                raise TypeError(f"not a LogitsFilter: {f!r}")
        if not isinstance(selector, TokenSelector):
            raise TypeError(f"not a TokenSelector: {selector!r}")
        self.filters: list[LogitsFilter] = filters
        self.selector: TokenSelector = selector

    @property
    def links(self) -> list[str]:
        return [f.name for f in self.filters] + [self.selector.name]

    @property
    def name(self) -> str:
        return " → ".join(self.links)

    def process(self, logits: np.ndarray, histories: Sequence[Sequence[int]]) -> np.ndarray:
        """Run the filters in order on logits (B, V); returns a new float64 (B, V)."""
        x = _as_rows(logits)
        if not self.filters:
            return x.copy()
        for f in self.filters:
            x = f.apply(x, histories)
        return x

    def select(self, processed: np.ndarray) -> np.ndarray:
        """Chosen ids (B,) int64 from processed logits (B, V)."""
        return self.selector.select(processed)

    def sample(self, logits: np.ndarray, histories: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
        """(ids (B,), processed logits (B, V)); the caller still calls `accept(ids)`."""
        processed = self.process(logits, histories)
        return self.select(processed), processed

    def accept(self, tokens: np.ndarray) -> None:
        tokens = np.asarray(tokens, dtype=np.int64)
        for f in self.filters:
            f.accept(tokens)
        self.selector.accept(tokens)

    def __repr__(self) -> str:
        return f"<SamplerChain {self.name!r}>"


def build_chain(config: "DecodingConfig", seed: int) -> SamplerChain:
    """The chain for `config`: its active filters in `config.chain` order, then a selector.

    Both come from the table of samplers (`engines.decoding.sampler_table`): each filter's
    factory returns None when its value is off, and the first selector whose factory applies
    is used (greedy for strategy greedy / beam, temperature 0 or top-k 1; Mirostat when its
    target surprise is set; otherwise a categorical draw seeded with `seed`).

    * strategy "sample": every active filter (temperature 0 and 1 are left out);
    * strategy "greedy" and "beam": only the penalties (repetition penalty, n-gram ban),
      as HF applies logits processors but not warpers when not sampling; greedy selector.
      `beam_search` applies these filters to every beam.
    """
    from engines.decoding.sampler_table import chain_filters, chain_selector  # the table imports this module

    return SamplerChain(chain_filters(config), chain_selector(config, seed))
