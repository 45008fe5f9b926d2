"""The Text tab on the committed real tiny GPT-2 (tests/fixtures/tiny-gpt2-optimum)."""

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from PySide6.QtWidgets import QFileDialog

from engines.cli import main as cli_main
from engines.decoding.config import DecodingConfig
from engines.registry import get_model
from engines.text.model import load_text_model
from engines.text.session import beam_generate, plan_prompt, score_text, stream_tokens
from studio.text import work
from studio.text.colours import colour_for, probability_colour, rank_colour
from studio.text.score_view import read_text_file
from studio.text.token_view import tooltip_html
from studio.tabs.text_tab import parse_stop_strings
from tests.tab_helpers import new_window, set_config

FIXTURES = Path(__file__).parent / "fixtures"
MODEL = "tiny-gpt2-optimum"
RUN_TIMEOUT_MS = 10_000

pytestmark = pytest.mark.usefixtures("isolated_user_models")


@pytest.fixture(scope="module")
def gpt2():
    return load_text_model(get_model(MODEL, [FIXTURES]))


@pytest.fixture
def window(qtbot):
    w = new_window(qtbot, FIXTURES)
    yield w
    w.close()  # stops and waits for every runner


@pytest.fixture
def tab(window):
    t = window.tab("Text")
    assert t.select_model(MODEL)
    return t


def run_and_wait(qtbot, tab, action):
    # Not tab_helpers.run_and_wait: the Text tab has no rescoring (no is_idle), and some actions
    # (a QAction's trigger) start the run without returning it.
    result = action()
    qtbot.waitUntil(lambda: not tab.is_running(), timeout=RUN_TIMEOUT_MS)
    return result


def cli_json(capsys, *argv):
    code = cli_main([*argv, "--models-dir", str(FIXTURES), "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    return json.loads(out)


# --- generation ----------------------------------------------------------------------------
def test_generate_with_a_fixed_seed_streams_and_matches_stream_tokens_and_the_cli(window, tab, qtbot, gpt2, capsys):
    assert window.tab_names()[0] == "Text"
    set_config(window, temperature=1.2, top_k=50, seed=123)
    tab.prompt.setPlainText("ROMEO:")
    tab.max_tokens.setValue(24)
    batches = []
    tab.runner.events.connect(lambda b: batches.append(len(b)))
    branch = run_and_wait(qtbot, tab, tab.generate)

    assert batches and sum(batches) >= 24  # tokens came in from the worker's batches
    cfg = DecodingConfig(temperature=1.2, top_k=50, seed=123)
    plan = plan_prompt(gpt2, "ROMEO:", 24)
    expected = list(stream_tokens(gpt2, plan.ids, cfg, 24, seed=123))
    assert branch.token_ids() == [e.token_id for e in expected]
    assert [t.logprob for t in branch.tokens] == pytest.approx([e.logprob for e in expected])
    assert [t.top_before for t in branch.tokens] == [e.top_before for e in expected]
    assert [t.top_after for t in branch.tokens] == [e.top_after for e in expected]
    text = gpt2.tokenizer.decode([e.token_id for e in expected])
    assert tab.branch_text(branch) == text
    # The view shows the prompt then exactly these tokens, appended as they came.
    assert tab.view.records() == branch.tokens
    assert tab.view.plain_text() == "ROMEO:" + "".join(e.text for e in expected)
    # ... and the CLI with the same seed and settings prints the same text.
    out = cli_json(capsys, "generate", "text", "--model", MODEL, "--prompt", "ROMEO:", "--max-new-tokens", "24",
                   "--temperature", "1.2", "--top-k", "50", "--seed", "123")
    assert out["samples"][0]["text"] == text
    assert out["samples"][0]["token_ids"] == branch.token_ids()
    # The command the tab offers for this branch reproduces it too.
    args = tab.cli_arguments(branch)
    assert args[args.index("--seed") + 1] == "123"
    assert cli_json(capsys, *args)["samples"][0]["text"] == text
    assert tab.export_record(branch)["cli"].startswith("chainrule generate text --model tiny-gpt2-optimum")
    # The seed and chain are shown, and the tree lists the branch.
    status = tab.status_text()
    assert "seed 123" in status and "top-k 50" in status and "tokens/s" in status
    assert tab.tree.topLevelItemCount() == 1
    assert tab.tree.topLevelItem(0).text(3) == "123"
    # Ranks and entropies come from the model's full distribution at each step.
    for rec in branch.tokens:
        ids = [i for i, _t, _p in rec.top_before]
        if rec.token_id in ids:
            assert rec.rank == ids.index(rec.token_id) + 1
        else:
            assert rec.rank > len(ids)
        assert 0 <= rec.entropy <= math.log(gpt2.tokenizer.vocab_size) + 1e-6


def test_rank_and_entropy_of_a_distribution():
    lp = np.log(np.array([0.5, 0.25, 0.125, 0.125]))
    assert work.rank_and_entropy(lp, 0) == (1, pytest.approx(-(0.5 * lp[0] + 0.25 * lp[1] + 0.25 * lp[2])))
    assert work.rank_and_entropy(lp, 1)[0] == 2
    assert work.rank_and_entropy(lp, 3)[0] == 3  # a tie shares the better rank


def test_stop_ends_generation_at_once_and_keeps_the_tokens(window, tab, qtbot):
    set_config(window)  # sampling, fresh seed
    tab.prompt.setPlainText("KING:")
    tab.max_tokens.setValue(100_000)
    branch = tab.generate()
    qtbot.waitUntil(lambda: len(branch.tokens) > 5, timeout=RUN_TIMEOUT_MS)
    tab.stop_button.click()
    qtbot.waitUntil(lambda: not tab.is_running(), timeout=2000)
    n = len(branch.tokens)
    qtbot.wait(150)
    assert len(branch.tokens) == n < 100_000
    assert branch.state == "stopped"
    assert tab.view.records() == branch.tokens
    assert f"seed {branch.seed}" in tab.status_text() and "stopped" in tab.status_text()
    assert not tab.stop_button.isEnabled()


def test_stop_strings_end_the_run_and_cut_the_text_like_the_cli(window, tab, qtbot, gpt2, capsys):
    set_config(window, strategy="greedy")
    tab.prompt.setPlainText("ROMEO:")
    tab.max_tokens.setValue(40)
    full = run_and_wait(qtbot, tab, tab.generate)
    text = tab.branch_text(full)
    stop = text[len(text) // 2: len(text) // 2 + 2]
    assert stop.strip()
    tab.stop_edit.setText(stop.replace(",", "\\,"))
    assert parse_stop_strings(tab.stop_edit.text()) == (stop,)
    cut = run_and_wait(qtbot, tab, tab.generate)
    out = cli_json(capsys, "generate", "text", "--model", MODEL, "--prompt", "ROMEO:", "--max-new-tokens", "40",
                   "--strategy", "greedy", "--stop", stop)
    assert tab.branch_text(cut) == out["samples"][0]["text"]
    assert cut.stopped_by == stop and len(cut.tokens) < 40
    assert parse_stop_strings(r"a, b\n ,\\x") == ("a", "b\n", "\\x")


def test_picking_an_alternative_makes_a_child_branch(window, tab, qtbot, gpt2):
    set_config(window, seed=7)
    tab.prompt.setPlainText("KING:")
    tab.max_tokens.setValue(10)
    root = run_and_wait(qtbot, tab, tab.generate)
    rec = root.tokens[3]
    alt_id, alt_text, alt_p = next(a for a in rec.top_before if a[0] != rec.token_id)
    assert "<table" in tooltip_html(rec, 3) and "after chain" in tooltip_html(rec, 3)
    menu = tab.alternatives_menu(3)
    action = next(a for a in menu.actions() if a.data() == alt_id)
    run_and_wait(qtbot, tab, action.trigger)

    child = tab.shown_branch()
    assert child is not root and child.parent == root.id
    assert child.token_ids()[:4] == root.token_ids()[:3] + [alt_id]
    assert len(child.tokens) == 3 + 1 + 10
    picked = child.tokens[3]
    assert picked.picked and picked.logprob == pytest.approx(math.log(alt_p), abs=1e-5)
    prefix_text = gpt2.tokenizer.decode(root.token_ids()[:3] + [alt_id])
    assert tab.branch_text(child).startswith(prefix_text)
    assert root.tokens == root.tokens[:]  # the original branch stays
    assert len(root.tokens) == 10 and tab.store.get(root.id) is root
    assert tab._items[child.id].parent() is tab._items[root.id]
    # The continuation's log-probabilities are the model's: scoring the same tokens agrees.
    from engines.text.decoder import score_tokens

    scored = score_tokens(gpt2.decoder, list(child.prompt_ids), child.token_ids())
    np.testing.assert_allclose(scored, [t.logprob for t in child.tokens], atol=1e-4)


def test_regenerate_continue_and_delete(window, tab, qtbot):
    set_config(window)  # no fixed seed: each run draws a fresh one
    tab.prompt.setPlainText("ROMEO:")
    tab.max_tokens.setValue(8)
    root = run_and_wait(qtbot, tab, tab.generate)
    sibling = run_and_wait(qtbot, tab, tab.regenerate)
    assert sibling.parent is None and sibling.prompt == root.prompt and sibling.seed != root.seed
    assert tab.tree.topLevelItemCount() == 2

    # Continue extends the shown branch in place with a new segment.
    run_and_wait(qtbot, tab, tab.continue_branch)
    assert len(sibling.tokens) == 16 and len(sibling.segments) == 2
    assert sibling.segments[1].start == 8 and sibling.segments[1].kind == "continue"

    # A child of the root, then a regenerated sibling of that child (same pick, same parent).
    tab.show_branch(root.id)
    alt = next(a[0] for a in root.tokens[2].top_before if a[0] != root.tokens[2].token_id)
    child = run_and_wait(qtbot, tab, lambda: tab.pick_alternative(2, alt))
    twin = run_and_wait(qtbot, tab, tab.regenerate)
    assert twin.parent == root.id and twin.token_ids()[:3] == child.token_ids()[:3]
    assert twin.tokens[2].picked

    # Deleting the root re-parents its children; nothing else is lost.
    tab.show_branch(root.id)
    tab.delete_button.click()
    assert tab.store.get(root.id) is None
    assert child.parent is None and twin.parent is None
    assert len(tab.store) == 3 and tab.tree.topLevelItemCount() == 3
    tab.delete_branch(child.id)
    assert len(tab.store) == 2 and child.id not in tab._items


def test_empty_prompt_says_it_starts_from_the_start_token(window, tab, qtbot):
    set_config(window, seed=1)
    tab.prompt.setPlainText("")
    tab.max_tokens.setValue(3)
    branch = run_and_wait(qtbot, tab, tab.generate)
    assert len(branch.tokens) == 3
    assert any("empty prompt" in n for n in tab.notes(branch.id))
    assert "empty prompt: starting from <|endoftext|>" in tab.status_text()


def test_window_slides_are_reported(window, tab, qtbot):
    set_config(window, strategy="greedy")
    tab.prompt.setPlainText("KING:")
    tab.max_tokens.setValue(140)  # the fixture's window is 128 tokens
    branch = run_and_wait(qtbot, tab, tab.generate)
    assert branch.tokens[-1].window_slides >= 1
    assert any("window slid" in n for n in tab.notes())
    assert "window slid" in tab.status_text()


def test_a_prompt_the_model_cannot_encode_shows_why_and_keeps_the_text(qtbot, tmp_path, capsys):
    # A char model: the fixture's weights with a 400-character alphabet card.
    folder = tmp_path / "models" / "tiny-char"
    folder.mkdir(parents=True)
    shutil.copy(FIXTURES / MODEL / "model.onnx", folder / "model.onnx")
    vocab = ["\n"] + [chr(c) for c in range(32, 32 + 399)]
    (folder / "card.json").write_text(json.dumps({
        "id": "tiny-char", "kind": "text", "files": {"decoder": "model.onnx"},
        "architecture": {"n_layer": 2, "n_head": 2, "n_embd": 32, "vocab_size": 400},
        "context_length": 128, "tokenizer": {"type": "char", "vocab": vocab},
        "decoding_defaults": {"temperature": 0.7, "top_k": 5},
    }))
    w = new_window(qtbot, tmp_path / "models")
    tab = w.tab("Text")
    assert tab.select_model("tiny-char")
    tab.prompt.setPlainText("price: 5€ ☃")
    tab.generate()
    qtbot.waitUntil(lambda: not tab.is_running(), timeout=RUN_TIMEOUT_MS)
    assert "no character(s) '€', '☃'" in tab.status_text()
    assert "no character(s)" in w.statusBar().currentMessage()
    assert tab.prompt.toPlainText() == "price: 5€ ☃"
    assert len(tab.store) == 0  # a run that produced nothing leaves no branch
    tab.prompt.setPlainText("price: 5")
    tab.max_tokens.setValue(30)
    branch = run_and_wait(qtbot, tab, tab.generate)
    assert len(branch.tokens) == 30
    assert tab.view.plain_text() == "price: 5" + tab.branch_text(branch)
    # The card's decoding defaults (temperature 0.7, top-k 5) are what both the CLI and the tab
    # start from, so the command needs no decoding flags.
    assert w.ctx.decoding_config("text").replace(seed=None) == DecodingConfig(temperature=0.7, top_k=5)
    args = tab.cli_arguments(branch)
    assert "--temperature" not in args and "--top-k" not in args
    out = cli_json(capsys, *args)
    assert out["samples"][0]["text"] == tab.branch_text(branch)
    w.close()


# --- colours ------------------------------------------------------------------------------
def test_colour_modes_and_legend(window, tab, qtbot):
    set_config(window, seed=3)
    tab.prompt.setPlainText("KING:")
    tab.max_tokens.setValue(6)
    branch = run_and_wait(qtbot, tab, tab.generate)
    assert rank_colour(1) == rank_colour(10) != rank_colour(11) != rank_colour(1001)
    assert probability_colour(1.0) != probability_colour(1e-5)
    for mode in ("rank", "entropy", "probability"):
        tab.set_colour_mode(mode)
        assert tab.view.mode() == mode and tab.legend.mode == mode
        assert tab.view.records() == branch.tokens  # re-rendered, same tokens
        assert all(colour_for(r, mode) for r in branch.tokens)


# --- score ----------------------------------------------------------------------------------
def test_score_mode_shows_the_totals_of_score_text(window, tab, qtbot, gpt2, tmp_path, monkeypatch):
    page = tab.score
    page.prompt.setText("KING:")
    page.text.setPlainText("What is their name, and what their king?")
    page.score_button.click()
    qtbot.waitUntil(lambda: page.result is not None and not page.runner.is_busy(), timeout=RUN_TIMEOUT_MS)
    r = score_text(gpt2, "What is their name, and what their king?", "KING:")
    res = page.result
    assert res.total_logprob == pytest.approx(r.total_logprob)
    assert res.bits_per_char == pytest.approx(r.bits_per_char)
    assert res.perplexity == pytest.approx(r.perplexity)
    assert res.n_tokens == len(r.token_ids)
    shown = page.totals.text()
    assert f"{r.total_logprob:.3f} nats" in shown and f"{r.bits_per_char:.4f} bits/char" in shown
    assert f"perplexity {r.perplexity:.3f}" in shown and f"{len(r.token_ids)} tokens" in shown
    assert [t.token_id for t in page.view.records()] == r.token_ids

    # Loading: a good UTF-8 file fills the editor; a bad one says why and keeps the text.
    good = tmp_path / "good.txt"
    good.write_text("ROMEO: hello", encoding="utf-8")
    monkeypatch.setattr(QFileDialog, "getOpenFileName", lambda *a, **k: (str(good), ""))
    page.load_button.click()
    assert page.text.toPlainText() == "ROMEO: hello"
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"ok \xff\xfe\x00 not text")
    monkeypatch.setattr(QFileDialog, "getOpenFileName", lambda *a, **k: (str(bad), ""))
    page.load_button.click()
    assert "bad.txt is not UTF-8 text" in page.totals.text()
    assert page.text.toPlainText() == "ROMEO: hello"
    with pytest.raises(ValueError, match="cannot read"):
        read_text_file(str(tmp_path / "missing.txt"))

    # Scoring nothing is a clear message, not a traceback.
    page.text.setPlainText("")
    page.score_button.click()
    qtbot.waitUntil(lambda: not page.runner.is_busy(), timeout=RUN_TIMEOUT_MS)
    assert "nothing to score" in page.totals.text()


# --- compare --------------------------------------------------------------------------------
def test_compare_shows_greedy_nucleus_beam_and_current(window, tab, qtbot, gpt2):
    set_config(window, temperature=0.8, top_k=20, seed=11)
    tab.prompt.setPlainText("ROMEO:")
    tab.max_tokens.setValue(8)
    page = tab.compare
    page.run_button.click()
    qtbot.waitUntil(lambda: not page.runner.is_busy(), timeout=RUN_TIMEOUT_MS)
    assert [s.key for s in page._specs] == ["greedy", "nucleus", "beam", "current"]
    ids = plan_prompt(gpt2, "ROMEO:", 8).ids

    greedy = list(stream_tokens(gpt2, ids, DecodingConfig(strategy="greedy"), 8, seed=0))
    col = page.column("greedy")
    assert col.text == gpt2.tokenizer.decode([e.token_id for e in greedy])
    assert col.total_logprob == pytest.approx(sum(e.logprob for e in greedy))
    assert [r.token_id for r in col.view.records()] == [e.token_id for e in greedy]

    current = list(stream_tokens(gpt2, ids, DecodingConfig(temperature=0.8, top_k=20, seed=11), 8, seed=11))
    assert page.column("current").text == gpt2.tokenizer.decode([e.token_id for e in current])
    assert "seed 11" in page.column("current").info.text()

    beams = beam_generate(gpt2, ids, DecodingConfig(strategy="beam", num_beams=4, num_return_sequences=4), 8)
    col = page.column("beam")
    assert len(col.beams) == 4
    assert [b.text for b in col.beams] == [b.text for b in beams]
    assert [b.total_logprob for b in col.beams] == pytest.approx([b.total_logprob for b in beams])
    assert [b.score for b in col.beams] == pytest.approx([b.score for b in beams])
    assert f"log p {beams[0].total_logprob:.3f}" in col.view.toPlainText()
    assert f"log p = {beams[0].total_logprob:.3f} nats" in col.info.text()

    # Unticking leaves those columns out.
    page.checks["beam"].setChecked(False)
    page.checks["nucleus"].setChecked(False)
    page.run_button.click()
    qtbot.waitUntil(lambda: not page.runner.is_busy(), timeout=RUN_TIMEOUT_MS)
    assert [s.key for s in page._specs] == ["greedy", "current"] and len(page.columns) == 2


# --- export ---------------------------------------------------------------------------------
def test_export_json_and_text(window, tab, qtbot, tmp_path, monkeypatch):
    set_config(window, top_p=0.9, seed=99)
    tab.prompt.setPlainText("KING:")
    tab.max_tokens.setValue(12)
    branch = run_and_wait(qtbot, tab, tab.generate)
    out = tmp_path / "b.json"
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a, **k: (str(out), ""))
    tab.export_json_button.click()
    data = json.loads(out.read_text(encoding="utf-8"))
    assert data["model"] == MODEL and data["prompt"] == "KING:" and data["seed"] == 99
    assert data["settings"]["top_p"] == 0.9 and data["settings"]["seed"] == 99
    assert data["token_ids"] == branch.token_ids() and len(data["tokens"]) == len(data["logprobs"]) == 12
    assert sum(data["logprobs"]) == pytest.approx(data["total_logprob"])
    assert f"{sum(data['logprobs']):.2f}" == tab._items[branch.id].text(2)  # the shown total
    assert f"log p = {sum(data['logprobs']):.3f}" in tab.branch_info.text()
    assert data["text"] == tab.branch_text(branch)

    txt = tmp_path / "b.txt"
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a, **k: (str(txt), ""))
    tab.export_text_button.click()
    assert txt.read_text(encoding="utf-8") == "KING:" + tab.branch_text(branch)

    # A folder that does not exist: a clear message, nothing written.
    missing = tmp_path / "nope" / "b.json"
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a, **k: (str(missing), ""))
    tab.export_json_button.click()
    assert "Export failed" in tab.status_text() and "does not exist" in tab.status_text()
    assert not missing.exists()


def test_beam_strategy_points_to_compare(window, tab, qtbot):
    set_config(window, strategy="beam")
    tab.prompt.setPlainText("KING:")
    assert tab.generate() is None
    assert "Compare page" in tab.status_text() and len(tab.store) == 0
