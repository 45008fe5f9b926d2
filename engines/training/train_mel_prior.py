"""Train the frame-level prior (``engines.training.mel_prior``) on FSDD log-mel frames.

Run as::

    chainrule train mel-prior --data fsdd.npz --out DIR [options]

Each batch holds ``--batch-size`` whole clips (train = takes 10-49) as log-mel frames of the
mu-law clips (``engines.audio.mel``, the frames the vocoder is trained on), padded to the
longest; padding is not scored. The digit and the speaker are each replaced by "none" with
probability ``--cond-dropout``, so the prior also writes frames with either unset (and
classifier-free guidance has an unconditional model to push away from). The validation
split's NLL in nats per frame (frame density plus the stop bit) picks the best checkpoint.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from engines.audio import mulaw
from engines.audio.data import AudioSplit, load_fsdd, load_train_val
from engines.audio.mel import MelSpec, log_mel
from engines.training.cli_args import add_run_arguments, add_schedule_arguments, run_trainer
from engines.training.run_files import start_run
from engines.training.loop import fit, load_checkpoint, load_resume, store_metrics
from engines.training.mel_prior import MelPrior, MelPriorConfig

DEFAULTS = dict(hidden=256, n_layers=2, prenet=128, n_components=8, batch_size=32, lr=1e-3, min_lr=1e-5,
                warmup_iters=100, max_iters=1_000_000, grad_clip=1.0, cond_dropout=0.1, eval_interval=250,
                seed=1337, time_limit_minutes=30.0, threads=1)


def split_frames(split: AudioSplit, spec: MelSpec) -> list[np.ndarray]:
    """Each clip's raw log-mel frames, time first: (F, n_mels) float32."""
    return [np.ascontiguousarray(log_mel(mulaw.decode(c), spec).T) for c in split.clips]


def make_batch(frames, digits, speakers, which, none_digit, none_speaker, cond_dropout, rng, floor):
    B = len(which)
    lengths = np.array([len(frames[i]) for i in which], dtype=np.int64)
    x = np.full((B, lengths.max(), frames[0].shape[1]), floor, dtype=np.float32)
    for b, i in enumerate(which):
        x[b, :lengths[b]] = frames[i]
    d, s = digits[which].copy(), speakers[which].copy()
    if cond_dropout > 0:
        d[rng.random(B) < cond_dropout] = none_digit
        s[rng.random(B) < cond_dropout] = none_speaker
    return torch.from_numpy(x), torch.from_numpy(lengths), torch.from_numpy(d), torch.from_numpy(s)


@torch.no_grad()
def evaluate(model: MelPrior, frames, split: AudioSplit, batch: int = 50) -> dict:
    was = model.training
    model.eval()
    total, n = 0.0, 0
    for a in range(0, len(frames), batch):
        which = np.arange(a, min(len(frames), a + batch))
        x, lengths, d, s = make_batch(frames, split.digits, split.speaker_ids, which, 0, 0, 0.0, None,
                                      model.config.floor_value)
        nll, count = model.nll(x, lengths, d, s)
        total += float(nll)
        n += int(count)
    model.train(was)
    return {"nats_per_frame": total / n, "n_frames": n, "n_clips": len(frames)}


def train(data_path, out_dir, *, resume=False, command=None, **hp) -> dict:
    hp, out, command = start_run(out_dir, hp, DEFAULTS, command)
    tr, va = load_train_val(data_path)
    spec = MelSpec(sample_rate=tr.sample_rate)
    ftr, fva = split_frames(tr, spec), split_frames(va, spec)
    allf = np.concatenate(ftr, axis=0).astype(np.float64)
    config = MelPriorConfig(n_mels=spec.n_mels, hidden=hp["hidden"], n_layers=hp["n_layers"], prenet=hp["prenet"],
                            n_components=hp["n_components"], n_digits=int(tr.digits.max()) + 1,
                            speakers=list(tr.speakers), mel_mean=allf.mean(0).tolist(),
                            mel_std=np.maximum(allf.std(0), 1e-3).tolist(), floor_value=spec.silence_value)
    ck = load_resume(out) if resume else None
    if ck is not None:
        config = MelPriorConfig(**ck["config"])
    torch.manual_seed(hp["seed"])
    model = MelPrior(config)
    optimizer = torch.optim.Adam(model.parameters(), lr=hp["lr"])
    n_params = model.num_parameters()
    n_frames = sum(len(f) for f in ftr)
    dataset = {"path": str(data_path), "train_clips": len(tr), "train_frames": n_frames, "val_clips": len(va),
               "mel": spec.to_dict(), "speakers": tr.speakers}

    def loss_at(it: int) -> torch.Tensor:
        rng = np.random.default_rng([hp["seed"], it])
        which = rng.integers(0, len(ftr), size=hp["batch_size"])
        x, lengths, d, s = make_batch(ftr, tr.digits, tr.speaker_ids, which, config.none_digit, config.none_speaker,
                                      hp["cond_dropout"], rng, config.floor_value)
        nll, count = model.nll(x, lengths, d, s)
        return nll / count

    def report(it, loss, val, best):
        rec = {"epoch": round(it * hp["batch_size"] / len(tr), 2), "train_nats_per_frame": round(loss, 4),
               "val_nats_per_frame": round(val["nats_per_frame"], 4), "best_val_nats_per_frame": round(best, 4)}
        return rec, f"train {loss:.3f}  val {val['nats_per_frame']:.3f} nats/frame  best {best:.3f}"

    return fit(model=model, optimizer=optimizer, out=out, hp=hp, command=command, resume_ck=ck,
               meta={"config": config.to_dict(), "parameters": n_params, "data": dataset, "mel": spec.to_dict()},
               header=f"data: {dataset['train_clips']} clips, {n_frames} frames\nparameters: {n_params:,}",
               loss_at=loss_at, evaluate=lambda: evaluate(model, fva, va), best_by="nats_per_frame", report=report,
               best_text=lambda v: f"{v:.4f} nats/frame",
               final_eval=lambda path: final_evaluation(path, data_path, out / "log.jsonl"))


def final_evaluation(ckpt_path: Path, data_path, log_path: Path | None = None) -> dict:
    model, ck = load_checkpoint(ckpt_path, lambda config: MelPrior(MelPriorConfig(**config)))
    spec = MelSpec(**ck["mel"])
    metrics = {}
    t0 = time.time()
    for name in ("val", "test"):
        split = load_fsdd(data_path, name)
        r = evaluate(model, split_frames(split, spec), split)
        metrics[name] = {k: round(v, 5) if isinstance(v, float) else v for k, v in r.items()}
        print(f"{name}: {r['nats_per_frame']:.4f} nats/frame over {r['n_frames']} frames ({r['n_clips']} clips)",
              flush=True)
    metrics["conditioning"] = "true digit and speaker"
    return store_metrics(ck, ckpt_path, metrics, log_path, t0)


def add_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    d = DEFAULTS
    p.add_argument("--data", required=True, help="fsdd.npz")
    p.add_argument("--out", required=True, help="output dir: ckpt.pt, last.pt, log.jsonl")
    p.add_argument("--hidden", type=int, default=d["hidden"])
    p.add_argument("--n-layers", type=int, default=d["n_layers"])
    p.add_argument("--prenet", type=int, default=d["prenet"])
    p.add_argument("--n-components", type=int, default=d["n_components"], help="Gaussians per frame")
    p.add_argument("--batch-size", type=int, default=d["batch_size"])
    add_schedule_arguments(p, d)
    p.add_argument("--grad-clip", type=float, default=d["grad_clip"])
    p.add_argument("--cond-dropout", type=float, default=d["cond_dropout"])
    p.add_argument("--eval-interval", type=int, default=d["eval_interval"])
    p.add_argument("--no-final-eval", dest="final_eval", action="store_false")
    add_run_arguments(p, d)
    return p


def main(argv: list[str] | None = None) -> int:
    return run_trainer("mel-prior", __doc__, add_arguments, train, argv)


if __name__ == "__main__":
    raise SystemExit(main())
