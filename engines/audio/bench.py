"""`chainrule bench audio`: samples per second, batch 1, on the shipped WaveNet.

Three ways of producing the same samples (same seed, temperature 1, digit 7, no speaker),
timed side by side in one run:
- `onnx_cached`: `step.onnx` with per-layer ring buffers (Fast WaveNet, O(layers) per sample);
- `onnx_naive`: `model.onnx` over the last receptive field of samples for every new sample;
- `torch_cached`: the same cached step in torch eager (only where torch is installed).
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

from engines.audio.generate import generate_audio
from engines.audio.model import AudioModel, load_audio_model
from engines.registry import ModelInfo, get_model

BENCH_MODEL = "fsdd-wavenet"
SEED = 0
DIGIT = 7
N_CACHED, N_NAIVE, N_TORCH, REPEATS = 4000, 300, 2000, 3  # samples timed per path (read at call time)


def _timed(model: AudioModel, n: int, method: str, repeats: int) -> tuple[float, np.ndarray]:
    times, classes = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = generate_audio(model, seconds=n / model.sample_rate, seed=SEED, digit=DIGIT, chunk_samples=n, method=method)
        times.append(time.perf_counter() - t0)
        classes = out.classes
    return n / statistics.median(times), classes


def bench_model(info: ModelInfo, *, n_cached: int | None = None, n_naive: int | None = None,
                n_torch: int | None = None, repeats: int | None = None) -> dict[str, Any]:
    n_cached, n_naive = n_cached or N_CACHED, n_naive or N_NAIVE
    n_torch, repeats = n_torch or N_TORCH, repeats or REPEATS
    model = load_audio_model(info, threads=1)
    cached, cached_classes = _timed(model, n_cached, "cached", repeats)
    naive, naive_classes = _timed(model, n_naive, "naive", repeats)
    result: dict[str, Any] = {
        "model": info.id, "batch": 1, "provider": model.step_session.provider, "threads": 1,
        "receptive_field": model.receptive_field, "layers": model.n_layers,
        "onnx_cached": round(cached, 1), "onnx_naive": round(naive, 1),
        "cached_over_naive": round(cached / naive, 1),
        "realtime_factor": round(cached / model.sample_rate, 2),
        "same_samples_naive": bool(np.array_equal(naive_classes, cached_classes[:, :n_naive])),
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


def run_audio_bench(models_dir: Sequence[str] = (), **kwargs) -> dict[str, Any]:
    return bench_model(get_model(BENCH_MODEL, models_dir, kind="audio"), **kwargs)
