"""Start the studio: `python -m studio [--tab NAME] [--models-dir DIR] [--screenshot PNG]`."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Sequence

from studio.context import APPLICATION, ORGANIZATION

WINDOW_SIZE = (1280, 800)

# Small touches over Fusion: titles, hints and group boxes; colours come from the palette.
STYLE_SHEET = """
QLabel#PageTitle { font-size: 15pt; font-weight: 600; }
QLabel#SectionTitle { font-weight: 600; }
QLabel#Hint { color: #6b7280; }
QLabel#EmptyState { color: #4b5563; padding: 24px; }
QLabel#ChainName {
    background: palette(base); border: 1px solid palette(mid); border-radius: 4px; padding: 6px;
}
QGroupBox { font-weight: 600; border: 1px solid palette(mid); border-radius: 6px;
            margin-top: 12px; padding-top: 6px; }
QGroupBox::title { subcontrol-origin: margin; left: 8px; padding: 0 4px; }
QGroupBox QCheckBox, QGroupBox QLabel, QGroupBox QListWidget, QGroupBox QSpinBox,
QGroupBox QDoubleSpinBox, QGroupBox QAbstractSpinBox { font-weight: normal; }
QTabBar::tab { padding: 6px 16px; }
QDockWidget::title { padding: 6px; font-weight: 600; }
"""


def build_parser(tab_names: Sequence[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="chainrule-studio",
        description=f"{APPLICATION}: autoregressive generative models, every probability in view.",
    )
    parser.add_argument("--tab", metavar="NAME",
                        help=f"open on this tab (one of: {', '.join(tab_names)}; any case)")
    parser.add_argument("--models-dir", metavar="DIR", action="append", type=Path, default=[],
                        help="also look for models in DIR this session (repeatable)")
    parser.add_argument("--screenshot", metavar="PNG", type=Path,
                        help=f"render the window at {WINDOW_SIZE[0]}x{WINDOW_SIZE[1]} "
                             "offscreen, save it as PNG and exit")
    return parser


def _use_offscreen_if_headless() -> None:
    # Without a display Qt aborts looking for xcb; a screenshot needs no screen at all.
    if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
            or os.environ.get("QT_QPA_PLATFORM")):
        os.environ["QT_QPA_PLATFORM"] = "offscreen"


def launch_problem() -> str | None:
    """Why no window can open here (no display, a system library Qt's xcb plugin needs), as one
    line, checked before Qt starts: Qt itself would abort. None when the window can open."""
    from studio.launch_check import display_problem

    return display_problem()


def icon_path() -> Path:
    """The application icon (SVG, shipped inside the `studio` package; packaging/ installs the same
    file for desktop launchers)."""
    from importlib import resources

    return Path(str(resources.files("studio") / "resources" / "chainrule-studio.svg"))


def configure_app(app) -> None:
    """Name, icon, Fusion style, a readable font size and the style sheet."""
    from PySide6.QtGui import QFont, QIcon

    app.setApplicationName(APPLICATION)
    app.setWindowIcon(QIcon(str(icon_path())))
    # Lets Wayland/X11 docks match the window to packaging/chainrule-studio.desktop.
    app.setDesktopFileName("chainrule-studio")
    app.setApplicationDisplayName(APPLICATION)
    app.setOrganizationName(ORGANIZATION)
    app.setStyle("Fusion")  # looks the same on every platform, and offscreen
    font = app.font()
    if font.pointSizeF() < 10:
        font.setPointSizeF(10)
    font.setStyleStrategy(QFont.StyleStrategy.PreferAntialias)
    app.setFont(font)
    app.setStyleSheet(STYLE_SHEET)


def save_atomically(pixmap, path: Path) -> None:
    """Write to a temporary file beside `path`, then rename (engines.atomic): never a half-written PNG."""
    from engines.atomic import atomic_path

    path = path.expanduser().resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        if not pixmap.save(str(tmp), "PNG"):
            raise OSError(f"could not write {path}")


DATA_ENV = "CHAINRULE_STUDIO_DATA"  # the history folder; tests point it at a temp folder


def history_folder() -> Path:
    """Where the run history lives: $CHAINRULE_STUDIO_DATA, else the user data dir
    (QStandardPaths AppDataLocation, e.g. ~/.local/share/Chainrule/Chainrule Studio)."""
    path = os.environ.get(DATA_ENV)
    if path:
        return Path(path).expanduser()
    from PySide6.QtCore import QStandardPaths

    base = QStandardPaths.writableLocation(QStandardPaths.StandardLocation.AppDataLocation)
    return Path(base) if base else Path.home() / ".chainrule-studio"


def attach_history(window, folder: Path | None = None):
    """Open the run history (`history_folder()` unless `folder`) and attach it to `window`: runs are
    recorded and each tab's last state restored. A history that cannot be opened (a corrupt file, a
    read-only folder) is one status line; the studio then runs without history. The store, or None."""
    from studio.history.store import HistoryStore, HistoryUnavailable

    try:
        store = HistoryStore(folder if folder is not None else history_folder())
    except HistoryUnavailable as exc:
        window.history.attach(None, f"History is off: {exc}")
        return None
    window.history.attach(store)
    return store


def freeze_startup_heap() -> None:
    """Put everything alive once the window is up (Qt's wrappers, NumPy, ONNX Runtime, the tabs)
    out of the cyclic garbage collector's sight, for the rest of the session.

    A long session allocates many small objects (a 10,000-token branch is tens of thousands of
    records and tuples), and every so often Python's collector then walks the whole heap, on
    the UI thread: ~60 ms with the studio's start-up objects in it, a visible stall. Frozen, they
    are no longer walked (a full pass over what the session made since takes a few ms); they
    are never garbage anyway. Objects still freed by reference counting are unaffected.
    """
    import gc

    gc.collect()
    gc.freeze()


def main(argv: Sequence[str] | None = None) -> int:
    from studio.tabs import load_builtin_tabs

    # Tab names come from the registry, so `--tab` errors can list them before Qt starts.
    tab_names = [spec.name for spec in load_builtin_tabs()]
    parser = build_parser(tab_names)
    args = parser.parse_args([str(a) for a in argv] if argv is not None else None)
    if args.tab is not None and args.tab.lower() not in {n.lower() for n in tab_names}:
        parser.error(f"unknown tab {args.tab!r}; choose one of: {', '.join(tab_names)}")
    if args.screenshot is not None:
        _use_offscreen_if_headless()
    problem = launch_problem()
    if problem is not None:
        print(f"chainrule-studio: {problem}", file=sys.stderr)
        return 1
    try:
        from PySide6.QtWidgets import QApplication
    except ImportError as exc:  # a system library Qt links is missing: one line, not a traceback
        from studio.launch_check import qt_import_problem

        print(f"chainrule-studio: {qt_import_problem(exc)}", file=sys.stderr)
        return 1

    from studio.main_window import MainWindow

    app = QApplication.instance() or QApplication([sys.argv[0] if sys.argv else APPLICATION])
    configure_app(app)
    window = MainWindow(extra_model_dirs=args.models_dir)
    if args.tab:
        window.select_tab(args.tab)
    window.resize(*WINDOW_SIZE)

    if args.screenshot is not None:
        window.show()
        # A few rounds let layouts settle and deferred (0 ms timer) work run before grabbing.
        for _ in range(5):
            app.processEvents()
        try:
            save_atomically(window.grab(), args.screenshot)
        except OSError as exc:
            print(f"chainrule-studio: {exc}", file=sys.stderr)
            return 1
        finally:
            window.close()
            window.deleteLater()
        return 0

    # Not for --screenshot: a rendered page must not depend on (or add to) the user's history.
    attach_history(window)
    window.show()
    freeze_startup_heap()
    return app.exec()


if __name__ == "__main__":
    raise SystemExit(main())
