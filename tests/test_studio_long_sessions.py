"""Long sessions in the studio (issue 13, class 7): thousands of runs leave no workers behind, a
models folder added mid-run leaves the canvas usable, a hidden tab does no start-up scoring and
a close mid-scoring stops it, and the UI work of long outputs is bounded per event-loop turn.

Behaviour only (objects alive, calls made, rows rendered): no timings are asserted here; the
timings are benchmarks/ui_latency.py's."""

from __future__ import annotations

import gc
import math
import threading
import time
import weakref

import pytest
from PySide6.QtCore import QEventLoop, QTimer

from studio.worker import GeneratorWorker, TaskRunner, WorkerSignals, _Relay
from tests.tab_helpers import RUN_TIMEOUT_MS, new_window, shown_window

pytestmark = pytest.mark.usefixtures("isolated_user_models")  # the shipped models, not the user's


def _wait_not_busy(runner: TaskRunner) -> None:
    """Spin the event loop until `runner` has no current task (at most 5 s)."""
    if not runner.is_busy():
        return
    loop = QEventLoop()
    runner.busyChanged.connect(lambda busy: None if busy else loop.quit())
    QTimer.singleShot(5000, loop.quit)
    loop.exec()


def _dead(refs: list) -> bool:
    gc.collect()
    return all(r() is None for r in refs)


# --- finished workers are freed --------------------------------------------------------------------
def test_thousands_of_runs_leave_no_worker_alive(qtbot):
    runner = TaskRunner(name="soak")
    refs, relays, signals = [], [], []
    ends = []
    for i in range(300):  # the old pool kept every one of them alive
        runner.start(lambda: iter(range(3)), on_finished=lambda: ends.append("f"),
                     on_stopped=lambda: ends.append("s"))
        worker = runner._current
        refs.append(weakref.ref(worker))
        relays.append(weakref.ref(worker.relay))
        signals.append(weakref.ref(worker.signals))
        del worker
        if i % 3 == 1:
            runner.stop()  # stopped runs
        elif i % 3 == 2:
            continue  # superseded by the next start, while still running
        _wait_not_busy(runner)
    _wait_not_busy(runner)
    assert len(ends) >= 150
    # Every worker, its signals object, its relay and the closure it captured are freed once done
    # (before: the pool kept every one alive, ~7.5 KB a run).
    qtbot.waitUntil(lambda: _dead(refs) and _dead(relays) and _dead(signals), timeout=5000)
    assert runner.active_worker_count() == 0
    gc.collect()
    assert not [o for o in gc.get_objects() if isinstance(o, (GeneratorWorker, WorkerSignals, _Relay))
                and any(r() is o for r in refs[-5:])]


def test_a_captured_closure_is_let_go_when_its_run_ends(qtbot):
    class Big:  # stands for what a tab's lambda captures: an engine, a prompt, arrays
        pass

    runner = TaskRunner(name="closure")
    big = Big()
    held = weakref.ref(big)
    runner.start(lambda big=big: iter([big is not None]))
    del big
    _wait_not_busy(runner)
    qtbot.waitUntil(lambda: _dead([held]), timeout=2000)


def test_many_density_runs_leave_no_worker_alive(qtbot):
    w = new_window(qtbot)
    w.show()
    w.select_tab("Density")
    qtbot.waitExposed(w)
    tab = w.tab("Density")
    assert tab.select_model("bmnist-made")
    tab.set_speed(math.inf)
    tab.samples_spin.setValue(1)
    refs = []
    for i in range(40):  # start/stop cycles, as a user clicking Sample then Stop
        assert tab.sample() is not None
        refs.append(weakref.ref(tab.runner._current))
        if i % 4 == 0:
            qtbot.waitUntil(lambda: tab.run.n > 0, timeout=RUN_TIMEOUT_MS)  # some stopped mid-way
        tab.stop()
        qtbot.waitUntil(lambda: not tab.is_running(), timeout=RUN_TIMEOUT_MS)
    qtbot.waitUntil(tab.is_idle, timeout=RUN_TIMEOUT_MS)
    qtbot.waitUntil(lambda: _dead(refs), timeout=5000)
    w.close()


# --- a models folder added while a Density run goes on ----------------------------------------------
@pytest.fixture
def density_window(qtbot, tmp_path):
    yield from shown_window(qtbot, tmp_path / "none-yet", "Density")


def _slow_sample(qtbot, tab):
    assert tab.select_model("bmnist-made")
    tab.set_speed(30)  # 30 px/s: the run lasts for half a minute unless stopped
    run = tab.sample()
    assert run is not None
    qtbot.waitUntil(lambda: run.n > 0, timeout=RUN_TIMEOUT_MS)
    assert not tab.canvas.is_editable()
    return run


def test_adding_a_models_folder_mid_run_keeps_the_run_and_the_canvas_comes_back(density_window, qtbot, tmp_path):
    tab = density_window.tab("Density")
    run = _slow_sample(qtbot, tab)
    more = tmp_path / "more-models"
    more.mkdir()
    density_window.ctx.add_model_dir(more)
    assert tab.is_running() and tab.run is run, "the run goes on: its model is the same as before"
    n = run.n
    qtbot.waitUntil(lambda: run.n > n, timeout=RUN_TIMEOUT_MS)  # and it keeps painting
    tab.stop()
    qtbot.waitUntil(lambda: not tab.is_running(), timeout=RUN_TIMEOUT_MS)
    assert run.state == "stopped"
    assert tab.canvas.is_editable(), "the canvas is the user's again"
    assert tab.undo_button.isEnabled()


def test_a_run_dropped_by_a_model_change_gives_the_canvas_back(density_window, qtbot):
    tab = density_window.tab("Density")
    _slow_sample(qtbot, tab)
    assert tab.select_model("bmnist-nade")  # e.g. the folder holding the run's model went away
    qtbot.waitUntil(lambda: not tab.is_running(), timeout=RUN_TIMEOUT_MS)
    assert tab.canvas.is_editable()
    assert tab.sample_button.isEnabled() and tab.clear_button.isEnabled()


# --- the Density tab's scoring: lazy and stoppable --------------------------------------------------
def test_a_hidden_density_tab_does_no_start_up_scoring(qtbot, monkeypatch):
    from studio.density import work

    calls = []
    real = work.score_events
    monkeypatch.setattr(work, "score_events", lambda *a, **k: calls.append(1) or real(*a, **k))
    w = new_window(qtbot)
    w.show()
    w.select_tab("Text")
    qtbot.waitExposed(w)
    tab = w.tab("Density")
    for _ in range(5):
        qtbot.wait(30)
        assert not tab._score_timer.isActive() and not tab.score_runner.is_busy()
    assert calls == [] and tab.is_idle()
    w.select_tab("Density")  # shown: now it scores, once
    qtbot.waitUntil(lambda: tab.score is not None and tab.is_idle(), timeout=RUN_TIMEOUT_MS)
    assert len(calls) == 1
    w.close()


def test_closing_mid_scoring_stops_it_at_the_next_model(qtbot, monkeypatch):
    from studio.density import work

    loads = []
    started = threading.Event()
    real = work.load_model

    def slow_load(info):  # a model that takes a while to load, as on a busy machine
        loads.append(info.id)
        started.set()
        time.sleep(0.4)
        return real(info)

    monkeypatch.setattr(work, "load_model", slow_load)
    w = new_window(qtbot)
    w.show()
    w.select_tab("Density")
    qtbot.waitExposed(w)
    tab = w.tab("Density")
    qtbot.waitUntil(started.is_set, timeout=RUN_TIMEOUT_MS)
    assert len(tab.comparison.families) == 3  # NADE, MADE and the PixelCNN are to be loaded
    w.close()
    # The close waited for the model being loaded, not for the other two.
    assert tab.score_runner.active_worker_count() == 0
    assert len(loads) < 3, loads


# --- UI work per event-loop turn is bounded, whatever the length ----------------------------------
def _records(n: int, seed: int = 0) -> list:
    import random

    from studio.text.work import TokenRecord

    rng = random.Random(seed)
    words = ["the", " king", " of", "\n", " ROMEO", ":", " a", "e", " ", "th"]
    return [TokenRecord(i % 60, rng.choice(words), -rng.random() * 6, rank=rng.randint(1, 20),
                        entropy=rng.random() * 4) for i in range(n)]


def _background_at(view, index: int) -> str:
    from PySide6.QtGui import QTextCursor

    start, _end = view._spans[index]
    cursor = QTextCursor(view.document())
    cursor.setPosition(start + 1)  # the format of the token's first character
    fmt = cursor.charFormat()
    return fmt.background().color().name() if fmt.hasProperty(fmt.Property.BackgroundBrush) else ""


def test_a_long_branch_is_shown_a_slice_per_turn(qtbot):
    from studio.text.token_view import TOKENS_PER_TURN, TokenView

    view = TokenView()
    qtbot.addWidget(view)
    view.resize(600, 400)
    view.show()
    records = _records(10_000)
    view.set_content("ROMEO:", records)
    # The call returns after one slice: the rest comes at later turns of the event loop.
    assert 0 < view.rendered_tokens() <= TOKENS_PER_TURN
    assert len(view.records()) == 10_000 and view.is_rendering()
    assert view.plain_text() == "ROMEO:" + "".join(r.text for r in records)
    qtbot.waitUntil(lambda: not view.is_rendering(), timeout=30_000)
    assert view.rendered_tokens() == 10_000
    assert view.render_turns() >= 10_000 // TOKENS_PER_TURN
    assert view.toPlainText().replace("↵", "") == view.plain_text()
    # Tokens arriving meanwhile go after the queued ones, in order.
    view.set_content("", records[:3000])
    view.append_heading("\n--\n")
    view.append_records(records[3000:3500])
    view.finish_rendering()
    assert view.toPlainText().replace("↵", "") == "".join(r.text for r in records[:3000]) + "\n--\n" + \
        "".join(r.text for r in records[3000:3500])


def test_a_colour_mode_change_recolours_in_place_a_slice_per_turn(qtbot):
    from studio.text.colours import colour_for
    from studio.text.token_view import TOKENS_PER_TURN, TokenView

    view = TokenView()
    qtbot.addWidget(view)
    view.resize(600, 400)
    view.show()
    records = _records(5_000, seed=1)
    view.set_content("", records)
    view.finish_rendering()
    text = view.toPlainText()
    view.set_mode("entropy")
    assert view.is_rendering()
    changed = sum(_background_at(view, i) == colour_for(records[i], "entropy") for i in range(len(records)))
    same = sum(colour_for(records[i], "entropy") == colour_for(records[i], "probability") for i in range(len(records)))
    assert changed <= same + TOKENS_PER_TURN, "one slice recoloured in the call, not all"
    qtbot.waitUntil(lambda: not view.is_rendering(), timeout=30_000)
    assert all(_background_at(view, i) == colour_for(records[i], "entropy") for i in range(0, len(records), 7))
    assert view.toPlainText() == text, "the text stays as it was: only the colours change"
    assert view.render_turns() >= len(records) // TOKENS_PER_TURN


def test_a_beam_column_lands_a_slice_per_turn(qtbot):
    from studio.text import work
    from studio.text.token_view import TOKENS_PER_TURN

    w = new_window(qtbot)
    compare = w.tab("Text").compare
    compare._reset_columns([work.CompareSpec("beam", "Beam", None)])
    beams = tuple(work.BeamOut(records=tuple(_records(800, seed=s)), text="", total_logprob=-2.0, score=-1.0)
                  for s in range(4))
    col = compare.columns[0]
    col.chain = "beam"
    compare._column_done(work.ColumnDone(0, "text", -2.0, 3200, beams))
    assert col.view.rendered_tokens() <= TOKENS_PER_TURN  # 3,200 tokens: not in one go
    qtbot.waitUntil(lambda: not col.view.is_rendering(), timeout=30_000)
    assert col.view.rendered_tokens() == 3200
    assert "beam 4: score" in col.view.toPlainText()
    w.close()


def test_switching_to_the_audio_tab_lays_it_out_once(qtbot):
    """The page gets its final width (the decoding dock hidden) before it is painted: one layout
    and one paint at one size, not a paint at the old width then another at the new one."""
    from PySide6.QtCore import QEvent, QObject

    w = new_window(qtbot)
    w.resize(1400, 900)
    w.show()
    w.select_tab("Text")
    qtbot.waitExposed(w)
    plots = w.tab("Audio").plots
    w.select_tab("Audio")
    qtbot.wait(50)
    w.select_tab("Text")
    qtbot.wait(50)
    sizes = []

    class Watch(QObject):
        def eventFilter(self, obj, event):  # noqa: N802
            if event.type() == QEvent.Type.Paint:
                sizes.append(obj.size().toTuple())
            return False

    watch = Watch()
    plots.viewport().installEventFilter(watch)
    w.select_tab("Audio")
    final = plots.size().toTuple()  # already final: the window was laid out in the switch itself
    qtbot.wait(100)
    assert plots.size().toTuple() == final
    assert sizes and set(sizes) == {final}, sizes
    for axis in ("left", "bottom"):
        assert plots.wave.getAxis(axis).style["maxTickLevel"] == 0  # grid lines at the major ticks only
    w.close()


@pytest.mark.parametrize("size", [(1400, 900), (2500, 1400)])
def test_switching_back_to_the_audio_tab_repaints_from_the_plots_caches(qtbot, size):
    """Shown again, the Audio tab's plots are neither resized (the decoding dock goes before the page
    is shown and comes back after it is hidden) nor redrawn: their axes (whose grids span the plots)
    keep the pixmaps they cached (not dropped when the tab is hidden, nor evicted from a pixmap cache
    too small for a large window), instead of drawing every tick, label and grid line again."""
    import pyqtgraph as pg
    from PySide6.QtCore import QEvent, QObject

    w = new_window(qtbot)
    w.resize(*size)
    w.show()
    w.select_tab("Text")
    qtbot.waitExposed(w)
    plots = w.tab("Audio").plots
    w.select_tab("Audio")
    qtbot.wait(100)
    w.select_tab("Text")
    qtbot.wait(50)
    seen = []

    class Watch(QObject):
        def eventFilter(self, obj, event):  # noqa: N802
            if event.type() in (QEvent.Type.Resize, QEvent.Type.Paint):
                seen.append(event.type())
            return False

    axes = [p.getAxis(side) for p in (plots.wave, plots.surprise, plots.spec) for side in ("left", "bottom")]
    drawn = []
    paint = pg.AxisItem.paint

    def counting_paint(self, *args):
        if self in axes:
            drawn.append(self)
        return paint(self, *args)

    watch = Watch()
    plots.installEventFilter(watch)
    plots.viewport().installEventFilter(watch)
    pg.AxisItem.paint = counting_paint
    try:
        for _ in range(3):
            w.select_tab("Audio")
            qtbot.wait(60)
            w.select_tab("Text")
            qtbot.wait(30)
    finally:
        pg.AxisItem.paint = paint
        plots.removeEventFilter(watch)
        plots.viewport().removeEventFilter(watch)
    assert QEvent.Type.Paint in seen  # the plots were shown (painted) ...
    assert QEvent.Type.Resize not in seen  # ... at the size they had ...
    assert drawn == []  # ... from their axes' caches
    w.close()


def test_short_beams_and_several_columns_share_one_slice_per_turn(qtbot):
    # Four 150-token beams each fit in a slice: the column took one slice per beam in one turn (4 x 150
    # tokens, a 40-50 ms turn). Views rendering in the same turn share the turn's slice.
    from studio.text import work
    from studio.text.token_view import TOKENS_PER_TURN, TokenView

    w = new_window(qtbot)
    compare = w.tab("Text").compare
    compare._reset_columns([work.CompareSpec("beam", "Beam", None)])
    beams = tuple(work.BeamOut(records=tuple(_records(150, seed=s)), text="", total_logprob=-2.0, score=-1.0)
                  for s in range(4))
    col = compare.columns[0]
    col.chain = "beam"
    compare._column_done(work.ColumnDone(0, "text", -2.0, 600, beams))
    assert col.view.rendered_tokens() <= TOKENS_PER_TURN  # one slice in this turn, not four
    qtbot.waitUntil(lambda: not col.view.is_rendering(), timeout=30_000)
    assert col.view.rendered_tokens() == 600
    assert "beam 4: score" in col.view.toPlainText()
    qtbot.wait(20)  # a new turn
    views = [TokenView() for _ in range(3)]
    for v in views:
        qtbot.addWidget(v)
        v.set_content("", _records(200, seed=9))
    assert sum(v.rendered_tokens() for v in views) <= TOKENS_PER_TURN  # three views, one slice
    qtbot.waitUntil(lambda: not any(v.is_rendering() for v in views), timeout=30_000)
    assert [v.rendered_tokens() for v in views] == [200] * 3
    w.close()
