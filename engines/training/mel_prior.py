"""The frame-level prior: an autoregressive model of log-mel frames given a digit and a speaker.

p(frames, length | digit, speaker) = prod_t p(x_t | x_<t, c) * p(stop_t | x_<=t, c), with

    input_t = [prenet(norm(x_{t-1})), t / 100, digit embedding, speaker embedding]
              (x_{-1} is the silence frame; digit and speaker each have a "none" value)
    h_t     = GRU(input_t, h_{t-1})                         2 layers of H units
    head    = Linear(h_t) -> K mixture logits, K x D means, K x D log-scales, 1 stop logit

Each frame x_t (D = n_mels raw log-mel values) has a mixture of K diagonal Gaussians in
normalised units z = (x - mean) / std. Log-mel values sit on a floor (ln 1e-5) wherever the
audio is digitally silent (a third of all values in FSDD), so the density is CENSORED at the
floor: a value at the floor scores the Gaussian's mass below it (log Phi), a value above it
the Gaussian's density (minus ln std, so the units are those of the raw log-mel). This is
an exact likelihood with respect to a mixed measure (a point mass at the floor plus Lebesgue
above it), and sampling is "draw, then clamp to the floor". The stop bit after frame t
(Bernoulli, 1 at the last frame of a clip) decides where the utterance ends, so generated
clips take their natural length, silence included.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

POSITION_SCALE = 100.0  # the position input is t / 100 (frames are 10 ms)


@dataclass
class MelPriorConfig:
    n_mels: int = 40
    hidden: int = 256
    n_layers: int = 2
    prenet: int = 128
    n_components: int = 8
    cond_dim: int = 32
    n_digits: int = 10
    speakers: list[str] = field(default_factory=list)
    mel_mean: list[float] = field(default_factory=list)
    mel_std: list[float] = field(default_factory=list)
    floor_value: float = math.log(1e-5)
    prenet_dropout: float = 0.3

    @property
    def none_digit(self) -> int:
        return self.n_digits

    @property
    def none_speaker(self) -> int:
        return len(self.speakers)

    def to_dict(self) -> dict:
        return asdict(self)


class MelPrior(nn.Module):
    def __init__(self, config: MelPriorConfig) -> None:
        super().__init__()
        self.config = c = config
        D, K = c.n_mels, c.n_components
        self.prenet = nn.Sequential(nn.Linear(D, c.prenet), nn.ReLU(), nn.Dropout(c.prenet_dropout),
                                    nn.Linear(c.prenet, c.prenet), nn.ReLU(), nn.Dropout(c.prenet_dropout))
        self.digit_embed = nn.Embedding(c.n_digits + 1, c.cond_dim)
        self.speaker_embed = nn.Embedding(len(c.speakers) + 1, c.cond_dim)
        self.gru = nn.GRU(c.prenet + 1 + 2 * c.cond_dim, c.hidden, num_layers=c.n_layers, batch_first=True)
        self.head = nn.Linear(c.hidden, K + 2 * K * D + 1)
        self.register_buffer("mean", torch.tensor(c.mel_mean or [0.0] * D).view(1, 1, D), persistent=False)
        self.register_buffer("std", torch.tensor(c.mel_std or [1.0] * D).view(1, 1, D), persistent=False)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def norm(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def inputs(self, prev: torch.Tensor, digit: torch.Tensor, speaker: torch.Tensor) -> torch.Tensor:
        """prev (B, T, D) raw frames x_{t-1} -> the GRU input (B, T, prenet + 1 + 2 cond)."""
        B, T, _ = prev.shape
        pos = (torch.arange(T, dtype=prev.dtype, device=prev.device) / POSITION_SCALE).view(1, T, 1).expand(B, T, 1)
        cond = torch.cat([self.digit_embed(digit), self.speaker_embed(speaker)], dim=-1)  # (B, 2c)
        return torch.cat([self.prenet(self.norm(prev)), pos, cond[:, None].expand(B, T, -1)], dim=-1)

    def split_head(self, out: torch.Tensor):
        """(..., K + 2KD + 1) -> mixture logits (..., K), means (..., K, D), log-scales (..., K, D), stop (...)."""
        c = self.config
        K, D = c.n_components, c.n_mels
        logit_pi = out[..., :K]
        mu = out[..., K:K + K * D].unflatten(-1, (K, D))
        log_sigma = out[..., K + K * D:K + 2 * K * D].unflatten(-1, (K, D)).clamp(-7.0, 3.0)
        return logit_pi, mu, log_sigma, out[..., -1]

    def forward(self, frames: torch.Tensor, digit: torch.Tensor, speaker: torch.Tensor):
        """frames (B, T, D) raw -> the head's outputs for every t (teacher forcing; split_head's shapes)."""
        B, T, D = frames.shape
        silence = torch.full((B, 1, D), self.config.floor_value, dtype=frames.dtype)
        prev = torch.cat([silence, frames[:, :-1]], dim=1)
        h, _ = self.gru(self.inputs(prev, digit, speaker))
        return self.split_head(self.head(h))

    def frame_logprob(self, frames: torch.Tensor, logit_pi, mu, log_sigma) -> torch.Tensor:
        """ln p(x_t | x_<t) of raw frames (B, T, D) under the censored mixture -> (B, T)."""
        z = self.norm(frames)[..., None, :]  # (B, T, 1, D)
        floor_z = ((self.config.floor_value - self.mean) / self.std)[..., None, :]  # (1, 1, 1, D)
        at_floor = frames[..., None, :] <= self.config.floor_value + 1e-4
        sigma = log_sigma.exp()
        dens = -0.5 * ((z - mu) / sigma) ** 2 - log_sigma - 0.5 * math.log(2 * math.pi) - torch.log(self.std)[..., None, :]
        mass = torch.special.log_ndtr((floor_z - mu) / sigma)
        per_dim = torch.where(at_floor, mass, dens)  # (B, T, K, D)
        return torch.logsumexp(F.log_softmax(logit_pi, dim=-1) + per_dim.sum(-1), dim=-1)

    def nll(self, frames: torch.Tensor, lengths: torch.Tensor, digit: torch.Tensor, speaker: torch.Tensor):
        """(sum of -ln p(frames, stops) over the real frames, number of real frames); padding is masked."""
        logit_pi, mu, log_sigma, stop = self(frames, digit, speaker)
        T = frames.shape[1]
        t = torch.arange(T)[None]
        real = t < lengths[:, None]
        last = t == (lengths[:, None] - 1)
        lp = self.frame_logprob(frames, logit_pi, mu, log_sigma)
        lp_stop = -F.binary_cross_entropy_with_logits(stop, last.to(stop.dtype), reduction="none")
        total = ((lp + lp_stop) * real).sum()
        return -total, real.sum()


class MelPriorStep(nn.Module):
    """One frame per call, for export: the GRU written out as its equations with nn.GRU's weights
    (gates r, z, n in that order), and the head's outputs turned into raw log-mel units.

    frame (B, D) raw x_{t-1}; position (B,) float t; digit, speaker (B,) int64; state (layers, B, H)
    -> logit_pi (B, K), mean (B, K, D) raw, scale (B, K, D) raw, stop_logit (B,), state_out."""

    def __init__(self, prior: MelPrior) -> None:
        super().__init__()
        self.prior = prior

    def forward(self, frame, position, digit, speaker, state):
        p = self.prior
        c = p.config
        x = torch.cat([p.prenet(p.norm(frame[:, None]))[:, 0], (position / POSITION_SCALE)[:, None],
                       p.digit_embed(digit), p.speaker_embed(speaker)], dim=-1)
        new = []
        for layer in range(c.n_layers):
            h = state[layer]
            w_ih, w_hh = getattr(p.gru, f"weight_ih_l{layer}"), getattr(p.gru, f"weight_hh_l{layer}")
            b_ih, b_hh = getattr(p.gru, f"bias_ih_l{layer}"), getattr(p.gru, f"bias_hh_l{layer}")
            gi = x @ w_ih.T + b_ih
            gh = h @ w_hh.T + b_hh
            i_r, i_z, i_n = gi.chunk(3, dim=-1)
            h_r, h_z, h_n = gh.chunk(3, dim=-1)
            r = torch.sigmoid(i_r + h_r)
            z = torch.sigmoid(i_z + h_z)
            n = torch.tanh(i_n + r * h_n)
            h = (1 - z) * n + z * h
            new.append(h)
            x = h
        logit_pi, mu, log_sigma, stop = p.split_head(p.head(x))
        mean = p.mean.view(1, 1, -1) + p.std.view(1, 1, -1) * mu
        scale = p.std.view(1, 1, -1) * log_sigma.exp()
        return logit_pi, mean, scale, stop, torch.stack(new)
