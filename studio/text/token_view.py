"""A read-only text view whose tokens are coloured, hoverable and clickable.

Tokens are appended as they arrive (`append_records`), each as one run of text with its own
background colour and an anchor holding its index, so a batch from the worker costs a few
cursor inserts, not a re-render. Hovering a token shows its numbers and the top alternatives
before and after the sampler chain; clicking one emits `tokenClicked(index, global_pos)`.
"""

from __future__ import annotations

import html
import math
from typing import Sequence

from PySide6.QtCore import QEvent, QPoint, Qt, Signal
from PySide6.QtGui import QColor, QFont, QTextCharFormat, QTextCursor
from PySide6.QtWidgets import QHBoxLayout, QLabel, QTextEdit, QToolTip, QWidget

from studio.text.colours import colour_for, legend_caption, legend_entries, legend_tooltip

PROMPT_COLOUR = "#6b7280"
NEWLINE_MARK = "↵"


def visible(text: str) -> str:
    """A token's text for a label: whitespace made visible, never empty."""
    if text == "":
        return "∅"
    return (text.replace("\r", "␍").replace("\n", NEWLINE_MARK).replace("\t", "⇥")
            .replace(" ", "␣"))


def display_text(text: str) -> str:
    """A token's text in the view: exact, except that line breaks get a visible mark (so a
    newline token has something to hover and to colour) and an empty token shows ∅."""
    if text == "":
        return "∅"
    return text.replace("\r\n", "\n").replace("\r", "␍").replace("\n", NEWLINE_MARK + "\n")


def _fmt_p(p: float) -> str:
    if p >= 0.001:
        return f"{p:.3f}"
    return f"{p:.1e}"


def tooltip_html(record, index: int | None = None) -> str:
    """A token's numbers and its alternatives before/after the chain, as a small HTML table."""
    esc = lambda s: html.escape(visible(s))  # noqa: E731
    p = math.exp(record.logprob)
    head = [f"<b>{esc(record.text)}</b> &nbsp; id {record.token_id}"
            + (f" &nbsp; token #{index + 1}" if index is not None else "")
            + (" &nbsp; <i>(picked by you)</i>" if getattr(record, "picked", False) else ""),
            f"p = {_fmt_p(p)} &nbsp; log p = {record.logprob:.3f} nats"]
    extra = []
    if record.rank is not None:
        extra.append(f"rank {record.rank}")
    if record.entropy is not None:
        extra.append(f"entropy {record.entropy:.2f} nats")
    if extra:
        head.append(" &nbsp; ".join(extra))
    before, after = record.top_before, record.top_after
    rows = []
    for i in range(max(len(before), len(after))):
        cells = [f"<td align='right'>{i + 1}</td>"]
        for alts in (before, after):
            if i < len(alts):
                tid, text, prob = alts[i]
                mark = ("<b>", "</b>") if tid == record.token_id else ("", "")
                cells.append(f"<td>{mark[0]}{esc(text)}{mark[1]}</td><td align='right'>{_fmt_p(prob)}</td>")
            else:
                cells.append("<td></td><td></td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    table = ""
    if rows:
        table = ("<table cellspacing='0' cellpadding='2' style='margin-top:4px'>"
                 "<tr><th></th><th colspan='2' align='left'>model</th>"
                 "<th colspan='2' align='left'>after chain</th></tr>" + "".join(rows) + "</table>")
    return "<div style='white-space:pre'>" + "<br>".join(head) + "</div>" + table


class TokenView(QTextEdit):
    tokenClicked = Signal(int, QPoint)  # index into records(), global position

    def __init__(self, parent: QWidget | None = None, *, mode: str = "probability") -> None:
        super().__init__(parent)
        self.setReadOnly(True)
        self.setUndoRedoEnabled(False)
        self.setMouseTracking(True)
        self.viewport().setMouseTracking(True)
        self.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse
                                     | Qt.TextInteractionFlag.TextSelectableByKeyboard)
        font = QFont("DejaVu Sans Mono")
        font.setStyleHint(QFont.StyleHint.Monospace)
        font.setPointSizeF(max(10.5, self.font().pointSizeF()))
        self.setFont(font)
        self._mode = mode
        self._records: list = []
        self._prefix = ""
        self._items: list[tuple[str, object]] = []  # ("prefix"|"heading"|"token", payload) in order
        self._press: QPoint | None = None
        self._formats: dict[tuple[str | None, bool], QTextCharFormat] = {}

    # --- content -------------------------------------------------------------------------
    def records(self) -> list:
        return list(self._records)

    def mode(self) -> str:
        return self._mode

    def set_mode(self, mode: str) -> None:
        if mode != self._mode:
            self._mode = mode
            self._rerender()

    def plain_text(self) -> str:
        """The exact text shown: the prefix, then every token's own text (no marks)."""
        return self._prefix + "".join(r.text for r in self._records)

    def clear_tokens(self) -> None:
        self._records, self._items, self._prefix = [], [], ""
        self.clear()

    def set_content(self, prefix: str, records: Sequence) -> None:
        """Replace everything: `prefix` in grey, then the coloured tokens."""
        self._records, self._items, self._prefix = [], [], ""
        self.clear()
        self.set_prefix(prefix)
        self.append_records(records)

    def set_prefix(self, text: str) -> None:
        self._prefix += text
        self._items.append(("prefix", text))
        self._insert_plain(text, PROMPT_COLOUR, bold=False)

    def append_heading(self, text: str) -> None:
        self._items.append(("heading", text))
        self._insert_plain(text, PROMPT_COLOUR, bold=True)

    def append_records(self, records: Sequence) -> None:
        if not records:
            return
        bar = self.verticalScrollBar()
        at_end = bar.value() >= bar.maximum() - 4
        cursor = QTextCursor(self.document())
        cursor.movePosition(QTextCursor.MoveOperation.End)
        cursor.beginEditBlock()
        for r in records:
            self._items.append(("token", len(self._records)))
            self._insert_token(cursor, r, len(self._records))
            self._records.append(r)
        cursor.endEditBlock()
        if at_end:
            bar.setValue(bar.maximum())

    # --- internals -------------------------------------------------------------------------
    def _insert_plain(self, text: str, colour: str, bold: bool) -> None:
        if not text:
            return
        cursor = QTextCursor(self.document())
        cursor.movePosition(QTextCursor.MoveOperation.End)
        fmt = QTextCharFormat()
        fmt.setForeground(QColor(colour))
        if bold:
            fmt.setFontWeight(QFont.Weight.DemiBold)
        cursor.insertText(text, fmt)

    def _base_format(self, colour: str | None, picked: bool) -> QTextCharFormat:
        """The shared look of a token (built once per colour): each token only adds its href."""
        key = (colour, picked)
        fmt = self._formats.get(key)
        if fmt is None:
            fmt = QTextCharFormat()
            fmt.setAnchor(True)
            fmt.setForeground(QColor("#111111"))
            if colour is not None:
                fmt.setBackground(QColor(colour))
            else:
                fmt.setUnderlineStyle(QTextCharFormat.UnderlineStyle.DotLine)
            if picked:
                fmt.setFontUnderline(True)
                fmt.setUnderlineColor(QColor("#1d4ed8"))
                fmt.setFontWeight(QFont.Weight.Bold)
            self._formats[key] = fmt
        return fmt

    def _insert_token(self, cursor: QTextCursor, record, index: int) -> None:
        fmt = QTextCharFormat(self._base_format(colour_for(record, self._mode), bool(getattr(record, "picked", False))))
        fmt.setAnchorHref(str(index))
        cursor.insertText(display_text(record.text), fmt)

    def _rerender(self) -> None:
        items, records, prefix = self._items, self._records, self._prefix
        self.setUpdatesEnabled(False)
        try:
            self.clear()
            self._items, self._records, self._prefix = [], [], ""
            run: list = []  # consecutive tokens go in with one cursor and one edit block
            for kind, payload in items:
                if kind == "token":
                    run.append(records[payload])
                    continue
                self.append_records(run)
                run = []
                if kind == "prefix":
                    self.set_prefix(payload)
                else:
                    self.append_heading(payload)
            self.append_records(run)
        finally:
            self.setUpdatesEnabled(True)
        assert self._prefix == prefix

    def index_at(self, pos: QPoint) -> int | None:
        href = self.anchorAt(pos)
        if href and href.isdigit():
            i = int(href)
            if 0 <= i < len(self._records):
                return i
        return None

    # --- events --------------------------------------------------------------------------
    def viewportEvent(self, event: QEvent) -> bool:  # noqa: N802 - Qt naming
        if event.type() == QEvent.Type.ToolTip:
            i = self.index_at(event.pos())
            if i is not None:
                QToolTip.showText(event.globalPos(), tooltip_html(self._records[i], i), self.viewport())
            else:
                QToolTip.hideText()
                event.ignore()
            return True
        return super().viewportEvent(event)

    def mouseMoveEvent(self, event) -> None:  # noqa: N802
        super().mouseMoveEvent(event)
        over = self.index_at(event.position().toPoint()) is not None
        self.viewport().setCursor(Qt.CursorShape.PointingHandCursor if over else Qt.CursorShape.IBeamCursor)

    def mousePressEvent(self, event) -> None:  # noqa: N802
        self._press = event.position().toPoint()
        super().mousePressEvent(event)

    def mouseReleaseEvent(self, event) -> None:  # noqa: N802
        super().mouseReleaseEvent(event)
        pos = event.position().toPoint()
        # A click, not the end of a text selection drag.
        if (event.button() == Qt.MouseButton.LeftButton and self._press is not None
                and (pos - self._press).manhattanLength() < 4 and not self.textCursor().hasSelection()):
            i = self.index_at(pos)
            if i is not None:
                self.tokenClicked.emit(i, self.viewport().mapToGlobal(pos))
        self._press = None


class Legend(QWidget):
    """The colour key of a mode: a caption then small swatches."""

    def __init__(self, mode: str = "probability", *, scoring: bool = False, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._scoring = scoring
        self._layout = QHBoxLayout(self)
        self._layout.setContentsMargins(0, 0, 0, 0)
        self._layout.setSpacing(4)
        self.set_mode(mode)

    def set_mode(self, mode: str) -> None:
        while self._layout.count():
            item = self._layout.takeAt(0)
            widget = item.widget()
            if widget is not None:  # hidden now, not at the next event-loop turn
                widget.hide()
                widget.deleteLater()
        caption = QLabel(legend_caption(mode, scoring=self._scoring))
        caption.setObjectName("Hint")
        self._layout.addWidget(caption)
        for colour, label in legend_entries(mode):
            sw = QLabel(html.escape(label))
            sw.setStyleSheet(f"background:{colour}; color:#111; border-radius:3px; padding:1px 6px;")
            self._layout.addWidget(sw)
        self._layout.addStretch(1)
        self.setToolTip(legend_tooltip(mode, scoring=self._scoring)
                        + ("" if self._scoring else "\nHover a token for its alternatives; click it to branch from there."))
        self.mode = mode
