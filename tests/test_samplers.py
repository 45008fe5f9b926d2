"""Sampler filters, selectors and chains: exact hand-computed cases plus property tests."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra.numpy import arrays

from engines.decoding import (
    CategoricalSelector,
    DecodingConfig,
    GreedySelector,
    MinP,
    NoRepeatNGram,
    RepetitionPenalty,
    SamplerChain,
    Temperature,
    TopK,
    TopP,
    TypicalP,
    build_chain,
    log_softmax,
    top_alternatives,
)
from engines.errors import DecodingError

PROBS = np.array([0.5, 0.25, 0.15, 0.1])
LOGITS = np.log(PROBS)[None, :]  # (1, 4)
NO_HISTORY = [[]]


def kept(out: np.ndarray) -> set[int]:
    """Ids still finite in a single-row output (1, V)."""
    return set(np.flatnonzero(np.isfinite(out[0])).tolist())


def probs_of(out: np.ndarray) -> np.ndarray:
    return np.exp(log_softmax(out))[0]


# --- exact cases ------------------------------------------------------------------------

@pytest.mark.parametrize(
    "p, expected",
    [(0.4, {0}), (0.5, {0}), (0.7, {0, 1}), (0.75, {0, 1}), (0.76, {0, 1, 2}), (0.9, {0, 1, 2}), (0.91, {0, 1, 2, 3}), (1.0, {0, 1, 2, 3})],
)
def test_top_p_keeps_smallest_set_reaching_p(p, expected):
    out = TopP(p).apply(LOGITS, NO_HISTORY)
    assert kept(out) == expected
    mass = PROBS[sorted(expected)].sum()
    np.testing.assert_allclose(probs_of(out)[sorted(expected)], PROBS[sorted(expected)] / mass)


def test_top_p_always_keeps_the_top_value():
    out = TopP(1e-6).apply(np.log([[0.1, 0.6, 0.3]]), NO_HISTORY)
    assert kept(out) == {1}


@pytest.mark.parametrize("p, expected", [(0.0, {0, 1, 2, 3}), (0.19, {0, 1, 2, 3}), (0.2, {0, 1, 2, 3}), (0.21, {0, 1, 2}), (0.3, {0, 1, 2}), (0.31, {0, 1}), (0.5, {0, 1}), (0.51, {0})])
def test_min_p_threshold_is_inclusive(p, expected):
    # 0.1 = 0.2 * 0.5 and 0.15 = 0.3 * 0.5 sit exactly on the threshold and are kept
    # ("drop values with prob < p * max prob").
    assert kept(MinP(p).apply(LOGITS, NO_HISTORY)) == expected


def test_top_k_keeps_k_and_breaks_ties_by_lower_index():
    assert kept(TopK(2).apply(LOGITS, NO_HISTORY)) == {0, 1}
    ties = np.array([[1.0, 3.0, 3.0, 3.0, 0.0]])
    assert kept(TopK(2).apply(ties, NO_HISTORY)) == {1, 2}
    assert kept(TopK(1).apply(ties, NO_HISTORY)) == {1}
    assert kept(TopK(10).apply(ties, NO_HISTORY)) == {0, 1, 2, 3, 4}
    np.testing.assert_allclose(probs_of(TopK(2).apply(LOGITS, NO_HISTORY)), [2 / 3, 1 / 3, 0, 0])


def test_temperature_divides_logits():
    out = Temperature(2.0).apply(np.array([[2.0, 4.0, -1.0]]), NO_HISTORY)
    np.testing.assert_array_equal(out, [[1.0, 2.0, -0.5]])
    assert out.dtype == np.float64


def _typical_by_hand(probs: list[float], mass: float) -> set[int]:
    entropy = -sum(p * math.log(p) for p in probs)
    distance = [abs(-math.log(p) - entropy) for p in probs]
    order = sorted(range(len(probs)), key=lambda i: distance[i])
    keep, total = set(), 0.0
    for i in order:
        keep.add(i)
        total += probs[i]
        if total >= mass:
            break
    return keep


@pytest.mark.parametrize("mass, expected", [(0.2, {1}), (0.5, {0, 1}), (0.8, {0, 1, 2}), (0.95, {0, 1, 2, 3})])
def test_typical_p_matches_hand_computation(mass, expected):
    # entropy = 1.2080; |surprisal - entropy| = [0.515, 0.178, 0.689, 1.095]:
    # most typical first: ids 1, 0, 2, 3 with cumulative mass 0.25, 0.75, 0.9, 1.0.
    assert _typical_by_hand(list(PROBS), mass) == expected
    out = TypicalP(mass).apply(LOGITS, NO_HISTORY)
    assert kept(out) == expected
    ids = sorted(expected)
    np.testing.assert_allclose(probs_of(out)[ids], PROBS[ids] / PROBS[ids].sum())


def test_repetition_penalty_on_positive_and_negative_logits():
    logits = np.array([[2.0, -1.0, 0.5, 0.0, 3.0], [2.0, -1.0, 0.5, 0.0, 3.0]])
    out = RepetitionPenalty(2.0).apply(logits, [[0, 1, 1, 3], [4, 99]])  # 99: outside the vocabulary, ignored
    np.testing.assert_array_equal(out, [[1.0, -2.0, 0.5, 0.0, 3.0], [2.0, -1.0, 0.5, 0.0, 1.5]])
    # a penalty below 1 rewards repeats
    np.testing.assert_array_equal(RepetitionPenalty(0.5).apply(logits[:1], [[0, 1]]), [[4.0, -0.5, 0.5, 0.0, 3.0]])


def test_no_repeat_ngram_bans_completions_of_seen_ngrams():
    logits = np.zeros((4, 5))
    histories = [[1, 2, 3, 1], [1, 2, 3, 1, 2], [3, 1], [4, 4, 4]]
    out = NoRepeatNGram(2).apply(logits, histories)
    # row 0: last id 1, bigram (1, 2) seen -> ban 2; row 1: last 2, (2, 3) seen -> ban 3;
    # row 2: last 1, no bigram starts with 1 -> nothing; row 3: (4, 4) seen -> ban 4
    assert [set(np.flatnonzero(np.isinf(r)).tolist()) for r in out] == [{2}, {3}, set(), {4}]
    out3 = NoRepeatNGram(3).apply(logits[:2], histories[:2])
    assert [set(np.flatnonzero(np.isinf(r)).tolist()) for r in out3] == [set(), {3}]
    out1 = NoRepeatNGram(1).apply(logits[:1], [[0, 3]])
    assert kept(out1) == {1, 2, 4}
    assert NoRepeatNGram(3).name == "no-repeat-3gram"


def test_filters_accept_float32_and_compute_in_float64():
    x = np.log(PROBS).astype(np.float32)[None, :]
    for f in (Temperature(0.5), TopK(2), TopP(0.8), MinP(0.1), TypicalP(0.9), RepetitionPenalty(1.2), NoRepeatNGram(2)):
        out = f.apply(x, [[0, 1, 0]])
        assert out.dtype == np.float64
        assert out.shape == (1, 4)


def test_log_softmax_and_top_alternatives():
    lp = log_softmax(np.array([[0.0, -np.inf, np.log(3.0)]]))
    np.testing.assert_allclose(np.exp(lp), [[0.25, 0.0, 0.75]])
    with pytest.raises(DecodingError, match="every value was filtered out"):
        log_softmax(np.array([[0.0, 1.0], [-np.inf, -np.inf]]))
    row = np.log([0.1, 0.5, 0.25, 0.15])
    assert [(i, round(p, 12)) for i, p in top_alternatives(row, 2)] == [(1, 0.5), (2, 0.25)]
    assert [i for i, _ in top_alternatives(np.array([0.0, -np.inf, 0.0, -1.0]), 10)] == [0, 2, 3]


def test_selectors():
    x = np.array([[0.0, 2.0, 2.0], [5.0, -np.inf, 1.0]])
    np.testing.assert_array_equal(GreedySelector().select(x), [1, 0])
    sel = CategoricalSelector(3)
    assert sel.name == "dist seed 3"
    draws = np.concatenate([sel.select(np.array([[-np.inf, 0.0, -np.inf, 0.0]])) for _ in range(200)])
    assert set(draws.tolist()) == {1, 3}
    with pytest.raises(DecodingError, match="every value was filtered out"):
        GreedySelector().select(np.full((1, 3), -np.inf))


def test_categorical_frequencies_match_probabilities():
    sel = CategoricalSelector(12345)
    n = 40_000
    draws = np.concatenate([sel.select(np.tile(LOGITS, (n // 4, 1))) for _ in range(4)])
    counts = np.bincount(draws, minlength=4)
    expected = PROBS * n
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 16.27  # 3 degrees of freedom, p = 0.001


# --- validation -------------------------------------------------------------------------

@pytest.mark.parametrize(
    "make, setting",
    [
        (lambda: TopP(0), "top-p"),
        (lambda: TopP(1.5), "top-p"),
        (lambda: TopP(float("nan")), "top-p"),
        (lambda: Temperature(-1), "temperature"),
        (lambda: Temperature(0), "temperature"),
        (lambda: TopK(0), "top-k"),
        (lambda: TopK(2.5), "top-k"),
        (lambda: TopK(True), "top-k"),
        (lambda: MinP(1), "min-p"),
        (lambda: MinP(-0.1), "min-p"),
        (lambda: TypicalP(0), "typical-p"),
        (lambda: RepetitionPenalty(0), "repetition-penalty"),
        (lambda: NoRepeatNGram(0), "no-repeat-ngram"),
        (lambda: CategoricalSelector(-1), "seed"),
    ],
)
def test_invalid_filter_values_name_the_setting(make, setting):
    with pytest.raises(DecodingError, match=setting):
        make()


@pytest.mark.parametrize(
    "kwargs, setting",
    [
        ({"top_p": 0}, "top-p"),
        ({"temperature": -1}, "temperature"),
        ({"top_k": -1}, "top-k"),
        ({"min_p": 1.0}, "min-p"),
        ({"typical_p": 1.5}, "typical-p"),
        ({"repetition_penalty": 0}, "repetition-penalty"),
        ({"no_repeat_ngram": -2}, "no-repeat-ngram"),
        ({"strategy": "nucleus"}, "strategy"),
        ({"chain": ("top_k", "top_z")}, "top_z"),
        ({"chain": ("top_k", "top_k")}, "twice"),
        ({"num_beams": 0}, "num-beams"),
        ({"strategy": "beam", "num_beams": 2, "num_return_sequences": 3}, "num-return-sequences"),
        ({"num_return_sequences": True}, "num-return-sequences"),
        ({"early_stopping": "yes"}, "early-stopping"),
        ({"seed": -5}, "seed"),
    ],
)
def test_config_validation_names_the_setting(kwargs, setting):
    with pytest.raises(DecodingError, match=setting):
        DecodingConfig(**kwargs)


def test_config_from_dict_rejects_unknown_and_accepts_null_chain():
    with pytest.raises(DecodingError, match="tempreature"):
        DecodingConfig.from_dict({"tempreature": 0.5})
    assert DecodingConfig.from_dict({"chain": None}).chain == DecodingConfig().chain


# --- chains --------------------------------------------------------------------------

def test_build_chain_names_and_order():
    assert build_chain(DecodingConfig(), 7).name == "dist seed 7"
    c = build_chain(DecodingConfig(top_k=40, temperature=0.8), 7)
    assert c.name == "top-k 40 → temp 0.8 → dist seed 7"
    assert c.links == ["top-k 40", "temp 0.8", "dist seed 7"]
    c = build_chain(DecodingConfig(top_k=40, top_p=0.9, temperature=0.8, chain=("temperature", "top_p", "top_k")), 1)
    assert c.name == "temp 0.8 → top-p 0.9 → top-k 40 → dist seed 1"
    full = DecodingConfig(
        repetition_penalty=1.3, no_repeat_ngram=3, top_k=5, typical_p=0.95, top_p=0.9, min_p=0.05, temperature=0.7
    )
    assert build_chain(full, 2).links == [
        "rep-penalty 1.3", "no-repeat-3gram", "top-k 5", "typical 0.95", "top-p 0.9", "min-p 0.05", "temp 0.7", "dist seed 2",
    ]
    assert build_chain(full.replace(temperature=0), 2).name == (
        "rep-penalty 1.3 → no-repeat-3gram → top-k 5 → typical 0.95 → top-p 0.9 → min-p 0.05 → greedy"
    )
    assert build_chain(full.replace(strategy="greedy"), 2).name == "rep-penalty 1.3 → no-repeat-3gram → greedy"
    assert build_chain(full.replace(strategy="beam"), 2).name == "rep-penalty 1.3 → no-repeat-3gram → greedy"
    assert isinstance(build_chain(DecodingConfig(top_k=1), 2).selector, GreedySelector)


def test_chain_order_changes_the_result():
    logits = np.log([[0.4, 0.3, 0.2, 0.1]])
    # top-k 2 first renormalises to [4/7, 3/7], so top-p 0.5 then keeps only id 0;
    # top-p 0.5 first keeps {0, 1} (0.4 < 0.5), which top-k 2 leaves alone.
    k_then_p = SamplerChain([TopK(2), TopP(0.5)], GreedySelector())
    p_then_k = SamplerChain([TopP(0.5), TopK(2)], GreedySelector())
    assert kept(k_then_p.process(logits, NO_HISTORY)) == {0}
    assert kept(p_then_k.process(logits, NO_HISTORY)) == {0, 1}
    via_config = [
        build_chain(DecodingConfig(top_k=2, top_p=0.5, chain=order), 0) for order in (("top_k", "top_p"), ("top_p", "top_k"))
    ]
    assert [kept(c.process(logits, NO_HISTORY)) for c in via_config] == [{0}, {0, 1}]


def test_chain_sample_and_accept():
    chain = build_chain(DecodingConfig(repetition_penalty=1.5, top_k=2), 4)
    logits = np.array([[3.0, 2.0, 1.0], [1.0, 2.0, 3.0]], dtype=np.float32)
    tokens, processed = chain.sample(logits, [[0], []])
    assert tokens.shape == (2,) and tokens.dtype == np.int64
    np.testing.assert_allclose(processed, [[2.0, 2.0, -np.inf], [-np.inf, 2.0, 3.0]])
    assert all(np.isfinite(processed[b, t]) for b, t in enumerate(tokens))
    chain.accept(tokens)  # stateless filters: a no-op that must not fail


# --- properties ---------------------------------------------------------------------------

ids = st.integers(min_value=0, max_value=7)
logit_rows = st.integers(1, 3).flatmap(
    lambda b: st.integers(2, 8).flatmap(
        lambda v: arrays(np.float64, (b, v), elements=st.floats(-20, 20) | st.just(-np.inf))
    )
).filter(lambda x: np.isfinite(x).any(axis=1).all())
configs = st.builds(
    DecodingConfig,
    strategy=st.sampled_from(["sample", "greedy"]),
    temperature=st.sampled_from([0.0, 0.5, 1.0, 1.7]),
    top_k=st.integers(0, 5),
    top_p=st.sampled_from([0.1, 0.5, 0.9, 1.0]),
    min_p=st.sampled_from([0.0, 0.05, 0.5, 0.9]),
    typical_p=st.sampled_from([0.2, 0.9, 1.0]),
    repetition_penalty=st.sampled_from([0.8, 1.0, 1.5]),
    no_repeat_ngram=st.integers(0, 3),
    chain=st.permutations(list(DecodingConfig().chain)).map(tuple),
)


def _histories(x: np.ndarray, draw_lists) -> list[list[int]]:
    return [draw_lists[b % len(draw_lists)] for b in range(x.shape[0])]


@settings(max_examples=60, deadline=None)
@given(logit_rows, configs, st.lists(st.lists(ids, max_size=8), min_size=1, max_size=3), st.integers(0, 2**32))
def test_processed_rows_are_distributions_and_inputs_untouched(x, config, lists, seed):
    histories = _histories(x, lists)
    x_before, h_before = x.copy(), [list(h) for h in histories]
    chain = build_chain(config, seed)
    try:
        tokens, processed = chain.sample(x, histories)
    except DecodingError as e:  # n-gram bans can remove every value of a tiny vocabulary
        assert "every value was filtered out" in str(e)
        assert config.no_repeat_ngram > 0
        return
    np.testing.assert_array_equal(x, x_before)
    assert histories == h_before
    lp = log_softmax(processed)
    finite = np.isfinite(lp)
    assert finite.any(axis=1).all()
    np.testing.assert_allclose(np.where(finite, np.exp(lp), 0.0).sum(axis=1), 1.0, rtol=1e-9)
    assert all(finite[b, t] for b, t in enumerate(tokens))


@settings(max_examples=40, deadline=None)
@given(logit_rows)
def test_no_filter_mutates_its_input(x):
    for dtype in (np.float64, np.float32):
        xi = x.astype(dtype)
        before = xi.copy()
        for f in (Temperature(0.7), TopK(2), TopP(0.6), TopP(1.0), MinP(0.2), TypicalP(0.5), RepetitionPenalty(1.3), NoRepeatNGram(1)):
            out = f.apply(xi, [[0, 1, 0]] * xi.shape[0])
            assert out is not xi
            np.testing.assert_array_equal(xi, before)


@settings(max_examples=40, deadline=None)
@given(logit_rows, st.integers(0, 2**32))
def test_top_k_1_and_temperature_0_are_greedy(x, seed):
    greedy = GreedySelector().select(x)
    draws = SamplerChain([TopK(1)], CategoricalSelector(seed)).sample(x, [[]] * len(x))[0]
    np.testing.assert_array_equal(draws, greedy)
    config = DecodingConfig(temperature=0.0, top_k=3, top_p=0.5, min_p=0.1)
    chain = build_chain(config, seed)
    assert isinstance(chain.selector, GreedySelector)
    np.testing.assert_array_equal(chain.sample(x, [[]] * len(x))[0], greedy)


@settings(max_examples=40, deadline=None)
@given(logit_rows)
def test_neutral_values_change_nothing(x):
    for f in (TopP(1.0), TypicalP(1.0), MinP(0.0), Temperature(1.0), RepetitionPenalty(1.0)):
        np.testing.assert_array_equal(f.apply(x, [[0, 1]] * len(x)), x)
    assert build_chain(DecodingConfig(), 0).filters == []


@settings(max_examples=30, deadline=None)
@given(logit_rows, st.integers(0, 2**40))
def test_same_seed_same_draws(x, seed):
    a = build_chain(DecodingConfig(top_p=0.9, temperature=1.3), seed)
    b = build_chain(DecodingConfig(top_p=0.9, temperature=1.3), seed)
    h = [[]] * len(x)
    for _ in range(5):
        np.testing.assert_array_equal(a.sample(x, h)[0], b.sample(x, h)[0])


def test_different_seeds_differ_over_many_draws():
    x = np.zeros((1, 50))
    chains = {seed: build_chain(DecodingConfig(), seed) for seed in range(3)}
    draws = {seed: np.concatenate([c.select(x) for _ in range(100)]) for seed, c in chains.items()}
    assert not np.array_equal(draws[0], draws[1])
    assert not np.array_equal(draws[1], draws[2])
    assert (draws[0] != draws[1]).mean() > 0.8


def test_top_indices_on_big_rows_equal_the_full_selection():
    """The strided-threshold shortcut for big rows gives exactly what selecting over the whole row gives,
    ties (by lower index) and -inf / NaN entries included."""
    from engines.decoding.samplers import _top_indices

    def full(values, n):  # the plain definition: finite entries by value descending, then index
        idx = np.flatnonzero(np.isfinite(values))
        return idx[np.lexsort((idx, -values[idx]))][:n]

    rng = np.random.default_rng(3)
    for trial in range(300):
        v = rng.normal(0, 2, rng.integers(640, 6000))
        if trial % 3 == 0:
            v = np.round(v)  # many ties
        if trial % 4 == 0:
            v[rng.random(v.size) < 0.5] = -np.inf
        if trial % 5 == 0:
            v[rng.integers(0, v.size, 3)] = np.nan
        for n in (1, 3, 10):
            np.testing.assert_array_equal(_top_indices(v, n), full(v, n))
    few = np.full(5000, -np.inf)
    few[[7, 4000]] = [1.0, 2.0]  # fewer finite values than asked for: the plain path
    assert _top_indices(few, 10).tolist() == [4000, 7]
