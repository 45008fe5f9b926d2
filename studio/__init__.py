"""Chainrule Studio: the PySide6 desktop app on top of `engines` (which never imports Qt)."""

from importlib.metadata import PackageNotFoundError, version

from studio import _pyside_fixes

try:
    __version__ = version("chainrule-studio")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

# Before any signal is emitted: PySide6 6.12.0 on Python 3.11 loses a reference to True on
# every emit and would abort the interpreter after a few hundred (see _pyside_fixes).
PYSIDE_EMIT_PATCHED = _pyside_fixes.install()
