"""The status line a tab keeps under its controls: rich text for news, red for errors.

A mixin for tab widgets that own `self.status` (a QLabel) and `self.ctx` (StudioContext):
errors also reach the window's status bar, and tests read the line back as plain text.
"""

from __future__ import annotations

import html


class StatusLineMixin:
    def _say(self, text_html: str) -> None:
        self.status.setStyleSheet("")
        self.status.setText(text_html)

    def _say_error(self, message: str) -> None:
        self.status.setStyleSheet("color:#c62828;")
        self.status.setText(html.escape(message))
        self.ctx.show_error(message)

    def status_text(self) -> str:
        """The status line as plain text (for tests and the curious)."""
        from PySide6.QtGui import QTextDocumentFragment

        return QTextDocumentFragment.fromHtml(self.status.text()).toPlainText()
