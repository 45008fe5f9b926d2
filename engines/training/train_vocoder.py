"""Train a WaveNet vocoder: the WaveNet of ``engines.training.wavenet`` locally conditioned on the
clip's own log-mel frames (``engines.audio.mel``) and globally on the speaker.

Run as::

    chainrule train vocoder --data fsdd.npz --out DIR [options]

Batches as in ``train_wavenet`` (random windows of ``--window`` target samples with a full
receptive field of context, silence before a clip), plus, per window, the frames of its whole
clip (one silence frame in front) and, per model output, the index of the frame of the sample
it predicts. The speaker is replaced by "none" with probability ``--cond-dropout`` so the
vocoder also speaks with no speaker set; the digit is not an input (the frames say it).

The frame normalisation (per-bin mean and std of the training frames) is part of the model's
config, so the exported graphs take raw log-mel frames.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import time
from pathlib import Path

import numpy as np
import torch

from engines.audio import mulaw
from engines.audio.data import AudioSplit, load_fsdd, load_train_val
from engines.audio.mel import MelSpec, frame_of_sample, log_mel, with_silence_frame
from engines.training.cli_args import run_trainer
from engines.training.run_files import start_run
from engines.training.loop import fit, load_checkpoint, load_resume, store_metrics
from engines.training.train_wavenet import add_wavenet_arguments, bits_report, nll_over_clips
from engines.training.wavenet import WaveNet, WaveNetConfig

DEFAULTS = dict(
    residual_channels=48, gate_channels=48, skip_channels=96, n_stacks=2, layers_per_stack=8, cond_channels=128,
    batch_size=6, window=3000, lr=2e-3, min_lr=2e-5, warmup_iters=200, max_iters=1_000_000,
    grad_clip=1.0, cond_dropout=0.1, eval_interval=250, eval_clips=60, seed=1337,
    time_limit_minutes=100.0, threads=1,
)
LN2 = math.log(2)


def clip_frames(split: AudioSplit, spec: MelSpec) -> list[np.ndarray]:
    """Each clip's frames with the silence frame in front: (n_mels, F + 1) float32."""
    return [with_silence_frame(log_mel(mulaw.decode(c), spec), spec) for c in split.clips]


def mel_stats(frames: list[np.ndarray]) -> tuple[list[float], list[float]]:
    """Per-bin mean and std over every frame of every clip (silence frames left out)."""
    allf = np.concatenate([f[:, 1:] for f in frames], axis=1).astype(np.float64)
    return allf.mean(axis=1).tolist(), np.maximum(allf.std(axis=1), 1e-3).tolist()


def make_batch(split: AudioSplit, frames: list[np.ndarray], rf: int, window: int, hop: int, batch_size: int,
               rng: np.random.Generator, none_speaker: int, cond_dropout: float):
    """(inputs (B, T), targets (B, window), speaker (B,), frames (B, n_mels, Fmax), frame_index (B, T)).

    T = rf - 1 + window. Output p predicts clip sample s = start + p - (rf - 1) (negative: the
    silence before the clip), so it reads frame `frame_of_sample(s)`. Shorter clips are padded
    (targets -100, not scored; their frames edge-padded)."""
    B, T = batch_size, rf - 1 + window
    inputs = np.full((B, T), mulaw.SILENCE, dtype=np.int64)
    targets = np.full((B, window), -100, dtype=np.int64)
    which = rng.integers(0, len(split), size=B)
    fmax = max(frames[i].shape[1] for i in which)
    n_mels = frames[which[0]].shape[0]
    fr = np.empty((B, n_mels, fmax), dtype=np.float32)
    index = np.empty((B, T), dtype=np.int64)
    for b, i in enumerate(which):
        clip = split.clips[i]
        start = int(rng.integers(0, max(1, len(clip) - window + 1)))
        seg = clip[start:start + window]
        ctx = clip[max(0, start - rf):start]
        targets[b, :len(seg)] = seg
        full = np.concatenate([ctx, seg[:-1]])
        end = rf - 1 + len(seg)
        inputs[b, end - len(full):end] = full
        f = frames[i]
        fr[b, :, :f.shape[1]] = f
        fr[b, :, f.shape[1]:] = f[:, -1:]
        index[b] = frame_of_sample(start + np.arange(T) - (rf - 1), f.shape[1] - 1, hop)
    speaker = split.speaker_ids[which].copy()
    if cond_dropout > 0:
        speaker[rng.random(B) < cond_dropout] = none_speaker
    return (torch.from_numpy(inputs), torch.from_numpy(targets), torch.from_numpy(speaker),
            torch.from_numpy(fr), torch.from_numpy(index))


@torch.no_grad()
def clip_logprobs(model: WaveNet, clip: np.ndarray, frames: np.ndarray, speaker: int) -> np.ndarray:
    """ln p of every sample of `clip` (n,) given all before it and its frames (n_mels, F + 1)."""
    c = model.config
    rf = c.receptive_field
    x = np.concatenate([np.full(rf, mulaw.SILENCE, dtype=np.int64), clip[:-1]])
    index = frame_of_sample(np.arange(len(x)) - (rf - 1), frames.shape[1] - 1, c.hop)
    logits = model(torch.from_numpy(x)[None], torch.tensor([c.none_digit]), torch.tensor([speaker]),
                   torch.from_numpy(frames)[None], torch.from_numpy(index)[None])[0, :, rf - 1:]
    lp = torch.log_softmax(logits.float(), dim=0)
    return lp.gather(0, torch.from_numpy(clip)[None]).squeeze(0).double().numpy()


def evaluate(model: WaveNet, split: AudioSplit, frames: list[np.ndarray], limit: int | None = None) -> dict:
    """NLL of whole clips given their true frames and speaker: bits and nats per sample."""
    return nll_over_clips(model, len(split) if limit is None else min(limit, len(split)), lambda i: clip_logprobs(
        model, split.clips[i], frames[i], int(split.speaker_ids[i])))


def train(data_path, out_dir, *, resume=False, command=None, **hp) -> dict:
    hp, out, command = start_run(out_dir, hp, DEFAULTS, command)
    train_split, val_split = load_train_val(data_path)
    spec = MelSpec(sample_rate=train_split.sample_rate)
    train_frames, val_frames = clip_frames(train_split, spec), clip_frames(val_split, spec)
    mean, std = mel_stats(train_frames)
    config = WaveNetConfig(
        residual_channels=hp["residual_channels"], gate_channels=hp["gate_channels"],
        skip_channels=hp["skip_channels"], n_stacks=hp["n_stacks"], layers_per_stack=hp["layers_per_stack"],
        n_digits=0, speakers=list(train_split.speakers), sample_rate=train_split.sample_rate,
        n_mels=spec.n_mels, cond_channels=hp["cond_channels"], hop=spec.hop, mel_mean=mean, mel_std=std,
    )
    ck = load_resume(out) if resume else None
    if ck is not None:
        config = WaveNetConfig(**ck["config"])
    torch.manual_seed(hp["seed"])
    model = WaveNet(config)
    optimizer = torch.optim.Adam(model.parameters(), lr=hp["lr"])
    rf = config.receptive_field
    n_params = model.num_parameters()
    dataset = {"path": str(data_path), "train_clips": len(train_split), "train_samples": train_split.n_samples,
               "val_clips": len(val_split), "sample_rate": train_split.sample_rate, "speakers": train_split.speakers,
               "mel": spec.to_dict()}

    def loss_at(it: int) -> torch.Tensor:
        rng = np.random.default_rng([hp["seed"], it])
        x, y, speaker, frames, index = make_batch(train_split, train_frames, rf, hp["window"], config.hop,
                                                  hp["batch_size"], rng, config.none_speaker, hp["cond_dropout"])
        digit = torch.full_like(speaker, config.none_digit)
        with torch.autocast("cpu", dtype=torch.bfloat16) if hp.get("bf16") else contextlib.nullcontext():
            logits = model(x, digit, speaker, frames, index)[:, :, rf - 1:]
        return model.loss(logits, y)

    report = bits_report(hp, train_split.n_samples)

    return fit(model=model, optimizer=optimizer, out=out, hp=hp, command=command, resume_ck=ck,
               meta={"config": config.to_dict(), "parameters": n_params, "data": dataset, "mel": spec.to_dict()},
               start_extra={"receptive_field": rf},
               header=f"data: {dataset}\nconfig: {config.to_dict()}  receptive field {rf}  parameters: {n_params:,}",
               loss_at=loss_at, evaluate=lambda: evaluate(model, val_split, val_frames, hp["eval_clips"]),
               best_by="nats_per_sample", report=report, best_text=lambda v: f"{v / LN2:.4f} bits/sample",
               final_eval=lambda path: final_evaluation(path, data_path, out / "log.jsonl"))


def final_evaluation(ckpt_path: Path, data_path, log_path: Path | None = None) -> dict:
    """Whole validation and test NLL given the true frames; stored in the checkpoint as `metrics`."""
    model, ck = load_checkpoint(ckpt_path, lambda config: WaveNet(WaveNetConfig(**config)))
    spec = MelSpec(**ck["mel"])
    metrics = {}
    t0 = time.time()
    for split_name in ("val", "test"):
        split = load_fsdd(data_path, split_name)
        r = evaluate(model, split, clip_frames(split, spec))
        metrics[split_name] = {k: (round(v, 5) if isinstance(v, float) else v) for k, v in r.items()}
        print(f"{split_name}: {r['bits_per_sample']:.4f} bits/sample over {r['n_samples']} samples "
              f"({r['n_clips']} clips)", flush=True)
    metrics["conditioning"] = "the clip's own log-mel frames and its true speaker"
    return store_metrics(ck, ckpt_path, metrics, log_path, t0)


def add_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    add_wavenet_arguments(p, DEFAULTS, "probability of speaker 'none'")
    p.add_argument("--cond-channels", type=int, default=DEFAULTS["cond_channels"], help="width of the frame network")
    return p


def main(argv: list[str] | None = None) -> int:
    return run_trainer("vocoder", __doc__, add_arguments, train, argv)


if __name__ == "__main__":
    raise SystemExit(main())
