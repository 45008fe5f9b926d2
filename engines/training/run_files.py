"""Files a training run writes: checkpoints (atomically) and the JSON-lines log."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch


def save_checkpoint(obj: dict, path: Path) -> None:
    """Write atomically (temp file + rename) so a reader never sees half a checkpoint."""
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def append_log(path: Path, record: dict) -> None:
    with path.open("a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")
