"""What the Image tab's canvas holds and does to it, without Qt.

The drawing is `pixels` (C, H, W) uint8 in the model's values (0..levels-1; 0 is black, the
background of MNIST; ink is bright) and `mask` (H, W) bool (True = the model regenerates
it). Brush strokes stamp a round brush along the straight lines between mouse positions;
`History` keeps (pixels, mask) snapshots for undo/redo. `completion_mask` and
`inpaint_mask` turn a drawing into the mask a run samples, refusing with a clear
`InputError` when there is nothing to regenerate (or nothing to keep).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable

import numpy as np
from PIL import Image

from engines.errors import InputError, ModelLoadError

TOOLS = ("brush", "eraser", "mask", "unmask")
TOOL_LABELS = {"brush": "Brush", "eraser": "Eraser", "mask": "Mask", "unmask": "Unmask"}
HISTORY_LIMIT = 200


@dataclass(frozen=True)
class Geometry:
    """The image a model draws, read from its card (no ONNX session needed)."""

    height: int
    width: int
    channels: int
    levels: int
    output: str  # "bernoulli" | "categorical<levels>"
    n_classes: int  # 0: unconditional only
    label_names: tuple[str, ...] = ()

    @property
    def bernoulli(self) -> bool:
        return self.output == "bernoulli"

    @property
    def size(self) -> tuple[int, int]:
        """(width, height), as Pillow says it."""
        return self.width, self.height

    @property
    def dims(self) -> int:
        return self.height * self.width * self.channels

    def blank(self) -> np.ndarray:
        return np.zeros((self.channels, self.height, self.width), np.uint8)

    def blank_mask(self) -> np.ndarray:
        return np.zeros((self.height, self.width), bool)

    def describe(self) -> str:
        mode = "binary" if self.levels == 2 else ("grey" if self.channels == 1 else "RGB")
        levels = "" if self.levels == 2 else f", {self.levels} levels"
        return f"{self.width}x{self.height} {mode}{levels}"

    @classmethod
    def from_card(cls, card: dict[str, Any]) -> "Geometry":
        from engines.image.model import shape_from_card

        shape = shape_from_card(card)  # ModelLoadError when the architecture is incomplete
        if min(shape.height, shape.width, shape.channels) < 1 or shape.levels < 2:
            raise ModelLoadError(f"card of {card.get('id')!r}: image geometry {shape} is not usable")
        cond = card.get("conditioning") or {}
        n_classes = int(cond.get("num_classes", 0) or 0)
        names = [str(x) for x in (cond.get("labels") or [])]
        if len(names) != n_classes:
            names = [str(i) for i in range(n_classes)]
        output = str(card.get("output") or ("bernoulli" if shape.levels == 2 else f"categorical{shape.levels}"))
        return cls(shape.height, shape.width, shape.channels, shape.levels, output, n_classes, tuple(names))


# --- brush ---------------------------------------------------------------------------------

def brush_offsets(size: int) -> list[tuple[int, int]]:
    """(dr, dc) cells of a round brush `size` pixels across, around the pixel under the cursor."""
    size = max(1, int(size))
    lo = -(size // 2)
    centre = lo + (size - 1) / 2
    radius2 = (size / 2) ** 2
    return [(dr, dc) for dr in range(lo, lo + size) for dc in range(lo, lo + size)
            if (dr - centre) ** 2 + (dc - centre) ** 2 <= radius2 + 1e-9]


def line_cells(r0: int, c0: int, r1: int, c1: int) -> list[tuple[int, int]]:
    """The cells of a straight line from (r0, c0) to (r1, c1), both included (Bresenham)."""
    cells = []
    dr, dc = abs(r1 - r0), abs(c1 - c0)
    sr, sc = (1 if r1 >= r0 else -1), (1 if c1 >= c0 else -1)
    err = dc - dr
    r, c = r0, c0
    while True:
        cells.append((r, c))
        if (r, c) == (r1, c1):
            return cells
        e2 = 2 * err
        if e2 > -dr:
            err -= dr
            c += sc
        if e2 < dc:
            err += dc
            r += sr


def stamp(pixels: np.ndarray, mask: np.ndarray, cells: Iterable[tuple[int, int]], tool: str, size: int,
          ink: int) -> bool:
    """Apply `tool` with a round brush at every cell (in place); True when anything changed.

    brush: each channel becomes max(itself, ink) (going over a stroke never lightens it);
    eraser: 0; mask / unmask: set / clear the mask.
    """
    if tool not in TOOLS:
        raise ValueError(f"unknown tool {tool!r}")
    h, w = mask.shape
    hit = np.zeros((h, w), bool)
    offsets = brush_offsets(size)
    for r, c in cells:
        for dr, dc in offsets:
            rr, cc = r + dr, c + dc
            if 0 <= rr < h and 0 <= cc < w:
                hit[rr, cc] = True
    if not hit.any():
        return False
    if tool == "brush":
        before = pixels[:, hit].copy()
        pixels[:, hit] = np.maximum(before, np.uint8(ink))
        return bool((pixels[:, hit] != before).any())
    if tool == "eraser":
        changed = bool(pixels[:, hit].any())
        pixels[:, hit] = 0
        return changed
    value = tool == "mask"
    changed = bool((mask[hit] != value).any())
    mask[hit] = value
    return changed


# --- undo / redo ----------------------------------------------------------------------------

State = tuple[np.ndarray, np.ndarray]  # (pixels, mask)


class History:
    """Undo/redo of (pixels, mask) snapshots; a new `push` forgets what could be redone."""

    def __init__(self, limit: int = HISTORY_LIMIT) -> None:
        self.limit = limit
        self._undo: list[State] = []
        self._redo: list[State] = []

    @staticmethod
    def _copy(state: State) -> State:
        return state[0].copy(), state[1].copy()

    def push(self, state: State) -> None:
        """Remember `state` (the drawing before a change)."""
        self._undo.append(self._copy(state))
        del self._undo[:-self.limit]
        self._redo.clear()

    def undo(self, current: State) -> State | None:
        if not self._undo:
            return None
        self._redo.append(self._copy(current))
        return self._undo.pop()

    def redo(self, current: State) -> State | None:
        if not self._redo:
            return None
        self._undo.append(self._copy(current))
        return self._redo.pop()

    def can_undo(self) -> bool:
        return bool(self._undo)

    def can_redo(self) -> bool:
        return bool(self._redo)

    def clear(self) -> None:
        self._undo.clear()
        self._redo.clear()


# --- masks for a run ---------------------------------------------------------------------------

def last_ink(pixels: np.ndarray) -> int | None:
    """Raster index (r * W + c) of the last pixel with any ink, or None for a blank drawing."""
    ink = np.asarray(pixels).any(axis=0).reshape(-1)
    idx = np.flatnonzero(ink)
    return int(idx[-1]) if idx.size else None


def completion_mask(pixels: np.ndarray) -> np.ndarray:
    """Complete: regenerate every pixel after the last inked one in raster order (row by row).

    The model samples in that order, so everything before the mask is exactly what it
    conditions on: the completion sees the whole drawing.
    """
    _c, h, w = pixels.shape
    last = last_ink(pixels)
    if last is None:
        raise InputError("Nothing is drawn yet: Complete continues a drawing. Draw the top of a digit first "
                         "(or press Generate to start from nothing).")
    if last == h * w - 1:
        raise InputError("Nothing to complete: the drawing reaches the last pixel (bottom right), and the model "
                         "draws row by row from the top, so there is nothing after it. Erase the lower part, or "
                         "paint a mask and use Inpaint.")
    mask = np.zeros(h * w, bool)
    mask[last + 1:] = True
    return mask.reshape(h, w)


def inpaint_mask(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """The mask layer checked for Inpaint: the canvas's size, something to regenerate and something kept."""
    mask = np.asarray(mask, bool)
    if mask.shape != tuple(shape):
        raise InputError(f"the mask is {mask.shape[1]}x{mask.shape[0]} but the canvas is {shape[1]}x{shape[0]}: "
                         "they must be the same size")
    if not mask.any():
        raise InputError("The mask is empty: there is nothing to regenerate. Paint over what the model should "
                         "redraw with the Mask tool (shown in red), then press Inpaint.")
    if mask.all():
        raise InputError("The mask covers every pixel: nothing of the drawing would be kept. Unmask the part to "
                         "keep, or press Generate to draw from nothing.")
    return mask


# --- conversions -----------------------------------------------------------------------------------

def to_8bit(pixels: np.ndarray, levels: int) -> np.ndarray:
    """(C, H, W) model values -> (H, W, C) uint8 0..255."""
    p = np.asarray(pixels, np.float64)
    return np.round(p * (255.0 / (levels - 1))).clip(0, 255).astype(np.uint8).transpose(1, 2, 0)


def from_8bit(a: np.ndarray, levels: int) -> np.ndarray:
    """(H, W, C) 0..255 -> (C, H, W) model values (binary: >= 128 is ink)."""
    a = np.asarray(a, np.float64)
    if levels == 2:
        q = a >= 128
    else:
        q = np.round(a * (levels - 1) / 255.0)
    return np.ascontiguousarray(q.astype(np.uint8).transpose(2, 0, 1))


def ink_value(intensity_8bit: int, levels: int) -> int:
    """The model value for a 0..255 ink intensity (binary models: always 1)."""
    if levels == 2:
        return 1
    return int(np.clip(round(intensity_8bit * (levels - 1) / 255), 1, levels - 1))


def convert_drawing(pixels: np.ndarray, mask: np.ndarray, src: Geometry, dst: Geometry
                    ) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Bring a drawing made for `src` to `dst` (another model): same conversions as loading a file."""
    notes: list[str] = []
    if (src.height, src.width, src.channels, src.levels) == (dst.height, dst.width, dst.channels, dst.levels):
        return pixels.copy(), mask.copy(), notes
    a = to_8bit(pixels, src.levels).astype(np.float64)  # (H, W, C)
    if src.channels != dst.channels:
        if dst.channels == 1:
            a = (a[..., 0] * 299 + a[..., 1] * 587 + a[..., 2] * 114)[..., None] / 1000.0
            notes.append("colour converted to grey")
        else:
            a = np.repeat(a[..., :1], dst.channels, axis=2)
    if (src.height, src.width) != (dst.height, dst.width):
        method = Image.Resampling.BOX if (dst.width <= src.width and dst.height <= src.height) \
            else Image.Resampling.BILINEAR
        a = np.stack([np.asarray(Image.fromarray(a[..., i].astype(np.float32)).resize((dst.width, dst.height), method))
                      for i in range(a.shape[2])], axis=2)
        m = np.asarray(Image.fromarray(mask.astype(np.float32) * 255).resize((dst.width, dst.height), method)) >= 127.5
        mask = m
        notes.append(f"resized from {src.width}x{src.height} to {dst.width}x{dst.height}")
    else:
        mask = mask.copy()
    if src.levels != dst.levels:
        notes.append("binarized (grey >= 128 became ink)" if dst.levels == 2
                     else f"{src.levels} levels mapped to {dst.levels}")
    return from_8bit(np.clip(np.round(a), 0, 255), dst.levels), mask, notes


def bits(nats: float) -> float:
    return nats / math.log(2)
