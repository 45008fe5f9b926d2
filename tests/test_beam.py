"""Beam search against brute force on a toy deterministic model."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from engines.decoding import BeamHypothesis, BeamScorer, DecodingConfig, PrefixBeamScorer, beam_search
from engines.errors import DecodingError

V = 5
EOS = 4
PROMPT = (1, 2)


def toy_table(seed: int, vocab: int = V) -> np.ndarray:
    """Next-token log-probs (vocab, vocab, vocab) given the last two ids: a 2nd-order Markov model."""
    logits = np.random.default_rng(seed).normal(scale=2.0, size=(vocab, vocab, vocab))
    return logits - np.log(np.exp(logits).sum(axis=-1, keepdims=True))


def prefix_scorer(table: np.ndarray) -> PrefixBeamScorer:
    return PrefixBeamScorer(lambda prefixes: np.stack([table[p[-2], p[-1]] for p in prefixes]))


class KVScorer:
    """A model with a 'cache' (the last two ids per beam) that it reorders by `parents`."""

    def __init__(self, table: np.ndarray) -> None:
        self.table = table
        self.cache = np.zeros((0, 2), dtype=np.int64)  # (B, 2)
        self.parent_calls: list[np.ndarray] = []

    def start(self, prompt):
        self.cache = np.array([prompt[-2:]], dtype=np.int64)  # (1, 2)
        return self.table[self.cache[0, 0], self.cache[0, 1]]  # (V,)

    def step(self, parents, tokens):
        self.parent_calls.append(np.array(parents))
        self.cache = np.stack([self.cache[parents, 1], tokens], axis=1)  # (B, 2) reordered, then extended
        return self.table[self.cache[:, 0], self.cache[:, 1]]  # (B, V)


def seq_logprobs(table: np.ndarray, tokens: tuple[int, ...]) -> list[float]:
    ctx = list(PROMPT)
    out = []
    for t in tokens:
        out.append(float(table[ctx[-2], ctx[-1], t]))
        ctx.append(t)
    return out


def all_sequences(max_len: int, vocab: int = V, eos: int | None = EOS):
    """Every complete output: ends with eos (eos nowhere else) or reaches max_len without eos."""
    for n in range(1, max_len + 1):
        for seq in itertools.product(range(vocab), repeat=n):
            if eos is not None and eos in seq[:-1]:
                continue
            if n < max_len and seq[-1] != eos:
                continue
            yield seq


def brute_best(table: np.ndarray, max_len: int, length_penalty: float) -> tuple[tuple[int, ...], float]:
    scored = [(sum(seq_logprobs(table, s)) / len(s) ** length_penalty, s) for s in all_sequences(max_len)]
    score, seq = max(scored)
    return seq, score


def greedy(table: np.ndarray, max_len: int) -> tuple[int, ...]:
    ctx, out = list(PROMPT), []
    while len(out) < max_len:
        t = int(np.argmax(table[ctx[-2], ctx[-1]]))
        out.append(t)
        ctx.append(t)
        if t == EOS:
            break
    return tuple(out)


def beam_config(**kw) -> DecodingConfig:
    return DecodingConfig(strategy="beam", **kw)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("length_penalty, early_stopping", [(0.0, True), (1.0, False), (1.0, True)])
def test_wide_beam_finds_the_brute_force_best(seed, length_penalty, early_stopping):
    table = toy_table(seed)
    L = 4
    best, best_score = brute_best(table, L, length_penalty)
    config = beam_config(num_beams=V ** (L - 1), length_penalty=length_penalty, early_stopping=early_stopping)
    [hyp] = beam_search(prefix_scorer(table), PROMPT, config, max_new_tokens=L, eos_id=EOS)
    assert hyp.tokens == best
    assert hyp.score == pytest.approx(best_score, abs=1e-12)
    assert hyp.sum_logprob == pytest.approx(sum(seq_logprobs(table, best)), abs=1e-12)
    assert hyp.finished == (best[-1] == EOS)


@pytest.mark.parametrize("seed", range(8))
def test_one_beam_is_greedy_decoding(seed):
    table = toy_table(seed)
    [hyp] = beam_search(prefix_scorer(table), PROMPT, beam_config(num_beams=1), max_new_tokens=6, eos_id=EOS)
    assert hyp.tokens == greedy(table, 6)
    [hyp] = beam_search(prefix_scorer(table), PROMPT, beam_config(num_beams=1), max_new_tokens=6, eos_id=None)
    ctx, out = list(PROMPT), []
    for _ in range(6):
        out.append(int(np.argmax(table[ctx[-2], ctx[-1]])))
        ctx.append(out[-1])
    assert hyp.tokens == tuple(out) and not hyp.finished


@pytest.mark.parametrize("seed", range(4))
def test_returned_hypotheses_are_sorted_and_consistent(seed):
    table = toy_table(seed)
    config = beam_config(num_beams=4, num_return_sequences=3, length_penalty=0.7)
    hyps = beam_search(prefix_scorer(table), PROMPT, config, max_new_tokens=5, eos_id=EOS)
    assert len(hyps) == 3
    assert all(isinstance(h, BeamHypothesis) for h in hyps)
    assert [h.score for h in hyps] == sorted((h.score for h in hyps), reverse=True)
    assert len({h.tokens for h in hyps}) == 3
    for h in hyps:
        expected = seq_logprobs(table, h.tokens)
        assert h.token_logprobs == pytest.approx(expected, abs=1e-12)
        assert h.sum_logprob == pytest.approx(sum(expected), abs=1e-12)
        assert h.score == pytest.approx(sum(expected) / len(h.tokens) ** 0.7, abs=1e-12)
        assert h.finished == (h.tokens[-1] == EOS)
        assert EOS not in h.tokens[:-1]
        assert 1 <= len(h.tokens) <= 5


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("penalties", [{}, {"repetition_penalty": 1.8}, {"no_repeat_ngram": 2}])
def test_kv_scorer_with_parents_matches_prefix_scorer(seed, penalties):
    table = toy_table(seed)
    config = beam_config(num_beams=3, num_return_sequences=3, **penalties)
    kv = KVScorer(table)
    assert isinstance(kv, BeamScorer)
    a = beam_search(kv, PROMPT, config, max_new_tokens=6, eos_id=EOS)
    b = beam_search(prefix_scorer(table), PROMPT, config, max_new_tokens=6, eos_id=EOS)
    assert a == b
    assert any(not np.array_equal(p, np.arange(len(p))) for p in kv.parent_calls)  # beams were reordered


def test_penalties_use_each_beams_history_but_raw_logprobs_are_recorded():
    table = toy_table(3)
    config = beam_config(num_beams=2, num_return_sequences=2, repetition_penalty=2.0)
    for h in beam_search(prefix_scorer(table), PROMPT, config, max_new_tokens=5, eos_id=EOS):
        raw = seq_logprobs(table, h.tokens)
        assert h.token_logprobs == pytest.approx(raw, abs=1e-12)
        history = list(PROMPT)
        processed = []
        for t, lp in zip(h.tokens, raw):
            processed.append(lp * 2.0 if t in history else lp)  # log-probs are negative: x * penalty
            history.append(t)
        assert h.score == pytest.approx(sum(processed) / len(h.tokens), abs=1e-12)

    config = beam_config(num_beams=3, num_return_sequences=3, no_repeat_ngram=1)
    for h in beam_search(prefix_scorer(table), PROMPT, config, max_new_tokens=3, eos_id=None):
        full = PROMPT + h.tokens
        assert len(set(full)) == len(full)  # V=5, prompt uses 2 ids: exactly 3 new distinct ids


def test_vocabulary_smaller_than_twice_the_beams():
    table = toy_table(5, vocab=3)
    config = beam_config(num_beams=4, num_return_sequences=4, length_penalty=0.0)
    hyps = beam_search(prefix_scorer(table), PROMPT, config, max_new_tokens=3, eos_id=2)
    assert len(hyps) == 4
    assert len({h.tokens for h in hyps}) == 4
    assert [h.score for h in hyps] == sorted((h.score for h in hyps), reverse=True)
    valid = set(all_sequences(3, vocab=3, eos=2))
    for h in hyps:
        assert h.tokens in valid
        assert h.score == pytest.approx(sum(seq_logprobs(table, h.tokens)), abs=1e-12)
    # a one-id vocabulary without eos: one beam survives, the rest of the width stays empty
    only = PrefixBeamScorer(lambda p: np.zeros((len(p), 1)))
    [h] = beam_search(only, [0], beam_config(num_beams=3), 4)
    assert h.tokens == (0, 0, 0, 0) and h.sum_logprob == 0.0


def test_should_stop_and_bad_arguments():
    table = toy_table(0)
    calls = []

    def stop() -> bool:
        calls.append(1)
        return True

    hyps = beam_search(prefix_scorer(table), PROMPT, beam_config(num_beams=2, num_return_sequences=2), 10, eos_id=None, should_stop=stop)
    assert len(calls) == 1 and len(hyps) == 2
    assert all(len(h.tokens) == 1 and not h.finished for h in hyps)
    with pytest.raises(DecodingError, match="max-new-tokens"):
        beam_search(prefix_scorer(table), PROMPT, beam_config(), 0)
    with pytest.raises(DecodingError, match="num-return-sequences"):
        beam_search(prefix_scorer(table), PROMPT, DecodingConfig(num_beams=2, num_return_sequences=3), 3)
    with pytest.raises(DecodingError, match="filtered out"):  # 1 id, already in the prompt
        beam_search(PrefixBeamScorer(lambda p: np.zeros((len(p), 1))), [0], beam_config(no_repeat_ngram=1), 3)


def test_early_stopping_false_can_only_improve_the_best_score():
    for seed in range(10):
        table = toy_table(seed)
        kw = dict(num_beams=2, length_penalty=1.0)
        eager = beam_search(prefix_scorer(table), PROMPT, beam_config(early_stopping=True, **kw), 8, eos_id=EOS)[0]
        patient = beam_search(prefix_scorer(table), PROMPT, beam_config(early_stopping=False, **kw), 8, eos_id=EOS)[0]
        assert patient.score >= eager.score - 1e-12
        assert math.isfinite(patient.score)


def scripted(prompt_len: int, dists: dict[tuple[int, ...], list[float]], vocab: int = 3) -> PrefixBeamScorer:
    """A model given by hand: next-token probabilities per tuple of new tokens (uniform otherwise)."""

    def score(prefixes):
        rows = [dists.get(tuple(p[prompt_len:]), [1.0 / vocab] * vocab) for p in prefixes]
        with np.errstate(divide="ignore"):
            return np.log(np.array(rows))

    return PrefixBeamScorer(score)


def test_eos_candidates_below_the_top_num_beams_do_not_finish():
    # Step 2 ranks (two beams 0 and 1): (0, eos) .45, (1, 0) .18, (1, eos) .12, (0, 0) .025.
    # As in HF, (1, eos) ranks 2 >= num_beams and does not finish; the live beams (1, 0) and
    # (0, 0) reach max_new_tokens, and (1, 0) is the runner-up (finishing (1, eos) would
    # instead have ended the search with two finished hypotheses).
    dists = {(): [0.5, 0.3, 0.2], (0,): [0.05, 0.05, 0.9], (1,): [0.6, 0.0, 0.4]}
    config = beam_config(num_beams=2, num_return_sequences=2, length_penalty=0.0)
    hyps = beam_search(scripted(1, dists), [7], config, 2, eos_id=2)
    assert [(h.tokens, h.finished) for h in hyps] == [((0, 2), True), ((1, 0), False)]
    assert [h.sum_logprob for h in hyps] == pytest.approx([math.log(0.45), math.log(0.18)])


def test_eos_among_the_best_candidates_still_leaves_num_beams_live_beams():
    # Step 1: eos 0.4, a=0 0.35, b=1 0.25. Two beams must keep both a and b alive besides
    # the finished (eos,), because (b, eos) is the best output: log(0.25 * 0.99) / 2 = -0.698.
    dists = {(): [0.35, 0.25, 0.4], (0,): [0.495, 0.495, 0.01], (1,): [0.005, 0.005, 0.99]}
    config = beam_config(num_beams=2, length_penalty=1.0, early_stopping=False)
    hyps = beam_search(scripted(1, dists), [7], config, 2, eos_id=2)
    assert hyps[0].tokens == (1, 2)
    assert hyps[0].score == pytest.approx(math.log(0.25 * 0.99) / 2)


@pytest.mark.parametrize("early_stopping, expected", [(True, (2,)), (False, (0, 2))])
def test_early_stopping_false_waits_while_a_live_beam_can_still_win(early_stopping, expected):
    # (eos,) scores log 0.55 = -0.598 at once; the live beam (0,) has sum log 0.45 = -0.799,
    # which with length_penalty 1 and up to 4 tokens could still reach -0.2, and does: (0, eos)
    # scores -0.399. early_stopping=True stops at the first finished hypothesis.
    dists = {(): [0.45, 0.0, 0.55], (0,): [0.0, 0.0, 1.0]}
    config = beam_config(num_beams=1, length_penalty=1.0, early_stopping=early_stopping)
    [h] = beam_search(scripted(1, dists), [7], config, 4, eos_id=2)
    assert h.tokens == expected
