"""MADE (Germain et al. 2015, "Masked Autoencoder for Distribution Estimation") for binary vectors.

Notation: B batch, D dimensions (784 pixels), H1..HL hidden sizes. A fully connected network
x -> ReLU(x @ (W0 * M0) + b0) -> ... -> logits = h_L @ (W_L * M_L) + x @ (Wd * Md) + b whose
masks M (built by `engines.density.orderings.made_masks`) cut every path from input j to
output d unless j comes before d in the ordering, so output d is the logit of
p(x_d = 1 | x_<d in that ordering) and all D conditionals come out of one pass. ``Wd * Md`` is
the direct input -> output connection of the paper.

The masks are not part of the parameters: training draws one of M (ordering, seed) mask sets
per minibatch (order- and connectivity-agnostic training), and the exported graph takes the
masks as inputs, so one ONNX file serves every ordering. `set_masks` stores a mask set as
buffers; `forward(x, masks)` may also be given a mask set directly.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


class MADE(nn.Module):
    def __init__(self, dims: int = 784, hidden: Sequence[int] = (500, 500)):
        super().__init__()
        self.dims, self.hidden = int(dims), tuple(int(h) for h in hidden)
        sizes = [self.dims, *self.hidden, self.dims]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.direct = nn.Parameter(torch.zeros(self.dims, self.dims))  # (D, D) input -> output
        for i in range(len(sizes) - 1):
            self.register_buffer(f"mask{i}", torch.ones(sizes[i], sizes[i + 1]), persistent=False)
        self.register_buffer("mask_direct", torch.ones(self.dims, self.dims), persistent=False)

    def config(self) -> dict:
        return {"dims": self.dims, "hidden": list(self.hidden)}

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    @property
    def n_weight_layers(self) -> int:
        return len(self.layers)

    def set_masks(self, masks: Sequence) -> None:
        """Store a mask set (len(hidden) + 1 layer masks (in, out), then the direct mask (D, D))."""
        masks = _as_tensors(masks)
        if len(masks) != self.n_weight_layers + 1:
            raise ValueError(f"MADE needs {self.n_weight_layers + 1} masks, got {len(masks)}")
        for i, m in enumerate(masks[:-1]):
            getattr(self, f"mask{i}").copy_(m)
        self.mask_direct.copy_(masks[-1])

    def current_masks(self) -> list[torch.Tensor]:
        return [getattr(self, f"mask{i}") for i in range(self.n_weight_layers)] + [self.mask_direct]

    def forward(self, x: torch.Tensor, masks: Sequence | None = None) -> torch.Tensor:
        """Logits (B, D) of p(x_d = 1 | x_<d) under the ordering the masks encode; x float (B, D)."""
        masks = self.current_masks() if masks is None else _as_tensors(masks)
        h = x
        for i, layer in enumerate(self.layers):
            h = h @ (layer.weight.t() * masks[i]) + layer.bias  # weight.t(): (in, out)
            if i < len(self.layers) - 1:
                h = F.relu(h)
        return h + x @ (self.direct * masks[-1])

    def log_prob(self, x: torch.Tensor, masks: Sequence | None = None) -> torch.Tensor:
        """Exact log p(x) (B,) in nats under one mask set."""
        return -F.binary_cross_entropy_with_logits(self(x, masks), x, reduction="none").sum(-1)

    def log_prob_mixture(self, x: torch.Tensor, mask_sets: Sequence[Sequence]) -> torch.Tensor:
        """log of the mixture (1/K) sum_k p_k(x) over K mask sets (B,): logsumexp - log K."""
        per = torch.stack([self.log_prob(x, m) for m in mask_sets], dim=0)  # (K, B)
        return torch.logsumexp(per, dim=0) - float(np.log(len(mask_sets)))


class MADEGraph(nn.Module):
    """The exported interface: forward(x, mask0, ..., mask_L, mask_direct) -> logits."""

    def __init__(self, made: MADE):
        super().__init__()
        self.made = made

    def forward(self, x, *masks):
        return self.made(x, list(masks))


def _as_tensors(masks: Sequence) -> list[torch.Tensor]:
    return [m if isinstance(m, torch.Tensor) else torch.from_numpy(np.asarray(m, dtype=np.float32)) for m in masks]
