"""Padded vocabularies (engines/text/vocab_mask.py): ids the tokenizer cannot decode are never drawn,
by any strategy, never listed, and the probability views say how much was masked.

The fixture is the committed tiny GPT-2 with its tokenizer cut down (tests/text_fixtures.py): the
model scores 400 ids, the tokenizer decodes 298 (ids 300..399 are a padded tail, 199 and 221 are
holes; 199 and 221 are the model's two favourites after "ROMEO:")."""

import json
import math

import numpy as np
import pytest

from engines.decoding.config import DecodingConfig
from engines.decoding.samplers import log_softmax
from engines.registry import get_model
from engines.text.decoder import KVCacheStepModel
from engines.text.model import load_text_model
from engines.text.request import TextRequest, TextStarted, run
from engines.text.session import beam_generate, describe_pick, score_ids, score_text, stream_tokens
from engines.text.vocab_mask import vocab_mask
from tests.cli_helpers import run_cli
from tests.tab_helpers import new_window, set_config
from tests.text_fixtures import FIXTURES, PADDED_HOLES, PADDED_KEEP, padded_vocab_copy

pytestmark = pytest.mark.usefixtures("isolated_user_models")
N_LOGITS = 400
MASKED = set(range(PADDED_KEEP, N_LOGITS)) | set(PADDED_HOLES)
PROMPT = "ROMEO:"


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("padded")
    padded_vocab_copy(root)
    return root


@pytest.fixture(scope="module")
def padded(models):
    return load_text_model(get_model("padded-gpt2", [models]))


@pytest.fixture(scope="module")
def full():
    return load_text_model(get_model("tiny-gpt2-optimum", [FIXTURES]))


def raw_logprobs(model, ids):
    """The unmasked model's log-probs after `ids` (the decoder alone)."""
    return log_softmax(np.asarray(KVCacheStepModel(model.decoder).prefill([list(ids)]), np.float64))[0]


def test_the_mask_lists_the_padded_tail_and_the_holes(padded):
    mask = vocab_mask(padded.tokenizer, N_LOGITS)
    assert (mask.tail, sorted(mask.holes.tolist()), mask.n_masked) == (PADDED_KEEP, sorted(PADDED_HOLES), len(MASKED))
    undecodable = {i for i in range(N_LOGITS) if padded.tokenizer.tk.id_to_token(i) is None}
    assert undecodable == MASKED == set(mask.masked_ids().tolist())
    assert vocab_mask(padded.tokenizer, 300).n_masked == len(PADDED_HOLES)


def test_hot_sampling_never_draws_a_masked_id(padded, full):
    ids = padded.tokenizer.encode(PROMPT)
    config = DecodingConfig(temperature=3.0)
    drawn_full, drawn = set(), set()
    for seed in range(30):
        drawn_full |= {e.token_id for e in stream_tokens(full, ids, config, 20, seed=seed, n_alternatives=0)}
        drawn |= {e.token_id for e in stream_tokens(padded, ids, config, 20, seed=seed, n_alternatives=0)}
    assert drawn_full & MASKED  # unmasked, these seeds draw ids the cut tokenizer cannot decode ...
    assert not drawn & MASKED and len(drawn) > 50  # ... masked, never (and the run does not stop)
    for cfg in (DecodingConfig(temperature=2.0, top_k=300), DecodingConfig(temperature=2.0, top_p=0.999),
                DecodingConfig(mirostat_tau=8.0), DecodingConfig(temperature=2.0, min_p=0.001)):
        got = {e.token_id for s in range(5) for e in stream_tokens(padded, ids, cfg, 15, seed=s, n_alternatives=0)}
        assert not got & MASKED, cfg


def test_greedy_picks_the_best_decodable_id_and_reports_renormalised_log_probs(padded):
    ids = padded.tokenizer.encode(PROMPT)
    raw = raw_logprobs(padded, ids)
    assert int(np.argmax(raw)) in MASKED  # the model's favourite cannot be decoded
    best = next(int(i) for i in np.argsort(-raw, kind="stable") if int(i) not in MASKED)
    ev = next(stream_tokens(padded, ids, DecodingConfig(strategy="greedy"), 1, seed=0))
    assert ev.token_id == best
    m = float(np.exp(raw[sorted(MASKED)]).sum())
    assert ev.masked_mass == pytest.approx(m, rel=1e-9) and ev.n_masked == len(MASKED)
    assert ev.logprob == pytest.approx(raw[best] - math.log1p(-m), abs=1e-6)  # log p renormalised over decodable ids
    assert ev.rank == 1 and sum(p for _, _, p in ev.top_before) <= 1 + 1e-9
    assert not {i for i, _, _ in ev.top_before + ev.top_after} & MASKED
    pick = describe_pick(padded, ids, best, DecodingConfig(), 0)
    assert pick.logprob == pytest.approx(ev.logprob) and pick.masked_mass == pytest.approx(m)


def test_beam_search_never_extends_with_a_masked_id(padded):
    ids = padded.tokenizer.encode(PROMPT)
    beams = beam_generate(padded, ids, DecodingConfig(strategy="beam", num_beams=4, num_return_sequences=4), 12)
    assert len(beams) == 4 and all(not set(b.token_ids) & MASKED for b in beams)
    greedy = [e.token_id for e in stream_tokens(padded, ids, DecodingConfig(strategy="greedy"), 12, seed=0)]
    assert greedy[0] in {b.token_ids[0] for b in beams}


def test_scoring_uses_the_same_mask_and_says_how_much_was_masked(padded):
    ids = padded.tokenizer.encode(PROMPT)
    events = list(stream_tokens(padded, ids, DecodingConfig(temperature=1.5), 10, seed=3))
    lps, mass = score_ids(padded, ids, [e.token_id for e in events])  # the path score_text and eval take
    assert lps == pytest.approx([e.logprob for e in events], abs=1e-6)
    assert mass == pytest.approx([e.masked_mass for e in events], abs=1e-6)  # float32 logits: batched vs per step
    r = score_text(padded, " the king", PROMPT)
    assert r.n_masked == len(MASKED) and len(r.masked_mass) == len(r.token_ids) and (r.masked_mass > 0).all()
    assert r.logprobs == pytest.approx(score_ids(padded, ids, r.token_ids)[0])


def test_the_cli_runs_a_padded_model_hot_and_its_notes_say_so(padded, models, capsys):
    out, err = run_cli(capsys, str(models), "generate", "text", "--model", "padded-gpt2", "--prompt", PROMPT,
                       "--temperature", "3", "--seed", "1", "--count", "4", "--max-new-tokens", "30")
    assert all(not set(s["token_ids"]) & MASKED for s in out["samples"])
    assert any("102 ids the tokenizer cannot decode were masked" in n for n in out["notes"])
    started = next(run(TextRequest(model="padded-gpt2", prompt=PROMPT, max_new_tokens=1), model=padded))
    assert isinstance(started, TextStarted) and any("renormalised" in n for n in started.notes)
    for masked in (350, PADDED_HOLES[0]):  # a branch cannot carry a masked id either
        with pytest.raises(Exception, match="cannot decode"):
            list(run(TextRequest(model="padded-gpt2", prompt=PROMPT, max_new_tokens=1, prefix_ids=(masked,)),
                     model=padded))
    assert padded.tokenizer.vocab_size == 298  # the holes make the library's count smaller than the last id + 1
    done = list(run(TextRequest(model="padded-gpt2", prompt=PROMPT, max_new_tokens=1, prefix_ids=(299,)), model=padded))
    assert done[-1].samples[0].text.startswith(padded.tokenizer.decode([299]))


def test_the_text_tab_never_lists_masked_ids_and_says_they_were_masked(qtbot, models):
    from studio.text import work
    from studio.text.token_view import tooltip_html

    window = new_window(qtbot, models)
    try:
        tab = window.tab("Text")
        assert tab.select_model("padded-gpt2")
        set_config(window, temperature=3.0, seed=7)
        tab.prompt.setPlainText(PROMPT)
        tab.max_tokens.setValue(25)
        branch = tab.generate()
        qtbot.waitUntil(lambda: not tab.is_running(), timeout=10_000)
        assert len(branch.tokens) == 25 and not set(branch.token_ids()) & MASKED
        for t in branch.tokens:
            assert len(t.top_before) == 10 and not {i for i, _, _ in t.top_before + t.top_after} & MASKED
            assert t.n_masked == len(MASKED) and 0 < t.masked_mass < 1
        tip = tooltip_html(branch.tokens[0])
        assert "102 ids the tokenizer cannot decode were masked:" in tip and "% of the model&#x27;s probability" in tip
        assert "102 ids the tokenizer cannot decode were masked" in tab.status_text()
        # saved with the tree and read back
        row = work.record_to_state(branch.tokens[0])
        assert work.record_from_state(json.loads(json.dumps(row))).masked_mass == pytest.approx(branch.tokens[0].masked_mass,
                                                                                               rel=1e-4)
        # a pick of the best listed alternative is described with the same mask
        alt = branch.tokens[3].top_before[0][0]
        child = tab.pick_alternative(3, alt)
        qtbot.waitUntil(lambda: not tab.is_running(), timeout=10_000)
        assert child.tokens[3].picked and child.tokens[3].n_masked == len(MASKED)
        assert not set(child.token_ids()) & MASKED
    finally:
        window.close()
