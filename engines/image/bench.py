"""`chainrule bench image`: seconds per 28x28 sample, batch 1, on the shipped PixelCNN.

Two ways of producing the same sample (same seed, same sampler chain), timed side by side:
- `naive_seconds_per_image`: the full network on the whole image for every pixel
  (H x W x C full forward passes);
- `fast_seconds_per_image`: the row step once per row and the pixel step once per pixel,
  with cached features (see `engines.image.sampler`).
`same_samples` checks that both produced the same image. The fast figure is the median of
`repeats` runs (it includes the per-pixel distributions the studio streams); naive runs once.
For a label-conditioned model, `guided_seconds_per_image` is the fast sampler with
classifier-free guidance (`GUIDANCE`): the label and "no label" rows run as one batch of 2 per
step, timed alternately with the unguided runs, and `guided_over_plain` is the cost of guidance
(below 2: the two passes share each ONNX Runtime call).
"""

from __future__ import annotations

import statistics
import time
from typing import Any, Sequence

import numpy as np

from engines.decoding.config import DecodingConfig
from engines.errors import ChainruleError, ModelNotFoundError
from engines.image.model import load_image_model
from engines.image.sampler import PixelSampler
from engines.registry import ModelInfo, get_model

BENCH_MODELS = ("mnist-pixelcnn", "bmnist-pixelcnn")
SEED = 0
GUIDANCE = 3.0


def _find(models_dir: Sequence[str]) -> list[ModelInfo]:
    found = []
    for model_id in BENCH_MODELS:
        try:
            found.append(get_model(model_id, models_dir, kind="image"))
        except ModelNotFoundError:
            continue
    return found


def bench_model(info: ModelInfo, repeats: int = 3, naive: bool = True) -> dict[str, Any]:
    model = load_image_model(info, threads=None)  # the full graph may use every core; the step graphs use 1
    s = model.shape
    config = DecodingConfig(strategy="sample", temperature=1.0)
    label = 0 if model.n_classes else None
    times, guided_times, fast_images = [], [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        sampler = PixelSampler(model, config, SEED, label=label, method="fast").run()
        times.append(time.perf_counter() - t0)
        fast_images = sampler.images
        if label is not None:
            t0 = time.perf_counter()
            PixelSampler(model, config, SEED, label=label, method="fast", guidance=GUIDANCE).run()
            guided_times.append(time.perf_counter() - t0)
    fast = statistics.median(times)
    result: dict[str, Any] = {
        "model": info.id, "image": f"{s.width}x{s.height}x{s.channels}", "batch": 1,
        "provider": model.full.provider, "fast_seconds_per_image": round(fast, 4),
        "fast_pixels_per_second": round(s.dims / fast, 1),
    }
    if guided_times:
        guided = statistics.median(guided_times)
        result.update({"guided_seconds_per_image": round(guided, 4), "guidance": GUIDANCE,
                       "guided_over_plain": round(guided / fast, 2)})
    if naive:
        t0 = time.perf_counter()
        naive_images = PixelSampler(model, config, SEED, label=label, method="naive").run().images
        slow = time.perf_counter() - t0
        result.update({
            "naive_seconds_per_image": round(slow, 3), "naive_forward_passes": s.dims,
            "speedup": round(slow / fast, 1), "same_samples": bool(np.array_equal(naive_images, fast_images)),
        })
    return result


def run_image_bench(models_dir: Sequence[str] = (), repeats: int = 3) -> dict[str, Any]:
    infos = _find(models_dir)
    if not infos:
        raise ChainruleError(f"no image model to benchmark: install {' or '.join(BENCH_MODELS)} "
                             "(or pass --models-dir DIR)")
    results = bench_model(infos[0], repeats)
    if len(infos) > 1:
        results["others"] = {i.id: bench_model(i, repeats) for i in infos[1:]}
    return results
