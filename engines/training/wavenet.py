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

Local conditioning (the vocoder, ``n_mels > 0``): log-mel frames (``engines.audio.mel``) of
the clip, with one silence frame in front, are normalised by the training set's per-bin mean
and std, then

    c = Conv1x1(C -> L * 2G)(tanh(Conv1d(n_mels -> C, kernel 3, edge-padded)(frames)))   (B, L*2G, F+1)

gives every layer's bias at FRAME rate; it is brought to the sample rate by repetition
(a gather with ``engines.audio.mel.frame_of_sample``: each sample reads its nearest frame).
Repeating after the projection costs L*2G*(F+1) instead of L*2G*T values of work, and the
kernel-3 convolution lets each frame's bias see its neighbours (+-10 ms).

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
    # local conditioning (a vocoder); 0 mels means none
    n_mels: int = 0
    cond_channels: int = 128
    hop: int = 80
    mel_mean: list[float] = field(default_factory=list)  # (n_mels,) training-set statistics of the raw frames
    mel_std: list[float] = field(default_factory=list)

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
        if c.n_mels > 0:
            self.local_in = nn.Conv1d(c.n_mels, c.cond_channels, kernel_size=3)
            self.local_out = nn.Conv1d(c.cond_channels, L * 2 * G, kernel_size=1)
            mean = torch.tensor(c.mel_mean or [0.0] * c.n_mels, dtype=torch.float32)
            std = torch.tensor(c.mel_std or [1.0] * c.n_mels, dtype=torch.float32)
            self.register_buffer("mel_mean", mean.view(1, -1, 1), persistent=False)
            self.register_buffer("mel_std", std.view(1, -1, 1), persistent=False)
        self.head1 = nn.Conv1d(S, S, kernel_size=1)
        self.head2 = nn.Conv1d(S, c.levels, kernel_size=1)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def cond_bias(self, digit: torch.Tensor, speaker: torch.Tensor) -> torch.Tensor:
        """(B,) ids (none = n) -> (B, L, 2G) per-layer biases."""
        c = self.config
        b = self.digit_bias(digit) + self.speaker_bias(speaker)
        return b.view(-1, c.n_layers, 2 * c.gate_channels)

    def local_bias(self, frames: torch.Tensor) -> torch.Tensor:
        """Raw log-mel frames (B, n_mels, F) -> every layer's bias at frame rate (B, L * 2G, F)."""
        z = (frames - self.mel_mean) / self.mel_std
        return self.local_out(torch.tanh(self.local_in(F.pad(z, (1, 1), mode="replicate"))))

    def forward(self, x: torch.Tensor, digit: torch.Tensor, speaker: torch.Tensor,
                frames: torch.Tensor | None = None, frame_index: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, T) int64 classes -> logits (B, 256, T); output t predicts the sample after x[:, t].

        Causal convs are left-padded with zeros, so only outputs with a full receptive field of
        real context (t >= receptive_field - 1) are exact; callers feed silence before a clip.
        A vocoder also takes frames (B, n_mels, F) and frame_index (B, T): the frame whose bias
        output t uses (that of the sample it predicts).
        """
        c = self.config
        G = c.gate_channels
        h = self.embed(x).transpose(1, 2)  # (B, R, T)
        cond = self.cond_bias(digit, speaker).unsqueeze(-1)  # (B, L, 2G, 1)
        local = None
        if c.n_mels > 0:
            if frames is None or frame_index is None:
                raise ValueError("a vocoder needs frames and frame_index")
            local = self.local_bias(frames).view(frames.shape[0], c.n_layers, 2 * G, -1)  # (B, L, 2G, F)
            # repeated to the sample rate one layer at a time: (B, 2G, T) each, never all L at once
            index = frame_index[:, None, :].expand(-1, 2 * G, -1)
        skip = 0
        for l, (conv, rs) in enumerate(zip(self.dilated, self.res_skip)):
            a = conv(F.pad(h, (conv.dilation[0], 0))) + cond[:, l]  # (B, 2G, T)
            if local is not None:
                a = a + local[:, l].gather(2, index)
            z = torch.tanh(a[:, :G]) * torch.sigmoid(a[:, G:])
            out = rs(z)  # (B, R + S, T)
            h = h + out[:, : h.shape[1]]
            skip = skip + out[:, h.shape[1]:]
        return self.head2(F.relu(self.head1(F.relu(skip))))

    def loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean NLL in nats over targets (B, T); entries of -100 are ignored (padding)."""
        return F.cross_entropy(logits.float(), targets, ignore_index=-100)
