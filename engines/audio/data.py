"""The Free Spoken Digit Dataset (fsdd.npz) split into train / val / test, as mu-law clips.

fsdd.npz holds every recording concatenated (`audio` int16, 8 kHz) with `offsets` (N + 1),
the spoken digit (`labels`), the speaker's name (`speakers`) and the take number (`index`,
0..49). The split is by take, the dataset's own convention: takes 0-4 of every digit and
speaker are the test set; we hold out takes 5-9 for validation and train on takes 10-49.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

import numpy as np

from engines.audio import mulaw
from engines.errors import InputError, file_fault
from engines.limits import MAX_AUDIO_RATE, open_npz

SPLIT_TAKES = {"test": range(0, 5), "val": range(5, 10), "train": range(10, 50)}


@dataclass
class AudioSplit:
    split: str
    clips: list[np.ndarray]  # each (n_i,) int64 mu-law classes
    digits: np.ndarray  # (N,) int64
    speaker_ids: np.ndarray  # (N,) int64, index into `speakers`
    speakers: list[str]  # every speaker of the file, sorted
    sample_rate: int
    filenames: list[str]

    def __len__(self) -> int:
        return len(self.clips)

    @property
    def n_samples(self) -> int:
        return int(sum(len(c) for c in self.clips))

    def take(self, indices: Sequence[int] | np.ndarray) -> AudioSplit:
        """The clips at `indices` (in that order), as a split of their own (eval's --limit / --sample)."""
        idx = np.asarray(indices, dtype=np.int64)
        return replace(self, clips=[self.clips[i] for i in idx], digits=self.digits[idx],
                       speaker_ids=self.speaker_ids[idx], filenames=[self.filenames[i] for i in idx])


def load_fsdd(path: str | Path, split: str) -> AudioSplit:
    """One split of fsdd.npz; a missing, corrupt or foreign file is one InputError naming it."""
    path = Path(path)
    if split not in SPLIT_TAKES:
        raise InputError(f"unknown split {split!r}: choose train, val or test")
    d = open_npz(path, "audio, offsets, labels, speakers, index and sample_rate (fsdd.npz)")
    with d:  # closes the archive (and its file) whatever happens
        try:
            audio, offsets = d["audio"], d["offsets"]
            labels, speakers, takes = d["labels"], d["speakers"], d["index"]
            rate = int(d["sample_rate"])
            filenames = d["filenames"] if "filenames" in d.files else np.array([""] * len(labels))
        except (OSError, ValueError, TypeError, KeyError, EOFError, zipfile.BadZipFile) as exc:
            raise InputError(f"{path}: not an fsdd.npz file (needs audio, offsets, labels, speakers, index, "
                             f"sample_rate): {file_fault(exc)}") from None
    check_fsdd_arrays(path, audio, offsets, labels, speakers, takes, rate)
    names = sorted(set(str(s) for s in speakers))
    sid = {n: i for i, n in enumerate(names)}
    keep = np.flatnonzero(np.isin(takes, list(SPLIT_TAKES[split])))
    clips = [mulaw.from_int16(audio[offsets[i]:offsets[i + 1]]) for i in keep]
    return AudioSplit(split=split, clips=clips, digits=labels[keep].astype(np.int64),
                      speaker_ids=np.array([sid[str(speakers[i])] for i in keep], dtype=np.int64),
                      speakers=names, sample_rate=rate, filenames=[str(filenames[i]) for i in keep])


def check_fsdd_arrays(path: Path, audio, offsets, labels, speakers, takes, rate: int) -> None:
    """InputError unless the arrays of fsdd.npz fit together: clip i is audio[offsets[i]:offsets[i + 1]],
    so the offsets must be N + 1 whole numbers rising from 0 to at most len(audio). Without this
    check a broken file scores empty or overlapping clips and prints a meaningless NLL."""
    def bad(why: str) -> InputError:
        return InputError(f"{path}: not a usable fsdd.npz file: {why}")

    if audio.ndim != 1 or audio.dtype.kind not in "iu":
        raise bad(f"audio must be one row of integer (int16) samples, not {audio.dtype} of shape {audio.shape}")
    n = len(labels) if labels.ndim == 1 else -1
    if n < 1:
        raise bad("labels must be one row with an entry per clip")
    for name, a in (("speakers", speakers), ("index", takes)):
        if a.ndim != 1 or len(a) != n:
            raise bad(f"{name} has shape {a.shape}; expected one entry per clip ({n})")
    for name, a in (("labels", labels), ("index", takes), ("offsets", offsets)):
        if a.dtype.kind not in "iu":
            raise bad(f"{name} must be whole numbers, not {a.dtype}")
    if offsets.shape != (n + 1,):
        raise bad(f"offsets has shape {offsets.shape}; expected {n + 1} (one more than the {n} clips)")
    if offsets[0] != 0 or offsets[-1] > len(audio):
        raise bad(f"offsets must start at 0 and end within the {len(audio)} audio samples "
                  f"(they run from {int(offsets[0])} to {int(offsets[-1])})")
    steps = np.diff(offsets)
    if (steps <= 0).any():
        i = int(np.flatnonzero(steps <= 0)[0])
        raise bad(f"offsets must rise: clip {i} runs from {int(offsets[i])} to {int(offsets[i + 1])} (empty or backwards)")
    if not 0 < rate <= MAX_AUDIO_RATE:
        raise bad(f"sample_rate {rate} Hz is not a rate audio is recorded at (1..{MAX_AUDIO_RATE} Hz)")


def load_train_val(path: str | Path) -> tuple[AudioSplit, AudioSplit]:
    """The train and val splits of fsdd.npz, for a trainer; an empty one is an InputError naming it."""
    train, val = load_fsdd(path, "train"), load_fsdd(path, "val")
    for split in (train, val):
        if len(split) == 0:
            raise InputError(f"{path}: the {split.split} split is empty")
    return train, val
