"""One audio run as a value: `AudioRequest`, and `run`, the one function that makes it.

`chainrule generate audio` parses its flags into an AudioRequest, the Audio tab builds one
from its widgets, `chainrule generate --from x.wav` reads one back from an exported file, and
all three run it with `run(request, info)`, which yields events:

* `Started` - the resolved request (seed drawn), the model's rate, the prompt (float32 at the
  model's rate) and the notes on converting it;
* speech models only: `FramesStarted` (the prompt's frames, or all of a re-spoken recording's)
  and one `FrameWritten` per frame the prior writes, for each sample in turn;
* `Chunk` - new samples of some rows (WaveNet: every row at once, one batch; speech: one
  utterance after another) with ln p of each sample (nats, under the model at temperature 1);
* `Finished` - every row's samples and log-likelihoods, and whether the run was stopped.

The seed-per-sample rule lives here: sample i of a request with seed s is the sample that
`for_sample(i)` (count 1, seed s + i) makes alone. A WaveNet draws row i of its batch from
``default_rng(s + i)`` (engines.audio.generate), a speech model speaks utterance i with seed
s + i, so an exported file's request regenerates exactly that file, bit for bit.

Recordings (a prompt to continue, a recording to re-speak) are `InputRef`s: by sha256, small
ones embedded; a larger one by path, checked when read.
"""

from __future__ import annotations

import dataclasses
import math
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterator, Mapping

import numpy as np

from engines import limits
from engines.decoding.config import DecodingConfig
from engines.errors import ChainruleError, DecodingError, InputError
from engines.requests import InputRef, envelope, open_request

MAX_COUNT = limits.MAX_AUDIO_BATCH  # samples per request (a WaveNet makes them as one batch)
MAX_SECONDS = limits.MAX_GENERATE_SECONDS
MAX_RECORDING_BYTES = 256 * 1024 * 1024  # a recording file (120 s of 384 kHz stereo float is ~370 MB raw; we read less)
DEFAULT_SECONDS = 1.0  # a WaveNet's length when none is asked for
DEFAULT_FRAME_TEMPERATURE = 0.6
MAX_TEMPERATURE = 10.0
SEED_LIMIT = 2**63
_FIELDS = ("model", "decoding", "count", "digit", "speaker", "seconds", "frame_temperature", "prompt", "resynth")


def audio_temperature(config: DecodingConfig) -> float:
    """The one decoding value audio uses; greedy means temperature 0. DecodingError (from the one
    table of what each modality supports, engines.decoding.support) for any other sampler."""
    from engines.decoding.support import check_supported

    check_supported(config, "audio")
    return 0.0 if config.strategy == "greedy" else float(config.temperature)


def card_frame_temperature(card: Mapping[str, Any] | None) -> float:
    """A speech model card's default frame temperature (0.6 when it does not say, or says nonsense)."""
    value = ((card or {}).get("decoding_defaults") or {}).get("frame_temperature", DEFAULT_FRAME_TEMPERATURE) \
        if isinstance(card, Mapping) else DEFAULT_FRAME_TEMPERATURE
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value <= MAX_TEMPERATURE
    return float(value) if ok else DEFAULT_FRAME_TEMPERATURE


def card_decoding_defaults(card: Mapping[str, Any] | None) -> dict[str, Any]:
    """The card's decoding defaults as a DecodingConfig reads them (a speech card's frame
    temperature is the prior's, not a decoding setting)."""
    defaults = dict(((card or {}).get("decoding_defaults") or {}) if isinstance(card, Mapping) else {})
    defaults.pop("frame_temperature", None)
    return defaults


def _is_speech(info) -> bool:
    from engines.audio.speech import is_speech

    return is_speech(info)


@dataclass(frozen=True)
class AudioRequest:
    """Everything one audio run needs. Frozen and validated on creation (no model needed)."""

    kind: ClassVar[str] = "audio"
    model: str
    decoding: DecodingConfig = field(default_factory=DecodingConfig)
    count: int = 1  # samples: a WaveNet's batch rows, or a speech model's utterances one after another
    digit: int | None = None
    speaker: str | None = None
    seconds: float | None = None  # WaveNet: new audio per sample (None: 1 s); a speech model's prior decides
    frame_temperature: float | None = None  # speech: the prior's temperature (None: the card's; none for resynth)
    prompt: InputRef | None = None  # a recording to continue
    resynth: InputRef | None = None  # speech: a recording to re-speak from its own frames

    def __post_init__(self) -> None:
        if not isinstance(self.model, str) or not self.model.strip():
            raise InputError("model is invalid: expected a model id")
        if not isinstance(self.decoding, DecodingConfig):
            raise InputError("decoding is invalid: expected a decoding config")
        if isinstance(self.count, bool) or not isinstance(self.count, int) or not 1 <= self.count <= MAX_COUNT:
            raise InputError(f"count {self.count!r} is invalid: must be a whole number in 1..{MAX_COUNT}")
        if self.digit is not None and (isinstance(self.digit, bool) or not isinstance(self.digit, int)
                                       or self.digit < 0):
            raise InputError(f"digit {self.digit!r} is invalid: must be a whole number >= 0 (or none)")
        if self.speaker is not None and (not isinstance(self.speaker, str) or not self.speaker):
            raise InputError(f"speaker {self.speaker!r} is invalid: expected a speaker's name (or none)")
        if self.seconds is not None:
            s = self.seconds
            if isinstance(s, bool) or not isinstance(s, (int, float)) or not math.isfinite(s) or s <= 0:
                raise InputError(f"seconds = {s!r} is invalid: must be a number > 0")
            if s > MAX_SECONDS:
                raise InputError(f"seconds = {s:g} is too long: at most {MAX_SECONDS:g} s per generation")
            object.__setattr__(self, "seconds", float(s))
        if self.frame_temperature is not None:
            ft = self.frame_temperature
            if isinstance(ft, bool) or not isinstance(ft, (int, float)) or not math.isfinite(ft) or ft < 0 \
                    or ft > MAX_TEMPERATURE:
                raise InputError(f"frame temperature {ft!r} is invalid: must be a number in 0..{MAX_TEMPERATURE:g} "
                                 "(0 means each frame's most likely value)")
            object.__setattr__(self, "frame_temperature", float(ft))
        for name in ("prompt", "resynth"):
            if getattr(self, name) is not None and not isinstance(getattr(self, name), InputRef):
                raise InputError(f"{name} is invalid: expected a recording (by sha256)")
        if self.prompt is not None and self.resynth is not None:
            raise InputError("a recording to re-speak and a prompt to continue do not go together: "
                             "re-speak a recording, or continue it")
        if self.resynth is not None:
            if self.frame_temperature is not None:
                raise InputError("frame temperature does not apply to re-speaking: the recording's own frames "
                                 "are used, none are sampled")
            if self.digit is not None:
                raise InputError("digit does not apply to re-speaking: the recording's own frames say what is spoken")
            if self.seconds is not None:
                raise InputError("seconds does not apply to re-speaking: the recording's length is kept")
        temperature = audio_temperature(self.decoding)
        if temperature > MAX_TEMPERATURE:
            raise DecodingError(f"temperature {temperature:g} is too high for audio: at most {MAX_TEMPERATURE:g}")
        seed = self.decoding.seed
        if seed is not None and seed + self.count > SEED_LIMIT:
            raise InputError(f"seed {seed} is too large for {self.count} samples (sample i uses seed + i, "
                             f"below 2**63)")

    # --- derived values ----------------------------------------------------------------
    @property
    def temperature(self) -> float:
        """The sampling temperature (0: greedy) of the audio samples."""
        return audio_temperature(self.decoding)

    @property
    def seed(self) -> int | None:
        return self.decoding.seed

    @property
    def mode(self) -> str:
        """"generation", "continuation" (a prompt) or "resynthesis" (a recording re-spoken)."""
        return "resynthesis" if self.resynth is not None else ("continuation" if self.prompt else "generation")

    def replace(self, **changes: Any) -> "AudioRequest":
        return dataclasses.replace(self, **changes)

    def resolved(self) -> "AudioRequest":
        """A copy with the seed drawn (unchanged when it has one)."""
        from engines.generation import resolve_seed

        if self.decoding.seed is not None:
            return self
        return self.replace(decoding=self.decoding.replace(seed=resolve_seed(self.decoding)))

    def for_sample(self, i: int) -> "AudioRequest":
        """The request that makes sample i (0-based) of this one alone: count 1, seed + i."""
        if not 0 <= i < self.count:
            raise IndexError(f"sample {i} of a request for {self.count}")
        if self.decoding.seed is None:
            raise ValueError("resolve the seed first (request.resolved())")
        return self.replace(count=1, decoding=self.decoding.replace(seed=self.decoding.seed + i))

    # --- validation against the model ----------------------------------------------------
    def check(self, info, model=None) -> None:
        """Refuse what this model cannot do (InputError naming the setting). `model` (the loaded
        AudioModel or SpeechModel) checks digit and speaker against it too."""
        if info.id != self.model:
            raise InputError(f"this request is for model {self.model!r}, not {info.id!r}")
        if getattr(info, "kind", "audio") != "audio":
            raise InputError(f"model {info.id!r} is a {info.kind} model, not an audio model")
        speech = _is_speech(info)
        if speech:
            if self.seconds is not None:
                raise InputError(f"seconds does not apply to {info.id}: its prior decides where the utterance ends")
        else:
            for name, value, words in (("frame_temperature", self.frame_temperature, "frame temperature"),
                                       ("resynth", self.resynth, "re-speaking a recording")):
                if value is not None:
                    raise InputError(f"{words} does not apply to {info.id}, a WaveNet: it is for speech models "
                                     "(a mel prior + a vocoder, e.g. fsdd-speech)")
        if model is not None:
            if speech:
                model.digit_id(self.digit)
                model.speaker_id(self.speaker)
            else:
                model.digit_value(self.digit)
                model.speaker_value(self.speaker)

    # --- conversions ---------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        return envelope(self.kind, {
            "model": self.model, "decoding": self.decoding.to_dict(), "count": self.count, "digit": self.digit,
            "speaker": self.speaker, "seconds": self.seconds, "frame_temperature": self.frame_temperature,
            "prompt": None if self.prompt is None else self.prompt.to_json(),
            "resynth": None if self.resynth is None else self.resynth.to_json(),
        })

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "AudioRequest":
        body, config = open_request(data, cls.kind, _FIELDS)
        refs = {name: None if body.get(name) is None else InputRef.from_json(body[name], name)
                for name in ("prompt", "resynth")}
        return cls(model=body["model"], decoding=config, count=body.get("count", 1), digit=body.get("digit"),
                   speaker=body.get("speaker"), seconds=body.get("seconds"),
                   frame_temperature=body.get("frame_temperature"), **refs)

    def to_command(self, info=None) -> list[str]:
        """The `chainrule` argv (without the program name and --out) that runs this request."""
        from engines.decoding.flags import decoding_arguments, model_arguments

        args = ["generate", "audio", *(model_arguments(info) if info is not None else ["--model", self.model])]
        if self.digit is not None:
            args += ["--digit", str(self.digit)]
        if self.speaker is not None:
            args += ["--speaker", self.speaker]
        if self.seconds is not None:
            args += ["--seconds", repr(self.seconds)]
        if self.frame_temperature is not None:
            args += ["--frame-temperature", repr(self.frame_temperature)]
        for flag, ref in (("--prompt", self.prompt), ("--resynth", self.resynth)):
            if ref is not None:
                args += [flag, ref.path or f"<recording sha256 {ref.sha256[:12]}>"]
        card = info.card if info is not None else None
        args += decoding_arguments(self.decoding, card_decoding_defaults(card) if card is not None else None)
        if self.decoding.seed is not None:
            args += ["--seed", str(self.decoding.seed)]
        if self.count != 1:
            args += ["--count", str(self.count)]
        return args


REQUEST_TYPE = AudioRequest


# --- recordings -------------------------------------------------------------------------------

def recording_ref(path: str, what: str = "recording") -> InputRef:
    """An InputRef to a recording file (embedded when small), refusing an oversized file first."""
    limits.check_regular_file(path, f"{what} file", MAX_RECORDING_BYTES)
    return InputRef.from_file(path, MAX_RECORDING_BYTES)


def read_recording(ref: InputRef, sample_rate: int, what: str):
    """The recording a ref names as `engines.audio.wav.LoadedAudio` at `sample_rate` (hash checked).

    InputError naming `what`, the file and its sha256 when it is missing or has changed."""
    from engines.audio.wav import read_audio

    if ref.data is None and ref.path is not None:
        ref.read(MAX_RECORDING_BYTES, what)  # exists and is the same content
        return read_audio(ref.path, sample_rate=sample_rate)
    data = ref.read(MAX_RECORDING_BYTES, what)
    suffix = Path(ref.path).suffix if ref.path else ".wav"
    with tempfile.TemporaryDirectory(prefix="chainrule-rec-") as folder:
        tmp = Path(folder) / f"recording{suffix if suffix.lower() in ('.wav', '.flac', '.ogg', '.aiff', '.aif') else '.wav'}"
        tmp.write_bytes(data)
        loaded = read_audio(tmp, sample_rate=sample_rate)
    return loaded


# --- events -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Started:
    request: "AudioRequest"  # resolved: its seed is the run's
    speech: bool
    sample_rate: int
    receptive_field: int
    n_samples: int | None  # new samples per row (WaveNet); None for speech: each utterance's prior decides
    prompt: np.ndarray | None  # (P,) float32 at the model's rate: the recording continued
    resynth: np.ndarray | None  # (n,) float32: the recording re-spoken
    notes: tuple[str, ...]  # how a recording was converted


@dataclass(frozen=True)
class FramesStarted:
    """Speech: row `row` starts; its known frames (n_mels, P): a prompt's, or all of a re-spoken recording's."""
    row: int
    frames: np.ndarray
    floor: float  # the log-mel value of silence
    resynthesis: bool


@dataclass(frozen=True)
class FrameWritten:
    row: int
    index: int
    frame: np.ndarray  # (n_mels,) raw log-mel
    logprob: float  # ln p(frame | before, digit, speaker) + ln p(its stop bit), nats


@dataclass(frozen=True)
class Chunk:
    """New samples of rows row .. row + k - 1 (WaveNet: all rows; speech: one)."""
    row: int
    start: int  # index of the first new sample (after any prompt)
    samples: np.ndarray  # (k, n) float32 in [-1, 1]
    logprobs: np.ndarray  # (k, n) float32: ln p of each sample under the model at temperature 1, nats
    total: int  # new samples these rows will have when complete


@dataclass
class Finished:
    request: "AudioRequest"  # resolved
    samples: list[np.ndarray]  # per row: (n_i,) float32, the new audio (after any prompt)
    logprobs: list[np.ndarray]  # per row: (n_i,) float64 nats
    prompt: np.ndarray | None
    sample_rate: int
    notes: tuple[str, ...]
    stopped: bool
    wall_seconds: float
    frames: list[np.ndarray] | None = None  # speech, per row: (n_mels, F) raw log-mel (prompt's included)
    prior_logprobs: list[float | None] | None = None  # speech, per row: ln p(frames | digit, speaker) (None: resynth)
    n_prior_frames: list[int] | None = None  # speech, per row: frames the prior wrote (after the prompt's)

    def total_logprob(self, i: int) -> float:
        return float(np.sum(self.logprobs[i]))

    def audio(self, i: int, with_prompt: bool = False) -> np.ndarray:
        """Row i's sound: the new samples, after the prompt when `with_prompt`."""
        if with_prompt and self.prompt is not None:
            return np.concatenate([self.prompt, self.samples[i]]).astype(np.float32)
        return self.samples[i]


# --- the runner -------------------------------------------------------------------------------------

def load_model(info, threads: int | None = 1):
    """The AudioModel (WaveNet) or SpeechModel (prior + vocoder) that runs `info`'s requests."""
    if _is_speech(info):
        from engines.audio.speech import load_speech_model

        return load_speech_model(info, threads=threads)
    from engines.audio.model import load_audio_model

    return load_audio_model(info, threads=threads)


def run(request: AudioRequest, info, *, model=None, should_stop: Callable[[], bool] | None = None,
        chunk_samples: int | None = None) -> Iterator[Started | FramesStarted | FrameWritten | Chunk | Finished]:
    """Run `request` on `info`'s model (`model`: already loaded), yielding events (module doc).

    Settings, the model and the recordings are checked before the first event (InputError);
    `should_stop` is asked between chunks: when it says yes, `Finished` comes with what was
    made and `stopped` set. Closing the generator stops at once."""
    from engines.audio.generate import DEFAULT_CHUNK

    request = request.resolved()
    request.check(info)
    speech = _is_speech(info)
    if model is None:
        model = load_model(info)
    request.check(info, model)
    rate = int(model.sample_rate)
    notes: list[str] = []
    prompt = resynth = None
    if request.prompt is not None:
        loaded = read_recording(request.prompt, rate, "prompt recording")
        prompt, notes = loaded.samples, list(loaded.notes)
    if request.resynth is not None:
        loaded = read_recording(request.resynth, rate, "recording to re-speak")
        resynth, notes = loaded.samples, list(loaded.notes)
    chunk = int(chunk_samples or DEFAULT_CHUNK)
    stop = should_stop or (lambda: False)
    if speech:
        return _run_speech(request, info, model, prompt, resynth, tuple(notes), chunk, stop)
    return _run_wavenet(request, model, prompt, tuple(notes), chunk, stop)


def _run_wavenet(request, model, prompt, notes, chunk, stop):
    from engines.audio.generate import generate_audio_chunks

    seconds = DEFAULT_SECONDS if request.seconds is None else request.seconds
    chunks = generate_audio_chunks(model, seconds=seconds, temperature=request.temperature, seed=request.seed,
                                   digit=request.digit, speaker=request.speaker, batch=request.count,
                                   prompt=prompt, chunk_samples=chunk)  # checks the settings now
    n_total = int(round(seconds * model.sample_rate))
    return _wavenet_events(request, model, prompt, notes, stop, chunks, n_total)


def _wavenet_events(request, model, prompt, notes, stop, chunks, n_total):
    t0 = time.perf_counter()
    yield Started(request, False, int(model.sample_rate), int(model.receptive_field), n_total, prompt, None, notes)
    parts, lps = [], []
    stopped = False
    try:
        for c in chunks:
            parts.append(c.samples)
            lps.append(c.logprobs)
            yield Chunk(0, int(c.start), c.samples, c.logprobs, n_total)
            if stop() and c.start + c.samples.shape[1] < n_total:
                stopped = True
                break
    finally:
        chunks.close()
    samples = np.concatenate(parts, axis=1) if parts else np.zeros((request.count, 0), np.float32)
    logprobs = np.concatenate(lps, axis=1).astype(np.float64) if lps else np.zeros((request.count, 0))
    yield Finished(request, list(samples), list(logprobs), prompt, int(model.sample_rate), notes, stopped,
                   time.perf_counter() - t0)


def _run_speech(request, info, model, prompt, resynth, notes, chunk, stop):
    from engines.audio.speech import check_temperature

    ft = request.frame_temperature
    if ft is None and resynth is None:
        ft = card_frame_temperature(info.card)
    check_temperature(request.temperature, "temperature")
    return _speech_events(request, model, prompt, resynth, notes, chunk, stop, ft)


def _speech_events(request, model, prompt, resynth, notes, chunk, stop, ft):
    from engines.audio.speech import FrameEvent, SpeechStarted, resynthesize, speak

    t0 = time.perf_counter()
    rate = int(model.sample_rate)
    yield Started(request, True, rate, int(model.vocoder.receptive_field), None, prompt, resynth, notes)
    rows, lps, frames_per_row, priors, n_written = [], [], [], [], []
    stopped = False
    for i in range(request.count):
        seed = request.seed + i  # the seed-per-sample rule: utterance i is for_sample(i)'s
        if resynth is not None:
            frames, events = resynthesize(model, resynth, seed=seed, speaker=request.speaker,
                                          temperature=request.temperature, chunk_samples=chunk)
            yield FramesStarted(i, frames, float(model.prior.floor), True)
            known, n_new = [frames], len(resynth)
        else:
            events = speak(model, seed=seed, digit=request.digit, speaker=request.speaker, frame_temperature=ft,
                           temperature=request.temperature, prompt=prompt, chunk_samples=chunk)
            known, n_new = [], None
        prompt_len = 0 if prompt is None else len(prompt)
        parts, plps, written, prior = [], [], [], 0.0
        try:
            for ev in events:
                if isinstance(ev, SpeechStarted):
                    known = [ev.prompt_frames]
                    yield FramesStarted(i, ev.prompt_frames, float(model.prior.floor), False)
                elif isinstance(ev, FrameEvent):
                    lp = float(ev.frame.logprob + ev.frame.stop_logprob)
                    written.append(ev.frame.frame)
                    prior += lp
                    yield FrameWritten(i, int(ev.frame.index), ev.frame.frame, lp)
                    if stop():
                        stopped = True
                        break
                else:
                    if n_new is None:  # the prior has stopped: the audio's length is known
                        n_new = (known[0].shape[1] + len(written)) * model.mel.hop - prompt_len
                    parts.append(ev.samples[0])
                    plps.append(ev.logprobs[0])
                    yield Chunk(i, int(ev.start), ev.samples, ev.logprobs, int(n_new))
                    if stop() and ev.start + ev.samples.shape[1] < n_new:
                        stopped = True
                        break
        finally:
            events.close()
        rows.append(np.concatenate(parts).astype(np.float32) if parts else np.zeros(0, np.float32))
        lps.append(np.concatenate(plps).astype(np.float64) if plps else np.zeros(0))
        all_frames = known + ([np.stack(written, axis=1)] if written else [])
        frames_per_row.append(np.concatenate(all_frames, axis=1) if all_frames else
                              np.zeros((model.mel.n_mels, 0), np.float32))
        priors.append(None if resynth is not None else prior)
        n_written.append(len(written))
        if stopped:
            break
    yield Finished(request, rows, lps, prompt, rate, notes, stopped, time.perf_counter() - t0,
                   frames=frames_per_row, prior_logprobs=priors, n_prior_frames=n_written)


def run_to_end(request: AudioRequest, info, **kwargs) -> Finished:
    """All of `run` at once: its Finished event."""
    last = None
    for ev in run(request, info, **kwargs):
        last = ev
    if not isinstance(last, Finished):  # pragma: no cover - run always ends with Finished
        raise ChainruleError("the audio run ended without a result")
    return last


# --- outputs that remember their request --------------------------------------------------------

def write_sample(path, audio: np.ndarray, sample_rate: int, request: AudioRequest, info,
                 extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Write one sample as 16-bit WAV/FLAC carrying `request` (count 1: `for_sample(i)` of a run):
    the audio, then the request in its comment tag (when it fits) and in the sidecar NAME.json
    (with `extra`, e.g. its log-likelihood). Returns the stamped request written."""
    from engines.audio.wav import write_audio
    from engines.requests import stamp, tag_audio, write_sidecar

    stamped = stamp(request.to_json(), info)
    write_audio(path, audio, sample_rate)
    tag_audio(path, stamped)
    write_sidecar(path, stamped, extra)
    return stamped


def audio_bytes(audio: np.ndarray, sample_rate: int, request: AudioRequest, info, fmt: str = "wav") -> bytes:
    """One sample as WAV (or FLAC) bytes with the request in its comment tag (for the studio's history)."""
    with tempfile.TemporaryDirectory(prefix="chainrule-audio-") as folder:
        path = Path(folder) / f"sample.{fmt}"
        from engines.audio.wav import write_audio
        from engines.requests import stamp, tag_audio

        write_audio(path, audio, sample_rate)
        tag_audio(path, stamp(request.to_json(), info))
        return path.read_bytes()
