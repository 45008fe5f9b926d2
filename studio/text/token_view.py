"""A read-only text view whose tokens are coloured, hoverable and clickable.

Tokens are appended as they arrive (`append_records`), each as one run of text with its own
background colour and an anchor holding its index, so a batch from the worker costs a few
cursor inserts, not a re-render. Hovering a token shows its numbers and the top alternatives
before and after the sampler chain; clicking one emits `tokenClicked(index, global_pos)`.

Whatever the length, no call takes the UI thread for long: what is to be shown is queued and
put in the document a bounded slice per event-loop turn (at most `TOKENS_PER_TURN` tokens and
about `TURN_BUDGET_S` of work, then the rest on the next turn), so showing a 10,000-token
branch or a beam column is many short turns, not one long stall. A colour-mode change
recolours the tokens in place (their text and places stay), the visible ones first, in
slices the same way. `records()` and `plain_text()` are the whole content at once;
`is_rendering()` says whether slices are still to come, `finish_rendering()` does them now.
"""

from __future__ import annotations

import html
import math
from typing import Sequence

import time
from bisect import bisect_right
from collections import deque

from PySide6.QtCore import QEvent, QPoint, Qt, QTimer, Signal
from PySide6.QtGui import QColor, QFont, QTextCharFormat, QTextCursor
from PySide6.QtWidgets import QHBoxLayout, QLabel, QTextEdit, QToolTip, QWidget

from studio.text.colours import colour_for, legend_caption, legend_entries, legend_tooltip

PROMPT_COLOUR = "#6b7280"
NEWLINE_MARK = "↵"
# One event-loop turn's share of rendering: a token costs 15-90 us to insert or recolour (more on a
# loaded machine), so 256 of them or ~12 ms of work, whichever comes first, keeps a turn well under
# the 50 ms at which a window feels stuck, and a 10,000-token branch is on screen within a second.
TOKENS_PER_TURN = 256
TURN_BUDGET_S = 0.012


class _TurnSlice:
    """The current event-loop turn's rendering slice, shared by every token view: views (or calls)
    rendering in the same turn share one TOKENS_PER_TURN / TURN_BUDGET_S, not one each. A Compare
    run's beam column (a heading and its tokens per beam, each beam short enough to finish within a
    slice) took four slices in one 40-50 ms turn; several columns rendering at once, one each.
    A turn starts at the first slice asked for while the marker (a zero timer, which fires at the
    next turn) is not pending."""

    def __init__(self) -> None:
        self.deadline = 0.0
        self.left = 0
        self._marker: QTimer | None = None

    def begin(self) -> "_TurnSlice":
        if self._marker is None:
            self._marker = QTimer()
            self._marker.setSingleShot(True)
            self._marker.setInterval(0)
        if not self._marker.isActive():  # the first slice of this turn
            self.deadline = time.perf_counter() + TURN_BUDGET_S
            self.left = TOKENS_PER_TURN
            self._marker.start()
        return self


_TURN = _TurnSlice()


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
    n_masked = getattr(record, "n_masked", 0)
    if n_masked:  # a padded vocabulary (engines.text.vocab_mask): said, never hidden
        from engines.text.vocab_mask import describe_mass

        head.append(f"<i>{html.escape(describe_mass(n_masked, getattr(record, 'masked_mass', None)))}"
                    " (p is renormalised over the rest)</i>")
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
        # In order: ["prefix", text], ["heading", text] or ["tokens", first, stop) for a run of
        # tokens (one item per run, not per token: a 10,000-token branch allocates next to nothing).
        self._items: list[list] = []
        self._press: QPoint | None = None
        self._formats: dict[tuple[str | None, bool], QTextCharFormat] = {}
        self._n_rendered_items = 0  # _items[:this] are in the document
        self._spans: list[tuple[int, int]] = []  # document (start, end) of each rendered token
        self._restyle: deque[list[int]] = deque()  # [next, stop) token ranges still in the old colours
        self._turns = 0  # event-loop turns spent rendering since the last content change (for tests)
        # Whether new text keeps the view scrolled to its end: true until the user scrolls away
        # from the end (or `scroll_to_top`), true again once they scroll back to it. Kept as a flag,
        # not read off the scroll bar at each slice: a slice landing before the text fills the view
        # would otherwise take a view the user (or a caller) put at the top down to the end.
        self._stick_to_end = True
        self._auto_scrolling = False
        self.verticalScrollBar().valueChanged.connect(self._scrolled)
        self._timer = QTimer(self)  # the next slice, at the next event-loop turn
        self._timer.setSingleShot(True)
        self._timer.setInterval(0)
        self._timer.timeout.connect(self._next_turn)

    # --- content -------------------------------------------------------------------------
    def records(self) -> list:
        return list(self._records)

    def mode(self) -> str:
        return self._mode

    def set_mode(self, mode: str) -> None:
        """Colour the tokens by `mode`: the ones on screen at once, the others a slice a turn."""
        if mode == self._mode:
            return
        self._mode = mode  # tokens not yet rendered get it when they are
        n = len(self._spans)
        if n:
            first = self._first_visible_token()
            self._restyle = deque([[first, n], [0, first]] if first else [[0, n]])
            self._turns = 0
            self._work()

    def plain_text(self) -> str:
        """The exact text shown: the prefix, then every token's own text (no marks)."""
        return self._prefix + "".join(r.text for r in self._records)

    def clear_tokens(self) -> None:
        self._reset()

    def set_content(self, prefix: str, records: Sequence) -> None:
        """Replace everything: `prefix` in grey, then the coloured tokens (a slice a turn)."""
        self._reset()
        self.set_prefix(prefix)
        self.append_records(records)

    def set_prefix(self, text: str) -> None:
        self._prefix += text
        self._items.append(["prefix", text])
        self._work()

    def append_heading(self, text: str) -> None:
        self._items.append(["heading", text])
        self._work()

    def append_records(self, records: Sequence) -> None:
        if not records:
            return
        n = len(self._records)
        self._records.extend(records)
        last = self._items[-1] if self._items else None
        if last is not None and last[0] == "tokens" and self._n_rendered_items < len(self._items):
            last[2] = len(self._records)  # the run still being rendered grows
        else:
            self._items.append(["tokens", n, len(self._records)])
        self._work()

    # --- rendering, a slice per event-loop turn ---------------------------------------------
    def is_rendering(self) -> bool:
        """Content or colours are still to be put in the document (at the next turns)."""
        return self._n_rendered_items < len(self._items) or bool(self._restyle)

    def rendered_tokens(self) -> int:
        """How many tokens are in the document now (the others are queued)."""
        return len(self._spans)

    def render_turns(self) -> int:
        """Event-loop turns spent rendering or recolouring since the last such change."""
        return self._turns

    def finish_rendering(self) -> None:
        """Render and recolour everything still queued, now (for an export or a test)."""
        while self.is_rendering():
            self._work(budget_s=math.inf, max_tokens=len(self._records) + len(self._spans) + 1, queued=False)
        self._timer.stop()

    def scroll_to_top(self) -> None:
        """Show the beginning, and stay there while the rest is rendered."""
        self._stick_to_end = False
        self._auto_scroll(0)

    def _scrolled(self, value: int) -> None:
        if not self._auto_scrolling:  # the user moved it
            self._stick_to_end = value >= self.verticalScrollBar().maximum() - 4

    def _auto_scroll(self, value: int) -> None:
        self._auto_scrolling = True
        try:
            self.verticalScrollBar().setValue(value)
        finally:
            self._auto_scrolling = False

    def _reset(self) -> None:
        self._timer.stop()
        self._records, self._items, self._prefix = [], [], ""
        self._n_rendered_items, self._spans, self._restyle, self._turns = 0, [], deque(), 0
        self._auto_scrolling = True  # clearing moves the bar: not the user
        try:
            self.clear()
        finally:
            self._auto_scrolling = False
        self._stick_to_end = True

    def _next_turn(self) -> None:
        self._work(queued=False)

    def _work(self, budget_s: float | None = None, max_tokens: int | None = None, queued: bool = True) -> None:
        """One turn's slice: render queued items, then recolour, until the slice is used up; the
        rest is left for the next turn (the timer), so the event loop runs in between. Called
        for new content (`queued`) while a slice already waits for the next turn, it adds
        nothing to this one. Without `budget_s`, the slice is the turn's, shared with every call
        and every view in this turn (_TurnSlice): several calls in one turn (a beam column: a
        heading and its tokens per beam), or several columns, share one slice, not one each."""
        if not self.is_rendering() or (queued and self._timer.isActive()):
            return
        self._turns += 1
        turn = _TURN.begin() if budget_s is None else None
        if turn is not None:
            deadline, left = turn.deadline, turn.left
        else:
            deadline, left = time.perf_counter() + budget_s, max_tokens or TOKENS_PER_TURN
        try:
            self._slice(deadline, left, turn)
        finally:
            if self.is_rendering():
                self._timer.start()

    def _slice(self, deadline: float, left: int, turn: _TurnSlice | None) -> None:
        while left > 0 and time.perf_counter() < deadline:
            if self._n_rendered_items < len(self._items):
                left -= self._render_slice(min(left, 32))
            elif self._restyle:
                left -= self._restyle_slice(min(left, 32))
            else:
                break
        if turn is not None:
            turn.left = max(0, left)  # what is left of the turn's slice, for the next caller in it

    def _render_slice(self, max_tokens: int) -> int:
        """Put the next queued items in the document (up to `max_tokens` tokens, the headings and
        prefixes among them); the number of tokens put in (at least 1 item is always rendered)."""
        cursor = QTextCursor(self.document())
        cursor.movePosition(QTextCursor.MoveOperation.End)
        cursor.beginEditBlock()
        items, records, spans, done = self._items, self._records, self._spans, 0
        i = self._n_rendered_items
        while i < len(items) and done < max_tokens:
            item = items[i]
            if item[0] == "tokens":
                first = len(spans)  # tokens are rendered in order: the next one is the next in the run
                stop = min(item[2], first + max_tokens - done)
                for t in range(first, stop):
                    start = cursor.position()
                    self._insert_token(cursor, records[t], t)
                    spans.append((start, cursor.position()))
                done += stop - first
                if stop < item[2]:
                    break  # the slice is used up in the middle of this run
            else:
                self._insert_plain(cursor, item[1], PROMPT_COLOUR, bold=item[0] == "heading")
            i += 1
        self._n_rendered_items = i
        cursor.endEditBlock()
        if self._stick_to_end:
            self._auto_scroll(self.verticalScrollBar().maximum())
        return max(1, done)

    def _restyle_slice(self, max_tokens: int) -> int:
        """Recolour the next tokens still in an old mode's colours (their text stays where it is)."""
        span = self._restyle[0]
        stop = min(span[1], span[0] + max_tokens)
        cursor = QTextCursor(self.document())
        cursor.beginEditBlock()
        for i in range(span[0], stop):
            start, end = self._spans[i]
            cursor.setPosition(start)
            cursor.setPosition(end, QTextCursor.MoveMode.KeepAnchor)
            cursor.setCharFormat(self._token_format(self._records[i], i))
        cursor.endEditBlock()
        done = stop - span[0]
        span[0] = stop
        if span[0] >= span[1]:
            self._restyle.popleft()
        return max(1, done)

    def _first_visible_token(self) -> int:
        """The index of the first rendered token at or after the top of the viewport."""
        pos = self.cursorForPosition(QPoint(0, 0)).position()
        i = bisect_right([s for s, _e in self._spans], pos) - 1
        return min(max(0, i), max(0, len(self._spans) - 1))

    # --- internals -------------------------------------------------------------------------
    @staticmethod
    def _insert_plain(cursor: QTextCursor, text: str, colour: str, bold: bool) -> None:
        if not text:
            return
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

    def _token_format(self, record, index: int) -> QTextCharFormat:
        fmt = QTextCharFormat(self._base_format(colour_for(record, self._mode), bool(getattr(record, "picked", False))))
        fmt.setAnchorHref(str(index))
        return fmt

    def _insert_token(self, cursor: QTextCursor, record, index: int) -> None:
        cursor.insertText(display_text(record.text), self._token_format(record, index))

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
