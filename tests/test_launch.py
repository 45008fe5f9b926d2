"""Launching the studio where no window can open: one clear line on stderr and exit 1, never
Qt's abort (SIGABRT after a page of plugin diagnostics)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from studio import launch_check
from studio.launch_check import (XCB_LIBRARIES, display_problem, install_hint, missing_libraries,
                                 platform_will_be_xcb, qt_import_problem)

ROOT = Path(__file__).resolve().parent.parent
linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="xcb is Linux's")


def _launch(tmp_path: Path, **extra: str) -> subprocess.CompletedProcess:
    """`python -m studio` with no display in its environment (plus `extra`)."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM", "XDG_SESSION_TYPE")}
    env["CHAINRULE_STUDIO_SETTINGS"] = str(tmp_path / "settings.ini")
    env.update(extra)
    return subprocess.run([sys.executable, "-m", "studio"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)


@linux_only
def test_no_display_is_one_line_and_exit_1(tmp_path):
    proc = _launch(tmp_path)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1, proc.stderr
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("chainrule-studio: no display")
    assert "--screenshot" in lines[0] and "QT_QPA_PLATFORM=offscreen" in lines[0]
    assert proc.stdout == ""


@linux_only
def test_unreachable_x_display_is_one_line_not_an_abort(tmp_path):
    # Whatever is wrong first here (a missing xcb library, or no X server on :987), it is said in
    # one line; before, Qt aborted (exit -6).
    proc = _launch(tmp_path, DISPLAY=":987")
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1, proc.stderr
    assert len(lines) == 1, proc.stderr
    assert ("not installed here" in lines[0] and "sudo apt install" in lines[0]) or \
        "cannot connect to the X display :987" in lines[0], lines[0]
    assert "QT_QPA_PLATFORM=offscreen" in lines[0]


@linux_only
def test_xcb_chosen_without_display(tmp_path):
    proc = _launch(tmp_path, QT_QPA_PLATFORM="xcb")
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        "chainrule-studio: QT_QPA_PLATFORM=xcb needs an X display, but DISPLAY is not set; start it inside a "
        "desktop session, or for headless use run with --screenshot PNG or QT_QPA_PLATFORM=offscreen"]


@linux_only
def test_a_missing_xcb_library_is_named_with_its_package(monkeypatch):
    monkeypatch.setattr(launch_check, "XCB_LIBRARIES",
                        {**XCB_LIBRARIES, "libchainrule-absent.so.7": "libchainrule-absent7"})
    line = display_problem({"DISPLAY": ":0"})
    assert "libchainrule-absent.so.7" in line
    assert "sudo apt install" in line and "libchainrule-absent7" in line
    assert "--screenshot" in line


def test_missing_libraries_asks_the_dynamic_linker():
    assert missing_libraries({"libchainrule-absent.so.7": "x", "libc.so.6": "libc6"} if sys.platform.startswith("linux")
                             else {"libchainrule-absent.so.7": "x"}) == ["libchainrule-absent.so.7"]
    assert install_hint(["libxcb-cursor.so.0", "libxcb-icccm.so.4"], XCB_LIBRARIES) == \
        "sudo apt install libxcb-cursor0 libxcb-icccm4"


def test_which_platform_qt_will_start():
    assert platform_will_be_xcb({})
    assert platform_will_be_xcb({"DISPLAY": ":0", "XDG_SESSION_TYPE": "x11"})
    assert platform_will_be_xcb({"QT_QPA_PLATFORM": "xcb;wayland"})
    assert not platform_will_be_xcb({"QT_QPA_PLATFORM": "offscreen"})
    assert not platform_will_be_xcb({"QT_QPA_PLATFORM": "wayland"})
    assert not platform_will_be_xcb({"XDG_SESSION_TYPE": "wayland", "WAYLAND_DISPLAY": "wayland-0"})
    # Offscreen and Wayland are never refused: only what makes Qt abort is checked.
    assert display_problem({"QT_QPA_PLATFORM": "offscreen"}) is None
    assert display_problem({"XDG_SESSION_TYPE": "wayland", "WAYLAND_DISPLAY": "wayland-0"}) is None


def test_a_qt_import_failure_names_the_package():
    exc = ImportError("libEGL.so.1: cannot open shared object file: No such file or directory")
    assert qt_import_problem(exc) == "Qt cannot start: libEGL.so.1 is not installed; install it with " \
                                     "`sudo apt install libegl1`"


def test_the_readme_names_every_library_package():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for package in {*XCB_LIBRARIES.values(), *launch_check.QT_LIBRARIES.values(), "libportaudio2"}:
        assert f" {package}" in readme, package
