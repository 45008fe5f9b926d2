"""`chainrule bench text`: tokens/s for 256 new tokens, batch 1, on the shipped char model.

Three ways of producing the same greedy tokens, measured side by side in one run:
- `onnx_kv_cache`: ONNX Runtime, prompt prefilled once, then one token per step with the cache
  (the default state transport for the provider; `onnx_kv_cache_iobinding` forces IOBinding);
- `onnx_recompute`: ONNX Runtime, no cache, the whole prefix (windowed) every step;
- `torch_kv_cache`: the same weights in torch eager with a cache (only where torch is installed).
Each figure is the median of `repeats` runs; ratios are computed from those medians.
"""

from __future__ import annotations

import statistics
import time
from typing import Any, Sequence

from engines.decoding.config import DecodingConfig
from engines.generation import generate_steps
from engines.registry import get_model
from engines.text.decoder import KVCacheStepModel, RecomputeStepModel
from engines.text.model import load_text_model

BENCH_MODEL = "shakespeare-char"
NEW_TOKENS = 256
PROMPT = "ROMEO:\n"


def _tokens_per_second(make_step_model, context: list[int], repeats: int) -> tuple[float, list[int]]:
    config = DecodingConfig(strategy="greedy")
    times, tokens = [], []
    for _ in range(repeats):
        step_model = make_step_model()
        t0 = time.perf_counter()
        tokens = [ev.value for ev in generate_steps(step_model, [context], config, NEW_TOKENS, seed=0, n_alternatives=0)]
        times.append(time.perf_counter() - t0)
    return NEW_TOKENS / statistics.median(times), tokens


def run_text_bench(models_dir: Sequence[str] = (), repeats: int = 5) -> dict[str, Any]:
    info = get_model(BENCH_MODEL, models_dir, kind="text")
    model = load_text_model(info, threads=1)
    context = model.tokenizer.encode(PROMPT)
    kv, kv_tokens = _tokens_per_second(lambda: KVCacheStepModel(model.decoder), context, repeats)
    kvb, kvb_tokens = _tokens_per_second(lambda: KVCacheStepModel(model.decoder, transport="binding"), context, repeats)
    rc, rc_tokens = _tokens_per_second(lambda: RecomputeStepModel(model.decoder), context, repeats)
    results: dict[str, Any] = {
        "model": info.id, "new_tokens": NEW_TOKENS, "batch": 1, "provider": model.decoder.session.provider,
        "transport": KVCacheStepModel(model.decoder).runner.transport,
        "onnx_kv_cache": round(kv, 1), "onnx_kv_cache_iobinding": round(kvb, 1), "onnx_recompute": round(rc, 1),
        "kv_over_recompute": round(kv / rc, 2),
        # recompute slides the same window, so both paths must produce the same greedy text
        "same_tokens_recompute": kv_tokens == rc_tokens,
        "same_tokens_iobinding": kv_tokens == kvb_tokens,
    }
    try:
        from engines.training.bench_torch import torch_kv_tokens_per_second
    except ImportError:
        results["torch_kv_cache"] = None
        results["torch_note"] = "torch is not installed"
        return results
    tq, tq_tokens = torch_kv_tokens_per_second(info, context, NEW_TOKENS, repeats)
    results["torch_kv_cache"] = round(tq, 1)
    results["kv_over_torch"] = round(kv / tq, 2)
    results["same_tokens_torch"] = tq_tokens == kv_tokens
    return results
