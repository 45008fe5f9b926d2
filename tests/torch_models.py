"""Random torch models for the tests that export tiny ONNX models (tests/<family>_models.py)."""

from __future__ import annotations

from typing import Callable


def spread_out(build: Callable, seed: int, noise: float):
    """`build()` under torch.manual_seed(seed), in eval mode, with noise * N(0, 1) added to every
    parameter: weights spread out enough that every allowed dependency shows in the outputs
    (training starts some, such as conditioning biases, at zero)."""
    import torch

    torch.manual_seed(seed)
    model = build().eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(noise * torch.randn_like(p))
    return model
