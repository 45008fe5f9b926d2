"""Chainrule Studio: the PySide6 desktop app on top of `engines` (which never imports Qt)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("chainrule-studio")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"
