"""Gated PixelCNN (van den Oord et al. 2016, "Conditional Image Generation with PixelCNN Decoders").

The whole architecture lives in this file: the full-image network used for training and
scoring, and the two step modules the exporter turns into the fast-sampling graphs.

Notation: B batch, C image channels (1 grey, 3 RGB), H x W image, F = n_filters,
L = n_layers, S = head_filters, V = values per channel of the output (levels for a
categorical output, 1 logit for a Bernoulli output).

Layout
------
* Two stacks, so there is no blind spot:
  - the *vertical* stack at (r, c) sees every input pixel in the rows strictly above r
    inside its (growing) receptive field, to the left *and* the right of c;
  - the *horizontal* stack at (r, c) sees the pixels of row r strictly left of c (and,
    for colour, the earlier channels of pixel (r, c) itself); it also receives the
    vertical stack through a 1x1 "link" at each layer.
* Masked convolutions: layer 0 is type A (may not see the current pixel: the vertical
  kernel's current row is masked out, the horizontal kernel's centre only connects a
  colour to *earlier* colours), layers 1.. are type B (the centre connects a colour to
  earlier colours and to itself). The kernels are cut to their causal half and padded
  asymmetrically, so no compute is spent on taps that are always masked; the masks that
  remain are kept as buffers and multiplied into the weights (`bake_masks` folds them in
  for export).
* Gated units tanh(a) * sigmoid(b); residual connections in the horizontal stack (from
  layer 1 on), skip connections from every layer into a ReLU-1x1-ReLU-1x1 output head.
* Class conditioning: a learned per-layer bias for both stacks, looked up from the label.
  Labels 0..n_classes-1 are classes; label n_classes means "no label" (unconditional), so
  one network does both when trained with label dropout.
* Colour (C = 3): every feature map is split into C contiguous channel groups (R, G, B);
  group g may only see input channels of groups < g at the current pixel (type A) or
  <= g (type B), so the output for G depends on R of the same pixel and B on R and G, never
  the other way round.

Inputs are raw pixel values in [0, levels - 1] (float); the network scales them to [0, 1]
itself, so black is 0 and the zero padding at the borders is black, like the background
of MNIST (and the zero-filled caches of the step graphs agree with the full network).
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

OUTPUTS = ("categorical", "bernoulli")


@dataclass
class PixelCNNConfig:
    height: int = 28
    width: int = 28
    channels: int = 1  # 1 grey, 3 RGB (R -> G -> B inside a pixel)
    levels: int = 256  # values per channel: 256 grey levels, or 2 for binarized images
    output: str = "categorical"  # "categorical": levels-way softmax; "bernoulli": one logit (levels == 2)
    n_filters: int = 64  # F: features per stack (divisible by `channels`)
    n_layers: int = 8  # L: gated layers; layer 0 is type A, the rest type B
    kernel_size: int = 3  # k of layers 1.. (odd): vertical (k//2 + 1) x k, horizontal 1 x (k//2 + 1)
    first_kernel_size: int = 7  # k of layer 0 (odd)
    head_filters: int = 128  # S: width of the skip sum and the output head (divisible by `channels`)
    n_classes: int = 10  # labels 0..n_classes-1; label n_classes = unconditional; 0 = unconditional only

    def __post_init__(self) -> None:
        problems = []
        if self.output not in OUTPUTS:
            problems.append(f"output must be one of {OUTPUTS}")
        if self.output == "bernoulli" and self.levels != 2:
            problems.append("a bernoulli output needs levels = 2")
        if self.levels < 2:
            problems.append("levels must be >= 2")
        for name in ("kernel_size", "first_kernel_size"):
            k = getattr(self, name)
            if k < 3 or k % 2 == 0:
                problems.append(f"{name} must be odd and >= 3")
        if self.n_layers < 2:
            problems.append("n_layers must be >= 2")
        if self.channels < 1 or self.n_filters % self.channels or self.head_filters % self.channels:
            problems.append("n_filters and head_filters must be multiples of channels")
        if self.n_classes < 0:
            problems.append("n_classes must be >= 0")
        if problems:
            raise ValueError("PixelCNNConfig: " + "; ".join(problems))

    @property
    def out_values(self) -> int:
        """V: outputs per channel and pixel (1 logit for Bernoulli, `levels` logits otherwise)."""
        return 1 if self.output == "bernoulli" else self.levels

    @property
    def none_label(self) -> int:
        return self.n_classes

    # Window sizes of the step graphs (how many earlier rows / columns each layer keeps).
    @property
    def row_window(self) -> int:
        """Rows of the image above row r that layer 0 of the vertical stack reads (k0 // 2)."""
        return self.first_kernel_size // 2

    @property
    def vertical_window(self) -> int:
        """Rows of earlier vertical features each layer >= 1 keeps (k // 2)."""
        return self.kernel_size // 2

    @property
    def pixel_window(self) -> int:
        """Columns of the image row layer 0 of the horizontal stack reads, centre included (k0//2 + 1)."""
        return self.first_kernel_size // 2 + 1

    @property
    def horizontal_window(self) -> int:
        """Columns of earlier horizontal features each layer >= 1 keeps (k // 2)."""
        return self.kernel_size // 2

    def to_dict(self) -> dict:
        return asdict(self)


# --- masks --------------------------------------------------------------------------

def channel_groups(n: int, channels: int, gated: bool = False) -> torch.Tensor:
    """Colour group (0 = R, 1 = G, 2 = B) of each of `n` feature channels, as (n,) int64.

    Groups are contiguous blocks. A gated pre-activation (2F channels: tanh half, then
    sigmoid half) repeats the pattern in both halves, so tanh(a_j) * sigmoid(b_j) stays
    inside one group.
    """
    if gated:
        half = channel_groups(n // 2, channels)
        return torch.cat([half, half])
    return torch.arange(n) * channels // n


def channel_mask(out_groups: torch.Tensor, in_groups: torch.Tensor, include_same: bool) -> torch.Tensor:
    """(out, in) float: 1 where output group > input group (type A), or >= (type B)."""
    o, i = out_groups[:, None], in_groups[None, :]
    return ((o > i) | ((o == i) & include_same)).float()


class MaskedConv2d(nn.Module):
    """A conv with a fixed 0/1 mask on its weight and asymmetric zero padding.

    weight (out, in, kh, kw) * mask (out, in, kh, kw); `pad` = (left, right, top, bottom).
    After `bake()` the weight already holds the masked values and the mask is dropped
    from the computation (the exported graph has no mask anywhere).
    """

    def __init__(self, cin: int, cout: int, kernel: tuple[int, int], pad: tuple[int, int, int, int],
                 mask: torch.Tensor | None = None):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, padding=0)
        self.pad = pad
        if mask is None:
            mask = torch.ones_like(self.conv.weight)
        self.register_buffer("mask", mask.clone())
        self.baked = False
        with torch.no_grad():  # start from the masked weights; masked taps get no gradient
            self.conv.weight.mul_(self.mask)

    def weight(self) -> torch.Tensor:
        return self.conv.weight if self.baked else self.conv.weight * self.mask

    @property
    def bias(self) -> torch.Tensor:
        return self.conv.bias

    def bake(self) -> None:
        with torch.no_grad():
            self.conv.weight.mul_(self.mask)
        self.baked = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if any(self.pad):
            x = F.pad(x, self.pad)
        return F.conv2d(x, self.weight(), self.conv.bias)


def masked_1x1(cin: int, cout: int, channels: int, *, in_gated: bool = False, out_gated: bool = False,
               in_groups: torch.Tensor | None = None, out_groups: torch.Tensor | None = None) -> MaskedConv2d:
    """A type B 1x1 conv (a colour group sees its own and earlier groups); unmasked when grey."""
    og = channel_groups(cout, channels, out_gated) if out_groups is None else out_groups
    ig = channel_groups(cin, channels, in_gated) if in_groups is None else in_groups
    mask = channel_mask(og, ig, include_same=True)[:, :, None, None]  # (out, in, 1, 1)
    return MaskedConv2d(cin, cout, (1, 1), (0, 0, 0, 0), mask)


def gate(x: torch.Tensor, half: int, dim: int = 1) -> torch.Tensor:
    """tanh(first half) * sigmoid(second half) along `dim`: (.., 2F, ..) -> (.., F, ..), F = `half`.

    The split size is a Python int, so the exported graph has one static Split node.
    """
    a, b = torch.split(x, half, dim=dim)
    return torch.tanh(a) * torch.sigmoid(b)


class GatedLayer(nn.Module):
    """One layer of both stacks. Layer 0 is type A (reads the image), the others type B."""

    def __init__(self, cfg: PixelCNNConfig, first: bool):
        super().__init__()
        C, Fn, S = cfg.channels, cfg.n_filters, cfg.head_filters
        k = cfg.first_kernel_size if first else cfg.kernel_size
        half = k // 2
        cin = C if first else Fn
        in_groups = torch.arange(C) if first else channel_groups(Fn, C)
        pre_groups = channel_groups(2 * Fn, C, gated=True)
        self.first = first
        self.half = Fn

        # vertical: kernel (half + 1) x k over rows r-half..r; layer 0 masks row r (type A)
        v_mask = torch.ones(2 * Fn, cin, half + 1, k)
        if first:
            v_mask[:, :, -1, :] = 0
        self.v_conv = MaskedConv2d(cin, 2 * Fn, (half + 1, k), (half, half, half, 0), v_mask)

        # horizontal: kernel 1 x (half + 1) over columns c-half..c; the centre column is
        # channel-masked: earlier colour groups only (type A) or earlier and same (type B)
        h_mask = torch.ones(2 * Fn, cin, 1, half + 1)
        h_mask[:, :, 0, -1] = channel_mask(pre_groups, in_groups, include_same=not first)
        self.h_conv = MaskedConv2d(cin, 2 * Fn, (1, half + 1), (half, 0, 0, 0), h_mask)

        # vertical -> horizontal link: v at row r only saw rows < r, so no mask is needed
        self.link = nn.Conv2d(2 * Fn, 2 * Fn, 1)
        self.h_out = masked_1x1(Fn, Fn, C)  # gated features -> residual update
        self.skip = masked_1x1(Fn, S, C)  # gated features -> skip sum

    def forward(self, v_in, h_in, cond_v, cond_h):
        """v_in, h_in: (B, cin, H, W); cond_*: (B, 2F, 1, 1) -> v, h: (B, F, H, W), skip (B, S, H, W)."""
        v_pre = self.v_conv(v_in) + cond_v  # (B, 2F, H, W)
        h_pre = self.h_conv(h_in) + self.link(v_pre) + cond_h  # (B, 2F, H, W)
        v = gate(v_pre, self.half)  # (B, F, H, W)
        g = gate(h_pre, self.half)  # (B, F, H, W)
        h = self.h_out(g)  # (B, F, H, W)
        if not self.first:
            h = h + h_in  # residual
        return v, h, self.skip(g)


class PixelCNN(nn.Module):
    def __init__(self, cfg: PixelCNNConfig):
        super().__init__()
        self.config = cfg
        C, Fn, S, V, L = cfg.channels, cfg.n_filters, cfg.head_filters, cfg.out_values, cfg.n_layers
        self.layers = nn.ModuleList([GatedLayer(cfg, first=(i == 0)) for i in range(L)])
        # per-layer conditioning biases, (v: 2F, h: 2F) per layer; row n_classes = no label
        self.label_bias = nn.Embedding(cfg.n_classes + 1, L * 2 * 2 * Fn)
        nn.init.zeros_(self.label_bias.weight)
        out_groups = channel_groups(C * V, C)  # output channel o = (colour o // V, value o % V)
        self.head1 = masked_1x1(S, S, C)
        self.head2 = masked_1x1(S, C * V, C, out_groups=out_groups)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def bake_masks(self) -> "PixelCNN":
        """Fold every mask into its weight (in place); the model computes the same function."""
        for m in self.modules():
            if isinstance(m, MaskedConv2d):
                m.bake()
        return self

    def conditioning(self, labels: torch.Tensor) -> torch.Tensor:
        """labels (B,) int64 -> (B, L, 2, 2F): per layer, the vertical and horizontal bias."""
        cfg = self.config
        return self.label_bias(labels).view(-1, cfg.n_layers, 2, 2 * cfg.n_filters)

    def scale(self, x: torch.Tensor) -> torch.Tensor:
        return x * (1.0 / (self.config.levels - 1))

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """x (B, C, H, W) raw values in [0, levels-1], labels (B,) -> logits (B, H, W, C, V)."""
        cfg = self.config
        B, C, H, W = x.shape
        cond = self.conditioning(labels)[..., None, None]  # (B, L, 2, 2F, 1, 1)
        v = h = self.scale(x)  # (B, C, H, W)
        skip = 0
        for i, layer in enumerate(self.layers):
            v, h, s = layer(v, h, cond[:, i, 0], cond[:, i, 1])  # (B, F, H, W) x2, (B, S, H, W)
            skip = skip + s
        out = self.head2(F.relu(self.head1(F.relu(skip))))  # (B, C*V, H, W)
        return out.view(B, C, cfg.out_values, H, W).permute(0, 3, 4, 1, 2)  # (B, H, W, C, V)

    def loss(self, logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Mean negative log-likelihood per dimension (nats) of x (B, C, H, W) under logits (B, H, W, C, V)."""
        target = x.permute(0, 2, 3, 1)  # (B, H, W, C)
        if self.config.output == "bernoulli":
            return F.binary_cross_entropy_with_logits(logits[..., 0], target.float())
        return F.cross_entropy(logits.reshape(-1, self.config.out_values), target.reshape(-1).long())

    def log_prob(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """log p(x) per image (B,), in nats."""
        logits = self.forward(x, labels)  # (B, H, W, C, V)
        target = x.permute(0, 2, 3, 1)  # (B, H, W, C)
        if self.config.output == "bernoulli":
            lp = -F.binary_cross_entropy_with_logits(logits[..., 0], target.float(), reduction="none")
        else:
            lp = torch.log_softmax(logits, -1).gather(-1, target.long().unsqueeze(-1)).squeeze(-1)
        return lp.flatten(1).sum(1)


# --- step modules for fast sampling ---------------------------------------------------
#
# Sampling needs the output at one pixel at a time. Instead of running the whole network
# per pixel, the engine runs
#   * RowStep once per row r (when rows < r are final): every layer's vertical features at
#     row r, from windows of the rows above it that the engine keeps (Fast PixelCNN++ style
#     caches), and the link terms the horizontal stack adds at row r;
#   * PixelStep once per pixel (once per channel for colour): the horizontal stack and the
#     head at the single position (r, c), from windows of the columns to its left.
# Both use the same (masked) weights as PixelCNN.forward and compute the same numbers.

class RowStep(nn.Module):
    """Vertical stack for one row.

    inputs
      xwin  (B, C, k0//2, W)       image rows r-k0//2 .. r-1 (raw values; zeros above the image)
      vwin  (B, L-1, F, k//2, W)   vertical features v_l of rows r-k//2 .. r-1, l = 0..L-2
      label (B,) int64
    outputs
      link  (B, L, 2F, W)          per layer: link(v_pre) + horizontal conv bias + label bias, row r
      vrow  (B, L-1, F, W)         v_l at row r, l = 0..L-2 (the engine appends them to vwin)
    """

    def __init__(self, model: PixelCNN):
        super().__init__()
        self.model = model

    def forward(self, xwin, vwin, label):
        m, cfg = self.model, self.model.config
        cond = m.conditioning(label)[..., None, None]  # (B, L, 2, 2F, 1, 1)
        links, vrows = [], []
        v = None
        for i, layer in enumerate(m.layers):
            vc = layer.v_conv
            half = vc.conv.kernel_size[1] // 2
            if i == 0:  # type A: only the kernel rows above the current one
                win = F.pad(m.scale(xwin), (half, half, 0, 0))  # (B, C, k0//2, W + 2 half)
                w = vc.weight()[:, :, :-1, :]
            else:
                win = F.pad(torch.cat([vwin[:, i - 1], v], dim=2), (half, half, 0, 0))  # (B, F, k//2 + 1, W + 2 half)
                w = vc.weight()
            v_pre = F.conv2d(win, w, vc.bias) + cond[:, i, 0]  # (B, 2F, 1, W)
            links.append(layer.link(v_pre) + layer.h_conv.bias[None, :, None, None] + cond[:, i, 1])  # (B, 2F, 1, W)
            v = gate(v_pre, cfg.n_filters)  # (B, F, 1, W)
            if i < cfg.n_layers - 1:
                vrows.append(v)
        link = torch.stack(links, 1)[:, :, :, 0, :]  # (B, L, 2F, W)
        vrow = torch.stack(vrows, 1)[:, :, :, 0, :]  # (B, L-1, F, W)
        return link, vrow


def _as_matrix(conv: MaskedConv2d) -> torch.Tensor:
    """Conv weight (out, in, kh, kw) -> (out, in*kh*kw), matching a flattened (in, kh, kw) window."""
    w = conv.weight()
    return w.reshape(w.shape[0], -1)


class PixelStep(nn.Module):
    """Horizontal stack and output head at one position (r, c).

    inputs
      xwin (B, C, k0//2 + 1)        image row r, columns c-k0//2 .. c (raw; zeros left of the image);
                                    the centre column holds the channels of (r, c) known so far
      hwin (B, L-1, F, k//2)        horizontal features h_l at columns c-k//2 .. c-1, l = 0..L-2
      link (B, L, 2F)               RowStep's link output at column c
    outputs
      logits (B, C, V)              the output distribution of pixel (r, c)
      hcol   (B, L-1, F)            h_l at (r, c), l = 0..L-2 (the engine appends them to hwin)
    """

    def __init__(self, model: PixelCNN):
        super().__init__()
        self.model = model

    def forward(self, xwin, hwin, link):
        m, cfg = self.model, self.model.config
        skip = 0
        hcols = []
        h = None
        for i, layer in enumerate(m.layers):
            if i == 0:
                win = m.scale(xwin)  # (B, C, k0//2 + 1)
            else:
                win = torch.cat([hwin[:, i - 1], h[:, :, None]], dim=2)  # (B, F, k//2 + 1)
            pre = win.flatten(1) @ _as_matrix(layer.h_conv).t() + link[:, i]  # (B, 2F)
            g = gate(pre, cfg.n_filters)  # (B, F)
            upd = g @ _as_matrix(layer.h_out).t() + layer.h_out.bias  # (B, F)
            h = upd if i == 0 else h + upd
            skip = skip + g @ _as_matrix(layer.skip).t() + layer.skip.bias  # (B, S)
            if i < cfg.n_layers - 1:
                hcols.append(h)
        z = F.relu(F.relu(skip) @ _as_matrix(m.head1).t() + m.head1.bias)  # (B, S)
        out = z @ _as_matrix(m.head2).t() + m.head2.bias  # (B, C*V)
        return out.reshape(-1, cfg.channels, cfg.out_values), torch.stack(hcols, 1)


def baked_copy(model: PixelCNN) -> PixelCNN:
    """An eval-mode copy with the masks folded into the weights (for export)."""
    return copy.deepcopy(model).float().eval().bake_masks()
