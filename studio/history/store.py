"""The run history: one SQLite database (stdlib `sqlite3`, WAL mode) and a folder of output files.

Layout of the history folder (the user data dir, or $CHAINRULE_STUDIO_DATA):

    history.sqlite3      runs, their outputs, each tab's last state, settings
    history.lock         held (flock) by the studio that owns the history while it runs
    files/<run id>/NAME  the exported bytes of each output (written atomically)

A run is recorded twice: `start_run` commits a 'running' row before any model work, and
`finish_run` writes the files, then commits them and the summary in one transaction. A crash in
between leaves a 'running' row; the next studio to open the history marks it failed
('interrupted') and removes its partial files, so a crash loses only the run it interrupted.

Threads: each thread gets its own connection (sqlite3 objects must not cross threads); the
studio uses the store from the UI thread only (tabs call `ctx.record_run_*` from slots), and WAL
lets a second reader (another studio window) read while one writes.

Schema: `PRAGMA user_version` is the number of migrations applied; `MIGRATIONS` lists them in
order and each runs in its own transaction, so an old database is upgraded in place, its rows
kept. A database from a newer studio (a higher version) is refused with one line. No Qt here.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

log = logging.getLogger(__name__)

DB_NAME = "history.sqlite3"
LOCK_NAME = "history.lock"
FILES_DIR = "files"
STATUSES = ("running", "done", "stopped", "failed")
INTERRUPTED_NOTE = "interrupted"  # a run left 'running' by a crash: shown as "failed (interrupted)"
DEFAULT_SIZE_CAP = 500 * 1024 * 1024  # bytes of outputs and requests kept before the oldest go
MIN_SIZE_CAP = 1024 * 1024
MAX_TAB_STATE_BYTES = 4 * 1024 * 1024  # a tab's state is ~2 MB at most by contract
MAX_NAME_CHARS = 120  # an output file name
SEARCH_CHARS = 4000  # searchable text kept per run
TITLE_KEYS = ("prompt", "text", "label", "digit", "speaker", "seconds", "ordering", "guidance", "mode", "count")


class HistoryUnavailable(Exception):
    """The history cannot be opened or used (one line: what and why); the studio runs without it."""


@dataclass(frozen=True)
class RunRow:
    """One run as listed (no request: that can be megabytes; `HistoryStore.request(id)` reads it)."""

    id: int
    tab: str
    model: str
    created: float  # time.time() at start
    finished: float | None
    status: str  # one of STATUSES
    note: str  # 'interrupted' for a crash, else ''
    parent: int | None
    summary: dict[str, Any] = field(hash=False, compare=False)
    starred: bool = False
    title: str = ""
    bytes: int = 0

    @property
    def status_text(self) -> str:
        return f"{self.status} ({self.note})" if self.note else self.status


# --- schema ---------------------------------------------------------------------------------


def _v1_tables(conn: sqlite3.Connection, files: Path) -> None:
    """Runs, their output files and each tab's last state."""
    for sql in (
        """CREATE TABLE runs (
               id INTEGER PRIMARY KEY AUTOINCREMENT,
               tab TEXT NOT NULL,
               model TEXT NOT NULL DEFAULT '',
               created REAL NOT NULL,
               finished REAL,
               status TEXT NOT NULL DEFAULT 'running',
               request TEXT NOT NULL,
               digest TEXT NOT NULL,
               parent INTEGER REFERENCES runs(id) ON DELETE SET NULL,
               summary TEXT NOT NULL DEFAULT '{}',
               starred INTEGER NOT NULL DEFAULT 0)""",
        """CREATE TABLE outputs (
               run INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
               name TEXT NOT NULL,
               path TEXT NOT NULL,
               PRIMARY KEY (run, name))""",
        """CREATE TABLE tab_state (tab TEXT PRIMARY KEY, state TEXT NOT NULL, saved REAL NOT NULL)""",
    ):
        conn.execute(sql)


def _v2_search_and_sizes(conn: sqlite3.Connection, files: Path) -> None:
    """Searchable title/text, the crash note, size accounting (for the cap), settings, indexes;
    existing rows get their title, search text and sizes filled in."""
    for sql in (
        "ALTER TABLE runs ADD COLUMN title TEXT NOT NULL DEFAULT ''",
        "ALTER TABLE runs ADD COLUMN search TEXT NOT NULL DEFAULT ''",
        "ALTER TABLE runs ADD COLUMN note TEXT NOT NULL DEFAULT ''",
        "ALTER TABLE runs ADD COLUMN bytes INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE outputs ADD COLUMN bytes INTEGER NOT NULL DEFAULT 0",
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        "CREATE INDEX runs_by_tab ON runs(tab, id)",
        "CREATE INDEX runs_by_model ON runs(model, id)",
        "CREATE INDEX runs_by_star ON runs(starred, id)",
    ):
        conn.execute(sql)
    folder = files.parent
    for run, name, rel in conn.execute("SELECT run, name, path FROM outputs").fetchall():
        try:
            size = (folder / rel).stat().st_size
        except OSError:
            size = 0
        conn.execute("UPDATE outputs SET bytes = ? WHERE run = ? AND name = ?", (size, run, name))
    for run_id, tab, model, request, summary in conn.execute(
            "SELECT id, tab, model, request, summary FROM runs").fetchall():
        data = _loads(request)
        title = run_title(data)
        out_bytes = conn.execute("SELECT COALESCE(SUM(bytes), 0) FROM outputs WHERE run = ?", (run_id,)).fetchone()[0]
        conn.execute("UPDATE runs SET title = ?, search = ?, bytes = ? WHERE id = ?",
                     (title, search_text(tab, model, title, data), out_bytes + len(request) + len(summary), run_id))


# In order: MIGRATIONS[i] takes a database from version i to i + 1. Append; never edit one released.
MIGRATIONS: list[Callable[[sqlite3.Connection, Path], None]] = [_v1_tables, _v2_search_and_sizes]
SCHEMA_VERSION = len(MIGRATIONS)

_LIST_COLUMNS = "id, tab, model, created, finished, status, note, parent, summary, starred, title, bytes"


# --- what a run is called and found by --------------------------------------------------------


def _loads(text: str | None) -> Any:
    try:
        return json.loads(text) if text else {}
    except ValueError:
        return {}


def _short(value: Any, limit: int = 60) -> str:
    text = " ".join(str(value).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def run_title(request: Any) -> str:
    """A one-line description of a request: its prompt, label or mode, count and seed."""
    if not isinstance(request, Mapping):
        return ""
    parts = []
    for key in TITLE_KEYS:
        value = request.get(key)
        if isinstance(value, str) and value:
            parts.append(f'{key} "{_short(value)}"' if key in ("prompt", "text") else f"{key} {_short(value, 30)}")
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            parts.append(f"{key} {value}")
    decoding = request.get("decoding")
    if isinstance(decoding, Mapping) and isinstance(decoding.get("seed"), int):
        parts.append(f"seed {decoding['seed']}")
    return " · ".join(parts)


def search_text(tab: str, model: str, title: str, request: Any) -> str:
    """Lower-case text a run is found by: tab, model, title and the request's strings (no base64 data)."""
    words = [tab, model, title]
    stack = [request]
    while stack and sum(map(len, words)) < SEARCH_CHARS:
        node = stack.pop()
        if isinstance(node, Mapping):
            stack.extend(v for k, v in node.items() if k not in ("data", "sha256"))
        elif isinstance(node, list):
            stack.extend(node[:50])
        elif isinstance(node, str):
            words.append(node[:500])
    return " ".join(words).lower()[:SEARCH_CHARS]


def safe_output_name(name: str) -> str:
    """`name` as one plain file name: no folders, no '..', no control characters."""
    base = str(name).replace("\\", "/").rsplit("/", 1)[-1]
    base = "".join(c if c.isprintable() and c not in '<>:"|?*' else "_" for c in base).strip(" .")
    return (base or "output")[:MAX_NAME_CHARS]


# --- the store ------------------------------------------------------------------------------


class HistoryStore:
    """The history kept in `folder` (created if needed). Raises HistoryUnavailable when it cannot
    be opened (a corrupt database, a read-only folder, a newer schema)."""

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder).expanduser()
        self.db_path = self.folder / DB_NAME
        self.files_dir = self.folder / FILES_DIR
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock_file = None
        self.recovered: list[int] = []  # runs found interrupted at open (a crash lost them)
        # Called (no arguments, on the thread that made the change) after anything changes: the
        # History panel coalesces them into one refresh.
        self.listeners: list[Callable[[], None]] = []
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            self.files_dir.mkdir(exist_ok=True)
            owner = self._take_lock()
            conn = self._conn()
            conn.execute("PRAGMA journal_mode=WAL").fetchone()
            self._migrate(conn)
            if owner:  # no other studio is using the history: what is left 'running' was cut off
                self._recover_interrupted(conn)
        except HistoryUnavailable:
            self.close()
            raise
        except (OSError, sqlite3.Error) as exc:
            self.close()
            raise HistoryUnavailable(f"the history in {self.folder} cannot be opened: {_reason(exc)}") from None

    # --- connections ----------------------------------------------------------------------
    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            # isolation_level=None: autocommit; transactions are explicit (`_transaction`).
            conn = sqlite3.connect(str(self.db_path), timeout=5.0, isolation_level=None)
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute("PRAGMA synchronous=NORMAL")  # WAL: a crash never corrupts, at most loses the last commit
            self._local.conn = conn
            self._connections.append(conn)
        return conn

    def _transaction(self):
        return _Transaction(self._conn())

    def _changed(self) -> None:
        for listener in list(self.listeners):
            try:
                listener()
            except Exception:  # noqa: BLE001 - a broken listener must not undo a recorded run
                log.exception("history: a change listener failed")

    def close(self) -> None:
        for conn in self._connections:
            try:
                conn.close()
            except sqlite3.Error:
                pass
        self._connections.clear()
        self._local = threading.local()
        if self._lock_file is not None:
            try:
                self._lock_file.close()  # releases the flock
            except OSError:
                pass
            self._lock_file = None

    def _take_lock(self) -> bool:
        """True when this store is the only one using the folder (then it may recover crashed runs)."""
        try:
            import fcntl
        except ImportError:  # Windows: no flock; assume one studio at a time
            return True
        handle = open(self.folder / LOCK_NAME, "a+")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            return False  # another studio has it open: its 'running' runs may really be running
        self._lock_file = handle
        return True

    # --- schema -----------------------------------------------------------------------------
    def _migrate(self, conn: sqlite3.Connection) -> None:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise HistoryUnavailable(
                f"the history in {self.folder} was written by a newer Chainrule Studio (schema {version}; "
                f"this version reads up to {SCHEMA_VERSION}): update the studio, or move that folder away")
        for number in range(version, SCHEMA_VERSION):
            with _Transaction(conn, immediate=True):
                # Read again inside the write lock: another studio may have just migrated.
                if conn.execute("PRAGMA user_version").fetchone()[0] != number:
                    continue
                MIGRATIONS[number](conn, self.files_dir)
                conn.execute(f"PRAGMA user_version = {number + 1}")

    def schema_version(self) -> int:
        return self._conn().execute("PRAGMA user_version").fetchone()[0]

    def _recover_interrupted(self, conn: sqlite3.Connection) -> None:
        with _Transaction(conn):
            ids = [r[0] for r in conn.execute("SELECT id FROM runs WHERE status = 'running'")]
            conn.execute("UPDATE runs SET status = 'failed', note = ? WHERE status = 'running'", (INTERRUPTED_NOTE,))
            if ids:
                conn.execute(f"DELETE FROM outputs WHERE run IN ({','.join('?' * len(ids))})", ids)
        for run_id in ids:
            shutil.rmtree(self.files_dir / str(run_id), ignore_errors=True)  # partial files of a cut-off run
        if ids:
            log.warning("history: %d run(s) were interrupted by a crash: %s", len(ids), ids)
        self.recovered = ids
        # Folders of runs no longer in the database (a delete cut off between the row and the files).
        known = {str(r[0]) for r in conn.execute("SELECT id FROM runs")}
        for entry in self.files_dir.iterdir():
            if entry.is_dir() and entry.name not in known:
                shutil.rmtree(entry, ignore_errors=True)

    # --- runs -----------------------------------------------------------------------------
    def start_run(self, tab: str, request_json: Mapping[str, Any], parent: int | None = None) -> int:
        """Record a run of `tab` that is starting now; its id."""
        from engines.requests import request_digest

        text = json.dumps(request_json, ensure_ascii=False, sort_keys=True)
        model = request_json.get("model") if isinstance(request_json, Mapping) else None
        model = model if isinstance(model, str) else ""
        title = run_title(request_json)
        with self._transaction() as conn:
            if parent is not None and conn.execute("SELECT 1 FROM runs WHERE id = ?", (parent,)).fetchone() is None:
                parent = None  # the parent was deleted meanwhile
            cur = conn.execute(
                "INSERT INTO runs (tab, model, created, status, request, digest, parent, title, search, bytes)"
                " VALUES (?, ?, ?, 'running', ?, ?, ?, ?, ?, ?)",
                (tab, model, time.time(), text, request_digest(request_json), parent, title,
                 search_text(tab, model, title, request_json), len(text)))
        self._changed()
        return int(cur.lastrowid)

    def finish_run(self, run_id: int, files: Mapping[str, bytes] | None = None,
                   summary: Mapping[str, Any] | None = None, status: str = "done") -> None:
        """Store a run's output files (name -> exported bytes) and summary; then prune to the size cap."""
        from engines.atomic import write_bytes

        if status not in STATUSES[1:]:
            raise ValueError(f"status {status!r} is invalid: choose one of {', '.join(STATUSES[1:])}")
        conn = self._conn()
        row = conn.execute("SELECT request FROM runs WHERE id = ?", (run_id,)).fetchone()
        if row is None:
            return  # deleted (or cleared) while it ran: nothing to keep
        summary_text = json.dumps(dict(summary or {}), ensure_ascii=False, default=str)
        written = []
        folder = self.files_dir / str(run_id)
        for name, data in (files or {}).items():
            safe = safe_output_name(name)
            if any(safe == w[0] for w in written):
                safe = f"{len(written) + 1}-{safe}"
            folder.mkdir(parents=True, exist_ok=True)
            write_bytes(folder / safe, bytes(data))  # atomic: a crash leaves no half file
            written.append((safe, f"{FILES_DIR}/{run_id}/{safe}", len(data)))
        total = len(row[0]) + len(summary_text) + sum(w[2] for w in written)
        with self._transaction() as conn:
            conn.executemany("INSERT OR REPLACE INTO outputs (run, name, path, bytes) VALUES (?, ?, ?, ?)",
                             [(run_id, n, p, b) for n, p, b in written])
            conn.execute("UPDATE runs SET finished = ?, status = ?, summary = ?, bytes = ? WHERE id = ?",
                         (time.time(), status, summary_text, total, run_id))
        self.prune(keep=run_id)
        self._changed()

    def list_runs(self, tab: str | None = None, model: str | None = None, text: str | None = None,
                  starred: bool | None = None, limit: int = 500, before_id: int | None = None) -> list[RunRow]:
        """Runs, newest first, matching every filter given; `before_id` pages on (ids only grow)."""
        where, args = [], []
        if tab:
            where.append("tab = ?")
            args.append(tab)
        if model:
            where.append("model = ?")
            args.append(model)
        if text:
            escaped = text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            where.append("search LIKE ? ESCAPE '\\'")
            args.append(f"%{escaped}%")
        if starred is not None:
            where.append("starred = ?")
            args.append(1 if starred else 0)
        if before_id is not None:
            where.append("id < ?")
            args.append(before_id)
        sql = f"SELECT {_LIST_COLUMNS} FROM runs"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id DESC LIMIT ?"
        args.append(max(0, int(limit)))
        return [_row(r) for r in self._conn().execute(sql, args)]

    def get_run(self, run_id: int) -> RunRow | None:
        r = self._conn().execute(f"SELECT {_LIST_COLUMNS} FROM runs WHERE id = ?", (run_id,)).fetchone()
        return _row(r) if r else None

    def request(self, run_id: int) -> dict[str, Any] | None:
        """The request a run was made with (an envelope), or None for an unknown run."""
        r = self._conn().execute("SELECT request FROM runs WHERE id = ?", (run_id,)).fetchone()
        return _loads(r[0]) if r else None

    def models(self, tab: str | None = None) -> list[str]:
        sql, args = "SELECT DISTINCT model FROM runs", []
        if tab:
            sql, args = sql + " WHERE tab = ?", [tab]
        return sorted(r[0] for r in self._conn().execute(sql, args) if r[0])

    def output_paths(self, run_id: int) -> list[Path]:
        """The files kept for a run (those still on disk), in the order they were given."""
        rows = self._conn().execute("SELECT path FROM outputs WHERE run = ? ORDER BY rowid", (run_id,))
        paths = [self.folder / r[0] for r in rows]
        return [p for p in paths if p.is_file()]

    def star(self, run_id: int, starred: bool = True) -> None:
        with self._transaction() as conn:
            conn.execute("UPDATE runs SET starred = ? WHERE id = ?", (1 if starred else 0, run_id))
        self._changed()

    def delete(self, run_ids: Iterable[int]) -> int:
        """Delete runs and their files; how many were deleted."""
        ids = [int(i) for i in run_ids]
        if not ids:
            return 0
        removed = 0
        with self._transaction() as conn:
            for start in range(0, len(ids), 500):  # SQLite caps the number of ? in one statement
                chunk = ids[start:start + 500]
                cur = conn.execute(f"DELETE FROM runs WHERE id IN ({','.join('?' * len(chunk))})", chunk)
                removed += cur.rowcount
        for run_id in ids:  # after the commit: a crash here leaves folders the next start removes
            shutil.rmtree(self.files_dir / str(run_id), ignore_errors=True)
        if removed:
            self._changed()
        return removed

    def clear(self, keep_starred: bool = False) -> int:
        """Delete every run (but the starred ones with `keep_starred`) that is not running now."""
        sql = "SELECT id FROM runs WHERE status != 'running'" + (" AND starred = 0" if keep_starred else "")
        return self.delete(r[0] for r in self._conn().execute(sql).fetchall())

    # --- size -----------------------------------------------------------------------------
    def total_bytes(self) -> int:
        return int(self._conn().execute("SELECT COALESCE(SUM(bytes), 0) FROM runs").fetchone()[0])

    def run_count(self) -> int:
        return int(self._conn().execute("SELECT COUNT(*) FROM runs").fetchone()[0])

    def size_cap(self) -> int:
        raw = self._meta("size_cap")
        try:
            return max(MIN_SIZE_CAP, int(raw)) if raw is not None else DEFAULT_SIZE_CAP
        except ValueError:
            return DEFAULT_SIZE_CAP

    def set_size_cap(self, size_bytes: int) -> int:
        """Keep at most `size_bytes` (at least MIN_SIZE_CAP); prunes now; how many runs went."""
        cap = max(MIN_SIZE_CAP, int(size_bytes))
        with self._transaction() as conn:
            conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('size_cap', ?)", (str(cap),))
        return self.prune()

    def prune(self, keep: int | None = None) -> int:
        """Delete the oldest unstarred, finished runs until the total is within the cap (never `keep`)."""
        excess = self.total_bytes() - self.size_cap()
        if excess <= 0:
            return 0
        doomed = []
        rows = self._conn().execute(
            "SELECT id, bytes FROM runs WHERE starred = 0 AND status != 'running' AND id != ? ORDER BY id",
            (-1 if keep is None else keep,)).fetchall()
        for run_id, size in rows:
            if excess <= 0:
                break
            doomed.append(run_id)
            excess -= size
        return self.delete(doomed)

    def _meta(self, key: str) -> str | None:
        r = self._conn().execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return r[0] if r else None

    # --- tab states -----------------------------------------------------------------------
    def save_tab_state(self, tab: str, state: Mapping[str, Any]) -> None:
        """Keep `tab`'s last state (JSON-able, at most MAX_TAB_STATE_BYTES); ValueError when it is not."""
        text = json.dumps(state, ensure_ascii=False)
        if len(text) > MAX_TAB_STATE_BYTES:
            raise ValueError(f"the {tab} tab's state is {len(text):,} bytes; at most {MAX_TAB_STATE_BYTES:,} are kept")
        with self._transaction() as conn:
            conn.execute("INSERT OR REPLACE INTO tab_state (tab, state, saved) VALUES (?, ?, ?)",
                         (tab, text, time.time()))

    def tab_state(self, tab: str) -> dict[str, Any] | None:
        r = self._conn().execute("SELECT state FROM tab_state WHERE tab = ?", (tab,)).fetchone()
        state = _loads(r[0]) if r else None
        return state if isinstance(state, dict) else None


class _Transaction:
    """`with _Transaction(conn):` BEGIN ... COMMIT, ROLLBACK on an exception."""

    def __init__(self, conn: sqlite3.Connection, immediate: bool = False) -> None:
        self.conn = conn
        self.begin = "BEGIN IMMEDIATE" if immediate else "BEGIN"

    def __enter__(self) -> sqlite3.Connection:
        self.conn.execute(self.begin)
        return self.conn

    def __exit__(self, kind, exc, tb) -> None:
        self.conn.execute("COMMIT" if kind is None else "ROLLBACK")


def _row(r: tuple) -> RunRow:
    summary = _loads(r[8])
    return RunRow(id=r[0], tab=r[1], model=r[2], created=r[3], finished=r[4], status=r[5], note=r[6],
                  parent=r[7], summary=summary if isinstance(summary, dict) else {}, starred=bool(r[9]),
                  title=r[10], bytes=r[11])


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError):
        return exc.strerror or type(exc).__name__
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text
