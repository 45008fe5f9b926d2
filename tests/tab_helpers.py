"""What the studio's Qt tests share (tests/test_<modality>_tab.py, tests/test_studio_shell.py).

* `new_window`: a MainWindow that qtbot owns (closed when the test ends), listing the models of
  the given folders too.
* `shown_window`: the body of a tab test's `window` fixture (`yield from shown_window(...)`): the
  window shown and exposed on one tab; when the test ends the tab is stopped, waited for until it
  is idle (no run, no scoring), and the window closed.
* `set_config`: the decoding panel set to a DecodingConfig, checked to have reached the context.
* `run_and_wait`: a run begun by an action, which must start (None: the tab refused, its status
  says why), waited for to its end and then until the tab is idle (the result's scores are in).

Waits time out after `RUN_TIMEOUT_MS` unless the caller gives its own `timeout_ms`.
Isolation from the user's and the shipped models: the `isolated_user_models` and
`isolated_model_dirs` fixtures (tests/conftest.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterator

from engines.decoding.config import DecodingConfig
from studio.main_window import MainWindow

RUN_TIMEOUT_MS = 10_000


def new_window(qtbot, *model_dirs: Path | str) -> MainWindow:
    """A MainWindow (not shown) with `model_dirs` as extra model folders; qtbot closes it after the test."""
    w = MainWindow(extra_model_dirs=model_dirs)
    qtbot.addWidget(w)
    return w


def shown_window(qtbot, models_dir: Path, tab_name: str, *, timeout_ms: int = RUN_TIMEOUT_MS,
                 stop: Callable[[Any], None] = lambda tab: tab.stop()) -> Iterator[MainWindow]:
    """Yields a shown, exposed window on `tab_name` (mouse events reach only shown widgets); after
    the test: stop(tab), wait until the tab is idle, close the window."""
    w = new_window(qtbot, models_dir)
    w.show()
    w.select_tab(tab_name)
    qtbot.waitExposed(w)
    yield w
    tab = w.tab(tab_name)
    stop(tab)
    qtbot.waitUntil(tab.is_idle, timeout=timeout_ms)
    w.close()


def set_config(window, **kw) -> None:
    """Set the decoding panel to DecodingConfig(**kw); the context must then hold exactly that config."""
    window.decoding_panel.set_config(DecodingConfig(**kw))
    assert window.ctx.decoding_config() == DecodingConfig(**kw)


def run_and_wait(qtbot, tab, action: Callable[[], Any], timeout_ms: int = RUN_TIMEOUT_MS):
    """action() must start a run (not None); wait until it ended and the tab is idle; the run."""
    run = action()
    assert run is not None, tab.status_text()
    qtbot.waitUntil(lambda: not tab.is_running(), timeout=timeout_ms)
    qtbot.waitUntil(tab.is_idle, timeout=timeout_ms)
    return run
