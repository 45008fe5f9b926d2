"""What the per-modality `chainrule` commands (engines/<modality>/commands.py) do alike.

`engines.cli` parses and dispatches; each modality's commands module does the work. The steps
they take the same way live here, so a rule or a message changes in one place:

* output files: `check_out_path` (before any work), `sample_paths` (one --out, several
  samples), `refuse_overwriting_inputs` (an --out that names an input file);
* input checks: `check_count` (--count, against the caps in `engines.limits`), `eval_size` and `refuse_empty_split` (eval's --limit);
* which examples `eval` scores: `eval_indices` (all, --limit's first N, or --sample's seeded random N) and
  `eval_subset_label`, the words for them in the output and the card;
* what a command prints besides its result: `print_notes`, `print_model_and_seed`;
* the images `generate image` / `eval` take, for PixelCNN and density models alike:
  `read_init_and_mask`, `check_image_geometry`.

Every refusal is an InputError (one line on stderr from the CLI), raised before anything is
computed or written.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

from engines import limits
from engines.errors import InputError

# --- output files ------------------------------------------------------------------


def check_out_path(out: str | None) -> None:
    """Refuse an --out whose folder is missing or not writable, or that is a folder, before any generation."""
    if out is None:
        return
    target = Path(out).expanduser()
    folder = target.parent if str(target.parent) else Path(".")
    try:  # is_dir() raises OSError for a name over the OS limit (ENAMETOOLONG) on Python 3.11
        if target.is_dir():
            raise InputError(f"--out {out} is a folder; give a file name (e.g. {target / 'sample'}<suffix>)")
        if not folder.is_dir():
            raise InputError(f"--out {out}: folder {folder} does not exist (create it first); nothing was generated")
        if len(os.fsencode(target.name)) > 255:
            raise InputError(f"--out: the file name is {len(os.fsencode(target.name))} bytes long; at most 255 "
                             "fit in a folder; nothing was generated")
    except OSError as exc:
        raise InputError(f"--out {out}: {exc.strerror or exc}; nothing was generated") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise InputError(f"--out {out}: folder {folder} is not writable; nothing was generated")


def sample_paths(out: str | None, count: int) -> list[str | None]:
    """The file each of `count` samples is written to: None each without --out, --out itself for
    one sample, else --out with _1, _2 ... before its suffix (s.png -> s_1.png, s_2.png)."""
    if out is None:
        return [None] * count
    if count == 1:
        return [out]
    p = Path(out)
    return [str(p.with_name(f"{p.stem}_{i + 1}{p.suffix}")) for i in range(count)]


def same_file(a: str, b: str) -> bool:
    """Whether two paths name the same file (links resolved); False when one cannot be resolved."""
    try:
        return Path(a).resolve() == Path(b).resolve()
    except OSError:
        return False


def refuse_overwriting_inputs(out: str | None, count: int, inputs: Mapping[str, str | None]) -> None:
    """InputError when a sample file of --out would replace an input file. `inputs` maps each
    input's option name (without --) to the path given, or None when the option is left out."""
    if out is None:
        return
    paths = sample_paths(out, count)
    for flag, given in inputs.items():
        if given and any(same_file(p, given) for p in paths):
            raise InputError(f"--out would overwrite the --{flag} file {given}; choose another output name")


# --- input checks ------------------------------------------------------------------


def check_count(count: int, seed: int | None = None, cap: int = limits.MAX_COUNT) -> None:
    """--count must ask for 1..cap samples, and sample i's seed (seed + i) must stay below 2**63."""
    limits.count_in_range(count, "--count", cap)
    limits.check_seed_range(seed, count)


def refuse_empty_split(n: int, args: argparse.Namespace) -> None:
    """InputError when eval would score nothing (`n` examples of args.split in args.data)."""
    if n == 0:
        raise InputError(f"{args.data}: the {args.split} split is empty")


def eval_size(n_available: int, args: argparse.Namespace) -> int:
    """How many examples `eval` scores: the first --limit of the `n_available` in the split (all
    without --limit). InputError for a --limit below 1, then for a split with nothing to score."""
    n = n_available
    if args.limit is not None:
        if args.limit < 1:
            raise InputError(f"limit = {args.limit} is invalid: must be >= 1")
        n = min(n, args.limit)
    refuse_empty_split(n, args)
    return n


def check_eval_subset(args: argparse.Namespace) -> None:
    """InputError for eval's subset options that cannot go together: --sample with --limit, --seed
    without --sample, a --sample below 1. (Before any model or data is read.)"""
    sample, limit, seed = getattr(args, "sample", None), getattr(args, "limit", None), getattr(args, "seed", None)
    if sample is not None and limit is not None:
        raise InputError(f"--sample {sample} and --limit {limit} choose the examples two ways (a seeded random "
                         "subset, the first N); give one")
    if seed is not None and sample is None:
        raise InputError(f"--seed {seed} picks the examples of --sample N; give --sample too, or leave --seed out")
    if sample is not None and sample < 1:
        raise InputError(f"sample = {sample} is invalid: must be >= 1")
    if seed is not None and seed < 0:
        raise InputError(f"seed = {seed} is invalid: must be >= 0")


def eval_indices(n_available: int, args: argparse.Namespace) -> np.ndarray:
    """Which of the split's `n_available` examples `eval` scores, ascending (int64): all of them;
    the first --limit; or --sample N of them drawn without replacement by a generator seeded with
    --seed (0 without it), so a quick check is an unbiased estimate of the whole split's mean.
    InputError as `check_eval_subset`, then for a split with nothing to score."""
    check_eval_subset(args)
    refuse_empty_split(n_available, args)
    sample = getattr(args, "sample", None)
    if sample is None:
        return np.arange(eval_size(n_available, args), dtype=np.int64)
    if sample >= n_available:
        return np.arange(n_available, dtype=np.int64)
    rng = np.random.default_rng(eval_seed(args))
    return np.sort(rng.choice(n_available, size=sample, replace=False)).astype(np.int64)


def eval_seed(args: argparse.Namespace) -> int:
    """The seed of --sample's draw (--seed, 0 without it)."""
    seed = getattr(args, "seed", None)
    return 0 if seed is None else int(seed)


def eval_subset_label(n_scored: int, n_available: int, args: argparse.Namespace) -> str:
    """Which examples an eval scored, in words for its output and its card entry: "all 10000",
    "first 500 of 10000", "random 500 of 10000, seed 0"."""
    if n_scored >= n_available:
        return f"all {n_available}"
    if getattr(args, "sample", None) is not None:
        return f"random {n_scored} of {n_available}, seed {eval_seed(args)}"
    return f"first {n_scored} of {n_available}"


# --- what is printed besides the result --------------------------------------------


def print_notes(notes: Iterable[str]) -> None:
    """Each note (an input converted, an ordering not trained ...) as its own line on stderr."""
    for note in notes:
        print(f"chainrule: note: {note}", file=sys.stderr)


def print_model_and_seed(result: dict[str, Any]) -> None:
    """The last line of a human-readable `generate`: which model and seed reproduce it (stderr,
    so stdout keeps only the samples)."""
    print(f"\n[model {result['model']}, seed {result['seed']}]", file=sys.stderr)


# --- images given to generate image / eval (PixelCNN and density models) -----------


def read_init_and_mask(args: argparse.Namespace, *, channels: int, height: int, width: int, levels: int
                       ) -> tuple[np.ndarray | None, np.ndarray | None, list[str]]:
    """--init and --mask, read and checked together for a channels x height x width model of `levels`
    values: (pixels (C, H, W), regenerate mask (H, W) bool, notes on every conversion), or
    (None, None, []) when neither is given. InputError when only one is, or either cannot be used."""
    from engines.image.png import check_mask_coverage, read_image, read_mask

    init_path, mask_path = getattr(args, "init", None), getattr(args, "mask", None)
    if init_path is None and mask_path is None:
        return None, None, []
    if init_path is None:
        raise InputError("--mask needs --init: the image whose black-masked pixels are kept")
    if mask_path is None:
        raise InputError("--init needs --mask: a PNG of the same size, white where pixels are regenerated")
    img = read_image(init_path, channels=channels, height=height, width=width, levels=levels, what="image")
    mask, notes = read_mask(mask_path, height=height, width=width, image_size=img.original_size)
    check_mask_coverage(mask)
    return img.pixels, mask, img.notes + notes


def check_image_geometry(images: np.ndarray, data_path: str, model_id: str, expected: tuple[int, int, int]) -> None:
    """InputError when a data set's images (N, C, H, W) are not the model's `expected` (C, H, W)."""
    if images.shape[1:] != expected:
        c, h, w = images.shape[1:]
        raise InputError(f"{data_path} holds {c}x{h}x{w} images; {model_id} models {'x'.join(map(str, expected))}")
