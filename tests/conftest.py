"""Shared test setup.

* Qt renders offscreen: set before anything imports Qt (without a display Qt would abort
  looking for xcb).
* The studio's settings go to a fresh file per test, never the user's config; its history to a
  fresh folder, never the user's data dir.
* `isolated_user_models` (opt-in: `pytestmark = pytest.mark.usefixtures("isolated_user_models")`)
  hides the user's models folder and CHAINRULE_MODELS_DIR, so a test sees only the models it
  points the registry at (and the shipped ones); `isolated_model_dirs` (opt-in the same way)
  hides the shipped models (assets/) too, so a test sees only its own.
* No test may leave a worker thread running (napari style): a thread still busy after the
  test would keep working into the next test and make failures appear in the wrong place.
"""

import os
import sys
import time

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import pytest  # noqa: E402

DANGLING_WAIT_S = 1.0  # how long a stopping worker may take to notice after the test ends


@pytest.fixture(autouse=True)
def _studio_settings_file(tmp_path_factory, monkeypatch):
    # The variable is read by studio.context.make_settings; plain string: no Qt import here.
    path = tmp_path_factory.mktemp("studio-settings") / "studio.ini"
    monkeypatch.setenv("CHAINRULE_STUDIO_SETTINGS", str(path))
    # The run history (studio.app.history_folder) too: never the user's data dir.
    monkeypatch.setenv("CHAINRULE_STUDIO_DATA", str(path.parent / "data"))
    yield


@pytest.fixture
def isolated_user_models(tmp_path, monkeypatch):
    # An empty per-test folder stands for ~/.../models; the env var would add the user's own.
    monkeypatch.setattr("engines.registry.user_models_dir", lambda: tmp_path / "user-models")
    monkeypatch.delenv("CHAINRULE_MODELS_DIR", raising=False)


@pytest.fixture
def isolated_model_dirs(isolated_user_models, tmp_path, monkeypatch):
    # As isolated_user_models, and an empty per-test folder stands for the shipped models too.
    monkeypatch.setattr("engines.registry.shipped_models_dir", lambda: tmp_path / "shipped-models")


def _busy_runners() -> list:
    if "studio.worker" not in sys.modules:
        return []
    import shiboken6

    from studio.worker import live_runners

    return [r for r in live_runners()
            if shiboken6.isValid(r) and (r.is_busy() or r.active_worker_count())]


@pytest.fixture(autouse=True)
def _fail_on_dangling_workers():
    yield
    # Engine tests never import Qt; do not import it for them.
    if "PySide6.QtCore" not in sys.modules:
        return
    from PySide6.QtCore import QCoreApplication, QThreadPool

    pool = QThreadPool.globalInstance()
    app = QCoreApplication.instance()
    deadline = time.monotonic() + DANGLING_WAIT_S
    while True:
        busy = _busy_runners()
        threads = pool.activeThreadCount()
        if threads == 0 and not busy:
            return
        if time.monotonic() > deadline:
            break
        if app is not None:
            app.processEvents()  # lets queued finished/stopped signals reach the runners
        time.sleep(0.01)
    # Stop what is left so the next test starts clean, then fail this one.
    for runner in busy:
        runner.stop_all()
        runner.wait_idle(2000)
    pool.waitForDone(2000)
    names = ", ".join(repr(r.name or "unnamed") for r in busy)
    pytest.fail(
        f"test left {threads} worker thread(s) running"
        + (f" and busy TaskRunner(s): {names}" if busy else "")
        + "; stop them (runner.stop(); runner.wait_idle()) before the test ends",
        pytrace=False,
    )
