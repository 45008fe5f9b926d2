"""The main window: one tab per registered tab, the decoding panel docked on the right."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterable

from PySide6.QtCore import QEvent, QSettings, Qt, Signal
from PySide6.QtGui import QAction, QCloseEvent, QKeySequence
from PySide6.QtWidgets import (
    QDockWidget,
    QLabel,
    QMainWindow,
    QMessageBox,
    QTabBar,
    QTabWidget,
    QWidget,
)

import studio
from studio.context import TAB_KEYS, APPLICATION, StudioContext, short_provider
from studio.decoding_dock import DecodingDock
from studio.history.window import WindowHistory
from studio.tabs import TabSpec, load_builtin_tabs

log = logging.getLogger(__name__)

SHUTDOWN_WAIT_MS = 3000  # generators stop at their next yield: far less than this


class PageTabs(QTabWidget):
    """The window's tabs, without a whole-page repaint whenever something in a page changes size.

    QTabWidget answers every LayoutRequest by laying out its bar and page stack again and
    repainting itself, i.e. all of the current page. A LayoutRequest reaches it whenever a
    widget inside a page changes its size hint, which a label does at every new text: the
    Audio tab's status, totals and playback labels, updated several times a second while a
    run streams in, made every button, spin box and plot of the tab repaint each time (the
    plots are the costly part), time the model's worker lost on a busy machine. The bar and
    the stack only move when the bar's size hint, the number of tabs or the bar's visibility
    change, or when the widget is resized (its resizeEvent lays them out); otherwise only a
    change of the tabs' own size hints is passed on (the window's minimum size), and nothing
    that did not change is repainted.

    `switching(index)` is emitted when a tab is chosen, before its page is shown (currentChanged
    comes after): what the window changes around the page for it (the decoding dock) is in place
    when the page first gets its size, so a page is not shown at the old size and then resized."""

    switching = Signal(int)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        bar = QTabBar(self)
        bar.setObjectName("qt_tabwidget_tabbar")  # as QTabWidget's own
        # connected before QTabWidget connects its own slot (in setTabBar), so it runs first
        bar.currentChanged.connect(self.switching)
        self.setTabBar(bar)
        self._laid_out_for: tuple | None = None  # what the bar looked like at the last full layout
        self._hints: tuple | None = None  # the size hints last passed on to the window

    def _bar_state(self) -> tuple:
        bar = self.tabBar()
        return bar.sizeHint(), self.count(), bar.isVisibleTo(self), self.size()

    def event(self, event: QEvent) -> bool:  # noqa: D401 - Qt's name
        if event.type() == QEvent.Type.LayoutRequest and self.isVisible():
            state = self._bar_state()
            if state == self._laid_out_for:
                hints = (self.minimumSizeHint(), self.sizeHint())
                if hints != self._hints:
                    self._hints = hints
                    self.updateGeometry()
                return True
            self._laid_out_for = state
            self._hints = None
        return super().event(event)


class MainWindow(QMainWindow):
    def __init__(
        self,
        extra_model_dirs: Iterable[Path | str] = (),
        settings: QSettings | None = None,
        tabs: Iterable[TabSpec] | None = None,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.setWindowTitle(APPLICATION)
        self.ctx = StudioContext(settings, extra_model_dirs, parent=self)

        self.tabs = PageTabs()
        self.tabs.setObjectName("ModalityTabs")
        self.tabs.setDocumentMode(True)
        self.setCentralWidget(self.tabs)

        # The dock edits the active tab's own config only (studio/decoding_dock.py): whose it is,
        # Reset to model defaults, the panel, and a warning when the settings would collapse.
        self.decoding_settings = DecodingDock(self.ctx)
        self.decoding_panel = self.decoding_settings.panel
        self.decoding_dock = QDockWidget("Decoding", self)
        self.decoding_dock.setObjectName("DecodingDock")
        self.decoding_dock.setWidget(self.decoding_settings)
        self.decoding_dock.setFeatures(
            QDockWidget.DockWidgetFeature.DockWidgetMovable
            | QDockWidget.DockWidgetFeature.DockWidgetFloatable
            | QDockWidget.DockWidgetFeature.DockWidgetClosable
        )
        self.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, self.decoding_dock)
        # Tabs with their own sampling controls (Audio) or none (Models) set
        # `uses_decoding_panel = False`; the dock hides there and comes back elsewhere
        # unless the user closed it.
        self._dock_wanted = True
        self._placing_dock = False
        self.decoding_dock.visibilityChanged.connect(self._on_dock_visibility)
        # The dock goes before the new page is shown (switching) and comes back once the old page is
        # hidden (currentChanged): a page is only ever resized for it while hidden, when resizing costs
        # nothing. The Audio tab (no dock) is shown again at the width it had and its plots keep the
        # layout, tick labels and pixmaps they had: no 40-60 ms re-layout and repaint at each switch.
        self.tabs.switching.connect(lambda i: self._place_decoding_dock(i, hide_only=True))
        self.tabs.currentChanged.connect(self._place_decoding_dock)

        self._build_status_bar()
        # The History tab's store, tab states, File > Open sample and drops (studio/history/window.py);
        # runs are recorded once the app attaches a store (`history.attach`, studio/app.py).
        self.history = WindowHistory(self)
        self._build_menus()
        for spec in (tabs if tabs is not None else load_builtin_tabs()):
            self.add_tab(spec)

    # --- tabs ---------------------------------------------------------------------------
    def add_tab(self, spec: TabSpec) -> QWidget:
        """Build `spec`'s widget; a factory that raises becomes a tab showing the error."""
        try:
            widget = spec.factory(self.ctx)
        except Exception as exc:  # noqa: BLE001 - one broken tab must not stop the studio
            log.exception("building tab %s failed", spec.name)
            widget = QLabel(f"The {spec.name} tab could not be built:\n"
                            f"{type(exc).__name__}: {exc}")
            widget.setAlignment(Qt.AlignmentFlag.AlignCenter)
            widget.setStyleSheet("color: #c62828;")
        widget.setObjectName(widget.objectName() or f"{spec.name}Tab")
        self.tabs.addTab(widget, spec.name)
        combo = getattr(widget, "model_combo", None)
        if combo is not None and hasattr(combo, "currentIndexChanged"):
            # the dock's header, greying and collapse probe follow the shown tab's model
            combo.currentIndexChanged.connect(lambda _i, w=widget: self._tab_model_changed(w))
        return widget

    def _tab_model_changed(self, widget: QWidget) -> None:
        if self.tabs.currentWidget() is widget:
            self.decoding_settings.model_changed()

    def _on_dock_visibility(self, visible: bool) -> None:
        if not self._placing_dock and self.isVisible() and not self.isMinimized():
            self._dock_wanted = visible

    def _place_decoding_dock(self, index: int, hide_only: bool = False) -> None:
        widget = self.tabs.widget(index)
        uses = bool(getattr(widget, "uses_decoding_panel", True))
        key = getattr(widget, "MODEL_KIND", None)
        if not hide_only and uses and key in TAB_KEYS:  # the panel now edits this tab's own config
            self.decoding_settings.show_tab(key, self.tabs.tabText(index), widget)
        self._placing_dock = True
        try:
            show = uses and self._dock_wanted
            if hide_only and show:
                return
            changed = show != self.decoding_dock.isVisible()
            self.decoding_dock.setVisible(show)
            if changed:
                # Lay the window out now, not at the next turn: the new page gets its final width
                # before it is first painted, so it is painted once, not at the old width and then
                # again (the Audio tab's plots, painted twice per switch, took over 100 ms). Not
                # before the window is shown: nothing is painted yet, and laying out a window not
                # yet given its size would size it to its contents.
                if self.isVisible():
                    self.layout().activate()
        finally:
            self._placing_dock = False

    def tab_names(self) -> list[str]:
        return [self.tabs.tabText(i) for i in range(self.tabs.count())]

    def select_tab(self, name: str) -> bool:
        """Show the tab called `name` (case-insensitive); False if there is none."""
        for i, text in enumerate(self.tab_names()):
            if text.lower() == name.lower():
                self.tabs.setCurrentIndex(i)
                return True
        return False

    def tab(self, name: str) -> QWidget | None:
        for i, text in enumerate(self.tab_names()):
            if text.lower() == name.lower():
                return self.tabs.widget(i)
        return None

    # --- status bar and menus -------------------------------------------------------------
    def _build_status_bar(self) -> None:
        bar = self.statusBar()
        info = self.ctx.runtime_info()
        provider = info.get("provider")
        self.provider_label = QLabel(f"ONNX Runtime: {short_provider(provider)}")
        self.provider_label.setObjectName("ProviderLabel")
        tip = [f"Provider in use: {provider or 'unknown'}"]
        if info.get("providers_available"):
            tip.append("Available: " + ", ".join(info["providers_available"]))
        if info.get("cuda_unavailable_reason"):
            tip.append("CUDA not used: " + info["cuda_unavailable_reason"])
        self.provider_label.setToolTip("\n".join(tip))
        bar.addPermanentWidget(self.provider_label)
        self.ctx.statusMessage.connect(self.show_message)
        self.ctx.errorMessage.connect(self.show_error)
        # Error messages are red; the colour goes when the message does.
        bar.messageChanged.connect(lambda text: text or bar.setStyleSheet(""))
        self.show_message("Ready", 3000)

    def show_message(self, text: str, timeout_ms: int = 5000) -> None:
        self.statusBar().setStyleSheet("")
        self.statusBar().showMessage(text, timeout_ms)

    def show_error(self, text: str) -> None:
        self.statusBar().setStyleSheet("QStatusBar { color: #c62828; }")
        self.statusBar().showMessage(text, 10000)

    def _build_menus(self) -> None:
        file_menu = self.menuBar().addMenu("&File")
        add = QAction("Add models folder…", self)
        add.triggered.connect(self._add_models_folder)
        file_menu.addAction(add)
        open_sample = QAction("Open sample…", self)
        open_sample.setShortcut(QKeySequence.StandardKey.Open)
        open_sample.setToolTip("Open a PNG, WAV, FLAC or JSON exported by chainrule: its tab is set to its request")
        open_sample.triggered.connect(lambda: self.history.open_sample())
        file_menu.addAction(open_sample)
        file_menu.addSeparator()
        quit_action = QAction("Quit", self)
        quit_action.setShortcut(QKeySequence.StandardKey.Quit)
        quit_action.triggered.connect(self.close)
        file_menu.addAction(quit_action)

        view_menu = self.menuBar().addMenu("&View")
        view_menu.addAction(self.decoding_dock.toggleViewAction())
        history_action = QAction("History", self)
        history_action.setShortcut(QKeySequence("Ctrl+H"))
        history_action.triggered.connect(self.history.show_panel)
        view_menu.addAction(history_action)

        help_menu = self.menuBar().addMenu("&Help")
        about = QAction("About Chainrule Studio", self)
        about.triggered.connect(self.show_about)
        help_menu.addAction(about)

    def _add_models_folder(self) -> None:
        models = self.tab("Models")
        if models is not None and hasattr(models, "add_folder"):
            self.select_tab("Models")
            models.add_folder()

    def about_text(self) -> str:
        from PySide6 import __version__ as pyside_version

        info = self.ctx.runtime_info()
        return (
            f"<h3>{APPLICATION} {studio.__version__}</h3>"
            "<p>A desktop studio for autoregressive generative models: every output is "
            "built one value at a time from the chain rule of probability, and the studio "
            "shows the probabilities behind each choice.</p>"
            f"<p>Tabs in this build: {', '.join(self.tab_names()) or 'none'}.</p>"
            f"<p>ONNX Runtime provider: {info.get('provider') or 'unknown'}"
            + (f" (CUDA not used: {info['cuda_unavailable_reason']})"
               if info.get("cuda_unavailable_reason") else "")
            + f"<br>PySide6 {pyside_version}</p>"
        )

    def show_about(self) -> None:
        QMessageBox.about(self, f"About {APPLICATION}", self.about_text())

    # --- shutdown -------------------------------------------------------------------------
    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802 - Qt naming
        """Stop every task and wait for the workers, so no thread outlives the window."""
        self.ctx.stop_all()
        if not self.ctx.wait_idle(SHUTDOWN_WAIT_MS):
            log.warning("some workers were still running %d ms after stop", SHUTDOWN_WAIT_MS)
        self.history.close()  # records how the stopped runs ended, saves each tab's state
        super().closeEvent(event)
