"""The Text tab's requests: every run recorded, the branch tree saved and restored in a new window,
exports that `chainrule generate --from` runs again, and apply_request restoring the settings."""

import dataclasses
import json
from pathlib import Path

import pytest
from PySide6.QtWidgets import QFileDialog

from engines.cli import main as cli_main
from engines.decoding.config import DecodingConfig
from engines.errors import InputError
from engines.text.request import TextRequest
from studio.text import work
from studio.text.work import Branch, BranchStore, Segment, TokenRecord
from tests.tab_helpers import new_window, set_config

FIXTURES = Path(__file__).parent / "fixtures"
MODEL = "tiny-gpt2-optimum"
RUN_TIMEOUT_MS = 10_000

pytestmark = pytest.mark.usefixtures("isolated_user_models")


class RunLog:
    """What a history store is told (the interface studio.context calls: start_run / finish_run)."""

    def __init__(self):
        self.started, self.finished = [], []

    def start_run(self, tab, request_json, parent=None):
        self.started.append((tab, request_json, parent))
        return len(self.started)

    def finish_run(self, run_id, *, files, summary, status):
        self.finished.append((run_id, files, summary, status))


def run_and_wait(qtbot, tab, action):
    result = action()
    assert result is not None, tab.status_text()
    qtbot.waitUntil(lambda: not tab.is_running(), timeout=RUN_TIMEOUT_MS)
    return result


def regenerate_from(capsys, path) -> dict:
    code = cli_main(["generate", "--from", str(path), "--models-dir", str(FIXTURES), "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    return json.loads(out)


def export_json(tab, branch, path, monkeypatch) -> dict:
    tab.show_branch(branch.id)
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a, **k: (str(path), ""))
    tab.export_json_button.click()
    return json.loads(Path(path).read_text(encoding="utf-8"))


def test_runs_are_recorded_exports_regenerate_and_the_tree_survives_a_new_window(qtbot, tmp_path, monkeypatch,
                                                                                   capsys):
    w = new_window(qtbot, FIXTURES)
    log = w.ctx.history = RunLog()
    tab = w.tab("Text")
    assert tab.select_model(MODEL)
    set_config(w, temperature=1.2, top_k=40, seed=21)
    tab.prompt.setPlainText("KING:")
    tab.max_tokens.setValue(8)
    tab.stop_edit.setText("\\n\\n, xyz")
    root = run_and_wait(qtbot, tab, tab.generate)
    alt = next(a[0] for a in root.tokens[2].top_before if a[0] != root.tokens[2].token_id)
    child = run_and_wait(qtbot, tab, lambda: tab.pick_alternative(2, alt, root.id))
    run_and_wait(qtbot, tab, tab.continue_branch)  # the child, continued with a second run
    assert child.parent == root.id and len(child.segments) == 2

    # Every run was recorded with its request; the pick and the continuation name their parent run.
    assert [s[0] for s in log.started] == ["text"] * 3
    assert [s[2] for s in log.started] == [None, 1, 2]
    assert [TextRequest.from_json(s[1]).prefix_pick for s in log.started] == [False, True, False]
    assert [f[0] for f in log.finished] == [1, 2, 3] and {f[3] for f in log.finished} == {"done"}
    files = log.finished[2][1]
    saved = json.loads(files[f"branch-{child.id}.json"])
    assert saved["text"] == tab.branch_text(child) and saved["request"]["prefix_ids"]
    assert log.finished[0][2]["logprob"] == pytest.approx(root.total_logprob)

    # Each branch's JSON export carries the request that makes its text again, bit for bit.
    for branch in (root, child):
        data = export_json(tab, branch, tmp_path / f"b{branch.id}.json", monkeypatch)
        assert data["request"]["kind"] == "text" and data["request"]["model_fingerprint"]
        again = regenerate_from(capsys, tmp_path / f"b{branch.id}.json")
        assert again["samples"][0]["text"] == data["text"] == tab.branch_text(branch)

    # The branch tree, saved, restores in a new window: the same tree, tokens, numbers and text.
    state = json.loads(json.dumps(tab.history_state()))
    assert len(json.dumps(state)) < work.MAX_HISTORY_STATE_BYTES
    labels = {b.id: tab._items[b.id].text(0) for b in tab.store.all()}
    w.close()
    w2 = new_window(qtbot, FIXTURES)
    tab2 = w2.tab("Text")
    tab2.restore_history_state(state)
    assert sorted(b.id for b in tab2.store.all()) == sorted(labels)
    assert {b.id: tab2._items[b.id].text(0) for b in tab2.store.all()} == labels
    assert tab2._items[child.id].parent() is tab2._items[root.id]
    assert tab2.shown_branch().id == child.id
    for old in (root, child):
        new = tab2.branch(old.id)
        strip = lambda t: dataclasses.replace(t, top_before=(), top_after=())  # noqa: E731
        assert [strip(t) for t in new.tokens] == [strip(t) for t in old.tokens]
        for a, b in zip(new.tokens, old.tokens):  # alternatives kept to 5 significant digits
            assert [x[:2] for x in a.top_before + a.top_after] == [x[:2] for x in b.top_before + b.top_after]
            assert [x[2] for x in a.top_before + a.top_after] == pytest.approx(
                [x[2] for x in b.top_before + b.top_after], rel=1e-4)
        assert new.segments == old.segments and new.prompt_ids == old.prompt_ids
    assert tab2.view.plain_text() == "KING:" + "".join(t.text for t in child.tokens)
    assert tab2.prompt.toPlainText() == "KING:" and tab2.max_tokens.value() == 8
    # ... and it goes on: continuing the restored branch works as before.
    n = len(tab2.branch(child.id).tokens)
    run_and_wait(qtbot, tab2, tab2.continue_branch)
    assert len(tab2.branch(child.id).tokens) == n + 8 and tab2.branch(child.id).segments[-1].kind == "continue"

    # Opening the root's export restores its settings: model, prompt, max tokens, stops and decoding.
    tab2.prompt.setPlainText("other")
    tab2.max_tokens.setValue(3)
    set_config(w2, strategy="greedy")
    request = TextRequest.from_json(json.loads((tmp_path / f"b{root.id}.json").read_text())["request"])
    tab2.apply_request(request)
    assert tab2.prompt.toPlainText() == "KING:" and tab2.max_tokens.value() == 8
    assert tab2.stop_edit.text() and request.stop == ("\n\n", "xyz")
    assert w2.ctx.decoding_config("text") == DecodingConfig(temperature=1.2, top_k=40, seed=21)
    again = run_and_wait(qtbot, tab2, tab2.generate)
    assert again.token_ids() == root.token_ids()
    with pytest.raises(InputError, match="not installed"):
        tab2.apply_request(request.replace(model="no-such-model"))
    w2.close()


def test_a_state_that_no_longer_fits_shows_a_line_and_keeps_the_tab_usable(qtbot):
    w = new_window(qtbot, FIXTURES)
    tab = w.tab("Text")
    tab.restore_history_state({"version": 1, "tree": {"branches": [{"id": "x"}]}})
    assert "could not be restored" in tab.status_text() and len(tab.store) == 0
    tab.restore_history_state(["not", "a", "state"])
    assert "could not be restored" in tab.status_text()
    rec = TokenRecord(3, "a", -1.0)
    gone = Branch(1, None, "removed-model", "p", (1,), [rec], 0,
                  [Segment(0, 1, "greedy", {}, 1, (), "generate", None)], None, "done")
    store = BranchStore()
    store.add(gone)
    tab.restore_history_state({"version": 1, "model": "removed-model", "tree": store.to_state(1)})
    assert len(tab.store) == 1 and "no longer installed" in tab.status_text()
    assert tab.select_model(MODEL) and tab.generate_button.isEnabled()
    w.close()


def test_the_saved_tree_is_bounded_and_keeps_the_shown_branch_whole():
    alts = tuple((i, f"tok{i}", 0.01) for i in range(10))
    store = BranchStore()
    for _ in range(6):
        bid = store.new_id()
        tokens = [TokenRecord(i % 50, "x", -1.5, 1, 2.0, alts, alts) for i in range(300)]
        store.add(Branch(bid, None, MODEL, "p", (1,), tokens, 0, [Segment(0, bid, "c", {}, 300)]))
    full = len(json.dumps(work.branch_to_state(store.get(3)))) + 2
    bare = len(json.dumps(work.branch_to_state(store.get(1), alternatives=False))) + 2
    state = store.to_state(shown=3, max_bytes=full + 5 * bare)  # room for the shown one's alternatives only
    assert len(json.dumps(state["branches"])) <= full + 5 * bare and state["dropped"] == 0
    kept = {row["id"]: row for row in state["branches"]}
    assert kept[3]["tokens"][0][7] and not any(kept[i]["tokens"][0][7] for i in (1, 2, 4, 5, 6))
    restored = BranchStore.from_state(json.loads(json.dumps(state)))
    assert [t.top_before for t in restored.get(3).tokens] == [t.top_before for t in store.get(3).tokens]
    assert restored.get(1).tokens[0].top_before == () and restored.new_id() == 7

    small = store.to_state(shown=3, max_bytes=3 * bare)  # whole branches go, oldest first, the shown one last
    assert [row["id"] for row in small["branches"]] == [5, 6, 3] and small["dropped"] == 3
    assert len(json.dumps(small["branches"])) <= 3 * bare


def test_each_compare_column_is_a_recorded_run_whose_file_regenerates(qtbot, tmp_path, capsys):
    w = new_window(qtbot, FIXTURES)
    log = w.ctx.history = RunLog()
    tab = w.tab("Text")
    assert tab.select_model(MODEL)
    set_config(w, temperature=0.9, seed=5)
    tab.prompt.setPlainText("ROMEO:")
    tab.max_tokens.setValue(6)
    page = tab.compare
    page.checks["nucleus"].setChecked(False)
    page.run_button.click()
    qtbot.waitUntil(lambda: not page.runner.is_busy(), timeout=RUN_TIMEOUT_MS)
    kinds = [TextRequest.from_json(s[1]).decoding.strategy for s in log.started]
    assert kinds == ["greedy", "beam", "sample"]
    assert [f[3] for f in log.finished] == ["done"] * 3
    for (run_id, files, summary, _status), key in zip(log.finished, ["greedy", "beam", "current"]):
        path = tmp_path / f"{key}.json"
        path.write_bytes(files[f"compare-{key}.json"])
        again = regenerate_from(capsys, path)
        assert again["samples"][0]["text"] == page.column(key).text
        assert summary["logprob"] == pytest.approx(page.column(key).total_logprob)
    w.close()


def test_a_reopened_run_puts_its_branch_back_in_the_tree(qtbot, tmp_path, monkeypatch):
    w = new_window(qtbot, FIXTURES)
    tab = w.tab("Text")
    assert tab.select_model(MODEL)
    set_config(w, seed=8)
    tab.prompt.setPlainText("ROMEO:")
    tab.max_tokens.setValue(7)
    branch = run_and_wait(qtbot, tab, tab.generate)
    data = export_json(tab, branch, tmp_path / "branch-1.json", monkeypatch)
    tab.show_history_outputs([tmp_path / "branch-1.json"])  # still in the tree: shown, not added
    assert len(tab.store) == 1 and tab.shown_branch() is branch
    tab.delete_branch(branch.id)
    tab.show_history_outputs([tmp_path / "other.png", tmp_path / "branch-1.json"])
    back = tab.shown_branch()
    assert back is not None and back.token_ids() == data["token_ids"] and tab.branch_text(back) == data["text"]
    assert [t.logprob for t in back.tokens] == data["logprobs"] and back.seed == 8
    assert tab.cli_command(back) == data["cli"]
    (tmp_path / "branch-2.json").write_text('{"model": "x"}')
    with pytest.raises(InputError, match="not a Text-tab branch export"):
        tab.open_branch_export(tmp_path / "branch-2.json")
    w.close()
