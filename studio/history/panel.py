"""The History panel: every recorded run, newest first, filtered by tab, model, text and star.

The list is a table model that reads the database a page at a time (`PAGE_ROWS` rows, paged
on the run id), so a history of thousands of runs lists as fast as one of a few hundred: the
view asks for the next page (`fetchMore`) only when it is scrolled to the end. Changes to the
store (a tab recorded a run) are coalesced into one refresh after `REFRESH_DELAY_MS`, and a
hidden panel refreshes only when it is shown again.

Re-opening a run is the window's business (it knows the tabs): the panel emits
`reopenRequested(run_id)`.
"""

from __future__ import annotations

import datetime as _dt
import logging
import math
from pathlib import Path
from typing import Any

from PySide6.QtCore import QAbstractTableModel, QModelIndex, QTimer, Qt, Signal
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QFileDialog,
    QHeaderView,
    QLabel,
    QLineEdit,
    QMessageBox,
    QTableView,
    QWidget,
)

from studio.history.store import HistoryStore, RunRow
from studio.widgets import STRETCH, check_box, hbox, push_button, spin_box, vbox

log = logging.getLogger(__name__)

PAGE_ROWS = 300  # rows read per page (a screenful is ~30)
REFRESH_DELAY_MS = 150  # changes within this window make one refresh
MB = 1024 * 1024
COLUMNS = ("★", "Time", "Tab", "Model", "Status", "Summary", "Request")
TAB_CHOICES = ("text", "image", "audio", "density")


def human_bytes(n: int) -> str:
    for unit, scale in (("GB", 1 << 30), ("MB", 1 << 20), ("kB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def _number(value: Any) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return None


def summary_text(summary: dict[str, Any]) -> str:
    """A run's summary in a few words: 'log p -83.4 · 4 samples · 2.1 s'."""
    parts = []
    for key, label in (("logprob", "log p"), ("log_likelihood", "log p"), ("nats", "nats"),
                       ("bits_per_dim", "bits/dim"), ("bits_per_char", "bits/char")):
        v = _number(summary.get(key))
        if v is not None:
            parts.append(f"{label} {v:.1f}" if math.isfinite(v) and key in ("logprob", "log_likelihood", "nats")
                         else f"{label} {v:.3g}")
            break
    for key, unit in (("samples", "samples"), ("count", "samples"), ("tokens", "tokens")):
        v = _number(summary.get(key))
        if v is not None:
            parts.append(f"{int(v)} {unit}")
            break
    seconds = _number(summary.get("seconds"))
    if seconds is not None:
        parts.append(f"{seconds:.1f} s")
    if not parts:  # a tab with its own keys: the first two
        parts = [f"{k} {v}" for k, v in list(summary.items())[:2] if isinstance(v, (str, int, float))]
    return " · ".join(parts)


class RunTableModel(QAbstractTableModel):
    """The runs matching the filters, read `PAGE_ROWS` at a time."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.store: HistoryStore | None = None
        self.filters: dict[str, Any] = {}
        self.rows: list[RunRow] = []
        self._cells: list[tuple[str, ...]] = []  # the formatted text of each row (formatted once)
        self._more = False

    def set_store(self, store: HistoryStore | None) -> None:
        self.store = store
        self.reload()

    def reload(self, **filters: Any) -> None:
        """Read the first page again (with new filters when given)."""
        if filters:
            self.filters = filters
        self.beginResetModel()
        self.rows, self._cells, self._more = [], [], False
        if self.store is not None:
            self._append(self._page(None))
        self.endResetModel()

    def _page(self, before: int | None) -> list[RunRow]:
        try:
            page = self.store.list_runs(limit=PAGE_ROWS + 1, before_id=before, **self.filters)
        except Exception as exc:  # noqa: BLE001 - a locked or vanished database: show nothing more
            log.warning("history: listing runs failed: %s", exc)
            page = []
        self._more = len(page) > PAGE_ROWS
        return page[:PAGE_ROWS]

    def _append(self, page: list[RunRow]) -> None:
        self.rows.extend(page)
        self._cells.extend(_cells(r) for r in page)

    # --- Qt's model interface -----------------------------------------------------------------
    def rowCount(self, parent: QModelIndex = QModelIndex()) -> int:  # noqa: N802, B008
        return 0 if parent.isValid() else len(self.rows)

    def columnCount(self, parent: QModelIndex = QModelIndex()) -> int:  # noqa: N802, B008
        return 0 if parent.isValid() else len(COLUMNS)

    def canFetchMore(self, parent: QModelIndex) -> bool:  # noqa: N802
        return not parent.isValid() and self._more and self.store is not None

    def fetchMore(self, parent: QModelIndex) -> None:  # noqa: N802
        if not self.canFetchMore(parent) or not self.rows:
            return
        page = self._page(self.rows[-1].id)
        if page:
            self.beginInsertRows(QModelIndex(), len(self.rows), len(self.rows) + len(page) - 1)
            self._append(page)
            self.endInsertRows()

    def fetch_all(self) -> None:
        while self.canFetchMore(QModelIndex()):
            self.fetchMore(QModelIndex())

    def data(self, index: QModelIndex, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid():
            return None
        row = self.rows[index.row()]
        if role in (Qt.ItemDataRole.DisplayRole, Qt.ItemDataRole.ToolTipRole):
            text = self._cells[index.row()][index.column()]
            if role == Qt.ItemDataRole.ToolTipRole and index.column() == 0:
                return "Starred runs are never pruned; click to star or unstar"
            return text
        if role == Qt.ItemDataRole.UserRole:
            return row.id
        if role == Qt.ItemDataRole.TextAlignmentRole and index.column() == 0:
            return int(Qt.AlignmentFlag.AlignCenter)
        return None

    def headerData(self, section: int, orientation: Qt.Orientation,  # noqa: N802
                   role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.DisplayRole:
            return COLUMNS[section]
        return None

    def row_of(self, run_id: int) -> int | None:
        for i, r in enumerate(self.rows):
            if r.id == run_id:
                return i
        return None


def _cells(r: RunRow) -> tuple[str, ...]:
    when = _dt.datetime.fromtimestamp(r.created).strftime("%Y-%m-%d %H:%M:%S")
    parent = f" (from #{r.parent})" if r.parent else ""
    return ("★" if r.starred else "☆", when, r.tab, r.model, r.status_text,
            summary_text(r.summary), f"#{r.id}{parent} {r.title}")


class HistoryPanel(QWidget):
    """Lists the store's runs; star, delete, re-open, export, size cap and clear. The window's
    History tab (studio/tabs/history_tab.py); the window gives it its store (`set_store`)."""

    uses_decoding_panel = False  # a full-width page, like Models
    reopenRequested = Signal(int)  # run id

    def __init__(self, ctx=None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.ctx = ctx  # StudioContext for status lines (None: the log)
        self.store: HistoryStore | None = None
        self._dirty = False
        self._refresh_timer = QTimer(self)
        self._refresh_timer.setSingleShot(True)
        self._refresh_timer.setInterval(REFRESH_DELAY_MS)
        self._refresh_timer.timeout.connect(self.refresh)
        self._build()
        self.set_store(None, "History is off.")

    # --- widgets ------------------------------------------------------------------------------
    def _build(self) -> None:
        self.tab_filter = QComboBox()
        self.tab_filter.setObjectName("HistoryTabFilter")
        self.tab_filter.addItem("All tabs", None)
        for key in TAB_CHOICES:
            self.tab_filter.addItem(key.capitalize(), key)
        self.model_filter = QComboBox()
        self.model_filter.setObjectName("HistoryModelFilter")
        self.model_filter.setMinimumContentsLength(14)
        self.model_filter.addItem("All models", None)
        self.text_filter = QLineEdit()
        self.text_filter.setObjectName("HistorySearch")
        self.text_filter.setPlaceholderText("Search prompts, models, settings…")
        self.text_filter.setClearButtonEnabled(True)
        self.starred_only = check_box("Starred only", "List only the starred runs")
        self._filter_timer = QTimer(self)  # typing: one query after a pause, not one per key
        self._filter_timer.setSingleShot(True)
        self._filter_timer.setInterval(200)
        self._filter_timer.timeout.connect(self.apply_filters)
        self.text_filter.textChanged.connect(lambda _t: self._filter_timer.start())
        self.tab_filter.currentIndexChanged.connect(lambda _i: self.apply_filters())
        self.model_filter.currentIndexChanged.connect(lambda _i: self.apply_filters())
        self.starred_only.toggled.connect(lambda _c: self.apply_filters())

        self.model = RunTableModel(self)
        self.table = QTableView()
        self.table.setObjectName("HistoryTable")
        self.table.setModel(self.model)
        self.table.verticalHeader().hide()
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setAlternatingRowColors(True)
        self.table.setWordWrap(False)
        self.table.verticalHeader().setDefaultSectionSize(self.table.fontMetrics().height() + 6)
        header = self.table.horizontalHeader()
        # Fixed widths, not ResizeToContents: that would measure every row at each refresh.
        header.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        header.setStretchLastSection(True)
        for column, width in enumerate((28, 150, 64, 140, 150, 240)):
            header.resizeSection(column, width)
        self.table.clicked.connect(self._on_click)
        self.table.doubleClicked.connect(lambda index: self.reopenRequested.emit(self.model.rows[index.row()].id))
        self.table.selectionModel().selectionChanged.connect(lambda *_: self._update_buttons())

        self.reopen_button = push_button("Re-open", "Switch to the run's tab and restore its request (double-click "
                                         "a row does the same)", self.reopen_selected)
        self.star_button = push_button("Star", "Star or unstar the selected runs (starred runs are never pruned)",
                                       self.toggle_star_selected)
        self.delete_button = push_button("Delete…", "Delete the selected runs and their files",
                                         lambda: self.delete_selected())
        self.export_button = push_button("Export…", "Copy the selected runs' output files (with their requests) "
                                         "into a folder", lambda: self.export_selected())
        self.cap_spin = spin_box(1, 1_000_000, 500, "Keep at most this much; the oldest unstarred runs go first",
                                 suffix=" MB")
        self.cap_spin.setPrefix("Keep up to ")
        self.cap_spin.setKeyboardTracking(False)
        self.cap_spin.valueChanged.connect(self._on_cap_changed)
        self.clear_button = push_button("Clear…", "Delete every run (starred ones too, if you choose)",
                                        lambda: self.clear_history())
        self.usage = QLabel()
        self.usage.setObjectName("Hint")
        self.message = QLabel()
        self.message.setObjectName("EmptyState")
        self.message.setWordWrap(True)
        self.message.hide()

        title = QLabel("Run history")
        title.setObjectName("PageTitle")
        hint = QLabel("Every run of every tab, newest first. Double-click a run to set its tab to it again.")
        hint.setObjectName("Hint")
        vbox(hbox(title, STRETCH, hint),
             hbox(self.tab_filter, self.model_filter, (self.text_filter, 1), self.starred_only),
             self.message, (self.table, 1),
             hbox(self.reopen_button, self.star_button, self.delete_button, self.export_button, STRETCH,
                  self.usage, self.cap_spin, self.clear_button),
             parent=self, margins=(12, 12, 12, 8))

    # --- store ----------------------------------------------------------------------------------
    def set_store(self, store: HistoryStore | None, reason: str = "") -> None:
        """Show `store`'s runs; None: the history is off (`reason` says why)."""
        if self.store is not None and self._schedule_refresh in self.store.listeners:
            self.store.listeners.remove(self._schedule_refresh)
        self.store = store
        enabled = store is not None
        for w in (self.tab_filter, self.model_filter, self.text_filter, self.starred_only, self.table,
                  self.cap_spin, self.clear_button):
            w.setEnabled(enabled)
        self.message.setVisible(not enabled)
        self.message.setText(reason or "History is off.")
        if store is not None:
            store.listeners.append(self._schedule_refresh)
            self.cap_spin.blockSignals(True)
            self.cap_spin.setValue(max(1, store.size_cap() // MB))
            self.cap_spin.blockSignals(False)
        self.model.set_store(store)
        self._refill_models()
        self._update_usage()
        self._update_buttons()

    def _schedule_refresh(self) -> None:
        if self.isVisible():
            self._refresh_timer.start()
        else:
            self._dirty = True  # read when shown

    def showEvent(self, event) -> None:  # noqa: N802 - Qt naming
        super().showEvent(event)
        if self._dirty:
            self.refresh()

    def refresh(self) -> None:
        """Read the runs again, keeping the filters and the selection."""
        self._dirty = False
        selected = set(self.selected_ids())
        self._refill_models()
        self.model.reload()
        self._select(selected)
        self._update_usage()
        self._update_buttons()

    def apply_filters(self) -> None:
        self.model.reload(tab=self.tab_filter.currentData(), model=self.model_filter.currentData(),
                          text=self.text_filter.text().strip() or None,
                          starred=True if self.starred_only.isChecked() else None)
        self._update_buttons()

    def _refill_models(self) -> None:
        current = self.model_filter.currentData()
        models = self.store.models() if self.store is not None else []
        if models == [self.model_filter.itemData(i) for i in range(1, self.model_filter.count())]:
            return
        self.model_filter.blockSignals(True)
        self.model_filter.clear()
        self.model_filter.addItem("All models", None)
        for m in models:
            self.model_filter.addItem(m, m)
        i = self.model_filter.findData(current)
        self.model_filter.setCurrentIndex(max(0, i))
        self.model_filter.blockSignals(False)

    def _update_usage(self) -> None:
        if self.store is None:
            self.usage.setText("")
            return
        try:
            self.usage.setText(f"{self.store.run_count():,} runs, {human_bytes(self.store.total_bytes())}")
        except Exception as exc:  # noqa: BLE001
            self.usage.setText(f"history unreadable: {exc}")

    def _update_buttons(self) -> None:
        ids = self.selected_ids()
        for b in (self.star_button, self.delete_button, self.export_button):
            b.setEnabled(bool(ids) and self.store is not None)
        self.reopen_button.setEnabled(len(ids) == 1 and self.store is not None)

    # --- selection ------------------------------------------------------------------------------
    def selected_ids(self) -> list[int]:
        rows = sorted({i.row() for i in self.table.selectionModel().selectedRows()})
        return [self.model.rows[r].id for r in rows if r < len(self.model.rows)]

    def select_ids(self, ids) -> None:
        self._select(set(ids))

    def _select(self, ids: set[int]) -> None:
        sel = self.table.selectionModel()
        sel.clearSelection()
        flags = sel.SelectionFlag.Select | sel.SelectionFlag.Rows
        for i, r in enumerate(self.model.rows):
            if r.id in ids:
                sel.select(self.model.index(i, 0), flags)

    # --- actions --------------------------------------------------------------------------------
    def _on_click(self, index: QModelIndex) -> None:
        if index.column() == 0 and self.store is not None:
            row = self.store.get_run(self.model.rows[index.row()].id)  # the listed one may be a moment old
            if row is not None:
                self.store.star(row.id, not row.starred)
                self.refresh()

    def reopen_selected(self) -> None:
        ids = self.selected_ids()
        if len(ids) == 1:
            self.reopenRequested.emit(ids[0])

    def toggle_star_selected(self) -> None:
        """Star the selected runs; unstar them when all are starred already."""
        if self.store is None:
            return
        rows = [r for r in map(self.store.get_run, self.selected_ids()) if r is not None]
        star = not all(r.starred for r in rows)
        for r in rows:
            self.store.star(r.id, star)
        self.refresh()

    def delete_selected(self, confirm: bool = True) -> int:
        ids = self.selected_ids()
        if self.store is None or not ids:
            return 0
        if confirm and QMessageBox.question(
                self, "Delete runs", f"Delete {len(ids)} run(s) and their files from the history?") \
                != QMessageBox.StandardButton.Yes:
            return 0
        removed = self.store.delete(ids)
        self.refresh()
        self._say(f"Deleted {removed} run(s) from the history")
        return removed

    def export_selected(self, folder: str | Path | None = None) -> list[Path]:
        """Copy the selected runs' output files into `folder` (asked for when None) as
        `run-<id>-<name>` (a sidecar keeps its sample's stem); the files written."""
        from engines.atomic import write_bytes

        ids = self.selected_ids()
        if self.store is None or not ids:
            return []
        if folder is None:
            folder = QFileDialog.getExistingDirectory(self, "Export runs to folder")
            if not folder:
                return []
        target = Path(folder)
        written: list[Path] = []
        try:
            target.mkdir(parents=True, exist_ok=True)
            for run_id in ids:
                for src in self.store.output_paths(run_id):
                    dest = _free_name(target / f"run-{run_id}-{src.name}")
                    write_bytes(dest, src.read_bytes())
                    written.append(dest)
        except OSError as exc:
            self._say(f"Export stopped: cannot write into {target}: {exc.strerror or exc}", error=True)
            return written
        if written:
            self._say(f"Exported {len(written)} file(s) from {len(ids)} run(s) to {target}")
        else:
            self._say("The selected runs kept no output files", error=True)
        return written

    def clear_history(self, keep_starred: bool | None = None) -> int:
        """Delete every finished run; `keep_starred` None asks (keep starred / delete all / cancel)."""
        if self.store is None:
            return 0
        if keep_starred is None:
            box = QMessageBox(QMessageBox.Icon.Warning, "Clear history",
                              "Delete the recorded runs and their files?", parent=self)
            keep = box.addButton("Delete unstarred", QMessageBox.ButtonRole.AcceptRole)
            everything = box.addButton("Delete all", QMessageBox.ButtonRole.DestructiveRole)
            box.addButton(QMessageBox.StandardButton.Cancel)
            box.exec()
            if box.clickedButton() not in (keep, everything):
                return 0
            keep_starred = box.clickedButton() is keep
        removed = self.store.clear(keep_starred=keep_starred)
        self.refresh()
        self._say(f"Cleared {removed} run(s) from the history")
        return removed

    def _on_cap_changed(self, megabytes: int) -> None:
        if self.store is None:
            return
        pruned = self.store.set_size_cap(megabytes * MB)
        if pruned:
            self._say(f"History cap {megabytes} MB: removed the {pruned} oldest unstarred run(s)")
            self.refresh()
        self._update_usage()

    def _say(self, text: str, error: bool = False) -> None:
        # The window shows it in the status line (connected to ctx); without one, the log.
        ctx = self.ctx
        if ctx is not None:
            (ctx.show_error if error else ctx.show_message)(text)
        else:
            log.info("%s", text)


def _free_name(path: Path) -> Path:
    """`path`, or `stem (2).suffix`... when it exists: an export never overwrites."""
    if not path.exists():
        return path
    for n in range(2, 10_000):
        candidate = path.with_name(f"{path.stem} ({n}){path.suffix}")
        if not candidate.exists():
            return candidate
    raise OSError(f"too many files named like {path.name}")
