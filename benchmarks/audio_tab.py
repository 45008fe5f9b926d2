"""The Audio tab's own speed: the real window, offscreen, generating with a shipped WaveNet.

    QT_QPA_PLATFORM=offscreen python benchmarks/audio_tab.py [--seconds 3] [--model fsdd-wavenet] [--json]

What `chainrule bench audio` cannot see (engines/ never imports Qt; its `studio_path_samples_per_s`
is the engine call the tab's worker makes, with the tab's chunking, and nothing else): the
studio's whole path.
It opens the main window at its usual size on the Audio tab, loads the model first (loading is
not generation), then presses Generate with "play while generating" on, into a stand-in sound
card (a thread that pulls 256-sample blocks at the real-time pace, as PortAudio's callback
would), and waits for the run's end while the tab redraws its waveform, surprise track,
spectrogram and status line as it would on screen. It reports:

- `tab_samples_per_s`: generated samples over the run's own time (from the first sample's
  request on the worker to the run's end on the UI thread), i.e. what the tab's status line
  says; `tab_realtime_factor` is that over the model's sample rate (>= 1: the player never
  starves once started);
- `engine_samples_per_s`: the same generation call (same model, seed, settings and chunk
  size as the tab) on this thread with no window work, run in the same process just before
  and after the tab's run (the mean of the two), so `tab_over_engine` compares the two side
  by side; 1.0 would mean the UI costs the model nothing;
- `ui_thread_cpu_s` / `worker_cpu_s`: CPU seconds of the UI thread and of the other threads
  (the worker, the stand-in sound card) during the tab's run (Linux: /proc; else null);
  `ui_thread_core_share` is the UI thread's CPU over the run's wall time (the share of a core
  it took), `worker_samples_per_cpu_s` the samples generated per CPU second of the others;
- `live_redraws`, `spectrogram_updates`, `underruns`, `chunk_samples`.

On a machine whose cores are shared (another process training, say), the UI thread's work is
time the model does not get: that is what this measures (on Linux with autogroup scheduling,
a process started from another session than the training gets about one core in all, so the
UI thread's CPU comes straight out of the worker's). Numbers vary with load: compare the tab
with the engine figure of the same invocation (`tab_over_engine`), or alternate runs of the
versions being compared. The studio's settings go to a temporary file.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
if "CHAINRULE_STUDIO_SETTINGS" not in os.environ:  # a window of its own: the user's studio settings stay as they are
    import tempfile

    os.environ["CHAINRULE_STUDIO_SETTINGS"] = str(Path(tempfile.mkdtemp(prefix="chainrule-bench-")) / "studio.ini")

WINDOW_SIZE = (1400, 900)


class RealTimeStream:
    """Stands in for sounddevice.OutputStream: a thread calls the callback every block, at the real-time pace."""

    def __init__(self, *, samplerate, blocksize, channels, dtype, callback):
        import numpy as np

        self.samplerate, self.blocksize, self.callback = samplerate, blocksize, callback
        self._buf = np.zeros((blocksize, channels), np.float32)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._pull, name="fake-audio", daemon=True)

    def _pull(self) -> None:
        from engines.audio.playback import StreamFinished

        status = type("Flags", (), {"output_underflow": False})()
        period = self.blocksize / self.samplerate
        t = time.monotonic()
        while not self._stop.is_set():
            try:
                self.callback(self._buf, self.blocksize, None, status)
            except StreamFinished:
                return
            t += period
            self._stop.wait(max(0.0, t - time.monotonic()))

    def start(self):
        self._thread.start()

    def abort(self):
        self._stop.set()

    def close(self):
        self._stop.set()

    @property
    def active(self) -> bool:
        return self._thread.is_alive()


def thread_cpu_seconds() -> dict[int, float] | None:
    """CPU seconds (user + system) of every thread of this process, by native id (Linux only)."""
    root = Path("/proc/self/task")
    if not root.is_dir():
        return None
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    for task in root.iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[int(task.name)] = (int(fields[11]) + int(fields[12])) / tick
    return out


def engine_rate(model, *, seconds: float, seed: int, digit, speaker, chunk_samples: int,
                frame_temperature: float | None = None) -> float:
    """Samples per second of the tab's generation call, pulled chunk by chunk on this thread. A speech
    model (frame_temperature given): `speak`, the vocoder's samples over its own time (after the prior,
    as the tab's status counts from the first audio)."""
    if frame_temperature is not None:
        from engines.audio.speech import FrameEvent, speak

        t0, n = None, 0
        for ev in speak(model, seed=seed, digit=digit, speaker=speaker, frame_temperature=frame_temperature,
                        chunk_samples=chunk_samples):
            if isinstance(ev, FrameEvent):
                t0 = None
            elif hasattr(ev, "samples"):
                t0 = t0 or time.perf_counter()
                n += ev.samples.shape[1]
        return n / (time.perf_counter() - t0)
    from engines.audio.generate import generate_audio_chunks

    t0 = time.perf_counter()
    n = sum(c.samples.shape[1] for c in generate_audio_chunks(
        model, seconds=seconds, seed=seed, digit=digit, speaker=speaker, chunk_samples=chunk_samples))
    return n / (time.perf_counter() - t0)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="fsdd-wavenet")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--digit", type=int, default=7)
    parser.add_argument("--speaker", default="george")
    parser.add_argument("--no-play", action="store_true", help="generate without feeding the stand-in sound card")
    parser.add_argument("--profile", action="store_true", help="also print the UI thread's top functions (cProfile)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    from PySide6.QtCore import QEventLoop, QTimer
    from PySide6.QtWidgets import QApplication

    from engines.audio.playback import Player
    from studio.app import configure_app
    from studio.audio import speech_work, work
    from studio.main_window import MainWindow

    app = QApplication.instance() or QApplication([sys.argv[0]])
    configure_app(app)
    window = MainWindow()
    window.resize(*WINDOW_SIZE)
    window.show()
    window.select_tab("Audio")
    tab = window.tab("Audio")
    if not tab.select_model(args.model):
        print(f"no audio model {args.model!r}", file=sys.stderr)
        return 1
    tab.set_player(Player(tab.sample_rate, stream_factory=RealTimeStream))
    tab.set_seed(args.seed, fixed=True)
    tab.seconds_spin.setValue(args.seconds)
    tab.temperature_spin.setValue(1.0)
    tab.batch_spin.setValue(1)
    tab.set_digit(args.digit)
    tab.set_speaker(args.speaker)
    tab.live_check.setChecked(not args.no_play)
    for _ in range(5):
        app.processEvents()

    info = tab.chosen_model()
    speech = speech_work.is_speech_card(info.card)  # a mel prior + a vocoder: its prior decides the length
    # loading is not generation: the tab's run finds it cached
    model = speech_work.load_speech(info) if speech else work.load_model(info)
    chunk = work.CHUNK_SAMPLES  # what the tab's worker asks the engine for
    kw = dict(seconds=args.seconds, seed=args.seed, digit=args.digit, speaker=args.speaker, chunk_samples=chunk,
              frame_temperature=tab.frame_temp_spin.value() if speech else None)
    before = engine_rate(model, **kw)

    loop = QEventLoop()
    tab.runner.busyChanged.connect(lambda busy: None if busy else loop.quit())
    QTimer.singleShot(int(1000 * (60 + 10 * args.seconds)), loop.quit)  # never hang
    redraws = [0]
    show = tab._show

    def counting_show(*a, **k):
        if k.get("live") or (a and a[0]):
            redraws[0] += 1
        return show(*a, **k)

    tab._show = counting_show
    spec0 = tab.plots.spectrogram_updates
    ui_tid = threading.get_native_id()
    profile = None
    if args.profile:
        import cProfile

        profile = cProfile.Profile()
    cpu0 = thread_cpu_seconds()
    if profile is not None:
        profile.enable()
    t0 = time.perf_counter()
    run = tab.generate()
    loop.exec()
    wall = time.perf_counter() - t0
    if profile is not None:
        profile.disable()
    cpu1 = thread_cpu_seconds()
    tab._show = show
    if run is None or run.state != "done":
        print(f"the run did not finish: {tab.status_text()}", file=sys.stderr)
        return 1
    after = engine_rate(model, **kw)
    tab.stop_playback()

    rate = run.n_done / run.elapsed()
    engine = (before + after) / 2
    ui_cpu = worker_cpu = None
    if cpu0 is not None and cpu1 is not None:
        ui_cpu = cpu1.get(ui_tid, 0.0) - cpu0.get(ui_tid, 0.0)
        worker_cpu = sum(v - cpu0.get(k, 0.0) for k, v in cpu1.items() if k != ui_tid)
    result = {
        "model": args.model, "seconds": args.seconds, "sample_rate": run.sample_rate, "played": not args.no_play,
        "window": list(WINDOW_SIZE), "chunk_samples": chunk,
        "tab_samples_per_s": round(rate, 1), "tab_realtime_factor": round(rate / run.sample_rate, 3),
        "run_seconds": round(run.elapsed(), 3),
        "engine_samples_per_s": round(engine, 1), "engine_before_after": [round(before, 1), round(after, 1)],
        "tab_over_engine": round(rate / engine, 3),
        "ui_thread_cpu_s": None if ui_cpu is None else round(ui_cpu, 2),
        "worker_cpu_s": None if worker_cpu is None else round(worker_cpu, 2),
        "ui_thread_core_share": None if ui_cpu is None else round(ui_cpu / wall, 3),
        "worker_samples_per_cpu_s": None if not worker_cpu else round(run.n_done / worker_cpu, 1),
        "live_redraws": redraws[0], "spectrogram_updates": tab.plots.spectrogram_updates - spec0,
        "underruns": run.underruns, "threads_intra_op": 1,
    }
    window.close()
    if profile is not None:
        import pstats

        pstats.Stats(profile, stream=sys.stderr).sort_stats("tottime").print_stats(25)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for k, v in result.items():
            print(f"{k}: {v}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
