"""The Audio tab's Show list: which sound is shown, played and exported.

The list holds the last run's variations, the loaded recording, then earlier runs (newest
first, up to MAX_RUNS kept by the tab in `self._runs`). Item data are "run:ID:V" /
"recording:0:0" strings (Qt's findData does not compare Python tuples); `shown()` answers
("run", variation) or ("recording", 0), `shown_run()` the run it belongs to, and
`shown_sound` / `shown_surprise` / `shown_length` what is shown of it.

A mixin for the Audio tab, which provides show_combo, run, _runs, recording, _show,
_update_buttons and _update_status.
"""

from __future__ import annotations

import numpy as np

from studio.audio.runs import Recording, Run, conditioning_text


class ShowListMixin:
    def _fill_show_combo(self, select: tuple | None = None) -> None:
        """The Show list: the last run's variations, the recording, then earlier runs (newest first).

        Item data are "run:ID:V" / "recording:0:0" strings (Qt's findData does not compare
        Python tuples)."""
        current = self._show_key(select) if select is not None else self.show_combo.currentData()
        self.show_combo.blockSignals(True)
        self.show_combo.clear()
        runs = list(self._runs.values())[::-1]
        for k, run in enumerate(runs):
            if k == 1 and self.recording is not None:
                self._add_recording_item()
            for v in range(run.batch):
                label = f"variation {v + 1} of {run.batch}" if run.batch > 1 else "generated"
                if k:
                    label = f"earlier: {conditioning_text(run.digit, run.speaker, plain=True)} · {label}"
                self.show_combo.addItem(f"{label} · seed {run.seed}", f"run:{run.id}:{v}")
        if self.recording is not None and len(runs) <= 1:
            self._add_recording_item()
        i = self.show_combo.findData(current) if current is not None else -1
        self.show_combo.setCurrentIndex(max(0, i))
        self.show_combo.blockSignals(False)
        self.show_combo.setEnabled(self.show_combo.count() > 0)

    def _add_recording_item(self) -> None:
        self.show_combo.addItem(f"recording: {self.recording.name}", "recording:0:0")

    def _parse_show_key(self) -> tuple[str, int, int] | None:
        key = self.show_combo.currentData()
        if not key:
            return None
        kind, a, b = (str(key).split(":") + ["0", "0"])[:3]
        return kind, int(a), int(b)

    def shown(self) -> tuple | None:
        """("run", variation) or ("recording", 0), or None when there is nothing to show."""
        parsed = self._parse_show_key()
        if parsed is None:
            return None
        kind, _run_id, v = parsed
        return (kind, v if kind == "run" else 0)

    def shown_run(self) -> Run | None:
        """The run whose variation is shown (the last run, or an earlier one), else None."""
        parsed = self._parse_show_key()
        if parsed is None or parsed[0] != "run":
            return None
        return self._runs.get(parsed[1])

    def _show_key(self, what: tuple) -> str:
        """("run", v[, run]) -> its item data (the last run unless given); ("recording", 0) likewise."""
        if what[0] == "run":
            run = what[2] if len(what) > 2 else self.run
            return f"run:{run.id if run is not None else -1}:{what[1]}"
        return "recording:0:0"

    def show_variation(self, v: int, run: Run | None = None) -> bool:
        """Show variation `v` of `run` (default: the last run)."""
        i = self.show_combo.findData(self._show_key(("run", v, run or self.run)))
        if i >= 0:
            self.show_combo.setCurrentIndex(i)
        return i >= 0

    def show_recording(self) -> bool:
        i = self.show_combo.findData("recording:0:0")
        if i >= 0:
            self.show_combo.setCurrentIndex(i)
        return i >= 0

    def _shown_changed(self) -> None:
        self._show()
        self._update_buttons()
        self._update_status()

    def _shown_sound_of(self) -> tuple[Run | None, int, Recording | None]:
        """(run, variation, None) when a run's variation is shown, (None, 0, recording) when the
        recording is, else (None, 0, None)."""
        what = self.shown()
        if what is not None:
            run = self.shown_run()
            if what[0] == "run" and run is not None:
                return run, what[1], None
            if what[0] == "recording" and self.recording is not None:
                return None, 0, self.recording
        return None, 0, None

    def shown_sound(self) -> np.ndarray | None:
        run, v, rec = self._shown_sound_of()
        if run is not None:
            return run.sound(v)
        return None if rec is None else rec.samples

    def shown_surprise(self) -> np.ndarray | None:
        run, v, rec = self._shown_sound_of()
        if run is not None:
            return run.surprise(v)
        return None if rec is None or rec.score is None else rec.score.surprise_bits

    def shown_length(self) -> int:
        """Samples in the shown sound (cheap: nothing is copied)."""
        run, _v, rec = self._shown_sound_of()
        if run is not None:
            return run.prompt_len + run.n_done
        return 0 if rec is None else len(rec.samples)
