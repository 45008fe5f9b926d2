"""Score page: the exact log-likelihood of any text (after an optional prompt).

Paste the text or load a UTF-8 file; scoring runs `score_text` on the worker and shows each
token coloured by the probability the model gave it (its surprise), with the totals: log-
likelihood in nats, bits per character, perplexity (per token) and the token count.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Callable

from PySide6.QtCore import QDir, Qt
from PySide6.QtWidgets import (
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from studio.context import StudioContext
from studio.text import work
from studio.text.token_view import Legend, TokenView

MAX_FILE_BYTES = 20 * 1024 * 1024


def read_text_file(path: str) -> str:
    """A UTF-8 text file's contents, or a ValueError whose message says what is wrong."""
    p = Path(path)
    try:
        size = p.stat().st_size
        if size > MAX_FILE_BYTES:
            raise ValueError(f"{p.name} is {size / 1e6:.1f} MB: too large to score here (limit {MAX_FILE_BYTES // 2**20} MB)")
        data = p.read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read {p}: {exc.strerror or exc}") from exc
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{p.name} is not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    if "\x00" in text:
        raise ValueError(f"{p.name} looks like a binary file (it contains NUL bytes), not text")
    return text


class ScoreView(QWidget):
    def __init__(self, ctx: StudioContext, model_info: Callable[[], object | None], parent: QWidget | None = None) -> None:
        """`model_info()` gives the chosen ModelInfo, or None after saying why."""
        super().__init__(parent)
        self.ctx = ctx
        self._model_info = model_info
        self.runner = ctx.task_runner("Text score", parent=self)
        self.result: work.ScoreDone | None = None

        self.prompt = QLineEdit()
        self.prompt.setPlaceholderText("optional prompt: the text is scored as its continuation (not scored itself)")
        # True while the prompt is a rendered chat put here by the Text tab (encoded as it is, no BOS
        # added, as generation encoded it); typing in it makes it a plain prompt again
        self.chat_prompt = False
        self.prompt.textEdited.connect(lambda _t: setattr(self, "chat_prompt", False))
        self.text = QPlainTextEdit()
        self.text.setPlaceholderText("Paste the text to score, or load a UTF-8 file…")
        self.load_button = QPushButton("Load file…")
        self.load_button.clicked.connect(self.load_file)
        self.score_button = QPushButton("Score")
        self.score_button.setToolTip("Exact log-likelihood of the text under the chosen model")
        self.score_button.clicked.connect(self.score)
        self.runner.busyChanged.connect(lambda busy: self.score_button.setEnabled(not busy))

        top = QHBoxLayout()
        top.addWidget(QLabel("Prompt:"))
        top.addWidget(self.prompt, 1)
        top.addWidget(self.load_button)
        top.addWidget(self.score_button)

        self.totals = QLabel("Score a text to see its log-likelihood, bits per character and perplexity.")
        self.totals.setObjectName("ScoreTotals")
        self.totals.setWordWrap(True)
        self.totals.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.view = TokenView()
        self.legend = Legend("probability", scoring=True)

        results = QWidget()
        rl = QVBoxLayout(results)
        rl.setContentsMargins(0, 0, 0, 0)
        rl.addWidget(self.totals)
        rl.addWidget(self.legend)
        rl.addWidget(self.view, 1)
        split = QSplitter(Qt.Orientation.Vertical)
        split.addWidget(self.text)
        split.addWidget(results)
        split.setStretchFactor(0, 1)
        split.setStretchFactor(1, 2)

        lay = QVBoxLayout(self)
        lay.setContentsMargins(6, 6, 6, 6)
        lay.addLayout(top)
        lay.addWidget(split, 1)

    def load_file(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Load text to score", QDir.homePath(),
                                              "Text files (*.txt *.md *.text);;All files (*)")
        if not path:
            return
        try:
            text = read_text_file(path)
        except ValueError as exc:  # keep whatever text was there
            self._error(str(exc))
            return
        self.text.setPlainText(text)
        self.ctx.show_message(f"Loaded {Path(path).name} ({len(text):,} characters)")

    def score(self) -> None:
        info = self._model_info()
        if info is None:
            return
        text, prompt, chat = self.text.toPlainText(), self.prompt.text(), self.chat_prompt
        self.totals.setStyleSheet("")
        self.totals.setText("Scoring…")
        self.runner.start(lambda: work.score_events(info, text, prompt, chat),
                          on_events=self._on_events, on_errored=self._error)

    def _on_events(self, batch: list) -> None:
        for ev in batch:
            if isinstance(ev, work.ScoreDone):
                self.result = ev
                self.view.set_content(self.prompt.text(), list(ev.records))
                self.totals.setStyleSheet("")
                self.totals.setText(
                    f"<b>log-likelihood {ev.total_logprob:.3f} nats</b> · {ev.bits_per_char:.4f} bits/char · "
                    f"perplexity {ev.perplexity:.3f} (per token) · {ev.n_tokens} tokens · {ev.n_chars} characters")

    def _error(self, message: str) -> None:
        self.totals.setStyleSheet("color:#c62828;")
        self.totals.setText(html.escape(message))
        self.ctx.show_error(message)
