"""Padded vocabularies: ids the model scores but the tokenizer cannot decode are never emitted.

Many exports have more logits than tokenizer entries (Qwen2 and Phi-3 pad the output layer to a
multiple of 64 or more; a GPT-2 re-export with a 21,528-entry tokenizer still scores 50,257 ids),
and a tokenizer's id space can have holes. Such an id has no text: drawing it would stop a run
("token id N is outside the vocabulary"). `VocabMask` lists the ids that cannot be decoded (ids
at or past the tokenizer's end, and holes below it) and `MaskedStepModel` sets their logits to
-inf on the arrays ONNX Runtime returned, in place, before anything else sees them: one slice
assignment for the padded tail (plus one small fancy-index write for holes) per step, no
allocation. So every strategy (sampling, greedy, beam search, Mirostat), every probability view
(alternatives, rank, entropy) and scoring work on the same masked distribution.

Log-probabilities. Everything downstream takes log-softmax of the masked logits, so a reported
log p is the model's, renormalised over the ids that can be emitted: log p(id) - log(1 - m),
where m is the probability the model gave the masked ids at that step. That is the honest number
for text: it is the likelihood of what can actually be produced, and totals stay comparable
across samplers. How much was masked is said, not hidden: `TextStarted` notes name the count and
each token event carries m (`masked_mass`, tracked only when the views are on, at O(masked ids)
per step), shown in the token's tooltip.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

_CACHE: "weakref.WeakKeyDictionary[Any, dict[int, VocabMask]]" = weakref.WeakKeyDictionary()


@dataclass(frozen=True)
class VocabMask:
    n_logits: int  # rows the model scores
    tail: int  # ids >= tail cannot be decoded (tail == n_logits: none there)
    holes: np.ndarray  # (H,) int64 ids < tail that cannot be decoded

    @property
    def n_masked(self) -> int:
        return self.n_logits - self.tail + int(self.holes.size)

    @property
    def active(self) -> bool:
        return self.n_masked > 0

    def decodable(self, token_id: int) -> bool:
        return 0 <= token_id < self.tail and not bool(np.isin(token_id, self.holes))

    def masked_ids(self) -> np.ndarray:
        return np.concatenate([self.holes, np.arange(self.tail, self.n_logits, dtype=np.int64)])

    def apply(self, logits: np.ndarray) -> np.ndarray:
        """Set the masked ids of logits (..., V) to -inf, in place when the array is writable
        (a copy otherwise); returns the array."""
        if not self.active:
            return logits
        if not logits.flags.writeable:
            logits = logits.copy()
        if self.tail < self.n_logits:
            logits[..., self.tail:] = -np.inf
        if self.holes.size:
            logits[..., self.holes] = -np.inf
        return logits

    def masked_lse(self, logits: np.ndarray) -> np.ndarray:
        """log sum exp of the masked ids' logits (...,), float64, from logits (..., V) before masking."""
        parts = [logits[..., self.tail:]] if self.tail < self.n_logits else []
        if self.holes.size:
            parts.append(logits[..., self.holes])
        x = np.concatenate(parts, axis=-1).astype(np.float64) if len(parts) > 1 else parts[0].astype(np.float64)
        m = x.max(axis=-1, keepdims=True)
        m = np.where(np.isfinite(m), m, 0.0)
        with np.errstate(divide="ignore"):
            return (m + np.log(np.exp(x - m).sum(axis=-1, keepdims=True)))[..., 0]

    def note(self) -> str:
        return (f"{self.n_masked:,} of the model's {self.n_logits:,} ids cannot be decoded by the tokenizer: they are "
                "masked (never drawn, never listed) and log-probabilities are renormalised over the rest")


def masked_mass(masked_lse: np.ndarray, chosen_logit: np.ndarray, chosen_logprob: np.ndarray) -> np.ndarray:
    """m, the probability the unmasked model gave the masked ids, from the masked ids' log-sum-exp,
    and a decodable id's logit and its renormalised log-prob (logit - lse over the decodable ids)."""
    lse_kept = np.asarray(chosen_logit, np.float64) - np.asarray(chosen_logprob, np.float64)
    lse_masked = np.asarray(masked_lse, np.float64)
    return np.exp(lse_masked - np.logaddexp(lse_masked, lse_kept))


def describe_mass(n_masked: int, mass: float | None) -> str:
    """'12 ids the tokenizer cannot decode were masked: 0.3% of the model's probability'."""
    what = f"{n_masked:,} id{'s' if n_masked != 1 else ''} the tokenizer cannot decode {'were' if n_masked != 1 else 'was'} masked"
    if mass is None:
        return what
    pct = 100.0 * mass
    shown = f"{pct:.1f}%" if pct >= 0.1 or pct == 0 else f"{pct:.2g}%"
    return f"{what}: {shown} of the model's probability"


def decodable_ids(tokenizer) -> set[int] | None:
    """The ids the tokenizer can decode (None: every id below its vocab_size)."""
    tk = getattr(tokenizer, "tk", None)  # engines.text.tokenizer.HFTokenizer: the tokenizers library's object
    if tk is None:
        return None
    return {int(i) for i in tk.get_vocab(with_added_tokens=True).values()}


def logits_width(model) -> int | None:
    """How many ids a loaded TextModel scores, from its graph's "logits" output (None when the
    graph leaves it symbolic: the mask is then made from the first logits a run returns)."""
    try:
        outputs = model.decoder.session.session.get_outputs()
    except AttributeError:
        return None
    dim = next((o.shape[-1] for o in outputs if o.name == "logits" and o.shape), None)
    return dim if isinstance(dim, int) and not isinstance(dim, bool) else None


def vocab_mask(tokenizer, n_logits: int) -> VocabMask:
    """The mask of a tokenizer for a model scoring `n_logits` ids (cached per tokenizer)."""
    try:
        per = _CACHE.setdefault(tokenizer, {})
    except TypeError:  # not weak-referenceable: no cache
        per = {}
    found = per.get(n_logits)
    if found is not None:
        return found
    ids = decodable_ids(tokenizer)
    if ids is None:
        tail = min(int(tokenizer.vocab_size), n_logits)
        holes = np.zeros(0, np.int64)
    else:
        ok = np.zeros(n_logits, bool)
        inside = np.fromiter((i for i in ids if 0 <= i < n_logits), np.int64)
        ok[inside] = True
        bad = np.flatnonzero(~ok)
        # the tail: the longest run of undecodable ids at the end
        tail = n_logits
        while tail > 0 and not ok[tail - 1]:
            tail -= 1
        holes = bad[bad < tail].astype(np.int64)
    mask = VocabMask(int(n_logits), int(tail), holes)
    per[n_logits] = mask
    return mask


class MaskedStepModel:
    """A step model (prefill / advance / extend / reorder) whose logits have the masked ids at -inf.

    With `track_mass`, `masked_lse` holds the masked ids' log-sum-exp for the last logits returned
    (before masking), so `mass_for` can say how much probability was masked for the chosen id."""

    def __init__(self, inner, tokenizer, *, track_mass: bool = False):
        self.inner = inner
        self.tokenizer = tokenizer
        self.track_mass = track_mass
        self.mask: VocabMask | None = None
        self.masked_lse: np.ndarray | None = None
        self.last: np.ndarray | None = None

    def _masked(self, logits: Any) -> np.ndarray:
        x = np.asarray(logits)
        if self.mask is None or self.mask.n_logits != x.shape[-1]:
            self.mask = vocab_mask(self.tokenizer, int(x.shape[-1]))
        if not self.mask.active:
            self.masked_lse = None
            return x
        if self.track_mass:
            self.masked_lse = self.mask.masked_lse(x)
        x = self.mask.apply(x)
        self.last = x
        return x

    def prefill(self, contexts: Sequence[Sequence[int]]) -> np.ndarray:
        return self._masked(self.inner.prefill(contexts))

    def advance(self, values: np.ndarray) -> np.ndarray:
        return self._masked(self.inner.advance(values))

    def extend(self, tokens: np.ndarray) -> np.ndarray:
        return self._masked(self.inner.extend(tokens))

    def reorder(self, parents: np.ndarray) -> None:
        self.inner.reorder(parents)

    def mass_for(self, row: int, token_id: int, logprob: float) -> float | None:
        """The probability masked at the last step of `row`, given its chosen decodable id and log-prob."""
        if self.masked_lse is None or self.last is None:
            return None
        return float(masked_mass(self.masked_lse[row], self.last[row, token_id], logprob))

    def __getattr__(self, name: str) -> Any:  # slides, history, runner ... of the wrapped model
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)
