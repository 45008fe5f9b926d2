"""The Audio tab and requests: restoring the tab to a request, and its state across restarts.

* `apply_request(request)` - an `engines.audio.request.AudioRequest` (from an exported WAV/FLAC,
  a sidecar JSON or the History panel) sets the model, digit, speaker, seconds, temperatures,
  variations and seed, and loads the recording it continues or re-speaks; Generate (or
  Re-speak) then makes the same sound. Everything is checked before any widget changes, so a
  request that does not fit (model not installed, recording moved) leaves the tab as it was
  and raises InputError with the reason.
* `history_state()` / `restore_history_state(state)` - the settings and the last runs, with
  their sounds as 16-bit PCM and their log-likelihoods as float16 (the surprise track), newest
  first while they fit in STATE_BUDGET bytes (at most STATE_RUNS runs). Restoring never raises:
  what no longer fits (a model gone) is said in the status line and left out.

A mixin for the Audio tab (studio/tabs/audio_tab.py).
"""

from __future__ import annotations

import base64
import html
import json
import logging
from typing import Any, Mapping

import numpy as np

from engines.errors import ChainruleError, InputError
from studio.audio import speech_work, work
from studio.audio.runs import Recording, Run

log = logging.getLogger(__name__)
STATE_VERSION = 1
STATE_RUNS = 4  # runs whose sounds are kept across a restart
STATE_BUDGET = 1_900_000  # characters of JSON for the runs kept (the whole state stays under ~2 MB)


def _pack(array: np.ndarray, dtype) -> str:
    return base64.b64encode(np.ascontiguousarray(array, dtype=dtype).tobytes()).decode("ascii")


def _unpack(text: Any, dtype, shape: tuple[int, ...]) -> np.ndarray:
    if not isinstance(text, str):
        raise ValueError("expected base64 text")
    raw = base64.b64decode(text, validate=True)
    array = np.frombuffer(raw, dtype=dtype)
    if array.size != int(np.prod(shape)):
        raise ValueError("the stored sound has the wrong length")
    return array.reshape(shape)


def run_state(run: Run) -> dict[str, Any] | None:
    """A finished run as JSON (its request, its sounds as int16 and log-probs as float16); None
    when it has no request or nothing was made."""
    from engines.audio.wav import to_int16

    if run.request is None or not run.n_done:
        return None
    n = run.n_done
    out = {
        "request": run.request.to_json(), "sample_rate": run.sample_rate, "state": run.state, "n": n,
        "batch": run.batch, "speech": run.speech, "mode": run.mode, "cli": run.cli,
        "samples": _pack(to_int16(run.samples[:, :n]), "<i2"),
        "logprobs": _pack(np.nan_to_num(run.logprobs[:, :n], nan=0.0, neginf=-60000.0).astype(np.float16), "<f2"),
        "prior_logprob": run.prior_logprob, "n_prior_frames": run.n_prior_frames, "source": run.source_name,
        "prompt": None, "prompt_name": run.prompt_name,
    }
    if run.prompt is not None:
        out["prompt"] = _pack(to_int16(run.prompt), "<i2")
        out["prompt_len"] = len(run.prompt)
    return out


def state_bytes(entry: Mapping[str, Any]) -> int:
    """Characters of JSON a run's entry takes (its request's embedded recording included)."""
    return len(json.dumps(entry))


def restore_run(entry: Mapping[str, Any]) -> Run:
    """A Run from `run_state`'s JSON (ValueError / ChainruleError when it is not one)."""
    from engines.audio.request import AudioRequest

    request = AudioRequest.from_json(entry["request"])
    n, batch, rate = int(entry["n"]), int(entry["batch"]), int(entry["sample_rate"])
    if not (0 < n <= 10_000_000 and batch == request.count and 0 < rate <= 384_000):
        raise ValueError("the stored run's sizes do not agree")
    samples = _unpack(entry["samples"], "<i2", (batch, n)).astype(np.float32) / 32767.0
    logprobs = _unpack(entry["logprobs"], "<f2", (batch, n)).astype(np.float64)
    prompt = None
    if entry.get("prompt"):
        prompt = _unpack(entry["prompt"], "<i2", (int(entry["prompt_len"]),)).astype(np.float32) / 32767.0
    speech = bool(entry.get("speech"))
    run = Run(request.model, request.seed, batch, n / rate, request.temperature,
              request.digit, request.speaker, rate, prompt, entry.get("prompt_name"), None, [], None,
              entry.get("cli") if isinstance(entry.get("cli"), str) else None)
    run.samples, run.logprobs, run.n_samples, run.n_done = samples, logprobs, n, n
    run.state = entry.get("state") if entry.get("state") in ("done", "stopped", "error") else "done"
    run.t_end = run.t0
    run.request = request
    run.speech, run.mode = speech, str(entry.get("mode") or request.mode)
    run.frame_temperature = request.frame_temperature
    run.prior_logprob = float(entry.get("prior_logprob") or 0.0)
    run.n_prior_frames = int(entry.get("n_prior_frames") or 0)
    run.source_name = entry.get("source") if isinstance(entry.get("source"), str) else None
    return run


class AudioHistoryMixin:
    # --- requests ------------------------------------------------------------------------------
    def apply_request(self, request) -> None:
        """Set the tab to `request` (module doc); InputError with the reason when it cannot be."""
        from engines.audio.request import read_recording

        info = self._infos.get(request.model)
        if info is None:
            raise InputError(f"model {request.model!r} is not installed: add the folder that holds it "
                             "(File → Add models folder…)")
        if self.runner.is_busy():
            raise InputError("a run is in progress: stop it first")
        request.check(info)
        speech = speech_work.is_speech_card(info.card)
        n_digits, speakers = work.card_n_digits(info.card), work.card_speakers(info.card)
        if request.digit is not None and request.digit >= n_digits:
            raise InputError(f"digit {request.digit} is out of range: {info.id} knows digits 0–{n_digits - 1}")
        if request.speaker is not None and request.speaker.lower() not in {s.lower() for s in speakers}:
            raise InputError(f"unknown speaker {request.speaker!r}: {info.id} knows {', '.join(speakers) or 'none'}")
        if request.seconds is not None and not work.MIN_SECONDS <= request.seconds <= work.MAX_SECONDS:
            raise InputError(f"seconds = {request.seconds:g} is outside what the Audio tab makes "
                             f"({work.MIN_SECONDS:g}–{work.MAX_SECONDS:g} s): run it with `chainrule generate --from`")
        if not speech and request.count > work.MAX_BATCH:
            raise InputError(f"{request.count} variations are more than the Audio tab makes at once "
                             f"(at most {work.MAX_BATCH}): run it with `chainrule generate --from`")
        source = request.prompt or request.resynth
        loaded = None
        if source is not None:  # read (and hash-checked) before anything changes
            loaded = read_recording(source, work.card_sample_rate(info.card),
                                    "the prompt recording" if request.prompt is not None else "the recording to re-speak")
        # everything fits: set the widgets
        self.model_combo.setCurrentIndex(self.model_combo.findData(info.id))
        self._model_changed()
        self.digit_combo.setCurrentIndex(max(0, self.digit_combo.findData(request.digit)))
        self.set_speaker(request.speaker)
        if request.seconds is not None:
            self.seconds_spin.setValue(request.seconds)
        _set_spin(self.temperature_spin, request.temperature)
        if request.frame_temperature is not None:
            _set_spin(self.frame_temp_spin, request.frame_temperature)
        if not speech:
            self.batch_spin.setValue(request.count)
        if request.seed is not None:
            self.set_seed(request.seed, fixed=True)
        self.ctx.set_decoding_config(request.decoding, self.MODEL_KIND)
        if loaded is not None:
            self.recording = Recording(source.path or "recording.wav", loaded, ref=source)
            self.continue_check.setChecked(request.prompt is not None)
            self._fill_show_combo(select=("recording", 0))
            self._show()
            self._invalidate_score()
        self._update_buttons()
        what = "Re-speak" if request.resynth is not None else "Generate"
        self._say(f"Set to the request of {html.escape(info.id)}, seed {request.seed}: {what} makes it again.")

    # --- state across restarts -------------------------------------------------------------------
    def history_state(self) -> dict[str, Any]:
        """The settings and the last runs' sounds (bounded: module doc), JSON-able."""
        runs, budget = [], STATE_BUDGET
        for run in list(self._runs.values())[::-1]:  # newest first
            if len(runs) >= STATE_RUNS or run.state == "running":
                continue
            entry = run_state(run)
            if entry is None or state_bytes(entry) > budget:
                continue
            budget -= state_bytes(entry)
            runs.append(entry)
        return {
            "version": STATE_VERSION, "model": self._model_id, "digit": self.digit(), "speaker": self.speaker(),
            "seconds": self.seconds_spin.value(), "temperature": self.temperature_spin.value(),
            "frame_temperature": self.frame_temp_spin.value(), "seed": self.seed_spin.value(),
            "new_seed": self.new_seed_check.isChecked(), "variations": self.batch_spin.value(),
            "runs": runs[::-1],  # oldest first, as the Show list keeps them
        }

    def restore_history_state(self, state: Mapping[str, Any]) -> None:
        """Back to a saved state; what no longer fits is said in the status line, never raised."""
        problems = []
        try:
            self._restore_settings(state, problems)
        except Exception as exc:  # noqa: BLE001 - a stale or hostile state must not stop the studio
            log.exception("audio tab: restoring its settings failed")
            problems.append(f"the settings ({type(exc).__name__})")
        restored = 0
        entries = state.get("runs") if isinstance(state, Mapping) else None
        for entry in entries if isinstance(entries, list) else []:
            try:
                run = restore_run(entry)
            except (ChainruleError, ValueError, KeyError, TypeError) as exc:
                problems.append(f"a run ({exc})")
                continue
            self._runs[run.id] = run
            self.run = run
            restored += 1
        while len(self._runs) > self.MAX_RUNS:
            del self._runs[next(iter(self._runs))]
        if restored:
            self._fill_show_combo(select=("run", 0))
            self._show()
        self._update_buttons()
        self._update_status()
        parts = []
        if restored:
            parts.append(f"Restored {restored} run{'s' if restored != 1 else ''} from the last session.")
        if problems:
            parts.append("Left out: " + html.escape("; ".join(problems)) + ".")
        if parts:
            self._say(" ".join(parts))

    def _restore_settings(self, state: Mapping[str, Any], problems: list[str]) -> None:
        if not isinstance(state, Mapping) or state.get("version") != STATE_VERSION:
            problems.append("a state from another version")
            return
        model = state.get("model")
        if isinstance(model, str):
            if model in self._infos:
                self.model_combo.setCurrentIndex(self.model_combo.findData(model))
                self._model_changed()
            else:
                problems.append(f"model {model} (not installed any more)")
                return
        digit = state.get("digit")
        if digit is None or (isinstance(digit, int) and self.digit_combo.findData(digit) >= 0):
            self.digit_combo.setCurrentIndex(max(0, self.digit_combo.findData(digit)))
        speaker = state.get("speaker")
        if speaker is None or isinstance(speaker, str):
            i = self.speaker_combo.findData(speaker)
            self.speaker_combo.setCurrentIndex(max(0, i))
        for spin, key in ((self.seconds_spin, "seconds"), (self.temperature_spin, "temperature"),
                          (self.frame_temp_spin, "frame_temperature")):
            value = state.get(key)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                spin.setValue(float(value))
        batch = state.get("variations")
        if isinstance(batch, int) and not isinstance(batch, bool):
            self.batch_spin.setValue(batch)
        seed = state.get("seed")
        if isinstance(seed, int) and not isinstance(seed, bool) and 0 <= seed < 2**63:
            self.set_seed(seed, fixed=not state.get("new_seed", True))


def _set_spin(spin, value: float) -> None:
    """Set a temperature spin box, widening its range for a value the CLI allowed (up to 10)."""
    if value > spin.maximum():
        spin.setMaximum(value)
    spin.setValue(value)
