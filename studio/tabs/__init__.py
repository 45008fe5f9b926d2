"""The tab registry: each modality's tab registers a factory; the main window builds them.

A tab module registers itself when imported::

    from studio.tabs import register_tab

    @register_tab("Text", order=10)
    def make_text_tab(ctx: StudioContext) -> QWidget:
        return TextTab(ctx)

and adds its module name to `BUILTIN_TAB_MODULES` below. The list is explicit rather than
discovered with pkgutil because frozen (PyInstaller) builds cannot list package folders.

The factory receives the window's `StudioContext` (studio/context.py): the decoding config,
model folders, the status bar and `task_runner(name)` for background work.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:  # keep this module importable without building any widget
    from PySide6.QtWidgets import QWidget

    from studio.context import StudioContext

TabFactory = Callable[["StudioContext"], "QWidget"]

# Modules imported by `load_builtin_tabs()`, each registering one tab. Suggested orders:
# Text 10, Image 20, Audio 30, Density 40, Models 90, History 95.
BUILTIN_TAB_MODULES: tuple[str, ...] = (
    "studio.tabs.text_tab",
    "studio.tabs.image_tab",
    "studio.tabs.audio_tab",
    "studio.tabs.density_tab",
    "studio.tabs.models_tab",
    "studio.tabs.history_tab",
)


@dataclass(frozen=True)
class TabSpec:
    name: str  # shown on the tab and accepted by `--tab` (case-insensitive)
    factory: TabFactory
    order: int = 100  # tabs appear by increasing order, then by name


_REGISTRY: dict[str, TabSpec] = {}  # keyed by name.lower()


def register_tab(name: str, factory: TabFactory | None = None, *, order: int = 100):
    """Register `factory` under `name`; usable as a call or as a decorator.

    Registering a name again replaces the earlier entry (a module imported twice, a test
    swapping a tab for a fake) rather than adding a second tab.
    """
    if not name or not name.strip():
        raise ValueError("a tab needs a non-empty name")

    def add(f: TabFactory) -> TabFactory:
        _REGISTRY[name.lower()] = TabSpec(name, f, order)
        return f

    return add(factory) if factory is not None else add


def unregister_tab(name: str) -> None:
    _REGISTRY.pop(name.lower(), None)


def registered_tabs() -> list[TabSpec]:
    """Every registered tab, in display order."""
    return sorted(_REGISTRY.values(), key=lambda s: (s.order, s.name.lower()))


def find_tab(name: str) -> TabSpec | None:
    return _REGISTRY.get(name.lower())


def load_builtin_tabs() -> list[TabSpec]:
    """Import the built-in tab modules (each registers itself); returns all tabs."""
    for module in BUILTIN_TAB_MODULES:
        importlib.import_module(module)
    return registered_tabs()
