"""The worker layer: generators on a QThreadPool, stop between yields, stale results dropped."""

import shiboken6
import itertools
import threading
import time

import pytest
from PySide6.QtCore import QThreadPool

from engines.errors import ModelLoadError
from studio.worker import EventThrottle, GeneratorWorker, TaskRunner, error_message


def forever(delay_s: float = 0.0, closed: threading.Event | None = None):
    """A generator that never ends on its own (a model sampling without a length limit)."""
    try:
        for i in itertools.count():
            yield i
            if delay_s:
                time.sleep(delay_s)
    finally:
        if closed is not None:
            closed.set()


def start(worker: GeneratorWorker) -> GeneratorWorker:
    QThreadPool.globalInstance().start(worker)
    return worker


def test_signals_come_in_strict_order(qtbot):
    worker = GeneratorWorker(lambda: iter(["a", "b", "c"]))
    s = worker.signals
    got, others = [], []
    s.yielded.connect(got.append)
    s.stopped.connect(lambda: others.append("stopped"))
    s.errored.connect(others.append)
    with qtbot.waitSignals([s.started, s.yielded, s.yielded, s.yielded, s.finished],
                           order="strict", timeout=5000):
        start(worker)
    assert worker.wait(5)
    assert got == ["a", "b", "c"]
    assert others == []  # exactly one terminal signal: finished


def test_stop_takes_effect_at_the_next_yield(qtbot):
    closed = threading.Event()
    worker = GeneratorWorker(lambda: forever(0.001, closed))
    got, finished = [], []
    worker.signals.yielded.connect(got.append)
    worker.signals.finished.connect(lambda: finished.append(True))
    start(worker)
    qtbot.waitUntil(lambda: len(got) >= 5, timeout=5000)

    t0 = time.monotonic()
    with qtbot.waitSignal(worker.signals.stopped, timeout=2000):
        worker.stop()
    assert time.monotonic() - t0 < 0.5
    assert worker.wait(2)
    assert closed.is_set(), "the generator was closed, so its finally blocks ran"

    # Everything emitted before `stopped` has arrived (queued in order); nothing comes after.
    count = len(got)
    qtbot.wait(100)
    assert len(got) == count
    assert got == list(range(count))
    assert finished == []


def test_a_worker_stopped_before_it_runs_never_starts(qtbot):
    calls = []
    worker = GeneratorWorker(lambda: calls.append(1) or iter([1]))
    started = []
    worker.signals.started.connect(lambda: started.append(True))
    worker.stop()
    with qtbot.waitSignal(worker.signals.stopped, timeout=2000):
        start(worker)
    assert calls == [] and started == []


def raises(exc):
    yield 1
    raise exc


@pytest.mark.parametrize(
    "exc, message",
    [
        (ModelLoadError("model.onnx is truncated"), "model.onnx is truncated"),
        (ValueError("boom"), "ValueError: boom"),
        (ZeroDivisionError(), "ZeroDivisionError"),
    ],
)
def test_an_exception_becomes_errored_with_its_message(qtbot, exc, message):
    worker = GeneratorWorker(lambda: raises(exc))
    finished = []
    worker.signals.finished.connect(lambda: finished.append(True))
    with qtbot.waitSignal(worker.signals.errored, timeout=5000) as blocker:
        start(worker)
    assert blocker.args == [message]
    assert worker.wait(2)
    assert finished == []


def test_an_exception_in_the_factory_is_reported_too(qtbot):
    def factory():
        raise ModelLoadError("no such model")

    runner = TaskRunner()
    errors = []
    with qtbot.waitSignal(runner.errored, timeout=5000) as blocker:
        runner.start(factory, on_errored=errors.append)
    assert blocker.args == ["no such model"]
    assert errors == ["no such model"]
    assert not runner.is_busy()


def test_error_message_names_the_type_only_for_unexpected_errors():
    assert error_message(ModelLoadError("bad card")) == "bad card"
    assert error_message(KeyError("x")) == "KeyError: 'x'"


def test_runner_delivers_batches_then_finished(qtbot):
    runner = TaskRunner(throttle_ms=30)
    order = []
    with qtbot.waitSignal(runner.finished, timeout=5000):
        runner.start(lambda: iter(range(2000)),
                     on_events=lambda batch: order.append(("events", list(batch))),
                     on_finished=lambda: order.append(("finished", None)))
    items = [x for kind, batch in order if kind == "events" for x in batch]
    assert items == list(range(2000))
    assert order[-1] == ("finished", None), "flushed before finished"
    # 2000 events, a redraw every 30 ms: a handful of batches, not one per event.
    batches = sum(1 for kind, _ in order if kind == "events")
    assert batches <= 200
    assert not runner.is_busy()
    assert runner.wait_idle(2000)


def test_runner_stop_is_quick_and_reported(qtbot):
    runner = TaskRunner()
    busy = []
    runner.busyChanged.connect(busy.append)
    events = []
    runner.start(lambda: forever(0.001), on_events=events.extend)
    qtbot.waitUntil(lambda: len(events) > 0, timeout=5000)
    t0 = time.monotonic()
    with qtbot.waitSignal(runner.stopped, timeout=2000):
        runner.stop()
    assert time.monotonic() - t0 < 0.5
    assert busy == [True, False]
    assert runner.wait_idle(2000)
    count = len(events)
    qtbot.wait(100)
    assert len(events) == count


def test_a_new_start_drops_the_old_tasks_late_results(qtbot):
    runner = TaskRunner(throttle_ms=10)
    batches = []  # (task, events) as delivered to the UI
    ends = []
    runner.events.connect(lambda b: batches.append(list(b)))
    runner.stopped.connect(lambda: ends.append("stopped"))
    runner.finished.connect(lambda: ends.append("finished"))

    # The old task yields as fast as it can, so many of its results are still queued
    # for the UI thread when the new task starts.
    old_id = runner.start(lambda: (("old", i) for i in itertools.count()))
    qtbot.waitUntil(lambda: len(batches) > 0, timeout=5000)
    delivered_before = len(batches)

    with qtbot.waitSignal(runner.finished, timeout=5000):
        new_id = runner.start(lambda: (("new", i) for i in range(5)))
    assert new_id != old_id and runner.current_id is None

    after = [e for b in batches[delivered_before:] for e in b]
    assert after == [("new", i) for i in range(5)], "no 'old' result reached the UI"
    assert ends == ["finished"], "the old task's late 'stopped' was dropped too"
    assert runner.wait_idle(2000), "the superseded worker stopped as well"
    qtbot.wait(50)
    assert ends == ["finished"]


def test_wait_idle_waits_for_superseded_workers(qtbot):
    runner = TaskRunner()
    closed = [threading.Event() for _ in range(3)]
    for ev in closed:
        runner.start(lambda ev=ev: forever(0.002, ev))
    assert runner.active_worker_count() >= 1
    runner.stop_all()
    assert runner.wait_idle(3000)
    assert runner.active_worker_count() == 0
    # Workers still queued were taken back out of the pool and never ran; those that ran
    # were closed.
    qtbot.wait(20)


def test_throttle_coalesces_many_events_into_few_deliveries(qtbot):
    deliveries = []
    throttle = EventThrottle(deliveries.append, interval_ms=30)
    for i in range(1000):
        throttle.push(i)
    assert deliveries == [], "nothing is delivered synchronously"
    qtbot.waitUntil(lambda: len(deliveries) > 0, timeout=2000)
    assert deliveries == [list(range(1000))]

    # flush() delivers at once what is pending; clear() drops it.
    throttle.push("a")
    throttle.flush()
    assert deliveries[-1] == ["a"]
    throttle.push("b")
    throttle.clear()
    qtbot.wait(60)
    assert deliveries[-1] == ["a"] and throttle.pending() == 0


def test_thousands_of_emits_keep_the_interpreter_alive(qtbot):
    # PySide6 6.12.0 on Python 3.11 loses a reference to True per emit; without the
    # workaround in studio/_pyside_fixes.py this aborts the interpreter (bool_dealloc).
    import sys

    before = sys.getrefcount(True)
    worker = GeneratorWorker(lambda: iter(range(5000)))
    with qtbot.waitSignal(worker.signals.finished, timeout=10000):
        start(worker)
    assert worker.wait(2)
    assert sys.getrefcount(True) > before - 100


def test_a_signal_arriving_after_the_runner_was_destroyed_is_dropped(qtbot):
    """A tab closed while its task still runs: the late signals must not touch dead Qt objects."""
    import shiboken6

    from studio.worker import TaskRunner, _Relay

    runner = TaskRunner(name="gone")
    relay = _Relay(runner, task_id=1)
    runner._current_id = 1
    shiboken6.delete(runner)  # the C++ side goes (as when its parent tab is destroyed); the wrapper lives
    relay.on_yielded("late event")  # would raise "Internal C++ object already deleted"
    relay.on_finished()


def test_a_worker_whose_signals_were_deleted_stops_quietly(qtbot):
    # The app shutting down around a running task deletes the signals object; the pool thread
    # must then stop at once (closing its generator), not raise from every emit.
    closed, pulled = [], []

    def items():
        try:
            for i in range(1000):
                pulled.append(i)
                yield i
        finally:
            closed.append(True)

    worker = GeneratorWorker(items)
    shiboken6.delete(worker.signals)
    worker.run()  # on this thread: an exception here fails the test
    assert worker.is_done() and worker.stop_requested
    assert closed == [True] and len(pulled) == 1, "stopped after the first undeliverable item"
