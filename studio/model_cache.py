"""Loaded models shared by a tab's runs: loaded once on a worker thread, then reused.

Keyed by id, folder and the main graph's mtime, so a re-exported model is loaded afresh. A
second worker asking for a model that is being loaded waits for the first load.

Each modality's work module keeps one and exports its three functions::

    load_model, cached_model, forget_models = ModelCache(_load, "model").functions()
"""

from __future__ import annotations

import threading
from typing import Any, Callable

from engines.registry import ModelInfo


class ModelCache:
    def __init__(self, loader: Callable[[ModelInfo], Any], main_file_role: str):
        self._loader = loader
        self._role = main_file_role
        self._models: dict[tuple[str, str], Any] = {}
        self._lock = threading.Lock()

    def _key(self, info: ModelInfo) -> tuple[str, str]:
        try:
            stamp = str(info.file(self._role).stat().st_mtime_ns)
        except Exception:  # noqa: BLE001 - a missing file fails properly when loading
            stamp = ""
        return (info.id, f"{info.path}|{stamp}")

    def load(self, info: ModelInfo) -> Any:
        """The loaded model for `info`. Call on a worker thread: it may load."""
        with self._lock:
            key = self._key(info)
            model = self._models.get(key)
            if model is None:
                model = self._models[key] = self._loader(info)
            return model

    def cached(self, info: ModelInfo | None) -> Any:
        """The model if a run already loaded it, else None (never loads: safe on the UI thread)."""
        if info is None:
            return None
        with self._lock:
            return self._models.get(self._key(info))

    def forget(self) -> None:
        with self._lock:
            self._models.clear()

    def functions(self) -> tuple[Callable[[ModelInfo], Any], Callable[[ModelInfo | None], Any], Callable[[], None]]:
        """(load, cached, forget): what a work module exports as load_model (call on a worker
        thread: it may load), cached_model (never loads: safe on the UI thread) and forget_models."""
        return self.load, self.cached, self.forget
