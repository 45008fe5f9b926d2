"""The frame prior at run time: write log-mel frames one at a time, and score frames exactly.

The graph (``prior_step.onnx``, ``engines.training.export_speech``) gives, per frame and per
batch row, a mixture of K diagonal Gaussians over the n_mels raw log-mel values and a stop
logit. Values at or below the floor (ln of the mel power floor: digital silence) are
censored: their probability is the mass the Gaussian puts below the floor. So

    ln p(x_t | x_<t) = logsumexp_k [ ln pi_k + sum_d ( x_td at floor ? ln Phi((floor - m_kd) / s_kd)
                                                       : ln N(x_td; m_kd, s_kd) ) ]
    ln p(stop_t)    = ln sigmoid(+-stop_logit_t)   (stop after the last frame, continue before)

in nats, and the sum over frames (plus the stop bits) is the exact log-likelihood of a frame
sequence of that length. Sampling at frame temperature tau: pick a component from the
mixture weights, draw m + tau * s * N(0, 1), clamp to the floor; the stop bit is drawn
from its Bernoulli. A seeded ``np.random.Generator`` gives the same frames every time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from engines.audio.mel import MelSpec
from engines.errors import InputError, ModelLoadError
from engines.generation import draw_step, temperature_chain, two_value_rows
from engines.runtime import ModelSession

MAX_FRAMES = 400  # 4 s at 10 ms frames: the longest utterance the prior may write (FSDD's longest is 2.3 s)


def _log_ndtr(z: np.ndarray) -> np.ndarray:
    """ln Phi(z), accurate far into both tails (math.erfc keeps precision where 1 + erf would not)."""
    erfc = np.vectorize(math.erfc, otypes=[np.float64])
    z = np.asarray(z, dtype=np.float64)
    out = np.empty_like(z)
    lo = z < -5.0
    out[~lo] = np.log(0.5 * erfc(-z[~lo] / math.sqrt(2.0)))
    zl = z[lo]  # asymptotic series: Phi(z) ~ phi(z) / -z * (1 - 1/z^2 + 3/z^4)
    out[lo] = -0.5 * zl * zl - np.log(-zl) - 0.5 * math.log(2 * math.pi) + np.log1p(-1 / zl ** 2 + 3 / zl ** 4)
    return out


@dataclass
class FrameStep:
    """One frame's distribution for B rows."""
    logit_pi: np.ndarray  # (B, K)
    mean: np.ndarray  # (B, K, D) raw log-mel
    scale: np.ndarray  # (B, K, D)
    stop_logit: np.ndarray  # (B,)


@dataclass
class PriorFrame:
    """A frame the prior wrote (or read, when scoring): its value and its log-likelihood terms."""
    index: int
    frame: np.ndarray  # (D,) raw log-mel
    logprob: float  # ln p(x_t | x_<t), nats
    stop_logprob: float  # ln p(stop bit of this frame)
    stop: bool


class MelPriorModel:
    """The prior's step graph with what its card says (sizes, floor, the ids of "none")."""

    def __init__(self, session: ModelSession, card_prior: dict, mel: MelSpec, model_id: str) -> None:
        try:
            self.n_mels = int(card_prior["n_mels"])
            self.hidden = int(card_prior["hidden"])
            self.n_layers = int(card_prior["n_layers"])
            self.n_components = int(card_prior["n_components"])
            self.n_digits = int(card_prior["n_digits"])
            self.speakers = [str(s) for s in card_prior["speakers"]]
            self.floor = float(card_prior["floor_value"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelLoadError(f"card of {model_id!r}: the 'prior' section lacks a valid {exc}") from None
        if self.n_mels != mel.n_mels or not (1 <= self.hidden <= 8192 and 1 <= self.n_layers <= 16):
            raise ModelLoadError(f"card of {model_id!r}: prior sizes do not match its mel settings or are absurd")
        self.session, self.mel, self.id = session, mel, model_id

    @property
    def none_digit(self) -> int:
        return self.n_digits

    @property
    def none_speaker(self) -> int:
        return len(self.speakers)

    def initial_state(self, batch: int) -> np.ndarray:
        return np.zeros((self.n_layers, batch, self.hidden), dtype=np.float32)

    def silence_frame(self, batch: int) -> np.ndarray:
        return np.full((batch, self.n_mels), self.floor, dtype=np.float32)

    def step(self, prev: np.ndarray, position: int, digit_ids: np.ndarray, speaker_ids: np.ndarray,
             state: np.ndarray) -> tuple[FrameStep, np.ndarray]:
        """prev (B, D) raw frame x_{t-1} -> (the distribution of x_t and its stop bit, the new state)."""
        B = len(prev)
        logit_pi, mean, scale, stop, state = self.session.run(
            {"frame": np.ascontiguousarray(prev, dtype=np.float32),
             "position": np.full((B,), float(position), dtype=np.float32),
             "digit": np.ascontiguousarray(digit_ids, dtype=np.int64),
             "speaker": np.ascontiguousarray(speaker_ids, dtype=np.int64),
             "state": np.ascontiguousarray(state, dtype=np.float32)},
            ["logit_pi", "mean", "scale", "stop_logit", "state_out"])
        return FrameStep(logit_pi, mean, scale, stop), state

    # --- the density -------------------------------------------------------------------------
    def frame_logprob(self, dist: FrameStep, x: np.ndarray) -> np.ndarray:
        """ln p(x (B, D) | the step's mixture), censored at the floor -> (B,) nats."""
        x = np.asarray(x, dtype=np.float64)[:, None, :]  # (B, 1, D)
        m, s = dist.mean.astype(np.float64), dist.scale.astype(np.float64)
        z = (x - m) / s
        dens = -0.5 * z * z - np.log(s) - 0.5 * math.log(2 * math.pi)
        at_floor = np.broadcast_to(x <= self.floor + 1e-4, z.shape)
        per_dim = dens.copy()
        if at_floor.any():
            per_dim[at_floor] = _log_ndtr(((self.floor - m) / s)[at_floor])
        lw = dist.logit_pi.astype(np.float64)
        lw = lw - lw.max(axis=1, keepdims=True)
        lw = lw - np.log(np.exp(lw).sum(axis=1, keepdims=True))
        a = lw + per_dim.sum(axis=2)  # (B, K)
        top = a.max(axis=1)
        return top + np.log(np.exp(a - top[:, None]).sum(axis=1))

    @staticmethod
    def stop_logprob(dist: FrameStep, stop: np.ndarray) -> np.ndarray:
        """ln p(stop bit) -> (B,): ln sigmoid(l) for a stop, ln sigmoid(-l) to go on."""
        sign = np.where(np.asarray(stop, bool), 1.0, -1.0)
        return -np.logaddexp(0.0, -sign * dist.stop_logit.astype(np.float64))

    def draw(self, dist: FrameStep, rng: np.random.Generator, temperature: float) -> tuple[np.ndarray, np.ndarray]:
        """(frames (B, D) clamped at the floor, stop bits (B,)) drawn at `temperature` (0: the mode)."""
        B, _, D = dist.mean.shape
        u_comp, noise, u_stop = rng.random(B), rng.standard_normal((B, D)), rng.random(B)
        # The component and the stop bit are categorical draws: the shared chain and draw of every
        # modality (engines.generation.draw_step; the weights are not tempered, so the chain is
        # temperature 1, or greedy at 0). The frame values come from a continuous Gaussian, which no
        # chain of logits filters can express: temperature scales its noise here.
        chain = temperature_chain(0.0 if temperature == 0 else 1.0)
        k, _ = draw_step(chain, dist.logit_pi, None, u_comp)  # (B,)
        rows = np.arange(B)
        x = dist.mean[rows, k] + temperature * dist.scale[rows, k] * noise
        stop, _ = draw_step(chain, two_value_rows(dist.stop_logit), None, u_stop)  # (B,) 1 = stop
        return np.maximum(x, self.floor).astype(np.float32), stop.astype(bool)


def write_frames(prior: MelPriorModel, *, digit_id: int, speaker_id: int, seed: int, temperature: float,
                 prompt_frames: np.ndarray | None = None, max_frames: int = MAX_FRAMES,
                 min_frames: int = 1) -> Iterator[PriorFrame]:
    """Yield the frames of one utterance as the prior writes them, until its stop bit (or max_frames).

    prompt_frames (D, P): frames to continue (a recording's); they are read, not yielded, and the
    new frames go on from position P. `min_frames` new frames come before a stop is honoured."""
    if not 1 <= max_frames <= MAX_FRAMES:
        raise InputError(f"max_frames {max_frames} is out of range 1..{MAX_FRAMES}")
    rng = np.random.default_rng(seed)
    d, s = np.array([digit_id], np.int64), np.array([speaker_id], np.int64)
    state = prior.initial_state(1)
    prev = prior.silence_frame(1)
    t = 0
    if prompt_frames is not None:
        for x in np.asarray(prompt_frames, np.float32).T:
            _, state = prior.step(prev, t, d, s, state)
            prev, t = x[None], t + 1
    for i in range(max_frames):
        dist, state = prior.step(prev, t, d, s, state)
        x, stop = prior.draw(dist, rng, temperature)
        stop_now = bool(stop[0]) and i + 1 >= min_frames or i + 1 == max_frames
        lp = float(prior.frame_logprob(dist, x)[0])
        lps = float(prior.stop_logprob(dist, np.array([stop_now]))[0])
        yield PriorFrame(index=t, frame=x[0], logprob=lp, stop_logprob=lps, stop=stop_now)
        if stop_now:
            return
        prev, t = x, t + 1


def score_frames(prior: MelPriorModel, frames: np.ndarray, *, digit_id: int, speaker_id: int) -> list[PriorFrame]:
    """The exact log-likelihood terms of frames (D, T) as one whole utterance (it stops after the last)."""
    frames = np.asarray(frames, np.float32)
    d, s = np.array([digit_id], np.int64), np.array([speaker_id], np.int64)
    state, prev = prior.initial_state(1), prior.silence_frame(1)
    out = []
    T = frames.shape[1]
    for t in range(T):
        dist, state = prior.step(prev, t, d, s, state)
        x = frames[:, t][None]
        last = t == T - 1
        out.append(PriorFrame(index=t, frame=frames[:, t], logprob=float(prior.frame_logprob(dist, x)[0]),
                              stop_logprob=float(prior.stop_logprob(dist, np.array([last]))[0]), stop=last))
        prev = x
    return out
