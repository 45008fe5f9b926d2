"""Run model work off the UI thread: generators on a QThreadPool, napari/superqt style.

Generation in `engines` is a step-wise generator that yields small event objects. The studio
never calls it on the UI thread; it hands a *factory* (a no-argument callable returning the
generator) to a `TaskRunner`, which wraps it in a `GeneratorWorker` and runs it on a pool
thread. Calling the factory happens on the worker thread too, so slow setup (loading an
ONNX session) never freezes the window.

Three small pieces:

* `GeneratorWorker` - a QRunnable that iterates the generator, checking a stop flag between
  yields. Its signals live on a separate QObject (`WorkerSignals`) because a QRunnable is not
  a QObject and cannot own signals.
* `EventThrottle` - collects yielded events and hands them to the UI in batches on a ~30 ms
  timer, so a model producing thousands of tokens or samples a second causes ~30 redraws a
  second, not thousands.
* `TaskRunner` - one per tab: owns at most one current task. Starting a new task stops the
  old one and drops whatever it still sends (every result is tagged with its task id), so
  stale results never reach the UI.

Every worker ends with exactly ONE of `finished` (ran to the end), `stopped` (stop was asked
for) or `errored(message)` (it raised). A `ChainruleError` becomes its own message; any other
exception becomes "TypeName: message" and is logged with its traceback. Nothing a worker does
can take the app down.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
import weakref
from typing import Any, Callable, Iterable, Iterator

import shiboken6
from PySide6.QtCore import QObject, QRunnable, QThreadPool, QTimer, Signal, Slot

from engines.errors import ChainruleError

log = logging.getLogger(__name__)

GenFactory = Callable[[], Iterable[Any]]

DEFAULT_THROTTLE_MS = 30  # ~33 redraws a second: smooth to the eye, cheap for the UI thread


def error_message(exc: BaseException) -> str:
    """One line for the user: a ChainruleError speaks for itself, anything else names its type."""
    if isinstance(exc, ChainruleError):
        return str(exc) or type(exc).__name__
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class WorkerSignals(QObject):
    """The signals of one `GeneratorWorker` (a QRunnable cannot carry signals itself).

    Emitted from the pool thread; receivers living on the UI thread get them queued, in order.
    """

    started = Signal()
    yielded = Signal(object)
    finished = Signal()  # the generator ran to its end
    errored = Signal(str)  # it raised: a one-line message for the user
    stopped = Signal()  # stop() was called before it ended


class GeneratorWorker(QRunnable):
    """Iterates `gen_factory()` on a pool thread, emitting each item as `signals.yielded`.

    `stop()` sets a flag checked right after each `next()` returns, so the generator is closed
    (its `finally` blocks run) at the very next yield and nothing more is emitted. A single
    step that blocks for a long time cannot be interrupted from outside: generators should
    yield often.
    """

    # Workers alive (not yet garbage): a finished one must not linger. Tests count them.
    _live: "weakref.WeakSet[GeneratorWorker]" = weakref.WeakSet()

    def __init__(self, gen_factory: GenFactory) -> None:
        super().__init__()
        # Python owns this object (TaskRunner keeps a reference until it is done); letting the
        # pool delete the C++ side behind the wrapper's back is a classic PySide crash.
        self.setAutoDelete(False)
        self._gen_factory: GenFactory | None = gen_factory
        self._stop = threading.Event()
        self._done = threading.Event()
        self.signals = WorkerSignals()
        GeneratorWorker._live.add(self)

    @classmethod
    def live_count(cls) -> int:
        """Workers not yet freed (finished ones are freed once their runner has let go)."""
        return len(cls._live)

    # --- control (any thread) ----------------------------------------------------------
    def stop(self) -> None:
        """Ask the worker to stop at its next yield (returns at once)."""
        self._stop.set()

    @property
    def stop_requested(self) -> bool:
        return self._stop.is_set()

    def is_done(self) -> bool:
        """True once `run` has returned (or will never run: see `mark_done`)."""
        return self._done.is_set()

    def wait(self, timeout_s: float | None = None) -> bool:
        """Block until `run` has returned; False on timeout."""
        return self._done.wait(timeout_s)

    def mark_done(self) -> None:
        """For a worker taken back out of the pool queue before it ever ran."""
        self._done.set()

    # --- the pool thread ------------------------------------------------------------------
    def _emit(self, name: str, *args: Any) -> None:
        """Emit signal `name`. When Qt has already deleted the signals object (the application is
        shutting down around a running task) nobody is left to tell: the task just stops."""
        try:
            getattr(self.signals, name).emit(*args)
        except RuntimeError:  # "Signal source has been deleted"
            self._stop.set()

    def run(self) -> None:  # noqa: D401 - Qt's name
        try:
            self._run_body()
        finally:
            self._done.set()

    def _run_body(self) -> None:
        """Everything `run` does but saying it is done (`_Submission` says that itself)."""
        gen: Iterator[Any] | None = None
        factory, self._gen_factory = self._gen_factory, None  # its captured closure goes with the run
        if self._stop.is_set() or factory is None:  # stopped while still queued: never start
            self._emit("stopped")
            return
        self._emit("started")
        try:
            gen = iter(factory())
            for item in gen:
                # The check sits between next() and emit, so after stop() not one more
                # item is emitted, however fast the generator yields.
                if self._stop.is_set():
                    break
                self._emit("yielded", item)
                if self._stop.is_set():
                    break
        except BaseException as exc:  # noqa: BLE001 - a worker must never kill the app
            if not isinstance(exc, ChainruleError):
                log.error("worker raised", exc_info=exc)
            self._emit("errored", error_message(exc))
            return
        finally:
            # Run the generator's cleanup (close files, release sessions) on this thread.
            close = getattr(gen, "close", None)
            if close is not None:
                try:
                    close()
                except Exception:  # noqa: BLE001 - cleanup trouble must not mask the outcome
                    log.exception("closing the generator raised")
            gen = None  # nor does the generator's frame outlive the run
        self._emit("stopped" if self._stop.is_set() else "finished")


class _Submission:
    """What a TaskRunner hands the pool for one worker: a plain callable, not the QRunnable.

    PySide keeps every QRunnable given to `QThreadPool.start` referenced by the pool for good
    (with autoDelete off, which a Python-owned runnable needs), so each finished worker stayed
    alive with its signals, relay and captured closure: about 7.5 KB a run, without end. A
    callable is let go once it has run. It holds the worker only until the run ends, and drops
    that reference *before* marking the worker done, so the runner (on the UI thread), which
    reaps done workers, always holds the last reference: the worker's QObjects are freed on
    the thread they live on, never on the pool thread while queued signals still head for them.
    `take()` withdraws a worker that has not started (what `QThreadPool.tryTake` did).
    """

    __slots__ = ("_lock", "_worker", "_done")

    def __init__(self, worker: GeneratorWorker) -> None:
        self._lock = threading.Lock()
        self._worker: GeneratorWorker | None = worker
        self._done = worker._done

    def __call__(self) -> None:  # the pool thread
        with self._lock:
            worker, self._worker = self._worker, None
        if worker is None:  # taken back before it ran
            return
        try:
            worker._run_body()
        finally:
            del worker  # the last reference this thread holds, before the runner may let go
            self._done.set()

    def take(self) -> bool:
        """Withdraw the worker if it has not started: it will never run (True), else False."""
        with self._lock:
            worker, self._worker = self._worker, None
        if worker is None:
            return False
        worker.mark_done()
        return True


class EventThrottle(QObject):
    """Coalesces events pushed at any rate into batches delivered every `interval_ms`.

    `push()` queues an event and arms a single-shot timer; when it fires, `deliver` gets every
    event queued since, as one list. `flush()` delivers what is pending now (call it when a
    task ends so the last events are not left waiting); `clear()` drops them. Runs on the
    thread it lives on (the UI thread): push from there, e.g. from a queued signal.
    """

    def __init__(
        self,
        deliver: Callable[[list], None],
        interval_ms: int = DEFAULT_THROTTLE_MS,
        parent: QObject | None = None,
    ) -> None:
        super().__init__(parent)
        self._deliver = deliver
        self._pending: list = []
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(max(0, int(interval_ms)))
        self._timer.timeout.connect(self.flush)

    @property
    def interval_ms(self) -> int:
        return self._timer.interval()

    def pending(self) -> int:
        return len(self._pending)

    def push(self, event: Any) -> None:
        self._pending.append(event)
        # Not restarted on every push: that would starve the UI while events keep coming.
        if not self._timer.isActive():
            self._timer.start()

    def flush(self) -> None:
        self._timer.stop()
        if self._pending:
            batch, self._pending = self._pending, []
            self._deliver(batch)

    def clear(self) -> None:
        self._timer.stop()
        self._pending = []


# Every TaskRunner alive, so tests (and shutdown code) can find work still running.
_RUNNERS: "weakref.WeakSet[TaskRunner]" = weakref.WeakSet()
_task_ids = itertools.count(1)


def live_runners() -> list["TaskRunner"]:
    return list(_RUNNERS)


class _Relay(QObject):
    """Forwards one task's worker signals to its runner, tagged with the task id."""

    def __init__(self, runner: "TaskRunner", task_id: int) -> None:
        super().__init__()  # no parent: the worker holds it; the runner may die first
        self._runner = weakref.ref(runner)
        self.task_id = task_id

    def _forward(self, name: str, *args: Any) -> None:
        runner = self._runner()
        # The runner's tab may have been destroyed (window closed) while the Python wrapper
        # lives on: its timers are gone, so a late signal must not reach it.
        if runner is not None and shiboken6.isValid(runner):
            getattr(runner, name)(self.task_id, *args)

    @Slot()
    def on_started(self) -> None:
        self._forward("_on_started")

    @Slot(object)
    def on_yielded(self, item: Any) -> None:
        self._forward("_on_yielded", item)

    @Slot()
    def on_finished(self) -> None:
        self._forward("_on_end", "finished", None)

    @Slot()
    def on_stopped(self) -> None:
        self._forward("_on_end", "stopped", None)

    @Slot(str)
    def on_errored(self, message: str) -> None:
        self._forward("_on_end", "errored", message)


class TaskRunner(QObject):
    """Owns at most one current task for a tab; starting a new one supersedes the old.

    Use it like this in a tab::

        self.runner = ctx.task_runner("Text")        # or TaskRunner(parent=self)
        self.runner.start(
            lambda: engine.generate(prompt, config),  # runs on the worker thread
            on_events=self.append_events,             # list of yielded events, ~every 30 ms
            on_finished=..., on_stopped=..., on_errored=self.show_error,
        )
        stop_button.clicked.connect(self.runner.stop)
        self.runner.busyChanged.connect(stop_button.setEnabled)

    Callbacks and signals only ever concern the *current* task: once a task is stopped by a
    new `start()`, anything it still sends is dropped. After `stop()`, events that already
    reached the UI thread are still delivered (they are valid results), then `stopped`.
    """

    busyChanged = Signal(bool)
    started = Signal(int)  # task id
    events = Signal(object)  # a list: a throttled batch of the current task's events
    finished = Signal()
    stopped = Signal()
    errored = Signal(str)

    def __init__(
        self,
        parent: QObject | None = None,
        *,
        name: str = "",
        throttle_ms: int = DEFAULT_THROTTLE_MS,
        pool: QThreadPool | None = None,
    ) -> None:
        super().__init__(parent)
        self.name = name
        self._pool = pool or QThreadPool.globalInstance()
        self._throttle = EventThrottle(self._deliver_batch, throttle_ms, self)
        self._muted_id: int | None = None  # the task the user stopped: its late events are dropped
        self._current_id: int | None = None
        self._current: GeneratorWorker | None = None
        self._callbacks: dict[str, Callable | None] = {}
        # Every worker not yet done, superseded ones included: wait_idle waits for them all.
        self._workers: dict[int, GeneratorWorker] = {}
        self._submissions: dict[int, _Submission] = {}  # what the pool was given, per task
        # A worker says it ended a moment before its pool thread lets go of it; a worker still
        # held when its end arrives is reaped by this timer, so none lingers until the next run.
        self._reap_timer = QTimer(self)
        self._reap_timer.setSingleShot(True)
        self._reap_timer.setInterval(50)
        self._reap_timer.timeout.connect(self._reap_later)
        _RUNNERS.add(self)
        # If the owner (a tab) is deleted mid-task, its workers must not run on unseen.
        # The lambda holds the dict, not self, which is gone by then.
        workers = self._workers
        self.destroyed.connect(lambda *_: [w.stop() for w in list(workers.values())])

    # --- queries ----------------------------------------------------------------------
    @property
    def current_id(self) -> int | None:
        return self._current_id

    def is_busy(self) -> bool:
        """A current task is running (what a Stop button or a spinner should show)."""
        return self._current_id is not None

    def active_worker_count(self) -> int:
        """Worker threads of this runner still running, superseded ones included."""
        self._reap()
        return len(self._workers)

    # --- control ----------------------------------------------------------------------
    def start(
        self,
        gen_factory: GenFactory,
        *,
        on_events: Callable[[list], None] | None = None,
        on_finished: Callable[[], None] | None = None,
        on_stopped: Callable[[], None] | None = None,
        on_errored: Callable[[str], None] | None = None,
    ) -> int:
        """Stop the current task (if any), start `gen_factory()` on the pool; returns its id.

        Call from the UI thread. `gen_factory` itself runs on the worker thread.
        """
        was_busy = self.is_busy()
        self._supersede()
        task_id = next(_task_ids)
        worker = GeneratorWorker(gen_factory)
        # A relay QObject per task, living on this (UI) thread: connecting the worker's
        # signals to its methods makes Qt queue them here (receiver thread != emitter
        # thread), and it carries the task id so a late signal from an old task is
        # recognised and dropped even though it was queued before we moved on.
        relay = _Relay(self, task_id)
        sig = worker.signals
        sig.started.connect(relay.on_started)
        sig.yielded.connect(relay.on_yielded)
        sig.finished.connect(relay.on_finished)
        sig.stopped.connect(relay.on_stopped)
        sig.errored.connect(relay.on_errored)
        worker.relay = relay  # lives as long as the worker
        self._current_id = task_id
        self._current = worker
        self._callbacks = {
            "events": on_events, "finished": on_finished,
            "stopped": on_stopped, "errored": on_errored,
        }
        self._workers[task_id] = worker
        submission = self._submissions[task_id] = _Submission(worker)
        self._pool.start(submission)  # a callable, not the QRunnable: see _Submission
        if not was_busy:  # replacing a running task: still busy, nothing to announce
            self.busyChanged.emit(True)
        return task_id

    def stop(self) -> None:
        """Stop the current task at its next yield; `stopped` follows when it has ended.

        Nothing the task yields after this call reaches the UI, including events already
        queued or waiting in the throttle: what is on screen at Stop is what stays.
        """
        if self._current is not None:
            self._current.stop()
            self._muted_id = self._current_id
            self._throttle.clear()

    def stop_all(self) -> None:
        """Stop the current and every superseded worker (used on shutdown)."""
        for worker in list(self._workers.values()):
            worker.stop()

    def wait_idle(self, timeout_ms: int = 5000) -> bool:
        """Block until every worker of this runner has returned; False on timeout.

        Does not stop anything: call `stop()`/`stop_all()` first when shutting down. Waiting
        releases the GIL, and workers only post queued signals, so this cannot deadlock.
        """
        deadline = time.monotonic() + max(0, timeout_ms) / 1000
        for tid, worker in list(self._workers.items()):
            submission = self._submissions.get(tid)
            if submission is not None and submission.take():  # still queued: it will not run now
                if tid == self._current_id:  # it will never say so itself
                    self._on_end(tid, "stopped", None)
                continue
            if not worker.wait(max(0.0, deadline - time.monotonic())):
                return False
        self._reap()
        return not self._workers

    # --- internals --------------------------------------------------------------------
    def _supersede(self) -> None:
        """Forget the current task: stop it, drop its pending events, go idle."""
        if self._current is None:
            return
        self._current.stop()
        self._current = None
        self._current_id = None
        self._callbacks = {}
        self._throttle.clear()
        self._reap()

    def _reap(self) -> None:
        """Let go of every worker that is done: the last reference, so it is freed now."""
        for tid in [t for t, w in self._workers.items() if w.is_done()]:
            del self._workers[tid]
            self._submissions.pop(tid, None)
        if any(tid != self._current_id for tid in self._workers) and not self._reap_timer.isActive():
            self._reap_timer.start()  # ended (or stopped) ones still finishing: look again soon

    def _reap_later(self) -> None:
        self._reap()

    def _on_started(self, tid: int) -> None:
        if tid == self._current_id:
            self.started.emit(tid)

    def _on_yielded(self, tid: int, item: Any) -> None:
        if tid == self._current_id and tid != self._muted_id:
            self._throttle.push(item)

    def _deliver_batch(self, batch: list) -> None:
        cb = self._callbacks.get("events")
        if cb is not None:
            cb(batch)
        self.events.emit(batch)

    def _on_end(self, tid: int, outcome: str, message: str | None) -> None:
        if tid != self._current_id:
            return  # a superseded task ending late: nobody is listening any more
        # Deliver the last events first, so the UI sees results before "finished" (none after Stop).
        if tid != self._muted_id:
            self._throttle.flush()
        if tid != self._current_id:
            return  # the events callback started another task: this one is superseded
        callbacks = self._callbacks
        self._current = None
        self._current_id = None
        self._callbacks = {}
        self._reap()
        self.busyChanged.emit(False)
        cb = callbacks.get(outcome)
        if outcome == "errored":
            if cb is not None:
                cb(message)
            self.errored.emit(message or "")
        else:
            if cb is not None:
                cb()
            (self.finished if outcome == "finished" else self.stopped).emit()
