"""The Audio tab's export: the shown sound as 16-bit WAV or FLAC, with a JSON of what made it.

For a generated sound the file carries its request (`engines.audio.request.write_sample`:
the variation's own AudioRequest in the WAV/FLAC comment tag and in the JSON beside it, so
`chainrule generate --from FILE` makes it again and the studio reopens it), and the JSON also
holds the seed, variation, conditioning, temperature, log-likelihood and the command; for a recording, its source,
the conversion notes and its score. A continuation is exported as the generated part
alone (as the CLI writes it) unless "with the recording" is ticked.

A mixin for the Audio tab, which provides runner, recording, sample_rate, shown(),
shown_run(), shown_sound() and the StatusLineMixin's _say_error and _write_export.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from studio.audio import work
from studio.widgets import check_box, push_button, save_path


class AudioExportMixin:
    def _build_export_controls(self) -> None:
        """"with the recording" (self.with_prompt_check) and the Export WAV / FLAC buttons, which
        the caller lays out."""
        self.with_prompt_check = check_box("with the recording", "Export the recording and its continuation as one "
                                           "sound (unticked: the generated part only, as `chainrule generate audio "
                                           "--prompt` writes it)")
        self.export_wav_button = push_button("Export WAV…", "The shown sound as 16-bit WAV, with a .json of its "
                                             "settings", lambda: self.export_audio(fmt="wav"))
        self.export_flac_button = push_button("Export FLAC…", "The shown sound as 16-bit FLAC, with a .json of its "
                                              "settings", lambda: self.export_audio(fmt="flac"))

    def export_audio(self, path: str | None = None, fmt: str | None = None) -> bool:
        """The shown sound as 16-bit WAV or FLAC (by `fmt`, else the suffix), with its settings as JSON."""
        what = self.shown()
        sound = self.export_sound()
        if sound is None or what is None or not len(sound):
            self._say_error("Nothing to export: Generate, or load a recording.")
            return False
        if self.runner.is_busy():
            self._say_error("Wait for the run to finish (or stop it) before exporting.")
            return False
        fmt = (fmt or (Path(path).suffix.lstrip(".").lower() if path else "wav")) or "wav"
        if fmt not in ("wav", "flac"):
            self._say_error(f"Export failed: audio is exported as WAV or FLAC, not {fmt!r}")
            return False
        path = save_path(self, path, f"Export the sound as {fmt.upper()}", f"{self._export_stem()}.{fmt}",
                         "WAV (*.wav)" if fmt == "wav" else "FLAC (*.flac)")
        if path is None:
            return False
        settings = self.export_settings(Path(path).name)
        run = self.shown_run()
        is_run = what[0] == "run" and run is not None
        rate = run.sample_rate if is_run else self.sample_rate
        info = self._infos.get(run.model_id) if is_run else None
        request = run.request.for_sample(what[1]) if is_run and run.request is not None and info is not None else None

        def write() -> int:
            from engines.audio.wav import write_audio

            if request is not None:  # the sound, its request in the comment tag and in the .json beside it
                from engines.audio.request import write_sample

                write_sample(path, sound, rate, request, info, settings)
            else:  # a loaded recording: what it is and its score
                write_audio(path, sound, rate)
                work.write_settings(work.settings_path(path), settings)
            return len(sound)

        return self._write_export(path, write, lambda n: f"Exported {n / rate:.2f} s ({fmt.upper()}, 16-bit) "
                                                         f"and its settings (.json)")

    def export_sound(self) -> np.ndarray | None:
        """What Export writes: the shown sound; for a continuation, the generated part unless
        "with the recording" is ticked (the CLI writes the generated part)."""
        what = self.shown()
        run = self.shown_run()
        if what is not None and what[0] == "run" and run is not None and not self._export_with_prompt():
            return run.generated(what[1])
        return self.shown_sound()

    def _export_with_prompt(self) -> bool:
        """Whether the export holds the continued recording too: ticked, or a speech model's
        continuation (which `chainrule generate audio --prompt` writes whole, so its request
        regenerates the file bit for bit)."""
        run = self.shown_run()
        return run is not None and run.prompt is not None and (run.speech or self.with_prompt_check.isChecked())

    def export_settings(self, file_name: str = "") -> dict:
        """What made the shown sound, for the JSON beside an export."""
        what = self.shown()
        if what is None:
            return {}
        if what[0] == "run" and self.shown_run() is not None:
            run, v = self.shown_run(), what[1]
            n = run.n_done
            lp = run.total_logprob(v)
            return {
                "file": file_name,
                "kind": "generated",
                "model": run.model_id,
                "seed": run.seed,
                "variation": v + 1,
                "variations": run.batch,
                "seconds": run.seconds,
                "temperature": run.temperature,
                "digit": run.digit,
                "speaker": run.speaker,
                "prompt": None if run.prompt is None else {
                    "file": run.prompt_path, "samples": run.prompt_len,
                    "seconds": run.prompt_len / run.sample_rate, "notes": run.prompt_notes},
                "sample_rate": run.sample_rate,
                "includes_prompt": self._export_with_prompt(),
                "samples": (run.prompt_len if self._export_with_prompt() else 0) + n,
                "generated_samples": n,
                "complete": run.state == "done",
                "state": run.state,
                "total_logprob": lp,
                "bits_per_sample": (-lp / work.LN2 / n) if n else None,
                "command": run.cli,
            }
        rec = self.recording
        if rec is None:
            return {}
        s = rec.score
        return {
            "file": file_name,
            "kind": "recording",
            "source": rec.path,
            "notes": list(rec.loaded.notes),
            "original_rate": rec.loaded.original_rate,
            "original_channels": rec.loaded.original_channels,
            "sample_rate": rec.sample_rate,
            "samples": len(rec.samples),
            "score": None if s is None else {
                "model": s.model_id, "digit": s.digit, "speaker": s.speaker,
                "total_logprob": s.total_logprob, "bits_per_sample": s.bits_per_sample},
        }

    def _export_stem(self) -> str:
        what = self.shown()
        run = self.shown_run()
        if what is not None and what[0] == "run" and run is not None:
            return f"{run.model_id}-seed{run.seed}" + (f"-v{what[1] + 1}" if run.batch > 1 else "")
        if self.recording is not None:
            return f"{Path(self.recording.name).stem}-{self.sample_rate // 1000}k"
        return "audio"
