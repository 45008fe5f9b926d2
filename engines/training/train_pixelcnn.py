"""Train a Gated PixelCNN (``engines.training.pixelcnn``) on MNIST or binarized MNIST.

Run as::

    chainrule train pixelcnn --data PATH --out DIR [options]
    python -m engines.training.train_pixelcnn --data PATH --out DIR [options]

The data file decides the task (``engines.image.data``):
* ``mnist.npz``: 256 grey levels, a 256-way softmax per pixel, conditioned on the digit
  (with ``--label-dropout`` of the labels replaced by "no label", so the same network also
  samples unconditionally); train = first 50000 training images, val = the last 10000.
* ``binarized_mnist.npz``: 0/1 pixels, one Bernoulli logit per pixel, no labels
  (unconditional); the standard 50k/10k/10k split.

The learning rate warms up, then follows a cosine to ``--min-lr`` over the run, where the
run's progress is the larger of iterations/``--max-iters`` and training time/
``--time-limit-minutes``: whichever budget ends first, the schedule ends with it.
Batches and label dropout are drawn from generators seeded by (seed, iteration), so a
resumed run continues exactly where it left off.

Every ``--eval-interval`` iterations the model is evaluated on the first ``--eval-images``
validation images; the result is printed and appended to ``DIR/log.jsonl`` (whose first
record holds the exact command). The best model by that validation NLL is saved to
``DIR/ckpt.pt``, the latest state (with the optimizer) to ``DIR/last.pt``; ``--resume``
continues from it. At the end the best checkpoint is evaluated on the full validation and
test splits and the results are stored in ``ckpt.pt`` (``metrics``) for the exporter.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import time
from pathlib import Path

import numpy as np
import torch

from engines.errors import InputError
from engines.image.data import load_split
from engines.training.cli_args import add_run_arguments, add_schedule_arguments, run_trainer
from engines.training.run_files import start_run
from engines.training.loop import fit, load_checkpoint, load_resume, store_metrics
from engines.training.pixelcnn import PixelCNN, PixelCNNConfig

DEFAULTS = dict(
    n_filters=32, n_layers=12, kernel_size=3, first_kernel_size=7, head_filters=64,
    batch_size=32, lr=1e-3, min_lr=2e-5, warmup_iters=200, max_iters=1_000_000,
    weight_decay=0.0, grad_clip=1.0, label_dropout=0.1, eval_interval=500, eval_images=2000,
    seed=1337, time_limit_minutes=55.0, threads=2,
)
LN2 = math.log(2)


def batch_indices(n: int, batch_size: int, it: int, seed: int) -> torch.Tensor:
    """Indices of batch `it`: epochs are seeded permutations, so the order depends only on (seed, it)."""
    per_epoch = max(1, n // batch_size)
    epoch, pos = divmod(it, per_epoch)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))
    return perm[pos * batch_size:(pos + 1) * batch_size]


@torch.no_grad()
def evaluate(model: PixelCNN, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 100,
             channels_last: bool = False) -> dict:
    """Exact NLL of `images` (N, C, H, W) in fp32: nats per dimension and per image, bits per dimension."""
    was_training = model.training
    model.eval()
    total = 0.0
    for i in range(0, len(images), batch_size):
        x = images[i:i + batch_size].float()
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        total += -model.log_prob(x, labels[i:i + batch_size]).double().sum().item()
    model.train(was_training)
    dims = images[0].numel()
    nats_image = total / len(images)
    return {"nats_per_dim": nats_image / dims, "nats_per_image": nats_image,
            "bits_per_dim": nats_image / dims / LN2, "n_images": len(images)}


def _tensors(split, n_classes: int, limit: int | None = None):
    x = torch.from_numpy(np.ascontiguousarray(split.images[:limit]))  # (N, C, H, W) uint8
    if split.labels is not None and n_classes > 0:
        y = torch.from_numpy(split.labels[:limit].copy())
    else:
        y = torch.full((len(x),), n_classes, dtype=torch.long)  # "no label"
    return x, y


def train(data_path, out_dir, *, resume=False, command=None, **hp) -> dict:
    hp, out, command = start_run(out_dir, hp, DEFAULTS, command)

    train_split = load_split(data_path, "train")
    val_split = load_split(data_path, "val")
    for split in (train_split, val_split):
        if len(split) == 0:
            raise InputError(f"{data_path}: the {split.split} split is empty")
    binary = train_split.levels == 2
    conditional = train_split.labels is not None and not hp.get("unconditional")
    _, C, H, W = train_split.images.shape
    config = PixelCNNConfig(
        height=H, width=W, channels=C, levels=train_split.levels, output="bernoulli" if binary else "categorical",
        n_filters=hp["n_filters"], n_layers=hp["n_layers"], kernel_size=hp["kernel_size"],
        first_kernel_size=hp["first_kernel_size"], head_filters=hp["head_filters"],
        n_classes=int(train_split.labels.max()) + 1 if conditional else 0,
    )
    ck = load_resume(out) if resume else None
    if ck is not None:
        config = PixelCNNConfig(**ck["config"])
    torch.manual_seed(hp["seed"])
    model = PixelCNN(config)
    if ck is None and hp.get("init_from"):
        init_from_onnx(model, hp["init_from"])
    channels_last = bool(hp.get("bf16"))
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=hp["lr"], weight_decay=hp["weight_decay"])

    x_train, y_train = _tensors(train_split, config.n_classes)
    x_val, y_val = _tensors(val_split, config.n_classes, hp["eval_images"])
    n_params = model.num_parameters()
    dataset = {"path": str(data_path), "kind": train_split.kind, "levels": train_split.levels,
               "train_images": len(x_train), "val_images": len(val_split), "conditional": conditional}
    dims = C * H * W

    def loss_at(it: int) -> torch.Tensor:
        idx = batch_indices(len(x_train), hp["batch_size"], it, hp["seed"])
        x, y = x_train[idx].float(), y_train[idx].clone()
        if config.n_classes > 0 and hp["label_dropout"] > 0:
            g = torch.Generator().manual_seed(hp["seed"] * 7919 + it)
            y[torch.rand(len(y), generator=g) < hp["label_dropout"]] = config.none_label
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast("cpu", dtype=torch.bfloat16) if hp.get("bf16") else contextlib.nullcontext():
            logits = model(x, y)
        return model.loss(logits.float(), x)

    def report(it: int, train_loss: float, val: dict, best_val: float) -> tuple[dict, str]:
        rec = {"epoch": round(it * hp["batch_size"] / len(x_train), 3), "train_nats_per_dim": round(train_loss, 5),
               "val_nats_per_dim": round(val["nats_per_dim"], 5), "val_nats_per_image": round(val["nats_per_image"], 3),
               "val_bits_per_dim": round(val["bits_per_dim"], 5), "best_val_nats_per_image": round(best_val * dims, 3)}
        return rec, (f"train {rec['train_nats_per_dim'] * dims:.2f}  val {val['nats_per_image']:.2f} nats/image "
                     f"({val['bits_per_dim']:.4f} bits/dim)  best {best_val * dims:.2f}")

    return fit(model=model, optimizer=optimizer, out=out, hp=hp, command=command, resume_ck=ck,
               meta={"config": config.to_dict(), "parameters": n_params, "data": dataset},
               header=f"data: {dataset}\nconfig: {config.to_dict()}  parameters: {n_params:,}",
               loss_at=loss_at, evaluate=lambda: evaluate(model, x_val, y_val, channels_last=channels_last),
               best_by="nats_per_dim", report=report, best_text=lambda v: f"{v * dims:.3f} nats/image",
               final_eval=lambda path: final_evaluation(path, data_path, out / "log.jsonl"))


def final_evaluation(ckpt_path: Path, data_path, log_path: Path | None = None) -> dict:
    """Full validation and test NLL of a checkpoint; stored in the checkpoint as `metrics`."""
    model, ck = load_checkpoint(ckpt_path, lambda config: PixelCNN(PixelCNNConfig(**config)))
    metrics = {}
    t0 = time.time()
    for split in ("val", "test"):
        x, y = _tensors(load_split(data_path, split), model.config.n_classes)
        r = evaluate(model, x, y)
        metrics[split] = {k: (round(v, 5) if isinstance(v, float) else v) for k, v in r.items()}
        print(f"{split}: {r['nats_per_image']:.3f} nats/image, {r['bits_per_dim']:.4f} bits/dim "
              f"({r['n_images']} images)", flush=True)
    metrics["conditioning"] = "true digit labels" if model.config.n_classes else "none"
    return store_metrics(ck, ckpt_path, metrics, log_path, t0)


def init_from_onnx(model: PixelCNN, path) -> None:
    """Start from the weights of an exported ``model.onnx`` (a folder or the file): its initializers
    are named after the state-dict keys (masks baked in, which re-masking leaves unchanged). A
    parameter the graph does not use (the last layer's horizontal output) is not in it and keeps its
    initial value; any other missing or differently shaped parameter refuses the whole load."""
    import onnx
    from onnx import numpy_helper

    path = Path(path)
    if path.is_dir():
        path = path / "model.onnx"
    if not path.is_file():
        raise InputError(f"--init-from {path}: no such model.onnx")
    inits = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(path)).graph.initializer}
    state = model.state_dict()
    params = dict(model.named_parameters())
    last = f"layers.{len(model.layers) - 1}.h_out."
    bad = [k for k in params if (k not in inits and not k.startswith(last))
           or (k in inits and tuple(inits[k].shape) != tuple(state[k].shape))]
    if bad:
        raise InputError(f"--init-from {path}: the architecture differs (e.g. {bad[0]}); use the same options")
    model.load_state_dict({**state, **{k: torch.from_numpy(inits[k].copy()) for k in params if k in inits}})


def add_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    d = DEFAULTS
    p.add_argument("--data", required=True, help="mnist.npz (256 levels, labels) or binarized_mnist.npz (0/1)")
    p.add_argument("--out", required=True, help="output dir: ckpt.pt, last.pt, log.jsonl")
    p.add_argument("--n-filters", type=int, default=d["n_filters"], help="features per stack")
    p.add_argument("--n-layers", type=int, default=d["n_layers"], help="gated layers (first is type A)")
    p.add_argument("--kernel-size", type=int, default=d["kernel_size"])
    p.add_argument("--first-kernel-size", type=int, default=d["first_kernel_size"])
    p.add_argument("--head-filters", type=int, default=d["head_filters"])
    p.add_argument("--unconditional", action="store_true", help="ignore the labels of the data")
    p.add_argument("--label-dropout", type=float, default=d["label_dropout"],
                   help="fraction of training labels replaced by 'no label' (conditional data only)")
    p.add_argument("--batch-size", type=int, default=d["batch_size"])
    add_schedule_arguments(p, d)
    p.add_argument("--weight-decay", type=float, default=d["weight_decay"])
    p.add_argument("--grad-clip", type=float, default=d["grad_clip"])
    p.add_argument("--eval-interval", type=int, default=d["eval_interval"])
    p.add_argument("--eval-images", type=int, default=d["eval_images"], help="validation images per periodic eval")
    p.add_argument("--no-final-eval", dest="final_eval", action="store_false",
                   help="skip the full val/test evaluation of the best checkpoint at the end")
    p.add_argument("--bf16", action="store_true", help="bfloat16 autocast + channels-last (faster on CPUs with AMX/AVX512-BF16)")
    p.add_argument("--init-from", metavar="MODEL", help="start from the weights of an exported model (folder or model.onnx)")
    add_run_arguments(p, d)
    return p


def main(argv: list[str] | None = None) -> int:
    return run_trainer("pixelcnn", __doc__, add_arguments, train, argv)


if __name__ == "__main__":
    raise SystemExit(main())
