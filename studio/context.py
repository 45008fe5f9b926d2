"""What a tab gets from the main window: one `StudioContext` shared by every tab.

Tabs never reach into the main window; they read the decoding config, the model folders and
the runtime from here, report through `show_message`/`show_error`, and run background work on
runners from `task_runner()` so that closing the window stops it.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any, Iterable

import shiboken6
from PySide6.QtCore import QObject, QSettings, Signal

from engines.decoding.config import DecodingConfig
from studio.worker import TaskRunner

log = logging.getLogger(__name__)

ORGANIZATION = "Chainrule"
APPLICATION = "Chainrule Studio"
SETTINGS_ENV = "CHAINRULE_STUDIO_SETTINGS"  # an .ini path; tests point it at a temp file
_MODEL_DIRS_KEY = "models/extra_dirs"


def make_settings() -> QSettings:
    """The studio's persistent settings (the user's config dir unless $CHAINRULE_STUDIO_SETTINGS)."""
    path = os.environ.get(SETTINGS_ENV)
    if path:
        return QSettings(path, QSettings.Format.IniFormat)
    return QSettings(ORGANIZATION, APPLICATION)


def runtime_info() -> dict[str, Any]:
    """`engines.runtime.runtime_info()`, or an honest 'unknown' while that module is absent."""
    try:
        from engines.runtime import runtime_info as engine_runtime_info
    except ImportError:
        return {"providers_available": [], "provider": None,
                "cuda_unavailable_reason": "engines.runtime is not installed"}
    try:
        return dict(engine_runtime_info())
    except Exception as exc:  # noqa: BLE001 - a broken runtime must not stop the window opening
        log.exception("runtime_info failed")
        return {"providers_available": [], "provider": None,
                "cuda_unavailable_reason": f"{type(exc).__name__}: {exc}"}


def short_provider(provider: str | None) -> str:
    """'CUDAExecutionProvider' -> 'CUDA'; None -> 'unknown'."""
    if not provider:
        return "unknown"
    return provider.removesuffix("ExecutionProvider") or provider


class StudioContext(QObject):
    decodingConfigChanged = Signal(object)  # a valid DecodingConfig
    modelDirsChanged = Signal()
    statusMessage = Signal(str, int)  # text, timeout in ms (0 = until replaced)
    errorMessage = Signal(str)

    def __init__(
        self,
        settings: QSettings | None = None,
        session_model_dirs: Iterable[Path | str] = (),
        parent: QObject | None = None,
    ) -> None:
        super().__init__(parent)
        self._settings = settings if settings is not None else make_settings()
        # Folders from --models-dir: used this session, never saved.
        self._session_dirs = [Path(d).expanduser() for d in session_model_dirs]
        self._config = DecodingConfig()
        self._runtime: dict[str, Any] | None = None
        self._runners: list[TaskRunner] = []

    # --- decoding -----------------------------------------------------------------------
    def decoding_config(self) -> DecodingConfig:
        return self._config

    def set_decoding_config(self, config: DecodingConfig) -> None:
        if config != self._config:
            self._config = config
            self.decodingConfigChanged.emit(config)

    # --- models -------------------------------------------------------------------------
    def saved_model_dirs(self) -> list[Path]:
        raw = self._settings.value(_MODEL_DIRS_KEY, [])
        # QSettings hands back a bare string for a one-item list with some backends.
        if isinstance(raw, str):
            raw = [raw] if raw else []
        return [Path(p) for p in (raw or [])]

    def model_dirs(self) -> list[Path]:
        """The extra folders to search: this session's, then the saved ones, no duplicates."""
        seen: set[str] = set()
        out = []
        for d in [*self._session_dirs, *self.saved_model_dirs()]:
            key = os.path.normcase(os.path.abspath(d))
            if key not in seen:
                seen.add(key)
                out.append(d)
        return out

    def add_model_dir(self, path: Path | str) -> None:
        path = Path(path).expanduser().resolve()
        saved = self.saved_model_dirs()
        if path not in saved:
            self._settings.setValue(_MODEL_DIRS_KEY, [str(p) for p in [*saved, path]])
            self._settings.sync()
        self.modelDirsChanged.emit()

    def remove_model_dir(self, path: Path | str) -> None:
        path = Path(path)
        saved = [p for p in self.saved_model_dirs() if p != path]
        self._settings.setValue(_MODEL_DIRS_KEY, [str(p) for p in saved])
        self._settings.sync()
        self.modelDirsChanged.emit()

    def list_models(self) -> list:
        """Installed models (`engines.registry.list_models`) with our folders added.

        Raises ImportError while the registry is absent and ChainruleError for bad folders.
        """
        from engines.registry import list_models

        return list(list_models(extra_dirs=self.model_dirs()))

    # --- runtime ------------------------------------------------------------------------
    def runtime_info(self) -> dict[str, Any]:
        if self._runtime is None:  # asks onnxruntime once; it does not change while running
            self._runtime = runtime_info()
        return self._runtime

    # --- messages -----------------------------------------------------------------------
    def show_message(self, text: str, timeout_ms: int = 5000) -> None:
        self.statusMessage.emit(text, timeout_ms)

    def show_error(self, text: str) -> None:
        self.errorMessage.emit(text)

    # --- background work ------------------------------------------------------------------
    def task_runner(self, name: str = "", parent: QObject | None = None) -> TaskRunner:
        """A TaskRunner that the window stops and waits for when it closes."""
        runner = TaskRunner(parent or self, name=name)
        self._runners.append(runner)
        return runner

    def runners(self) -> list[TaskRunner]:
        # A runner parented to a tab dies with it; forget the deleted ones.
        self._runners = [r for r in self._runners if shiboken6.isValid(r)]
        return list(self._runners)

    def stop_all(self) -> None:
        for runner in self.runners():
            runner.stop_all()

    def wait_idle(self, timeout_ms: int = 5000) -> bool:
        deadline = time.monotonic() + max(0, timeout_ms) / 1000
        ok = True
        for runner in self.runners():
            left_ms = int(max(0.0, deadline - time.monotonic()) * 1000)
            ok = runner.wait_idle(left_ms) and ok
        return ok
