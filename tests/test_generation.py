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


# --- lazy views and the one-row log-prob (issue 15): the numbers the eager loop gave ----------

class _RandomLogits:
    """A step model returning fresh float32 logits (B, V) every call, like ONNX Runtime; a few ids at
    -inf (masked), as a padded vocabulary gives."""

    def __init__(self, vocab=300, seed=0):
        self.rng = np.random.default_rng(seed)
        self.vocab = vocab
        self.given = []

    def _next(self, b):
        x = (self.rng.standard_normal((b, self.vocab)) * 4).astype(np.float32)
        x[:, -7:] = -np.inf
        self.given.append(x.copy())
        return x

    def prefill(self, contexts):
        return self._next(len(contexts))

    def advance(self, values):
        return self._next(len(values))


def _eager_reference(logits_seq, config, seed, contexts, n, stop_values=()):
    """The step loop as it was before the views went lazy: a (B, V) float64 log-softmax every step,
    every view computed on the spot."""
    from engines.decoding import build_chain
    from engines.decoding.samplers import log_softmax, top_alternatives
    from engines.generation import draw_step, rank_and_entropy

    chain = build_chain(config, seed)
    histories = [list(c) for c in contexts]
    stops = np.asarray(list(stop_values), np.int64)
    finished = np.zeros(len(histories), bool)
    out = []
    for logits in logits_seq:
        raw = log_softmax(logits)
        values, processed = draw_step(chain, logits, histories)
        values = np.where(finished, stops[0] if stops.size else values, values)
        chain.accept(values)
        logprobs = np.where(finished, 0.0, raw[np.arange(len(values)), values])
        if stops.size:
            finished = finished | np.isin(values, stops)
        for row, v in zip(histories, values):
            row.append(int(v))
        ranks, ents = rank_and_entropy(raw, values)
        out.append(dict(values=values, logprobs=logprobs, ranks=ranks, entropies=ents,
                        top_before=tuple(tuple(top_alternatives(r, n)) for r in raw),
                        top_after=tuple(tuple(top_alternatives(r, n)) for r in log_softmax(processed))))
    return out


@pytest.mark.parametrize("config", [
    DecodingConfig(strategy="greedy"),
    DecodingConfig(strategy="sample", temperature=0.8, top_k=40, top_p=0.9, repetition_penalty=1.3, seed=3),
    DecodingConfig(strategy="sample", seed=9),
])
def test_lazy_views_and_one_row_logprobs_equal_the_eager_loop(config):
    model = _RandomLogits(seed=1)
    contexts = [[1, 2, 3], [4]]
    events = list(generate_steps(model, contexts, config, 25, seed=7, n_alternatives=5, stop_values=[5]))
    ref = _eager_reference(model.given[:len(events)], config, 7, contexts, 5, stop_values=[5])
    assert len(events) == len(ref)
    for i, (ev, r) in enumerate(zip(events, ref)):
        np.testing.assert_array_equal(ev.values, r["values"])
        # one row's logsumexp with float32 exponentials against the (B, V) float64 log-softmax: float rounding only
        np.testing.assert_allclose(ev.logprobs, r["logprobs"], rtol=0, atol=1e-6)
        # read in a different order on alternate steps: the cache must not mix them up
        order = ("entropies", "top_after", "ranks", "top_before") if i % 2 else ("top_before", "top_after", "ranks", "entropies")
        for name in order:
            got = getattr(ev, name)
            if isinstance(got, np.ndarray):
                np.testing.assert_array_equal(got, r[name])
            else:
                assert got == r[name]
        assert ev.views._logits is None and ev.views._processed is None  # all read: the rows are let go


def test_unread_views_cost_nothing_and_nan_is_still_refused():
    class _Counting(_RandomLogits):
        pass

    import engines.generation as gen

    calls = []
    real = gen.rank_and_entropy
    gen.rank_and_entropy = lambda *a: calls.append(1) or real(*a)
    try:
        events = list(generate_steps(_Counting(), [[1]], DecodingConfig(strategy="greedy"), 10, seed=0))
        assert calls == []  # nobody asked
        assert events[3].ranks is not None and calls == [1]
    finally:
        gen.rank_and_entropy = real

    class _NaN(_RandomLogits):
        def advance(self, values):
            x = self._next(len(values))
            x[0, 3] = np.nan
            return x

    with pytest.raises(DecodingError, match="NaN"):
        list(generate_steps(_NaN(), [[1]], DecodingConfig(strategy="sample", top_k=5, seed=1), 5, seed=1))


def test_text_events_compute_their_views_when_read():
    """stream_tokens' events on the committed GPT-2 fixture: views read later equal the eager ones."""
    import dataclasses
    from pathlib import Path

    from engines.decoding.samplers import log_softmax, top_alternatives
    from engines.registry import get_model
    from engines.text.decoder import KVCacheStepModel
    from engines.text.model import load_text_model
    from engines.text.session import stream_tokens, token_text

    gpt2 = load_text_model(get_model("tiny-gpt2-optimum", [Path(__file__).parent / "fixtures"]))
    ctx = gpt2.tokenizer.encode("ROMEO:")
    events = list(stream_tokens(gpt2, ctx, DecodingConfig(strategy="greedy"), 6, seed=0, n_alternatives=4))
    assert all("top_before" not in vars(e) for e in events)  # nothing computed yet
    step, seq = KVCacheStepModel(gpt2.decoder), list(ctx)
    logits = step.prefill([seq])
    for e in events:
        raw = log_softmax(logits)[0]
        want = tuple((i, token_text(gpt2, i), p) for i, p in top_alternatives(raw, 4))
        assert [i for i, _t, _p in e.top_before] == [i for i, _t, _p in want]
        np.testing.assert_allclose([p for *_, p in e.top_before], [p for *_, p in want], rtol=1e-5)
        assert e.top_after == e.top_before  # greedy: no filter, the chain's distribution is the model's
        assert e.rank == 1 and e.token_id == want[0][0]
        assert e.entropy == pytest.approx(float(-(np.exp(raw) * raw).sum()), rel=1e-5)
        logits = step.advance(np.array([e.token_id]))
    copy = dataclasses.replace(events[0], top_before=())  # a view given explicitly stays as given
    assert copy.top_before == () and copy.rank == events[0].rank and copy.token_id == events[0].token_id
    quiet = next(stream_tokens(gpt2, ctx, DecodingConfig(strategy="greedy"), 1, seed=0, n_alternatives=0))
    assert quiet.top_before == () and quiet.rank is None and quiet.entropy is None


@pytest.mark.parametrize("dtype,atol", [(np.float16, 0.0), (np.float32, 1e-6), (np.float64, 0.0)])
def test_chosen_logprob_precision_follows_the_logits(dtype, atol):
    """float16 (some exports) and float64 logits: log_softmax's own float64 arithmetic, equal; float32:
    float32 exponentials, within 1e-6; the work buffer is reused across steps."""
    from engines.decoding.samplers import log_softmax
    from engines.generation import _checked_max, _chosen_logprobs

    rng = np.random.default_rng(2)
    buf = None
    for _ in range(3):
        x = (rng.standard_normal((2, 3000)) * 5).astype(dtype)
        x[1, :10] = -np.inf
        v = np.array([int(x[0].argmax()), 20])
        got, new_buf = _chosen_logprobs(x, _checked_max(x), v, buf)
        assert buf is None or new_buf is buf
        buf = new_buf
        np.testing.assert_allclose(got, log_softmax(x)[[0, 1], v], rtol=0, atol=atol)
