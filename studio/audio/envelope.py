"""A min/max pyramid of a 1-D signal that grows at its end (numpy only, no Qt): what the Audio tab's
curves draw, in a number of points that does not depend on the sound's length.

Level l keeps, for each block of BASE * FACTOR**l samples, the smallest and the largest value in it
(NaN ignored; a block of NaN only is NaN). `update` recomputes only the blocks from the first
changed sample on, at every level: a sound that grows by k samples costs O(k + levels * FACTOR),
whatever its length. `points(i0, i1, max_points)` gives what to draw for samples i0..i1: the
samples themselves when there are at most `max_points`, otherwise the (min, max) pairs of the
finest level that fits in `max_points` (the envelope a waveform shows: every spike stays visible).
"""

from __future__ import annotations

import math

import numpy as np

BASE = 8  # samples per block at level 0
FACTOR = 4  # blocks of a level per block of the next
TOP_BLOCKS = 64  # levels are added until the coarsest has at most this many blocks


def _reduce(values: np.ndarray, block: int) -> tuple[np.ndarray, np.ndarray]:
    """(mins, maxs) of consecutive blocks of `block` values (the last may be shorter), NaN ignored."""
    full = len(values) // block
    head = values[: full * block].reshape(full, block)
    with np.errstate(invalid="ignore"):
        mins, maxs = np.fmin.reduce(head, axis=1), np.fmax.reduce(head, axis=1)
        if len(values) > full * block:
            tail = values[full * block:]
            mins = np.append(mins, np.fmin.reduce(tail))
            maxs = np.append(maxs, np.fmax.reduce(tail))
    return mins, maxs


class _Level:
    def __init__(self, block: int, capacity: int, dtype) -> None:
        self.block = block  # samples per block
        self.mins = np.empty(max(1, capacity), dtype)
        self.maxs = np.empty(max(1, capacity), dtype)
        self.count = 0

    def write(self, first: int, mins: np.ndarray, maxs: np.ndarray) -> None:
        end = first + len(mins)
        if end > len(self.mins):  # grown past the capacity asked for: double (amortised)
            size = max(end, 2 * len(self.mins))
            self.mins = np.resize(self.mins, size)
            self.maxs = np.resize(self.maxs, size)
        self.mins[first:end] = mins
        self.maxs[first:end] = maxs
        self.count = end


class Envelope:
    """The min/max pyramid of `data` (see the module's docstring)."""

    def __init__(self) -> None:
        self.data = np.zeros(0, np.float32)
        self.levels: list[_Level] = []
        self.values_read = 0  # samples and block values read by `update` in all (tests check it stays O(new))

    def __len__(self) -> int:
        return len(self.data)

    def update(self, data: np.ndarray, start: int = 0, capacity: int | None = None) -> None:
        """`data` (n,) is now the signal; its values before `start` are the ones given before (a signal
        that grew, or changed near its end): only the blocks from `start` on are recomputed. start=0
        starts over; `capacity` (samples) preallocates for a signal known to grow that far."""
        data = np.asarray(data).reshape(-1)
        start = max(0, min(int(start), len(self.data), len(data)))
        if start == 0:
            self.levels = []
        self.data = data
        n = len(data)
        if not self.levels:
            cap = max(n, int(capacity or 0))
            self.levels = [_Level(BASE, math.ceil(cap / BASE), data.dtype)]
        first = start // BASE  # the first block of this level that changed
        values = data
        for i in range(64):
            if i == len(self.levels):
                if self.levels[-1].count <= TOP_BLOCKS:
                    break
                below = self.levels[-1]
                self.levels.append(_Level(below.block * FACTOR, math.ceil(len(below.mins) / FACTOR), data.dtype))
                first = 0
            level = self.levels[i]
            step = BASE if i == 0 else FACTOR  # values of the level below (or samples) per block
            if i:
                below = self.levels[i - 1]
                first = min(first, below.count)
            lo = first * step
            if i == 0:
                mins, maxs = _reduce(values[lo:n], step)
            else:
                below = self.levels[i - 1]
                with np.errstate(invalid="ignore"):
                    mins = _reduce(below.mins[lo: below.count], step)[0]
                    maxs = _reduce(below.maxs[lo: below.count], step)[1]
            self.values_read += (n if i == 0 else below.count) - lo
            level.write(first, mins, maxs)
            first //= FACTOR
        while len(self.levels) > 1 and self.levels[-2].count <= TOP_BLOCKS:  # the signal shrank: fewer levels
            self.levels.pop()

    def extremes(self) -> tuple[float, float]:
        """(min, max) of the whole signal (NaN ignored; NaN when it has no value), from the top level."""
        if not len(self.data) or not self.levels:
            return math.nan, math.nan
        top = self.levels[-1]
        with np.errstate(invalid="ignore"):
            return float(np.fmin.reduce(top.mins[: top.count])), float(np.fmax.reduce(top.maxs[: top.count]))

    def points(self, i0: int, i1: int, max_points: int) -> tuple[np.ndarray, np.ndarray]:
        """(x, y) to draw samples i0..i1-1: x in samples (float), at most max(max_points, 2 * TOP_BLOCKS + 4)."""
        n = len(self.data)
        i0, i1 = max(0, int(i0)), min(n, int(i1))
        if i1 <= i0:
            return np.zeros(0), np.zeros(0, self.data.dtype)
        if i1 - i0 <= max_points or not self.levels:
            return np.arange(i0, i1, dtype=np.float64), self.data[i0:i1]
        level = self.levels[-1]
        for lv in self.levels:
            if 2 * (math.ceil(i1 / lv.block) - i0 // lv.block) <= max_points:
                level = lv
                break
        b = level.block
        j0, j1 = i0 // b, min(level.count, math.ceil(i1 / b))
        y = np.empty(2 * (j1 - j0), self.data.dtype)
        y[0::2] = level.mins[j0:j1]
        y[1::2] = level.maxs[j0:j1]
        # both values of a block at its middle (the last block may be shorter: clamped to the signal)
        x = np.minimum(np.arange(j0, j1, dtype=np.float64) * b + (b - 1) / 2, n - 1)
        return np.repeat(x, 2), y
