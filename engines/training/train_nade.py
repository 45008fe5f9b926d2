"""Train NADE (``engines.training.nade``) on binarized MNIST, in raster order.

Run as::

    chainrule train nade --data binarized_mnist.npz --out DIR [options]
    python -m engines.training.train_nade --data PATH --out DIR [options]

Images are flattened in raster order to x (N, D) in {0, 1}. Adam; the learning rate warms up,
then follows a cosine to ``--min-lr``, where the run's progress is the larger of
iterations/``--max-iters`` and training time/``--time-limit-minutes`` (whichever budget ends
first ends the schedule). Batches are seeded permutations per epoch, so a ``--resume``d run
continues exactly where it stopped. Every ``--eval-interval`` iterations the first
``--eval-images`` validation images are scored; the record goes to ``DIR/log.jsonl`` (whose
first record holds the exact command), the best model to ``DIR/ckpt.pt`` and the latest state
with the optimizer to ``DIR/last.pt`` (both written atomically). At the end the best
checkpoint is scored on the full validation and test splits and the results are stored in
``ckpt.pt`` (``metrics``) for the exporter (``engines.training.export_density``).

`fit` (NADE's and MADE's use of the loop of all trainers, ``engines.training.loop``) is shared with
the MADE trainer (``train_made``), which differs only in the model, the per-minibatch mask choice
and the (ensemble) evaluation.
"""

from __future__ import annotations

import argparse
import math
import shlex
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from engines.errors import InputError
from engines.image.data import load_split
from engines.training import loop
from engines.training.cli_args import add_run_arguments, add_schedule_arguments, run_trainer
from engines.training.loop import load_checkpoint, load_resume, store_metrics
from engines.training.nade import NADE, nll_blocked
from engines.training.train_pixelcnn import batch_indices

DEFAULTS = dict(
    hidden=500, batch_size=100, lr=1e-3, min_lr=1e-5, warmup_iters=100, max_iters=1_000_000,
    grad_clip=0.0, eval_interval=500, eval_images=2000, seed=1337, time_limit_minutes=25.0, threads=1,
    block=16,
)
LN2 = math.log(2)


def flat_split(data_path, split: str, limit: int | None = None) -> torch.Tensor:
    """One split as float32 (N, D) in {0, 1}, raster order (InputError if not binary or empty)."""
    s = load_split(data_path, split)
    if s.levels != 2:
        raise InputError(f"{data_path}: NADE/MADE need binarized images (0/1), this file has {s.levels} levels")
    if len(s) == 0:
        raise InputError(f"{data_path}: the {split} split is empty")
    x = s.images[:limit].reshape(len(s.images[:limit]), -1)
    return torch.from_numpy(np.ascontiguousarray(x)).float()


def data_info(data_path, x_train: torch.Tensor) -> dict:
    s = load_split(data_path, "train")
    _, C, H, W = s.images.shape
    return {"path": str(data_path), "kind": s.kind, "levels": 2, "height": H, "width": W, "channels": C,
            "dims": int(x_train.shape[1]), "train_images": len(x_train),
            "val_images": len(load_split(data_path, "val")), "test_images": len(load_split(data_path, "test"))}


def marginal_logits(x_train: torch.Tensor) -> torch.Tensor:
    """Per-pixel logit of the training mean (clipped): the output bias a model starts from."""
    p = x_train.mean(0).clamp(1e-3, 1 - 1e-3)
    return torch.log(p) - torch.log1p(-p)


def nll_summary(total_nats: float, n: int, dims: int) -> dict:
    per_image = total_nats / n
    return {"nats_per_image": per_image, "nats_per_dim": per_image / dims, "bits_per_dim": per_image / dims / LN2,
            "n_images": n}


def fit(*, model: torch.nn.Module, x_train: torch.Tensor, x_val: torch.Tensor, out: Path, hp: dict,
        command: str, dataset: dict, family: str, extra: dict,
        loss_fn: Callable[[torch.Tensor, int], torch.Tensor], eval_fn: Callable[[torch.Tensor], dict],
        resume_ck: dict | None, final_eval: Callable[[Path], dict] | None = None) -> dict:
    """NADE's and MADE's use of the shared loop (`engines.training.loop.fit`); returns the "end" summary.

    Adam; batch `it` is a seeded permutation slice of x_train. loss_fn(x, it) -> mean NLL per image of
    the batch (a scalar with a graph); eval_fn(x) -> nll_summary dict. `extra` is stored in every
    checkpoint (the model's own settings).
    """
    n_params = sum(p.numel() for p in model.parameters())
    meta = {"config": model.config(), "family": family, "parameters": n_params, "data": dataset, **extra}

    def report(it: int, train_loss: float, val: dict, best_val: float) -> tuple[dict, str]:
        rec = {"epoch": round(it * hp["batch_size"] / len(x_train), 3), "train_nats_per_image": round(train_loss, 3),
               "val_nats_per_image": round(val["nats_per_image"], 3), "val_bits_per_dim": round(val["bits_per_dim"], 5),
               "best_val_nats_per_image": round(best_val, 3)}
        return rec, f"train {rec['train_nats_per_image']:.2f}  val {val['nats_per_image']:.2f} nats/image  best {best_val:.2f}"

    return loop.fit(
        model=model, optimizer=torch.optim.Adam(model.parameters(), lr=hp["lr"]), out=out, hp=hp, command=command,
        resume_ck=resume_ck, meta=meta, header=f"{family}: {model.config()}  parameters: {n_params:,}  data: {dataset}",
        loss_at=lambda it: loss_fn(x_train[batch_indices(len(x_train), hp["batch_size"], it, hp["seed"])], it),
        evaluate=lambda: eval_fn(x_val), best_by="nats_per_image", report=report,
        best_text=lambda v: f"{v:.3f} nats/image", final_eval=final_eval)


def prepare_run(data_path, out_dir, hp: dict, resume: bool):
    """(out, x_train, x_val, dataset, resume checkpoint or None); sets the thread count and seed."""
    torch.set_num_threads(hp["threads"])
    torch.manual_seed(hp["seed"])
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    x_train = flat_split(data_path, "train")
    x_val = flat_split(data_path, "val", hp["eval_images"])
    ck = load_resume(out) if resume else None
    return out, x_train, x_val, data_info(data_path, x_train), ck


@torch.no_grad()
def evaluate(model: NADE, x: torch.Tensor, batch_size: int = 100, block: int = 16) -> dict:
    """Exact NLL of x (N, D) under NADE (float32, blocked pass)."""
    total = 0.0
    for i in range(0, len(x), batch_size):
        total += nll_blocked(model, x[i:i + batch_size], block).double().sum().item()
    return nll_summary(total, len(x), model.dims)


def train(data_path, out_dir, *, resume: bool = False, command: str | None = None, **hp) -> dict:
    hp = {**DEFAULTS, **{k: v for k, v in hp.items() if v is not None}}
    command = command or " ".join(shlex.quote(a) for a in sys.argv)
    out, x_train, x_val, dataset, ck = prepare_run(data_path, out_dir, hp, resume)
    hidden = ck["config"]["hidden"] if ck else hp["hidden"]
    model = NADE(dims=x_train.shape[1], hidden=hidden)
    with torch.no_grad():
        model.b.copy_(marginal_logits(x_train))
    block = hp["block"]
    return fit(model=model, x_train=x_train, x_val=x_val, out=out, hp=hp, command=command, dataset=dataset,
               family="nade", extra={"ordering": "raster"},
               loss_fn=lambda x, it: nll_blocked(model, x, block).mean(),
               eval_fn=lambda x: evaluate(model, x, block=block), resume_ck=ck,
               final_eval=lambda path: final_evaluation(path, data_path, out / "log.jsonl"))


def load_nade(ckpt_path) -> tuple[NADE, dict]:
    model, ck = load_checkpoint(ckpt_path, lambda config: NADE(**config))
    return model.eval(), ck


def final_evaluation(ckpt_path: Path, data_path, log_path: Path | None = None) -> dict:
    """Full validation and test NLL of the best checkpoint; stored in it as `metrics`."""
    model, ck = load_nade(ckpt_path)
    metrics, t0 = {}, time.time()
    for split in ("val", "test"):
        r = evaluate(model, flat_split(data_path, split))
        metrics[split] = {k: (round(v, 5) if isinstance(v, float) else v) for k, v in r.items()}
        print(f"{split}: {r['nats_per_image']:.3f} nats/image, {r['bits_per_dim']:.4f} bits/dim "
              f"({r['n_images']} images)", flush=True)
    return store_metrics(ck, ckpt_path, metrics, log_path, t0)


def add_common_arguments(p: argparse.ArgumentParser, d: dict) -> argparse.ArgumentParser:
    p.add_argument("--data", required=True, help="binarized_mnist.npz (0/1 pixels, train/valid/test)")
    p.add_argument("--out", required=True, help="output dir: ckpt.pt, last.pt, log.jsonl")
    p.add_argument("--batch-size", type=int, default=d["batch_size"])
    add_schedule_arguments(p, d, lr_help="Adam learning rate after warm-up")
    p.add_argument("--grad-clip", type=float, default=d["grad_clip"], help="gradient norm clip (0 = off)")
    p.add_argument("--eval-interval", type=int, default=d["eval_interval"])
    p.add_argument("--eval-images", type=int, default=d["eval_images"], help="validation images per periodic eval")
    p.add_argument("--no-final-eval", dest="final_eval", action="store_false",
                   help="skip the full val/test evaluation of the best checkpoint at the end")
    add_run_arguments(p, d, time_help="training time, periodic evals included (the final evaluation comes after)")
    return p


def add_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    add_common_arguments(p, DEFAULTS)
    p.add_argument("--hidden", type=int, default=DEFAULTS["hidden"], help="hidden units H")
    p.add_argument("--block", type=int, default=DEFAULTS["block"], help="pixels per block of the blocked pass (speed only)")
    return p


def main(argv: list[str] | None = None) -> int:
    return run_trainer("nade", __doc__, add_arguments, train, argv)


if __name__ == "__main__":
    raise SystemExit(main())
