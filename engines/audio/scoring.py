"""Exact log-likelihood of a recording under a WaveNet, sample by sample, through `model.onnx`.

A recording y_0..y_{n-1} (mu-law classes) is scored as in training: the network reads
``[SILENCE] * receptive_field + y_0..y_{n-2}`` and output ``receptive_field - 1 + i`` is the
distribution of y_i, so the first sample is predicted from silence alone. Long recordings
are cut into segments, each read with the receptive field of samples before it, which gives
the same numbers as one pass with bounded memory. Many clips (evaluation) are scored in
batches of similar length, padded at the end (the network is causal: padding after a clip
changes none of its outputs).

The surprise track for display is -log2 p of each sample smoothed by a centred moving
average of `SURPRISE_WINDOW` samples (10 ms at 8 kHz; near the ends, the mean of the part of
the window inside the recording).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from engines.audio import mulaw
from engines.audio.model import AudioModel
from engines.errors import InputError

SURPRISE_WINDOW = 80
SEGMENT = 32_000  # outputs per full-network call when scoring one long recording
BATCH_POSITIONS = 60_000  # padded positions per call when scoring many clips
LN2 = math.log(2)


@dataclass
class AudioScore:
    logprobs: np.ndarray  # (n,) float64: ln p(sample i | samples before it), the first given silence
    total_logprob: float
    bits_per_sample: float
    surprise_bits: np.ndarray  # (n,) float64: -log2 p, smoothed over SURPRISE_WINDOW samples
    classes: np.ndarray  # (n,) int64: the mu-law classes that were scored

    @property
    def n(self) -> int:
        return len(self.logprobs)


def _log_softmax_at(logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """logits (..., V) float32, targets (...) -> ln softmax(logits)[target] in float64."""
    z = logits.astype(np.float64)
    m = z.max(axis=-1, keepdims=True)
    lse = m[..., 0] + np.log(np.exp(z - m).sum(axis=-1))
    return np.take_along_axis(z, targets[..., None], axis=-1)[..., 0] - lse


def score_classes(model: AudioModel, classes: np.ndarray, digit_id: int, speaker_id: int,
                  segment: int = SEGMENT) -> np.ndarray:
    """ln p of every class of `classes` (n,) given all before it (silence before the start) -> (n,) float64."""
    classes = np.asarray(classes, dtype=np.int64).reshape(-1)
    n, rf = len(classes), model.receptive_field
    if n == 0:
        return np.zeros(0)
    inputs = np.concatenate([np.full(rf, mulaw.SILENCE, dtype=np.int64), classes[:-1]])  # output rf-1+i -> y_i
    d, s = np.array([digit_id], np.int64), np.array([speaker_id], np.int64)
    out = np.empty(n)
    for a in range(0, n, segment):
        b = min(n, a + segment)
        window = inputs[a: rf - 1 + b]  # outputs rf-1+a .. rf-2+b, each with rf samples of context
        logits = model.logits(window[None], d, s)[0, -(b - a):]
        out[a:b] = _log_softmax_at(logits, classes[a:b])
    return out


def score_clips(model: AudioModel, clips: Sequence[np.ndarray], digit_ids: Sequence[int],
                speaker_ids: Sequence[int], progress=None) -> list[np.ndarray]:
    """`score_classes` of many clips, batched by length; returns one (n_i,) array per clip, in order."""
    rf = model.receptive_field
    out: list[np.ndarray | None] = [None] * len(clips)
    order = sorted(range(len(clips)), key=lambda i: len(clips[i]))
    i = 0
    while i < len(order):
        n_max = len(clips[order[i]])
        if n_max > SEGMENT:  # long: on its own, in segments
            k = order[i]
            out[k] = score_classes(model, clips[k], int(digit_ids[k]), int(speaker_ids[k]))
            i += 1
            if progress is not None:
                progress.advance(1)
            continue
        group = [order[i]]
        while i + len(group) < len(order):
            nxt = order[i + len(group)]
            if len(clips[nxt]) > SEGMENT or (len(group) + 1) * (rf + len(clips[nxt])) > BATCH_POSITIONS:
                break
            group.append(nxt)
        T = rf + max(len(clips[k]) for k in group) - 1
        x = np.full((len(group), T), mulaw.SILENCE, dtype=np.int64)
        for r, k in enumerate(group):
            c = np.asarray(clips[k], dtype=np.int64)
            x[r, rf:rf + len(c) - 1] = c[:-1]
        logits = model.logits(x, np.asarray([digit_ids[k] for k in group], np.int64),
                              np.asarray([speaker_ids[k] for k in group], np.int64))
        for r, k in enumerate(group):
            c = np.asarray(clips[k], dtype=np.int64)
            out[k] = _log_softmax_at(logits[r, rf - 1: rf - 1 + len(c)], c) if len(c) else np.zeros(0)
        i += len(group)
        if progress is not None:
            progress.advance(len(group))
    return out  # type: ignore[return-value]


def smooth_surprise(bits: np.ndarray, window: int = SURPRISE_WINDOW) -> np.ndarray:
    """Centred moving average of `bits` (n,); near the ends the mean over the samples inside."""
    bits = np.asarray(bits, dtype=np.float64)
    n = len(bits)
    if n == 0:
        return bits.copy()
    w = max(1, min(int(window), n))
    kernel = np.ones(w)
    sums = np.convolve(bits, kernel, mode="same")
    counts = np.convolve(np.ones(n), kernel, mode="same")
    return sums / counts


def score_audio(model: AudioModel, samples: np.ndarray, digit: int | None = None,
                speaker: str | None = None) -> AudioScore:
    """Score float samples (n,) in [-1, 1] (mu-law encoded first) under the model."""
    x = np.asarray(samples)
    if x.ndim != 1 or x.dtype.kind not in "fiu":
        raise InputError(f"audio to score must be mono: one row of samples, got an array of shape {x.shape}")
    if len(x) == 0:
        raise InputError("the audio to score is empty: it has no samples")
    if not np.isfinite(x).all():
        raise InputError("the audio to score holds NaN or infinite samples")
    classes = mulaw.encode(x)
    lp = score_classes(model, classes, model.digit_value(digit), model.speaker_value(speaker))
    total = float(lp.sum())
    bits = -lp / LN2
    return AudioScore(logprobs=lp, total_logprob=total, bits_per_sample=-total / LN2 / len(lp),
                      surprise_bits=smooth_surprise(bits), classes=classes)
