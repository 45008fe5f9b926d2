"""The torch side of `chainrule bench audio`: the shipped weights in torch eager, generating with
the same Fast WaveNet queues as the ONNX engine.

Only ONNX files ship, so the weights are read back from `model.onnx`, whose initializers carry
the state-dict names (`engines.training.wavenet_onnx_graph`). `TorchCachedStepper` does the
step's math with torch ops (per layer: the past and current taps, the gated unit, residual
and skip), with the ring buffers as one torch tensor indexed like the engine's; it plugs into
the engine's sampling loop, so the samples drawn for a seed can be compared with ONNX's.
"""

from __future__ import annotations

import statistics
import time

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import numpy_helper

from engines.audio.generate import LogitStepper, padded_context, sample_loop
from engines.registry import ModelInfo
from engines.training.wavenet import WaveNet, WaveNetConfig
from engines.training.wavenet_onnx_graph import state_dict_from_initializers


def wavenet_from_onnx(info: ModelInfo) -> WaveNet:
    """The torch WaveNet holding the weights of the model folder's `model.onnx`."""
    arch = info.card["architecture"]
    config = WaveNetConfig(
        levels=int(arch["levels"]), residual_channels=int(arch["residual_channels"]),
        gate_channels=int(arch["gate_channels"]), skip_channels=int(arch["skip_channels"]),
        n_stacks=int(arch["n_stacks"]), layers_per_stack=int(arch["layers_per_stack"]),
        n_digits=int(arch["n_digits"]), speakers=list(arch["speakers"]), sample_rate=int(arch["sample_rate"]))
    graph = onnx.load(str(info.file("model"))).graph
    inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    state = state_dict_from_initializers(inits, config.n_layers)
    model = WaveNet(config)
    model.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in state.items()}, strict=True)
    return model.eval()


class TorchCachedStepper(LogitStepper):
    """The cached step in torch eager (one sample per call; the host samples, as for the naive path)."""

    def __init__(self, model: WaveNet, digit_ids: np.ndarray, speaker_ids: np.ndarray) -> None:
        c = model.config
        self.model, self.batch = model, len(digit_ids)
        self.G, self.R = c.gate_channels, c.residual_channels
        dil = np.asarray(c.dilations, dtype=np.int64)
        self.dilations = c.dilations
        self.offsets = np.concatenate([[0], np.cumsum(dil)[:-1]])
        self.period = int(np.lcm.reduce(dil))
        self.slots = torch.from_numpy(self.offsets[None, :] + np.arange(self.period)[:, None] % dil[None, :])
        self.digit_ids = torch.from_numpy(np.asarray(digit_ids, np.int64))
        self.speaker_ids = torch.from_numpy(np.asarray(speaker_ids, np.int64))
        with torch.no_grad():
            cond = model.cond_bias(self.digit_ids, self.speaker_ids)  # (B, L, 2G)
            self.layers = [(conv.weight[:, :, 0].contiguous(), conv.weight[:, :, 1].contiguous(),
                            conv.bias + cond[:, l], rs.weight[:, :, 0].contiguous(), rs.bias)
                           for l, (conv, rs) in enumerate(zip(model.dilated, model.res_skip))]
        self.buffer = torch.zeros(int(dil.sum()), self.batch, self.R)
        self.t = 0

    @torch.no_grad()
    def prime(self, context: np.ndarray) -> np.ndarray:
        rf, D = self.model.config.receptive_field, max(self.dilations)
        window = D + rf - 1
        ctx = padded_context(context, window + 1)
        x = torch.from_numpy(ctx[-window - 1:-1])[None].repeat(self.batch, 1)
        h = self.model.embed(x).transpose(1, 2)  # (B, R, W)
        G = self.G
        for l, (conv, (_, _, bias_cond, w_rs, b_rs)) in enumerate(zip(self.model.dilated, self.layers)):
            d = self.dilations[l]
            taus = np.arange(-d, 0)
            self.buffer[torch.from_numpy(self.offsets[l] + taus % d)] = h[:, :, window + taus].permute(2, 0, 1)
            a = F.conv1d(F.pad(h, (d, 0)), conv.weight, dilation=d) + bias_cond[:, :, None]
            z = torch.tanh(a[:, :G]) * torch.sigmoid(a[:, G:])
            h = h + F.conv1d(z, w_rs[:, :, None], b_rs)[:, : self.R]
        self.t = 0
        return np.full((self.batch,), ctx[-1], dtype=np.int64)

    @torch.no_grad()
    def step(self, x: np.ndarray) -> np.ndarray:
        G, R = self.G, self.R
        slots = self.slots[self.t % self.period]
        past = self.buffer[slots]  # (L, B, R)
        h = self.model.embed(torch.from_numpy(x))  # (B, R)
        new = torch.empty_like(past)
        skip = 0
        for l, (w_past, w_cur, bias_cond, w_rs, b_rs) in enumerate(self.layers):
            new[l] = h
            a = F.linear(past[l], w_past) + F.linear(h, w_cur) + bias_cond
            z = torch.tanh(a[:, :G]) * torch.sigmoid(a[:, G:])
            out = F.linear(z, w_rs, b_rs)
            h = h + out[:, :R]
            skip = skip + out[:, R:]
        self.buffer[slots] = new
        self.t += 1
        m = self.model
        y = F.linear(F.relu(F.linear(F.relu(skip), m.head1.weight[:, :, 0], m.head1.bias)), m.head2.weight[:, :, 0],
                     m.head2.bias)
        return y.numpy()


def torch_generate(model: WaveNet, n: int, *, seed: int, digit_id: int, speaker_id: int, temperature: float = 1.0,
                   batch: int = 1, context: np.ndarray | None = None) -> np.ndarray:
    """(B, n) classes drawn with the torch stepper and the engine's sampler."""
    from engines.audio import mulaw

    stepper = TorchCachedStepper(model, np.full(batch, digit_id), np.full(batch, speaker_id))
    ctx = context if context is not None else np.array([mulaw.SILENCE], dtype=np.int64)
    chunks = sample_loop(stepper, ctx, n, temperature, seed, batch, n)
    return np.concatenate([c.classes for c in chunks], axis=1)


def torch_cached_samples_per_second(info: ModelInfo, audio_model, n: int, *, seed: int, digit: int | None,
                                    repeats: int = 3) -> tuple[float, np.ndarray]:
    """Samples per second (median of `repeats`) and the (1, n) classes drawn, batch 1, one thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model = wavenet_from_onnx(info)
        times, classes = [], None
        for _ in range(repeats):
            t0 = time.perf_counter()
            classes = torch_generate(model, n, seed=seed, digit_id=audio_model.digit_value(digit),
                                     speaker_id=audio_model.none_speaker)
            times.append(time.perf_counter() - t0)
    finally:
        torch.set_num_threads(threads)
    return n / statistics.median(times), classes
