"""The status line a tab keeps under its controls: rich text for news, red for errors.

A mixin for tab widgets that own `self.status` (a QLabel, see studio.widgets.status_label)
and `self.ctx` (StudioContext): errors also reach the window's status bar, and tests read
the line back as plain text. Reading and writing files report through it too
(`_read_file`, `_write_export`). Also the words the status lines share (`next_seed_text`).
"""

from __future__ import annotations

import html
import logging

log = logging.getLogger(__name__)


def next_seed_text(config) -> str:
    """What seed the next run takes under a DecodingConfig, said before any run."""
    return f"fixed seed {config.seed}" if config.seed is not None else "a fresh seed each run (shown here)"


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

    def _read_file(self, path: str, read, what: str = ""):
        """What `read()` returns (it reads the file at `path`), or None after saying why it could
        not: any unreadable file is a message, never a crash (`what` names it in the log)."""
        from engines.errors import ChainruleError

        try:
            return read()
        except ChainruleError as exc:
            self._say_error(str(exc))
        except Exception as exc:  # noqa: BLE001 - any unreadable file: a message, never a crash
            log.exception("loading %s%s failed", what, path)
            self._say_error(f"cannot read {path}: {type(exc).__name__}: {exc}")
        return None

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
