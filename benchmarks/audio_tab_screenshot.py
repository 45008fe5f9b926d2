"""The README's Audio tab screenshot: the real window, offscreen, after "seven, george" from a speech model.

    QT_QPA_PLATFORM=offscreen python benchmarks/audio_tab_screenshot.py --out docs/audio-tab.png

It opens the main window at 1400x900 on the Audio tab, picks the model (default `fsdd-speech`), sets
digit 7, speaker george and a fixed seed, presses Generate, waits for the run and the recogniser's
verdict, and saves the window (mel frames the prior wrote, waveform, surprise, spectrogram, both
log-likelihoods and "heard as").
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("CHAINRULE_STUDIO_SETTINGS", str(Path(tempfile.mkdtemp(prefix="chainrule-shot-")) / "s.ini"))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="docs/audio-tab.png")
    p.add_argument("--model", default="fsdd-speech")
    p.add_argument("--digit", type=int, default=7)
    p.add_argument("--speaker", default="george")
    p.add_argument("--seed", type=int, default=3)
    args = p.parse_args(argv)

    from PySide6.QtCore import QEventLoop, QTimer
    from PySide6.QtWidgets import QApplication

    from studio.app import configure_app, save_atomically
    from studio.main_window import MainWindow

    app = QApplication.instance() or QApplication([sys.argv[0]])
    configure_app(app)
    window = MainWindow()
    window.resize(1400, 900)
    window.show()
    window.select_tab("Audio")
    tab = window.tab("Audio")
    if not tab.select_model(args.model):
        print(f"no audio model {args.model!r}", file=sys.stderr)
        return 1
    tab.set_seed(args.seed, fixed=True)
    tab.set_digit(args.digit)
    tab.set_speaker(args.speaker)
    tab.live_check.setChecked(False)
    loop = QEventLoop()
    tab.runner.busyChanged.connect(lambda busy: None if busy else QTimer.singleShot(800, loop.quit))
    QTimer.singleShot(60_000, loop.quit)
    run = tab.generate()
    loop.exec()
    if run is None or run.state != "done":
        print("the run did not finish", file=sys.stderr)
        return 1
    for _ in range(10):
        app.processEvents()
    save_atomically(window.grab(), Path(args.out))
    print(f"wrote {args.out}: {tab.heard_label.text()}")
    window.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
