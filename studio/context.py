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
_LAST_MODEL_KEY = "models/last_{tab}"  # the model id the user last chose in a tab


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


TAB_KEYS = ("text", "image", "density", "audio")  # the tabs that own a decoding config


class StudioContext(QObject):
    # (tab key, a valid DecodingConfig): one tab's config changed; the others are untouched
    decodingConfigChanged = Signal(str, object)
    activeDecodingTabChanged = Signal(str)  # the tab whose config the Decoding panel now edits
    modelDefaultsChanged = Signal(str)  # tab key: its model changed (`adopt_model_defaults` was called)
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
        # Each tab owns its config (top-p for text never reaches the Image tab); it starts from the
        # tab's model card defaults (`adopt_model_defaults`) until the user edits it.
        self._configs: dict[str, DecodingConfig] = {key: DecodingConfig() for key in TAB_KEYS}
        self._model_defaults: dict[str, DecodingConfig] = {}
        self._active_tab = "text"
        self.history = None  # studio.history.store.HistoryStore once the app opens it (None: not recorded)
        self._runtime: dict[str, Any] | None = None
        self._runners: list[TaskRunner] = []

    # --- decoding -----------------------------------------------------------------------
    def decoding_config(self, tab: str | None = None) -> DecodingConfig:
        """The decoding config `tab` (a TAB_KEYS entry) owns; the active tab's without one."""
        return self._configs[self._key(tab)]

    def set_decoding_config(self, config: DecodingConfig, tab: str | None = None) -> None:
        """Give `tab` (the active tab without one) a new config; only that tab hears of it."""
        key = self._key(tab)
        if config != self._configs[key]:
            self._configs[key] = config
            self.decodingConfigChanged.emit(key, config)

    def active_decoding_tab(self) -> str:
        return self._active_tab

    def set_active_decoding_tab(self, tab: str) -> None:
        key = self._key(tab)
        if key != self._active_tab:
            self._active_tab = key
            self.activeDecodingTabChanged.emit(key)

    def model_defaults(self, tab: str | None = None) -> DecodingConfig:
        """The config of `tab`'s current model's card (plain DecodingConfig() when it has none)."""
        return self._model_defaults.get(self._key(tab), DecodingConfig())

    def adopt_model_defaults(self, tab: str, card_defaults: dict | None, *, reset: bool = True) -> DecodingConfig:
        """Record the card defaults of `tab`'s newly chosen model; with `reset`, the tab's config
        becomes them (seed kept). A card whose defaults are unusable counts as plain defaults."""
        from engines.decoding.flags import card_config

        key = self._key(tab)
        defaults = card_config(card_defaults) or DecodingConfig()
        self._model_defaults[key] = defaults
        if reset:
            self.reset_to_model_defaults(key)
        self.modelDefaultsChanged.emit(key)
        return defaults

    def reset_to_model_defaults(self, tab: str | None = None) -> None:
        """"Reset to model defaults": the tab's config becomes its model card's (the seed is kept)."""
        key = self._key(tab)
        self.set_decoding_config(self.model_defaults(key).replace(seed=self._configs[key].seed), key)

    def _key(self, tab: str | None) -> str:
        key = self._active_tab if tab is None else tab
        if key not in self._configs:
            raise KeyError(f"no decoding config for tab {key!r}; tabs with one: {', '.join(TAB_KEYS)}")
        return key

    # --- history (studio.history) ---------------------------------------------------------
    def record_run_started(self, tab: str, request_json: dict, parent: int | None = None) -> int | None:
        """Record that a run of `tab` started (a crash later loses only this run); its id, or None
        when no history is kept."""
        if self.history is None:
            return None
        try:
            return self.history.start_run(tab, request_json, parent=parent)
        except Exception:  # noqa: BLE001 - a full disk or locked db must not stop the run
            log.exception("history: could not record a run start")
            return None

    def record_run_finished(self, run_id: int | None, *, files: dict[str, bytes] | None = None,
                            summary: dict | None = None, status: str = "done") -> None:
        """Store a finished (or stopped / failed) run's output files and summary (log-likelihoods, timing)."""
        if self.history is None or run_id is None:
            return
        try:
            self.history.finish_run(run_id, files=files or {}, summary=summary or {}, status=status)
        except Exception:  # noqa: BLE001
            log.exception("history: could not record a run's outputs")

    # --- models -------------------------------------------------------------------------
    def remembered_model(self, tab: str) -> str | None:
        """The model id last chosen in `tab` (any session), or None."""
        value = self._settings.value(_LAST_MODEL_KEY.format(tab=tab), None)
        return value if isinstance(value, str) and value else None

    def remember_model(self, tab: str, model_id: str) -> None:
        """Save `model_id` as `tab`'s choice: the next session opens the tab on it while it is installed."""
        if self.remembered_model(tab) != model_id:
            self._settings.setValue(_LAST_MODEL_KEY.format(tab=tab), model_id)
            self._settings.sync()

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
