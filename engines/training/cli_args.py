"""The command line the PixelCNN, WaveNet, NADE and MADE trainers share (`chainrule train FAMILY`).

* `add_schedule_arguments`: --lr, --min-lr, --warmup-iters, --max-iters: the learning-rate
  schedule and iteration budget of `engines.training.loop.fit`.
* `add_run_arguments`: --seed, --time-limit-minutes, --threads, --resume: each trainer's last options.
* `run_trainer`: the body of each trainer's `main`: parse its options, then call its `train`
  with the exact command line and the options as hyperparameters.

A trainer lists its own options in its own order around these; defaults come from its DEFAULTS.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from typing import Callable

NOT_HPARAMS = ("data", "out", "resume")  # options passed to train() on their own


def add_schedule_arguments(p: argparse.ArgumentParser, d: dict, *, lr_help: str | None = None) -> None:
    p.add_argument("--lr", type=float, default=d["lr"], help=lr_help)
    p.add_argument("--min-lr", type=float, default=d["min_lr"])
    p.add_argument("--warmup-iters", type=int, default=d["warmup_iters"])
    p.add_argument("--max-iters", type=int, default=d["max_iters"])


def add_run_arguments(p: argparse.ArgumentParser, d: dict, *,
                      time_help: str = "training time (evals included)") -> None:
    p.add_argument("--seed", type=int, default=d["seed"])
    p.add_argument("--time-limit-minutes", type=float, default=d["time_limit_minutes"], help=time_help)
    p.add_argument("--threads", type=int, default=d["threads"])
    p.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")


def run_trainer(family: str, doc: str, add_arguments: Callable[[argparse.ArgumentParser], object],
                train: Callable[..., dict], argv: list[str] | None = None) -> int:
    """`chainrule train FAMILY ARGV` (ARGV: sys.argv[1:] when None): the options add_arguments puts on
    the parser (--data, --out and --resume among them; the description is the first line of `doc`),
    then train(data, out, resume=..., command="chainrule train FAMILY ARGV", **the other options); 0."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog=f"chainrule train {family}", description=doc.splitlines()[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    command = " ".join(shlex.quote(a) for a in ["chainrule", "train", family] + argv)
    hp = {k: v for k, v in vars(args).items() if k not in NOT_HPARAMS}
    train(args.data, args.out, resume=args.resume, command=command, **hp)
    return 0
