"""Running `chainrule` in-process from the CLI tests (tests/test_<modality>_cli.py).

* `run_cli`: one command against a models folder with --json; checks the exit code.
* `error_line`: a command that must be refused with exactly one `chainrule: error:` line.
* `save_png`: an array saved as the PNG a user would pass (--image, --init, --mask).
* `must_not_generate`: patched over a generator, it fails a test whose command was not
  refused before any generation.

Isolation from the user's own models is the `isolated_user_models` fixture (tests/conftest.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from engines.cli import main


def run_cli(capsys, models_dir: str, *argv: str, code: int = 0):
    """(parsed JSON output, stderr) of `chainrule ARGV --models-dir MODELS_DIR --json`; the output
    is None when the command must fail (`code` != 0)."""
    got = main([*argv, "--models-dir", models_dir, "--json"])
    out, err = capsys.readouterr()
    assert got == code, err
    return (json.loads(out) if code == 0 else None), err


def error_line(capsys, models_dir: str, *argv: str) -> str:
    """The one stderr line of a command that must exit 1 with a user error (no traceback, no usage)."""
    _, err = run_cli(capsys, models_dir, *argv, code=1)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("chainrule: error: "), err
    return lines[0]


def save_png(path: Path, array) -> str:
    """Write `array` as 8-bit PNG; (H, W) gives mode L, (H, W, 4) RGBA. Returns the path as given to --image."""
    Image.fromarray(np.asarray(array).astype(np.uint8)).save(path)
    return str(path)


def must_not_generate(*args, **kwargs):
    raise AssertionError("generation ran although the command had to be refused first")
