"""`chainrule bench density`: NADE sampling, incremental vs naive, and evaluation speed, on the shipped models.

* NADE sampling, one 28x28 image at batch 1, seed 0, two ways that give the same image:
  `nade_incremental_seconds_per_image` (step.onnx: O(H) per pixel, the running hidden
  pre-activation updated by one weight column per pixel; median of `repeats` runs) and
  `nade_naive_seconds_per_image` (the full O(DH) graph once per pixel, D passes; one run).
  `nade_speedup` is their ratio and `nade_same_samples` checks the images are identical.
* Evaluation throughput (exact log p(x) of `eval_images` images, in the batches `chainrule eval` uses):
  `nade_eval_images_per_second`; for MADE at K = 1 (one mask set) and at the card's default K
  (K full passes per image: the mixture costs K times as much).
* `made_sample_seconds_per_image`: MADE in raster order (one full pass per pixel).

The images scored are drawn at random (density 0.13, like MNIST's ink); the time a pass takes
does not depend on the pixel values. A model that is not installed is reported under
`missing` (both missing is an error).
"""

from __future__ import annotations

import statistics
import time
from typing import Any, Sequence

import numpy as np

from engines.density.model import DensityModel, load_density_model
from engines.density.sampling import sample
from engines.errors import ChainruleError, ModelNotFoundError
from engines.registry import get_model

NADE_ID, MADE_ID = "bmnist-nade", "bmnist-made"
SEED = 0


def _eval_rate(model: DensityModel, x: np.ndarray, k: int | None) -> float:
    t0 = time.perf_counter()
    for i in range(0, len(x), model.eval_batch):
        model.log_prob(x[i:i + model.eval_batch], k)
    return len(x) / (time.perf_counter() - t0)


def _images(model: DensityModel, n: int) -> np.ndarray:
    return (np.random.default_rng(SEED).random((n, model.dims)) < 0.13).astype(np.float32)


def bench_nade(model: DensityModel, repeats: int = 3, eval_images: int = 500) -> dict[str, Any]:
    times, fast = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        fast = sample(model, seed=SEED, method="incremental").images
        times.append(time.perf_counter() - t0)
    inc = statistics.median(times)
    t0 = time.perf_counter()
    naive = sample(model, seed=SEED, method="naive").images
    slow = time.perf_counter() - t0
    return {
        "nade_model": model.id, "nade_image": f"{model.width}x{model.height}", "nade_hidden": model.hidden,
        "nade_incremental_seconds_per_image": round(inc, 4), "nade_naive_seconds_per_image": round(slow, 4),
        "nade_naive_forward_passes": model.dims, "nade_speedup": round(slow / inc, 1),
        "nade_same_samples": bool(np.array_equal(fast, naive)),
        "nade_eval_images_per_second": round(_eval_rate(model, _images(model, eval_images), None), 1),
    }


def bench_made(model: DensityModel, eval_images: int = 200) -> dict[str, Any]:
    x = _images(model, eval_images)
    t0 = time.perf_counter()
    sample(model, seed=SEED, order_name="raster")
    sample_s = time.perf_counter() - t0
    return {
        "made_model": model.id, "made_hidden": list(model.hidden), "made_n_masks": model.n_masks,
        "made_default_k": model.default_k,
        "made_eval_images_per_second_k1": round(_eval_rate(model, x, 1), 1),
        "made_eval_images_per_second_default_k": round(_eval_rate(model, x, model.default_k), 1),
        "made_sample_seconds_per_image": round(sample_s, 4),
    }


def run_density_bench(models_dir: Sequence[str] = (), repeats: int = 3, eval_images: int = 500) -> dict[str, Any]:
    found, missing = {}, []
    for model_id in (NADE_ID, MADE_ID):
        try:
            found[model_id] = get_model(model_id, models_dir, kind="density")
        except ModelNotFoundError as exc:
            missing.append(f"{model_id} is not installed ({exc}); it belongs in assets/models/{model_id}")
    if not found:
        raise ChainruleError(f"no density model to benchmark: install {NADE_ID} and {MADE_ID} "
                             "(assets/models, or pass --models-dir DIR)")
    results: dict[str, Any] = {}
    if NADE_ID in found:
        nade = load_density_model(found[NADE_ID], threads=None)  # eval may use every core; the step graph uses 1
        results["provider"] = nade.full.provider
        results.update(bench_nade(nade, repeats, eval_images))
    if MADE_ID in found:
        made = load_density_model(found[MADE_ID], threads=None)
        results.setdefault("provider", made.full.provider)
        results.update(bench_made(made, max(1, min(eval_images, 200))))
    if missing:
        results["missing"] = missing
    return results
