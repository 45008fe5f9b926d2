"""Files a training run writes: checkpoints (atomically) and the JSON-lines log; and how a run starts."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import torch


def save_checkpoint(obj: dict, path: Path) -> None:
    """Write atomically (temp file + rename) so a reader never sees half a checkpoint."""
    from engines.atomic import atomic_path

    with atomic_path(path) as tmp:  # flushed before the rename; an interrupt leaves no temporary file
        torch.save(obj, tmp)


def append_log(path: Path, record: dict) -> None:
    with path.open("a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")


def start_run(out_dir, hp: dict, defaults: dict, command: str | None) -> tuple[dict, Path, str]:
    """(the hyperparameters over `defaults`, the output folder (made), the command line) for a trainer's
    `train`; torch gets the run's thread count."""
    hp = {**defaults, **{k: v for k, v in hp.items() if v is not None}}
    torch.set_num_threads(hp["threads"])
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return hp, out, command or " ".join(shlex.quote(a) for a in sys.argv)
