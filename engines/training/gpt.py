"""A small one-file GPT (decoder-only transformer), in the style of nanoGPT.

This module is part of ``engines.training`` and is the only layer of the
project allowed to import torch. It defines:

* :class:`GPTConfig` - the hyper-parameters.
* :class:`GPT` - the model, with two entry points:

  - ``forward(idx, targets=None)`` for training (causal attention over the
    whole window, optional cross-entropy loss);
  - ``forward_with_past(input_ids, attention_mask, position_ids, past)`` - the
    key/value-cache path that is exported to ONNX. It takes the cached keys and
    values of ``P`` earlier positions, processes ``T`` new positions, and
    returns logits for the new positions plus the updated caches
    (``P + T`` positions). A padding mask (``attention_mask``; 0 = masked)
    covers all ``P + T`` positions so left-padded batches and beams work.

Shapes in comments use B = batch, T = new positions, P = past positions,
C = n_embd, H = n_head, D = head_dim = C // H, V = vocab_size.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
from torch.nn import functional as F


@dataclass
class GPTConfig:
    vocab_size: int = 65  # number of distinct tokens (characters for char-level models)
    block_size: int = 256  # maximum context length (size of the learned position table)
    n_layer: int = 4  # number of transformer blocks
    n_head: int = 4  # attention heads per block; n_embd must be divisible by n_head
    n_embd: int = 128  # width of the residual stream (embedding dimension)
    dropout: float = 0.0  # dropout probability during training (0 = none)
    bias: bool = True  # use bias terms in Linear layers and LayerNorms

    def to_dict(self) -> dict:
        return asdict(self)


class LayerNorm(nn.Module):
    """LayerNorm with an optional bias (PyTorch's cannot switch the bias off alone)."""

    def __init__(self, ndim: int, bias: bool):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(ndim))
        self.bias = nn.Parameter(torch.zeros(ndim)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, 1e-5)


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        assert config.n_embd % config.n_head == 0, "n_embd must be divisible by n_head"
        self.n_head = config.n_head
        self.n_embd = config.n_embd
        self.head_dim = config.n_embd // config.n_head
        # key, query, value projections for all heads, in one matmul
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        # output projection
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.attn_dropout = nn.Dropout(config.dropout)
        self.resid_dropout = nn.Dropout(config.dropout)
        self.dropout = config.dropout

    def _qkv(self, x: torch.Tensor):
        B, T, C = x.shape  # (B, T, C)
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)  # each (B, T, C)
        q = q.view(B, T, self.n_head, self.head_dim).transpose(1, 2)  # (B, H, T, D)
        k = k.view(B, T, self.n_head, self.head_dim).transpose(1, 2)  # (B, H, T, D)
        v = v.view(B, T, self.n_head, self.head_dim).transpose(1, 2)  # (B, H, T, D)
        return q, k, v

    def _merge(self, y: torch.Tensor, B: int, T: int) -> torch.Tensor:
        y = y.transpose(1, 2).contiguous().view(B, T, self.n_embd)  # (B, T, C)
        return self.resid_dropout(self.c_proj(y))  # (B, T, C)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Training path: full causal attention over the window (fused SDPA kernel)."""
        B, T, _ = x.shape  # (B, T, C)
        q, k, v = self._qkv(x)  # each (B, H, T, D)
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=None,
            dropout_p=self.dropout if self.training else 0.0, is_causal=True,
        )  # (B, H, T, D)
        return self._merge(y, B, T)

    def forward_with_past(self, x, mask, past_key, past_value):
        """Cache path with explicit matmul/softmax attention (robust to export).

        x: (B, T, C) new positions; mask: (B, 1, T, P+T) bool, True = may attend;
        past_key / past_value: (B, H, P, D). Returns y (B, T, C) and the
        present key / value (B, H, P+T, D).
        """
        B, T, _ = x.shape  # (B, T, C)
        q, k, v = self._qkv(x)  # each (B, H, T, D)
        k = torch.cat([past_key, k], dim=2)  # (B, H, P+T, D)
        v = torch.cat([past_value, v], dim=2)  # (B, H, P+T, D)
        att = torch.matmul(q, k.transpose(-2, -1)) * (1.0 / math.sqrt(self.head_dim))  # (B, H, T, P+T)
        # A large finite negative (not -inf) keeps fully masked rows (queries at
        # padding positions) finite: they become uniform instead of NaN.
        att = att.masked_fill(~mask, -1e9)  # (B, H, T, P+T)
        att = F.softmax(att, dim=-1)  # (B, H, T, P+T)
        y = torch.matmul(att, v)  # (B, H, T, D)
        return self._merge(y, B, T), k, v


class MLP(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.gelu = nn.GELU()
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.c_fc(x)  # (B, T, 4C)
        x = self.gelu(x)  # (B, T, 4C)
        x = self.c_proj(x)  # (B, T, C)
        return self.dropout(x)


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.ln_1 = LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))  # (B, T, C)
        x = x + self.mlp(self.ln_2(x))  # (B, T, C)
        return x

    def forward_with_past(self, x, mask, past_key, past_value):
        a, k, v = self.attn.forward_with_past(self.ln_1(x), mask, past_key, past_value)
        x = x + a  # (B, T, C)
        x = x + self.mlp(self.ln_2(x))  # (B, T, C)
        return x, k, v


class GPT(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        assert config.vocab_size is not None and config.block_size is not None
        self.config = config
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(config.vocab_size, config.n_embd),  # token embeddings
            wpe=nn.Embedding(config.block_size, config.n_embd),  # learned position embeddings
            drop=nn.Dropout(config.dropout),
            h=nn.ModuleList([Block(config) for _ in range(config.n_layer)]),
            ln_f=LayerNorm(config.n_embd, bias=config.bias),
        ))
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        # weight tying: the output head shares the token embedding matrix
        self.transformer.wte.weight = self.lm_head.weight

        self.apply(self._init_weights)
        # scaled init of the residual projections (GPT-2 paper)
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                torch.nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                torch.nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)

    @property
    def head_dim(self) -> int:
        return self.config.n_embd // self.config.n_head

    def num_parameters(self, non_embedding: bool = False) -> int:
        """Parameter count (tied weights counted once)."""
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            n -= self.transformer.wpe.weight.numel()
        return n

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None):
        """idx: (B, T) int64 token ids, T <= block_size. targets: (B, T) or None.

        Returns (logits (B, T, V), loss or None).
        """
        B, T = idx.shape
        assert T <= self.config.block_size, f"sequence length {T} > block_size {self.config.block_size}"
        pos = torch.arange(0, T, dtype=torch.long, device=idx.device)  # (T,)
        tok_emb = self.transformer.wte(idx)  # (B, T, C)
        pos_emb = self.transformer.wpe(pos)  # (T, C)
        x = self.transformer.drop(tok_emb + pos_emb)  # (B, T, C)
        for block in self.transformer.h:
            x = block(x)  # (B, T, C)
        x = self.transformer.ln_f(x)  # (B, T, C)
        logits = self.lm_head(x)  # (B, T, V)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))
        return logits, loss

    def forward_with_past(self, input_ids, attention_mask, position_ids, past):
        """Key/value-cache forward (the exported decoder).

        input_ids: (B, T) int64; attention_mask: (B, P+T) int64 (1 = real
        token, 0 = padding); position_ids: (B, T) int64; past: list of n_layer
        (key, value) pairs, each (B, H, P, D) - P may be 0.

        Returns logits (B, T, V) and presents: list of (key, value), each
        (B, H, P+T, D).
        """
        T = input_ids.shape[1]
        P = past[0][0].shape[2]
        # causal mask of the T new queries against all P+T keys:
        # query i (absolute index P+i) may see key j iff j <= P+i
        q_idx = torch.arange(T, device=input_ids.device) + P  # (T,)
        k_idx = torch.arange(P + T, device=input_ids.device)  # (P+T,)
        causal = k_idx.unsqueeze(0) <= q_idx.unsqueeze(1)  # (T, P+T)
        pad = attention_mask.to(torch.bool)[:, None, None, :]  # (B, 1, 1, P+T)
        mask = causal[None, None, :, :] & pad  # (B, 1, T, P+T)

        tok_emb = self.transformer.wte(input_ids)  # (B, T, C)
        pos_emb = self.transformer.wpe(position_ids)  # (B, T, C)
        x = self.transformer.drop(tok_emb + pos_emb)  # (B, T, C)
        presents = []
        for block, (pk, pv) in zip(self.transformer.h, past):
            x, k, v = block.forward_with_past(x, mask, pk, pv)  # x (B, T, C); k, v (B, H, P+T, D)
            presents.append((k, v))
        x = self.transformer.ln_f(x)  # (B, T, C)
        logits = self.lm_head(x)  # (B, T, V)
        return logits, presents

    def empty_past(self, batch_size: int, device=None, dtype=torch.float32):
        """A zero-length cache: n_layer pairs of (B, H, 0, D) tensors."""
        shape = (batch_size, self.config.n_head, 0, self.head_dim)
        return [(torch.zeros(shape, device=device, dtype=dtype),
                 torch.zeros(shape, device=device, dtype=dtype)) for _ in range(self.config.n_layer)]

    def configure_optimizers(self, weight_decay: float, learning_rate: float, betas=(0.9, 0.99)):
        """AdamW with weight decay on matrices (dim >= 2) only."""
        params = [p for p in self.parameters() if p.requires_grad]
        decay = [p for p in params if p.dim() >= 2]
        no_decay = [p for p in params if p.dim() < 2]
        groups = [
            {"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ]
        return torch.optim.AdamW(groups, lr=learning_rate, betas=betas)
