"""WaveNet (van den Oord et al. 2016): the architecture, in one file.

x_t is a mu-law class (256 levels, ``engines.audio.mulaw``). The network reads the classes
of x_<t and gives 256 logits for x_t:

    h = Embedding(256, R)(x)                                      (B, R, T)
    for each layer l with dilation d_l (1, 2, 4, ... 2^(k-1), repeated n_stacks times):
        a = CausalConv1d(R -> 2G, kernel 2, dilation d_l)(h) + cond_l      (B, 2G, T)
        z = tanh(a[:G]) * sigmoid(a[G:])                                  gated unit
        r, s = Conv1x1(G -> R + S)(z)                                     residual and skip
        h = h + r ;  skip += s
    logits = Conv1x1(S -> 256)(relu(Conv1x1(S -> S)(relu(skip))))      (B, 256, T)

The kernel-2 causal convolution with dilation d sees h[t - d] and h[t]; stacking the
dilations gives a receptive field of ``sum(dilations) + 1`` samples.

Global conditioning: an embedding of the digit (10 values + "none") and one of the speaker
(6 + "none") each add a per-layer bias to ``a``. Training replaces each with "none" at a
small rate (``--cond-dropout``), so both may be left unset when generating.

Time convention (shared by training, scoring, the exporter and the engine): output t of
``forward(x)`` is the distribution of the sample AFTER ``x[:, t]``. Before a recording
starts, the context is digital silence (``mulaw.SILENCE``): a recording y_0..y_{n-1} is
scored by feeding ``[SILENCE] * receptive_field + y_0..y_{n-2}`` and reading the last n
outputs, and generation starts from a receptive field of silence.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class WaveNetConfig:
    levels: int = 256
    residual_channels: int = 48  # R
    gate_channels: int = 48  # G: the filter and the gate each get G of the 2G conv outputs
    skip_channels: int = 96  # S
    n_stacks: int = 2
    layers_per_stack: int = 9  # dilations 1 .. 2^(layers_per_stack - 1)
    n_digits: int = 10
    speakers: list[str] = field(default_factory=list)
    sample_rate: int = 8000

    @property
    def dilations(self) -> list[int]:
        return [2 ** i for i in range(self.layers_per_stack)] * self.n_stacks

    @property
    def n_layers(self) -> int:
        return self.n_stacks * self.layers_per_stack

    @property
    def receptive_field(self) -> int:
        return sum(self.dilations) + 1

    @property
    def none_digit(self) -> int:
        return self.n_digits

    @property
    def none_speaker(self) -> int:
        return len(self.speakers)

    def to_dict(self) -> dict:
        return asdict(self)


class WaveNet(nn.Module):
    def __init__(self, config: WaveNetConfig) -> None:
        super().__init__()
        self.config = c = config
        R, G, S, L = c.residual_channels, c.gate_channels, c.skip_channels, c.n_layers
        self.embed = nn.Embedding(c.levels, R)
        self.dilated = nn.ModuleList(nn.Conv1d(R, 2 * G, kernel_size=2, dilation=d) for d in c.dilations)
        # One table per condition holding every layer's bias: (values + 1 "none", L * 2G).
        self.digit_bias = nn.Embedding(c.n_digits + 1, L * 2 * G)
        self.speaker_bias = nn.Embedding(len(c.speakers) + 1, L * 2 * G)
        nn.init.zeros_(self.digit_bias.weight)
        nn.init.zeros_(self.speaker_bias.weight)
        self.res_skip = nn.ModuleList(nn.Conv1d(G, R + S, kernel_size=1) for _ in range(L))
        self.head1 = nn.Conv1d(S, S, kernel_size=1)
        self.head2 = nn.Conv1d(S, c.levels, kernel_size=1)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def cond_bias(self, digit: torch.Tensor, speaker: torch.Tensor) -> torch.Tensor:
        """(B,) ids (none = n) -> (B, L, 2G) per-layer biases."""
        c = self.config
        b = self.digit_bias(digit) + self.speaker_bias(speaker)
        return b.view(-1, c.n_layers, 2 * c.gate_channels)

    def forward(self, x: torch.Tensor, digit: torch.Tensor, speaker: torch.Tensor) -> torch.Tensor:
        """x (B, T) int64 classes -> logits (B, 256, T); output t predicts the sample after x[:, t].

        Causal convs are left-padded with zeros, so only outputs with a full receptive field of
        real context (t >= receptive_field - 1) are exact; callers feed silence before a clip.
        """
        G = self.config.gate_channels
        h = self.embed(x).transpose(1, 2)  # (B, R, T)
        cond = self.cond_bias(digit, speaker).unsqueeze(-1)  # (B, L, 2G, 1)
        skip = 0
        for l, (conv, rs) in enumerate(zip(self.dilated, self.res_skip)):
            a = conv(F.pad(h, (conv.dilation[0], 0))) + cond[:, l]  # (B, 2G, T)
            z = torch.tanh(a[:, :G]) * torch.sigmoid(a[:, G:])
            out = rs(z)  # (B, R + S, T)
            h = h + out[:, : h.shape[1]]
            skip = skip + out[:, h.shape[1]:]
        return self.head2(F.relu(self.head1(F.relu(skip))))

    def loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean NLL in nats over targets (B, T); entries of -100 are ignored (padding)."""
        return F.cross_entropy(logits.float(), targets, ignore_index=-100)
