"""How responsive the studio stays: event-loop lateness while each tab generates, in the real window.

    QT_QPA_PLATFORM=offscreen python benchmarks/ui_latency.py [--text-tokens 10000] [--audio-seconds 10]
                                                              [--only text,audio] [--json]

It opens the main window at its usual size (offscreen) with the shipped models and drives each
tab the way a user would, while a 5 ms heartbeat timer runs on the UI thread. Each turn of the
event loop that takes longer than that delays the next beat: a beat's *lateness* is how much
later than 5 ms after the previous one it fired, i.e. how long the window could not react
(a click, a repaint). For each scenario it reports p50 / p99 / max lateness in ms and how many
turns stalled past 50 ms (the point where a window starts to feel stuck):

- `text_generate`: the Text tab generating `--text-tokens` tokens (shakespeare-char), streaming;
- `text_redisplay_long_branch`: showing that long branch again (clicking it in the branch tree);
- `text_colour_mode`: changing the colour mode of the long branch (probability -> entropy -> rank);
- `text_compare_beam`: the Compare page (its default columns, the beam column among them);
- `image_generate`: the Image tab sampling 4 digits (mnist-pixelcnn, instant speed);
- `density_sample`: the Density tab sampling 8 digits (bmnist-made, instant speed), then scoring;
- `audio_switch`: switching to the Audio tab and back, 10 times, with nothing running (also the
  worst turn of the first round trip, the tab's first show, and of the nine after it);
- `audio_generate`: the Audio tab generating `--audio-seconds` of fsdd-wavenet (no sound card).

Loading models is left out (each model is loaded once before its scenario). Numbers depend on the
machine and its load: compare runs made on the same machine at the same time (alternate the
versions being compared). The studio's settings go to a temporary file.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
if "CHAINRULE_STUDIO_SETTINGS" not in os.environ:  # a window of its own: the user's studio settings stay as they are
    import tempfile

    os.environ["CHAINRULE_STUDIO_SETTINGS"] = str(Path(tempfile.mkdtemp(prefix="chainrule-bench-")) / "studio.ini")

WINDOW_SIZE = (1400, 900)
BEAT_MS = 5
STALL_MS = 50
SCENARIOS = ("text", "image", "density", "audio")


class Heartbeat:
    """A timer on the UI thread every BEAT_MS; the lateness of each beat, in ms, while recording."""

    def __init__(self) -> None:
        from PySide6.QtCore import Qt, QTimer

        self.late: list[float] = []
        self._last = time.perf_counter()
        self._timer = QTimer()
        self._timer.setTimerType(Qt.TimerType.PreciseTimer)
        self._timer.setInterval(BEAT_MS)
        self._timer.timeout.connect(self._beat)
        self._timer.start()
        self.recording = False

    def _beat(self) -> None:
        now = time.perf_counter()
        if self.recording:
            self.late.append(max(0.0, (now - self._last) * 1000 - BEAT_MS))
        self._last = now

    def record(self) -> None:
        self.late = []
        self._last = time.perf_counter()
        self.recording = True

    def stop(self) -> list[float]:
        self.recording = False
        return self.late


def stats(late: list[float], seconds: float) -> dict:
    if not late:
        return {"turns": 0}
    s = sorted(late)

    def pct(q: float) -> float:
        return round(s[min(len(s) - 1, int(q * (len(s) - 1) + 0.5))], 1)

    return {"p50_ms": pct(0.50), "p99_ms": pct(0.99), "max_ms": round(s[-1], 1),
            "stalls_over_50ms": sum(x > STALL_MS for x in s), "beats": len(s), "seconds": round(seconds, 2)}


def spin(app, until, timeout_s: float) -> bool:
    """Run the event loop until `until()` (True) or the timeout (False)."""
    deadline = time.monotonic() + timeout_s
    while not until():
        if time.monotonic() > deadline:
            return False
        app.processEvents()
        time.sleep(0.001)
    return True


def settle(app, seconds: float = 0.3) -> None:
    end = time.monotonic() + seconds
    spin(app, lambda: time.monotonic() > end, seconds + 1)


def measure(app, beat: Heartbeat, action, until, timeout_s: float = 600) -> dict:
    """Lateness from `action()` until `until()` holds."""
    beat.record()
    t0 = time.perf_counter()
    action()
    ok = spin(app, until, timeout_s)
    settle(app, 0.05)  # a few more beats: the first one after a stall is the one that measures it
    out = stats(beat.stop(), time.perf_counter() - t0)
    if not ok:
        out["timed_out"] = True
    return out


def text_scenarios(app, window, beat: Heartbeat, tokens: int) -> dict:
    from engines.decoding.config import DecodingConfig
    from studio.text import work

    tab = window.tab("Text")
    window.select_tab("Text")
    if not tab.select_model("shakespeare-char"):
        return {"text": "shakespeare-char is not installed"}
    work.load_model(tab.chosen_model())
    window.decoding_panel.set_config(DecodingConfig(strategy="sample", temperature=1.0, seed=1))
    tab.prompt.setPlainText("ROMEO:")
    tab.max_tokens.setValue(tokens)
    settle(app)
    out = {}
    view = tab.view
    # A token view that renders in one go (before it did it a slice per turn) is never "rendering".
    rendering = lambda v: getattr(v, "is_rendering", lambda: False)()  # noqa: E731

    def idle() -> bool:
        return not tab.is_running() and not rendering(view)

    out["text_generate"] = measure(app, beat, tab.generate, idle)
    long_branch = tab.shown_branch()
    out["text_generate"]["tokens"] = len(long_branch.tokens)
    tab.max_tokens.setValue(20)
    short = tab.generate()
    spin(app, idle, 120)
    settle(app)
    out["text_redisplay_long_branch"] = measure(app, beat, lambda: tab.show_branch(long_branch.id),
                                                lambda: not rendering(view))
    settle(app)
    modes = iter(("entropy", "rank", "probability"))
    beat.record()
    t0 = time.perf_counter()
    for mode in modes:
        tab.set_colour_mode(mode)
        spin(app, lambda: not rendering(view), 120)
        settle(app, 0.05)
    out["text_colour_mode"] = stats(beat.stop(), time.perf_counter() - t0)
    out["text_colour_mode"]["changes"] = 3
    settle(app)
    tab.show_branch(short.id)
    tab.pages.setCurrentWidget(tab.compare)
    tab.max_tokens.setValue(min(tokens, 200))
    settle(app)
    compare = tab.compare
    out["text_compare_beam"] = measure(
        app, beat, compare.run,
        lambda: not compare.runner.is_busy() and not any(rendering(c.view) for c in compare.columns))
    out["text_compare_beam"]["columns"] = len(compare.columns)
    tab.pages.setCurrentIndex(0)
    return out


def _drawing_scenario(app, window, beat: Heartbeat, tab_name: str, model_id: str, count: int, key: str,
                      action: str) -> dict:
    """One run of `count` samples on a drawing tab (Image or Density), at full speed, from idle."""
    import importlib

    work = importlib.import_module(f"studio.{tab_name.lower()}.work")
    tab = window.tab(tab_name)
    window.select_tab(tab_name)
    if not tab.select_model(model_id):
        return {tab_name.lower(): f"{model_id} is not installed"}
    work.load_model(tab.chosen_model())
    tab.set_speed(float("inf"))
    tab.samples_spin.setValue(count)
    spin(app, tab.is_idle, 120)
    settle(app)
    return {key: measure(app, beat, getattr(tab, action), lambda: not tab.is_running() and tab.is_idle())}


def image_scenarios(app, window, beat: Heartbeat) -> dict:
    return _drawing_scenario(app, window, beat, "Image", "mnist-pixelcnn", 4, "image_generate", "generate")


def density_scenarios(app, window, beat: Heartbeat) -> dict:
    return _drawing_scenario(app, window, beat, "Density", "bmnist-made", 8, "density_sample", "sample")


def audio_scenarios(app, window, beat: Heartbeat, seconds: float) -> dict:
    from studio.audio import work

    out = {}
    window.select_tab("Text")
    settle(app)
    beat.record()
    t0 = time.perf_counter()
    first = 0
    for i in range(10):
        window.select_tab("Audio")
        settle(app, 0.1)
        window.select_tab("Text")
        settle(app, 0.1)
        if i == 0:
            first = len(beat.late)  # the beats of the first round trip: the tab's first show ever
    late = beat.stop()
    out["audio_switch"] = stats(late, time.perf_counter() - t0)
    out["audio_switch"]["switches"] = 20
    # the tab's first show (its first layout, its caches filled) apart from the 18 switches after it
    out["audio_switch"]["first_round_trip_max_ms"] = round(max(late[:first], default=0.0), 1)
    out["audio_switch"]["later_max_ms"] = round(max(late[first:], default=0.0), 1)
    tab = window.tab("Audio")
    window.select_tab("Audio")
    if not tab.select_model("fsdd-wavenet"):
        out["audio_generate"] = "fsdd-wavenet is not installed"
        return out
    work.load_model(tab.chosen_model())
    tab.live_check.setChecked(False)  # no sound card offscreen: the run is drawn, not played
    tab.set_seed(3, fixed=True)
    tab.seconds_spin.setValue(seconds)
    tab.batch_spin.setValue(1)
    spin(app, tab.is_idle, 120)
    settle(app)
    out["audio_generate"] = measure(app, beat, tab.generate, lambda: not tab.is_running() and tab.is_idle())
    out["audio_generate"]["clip_seconds"] = seconds
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--text-tokens", type=int, default=10_000)
    parser.add_argument("--audio-seconds", type=float, default=10.0)
    parser.add_argument("--only", default=",".join(SCENARIOS), help=f"comma-separated, of: {', '.join(SCENARIOS)}")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    only = {s.strip() for s in args.only.split(",") if s.strip()}

    from PySide6.QtWidgets import QApplication

    import studio.app as app_module
    from studio.app import configure_app
    from studio.main_window import MainWindow

    app = QApplication.instance() or QApplication([sys.argv[0]])
    configure_app(app)
    window = MainWindow()
    window.resize(*WINDOW_SIZE)
    window.show()
    settle(app, 0.5)
    freeze = getattr(app_module, "freeze_startup_heap", None)
    if freeze is not None:  # as studio.app.main does once the window is up
        freeze()
    beat = Heartbeat()
    result: dict = {"window": list(WINDOW_SIZE), "beat_ms": BEAT_MS, "scenarios": {}}
    t0 = time.perf_counter()
    if "text" in only:
        result["scenarios"].update(text_scenarios(app, window, beat, args.text_tokens))
    if "image" in only:
        result["scenarios"].update(image_scenarios(app, window, beat))
    if "density" in only:
        result["scenarios"].update(density_scenarios(app, window, beat))
    if "audio" in only:
        result["scenarios"].update(audio_scenarios(app, window, beat, args.audio_seconds))
    result["total_seconds"] = round(time.perf_counter() - t0, 1)
    t1 = time.perf_counter()
    window.close()
    result["close_ms"] = round((time.perf_counter() - t1) * 1000, 1)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for name, s in result["scenarios"].items():
            print(f"{name}: {s}")
        print(f"close: {result['close_ms']} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
