"""The run history database (studio/history/store.py): runs, outputs, filters, the size cap,
schema migrations, crash recovery and hostile database files. No Qt."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from studio.history import store as history
from studio.history.store import HistoryStore, HistoryUnavailable

ROOT = Path(__file__).resolve().parents[1]


def request(kind="text", model="shakespeare-char", prompt="ROMEO:", seed=7, **extra):
    return {"chainrule_request": 1, "kind": kind, "model": model, "prompt": prompt,
            "decoding": {"seed": seed}, **extra}


@pytest.fixture
def store(tmp_path):
    s = HistoryStore(tmp_path / "data")
    yield s
    s.close()


def test_a_run_is_recorded_with_its_files_and_summary(store):
    run = store.start_run("text", request())
    assert store.get_run(run).status == "running"
    store.finish_run(run, files={"branch-1.json": b'{"x": 1}', "../../evil": b"2"},
                     summary={"logprob": -12.5, "seconds": 0.4}, status="done")
    row = store.get_run(run)
    assert (row.status, row.model, row.summary) == ("done", "shakespeare-char", {"logprob": -12.5, "seconds": 0.4})
    assert row.finished >= row.created
    assert 'prompt "ROMEO:"' in row.title and "seed 7" in row.title
    paths = store.output_paths(run)
    # Names are plain file names inside the run's folder: no way out of it.
    assert [p.name for p in paths] == ["branch-1.json", "evil"]
    assert all(p.parent == store.files_dir / str(run) for p in paths)
    assert paths[0].read_bytes() == b'{"x": 1}'
    assert store.request(run) == request()
    assert row.bytes == store.total_bytes() > len(b'{"x": 1}') + 1


def test_parent_runs_and_an_unknown_status(store):
    first = store.start_run("text", request())
    child = store.start_run("text", request(prompt="ROMEO: What"), parent=first)
    assert store.get_run(child).parent == first
    with pytest.raises(ValueError, match="status"):
        store.finish_run(child, status="exploded")
    store.delete([first])
    assert store.get_run(child).parent is None  # ON DELETE SET NULL
    orphan = store.start_run("text", request(), parent=999)
    assert store.get_run(orphan).parent is None


def test_filters_by_tab_model_text_and_star(store):
    a = store.start_run("text", request(prompt="To be or not"))
    b = store.start_run("image", request(kind="image", model="mnist-pixelcnn", prompt=None, label=3))
    c = store.start_run("text", request(model="gutenberg-bpe", prompt="100% sure_thing"))
    store.star(b)
    assert [r.id for r in store.list_runs()] == [c, b, a]  # newest first
    assert [r.id for r in store.list_runs(tab="text")] == [c, a]
    assert [r.id for r in store.list_runs(model="mnist-pixelcnn")] == [b]
    assert [r.id for r in store.list_runs(text="TO BE")] == [a]
    assert [r.id for r in store.list_runs(text="label 3")] == [b]
    # % and _ are literal characters in a search, not wildcards
    assert [r.id for r in store.list_runs(text="100%")] == [c]
    assert store.list_runs(text="1_0") == []
    assert [r.id for r in store.list_runs(starred=True)] == [b]
    assert [r.id for r in store.list_runs(starred=False, tab="text", limit=1)] == [c]
    assert [r.id for r in store.list_runs(before_id=c)] == [b, a]
    assert store.models() == ["gutenberg-bpe", "mnist-pixelcnn", "shakespeare-char"]
    assert store.models(tab="image") == ["mnist-pixelcnn"]


def test_delete_removes_rows_and_files(store):
    run = store.start_run("text", request())
    store.finish_run(run, files={"a.json": b"1"}, summary={}, status="stopped")
    folder = store.files_dir / str(run)
    assert folder.is_dir()
    assert store.delete([run]) == 1
    assert store.get_run(run) is None and not folder.exists() and store.total_bytes() == 0
    # finishing a run deleted while it ran keeps nothing
    gone = store.start_run("text", request())
    store.delete([gone])
    store.finish_run(gone, files={"a.json": b"1"}, summary={})
    assert not (store.files_dir / str(gone)).exists()


def test_the_size_cap_prunes_the_oldest_unstarred_runs(store):
    mb = 1024 * 1024
    ids = []
    for i in range(5):
        run = store.start_run("image", request(kind="image", seed=i))
        store.finish_run(run, files={"sample_1.png": bytes(mb // 2)}, summary={}, status="done")
        ids.append(run)
    store.star(ids[0])
    assert store.size_cap() == history.DEFAULT_SIZE_CAP
    pruned = store.set_size_cap(mb + mb // 2)  # room for about two and a half runs
    kept = [r.id for r in store.list_runs()]
    assert pruned == 3 and kept == [ids[4], ids[0]]  # the starred one stays, the newest stays
    assert store.total_bytes() <= mb + mb // 2
    assert not (store.files_dir / str(ids[1])).exists()
    # a new run over the cap pushes out the oldest unstarred one, never itself
    run = store.start_run("image", request(kind="image", seed=9))
    store.finish_run(run, files={"sample_1.png": bytes(mb // 2)}, summary={}, status="done")
    assert [r.id for r in store.list_runs()] == [run, ids[0]]
    # a cap below the minimum is the minimum (1 MB): the unstarred run goes, the starred one stays
    assert store.set_size_cap(10) == 1 and store.size_cap() == history.MIN_SIZE_CAP
    assert [r.id for r in store.list_runs()] == [ids[0]]


def test_clear_keeps_starred_runs_when_asked(store):
    a, b, c = (store.start_run("text", request(seed=i)) for i in range(3))
    for run in (a, b):
        store.finish_run(run, files={"x.json": b"1"}, summary={})
    store.star(a)
    assert store.clear(keep_starred=True) == 1  # b; c is still running
    assert [r.id for r in store.list_runs()] == [c, a]
    store.finish_run(c, summary={})
    assert store.clear() == 2 and store.run_count() == 0


def test_tab_states_round_trip_and_are_bounded(store):
    assert store.tab_state("text") is None
    store.save_tab_state("text", {"prompt": "ROMEO:", "tree": {"branches": [1, 2]}})
    store.save_tab_state("text", {"prompt": "JULIET:"})
    assert store.tab_state("text") == {"prompt": "JULIET:"}
    with pytest.raises(ValueError, match="text tab's state"):
        store.save_tab_state("text", {"blob": "x" * (history.MAX_TAB_STATE_BYTES + 1)})
    assert store.tab_state("text") == {"prompt": "JULIET:"}


def test_the_database_is_in_wal_mode_and_reopens(tmp_path):
    s = HistoryStore(tmp_path)
    run = s.start_run("text", request())
    s.finish_run(run, summary={"logprob": -1.0})
    assert s._conn().execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    s.close()
    again = HistoryStore(tmp_path)
    assert again.get_run(run).status == "done" and again.recovered == []
    again.close()


# --- schema migrations ---------------------------------------------------------------------

# The schema as version 1 wrote it (frozen here: the migration test must not follow later edits).
V1_SCHEMA = """
CREATE TABLE runs (id INTEGER PRIMARY KEY AUTOINCREMENT, tab TEXT NOT NULL, model TEXT NOT NULL DEFAULT '',
    created REAL NOT NULL, finished REAL, status TEXT NOT NULL DEFAULT 'running', request TEXT NOT NULL,
    digest TEXT NOT NULL, parent INTEGER REFERENCES runs(id) ON DELETE SET NULL,
    summary TEXT NOT NULL DEFAULT '{}', starred INTEGER NOT NULL DEFAULT 0);
CREATE TABLE outputs (run INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE, name TEXT NOT NULL,
    path TEXT NOT NULL, PRIMARY KEY (run, name));
CREATE TABLE tab_state (tab TEXT PRIMARY KEY, state TEXT NOT NULL, saved REAL NOT NULL);
PRAGMA user_version = 1;
"""


def test_a_version_1_database_is_upgraded_and_keeps_its_rows(tmp_path):
    folder = tmp_path / "old"
    (folder / "files" / "1").mkdir(parents=True)
    (folder / "files" / "1" / "branch-1.json").write_bytes(b"0123456789")
    conn = sqlite3.connect(folder / history.DB_NAME)
    conn.executescript(V1_SCHEMA)
    req = json.dumps(request(prompt="Old times"))
    conn.execute("INSERT INTO runs (tab, model, created, finished, status, request, digest, summary, starred)"
                 " VALUES ('text', 'shakespeare-char', 100.0, 101.0, 'done', ?, 'd1', '{\"logprob\": -3.5}', 1)",
                 (req,))
    conn.execute("INSERT INTO runs (tab, model, created, status, request, digest, parent)"
                 " VALUES ('text', 'shakespeare-char', 102.0, 'stopped', ?, 'd2', 1)", (req,))
    conn.execute("INSERT INTO outputs VALUES (1, 'branch-1.json', 'files/1/branch-1.json')")
    conn.execute("INSERT INTO tab_state VALUES ('text', '{\"prompt\": \"Old\"}', 100.0)")
    conn.commit()
    conn.close()

    s = HistoryStore(folder)
    assert s.schema_version() == history.SCHEMA_VERSION == len(history.MIGRATIONS) >= 2
    rows = s.list_runs()
    assert [(r.id, r.status, r.starred, r.parent) for r in rows] == [(2, "stopped", False, 1), (1, "done", True, None)]
    old = s.get_run(1)
    assert old.summary == {"logprob": -3.5} and old.created == 100.0
    assert 'prompt "Old times"' in old.title  # filled in by the migration
    assert old.bytes == len(req) + len('{"logprob": -3.5}') + 10
    assert [r.id for r in s.list_runs(text="old times")] == [2, 1]
    assert s.output_paths(1) == [folder / "files" / "1" / "branch-1.json"]
    assert s.tab_state("text") == {"prompt": "Old"}
    new = s.start_run("text", request())  # and it works as a current database
    assert new == 3
    s.close()


def test_a_newer_schema_is_refused_in_one_line(tmp_path):
    conn = sqlite3.connect(tmp_path / history.DB_NAME)
    conn.execute(f"PRAGMA user_version = {history.SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(HistoryUnavailable, match="newer Chainrule Studio") as err:
        HistoryStore(tmp_path)
    assert "\n" not in str(err.value)


def test_a_corrupt_database_is_refused_in_one_line(tmp_path):
    (tmp_path / history.DB_NAME).write_bytes(b"this is not a database" * 200)
    with pytest.raises(HistoryUnavailable, match="cannot be opened") as err:
        HistoryStore(tmp_path)
    assert "\n" not in str(err.value)


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes anywhere")
def test_a_read_only_folder_is_refused_in_one_line(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(HistoryUnavailable, match="cannot be opened"):
            HistoryStore(folder)
    finally:
        folder.chmod(0o700)


def test_a_folder_that_cannot_be_made_is_refused_in_one_line(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(HistoryUnavailable, match="cannot be opened") as err:
        HistoryStore(blocker / "history")
    assert "\n" not in str(err.value)


# --- crashes ---------------------------------------------------------------------------------

CRASH = textwrap.dedent("""
    import os, sys
    from studio.history.store import HistoryStore
    s = HistoryStore(sys.argv[1])
    run = s.start_run("image", {"chainrule_request": 1, "kind": "image", "model": "mnist-pixelcnn"})
    (s.files_dir / str(run)).mkdir()
    (s.files_dir / str(run) / ".sample_1.png.partial").write_bytes(b"half")  # mid-write
    print(run, flush=True)
    os._exit(9)  # a crash: no close, no finish, the lock dies with the process
""")


def test_a_crash_mid_run_loses_only_that_run(tmp_path):
    s = HistoryStore(tmp_path)
    done = s.start_run("text", request())
    s.finish_run(done, files={"branch-1.json": b"{}"}, summary={"logprob": -2.0})
    s.close()
    proc = subprocess.run([sys.executable, "-c", CRASH, str(tmp_path)], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 9, proc.stderr
    crashed = int(proc.stdout.strip())

    s = HistoryStore(tmp_path)
    assert s.recovered == [crashed]
    lost = s.get_run(crashed)
    assert (lost.status, lost.note, lost.status_text) == ("failed", "interrupted", "failed (interrupted)")
    assert not (s.files_dir / str(crashed)).exists()  # its partial files are gone
    kept = s.get_run(done)
    assert kept.status == "done" and s.output_paths(done)[0].read_bytes() == b"{}"
    s.close()


def test_a_second_studio_does_not_fail_the_first_ones_running_runs(tmp_path):
    first = HistoryStore(tmp_path)
    run = first.start_run("text", request())
    second = HistoryStore(tmp_path)  # another window while the first is running
    assert second.recovered == [] and second.get_run(run).status == "running"
    first.finish_run(run, summary={})
    assert second.get_run(run).status == "done"  # WAL: it reads what the first wrote
    second.close()
    first.close()
