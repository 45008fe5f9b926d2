"""The image data sets as numpy arrays: `mnist.npz` (256 grey levels, digit labels) and
`binarized_mnist.npz` (0/1 pixels, the standard 50k/10k/10k split, no labels).

Which is which is told by the arrays in the file, not its name:
* mnist: `x_train` (60000, 28, 28) uint8, `y_train`, `x_test`, `y_test`. Split: train =
  the first 50000 training images, val = the last 10000, test = `x_test`.
* binarized: `train` (50000, 784), `valid`, `test`, uint8 0/1.
Images come back as uint8 (N, C, H, W); labels as int64 (N,) or None.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engines.errors import InputError, file_fault
from engines.limits import open_npz

SPLITS = ("train", "val", "test")
MNIST_TRAIN = 50000  # mnist: the first 50000 of x_train train, the rest validate


@dataclass
class ImageSplit:
    images: np.ndarray  # (N, C, H, W) uint8
    labels: np.ndarray | None  # (N,) int64, or None when the file has none
    levels: int  # 256 or 2
    kind: str  # "mnist" or "binarized_mnist"
    split: str

    def __len__(self) -> int:
        return len(self.images)


def _open(path: str | Path):
    return open_npz(path, "splits (x_train/x_test for mnist, train/valid/test for binarized mnist)")


def check_pixel_values(x: np.ndarray, path: str | Path, split: str, levels: int) -> None:
    """InputError unless `x` holds whole numbers in 0..levels-1: a float, negative or NaN value
    would be cast to some pixel value and scored as if it were one (a meaningless NLL)."""
    if x.dtype.kind not in "biu":
        raise InputError(f"{path}: the {split} images are {x.dtype} values; expected whole numbers 0..{levels - 1} "
                         "(uint8)")
    if x.size and int(x.min()) < 0:
        raise InputError(f"{path}: the {split} images hold negative values (down to {int(x.min())}); "
                         f"expected 0..{levels - 1}")


def load_split(path: str | Path, split: str) -> ImageSplit:
    """One split of an MNIST-style .npz file (see the module doc for the layouts)."""
    if split not in SPLITS:
        raise InputError(f"split {split!r} is not one of {', '.join(SPLITS)}")
    with _open(path) as d:
        keys = set(d.files)
        try:
            if {"x_train", "x_test"} <= keys:
                if split == "test":
                    x, y = d["x_test"], d["y_test"] if "y_test" in keys else None
                else:
                    x, y = d["x_train"], d["y_train"] if "y_train" in keys else None
                    part = slice(0, MNIST_TRAIN) if split == "train" else slice(MNIST_TRAIN, None)
                    x, y = x[part], (y[part] if y is not None else None)
                kind, levels = "mnist", 256
            elif {"train", "valid", "test"} <= keys:
                x, y = d[{"train": "train", "val": "valid", "test": "test"}[split]], None
                kind, levels = "binarized_mnist", 2
            else:
                raise InputError(f"{path}: unknown layout (arrays {', '.join(sorted(keys))}); "
                                 "expected x_train/x_test (mnist) or train/valid/test (binarized mnist)")
        except InputError:
            raise  # already one line naming the file (an InputError is a ValueError too)
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
            raise InputError(f"{path}: cannot read the {split} split: {file_fault(exc)}") from exc
    x = np.asarray(x)
    if x.ndim == 2:  # (N, H*W) flattened square images
        side = int(round(np.sqrt(x.shape[1])))
        if side * side != x.shape[1]:
            raise InputError(f"{path}: {split} rows of {x.shape[1]} values are not square images")
        x = x.reshape(len(x), side, side)
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4:
        raise InputError(f"{path}: {split} images have shape {x.shape}; expected (N, H, W) or (N, C, H, W)")
    check_pixel_values(x, path, split, levels)
    if x.size and int(x.max()) >= levels:
        raise InputError(f"{path}: {split} has values up to {int(x.max())}, more than {levels} levels")
    if y is not None:
        y = np.asarray(y)
        # whole-valued floats are fine as labels; NaN, 2.5 or strings are not
        if not (y.dtype.kind in "biu" or (y.dtype.kind == "f" and np.isfinite(y).all() and (y == np.round(y)).all())):
            raise InputError(f"{path}: the {split} labels are not whole numbers ({y.dtype})")
    labels = None if y is None else np.asarray(y).astype(np.int64).reshape(-1)
    if labels is not None and len(labels) != len(x):
        raise InputError(f"{path}: {len(labels)} labels for {len(x)} images in the {split} split")
    return ImageSplit(x.astype(np.uint8, copy=False), labels, levels, kind, split)
