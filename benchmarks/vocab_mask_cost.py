"""Per-step cost of masking a padded vocabulary (engines/text/vocab_mask.py) beside one float64
log-softmax over the same row, for the vocabulary shapes of Qwen2-0.5B (151,936 logits, 151,665
tokenizer ids), Phi-3-mini (32,064 / 32,011), the issue's GPT-2 re-export (50,257 / 21,528) and a
GPT-2 with 12 holes. `apply` runs every step; `masked_lse` only when the probability views are on.

    python benchmarks/vocab_mask_cost.py
"""
import time

import numpy as np

from engines.text.vocab_mask import VocabMask
from engines.decoding.samplers import log_softmax
rng = np.random.default_rng(0)
for V, keep, holes in ((151936, 151665, 0), (32064, 32011, 0), (50257, 21528, 0), (50257, 50257, 12)):
    mask = VocabMask(V, keep, np.sort(rng.choice(keep, holes, replace=False)).astype(np.int64))
    x = rng.standard_normal((1, V)).astype(np.float32)
    def t(f, n=2000):
        t0 = time.perf_counter()
        for _ in range(n): f()
        return (time.perf_counter() - t0) / n * 1e6
    ap = t(lambda: mask.apply(x))
    lse = t(lambda: mask.masked_lse(x))
    ls = t(lambda: log_softmax(x))
    print(f"V={V:>6} masked={mask.n_masked:>6}: apply {ap:6.1f} us, masked_lse (views on) {lse:6.1f} us, "
          f"for scale: one float64 log_softmax {ls:6.1f} us")
