"""The Models tab: every installed model in a table, its JSON card beside it."""

from __future__ import annotations

import html
import json
import logging
from pathlib import Path
from typing import Any

from PySide6.QtCore import QDir, Qt
from PySide6.QtGui import QColor, QFont
from PySide6.QtWidgets import (
    QAbstractItemView,
    QFileDialog,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPlainTextEdit,
    QSplitter,
    QStackedWidget,
    QTableWidget,
    QTableWidgetItem,
    QTabWidget,
    QTextBrowser,
    QVBoxLayout,
    QWidget,
)

from engines.card_metrics import human_size, key_metrics
from engines.card_schema import printable

from engines.errors import ChainruleError
from studio.card_summary import card_html
from studio.context import StudioContext, short_provider
from studio.tabs import register_tab
from studio.widgets import STRETCH, column, hbox, push_button, readout_label, section_title, vbox

log = logging.getLogger(__name__)

COLUMNS = ("Model", "Kind", "Parameters", "Size", "Key metrics", "Provider", "Status")


def format_count(n: int | None) -> str:
    """174000 -> '174k', 10_700_000 -> '10.7M'."""
    if n is None:
        return "—"
    for unit, scale in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= scale:
            return f"{n / scale:.3g}{unit}"
    return str(n)


class _SortItem(QTableWidgetItem):
    """Sorts by the raw number kept in UserRole, not by the formatted text ('9k' < '10M')."""

    def __lt__(self, other: QTableWidgetItem) -> bool:
        a = self.data(Qt.ItemDataRole.UserRole)
        b = other.data(Qt.ItemDataRole.UserRole)
        if isinstance(a, (int, float)) and isinstance(b, (int, float)):  # None sorts as text
            return a < b
        # Not super().__lt__: PySide dispatches that back to this override (endless recursion).
        return self.text().lower() < other.text().lower()


class ModelsView(QWidget):
    uses_decoding_panel = False
    def __init__(self, ctx: StudioContext, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.ctx = ctx
        self.models: list[Any] = []
        self._build()
        ctx.modelDirsChanged.connect(self.refresh)
        self.refresh()

    # --- widgets --------------------------------------------------------------------------
    def _build(self) -> None:
        title = QLabel("Installed models")
        title.setObjectName("PageTitle")
        self.add_button = push_button("Add models folder…", "Choose a folder that holds model folders; it is remembered",
                                      self.add_folder)
        self.refresh_button = push_button("Refresh", "Look for models again", self.refresh)
        bar = hbox(title, STRETCH, self.add_button, self.refresh_button)

        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setObjectName("ModelsTable")
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.verticalHeader().hide()
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setAlternatingRowColors(True)
        header = self.table.horizontalHeader()
        # No sort column at first: the registry's order (by kind, then id) reads best.
        # Clicking a header sorts; a refresh keeps the user's choice.
        header.setSortIndicator(-1, Qt.SortOrder.AscendingOrder)
        self.table.setSortingEnabled(True)
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(COLUMNS.index("Key metrics"), QHeaderView.ResizeMode.Stretch)
        self.table.itemSelectionChanged.connect(self._show_selected_card)

        # The card twice: a page to read (what was measured, by which command, how it was
        # trained) and the raw JSON, whole.
        self.summary = QTextBrowser()
        self.summary.setObjectName("ModelCardSummary")
        self.summary.setOpenLinks(False)
        self.summary.setPlaceholderText("Select a model to see its card.")
        self.card = QPlainTextEdit()
        self.card.setObjectName("ModelCard")
        self.card.setReadOnly(True)
        mono = QFont("DejaVu Sans Mono")
        mono.setStyleHint(QFont.StyleHint.Monospace)
        self.card.setFont(mono)
        self.card.setPlaceholderText("Select a model to see its card.")
        self.card_pages = QTabWidget()
        self.card_pages.setDocumentMode(True)
        self.card_pages.addTab(self.summary, "Summary")
        self.card_pages.addTab(self.card, "card.json")
        self.card_title = section_title("Model card")
        card_box = column(self.card_title, self.card_pages)

        splitter = QSplitter(Qt.Orientation.Vertical)
        splitter.addWidget(self.table)
        splitter.addWidget(card_box)
        splitter.setStretchFactor(0, 1)
        splitter.setStretchFactor(1, 1)

        self.empty = QLabel()
        self.empty.setObjectName("EmptyState")
        self.empty.setWordWrap(True)
        self.empty.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.empty.setTextFormat(Qt.TextFormat.RichText)
        self.empty.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        empty_page = QWidget()
        ev = QVBoxLayout(empty_page)
        ev.addStretch(1)
        # Long lines are hard to read on a wide window: cap the width, centre with stretches
        # (an alignment flag would make the layout ignore the label's height-for-width and
        # cut off its last lines).
        self.empty.setMaximumWidth(680)
        row = QHBoxLayout()
        row.addStretch(1)
        row.addWidget(self.empty, 100)
        row.addStretch(1)
        ev.addLayout(row)
        ev.addStretch(2)

        self.stack = QStackedWidget()
        self.stack.addWidget(splitter)
        self.stack.addWidget(empty_page)

        self.folders = readout_label("Hint")
        vbox(bar, (self.stack, 1), self.folders, parent=self, margins=(12, 12, 12, 8))

    # --- actions --------------------------------------------------------------------------
    def add_folder(self) -> None:
        dirs = self.ctx.model_dirs()
        start = str(dirs[-1]) if dirs else QDir.homePath()
        path = QFileDialog.getExistingDirectory(self, "Add models folder", start)
        if path:
            self.ctx.add_model_dir(path)  # emits modelDirsChanged -> refresh
            self.ctx.show_message(f"Added models folder {path}")

    def refresh(self) -> None:
        self.folders.setText(self._folders_text())
        try:
            self.models = self.ctx.list_models()
        except ImportError:
            self.models = []
            self._show_empty(
                "The model registry (<code>engines.registry</code>) is not part of this build "
                "yet, so no models can be listed."
            )
            return
        except ChainruleError as exc:
            self.models = []
            self._show_empty(f"<span style='color:#c62828'>{html.escape(str(exc))}</span>")
            self.ctx.show_error(str(exc))
            return
        except Exception as exc:  # noqa: BLE001 - a broken card must not take the tab down
            log.exception("listing models failed")
            self.models = []
            msg = f"Listing models failed: {type(exc).__name__}: {exc}"
            self._show_empty(f"<span style='color:#c62828'>{html.escape(msg)}</span>")
            self.ctx.show_error(msg)
            return
        if not self.models:
            self._show_empty(None)
            return
        self._fill_table()
        self.stack.setCurrentIndex(0)

    # --- internals ------------------------------------------------------------------------
    def _folders_text(self) -> str:
        try:
            from engines.registry import search_dirs

            dirs = [d for d, _source in search_dirs(self.ctx.model_dirs())]
        except Exception:  # noqa: BLE001 - without the registry, show what the studio knows
            dirs = self.ctx.model_dirs()
        return "Looking in: " + "; ".join(str(d) for d in dirs) if dirs else ""

    def _show_empty(self, problem: str | None) -> None:
        self.table.setRowCount(0)
        self.card.clear()
        self.summary.clear()
        lead = problem or "No models installed yet."
        self.empty.setText(
            f"<p style='font-size:16pt; font-weight:600'>{lead}</p>"
            "<p>A model is a folder holding its <b>.onnx</b> file(s) and a JSON <b>card</b> "
            "(architecture, inputs and outputs, data, measured metrics, decoding defaults).</p>"
            "<p>Click <b>Add models folder…</b> and choose a folder that contains model "
            "folders, or start the studio with <code>--models-dir DIR</code>.</p>"
        )
        self.stack.setCurrentIndex(1)

    def _fill_table(self) -> None:
        provider = short_provider(self.ctx.runtime_info().get("provider"))
        reason = self.ctx.runtime_info().get("cuda_unavailable_reason")
        selected = self._selected_id()
        self.table.setSortingEnabled(False)  # filling a sorted table reorders rows midway
        self.table.setRowCount(len(self.models))
        for row, info in enumerate(self.models):
            # The registry lists broken models too, with the reason, instead of hiding them.
            problem = getattr(info, "problem", None)
            cells = [
                # Ids and kinds come from the card: escaped, so a newline or ESC cannot fake a row.
                (printable(info.id), None),
                (printable(info.kind), None),
                (format_count(info.parameters), info.parameters),
                (human_size(info.size_bytes), info.size_bytes),
                (printable(key_metrics(info.metrics) or "—"), None),
                (provider if problem is None else "—", None),
                ("ready" if problem is None else "cannot load", None),
            ]
            for col, (text, raw) in enumerate(cells):
                item = _SortItem(text)
                if raw is not None:
                    item.setData(Qt.ItemDataRole.UserRole, raw)
                    item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                if col == 0:
                    # The row's model id, whatever the sort order: used to find its card.
                    item.setData(Qt.ItemDataRole.UserRole + 1, info.id)
                    item.setToolTip(printable(str(info.path)))
                elif col == 4 and info.metrics:
                    item.setToolTip(json.dumps(info.metrics, indent=2, default=str))
                elif col == 5 and reason:
                    item.setToolTip(f"CUDA not used: {reason}")
                if problem is not None:
                    item.setForeground(QColor("#c62828"))
                    item.setToolTip(problem)
                self.table.setItem(row, col, item)
        self.table.setSortingEnabled(True)
        self._select_id(selected or self.models[0].id)

    def _selected_id(self) -> str | None:
        rows = self.table.selectionModel().selectedRows()
        if not rows:
            return None
        item = self.table.item(rows[0].row(), 0)
        return item.data(Qt.ItemDataRole.UserRole + 1) if item else None

    def _select_id(self, model_id: str) -> None:
        for row in range(self.table.rowCount()):
            item = self.table.item(row, 0)
            if item and item.data(Qt.ItemDataRole.UserRole + 1) == model_id:
                self.table.selectRow(row)
                return

    def _show_selected_card(self) -> None:
        model_id = self._selected_id()
        info = next((m for m in self.models if m.id == model_id), None)
        if info is None:
            self.card.clear()
            self.summary.clear()
            self.card_title.setText("Model card")
            return
        self.card_title.setText(printable(f"Model card — {info.id}  ({Path(info.path)})"))
        text = json.dumps(info.card, indent=2, ensure_ascii=False, default=str)
        problem = getattr(info, "problem", None)
        if problem:
            text = f"// This model cannot be loaded: {problem}\n\n{text}"
        self.card.setPlainText(text)
        self.summary.setHtml(card_html(info.card, problem))


@register_tab("Models", order=90)
def make_models_tab(ctx: StudioContext) -> QWidget:
    return ModelsView(ctx)
