"""Work around a reference-counting bug in PySide6's `SignalInstance.emit`.

Seen with PySide6 6.12.0 on CPython 3.11: `emit()` returns `True` without taking a
reference to it, so every emit from Python lowers `True`'s refcount by one. After a few
hundred emits (a worker yielding tokens, pyqtgraph redrawing) the interpreter aborts with
"Fatal Python error: bool_dealloc: deallocating True or False". CPython 3.12+ makes `True`
immortal, which hides the bug there.

Rather than trusting a version number, `install()` measures: it emits a probe signal a few
times and, only if `True` lost references, wraps `SignalInstance.emit` to add back the one
reference the result is missing. Patching the type also covers emits made by libraries
(pyqtgraph, pytest-qt), not just ours. Imported by `studio/__init__.py`, before any emit.
"""

from __future__ import annotations

import ctypes
import sys

PROBE_EMITS = 32
_installed = False


def emit_loses_a_reference() -> bool:
    """True when `SignalInstance.emit` drops a reference to its (True) result."""
    from PySide6.QtCore import QObject, Signal

    class _Probe(QObject):
        ping = Signal()

    probe = _Probe()
    before = sys.getrefcount(True)
    for _ in range(PROBE_EMITS):
        probe.ping.emit()
    lost = before - sys.getrefcount(True)
    if lost > 0:  # give back what the probe itself took
        for _ in range(lost):
            ctypes.pythonapi.Py_IncRef(ctypes.py_object(True))
    # Other threads may move the count a little; a real leak is one per emit.
    return lost >= PROBE_EMITS // 2


def install() -> bool:
    """Patch `SignalInstance.emit` if (and only if) it leaks; returns whether it patched."""
    global _installed
    if _installed:
        return True
    if not emit_loses_a_reference():
        return False
    from PySide6.QtCore import SignalInstance

    original = SignalInstance.emit
    incref = ctypes.pythonapi.Py_IncRef
    py_object = ctypes.py_object

    def emit(self, *args):
        result = original(self, *args)
        incref(py_object(result))  # the reference PySide forgot to give us
        return result

    emit.__doc__ = original.__doc__
    SignalInstance.emit = emit
    _installed = True
    return True
