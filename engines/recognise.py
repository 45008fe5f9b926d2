"""The recognisers ("judges"): classifier models that say what a sample IS.

A classifier model folder (``"kind": "classifier"``, written by
``engines.training.export_recogniser``) holds one graph and a card saying what it reads
(``"modality": "audio" | "image"``), its labels and, for audio, the log-mel spec. They are
measuring instruments: ``chainrule judge`` and the studio's "reads as" labels use them to say
which digit (and which speaker) a generated or recorded sample is.

audio  ``mel`` (B, n_mels, T) raw log-mel frames -> ``digit_logits`` (B, 10), ``speaker_logits`` (B, S).
       A recording is brought to the card's rate (soxr), put through the mu-law round trip the
       training clips went through (what WaveNet's output is made of), then turned into frames.
image  ``image`` (B, 1, 28, 28) float in [0, 1] -> ``digit_logits`` (B, 10). Model values of any
       number of levels (2 for binary models, 256 for grey) are scaled by 1 / (levels - 1).

Judges are cached (keyed by the graph's path and mtime and the card), so the studio does not
open a session per sample. No torch here: the studio and the CLI run where it is absent.
"""

from __future__ import annotations

import json
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np

from engines.errors import InputError, ModelLoadError, ModelNotFoundError
from engines.registry import ModelInfo

KIND = "classifier"
MODALITIES = ("audio", "image")
PREFERRED = {"audio": "fsdd-recogniser", "image": "mnist-recogniser"}  # the shipped ones, chosen first
DIGIT_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
MAX_FRAMES = 60_000  # 10 minutes of 10 ms frames: what `read_audio` lets in; more is a mistake
MAX_IMAGES = 10_000  # per call; the studio judges a run's samples (tens), the CLI one file at a time


@dataclass
class Verdict:
    """What a recogniser reads in one sample. `probs` are the softmax of the logits (sum 1)."""

    label: int  # the most probable digit
    name: str  # its name ("seven")
    probability: float  # probs[label]
    probs: np.ndarray  # (n_digits,) float64
    speaker: str | None = None  # audio only: the most probable speaker
    speaker_probability: float | None = None
    speaker_probs: np.ndarray | None = None  # (n_speakers,)
    names: tuple[str, ...] = field(default=(), repr=False)  # every digit's name, for `top`

    def top(self, k: int = 3) -> list[tuple[int, str, float]]:
        """The k most probable digits, most probable first: (label, name, probability)."""
        order = np.argsort(-self.probs, kind="stable")[:k]
        return [(int(i), self.names[int(i)] if int(i) < len(self.names) else str(int(i)), float(self.probs[i]))
                for i in order]

    def text(self) -> str:
        """'seven (93%)', or 'seven (93%), george (71%)' with a speaker."""
        out = f"{self.name} ({_percent(self.probability)})"
        if self.speaker is not None:
            out += f", {self.speaker} ({_percent(self.speaker_probability)})"
        return out

    def short(self) -> str:
        """'7 (93%)': the label as a number, for small spaces (a grid cell)."""
        return f"{self.label} ({_percent(self.probability)})"


def _percent(p: float | None) -> str:
    return "?" if p is None else f"{100.0 * float(p):.0f}%"


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64 (logits of any scale: the max is subtracted first)."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def _verdict(digit_logits: np.ndarray, names: Sequence[str], speaker_logits: np.ndarray | None = None,
             speakers: Sequence[str] = ()) -> Verdict:
    p = softmax(digit_logits)
    i = int(np.argmax(p))
    v = Verdict(label=i, name=names[i] if i < len(names) else str(i), probability=float(p[i]), probs=p,
                names=tuple(names))
    if speaker_logits is not None:
        q = softmax(speaker_logits)
        j = int(np.argmax(q))
        v.speaker = speakers[j] if j < len(speakers) else str(j)
        v.speaker_probability, v.speaker_probs = float(q[j]), q
    return v


# --- the card ----------------------------------------------------------------------------------

def modality_of(info: ModelInfo) -> str | None:
    """'audio' or 'image' for a classifier card that says so, else None."""
    m = info.card.get("modality") if isinstance(info.card, dict) else None
    return m if info.kind == KIND and m in MODALITIES else None


def _labels(info: ModelInfo, key: str, default: Sequence[str] = ()) -> tuple[str, ...]:
    labels = (info.card.get("labels") or {}) if isinstance(info.card.get("labels"), dict) else {}
    names = labels.get(key, list(default))
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise ModelLoadError(f"{info.path / 'card.json'}: labels.{key} must be a non-empty list of names")
    return tuple(names)


def _classes(session, output: str, names: Sequence[str], info: ModelInfo, key: str) -> None:
    """The graph's class axis (when static) must match the card's label list."""
    shape = next(o.shape for o in session.session.get_outputs() if o.name == output)
    n = shape[-1] if shape else None
    if isinstance(n, int) and n != len(names):
        raise ModelLoadError(f"{info.path / 'card.json'}: labels.{key} names {len(names)} classes but "
                             f"{output} has {n}")


class _Judge:
    INPUTS: tuple[str, ...] = ()
    OUTPUTS: tuple[str, ...] = ()

    def __init__(self, info: ModelInfo) -> None:
        from engines.runtime import open_session

        self.info = info
        # The graph's names are fixed for each modality (the exporter writes them): a graph
        # that differs is refused here, naming the file, rather than failing at the first call.
        self.session = open_session(info.file("model"), expect_inputs=self.INPUTS, expect_outputs=self.OUTPUTS,
                                    intra_op_threads=1)
        self.digit_names = _labels(info, "digits", DIGIT_NAMES)
        _classes(self.session, "digit_logits", self.digit_names, info, "digits")

    @property
    def id(self) -> str:
        return self.info.id


class AudioJudge(_Judge):
    """Reads spoken digits (and speakers) in recordings (see the module doc)."""

    modality = "audio"
    INPUTS, OUTPUTS = ("mel",), ("digit_logits", "speaker_logits")

    def __init__(self, info: ModelInfo) -> None:
        from engines.audio.mel import MelSpec

        super().__init__(info)
        self.spec = MelSpec.from_dict(info.card.get("mel"), f"{info.path / 'card.json'}")
        self.speakers = _labels(info, "speakers")
        _classes(self.session, "speaker_logits", self.speakers, info, "speakers")

    @property
    def sample_rate(self) -> int:
        return self.spec.sample_rate

    def frames(self, samples: np.ndarray, sample_rate: int) -> np.ndarray:
        """Float samples (n,) in [-1, 1] at `sample_rate` -> (n_mels, T) log-mel frames as in training:
        resampled to the card's rate, mu-law round trip, log-mel."""
        from engines.audio import mulaw
        from engines.audio.mel import log_mel

        x = np.asarray(samples)
        if x.ndim != 1 or x.dtype.kind not in "fiu":
            raise InputError(f"audio to judge must be one channel of numbers (n,), not {x.dtype} {x.shape}")
        if x.size == 0:
            raise InputError("no audio to judge (0 samples)")
        x = x.astype(np.float32)
        if not np.isfinite(x).all():
            raise InputError("the audio to judge holds samples that are not numbers (NaN or infinite)")
        if int(sample_rate) <= 0:
            raise InputError(f"sample rate {sample_rate} is invalid: must be a positive number of Hz")
        if x.size / sample_rate > MAX_FRAMES * self.spec.hop / self.spec.sample_rate:
            raise InputError(f"{x.size / sample_rate:.0f} s of audio is too long to judge")
        if int(sample_rate) != self.spec.sample_rate:
            import soxr

            x = soxr.resample(x, int(sample_rate), self.spec.sample_rate, quality="HQ")
            if x.size == 0:
                raise InputError(f"the audio is too short to judge at {self.spec.sample_rate} Hz")
        x = mulaw.decode(mulaw.encode(x))  # clips to [-1, 1] too (the resampler can ring past it)
        return log_mel(x, self.spec)

    def judge(self, samples: np.ndarray, sample_rate: int) -> Verdict:
        """What is said in `samples` (n,) float in [-1, 1] at `sample_rate` Hz, and by whom."""
        return self.judge_frames(self.frames(samples, sample_rate))

    def judge_frames(self, mel: np.ndarray) -> Verdict:
        """What is said in raw log-mel frames (n_mels, T) of the card's spec."""
        m = np.asarray(mel, dtype=np.float32)
        if m.ndim != 2 or m.shape[0] != self.spec.n_mels or not 1 <= m.shape[1] <= MAX_FRAMES:
            raise InputError(f"log-mel frames to judge must be ({self.spec.n_mels}, T) with 1 <= T <= {MAX_FRAMES}, "
                             f"not {m.shape}")
        if not np.isfinite(m).all():
            raise InputError("the log-mel frames to judge hold values that are not numbers")
        digit, speaker = self.session.run({"mel": m[None]}, ["digit_logits", "speaker_logits"])
        return _verdict(digit[0], self.digit_names, speaker[0], self.speakers)


class ImageJudge(_Judge):
    """Reads digits in images (see the module doc)."""

    modality = "image"
    INPUTS, OUTPUTS = ("image",), ("digit_logits",)

    def __init__(self, info: ModelInfo) -> None:
        super().__init__(info)
        image = info.card.get("image") if isinstance(info.card.get("image"), dict) else {}
        try:
            self.height, self.width = int(image.get("height", 28)), int(image.get("width", 28))
        except (TypeError, ValueError):
            raise ModelLoadError(f"{info.path / 'card.json'}: image.height and image.width must be numbers") from None

    def reads(self, height: int, width: int, channels: int = 1) -> bool:
        """Whether images of this geometry can be judged (grey, the card's size)."""
        return (height, width, channels) == (self.height, self.width, 1)

    def judge(self, images: np.ndarray, levels: int = 256) -> list[Verdict]:
        """A verdict per image: `images` (N, H, W) or (N, 1, H, W) model values 0..levels-1
        (levels 2: binary 0/1 pixels; 256: grey 0..255), scaled to [0, 1]."""
        x = np.asarray(images)
        if x.ndim == 4 and x.shape[1] == 1:
            x = x[:, 0]
        if x.ndim != 3 or x.shape[1:] != (self.height, self.width):
            raise InputError(f"images to judge must be (N, {self.height}, {self.width}) or "
                             f"(N, 1, {self.height}, {self.width}) grey, not {np.asarray(images).shape}")
        if x.dtype.kind not in "iub":
            raise InputError(f"images to judge must hold integer model values, not {x.dtype}")
        if not 1 <= len(x) <= MAX_IMAGES:
            raise InputError(f"1 to {MAX_IMAGES} images can be judged at once, not {len(x)}")
        if not 2 <= int(levels) <= 65536:
            raise InputError(f"levels {levels} is invalid: 2 (binary) to 65536")
        if x.min() < 0 or x.max() > levels - 1:
            raise InputError(f"image values must be 0..{levels - 1} for {levels} levels, "
                             f"found {int(x.min())}..{int(x.max())}")
        floats = (x.astype(np.float32) / np.float32(levels - 1))[:, None]  # (N, 1, H, W) in [0, 1]
        (logits,) = self.session.run({"image": np.ascontiguousarray(floats)}, ["digit_logits"])
        return [_verdict(row, self.digit_names) for row in logits]


# --- finding and loading -----------------------------------------------------------------------

def load_recogniser(info: ModelInfo) -> AudioJudge | ImageJudge:
    """The judge of a classifier model (cached: the same folder, graph and card give the same judge)."""
    if info.kind != KIND:
        raise ModelNotFoundError(f"model {info.id!r} is a {info.kind} model, not a classifier")
    if not info.usable:
        raise ModelLoadError(f"model {info.id!r} cannot be used: {info.problem}")
    modality = modality_of(info)
    if modality is None:
        raise ModelLoadError(f"{info.path / 'card.json'}: a classifier's card must say \"modality\": "
                             f"{' or '.join(repr(m) for m in MODALITIES)}")
    path = info.file("model")
    try:
        stamp = path.stat().st_mtime_ns
    except OSError:
        stamp = 0  # a missing file fails properly when opened
    # A fresh listing of an unchanged model (a new ModelInfo) must find the same judge: key by
    # what defines it, not by the ModelInfo object.
    key = (info.id, str(info.path), stamp, json.dumps(info.card, sort_keys=True, default=str))
    with _CACHE_LOCK:  # held while loading: two threads asking at once open one session
        judge = _CACHE.get(key)
        if judge is None:
            judge = (AudioJudge if modality == "audio" else ImageJudge)(info)
            _CACHE[key] = judge
            while len(_CACHE) > CACHE_SIZE:
                _CACHE.popitem(last=False)
        else:
            _CACHE.move_to_end(key)
        return judge


CACHE_SIZE = 4
_CACHE: "OrderedDict[tuple, AudioJudge | ImageJudge]" = OrderedDict()
_CACHE_LOCK = threading.Lock()


def forget_recognisers() -> None:
    """Drop the cached judges (their sessions close when no one holds them)."""
    with _CACHE_LOCK:
        _CACHE.clear()


def find_recogniser(models: Iterable[ModelInfo], modality: str) -> ModelInfo | None:
    """The usable classifier for `modality` among `models`: the shipped one's id first, else the first by id."""
    found = sorted((m for m in models if m.usable and modality_of(m) == modality), key=lambda m: m.id)
    preferred = [m for m in found if m.id == PREFERRED.get(modality)]
    return (preferred or found or [None])[0]


def default_judge(modality: str, extra_dirs: Sequence[str | os.PathLike] = ()) -> AudioJudge | ImageJudge | None:
    """The installed recogniser for "audio" or "image" (cached), or None when there is none."""
    from engines.registry import list_models

    if modality not in MODALITIES:
        raise InputError(f"modality {modality!r}: audio or image")
    info = find_recogniser(list_models(extra_dirs, include_unusable=False), modality)
    return None if info is None else load_recogniser(info)


def get_recogniser(model_id: str, modality: str,
                   extra_dirs: Sequence[str | os.PathLike] = ()) -> AudioJudge | ImageJudge:
    """The judge of the installed classifier `model_id`, which must read `modality`."""
    from engines.registry import get_model, list_models

    info = get_model(model_id, extra_dirs)
    found = modality_of(info)
    if found != modality:
        what = (f"a {info.kind} model" if info.kind != KIND else
                f"a classifier of {found}" if found else "a classifier whose card names no modality")
        choices = [m.id for m in list_models(extra_dirs, include_unusable=False) if modality_of(m) == modality]
        raise ModelNotFoundError(f"model {model_id!r} is {what}, not a classifier of {modality}; "
                                 + (f"installed {modality} classifiers: {', '.join(choices)}" if choices
                                    else f"no {modality} classifier is installed"))
    return load_recogniser(info)


# --- files (`chainrule judge`) -------------------------------------------------------------------

def judge_file(judge: AudioJudge | ImageJudge, path: str | os.PathLike) -> tuple[Verdict, list[str]]:
    """(what `judge` reads in the recording or image at `path`, the notes on how the file was
    converted). Audio: any file `read_audio` takes, brought to the card's rate. Image: a grey image
    of the recogniser's size (28x28); colour is turned grey (noted), another size is refused."""
    if isinstance(judge, AudioJudge):
        from engines.audio.wav import read_audio

        loaded = read_audio(path, sample_rate=judge.sample_rate)
        return judge.judge(loaded.samples, loaded.sample_rate), list(loaded.notes)
    from engines.image.png import read_image

    # Decoded at the recogniser's size; `read_image` checks the pixel count before decoding.
    loaded = read_image(path, channels=1, height=judge.height, width=judge.width, levels=256)
    if tuple(loaded.original_size) != (judge.width, judge.height):
        w, h = loaded.original_size
        raise InputError(f"image {path} is {w}x{h}; the recogniser reads {judge.width}x{judge.height} grey digits "
                         "(white on black, as the image models draw them): resize it first")
    return judge.judge(loaded.pixels[None], levels=256)[0], [n.removeprefix("image: ") for n in loaded.notes]


def verdict_record(file: str, verdict: Verdict, top: int = 3) -> dict:
    """The JSON object `chainrule judge --json` prints for one file."""
    out = {"file": file, "digit": verdict.label, "digit_name": verdict.name,
           "digit_probability": verdict.probability,
           "top": [{"digit": i, "name": n, "probability": p} for i, n, p in verdict.top(top)]}
    if verdict.speaker is not None:
        out["speaker"] = verdict.speaker
        out["speaker_probability"] = float(verdict.speaker_probability)
    return out
