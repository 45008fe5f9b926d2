"""Train MADE (``engines.training.made``) on binarized MNIST, order- and connectivity-agnostic.

Run as::

    chainrule train made --data binarized_mnist.npz --out DIR [options]
    python -m engines.training.train_made --data PATH --out DIR [options]

The model is trained over a fixed set of M = ``--n-masks`` (ordering, mask seed) pairs: mask
set i uses seed ``mask_seeds[i] = --mask-seed + i`` and the ordering ``--orderings`` cycles
through (default ``raster,random``: even i raster, odd i ``random:<mask_seeds[i]>``); each
minibatch draws one of the M sets from a generator seeded by (seed, iteration), so a resumed
run continues exactly. A finite set of masks is what the MADE paper found best for small
models; the random orderings among them make the network usable in any ordering (exact
inpainting puts the known pixels first, `engines.density.orderings.known_first_ordering`).

Evaluation uses the mixture of the first K mask sets, log p(x) = logsumexp_k log p_k(x) -
log K (never averaged logits): periodic evals use K = ``--eval-k``, the final evaluation of
the best checkpoint on the full validation and test splits K = ``--default-k`` and K = 1.
Everything else (schedule, logs, checkpoints, ``--resume``) is as in ``train_nade``.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch

from engines.density.orderings import made_masks, make_ordering_from_spec
from engines.errors import InputError
from engines.training.cli_args import run_trainer
from engines.training.loop import load_checkpoint, store_metrics
from engines.training.made import MADE
from engines.training.train_nade import (add_common_arguments, fit, flat_split, marginal_logits, nll_summary,
                                         prepare_run)

DEFAULTS = dict(
    hidden="500,500", batch_size=100, lr=1e-3, min_lr=1e-5, warmup_iters=100, max_iters=1_000_000,
    grad_clip=0.0, eval_interval=1000, eval_images=2000, seed=1337, time_limit_minutes=25.0, threads=1,
    n_masks=32, default_k=32, eval_k=8, mask_seed=0, orderings="raster,random",
)


def mask_plan(n_masks: int, orderings: str | list[str], mask_seed: int = 0) -> tuple[list[str], list[int]]:
    """(ordering spec per mask set, seed per mask set) for M sets; `orderings` names cycle."""
    names = [s.strip() for s in orderings.split(",")] if isinstance(orderings, str) else list(orderings)
    if n_masks < 1 or not names or any(not s for s in names):
        raise InputError(f"need at least one mask set and one ordering, got n_masks={n_masks}, orderings={orderings!r}")
    seeds = [mask_seed + i for i in range(n_masks)]
    specs = [f"random:{seeds[i]}" if names[i % len(names)] == "random" else names[i % len(names)]
             for i in range(n_masks)]
    return specs, seeds


def build_mask_sets(specs: list[str], seeds: list[int], hidden, height: int, width: int) -> list[list[torch.Tensor]]:
    """The M mask sets as float32 tensors (made_masks of each (ordering spec, seed) pair)."""
    dims = height * width
    return [[torch.from_numpy(m) for m in made_masks(make_ordering_from_spec(spec, dims, height, width), tuple(hidden), seed)]
            for spec, seed in zip(specs, seeds)]


@torch.no_grad()
def evaluate(model: MADE, x: torch.Tensor, mask_sets, batch_size: int = 100) -> dict:
    """Exact NLL of x (N, D) under the mixture of the given mask sets (float32 pass, float64 sums)."""
    total = 0.0
    for i in range(0, len(x), batch_size):
        total += -model.log_prob_mixture(x[i:i + batch_size], mask_sets).double().sum().item()
    return {**nll_summary(total, len(x), model.dims), "k": len(mask_sets)}


def _hidden(text) -> tuple[int, ...]:
    try:
        hidden = tuple(int(h) for h in str(text).split(",") if h.strip())
    except ValueError:
        raise InputError(f"--hidden {text!r}: give sizes separated by commas, e.g. 500,500") from None
    if not hidden or min(hidden) < 1:
        raise InputError(f"--hidden {text!r}: at least one positive layer size")
    return hidden


def train(data_path, out_dir, *, resume: bool = False, command: str | None = None, **hp) -> dict:
    hp = {**DEFAULTS, **{k: v for k, v in hp.items() if v is not None}}
    command = command or " ".join(shlex.quote(a) for a in sys.argv)
    out, x_train, x_val, dataset, ck = prepare_run(data_path, out_dir, hp, resume)
    if ck:
        made = ck["made"]
        hidden, specs, seeds, default_k = ck["config"]["hidden"], made["orderings"], made["mask_seeds"], made["default_k"]
    else:
        hidden = _hidden(hp["hidden"])
        specs, seeds = mask_plan(hp["n_masks"], hp["orderings"], hp["mask_seed"])
        default_k = hp["default_k"]
    if not 1 <= default_k <= len(specs):
        raise InputError(f"--default-k {default_k} must be between 1 and --n-masks {len(specs)}")
    mask_sets = build_mask_sets(specs, seeds, hidden, dataset["height"], dataset["width"])
    eval_sets = mask_sets[:max(1, min(hp["eval_k"], len(mask_sets)))]
    model = MADE(dims=x_train.shape[1], hidden=hidden)
    with torch.no_grad():
        model.layers[-1].bias.copy_(marginal_logits(x_train))
    extra = {"made": {"n_masks": len(specs), "mask_seeds": seeds, "orderings": specs, "default_k": default_k}}

    def loss_fn(x, it):
        pick = int(np.random.default_rng([hp["seed"], it]).integers(len(mask_sets)))
        return -model.log_prob(x, mask_sets[pick]).mean()

    return fit(model=model, x_train=x_train, x_val=x_val, out=out, hp=hp, command=command, dataset=dataset,
               family="made", extra=extra, loss_fn=loss_fn, eval_fn=lambda x: evaluate(model, x, eval_sets),
               resume_ck=ck, final_eval=lambda path: final_evaluation(path, data_path, out / "log.jsonl"))


def load_made(ckpt_path) -> tuple[MADE, dict]:
    model, ck = load_checkpoint(ckpt_path, lambda config: MADE(**config))
    return model.eval(), ck


def checkpoint_mask_sets(ck: dict) -> list[list[torch.Tensor]]:
    made, data = ck["made"], ck["data"]
    return build_mask_sets(made["orderings"], made["mask_seeds"], ck["config"]["hidden"], data["height"], data["width"])


def final_evaluation(ckpt_path: Path, data_path, log_path: Path | None = None) -> dict:
    """Full val and test NLL of the best checkpoint with K = default_k and K = 1; stored as `metrics`."""
    model, ck = load_made(ckpt_path)
    mask_sets = checkpoint_mask_sets(ck)
    k = ck["made"]["default_k"]
    metrics, t0 = {"default_k": k}, time.time()
    for split in ("val", "test"):
        x = flat_split(data_path, split)
        for kk, key in ((k, split), (1, f"{split}_k1")):
            r = evaluate(model, x, mask_sets[:kk])
            metrics[key] = {n: (round(v, 5) if isinstance(v, float) else v) for n, v in r.items()}
            print(f"{split} (K={kk}): {r['nats_per_image']:.3f} nats/image, {r['bits_per_dim']:.4f} bits/dim "
                  f"({r['n_images']} images)", flush=True)
    return store_metrics(ck, ckpt_path, metrics, log_path, t0)


def add_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    d = DEFAULTS
    add_common_arguments(p, d)
    p.add_argument("--hidden", default=d["hidden"], help="hidden layer sizes, comma-separated (e.g. 500,500)")
    p.add_argument("--n-masks", type=int, default=d["n_masks"], help="M: (ordering, mask seed) sets trained over")
    p.add_argument("--default-k", type=int, default=d["default_k"], help="K: mask sets in the final/test ensemble")
    p.add_argument("--eval-k", type=int, default=d["eval_k"], help="mask sets in the periodic validation ensemble")
    p.add_argument("--mask-seed", type=int, default=d["mask_seed"], help="seed of mask set 0 (set i uses +i)")
    p.add_argument("--orderings", default=d["orderings"],
                   help="ordering names cycled over the mask sets (raster, reverse, column, random)")
    return p


def main(argv: list[str] | None = None) -> int:
    return run_trainer("made", __doc__, add_arguments, train, argv)


if __name__ == "__main__":
    raise SystemExit(main())
