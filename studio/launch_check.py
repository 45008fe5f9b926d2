"""Before Qt starts: can a window open here? One clear line instead of Qt's abort.

Without a display, or when the xcb platform plugin cannot load because a system library is
missing (libxcb-cursor0 is the usual one since Qt 6.5), Qt prints a page of plugin diagnostics
and aborts the process (SIGABRT, a core dump on some systems). `display_problem()` finds those
cases first, without importing Qt: it says what is missing and how to fix it, and `studio.app`
prints that one line and exits 1.

Linux only (other systems have no xcb); it checks only what makes Qt abort, never refuses a
platform it does not know (wayland, eglfs, a QT_QPA_PLATFORM the user chose).
"""

from __future__ import annotations

import ctypes
import os
import re
import sys
from pathlib import Path
from typing import Mapping

# What Qt's xcb platform plugin (PySide6 6.x: plugins/platforms/libqxcb.so and the
# libQt6XcbQpa.so.6 it links, read with `objdump -p`) needs from the system, soname -> the
# Debian/Ubuntu package that ships it. The README's install line lists the same packages.
XCB_LIBRARIES: dict[str, str] = {
    "libxcb-cursor.so.0": "libxcb-cursor0",
    "libxcb-icccm.so.4": "libxcb-icccm4",
    "libxcb-keysyms.so.1": "libxcb-keysyms1",
    "libxcb-image.so.0": "libxcb-image0",
    "libxcb-render-util.so.0": "libxcb-render-util0",
    "libxcb-util.so.1": "libxcb-util1",
    "libxcb-randr.so.0": "libxcb-randr0",
    "libxcb-shape.so.0": "libxcb-shape0",
    "libxcb-shm.so.0": "libxcb-shm0",
    "libxcb-sync.so.1": "libxcb-sync1",
    "libxcb-xfixes.so.0": "libxcb-xfixes0",
    "libxcb-render.so.0": "libxcb-render0",
    "libxcb-xkb.so.1": "libxcb-xkb1",
    "libxcb.so.1": "libxcb1",
    "libX11-xcb.so.1": "libx11-xcb1",
    "libX11.so.6": "libx11-6",
    "libxkbcommon-x11.so.0": "libxkbcommon-x11-0",
    "libxkbcommon.so.0": "libxkbcommon0",
    "libGL.so.1": "libgl1",
}
# What QtGui, QtCore and QtDBus need on any platform (a missing one fails `import PySide6...`).
QT_LIBRARIES: dict[str, str] = {
    "libEGL.so.1": "libegl1",
    "libGL.so.1": "libgl1",
    "libfontconfig.so.1": "libfontconfig1",
    "libfreetype.so.6": "libfreetype6",
    "libxkbcommon.so.0": "libxkbcommon0",
    "libglib-2.0.so.0": "libglib2.0-0",
    "libgthread-2.0.so.0": "libglib2.0-0",
    "libdbus-1.so.3": "libdbus-1-3",
}

HEADLESS_HINT = "for headless use run with --screenshot PNG or QT_QPA_PLATFORM=offscreen"


def platform_will_be_xcb(env: Mapping[str, str]) -> bool:
    """Whether Qt will start its xcb (X11) plugin: QT_QPA_PLATFORM names it first, or, unset,
    this is not a Wayland session (there Qt tries wayland first)."""
    chosen = env.get("QT_QPA_PLATFORM", "")
    if chosen:
        return chosen.split(";")[0].split(":")[0].strip() == "xcb"
    wayland_session = env.get("XDG_SESSION_TYPE", "").lower() == "wayland" and bool(env.get("WAYLAND_DISPLAY"))
    return not wayland_session


def missing_libraries(libraries: Mapping[str, str]) -> list[str]:
    """The sonames of `libraries` the dynamic linker cannot load (the same search Qt's own
    dlopen makes: LD_LIBRARY_PATH, the ld.so cache, the default folders)."""
    missing = []
    for soname in libraries:
        try:
            ctypes.CDLL(soname)
        except OSError:
            missing.append(soname)
    return missing


def install_hint(sonames: list[str], libraries: Mapping[str, str]) -> str:
    """'sudo apt install pkg1 pkg2' for the missing sonames (each package once, in order)."""
    packages = list(dict.fromkeys(libraries.get(s, s) for s in sonames))
    return "sudo apt install " + " ".join(packages)


def _xcb_plugin() -> Path | None:
    """PySide6's libqxcb.so, found without importing Qt (None when PySide6 is not laid out as usual)."""
    from importlib.util import find_spec

    spec = find_spec("PySide6")
    if spec is None or not spec.submodule_search_locations:
        return None
    plugin = Path(list(spec.submodule_search_locations)[0]) / "Qt" / "plugins" / "platforms" / "libqxcb.so"
    return plugin if plugin.is_file() else None


def _plugin_load_error(plugin: Path | None) -> str | None:
    """Why the xcb plugin cannot be loaded (the dynamic linker's reason), or None when it can.
    Catches a dependency a newer PySide6 adds that XCB_LIBRARIES does not list yet."""
    if plugin is None:
        return None
    try:
        ctypes.CDLL(str(plugin))
    except OSError as exc:
        return str(exc)
    return None


def _x_server_error(display: str) -> str | None:
    """Why no X connection opens on `display` (through libxcb, as Qt would), or None when it opens."""
    try:
        xcb = ctypes.CDLL("libxcb.so.1")
    except OSError:
        return None  # reported as a missing library instead
    xcb.xcb_connect.restype = ctypes.c_void_p
    xcb.xcb_connect.argtypes = [ctypes.c_char_p, ctypes.POINTER(ctypes.c_int)]
    xcb.xcb_connection_has_error.argtypes = [ctypes.c_void_p]
    xcb.xcb_disconnect.argtypes = [ctypes.c_void_p]
    conn = xcb.xcb_connect(display.encode(), None)  # never NULL: an error connection at worst
    failed = xcb.xcb_connection_has_error(conn)
    xcb.xcb_disconnect(conn)
    return f"cannot connect to the X display {display} (is the X server running, and may this user use it?)" \
        if failed else None


def display_problem(env: Mapping[str, str] | None = None, *, check_server: bool = True) -> str | None:
    """The one line to print when a window cannot open here (None when it can, or when this is
    not a case Qt would abort on). Order: no display at all, then missing xcb libraries, then
    the plugin itself, then the X server."""
    env = os.environ if env is None else env
    if not sys.platform.startswith("linux"):
        return None
    if not platform_will_be_xcb(env):
        return None
    display = env.get("DISPLAY", "")
    if not display:
        if env.get("QT_QPA_PLATFORM"):
            return f"QT_QPA_PLATFORM={env['QT_QPA_PLATFORM']} needs an X display, but DISPLAY is not set; " \
                   f"start it inside a desktop session, or {HEADLESS_HINT}"
        return f"no display to open a window on (neither DISPLAY nor WAYLAND_DISPLAY is set); start it inside " \
               f"a desktop session, or {HEADLESS_HINT}"
    missing = missing_libraries(XCB_LIBRARIES)
    if missing:
        return f"Qt's X11 (xcb) platform needs {', '.join(missing)}, not installed here; install " \
               f"{'it' if len(missing) == 1 else 'them'} with `{install_hint(missing, XCB_LIBRARIES)}`, or {HEADLESS_HINT}"
    reason = _plugin_load_error(_xcb_plugin())
    if reason:
        found = re.search(r"(lib[\w.+-]+\.so[\w.]*): cannot open shared object file", reason)
        what = f"{found.group(1)}, not installed here" if found else reason
        return f"Qt's X11 (xcb) platform plugin cannot load: it needs {what}; install the package that ships " \
               f"it, or {HEADLESS_HINT}"
    if check_server:
        reason = _x_server_error(display)
        if reason:
            return f"{reason}; {HEADLESS_HINT}"
    return None


def qt_import_problem(exc: ImportError) -> str:
    """One line for a PySide6 import that failed on a missing system library."""
    text = str(exc)
    found = re.search(r"(lib[\w.+-]+\.so[\w.]*): cannot open shared object file", text)
    if found and found.group(1) in QT_LIBRARIES:
        soname = found.group(1)
        return f"Qt cannot start: {soname} is not installed; install it with " \
               f"`{install_hint([soname], QT_LIBRARIES)}`"
    return f"Qt cannot start: {text}"
