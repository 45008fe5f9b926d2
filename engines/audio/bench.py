"""`chainrule bench audio`: samples per second, batch 1, on the shipped WaveNet.

Three ways of producing the same samples (same seed, temperature 1, digit 7, no speaker),
timed side by side in one run:
- `onnx_cached`: `step.onnx` with per-layer ring buffers (Fast WaveNet, O(layers) per sample);
- `onnx_naive`: `model.onnx` over the last receptive field of samples for every new sample;
- `torch_cached`: the same cached step in torch eager (only where torch is installed).
And the engine's share of the studio's path:
- `studio_path_samples_per_s`: the call the Audio tab's worker makes (studio/audio/work.py):
  `generate_audio_chunks` with the tab's chunk size (`studio_path_chunk_samples`, the tab's
  `CHUNK_SAMPLES`), pulled and copied chunk by chunk, timed alternately with `onnx_cached`
  (one chunk per call) so `studio_over_cached` compares the two under the same load. It
  leaves out the window (plots, status, player): `benchmarks/audio_tab.py` drives the real
  tab offscreen and reports what the user sees, with this engine figure beside it.
Each figure is the median over `repeats` runs (naive: fewer samples, a few hundred, as it is
slow; still the median of `repeats` runs, so one hiccup does not make the figure);
`same_samples_*` check that the other paths drew the same samples as the cached one.
`model` names the model measured.
`realtime_factor` is cached samples per second over the sample rate (> 1: faster than
real time, so the player never starves).
"""

from __future__ import annotations

import statistics
import time
from typing import Any, Sequence

import numpy as np

from engines.audio.generate import generate_audio, generate_audio_chunks
from engines.audio.model import AudioModel, load_audio_model
from engines.registry import ModelInfo, get_model

BENCH_MODEL = "fsdd-wavenet"
SEED = 0
DIGIT = 7
N_CACHED, N_NAIVE, N_TORCH, REPEATS = 4000, 300, 2000, 3  # samples timed per path (read at call time)
STUDIO_CHUNK = 400  # samples per chunk the Audio tab asks for (studio.audio.work.CHUNK_SAMPLES: a test ties them)


def _timed(model: AudioModel, n: int, method: str, repeats: int) -> tuple[float, np.ndarray]:
    times, classes = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = generate_audio(model, seconds=n / model.sample_rate, seed=SEED, digit=DIGIT, chunk_samples=n, method=method)
        times.append(time.perf_counter() - t0)
        classes = out.classes
    return n / statistics.median(times), classes


def _timed_stream(model: AudioModel, n: int, chunk: int) -> tuple[float, np.ndarray]:
    """The Audio tab worker's call: chunks of `chunk` samples pulled one by one (taken as float32, as
    the worker puts them in its events)."""
    t0 = time.perf_counter()
    parts = []
    for c in generate_audio_chunks(model, seconds=n / model.sample_rate, seed=SEED, digit=DIGIT, chunk_samples=chunk):
        np.asarray(c.samples, np.float32), np.asarray(c.logprobs, np.float32)
        parts.append(c.classes)
    return n / (time.perf_counter() - t0), np.concatenate(parts, axis=1)


def _cached_and_studio(model: AudioModel, n: int, repeats: int) -> tuple[float, np.ndarray, float, np.ndarray]:
    """`onnx_cached` and the studio's path, timed alternately (medians of `repeats` each)."""
    cached_t, studio_rates = [], []
    cached_classes = studio_classes = None
    for _ in range(repeats):
        t0 = time.perf_counter()
        cached_classes = generate_audio(model, seconds=n / model.sample_rate, seed=SEED, digit=DIGIT,
                                        chunk_samples=n, method="cached").classes
        cached_t.append(time.perf_counter() - t0)
        rate, studio_classes = _timed_stream(model, n, STUDIO_CHUNK)
        studio_rates.append(rate)
    return n / statistics.median(cached_t), cached_classes, statistics.median(studio_rates), studio_classes


def bench_model(info: ModelInfo, *, n_cached: int | None = None, n_naive: int | None = None,
                n_torch: int | None = None, repeats: int | None = None) -> dict[str, Any]:
    n_cached, n_naive = n_cached or N_CACHED, n_naive or N_NAIVE
    n_torch, repeats = n_torch or N_TORCH, repeats or REPEATS
    model = load_audio_model(info, threads=1)
    cached, cached_classes, studio, studio_classes = _cached_and_studio(model, n_cached, repeats)
    naive, naive_classes = _timed(model, n_naive, "naive", repeats)
    result: dict[str, Any] = {
        "model": info.id, "batch": 1, "provider": model.step_session.provider, "threads": 1,
        "receptive_field": model.receptive_field, "layers": model.n_layers,
        "onnx_cached": round(cached, 1), "onnx_naive": round(naive, 1),
        "cached_over_naive": round(cached / naive, 1),
        "realtime_factor": round(cached / model.sample_rate, 2),
        "same_samples_naive": bool(np.array_equal(naive_classes, cached_classes[:, :n_naive])),
        "studio_path_samples_per_s": round(studio, 1), "studio_path_chunk_samples": STUDIO_CHUNK,
        "studio_over_cached": round(studio / cached, 3),
        "same_samples_studio": bool(np.array_equal(studio_classes, cached_classes)),
        "samples_timed": {"onnx_cached": n_cached, "onnx_naive": n_naive, "torch_cached": n_torch},
        "repeats": repeats,
    }
    try:
        from engines.training.bench_wavenet_torch import torch_cached_samples_per_second
    except ImportError:
        result["torch_cached"] = None
        result["torch_note"] = "torch is not installed"
        return result
    rate, torch_classes = torch_cached_samples_per_second(info, model, n_torch, seed=SEED, digit=DIGIT,
                                                          repeats=repeats)
    result["torch_cached"] = round(rate, 1)
    result["cached_over_torch"] = round(cached / rate, 2)
    result["same_samples_torch"] = bool(np.array_equal(torch_classes, cached_classes[:, :n_torch]))
    return result


SPEECH_MODEL = "fsdd-speech"
SPEECH_DIGIT, SPEECH_SPEAKER = 7, "george"


def bench_speech(info: ModelInfo, repeats: int | None = None) -> dict[str, Any]:
    """The speech pipeline on the path the Audio tab's worker runs (`engines.audio.speech.speak` with the
    tab's chunk size; studio/audio/speech_work.py), batch 1, one thread, the card's default settings:

    - `prior_frames_per_s`: the prior writing the utterance's frames (one step.onnx call per frame);
    - `vocoder_samples_per_s`: the vocoder speaking them (cached steps, 400-sample chunks);
    - `realtime_factor`: seconds of audio per second of the whole run (prior + vocoder), > 1 keeps up;
    - `first_audio_s`: from the request to the first chunk of audio (the prior's frames, then one chunk).
    - `cond_ms_frame_rate` vs `cond_ms_sample_rate`: why the vocoder repeats frames AFTER its per-layer
      projection: cond.onnx over one second of frames (100), and the same network run over those frames
      repeated to the sample rate (8,000 positions), the least an upsample-then-project design costs.
    Medians of `repeats` runs with the same seed (same frames, same audio)."""
    from engines.audio.speech import FrameEvent, load_speech_model, speak

    repeats = repeats or REPEATS
    model = load_speech_model(info, threads=1)
    defaults = dict(model.decoding_defaults)
    ft, t = float(defaults.get("frame_temperature", 0.6)), float(defaults.get("temperature", 1.0))
    prior_rates, voc_rates, rt, first = [], [], [], []
    n_frames = n_samples = 0
    for _ in range(repeats):
        t0 = time.perf_counter()
        t_frames = t_first = None
        n_frames = n_samples = 0
        for ev in speak(model, seed=SEED, digit=SPEECH_DIGIT, speaker=SPEECH_SPEAKER, frame_temperature=ft,
                        temperature=t, chunk_samples=STUDIO_CHUNK):
            if isinstance(ev, FrameEvent):
                n_frames += 1
                t_frames = time.perf_counter()
            elif hasattr(ev, "samples"):
                t_first = t_first or time.perf_counter()
                n_samples += ev.samples.shape[1]
        t_end = time.perf_counter()
        prior_rates.append(n_frames / (t_frames - t0))
        voc_rates.append(n_samples / (t_end - t_frames))
        rt.append(n_samples / model.sample_rate / (t_end - t0))
        first.append(t_first - t0)
    voc, hop = model.vocoder, model.mel.hop
    frames = np.full((1, model.mel.n_mels, model.sample_rate // hop + 1), model.prior.floor + 5.0, np.float32)
    spk = np.array([0], np.int64)
    cond_ms = []
    for x in (frames, np.repeat(frames, hop, axis=2)):
        times = []
        for _ in range(max(3, repeats)):
            t0 = time.perf_counter()
            voc.cond(spk, spk, x)
            times.append(time.perf_counter() - t0)
        cond_ms.append(1000 * statistics.median(times))
    return {"model": info.id, "batch": 1, "threads": 1, "digit": SPEECH_DIGIT, "speaker": SPEECH_SPEAKER,
            "cond_ms_frame_rate": round(cond_ms[0], 3), "cond_ms_sample_rate": round(cond_ms[1], 3),
            "frames": n_frames, "samples": n_samples, "chunk_samples": STUDIO_CHUNK,
            "prior_frames_per_s": round(statistics.median(prior_rates), 1),
            "vocoder_samples_per_s": round(statistics.median(voc_rates), 1),
            "realtime_factor": round(statistics.median(rt), 2), "first_audio_s": round(statistics.median(first), 3),
            "vocoder_layers": model.vocoder.n_layers, "repeats": repeats}


def run_audio_bench(models_dir: Sequence[str] = (), **kwargs) -> dict[str, Any]:
    """The WaveNet's figures; with a speech model installed, its figures under "speech"."""
    from engines.errors import ModelNotFoundError

    result = bench_model(get_model(BENCH_MODEL, models_dir, kind="audio"), **kwargs)
    try:
        speech = get_model(SPEECH_MODEL, models_dir, kind="audio")
    except ModelNotFoundError:
        return result
    result["speech"] = bench_speech(speech, kwargs.get("repeats"))
    return result
