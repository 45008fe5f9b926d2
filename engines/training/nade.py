"""NADE (Larochelle & Murray 2011) for binary vectors, in raster order.

Notation: B batch, D dimensions (784 pixels), H hidden units. Parameters are shared across
the D conditionals, which is what makes NADE cheap:

    a_d = c + W[:, :d] @ x[:d]             (H,)   hidden pre-activation for pixel d
    h_d = sigmoid(a_d)                     (H,)
    logit_d = V[d] @ h_d + b[d]            p(x_d = 1 | x_<d) = sigmoid(logit_d)

`forward` computes all D logits in one O(DH) pass: the a_d are an exclusive cumulative sum
over d of the rank-one terms W[:, d] * x_d. Sampling only needs the O(H) update
a_{d+1} = a_d + W[:, d] * x_d per pixel: `NADEStep` is that update plus one logit, the graph
the exporter writes as ``step.onnx``.

Training uses `nll_blocked` instead of `forward`: the same numbers computed a block of
pixels at a time with a hand-written backward pass. The vectorised `forward` streams several
(B, D, H) tensors (157 MB each at B=100, D=784, H=500) through memory and autograd keeps
them for the backward pass; the blocked pass only ever holds a (B, S, H) block, which stays
in cache, and recomputes it in the backward pass (about 5x faster on one CPU thread).
`forward` stays the reference (and the exported graph); tests check that both agree.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class NADE(nn.Module):
    def __init__(self, dims: int = 784, hidden: int = 500):
        super().__init__()
        self.dims, self.hidden = int(dims), int(hidden)
        scale = 1.0 / dims ** 0.5
        self.W = nn.Parameter(torch.randn(hidden, dims) * scale)  # (H, D) input -> hidden
        self.c = nn.Parameter(torch.zeros(hidden))  # (H,) hidden bias
        self.V = nn.Parameter(torch.randn(dims, hidden) / hidden ** 0.5)  # (D, H) hidden -> output d
        self.b = nn.Parameter(torch.zeros(dims))  # (D,) output bias

    def config(self) -> dict:
        return {"dims": self.dims, "hidden": self.hidden}

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def pre_activations(self, x: torch.Tensor) -> torch.Tensor:
        """a (B, D, H): a[:, d] = c + sum_{j<d} x_j W[:, j] (exclusive cumulative sum over d)."""
        terms = x.unsqueeze(-1) * self.W.t().unsqueeze(0)  # (B, D, H) x_j W[:, j]
        run = torch.cumsum(terms, dim=1)  # (B, D, H) inclusive
        run = torch.cat([torch.zeros_like(run[:, :1]), run[:, :-1]], dim=1)  # exclusive
        return run + self.c

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (B, D) of p(x_d = 1 | x_<d) for float x (B, D) in {0, 1}."""
        h = torch.sigmoid(self.pre_activations(x))  # (B, D, H)
        return (h * self.V).sum(-1) + self.b  # (B, D)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Exact log p(x) (B,) in nats."""
        return -F.binary_cross_entropy_with_logits(self(x), x, reduction="none").sum(-1)

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        """Mean NLL per dimension (nats) of the batch."""
        return -self.log_prob(x).mean() / self.dims


def _strict_lower(n: int, dtype) -> torch.Tensor:
    return torch.tril(torch.ones(n, n, dtype=dtype), diagonal=-1)  # [i, j] = 1 if j < i


class _BlockedLogits(torch.autograd.Function):
    """NADE logits (B, D) a block of S pixels at a time; the backward recomputes each block.

    Within a block starting at pixel s, a[:, s + i] = a_s + sum_{j < i} x[:, s + j] W[:, s + j],
    computed as a (B, S, S) x (S, H) matmul with a strictly lower-triangular mask; a_s (B, H)
    is carried from block to block and saved for the backward pass.
    """

    @staticmethod
    def forward(ctx, x, W, c, V, b, block: int):
        B, D = x.shape
        Wt = W.t()  # (D, H)
        tri = _strict_lower(block, x.dtype)
        a = c.expand(B, -1)  # (B, H)
        logits = torch.empty(B, D, dtype=x.dtype)
        starts = []
        for s in range(0, D, block):
            e = min(s + block, D)
            xb, Wb = x[:, s:e], Wt[s:e]  # (B, n), (n, H)
            n = e - s
            h = torch.matmul(xb.unsqueeze(1) * tri[:n, :n], Wb).add_(a.unsqueeze(1)).sigmoid_()  # (B, n, H)
            logits[:, s:e] = torch.bmm(h.transpose(0, 1), V[s:e].unsqueeze(-1)).squeeze(-1).t() + b[s:e]
            starts.append(a)
            a = a + xb @ Wb
        ctx.save_for_backward(x, W, V, torch.stack(starts))
        ctx.block = block
        return logits

    @staticmethod
    def backward(ctx, g_logits):
        x, W, V, starts = ctx.saved_tensors
        block = ctx.block
        B, D = x.shape
        Wt = W.t()
        tri = _strict_lower(block, x.dtype)
        g_after = torch.zeros(B, W.shape[0], dtype=x.dtype)  # (B, H) sum of dL/da over later pixels
        dWt = torch.empty_like(Wt)  # (D, H)
        dV = torch.empty_like(V)  # (D, H)
        for k, s in reversed(list(enumerate(range(0, D, block)))):
            e = min(s + block, D)
            n = e - s
            xb, Wb = x[:, s:e], Wt[s:e]
            h = torch.matmul(xb.unsqueeze(1) * tri[:n, :n], Wb).add_(starts[k].unsqueeze(1)).sigmoid_()  # (B, n, H)
            g = g_logits[:, s:e]  # (B, n)
            dV[s:e] = torch.bmm(g.t().unsqueeze(1), h.transpose(0, 1)).squeeze(1)  # (n, H)
            dA = (1 - h).mul_(h).mul_(g.unsqueeze(-1) * V[s:e])  # (B, n, H) dL/da
            later = torch.matmul(tri[:n, :n].t(), dA)  # (B, n, H): [b, j] = sum_{i > j in block} dA[b, i]
            dWt[s:e] = torch.bmm(xb.t().unsqueeze(1), later.transpose(0, 1)).squeeze(1) + xb.t() @ g_after
            g_after = g_after + dA.sum(1)
        return None, dWt.t(), g_after.sum(0), dV, g_logits.sum(0), None


def nll_blocked(model: "NADE", x: torch.Tensor, block: int = 16) -> torch.Tensor:
    """-log p(x) (B,) through the blocked pass (same values as `-model.log_prob(x)`)."""
    logits = _BlockedLogits.apply(x, model.W, model.c, model.V, model.b, block)
    return F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(-1)


class NADEStep(nn.Module):
    """One sampling step: a_next = a + x_prev * W[:, prev]; logit = V[d] @ sigmoid(a_next) + b[d].

    a (B, H), x_prev (B, 1), prev (1,) int64, d (1,) int64 -> a_next (B, H), logit (B, 1).
    Start with a = c (``init_a``) and x_prev = 0, prev = 0 for d = 0; then pass the value of
    pixel d - 1 as x_prev with prev = d - 1.
    """

    def __init__(self, nade: NADE):
        super().__init__()
        self.nade = nade

    def forward(self, a, x_prev, prev, d):
        w_prev = torch.index_select(self.nade.W.t(), 0, prev)  # (1, H)
        a_next = a + x_prev * w_prev  # (B, H)
        v_d = torch.index_select(self.nade.V, 0, d)  # (1, H)
        logit = (torch.sigmoid(a_next) * v_d).sum(-1, keepdim=True) + torch.index_select(self.nade.b, 0, d)
        return a_next, logit
