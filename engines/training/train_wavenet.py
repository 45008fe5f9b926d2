"""Train a WaveNet (``engines.training.wavenet``) on the Free Spoken Digit Dataset.

Run as::

    chainrule train wavenet --data fsdd.npz --out DIR [options]

Each batch holds ``--batch-size`` windows, each from a random clip (``engines.audio.data``:
train = takes 10-49): ``--window`` target samples at a random place in the clip, read with
a full receptive field of context before them (silence before the clip starts, as at
scoring and generation time). Shorter clips are padded and the padding is not scored.
The digit and the speaker condition every window; each is replaced by "none" with
probability ``--cond-dropout``, so the model also generates with either left unset.

Schedule and files as in ``train_pixelcnn`` (the loop is ``engines.training.loop``): warmup then cosine by the larger of
iteration and time progress; every ``--eval-interval`` iterations the NLL of the first
``--eval-clips`` validation clips (bits per sample) picks the best ``ckpt.pt``; ``last.pt``
holds the optimizer for ``--resume``; ``log.jsonl`` starts with the exact command. At the
end the best checkpoint is scored on the whole validation and test splits.
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
from engines.training.cli_args import add_run_arguments, add_schedule_arguments, run_trainer
from engines.training.run_files import start_run
from engines.training.loop import fit, load_checkpoint, load_resume, store_metrics
from engines.training.wavenet import WaveNet, WaveNetConfig

DEFAULTS = dict(
    residual_channels=48, gate_channels=48, skip_channels=96, n_stacks=2, layers_per_stack=9,
    batch_size=6, window=3000, lr=2e-3, min_lr=2e-5, warmup_iters=200, max_iters=1_000_000,
    grad_clip=1.0, cond_dropout=0.1, eval_interval=250, eval_clips=60, seed=1337,
    time_limit_minutes=55.0, threads=2,
)
LN2 = math.log(2)


def make_batch(split: AudioSplit, rf: int, window: int, batch_size: int, rng: np.random.Generator,
               none_digit: int, none_speaker: int, cond_dropout: float):
    """(inputs (B, rf - 1 + window), targets (B, window) with -100 padding, digit (B,), speaker (B,)).

    Output t of the model over `inputs` predicts inputs[t + 1]; the last `window` outputs,
    each with a full receptive field of context, predict the targets.
    """
    B = batch_size
    inputs = np.full((B, rf - 1 + window), mulaw.SILENCE, dtype=np.int64)
    targets = np.full((B, window), -100, dtype=np.int64)
    which = rng.integers(0, len(split), size=B)
    for b, i in enumerate(which):
        clip = split.clips[i]
        start = int(rng.integers(0, max(1, len(clip) - window + 1)))
        seg = clip[start:start + window]  # the targets
        ctx = clip[max(0, start - rf):start]  # the samples before them (<= rf)
        targets[b, :len(seg)] = seg
        full = np.concatenate([ctx, seg[:-1]])  # what precedes each target
        # inputs[rf - 1 + j] is the sample just before target j, so `full` ends at rf - 1 + len(seg).
        end = rf - 1 + len(seg)
        inputs[b, end - len(full):end] = full
    digit = split.digits[which].copy()
    speaker = split.speaker_ids[which].copy()
    if cond_dropout > 0:
        digit[rng.random(B) < cond_dropout] = none_digit
        speaker[rng.random(B) < cond_dropout] = none_speaker
    return (torch.from_numpy(inputs), torch.from_numpy(targets), torch.from_numpy(digit),
            torch.from_numpy(speaker))


@torch.no_grad()
def clip_logprobs(model: WaveNet, clip: np.ndarray, digit: int, speaker: int) -> np.ndarray:
    """ln p of every sample of `clip` (n,) given all before it, silence before the start."""
    rf = model.config.receptive_field
    x = np.concatenate([np.full(rf, mulaw.SILENCE, dtype=np.int64), clip[:-1]])
    logits = model(torch.from_numpy(x)[None], torch.tensor([digit]), torch.tensor([speaker]))[0, :, rf - 1:]
    lp = torch.log_softmax(logits.float(), dim=0)  # (256, n)
    return lp.gather(0, torch.from_numpy(clip)[None]).squeeze(0).double().numpy()


def nll_over_clips(model: WaveNet, n_clips: int, clip_lp) -> dict:
    """Bits and nats per sample over clips 0..n_clips-1, `clip_lp(i)` giving clip i's ln p per sample (eval mode)."""
    was_training = model.training
    model.eval()
    total, n = 0.0, 0
    for i in range(n_clips):
        lp = clip_lp(i)
        total -= float(lp.sum())
        n += len(lp)
    model.train(was_training)
    return {"nats_per_sample": total / n, "bits_per_sample": total / n / LN2, "n_samples": n, "n_clips": n_clips}


def evaluate(model: WaveNet, split: AudioSplit, limit: int | None = None) -> dict:
    """NLL of whole clips, conditioned on their true digit and speaker: bits and nats per sample."""
    return nll_over_clips(model, len(split) if limit is None else min(limit, len(split)), lambda i: clip_logprobs(
        model, split.clips[i], int(split.digits[i]), int(split.speaker_ids[i])))


def bits_report(hp: dict, n_train_samples: int):
    """The `report` of `fit` for a WaveNet-family trainer: epoch and bits per sample (train, val, best)."""
    def report(it: int, train_loss: float, val: dict, best_val: float) -> tuple[dict, str]:
        rec = {"epoch": round(it * hp["batch_size"] * hp["window"] / n_train_samples, 3),
               "train_bits_per_sample": round(train_loss / LN2, 4), "val_bits_per_sample": round(val["bits_per_sample"], 4),
               "best_val_bits_per_sample": round(best_val / LN2, 4)}
        return rec, (f"train {rec['train_bits_per_sample']:.4f}  val {rec['val_bits_per_sample']:.4f} bits/sample  "
                     f"best {rec['best_val_bits_per_sample']:.4f}")
    return report


def add_wavenet_arguments(p: argparse.ArgumentParser, d: dict, cond_help: str) -> None:
    """The options every WaveNet-family trainer takes (architecture, batches, schedule, evaluation, run)."""
    p.add_argument("--data", required=True, help="fsdd.npz")
    p.add_argument("--out", required=True, help="output dir: ckpt.pt, last.pt, log.jsonl")
    p.add_argument("--residual-channels", type=int, default=d["residual_channels"])
    p.add_argument("--gate-channels", type=int, default=d["gate_channels"])
    p.add_argument("--skip-channels", type=int, default=d["skip_channels"])
    p.add_argument("--n-stacks", type=int, default=d["n_stacks"])
    p.add_argument("--layers-per-stack", type=int, default=d["layers_per_stack"], help="dilations 1 .. 2^(n-1)")
    p.add_argument("--batch-size", type=int, default=d["batch_size"])
    p.add_argument("--window", type=int, default=d["window"], help="target samples per window")
    add_schedule_arguments(p, d)
    p.add_argument("--grad-clip", type=float, default=d["grad_clip"])
    p.add_argument("--cond-dropout", type=float, default=d["cond_dropout"], help=cond_help)
    p.add_argument("--eval-interval", type=int, default=d["eval_interval"])
    p.add_argument("--eval-clips", type=int, default=d["eval_clips"], help="validation clips per periodic eval")
    p.add_argument("--no-final-eval", dest="final_eval", action="store_false")
    p.add_argument("--bf16", action="store_true", help="bfloat16 autocast (faster on CPUs with AMX/AVX512-BF16)")
    add_run_arguments(p, d)


def train(data_path, out_dir, *, resume=False, command=None, **hp) -> dict:
    hp, out, command = start_run(out_dir, hp, DEFAULTS, command)

    train_split, val_split = load_train_val(data_path)
    config = WaveNetConfig(
        residual_channels=hp["residual_channels"], gate_channels=hp["gate_channels"],
        skip_channels=hp["skip_channels"], n_stacks=hp["n_stacks"], layers_per_stack=hp["layers_per_stack"],
        n_digits=int(max(train_split.digits.max(), val_split.digits.max())) + 1,
        speakers=list(train_split.speakers), sample_rate=train_split.sample_rate,
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
               "val_clips": len(val_split), "sample_rate": train_split.sample_rate, "speakers": train_split.speakers}

    def loss_at(it: int) -> torch.Tensor:
        rng = np.random.default_rng([hp["seed"], it])
        x, y, digit, speaker = make_batch(train_split, rf, hp["window"], hp["batch_size"], rng,
                                          config.none_digit, config.none_speaker, hp["cond_dropout"])
        with torch.autocast("cpu", dtype=torch.bfloat16) if hp.get("bf16") else contextlib.nullcontext():
            logits = model(x, digit, speaker)[:, :, rf - 1:]
        return model.loss(logits, y)

    report = bits_report(hp, train_split.n_samples)
    return fit(model=model, optimizer=optimizer, out=out, hp=hp, command=command, resume_ck=ck,
               meta={"config": config.to_dict(), "parameters": n_params, "data": dataset},
               start_extra={"receptive_field": rf},
               header=f"data: {dataset}\nconfig: {config.to_dict()}  receptive field {rf}  parameters: {n_params:,}",
               loss_at=loss_at, evaluate=lambda: evaluate(model, val_split, hp["eval_clips"]),
               best_by="nats_per_sample", report=report, best_text=lambda v: f"{v / LN2:.4f} bits/sample",
               final_eval=lambda path: final_evaluation(path, data_path, out / "log.jsonl"))


def final_evaluation(ckpt_path: Path, data_path, log_path: Path | None = None) -> dict:
    """Whole validation and test NLL of a checkpoint; stored in the checkpoint as `metrics`."""
    model, ck = load_checkpoint(ckpt_path, lambda config: WaveNet(WaveNetConfig(**config)))
    metrics = {}
    t0 = time.time()
    for split in ("val", "test"):
        r = evaluate(model, load_fsdd(data_path, split))
        metrics[split] = {k: (round(v, 5) if isinstance(v, float) else v) for k, v in r.items()}
        print(f"{split}: {r['bits_per_sample']:.4f} bits/sample over {r['n_samples']} samples "
              f"({r['n_clips']} clips)", flush=True)
    metrics["conditioning"] = "true digit and speaker"
    return store_metrics(ck, ckpt_path, metrics, log_path, t0)


def add_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    add_wavenet_arguments(p, DEFAULTS, "probability of replacing the digit (and, independently, the speaker) by 'none'")
    return p


def main(argv: list[str] | None = None) -> int:
    return run_trainer("wavenet", __doc__, add_arguments, train, argv)


if __name__ == "__main__":
    raise SystemExit(main())
