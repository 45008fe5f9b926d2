"""A loaded audio model: the four ONNX graphs of a WaveNet plus what its card says.

The card (written by `engines.training.export_wavenet`) gives the architecture (dilations,
receptive field, channel counts), the sample rate, the speakers' names and the "none" ids
of the two conditions. This module turns a user's digit / speaker into the graphs' ids
(refusing bad ones with the valid choices) and wraps the raw graph calls:

- `logits(audio, digit_ids, speaker_ids)`: the full network (scoring, naive sampling);
- `layer_inputs(...)`: every layer's input over a context (priming the step queues);
- `cond(...)`: each layer's constant pre-activation for a run;
- the step graph (Fast WaveNet, up to `step_block` samples per call) is driven by
  `engines.audio.generate.CachedStepper`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from engines.audio.mel import MelSpec
from engines.errors import InputError, ModelLoadError
from engines.registry import ModelInfo
from engines.runtime import ModelSession, open_session

ROLES = ("model", "prime", "cond", "step")


@dataclass
class AudioModel:
    info: ModelInfo
    sample_rate: int
    levels: int
    speakers: list[str]
    n_digits: int
    none_digit: int
    none_speaker: int
    dilations: list[int]
    residual_channels: int
    gate_channels: int
    step_block: int  # samples per step.onnx call at most; layers with dilation >= it are "big"
    full: ModelSession
    prime: ModelSession
    cond_session: ModelSession
    step_session: ModelSession
    decoding_defaults: dict[str, Any] = field(default_factory=dict)
    mel: MelSpec | None = None  # a vocoder's frame definition (local conditioning); None: global only

    @property
    def local(self) -> bool:
        """A vocoder: every sample is conditioned on its log-mel frame."""
        return self.mel is not None

    @property
    def id(self) -> str:
        return self.info.id

    @property
    def n_layers(self) -> int:
        return len(self.dilations)

    @property
    def receptive_field(self) -> int:
        """Samples one output sees: the sample before it and sum(dilations) more."""
        return sum(self.dilations) + 1

    @property
    def max_dilation(self) -> int:
        return max(self.dilations)

    @property
    def big_layers(self) -> list[int]:
        """Layers whose past taps of a whole step call come from the host's buffers."""
        return [l for l, d in enumerate(self.dilations) if d >= self.step_block]

    @property
    def small_layers(self) -> list[int]:
        """Layers whose past taps come from the step graph's own ring (dilation < step_block)."""
        return [l for l, d in enumerate(self.dilations) if d < self.step_block]

    # --- user values -> graph ids ---------------------------------------------------------
    def digit_value(self, digit: int | None) -> int:
        if digit is None:
            return self.none_digit
        if isinstance(digit, bool) or not isinstance(digit, (int, np.integer)):
            raise InputError(f"digit {digit!r} is not a whole number: choose 0-{self.n_digits - 1}, or leave it out")
        if not 0 <= int(digit) < self.n_digits:
            raise InputError(f"digit {digit} is out of range: model {self.id!r} knows digits 0-{self.n_digits - 1} "
                             "(leave --digit out to generate without one)")
        return int(digit)

    def speaker_value(self, name: str | None) -> int:
        if name is None:
            return self.none_speaker
        wanted = str(name).strip().lower()
        for i, s in enumerate(self.speakers):
            if s.lower() == wanted:
                return i
        raise InputError(f"unknown speaker {name!r}: model {self.id!r} knows {', '.join(self.speakers)} "
                         "(leave --speaker out to generate without one)")

    def ids(self, digit: int | None, speaker: str | None, batch: int) -> tuple[np.ndarray, np.ndarray]:
        return (np.full((batch,), self.digit_value(digit), dtype=np.int64),
                np.full((batch,), self.speaker_value(speaker), dtype=np.int64))

    # --- raw graph calls -------------------------------------------------------------------
    def _feeds(self, audio, digit_ids, speaker_ids, frames, frame_index) -> dict[str, np.ndarray]:
        feeds = {"audio": np.ascontiguousarray(audio, dtype=np.int64),
                 "digit": np.ascontiguousarray(digit_ids, dtype=np.int64),
                 "speaker": np.ascontiguousarray(speaker_ids, dtype=np.int64)}
        if self.local:
            if frames is None or frame_index is None:
                raise ValueError(f"{self.id} is a vocoder: it needs frames and frame_index")
            feeds["frames"] = np.ascontiguousarray(frames, dtype=np.float32)
            feeds["frame_index"] = np.ascontiguousarray(frame_index, dtype=np.int64)
        return feeds

    def logits(self, audio: np.ndarray, digit_ids: np.ndarray, speaker_ids: np.ndarray,
               frames: np.ndarray | None = None, frame_index: np.ndarray | None = None) -> np.ndarray:
        """audio (B, T) classes -> (B, T, levels) float32; output t is the distribution after audio[:, t].

        A vocoder also takes frames (B, n_mels, F) (silence frame first) and frame_index (B, T),
        the frame of the sample each output predicts (`engines.audio.mel.frame_of_sample`)."""
        return self.full.run(self._feeds(audio, digit_ids, speaker_ids, frames, frame_index), ["logits"])[0]

    def layer_inputs(self, audio: np.ndarray, digit_ids: np.ndarray, speaker_ids: np.ndarray,
                     frames: np.ndarray | None = None, frame_index: np.ndarray | None = None) -> np.ndarray:
        """audio (B, T) classes -> (L, B, T, R) float32: the input of every layer at every time."""
        return self.prime.run(self._feeds(audio, digit_ids, speaker_ids, frames, frame_index), ["layer_inputs"])[0]

    def cond(self, digit_ids: np.ndarray, speaker_ids: np.ndarray, frames: np.ndarray | None = None) -> np.ndarray:
        """(B,) ids -> (2, L, B, G) float32: each layer's constant pre-activation for a run.

        A vocoder: frames (B, n_mels, F) -> (F, 2, L, B, G), the pre-activation of every frame."""
        if self.local:
            return self.cond_session.run({"frames": np.ascontiguousarray(frames, dtype=np.float32),
                                          "speaker": np.ascontiguousarray(speaker_ids, dtype=np.int64)}, ["cond"])[0]
        return self.cond_session.run({"digit": np.ascontiguousarray(digit_ids, dtype=np.int64),
                                      "speaker": np.ascontiguousarray(speaker_ids, dtype=np.int64)}, ["cond"])[0]


def _int_list(arch: dict, key: str, card_id: Any) -> list[int]:
    try:
        values = [int(v) for v in arch[key]]
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelLoadError(f"card of {card_id!r}: architecture lacks a list of whole numbers {key!r}") from exc
    if not values or any(v < 1 for v in values):
        raise ModelLoadError(f"card of {card_id!r}: architecture {key!r} must list positive whole numbers")
    return values


def _int(arch: dict, key: str, card_id: Any) -> int:
    try:
        return int(arch[key])
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelLoadError(f"card of {card_id!r}: architecture lacks a whole number {key!r}") from exc


def load_audio_model(info: ModelInfo, threads: int | None = 1) -> AudioModel:
    """Open the graphs named in the card; `threads` is for the full graph (the others use 1)."""
    card = info.card
    arch = card.get("architecture") or {}
    speakers = arch.get("speakers")
    if not isinstance(speakers, list) or not all(isinstance(s, str) for s in speakers):
        raise ModelLoadError(f"card of {info.id!r}: architecture lacks the list of speaker names 'speakers'")
    dilations = _int_list(arch, "dilations", info.id)
    rf = arch.get("receptive_field")
    if rf is not None and int(rf) != sum(dilations) + 1:
        raise ModelLoadError(f"card of {info.id!r}: receptive_field {rf} does not match the dilations "
                             f"(sum + 1 = {sum(dilations) + 1})")
    io = card.get("io") or {}

    def session(role: str, n_threads: int | None) -> ModelSession:
        spec = io.get(role, {})
        return open_session(info.file(role), expect_inputs=spec.get("inputs"), expect_outputs=spec.get("outputs"),
                            intra_op_threads=n_threads)

    n_digits = _int(arch, "n_digits", info.id)
    mel = None
    if int(arch.get("n_mels", 0) or 0) > 0:
        mel = MelSpec.from_dict(card.get("mel"), f"card of {info.id!r}")
        if mel.n_mels != int(arch["n_mels"]) or mel.hop != int(arch.get("hop", mel.hop)):
            raise ModelLoadError(f"card of {info.id!r}: the mel settings do not match the vocoder's architecture")
    block = _int(arch, "step_block", info.id)
    if not 2 <= block <= max(dilations):
        raise ModelLoadError(f"card of {info.id!r}: step_block {block} must be in 2..{max(dilations)} (the largest dilation)")
    return AudioModel(
        info=info, sample_rate=_int(arch, "sample_rate", info.id), levels=_int(arch, "levels", info.id),
        speakers=list(speakers), n_digits=n_digits,
        none_digit=int(arch.get("none_digit", n_digits)), none_speaker=int(arch.get("none_speaker", len(speakers))),
        dilations=dilations, residual_channels=_int(arch, "residual_channels", info.id),
        gate_channels=_int(arch, "gate_channels", info.id), step_block=block,
        full=session("model", threads), prime=session("prime", threads), cond_session=session("cond", 1),
        step_session=session("step", 1), decoding_defaults=dict(card.get("decoding_defaults", {}) or {}), mel=mel,
    )
