"""The History panel (studio/history/panel.py) over a real store: paging, filters, star, delete,
export, the size cap and Clear; and how fast it lists 5,000 runs."""

from __future__ import annotations

import json
import time

import pytest

from studio.history.panel import PAGE_ROWS, HistoryPanel, summary_text
from studio.history.store import HistoryStore, run_title, search_text

N_RUNS = 5000
REFRESH_BUDGET_S = 0.5  # measured ~10-20 ms on an idle core; generous for a loaded test machine


def request(kind="text", model="shakespeare-char", prompt="ROMEO:", seed=1):
    return {"chainrule_request": 1, "kind": kind, "model": model, "prompt": prompt, "decoding": {"seed": seed}}


@pytest.fixture
def store(tmp_path):
    s = HistoryStore(tmp_path / "data")
    yield s
    s.close()


@pytest.fixture
def panel(qtbot, store):
    p = HistoryPanel()
    qtbot.addWidget(p)
    p.set_store(store)
    p.resize(900, 400)
    p.show()
    return p


def bulk_insert(store: HistoryStore, n: int) -> None:
    """n finished runs in one transaction (start_run/finish_run one by one take ~1 ms each)."""
    rows = []
    for i in range(n):
        kind, model = (("text", "shakespeare-char"), ("image", "mnist-pixelcnn"), ("audio", "fsdd-wavenet"))[i % 3]
        req = request(kind, model, prompt=f"prompt number {i}", seed=i)
        text, title = json.dumps(req), run_title(req)
        rows.append((kind, model, 1_700_000_000.0 + i, 1_700_000_001.0 + i, "done", text, f"d{i}",
                     json.dumps({"logprob": -float(i), "seconds": 0.5}), title, search_text(kind, model, title, req),
                     len(text)))
    with store._transaction() as conn:
        conn.executemany("INSERT INTO runs (tab, model, created, finished, status, request, digest, summary, title,"
                         " search, bytes) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)


def test_listing_5000_runs_stays_fast(panel, store, qtbot, record_property):
    bulk_insert(store, N_RUNS)
    t0 = time.perf_counter()
    panel.refresh()
    refresh_s = time.perf_counter() - t0
    assert panel.model.rowCount() == PAGE_ROWS  # one page read; the rest when scrolled to
    assert panel.model.rows[0].id == N_RUNS and panel.model.canFetchMore(panel.model.index(-1, -1))

    t0 = time.perf_counter()
    panel.text_filter.setText("number 4321")
    panel.apply_filters()
    search_s = time.perf_counter() - t0
    assert [r.id for r in panel.model.rows] == [4322]

    panel.text_filter.setText("")
    panel.tab_filter.setCurrentIndex(panel.tab_filter.findData("image"))  # applies at once
    assert {r.tab for r in panel.model.rows} == {"image"}
    t0 = time.perf_counter()
    panel.tab_filter.setCurrentIndex(0)
    panel.model.fetch_all()
    all_s = time.perf_counter() - t0
    assert panel.model.rowCount() == N_RUNS
    assert [r.id for r in panel.model.rows[:3]] == [N_RUNS, N_RUNS - 1, N_RUNS - 2]
    assert panel.model.rows[-1].id == 1
    panel.table.scrollToBottom()  # the view paints the last rows without reading anything more
    qtbot.wait(1)

    for name, value in (("refresh_s", refresh_s), ("search_s", search_s), ("fetch_all_s", all_s)):
        record_property(name, round(value, 4))
    print(f"5,000 runs: first page {refresh_s * 1000:.1f} ms, search {search_s * 1000:.1f} ms, "
          f"all rows {all_s * 1000:.1f} ms")
    assert refresh_s < REFRESH_BUDGET_S and search_s < REFRESH_BUDGET_S


def test_filters_star_delete_and_usage(panel, store, qtbot):
    a = store.start_run("text", request(prompt="To be"))
    store.finish_run(a, files={"branch-1.json": b"{}"}, summary={"logprob": -12.34, "tokens": 20, "seconds": 1.25})
    b = store.start_run("image", request("image", "mnist-pixelcnn", prompt=None))
    store.finish_run(b, files={"sample_1.png": b"png"}, summary={"logprob": -80.0, "samples": 4})
    qtbot.waitUntil(lambda: panel.model.rowCount() == 2)  # the store's change reached the panel
    assert panel.model.data(panel.model.index(0, 5)) == "log p -80.0 · 4 samples"
    assert panel.model.data(panel.model.index(1, 5)) == "log p -12.3 · 20 tokens · 1.2 s"
    assert "2 runs" in panel.usage.text()
    assert [panel.model_filter.itemData(i) for i in range(panel.model_filter.count())] == \
        [None, "mnist-pixelcnn", "shakespeare-char"]

    panel.model_filter.setCurrentIndex(panel.model_filter.findData("shakespeare-char"))
    assert [r.id for r in panel.model.rows] == [a]
    panel.model_filter.setCurrentIndex(0)

    panel.table.clicked.emit(panel.model.index(1, 0))  # the star column toggles
    assert store.get_run(a).starred
    panel.starred_only.setChecked(True)
    assert [r.id for r in panel.model.rows] == [a]
    panel.starred_only.setChecked(False)

    panel.select_ids([a, b])
    assert panel.selected_ids() == [b, a] and not panel.reopen_button.isEnabled()
    panel.toggle_star_selected()  # not all starred: star them all
    assert store.get_run(b).starred and store.get_run(a).starred
    panel.toggle_star_selected()
    assert not store.get_run(a).starred and not store.get_run(b).starred

    panel.select_ids([b])
    reopened = []
    panel.reopenRequested.connect(reopened.append)
    panel.reopen_selected()
    assert reopened == [b]
    assert panel.delete_selected(confirm=False) == 1
    qtbot.waitUntil(lambda: [r.id for r in panel.model.rows] == [a])
    assert not (store.files_dir / str(b)).exists()


def test_export_copies_the_selected_runs_files(panel, store, tmp_path, qtbot):
    runs = []
    for i in range(2):
        run = store.start_run("audio", request("audio", "fsdd-wavenet", seed=i))
        store.finish_run(run, files={"sample_1.wav": b"RIFF%d" % i, "sample_1.json": b'{"request": %d}' % i},
                         summary={})
        runs.append(run)
    panel.refresh()
    panel.select_ids(runs)
    out = tmp_path / "export"
    written = panel.export_selected(out)
    names = sorted(p.name for p in written)
    assert names == [f"run-{runs[0]}-sample_1.json", f"run-{runs[0]}-sample_1.wav",
                     f"run-{runs[1]}-sample_1.json", f"run-{runs[1]}-sample_1.wav"]
    assert (out / f"run-{runs[1]}-sample_1.wav").read_bytes() == b"RIFF1"
    again = panel.export_selected(out)  # never overwrites
    assert len(again) == 4 and all("(2)" in p.name for p in again)


def test_the_size_cap_and_clear(panel, store, qtbot):
    mb = 1024 * 1024
    ids = []
    for i in range(3):
        run = store.start_run("image", request("image", "mnist-pixelcnn", seed=i))
        store.finish_run(run, files={"sample_1.png": bytes(700 * 1024)}, summary={})
        ids.append(run)
    store.star(ids[0])
    panel.refresh()
    assert panel.cap_spin.value() == 500
    panel.cap_spin.setValue(2)  # 2 MB: the oldest unstarred run goes
    assert [r.id for r in store.list_runs()] == [ids[2], ids[0]]
    assert store.size_cap() == 2 * mb
    qtbot.waitUntil(lambda: panel.model.rowCount() == 2)
    assert panel.clear_history(keep_starred=True) == 1
    assert [r.id for r in store.list_runs()] == [ids[0]]
    assert panel.clear_history(keep_starred=False) == 1 and store.run_count() == 0


def test_without_a_store_the_panel_says_why(qtbot):
    p = HistoryPanel()
    qtbot.addWidget(p)
    p.set_store(None, "History is off: the history in /x cannot be opened: file is not a database")
    assert "file is not a database" in p.message.text() and not p.table.isEnabled()
    assert p.export_selected("/nonexistent") == [] and p.delete_selected(confirm=False) == 0


def test_summary_text_reads_the_tabs_keys():
    assert summary_text({"logprob": float("-inf"), "count": 2}) == "log p -inf · 2 samples"
    assert summary_text({"bits_per_dim": 1.0703}) == "bits/dim 1.07"
    assert summary_text({"label": "7", "note": "x"}) == "label 7 · note x"
    assert summary_text({}) == ""
