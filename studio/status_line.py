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

    def _write_export(self, path: str, write, done) -> bool:
        """Run `write()` (an atomic file write); report the failure, or success as `done`
        (a text, or a function of what `write` returned)."""
        from engines.errors import ChainruleError

        try:
            result = write()
        except ChainruleError as exc:
            self._say_error(f"Export failed: {exc}")
            return False
        except OSError as exc:
            self._say_error(f"Export failed: cannot write {path}: {exc.strerror or exc}")
            return False
        done = done(result) if callable(done) else done
        self._say(f"{html.escape(done)} to {html.escape(str(path))}")
        self.ctx.show_message(f"{done} to {path}")
        return True
