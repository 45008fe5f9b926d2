"""Compare page: the current prompt under several decoding configs, side by side.

Default columns: greedy, nucleus (top-p 0.9), beam search (4 beams, all 4 returned) and the
decoding panel's current config; the user ticks which run. Each column shows its text with
the same token colouring as the Generate page, the exact total log-likelihood (sum of the
model's log-probabilities of the tokens) and the token count. A beam column lists every
returned beam with its length-penalised score and its log-likelihood. Sampled columns share
one seed (shown), drawn once per run unless the panel fixes it.
"""

from __future__ import annotations

import html
import json
import threading
from typing import Callable

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QCheckBox,
    QFrame,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

from engines.decoding.config import DecodingConfig
from engines.errors import ChainruleError
from engines.generation import resolve_seed
from studio.context import StudioContext
from studio.text import work
from studio.text.token_view import TokenView

# (key, short name for the checkbox, column title, config)
DEFAULT_SPECS = (
    ("greedy", "Greedy", "Greedy", DecodingConfig(strategy="greedy")),
    ("nucleus", "Top-p 0.9", "Nucleus (top-p 0.9)", DecodingConfig(strategy="sample", top_p=0.9)),
    ("beam", "Beam ×4", "Beam search (4 beams)",
     DecodingConfig(strategy="beam", num_beams=4, num_return_sequences=4)),
)
CURRENT_KEY = "current"


class CompareColumn(QFrame):
    def __init__(self, title: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.setMinimumWidth(110)
        self.title = QLabel(f"<b>{html.escape(title)}</b>")
        self.title.setWordWrap(True)
        self.info = QLabel("waiting…")
        self.info.setObjectName("Hint")
        self.info.setWordWrap(True)
        self.info.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.view = TokenView()
        self.text = ""
        self.total_logprob: float | None = None
        self.n_tokens = 0
        self.beams: tuple = ()
        self.seed: int | None = None
        self.chain = ""
        lay = QVBoxLayout(self)
        lay.setContentsMargins(6, 6, 6, 6)
        lay.addWidget(self.title)
        lay.addWidget(self.info)
        lay.addWidget(self.view, 1)


class CompareView(QWidget):
    def __init__(
        self,
        ctx: StudioContext,
        request: Callable[[], tuple | None],
        parent: QWidget | None = None,
    ) -> None:
        """`request()` gives (ModelInfo, prompt, max_new_tokens, stop_strings), or None after
        saying why (no model chosen)."""
        super().__init__(parent)
        self.ctx = ctx
        self._request = request
        self.runner = ctx.task_runner("Text compare", parent=self)
        self._cancel = threading.Event()
        self.columns: list[CompareColumn] = []
        self._specs: list[work.CompareSpec] = []
        self._run_ids: list[int | None] = []  # history run per column, until it is finished
        self._mode = "probability"

        self.checks: dict[str, QCheckBox] = {}
        bar = QHBoxLayout()
        bar.addWidget(QLabel("Run with:"))
        for key, short, title, cfg in DEFAULT_SPECS:
            self.checks[key] = QCheckBox(short)
            self.checks[key].setToolTip(title)
        self.checks[CURRENT_KEY] = QCheckBox("Current settings")
        self.checks[CURRENT_KEY].setToolTip("The decoding panel's settings, whatever they are when you press Compare")
        for cb in self.checks.values():
            cb.setChecked(True)
            bar.addWidget(cb)
        bar.addStretch(1)
        buttons = QHBoxLayout()
        self.run_button = QPushButton("Compare")
        self.run_button.setToolTip("Run the prompt (left) under every ticked config, one after another")
        self.run_button.clicked.connect(self.run)
        self.stop_button = QPushButton("Stop")
        self.stop_button.setEnabled(False)
        self.stop_button.clicked.connect(self.stop)
        self.runner.busyChanged.connect(self._busy)

        self.status = QLabel("Runs the prompt on the left under each ticked config, with the same max new "
                             "tokens and stop strings.")
        self.status.setObjectName("Hint")
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        buttons.addWidget(self.run_button)
        buttons.addWidget(self.stop_button)
        buttons.addWidget(self.status, 1)

        # Equal columns, whatever their contents (a splitter would size them by their text).
        self.columns_box = QWidget()
        self.columns_layout = QHBoxLayout(self.columns_box)
        self.columns_layout.setContentsMargins(0, 0, 0, 0)

        lay = QVBoxLayout(self)
        lay.setContentsMargins(6, 6, 6, 6)
        lay.addLayout(bar)
        lay.addLayout(buttons)
        lay.addWidget(self.columns_box, 1)

    # --- specs -------------------------------------------------------------------------
    def specs(self) -> list[work.CompareSpec]:
        out = [work.CompareSpec(key, title, cfg) for key, _short, title, cfg in DEFAULT_SPECS
               if self.checks[key].isChecked()]
        if self.checks[CURRENT_KEY].isChecked():
            out.append(work.CompareSpec(CURRENT_KEY, "Current settings", self.ctx.decoding_config("text")))
        return out

    def set_mode(self, mode: str) -> None:
        """Colour mode of every column's tokens (the Tokens page's switch)."""
        self._mode = mode
        for col in self.columns:
            col.view.set_mode(mode)

    def column(self, key: str) -> CompareColumn | None:
        for spec, col in zip(self._specs, self.columns):
            if spec.key == key:
                return col
        return None

    # --- run -----------------------------------------------------------------------------
    def run(self) -> None:
        specs = self.specs()
        if not specs:
            self._say("Tick at least one config to compare.", error=True)
            return
        req = self._request()
        if req is None:
            return
        info, prompt, max_new, stops, *chat = req  # chat mode: the turns come last
        seed = resolve_seed(self.ctx.decoding_config("text"))
        try:
            requests = work.compare_requests(info, specs, prompt, seed, max_new, stops, turns=chat[0] if chat else ())
        except ChainruleError as exc:
            self._say(str(exc), error=True)
            return
        self._specs = specs
        self._reset_columns(specs)
        self._cancel = cancel = threading.Event()
        self._say(f"Comparing {len(specs)} configs · seed {seed} for the sampled ones…")
        self._seed = seed
        self._info, self._requests = info, requests
        # every column is a run of the Text tab: recorded when the comparison starts
        self._run_ids = [self.ctx.record_run_started("text", r.to_json()) for r in requests]
        self.runner.start(
            lambda: work.compare_events(info, requests, should_stop=cancel.is_set),
            on_events=self._on_events, on_finished=self._on_finished,
            on_stopped=self._on_stopped, on_errored=self._on_error,
        )

    def _record_column(self, column: int, status: str, ev: "work.ColumnDone | None" = None) -> None:
        """Finish column `column`'s history run (once): its text, log p and request as a JSON file."""
        if column >= len(self._run_ids) or self._run_ids[column] is None:
            return
        run_id, self._run_ids[column] = self._run_ids[column], None
        files, summary = {}, {"column": self._specs[column].key}
        if ev is not None:
            from engines.requests import stamp

            record = {"text": ev.text, "total_logprob": ev.total_logprob, "n": ev.n_tokens,
                      "beams": [{"text": b.text, "total_logprob": b.total_logprob, "score": b.score} for b in ev.beams],
                      "request": stamp(self._requests[column].to_json(), self._info)}
            files[f"compare-{self._specs[column].key}.json"] = json.dumps(record, ensure_ascii=False, indent=1).encode()
            summary.update(logprob=ev.total_logprob, tokens=ev.n_tokens)
        self.ctx.record_run_finished(run_id, files=files, summary=summary, status=status)

    def _on_stopped(self) -> None:
        for c in range(len(self._run_ids)):
            self._record_column(c, "stopped")
        self._say(f"Stopped · seed {self._seed}")

    def stop(self) -> None:
        self._cancel.set()  # beam search checks this between steps
        self.runner.stop()

    def _busy(self, busy: bool) -> None:
        self.stop_button.setEnabled(busy)

    def _reset_columns(self, specs) -> None:
        for col in self.columns:
            col.setParent(None)
            col.deleteLater()
        self.columns = []
        for spec in specs:
            col = CompareColumn(spec.title)
            col.view.set_mode(self._mode)
            self.columns.append(col)
            self.columns_layout.addWidget(col, 1)

    def _on_events(self, batch: list) -> None:
        pending: dict[int, list] = {}
        for ev in batch:
            if isinstance(ev, work.ColumnToken):
                pending.setdefault(ev.column, []).append(ev.record)
                continue
            for c, recs in pending.items():
                self._add_tokens(c, recs)
            pending = {}
            if isinstance(ev, work.CompareStarted):
                if ev.notes:
                    self._say(f"Comparing · seed {self._seed} · note: " + "; ".join(ev.notes))
            elif isinstance(ev, work.ColumnStarted):
                col = self.columns[ev.column]
                col.seed, col.chain = ev.seed, ev.chain
                col.info.setText(html.escape(ev.chain) + " · running…")
            elif isinstance(ev, work.ColumnDone):
                self._column_done(ev)
        for c, recs in pending.items():
            self._add_tokens(c, recs)

    def _add_tokens(self, column: int, records: list) -> None:
        col = self.columns[column]
        col.view.append_records(records)
        col.n_tokens = len(col.view.records())
        col.info.setText(html.escape(col.chain) + f" · {col.n_tokens} tokens…")

    def _column_done(self, ev: work.ColumnDone) -> None:
        self._record_column(ev.column, "done", ev)
        col = self.columns[ev.column]
        col.text, col.total_logprob, col.n_tokens, col.beams = ev.text, ev.total_logprob, ev.n_tokens, ev.beams
        if ev.beams:
            col.view.clear_tokens()
            for i, b in enumerate(ev.beams):
                col.view.append_heading(
                    f"{'' if i == 0 else chr(10) + chr(10)}beam {i + 1}: score {b.score:.3f} · "
                    f"log p {b.total_logprob:.3f} nats · {len(b.records)} tokens\n")
                col.view.append_records(list(b.records))
            col.view.scroll_to_top()  # beam 1 first, and it stays there while the rest is rendered
            col.info.setText(
                f"{html.escape(col.chain)} · {len(ev.beams)} beams<br>best: <b>log p = {ev.total_logprob:.3f} nats</b>"
                f" · {ev.n_tokens} tokens")
        else:
            col.info.setText(
                f"{html.escape(col.chain)}<br><b>log p = {ev.total_logprob:.3f} nats</b> · {ev.n_tokens} tokens")
        col.info.setToolTip(f"Exact log-likelihood: sum of the model's log-probabilities of the {ev.n_tokens} tokens")

    def _on_finished(self) -> None:
        for c in range(len(self._run_ids)):  # columns a stop left unfinished
            self._record_column(c, "stopped")
        self._say(f"Done · seed {self._seed} (sampled columns) · hover tokens for alternatives")

    def _on_error(self, message: str) -> None:
        for c in range(len(self._run_ids)):
            self._record_column(c, "failed")
        self._say(message, error=True)
        self.ctx.show_error(message)

    def _say(self, text: str, error: bool = False) -> None:
        self.status.setText(html.escape(text))
        self.status.setStyleSheet("color:#c62828;" if error else "")
