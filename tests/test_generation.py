"""The shared step-wise generation loop, driven by a real tiny ONNX bigram model."""

import numpy as np
import pytest

from engines.decoding.config import DecodingConfig
from engines.errors import DecodingError
from engines.generation import collect, generate_steps, resolve_seed
from engines.runtime import open_session
from tests.onnx_models import OnnxBigramStepModel, bigram_table, write_bigram_model


def _log_softmax(x):
    x = x.astype(np.float64)
    m = x.max(axis=-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=-1, keepdims=True))


@pytest.fixture(scope="module")
def model_and_table(tmp_path_factory):
    table = bigram_table(vocab=7, seed=3)
    path = write_bigram_model(tmp_path_factory.mktemp("m") / "bigram.onnx", table)
    return OnnxBigramStepModel(open_session(path)), table


def test_greedy_follows_the_argmax_chain_with_exact_logprobs(model_and_table):
    model, table = model_and_table
    events = list(generate_steps(model, [[2]], DecodingConfig(strategy="greedy"), 6, seed=0))
    expected, lp, prev = [], [], 2
    for _ in range(6):
        nxt = int(np.argmax(table[prev]))
        expected.append(nxt)
        lp.append(_log_softmax(table[prev])[nxt])
        prev = nxt
    assert [e.value for e in events] == expected
    np.testing.assert_allclose([e.logprob for e in events], lp, rtol=1e-5)
    assert [e.position for e in events] == list(range(6))


def test_alternatives_before_and_after_the_chain(model_and_table):
    model, table = model_and_table
    cfg = DecodingConfig(strategy="sample", top_k=2, seed=5)
    ev = next(generate_steps(model, [[0]], cfg, 1, seed=5, n_alternatives=3))
    probs = np.exp(_log_softmax(table[0]))
    top3 = np.argsort(-probs)[:3]
    assert [a for a, _ in ev.top_before[0]] == list(top3)
    np.testing.assert_allclose([p for _, p in ev.top_before[0]], probs[top3], rtol=1e-5)
    # after top-k 2 only two values remain, renormalised
    assert len(ev.top_after[0]) == 2
    assert sum(p for _, p in ev.top_after[0]) == pytest.approx(1.0)
    assert ev.value in top3[:2]
    # the reported log-probability is the model's own, not the filtered one
    assert ev.logprob == pytest.approx(_log_softmax(table[0])[ev.value], rel=1e-5)


def test_seeds_reproduce_and_differ(model_and_table):
    model, _ = model_and_table
    cfg = DecodingConfig(strategy="sample", temperature=1.5)
    run = lambda s: collect(generate_steps(model, [[1], [1]], cfg, 40, seed=s), s).values
    np.testing.assert_array_equal(run(11), run(11))
    assert not np.array_equal(run(11), run(12))


def test_resolve_seed_reports_a_fresh_seed_or_the_fixed_one():
    assert resolve_seed(DecodingConfig(seed=42)) == 42
    seeds = {resolve_seed(DecodingConfig()) for _ in range(5)}
    assert len(seeds) > 1 and all(isinstance(s, int) for s in seeds)


def test_caller_can_stop_between_any_two_steps(model_and_table):
    model, _ = model_and_table
    stream = generate_steps(model, [[1]], DecodingConfig(), 1000, seed=1)
    got = [next(stream) for _ in range(3)]
    stream.close()
    assert len(got) == 3
    calls = {"n": 0}

    def should_stop():
        calls["n"] += 1
        return calls["n"] > 4

    events = list(generate_steps(model, [[1]], DecodingConfig(), 1000, seed=1, should_stop=should_stop))
    assert len(events) == 4


def test_stop_values_end_rows_and_pad_without_likelihood(model_and_table):
    model, table = model_and_table
    first = int(np.argmax(table[4]))
    events = list(generate_steps(model, [[4], [4]], DecodingConfig(strategy="greedy"), 10, seed=0, stop_values=[first]))
    assert len(events) == 1 and events[0].finished.all()
    # a row finished earlier contributes 0 to the total
    cfg = DecodingConfig(strategy="sample", seed=0)
    for ev in generate_steps(model, [[4], [5]], cfg, 30, seed=3, stop_values=[0]):
        if ev.position > 0:
            assert np.all(ev.logprobs[prev_finished] == 0.0)
        prev_finished = ev.finished.copy()


def test_batch_rows_are_independent_contexts(model_and_table):
    model, table = model_and_table
    events = list(generate_steps(model, [[0], [3]], DecodingConfig(strategy="greedy"), 1, seed=0))
    assert list(events[0].values) == [int(np.argmax(table[0])), int(np.argmax(table[3]))]


def test_beam_and_bad_lengths_are_refused(model_and_table):
    model, _ = model_and_table
    with pytest.raises(DecodingError, match="beam"):
        list(generate_steps(model, [[0]], DecodingConfig(strategy="beam"), 3, seed=0))
    with pytest.raises(DecodingError, match="max new"):
        list(generate_steps(model, [[0]], DecodingConfig(), -1, seed=0))


def test_ranks_and_entropies_come_with_alternatives(model_and_table):
    model, table = model_and_table
    ev = next(generate_steps(model, [[2]], DecodingConfig(strategy="sample", seed=4), 1, seed=4, n_alternatives=3))
    lp = _log_softmax(table[2])
    assert ev.ranks[0] == 1 + int(np.sum(lp > lp[ev.value]))
    assert ev.entropies[0] == pytest.approx(-(np.exp(lp) * lp).sum(), rel=1e-6)
    quiet = next(generate_steps(model, [[2]], DecodingConfig(strategy="sample", seed=4), 1, seed=4, n_alternatives=0))
    assert quiet.ranks is None and quiet.entropies is None
