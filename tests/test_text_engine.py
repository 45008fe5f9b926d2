"""The text engine on a real GPT: the committed Optimum GPT-2 fixture (no torch needed)."""

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from engines.decoding import PrefixBeamScorer, beam_search, log_softmax
from engines.decoding.config import DecodingConfig
from engines.errors import InputError
from engines.registry import get_model
from engines.text.decoder import GPTDecoder, KVBeamScorer, KVCacheStepModel, RecomputeStepModel, score_tokens
from engines.text.model import load_text_model
from engines.text.session import plan_prompt, score_text, stream_tokens
from engines.text.tokenizer import CharTokenizer
from engines.generation import collect, generate_steps

FIXTURES = Path(__file__).parent / "fixtures"
EXPECTED = json.loads((FIXTURES / "tiny-gpt2-optimum" / "expected_greedy.json").read_text())


@pytest.fixture(scope="module")
def gpt2():
    return load_text_model(get_model("tiny-gpt2-optimum", [FIXTURES]))


@pytest.fixture(scope="module")
def small_window(gpt2):
    """The same weights with a 16-token window, to exercise sliding cheaply."""
    shape = dataclasses.replace(gpt2.decoder.shape, context_length=16)
    return GPTDecoder(gpt2.info.file("decoder"), shape)


def test_optimum_folder_is_recognised_without_a_card(gpt2):
    assert gpt2.info.id == "tiny-gpt2-optimum" and gpt2.info.kind == "text" and gpt2.info.usable
    assert gpt2.info.card["foreign"] == "optimum"
    assert gpt2.context_length == 128 and gpt2.tokenizer.vocab_size == 400


@pytest.mark.parametrize("case", EXPECTED["cases"], ids=lambda c: repr(c["prompt"]))
def test_greedy_tokens_equal_transformers_generate(gpt2, case):
    plan = plan_prompt(gpt2, case["prompt"], EXPECTED["max_new_tokens"])
    assert plan.ids == case["prompt_ids"]
    got = [e.token_id for e in stream_tokens(gpt2, plan.ids, DecodingConfig(strategy="greedy"), EXPECTED["max_new_tokens"], seed=0)]
    assert got == case["generated_ids"]


def test_generation_and_scoring_logprobs_agree(gpt2):
    cfg = DecodingConfig(strategy="sample", temperature=1.3, top_p=0.95)
    ctx = gpt2.tokenizer.encode("ROMEO:")
    events = list(stream_tokens(gpt2, ctx, cfg, 40, seed=7))
    scored = score_tokens(gpt2.decoder, ctx, [e.token_id for e in events])
    np.testing.assert_allclose(scored, [e.logprob for e in events], atol=1e-4)


def test_sliding_window_keeps_generation_scoring_and_recompute_in_step(small_window):
    ctx = [5, 6, 7]
    kv = KVCacheStepModel(small_window)
    greedy = DecodingConfig(strategy="greedy")
    r1 = collect(generate_steps(kv, [ctx], greedy, 50, seed=0), 0)
    assert kv.slides >= 5  # 3 + 50 tokens through a 16-token window
    r2 = collect(generate_steps(RecomputeStepModel(small_window), [ctx], greedy, 50, seed=0), 0)
    np.testing.assert_array_equal(r1.values, r2.values)
    np.testing.assert_allclose(r1.logprobs, r2.logprobs, atol=1e-4)
    np.testing.assert_allclose(score_tokens(small_window, ctx, r1.values[0].tolist()), r1.logprobs[0], atol=1e-4)


@pytest.mark.parametrize("transport", ["binding", "numpy"])
def test_kv_cache_logits_match_full_recompute(gpt2, transport):
    ids = gpt2.tokenizer.encode("The king is dead, long live")
    full = log_softmax(gpt2.decoder.forward(np.array([ids]))[0])
    step = KVCacheStepModel(gpt2.decoder, transport=transport)
    first = step.prefill([ids[:3]])
    rest = step.extend(np.array([ids[3:]]))[0]
    np.testing.assert_allclose(log_softmax(first)[0], full[2], atol=1e-4)
    np.testing.assert_allclose(log_softmax(rest), full[3:], atol=1e-4)


def test_left_padded_batch_equals_rows_alone(gpt2):
    rows = [gpt2.tokenizer.encode("ROMEO: wherefore"), gpt2.tokenizer.encode("Ay")]
    batch = KVCacheStepModel(gpt2.decoder).prefill(rows)
    for r, row in enumerate(rows):
        alone = KVCacheStepModel(gpt2.decoder).prefill([row])[0]
        np.testing.assert_allclose(batch[r], alone, atol=1e-4)
    # and a step after the padded prefill still agrees
    step = KVCacheStepModel(gpt2.decoder)
    step.prefill(rows)
    nxt = step.advance(np.array([3, 4]))
    alone = KVCacheStepModel(gpt2.decoder)
    alone.prefill([rows[1]])
    np.testing.assert_allclose(nxt[1], alone.advance(np.array([4]))[0], atol=1e-4)


def test_beam_search_with_cache_reordering_equals_prefix_scoring(gpt2):
    cfg = DecodingConfig(strategy="beam", num_beams=3, num_return_sequences=3, length_penalty=1.0)
    prompt = gpt2.tokenizer.encode("KING:")
    with_cache = beam_search(KVBeamScorer(gpt2.decoder), prompt, cfg, 8)
    prefix = PrefixBeamScorer(lambda prefixes: log_softmax(np.stack([gpt2.decoder.forward(np.array([p]))[0, -1] for p in prefixes])))
    without = beam_search(prefix, prompt, cfg, 8)
    assert [h.tokens for h in with_cache] == [h.tokens for h in without]
    np.testing.assert_allclose([h.sum_logprob for h in with_cache], [h.sum_logprob for h in without], atol=1e-4)
    # each beam's reported log-probability is its exact likelihood
    for h in with_cache:
        np.testing.assert_allclose(score_tokens(gpt2.decoder, prompt, list(h.tokens)).sum(), h.sum_logprob, atol=1e-4)


def test_multi_character_tokens_and_bits_per_char(gpt2):
    r = score_text(gpt2, "What is their name?")
    assert len(r.token_ids) < len("What is their name?")  # BPE merges characters
    assert "".join(r.token_texts) == "What is their name?"
    assert r.bits_per_char == pytest.approx(-r.total_logprob / np.log(2) / 19)
    assert r.perplexity == pytest.approx(np.exp(-r.total_logprob / len(r.token_ids)))


def test_prompt_policy_messages(gpt2):
    plan = plan_prompt(gpt2, "", 10)
    assert plan.ids == [gpt2.tokenizer.start_id] and "<|endoftext|>" in plan.notes[0]
    assert "window slides" in plan_prompt(gpt2, "hi", 500).notes[-1]
    with pytest.raises(InputError, match="max new tokens"):
        plan_prompt(gpt2, "hi", 0)
    with pytest.raises(InputError, match="empty"):
        score_text(gpt2, "")


def test_char_tokenizer_names_unencodable_characters():
    tk = CharTokenizer(list("\n abc"))
    assert tk.decode(tk.encode("a cab")) == "a cab"
    with pytest.raises(InputError) as err:
        tk.encode("abz€")
    assert "'z'" in str(err.value) and "'€'" in str(err.value)
    assert tk.start_id == 0 and tk.start_text == "a newline"
