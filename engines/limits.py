"""Every cap on what a user can ask for, in one table, and the checks that file inputs share.

A request beyond a cap is refused with one line naming the setting, the value and the cap,
before any work starts: a cap is where a request stops being a plausible wish and becomes a
mistake that would run for hours or exhaust memory (a 100,000-sample --count, a 768 kHz WAV
header, a 20,000 x 20,000 PNG). The CLI, the studio and the engines read the same numbers.

Numeric extremes are capped for the same reason: a temperature of 1e-30 divides logits into
overflow, a repetition penalty of 1e-300 turns a logit into infinity; both once ended in
NumPy RuntimeWarnings and "the model produced NaN". The ranges below are far wider than any
useful setting and keep every intermediate finite in float32.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from engines.errors import InputError, file_fault

# --- what one command may generate ----------------------------------------------------------
MAX_COUNT = 1000  # samples per `generate` (text, images); each is a full generation
MAX_AUDIO_BATCH = 64  # WaveNet samples per `generate audio` (generated together, as one batch)
MAX_NUM_BEAMS = 256  # beam width: each step scores beams x vocabulary values
MAX_NEW_TOKENS = 100_000  # the window slides, so only time limits length; beyond this is a mistake
MAX_GENERATE_SECONDS = 300.0  # audio per `generate audio`
MAX_CANDIDATES = 1024  # posterior-aware completion candidates
SEED_LIMIT = 2**63  # seeds are in [0, 2**63): sample i of --count N uses seed + i

# --- decoding extremes ----------------------------------------------------------------------
MIN_TEMPERATURE = 0.01  # below this, sampling is greedy in all but overflow: use 0 (greedy)
MAX_TEMPERATURE = 100.0  # above this every value is equally likely to float precision
MIN_REPETITION_PENALTY = 0.01
MAX_REPETITION_PENALTY = 100.0
MAX_ABS_LENGTH_PENALTY = 10.0  # len ** 10 stays finite for any length the cap above allows

# --- files the user gives -------------------------------------------------------------------
MAX_IMAGE_PIXELS = 4096 * 4096  # width x height read from the header, before decoding
MAX_AUDIO_RATE = 384_000  # the highest rate real converters record; beyond it a header is lying
MAX_AUDIO_CHANNELS = 64
MAX_AUDIO_SECONDS = 120.0  # a recording read whole (scoring 120 s takes ~40 s on 2 cores); FSDD clips are ~1 s
MAX_AUDIO_VALUES = 32_000_000  # frames x channels decoded at once (128 MB of float32)
MAX_DATA_BYTES = 2 * 1024**3  # a --data file (npz or text); the shipped data sets are < 100 MB


def count_in_range(count, flag: str = "--count", cap: int = MAX_COUNT) -> int:
    """`count` as an int in 1..cap; InputError naming `flag` otherwise."""
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= cap:
        raise InputError(f"{flag} {count!r} is invalid: must be in 1..{cap:,}")
    return count


def check_seed_range(seed: int | None, count: int) -> None:
    """Sample i of `count` uses seed + i: all of them must stay below 2**63."""
    if seed is not None and seed + count - 1 >= SEED_LIMIT:
        raise InputError(f"--seed {seed} with --count {count} is invalid: sample i uses seed + i, which must stay "
                         f"below 2**63 (use a seed <= {SEED_LIMIT - count})")


def check_regular_file(path: str | os.PathLike, what: str, max_bytes: int | None = MAX_DATA_BYTES) -> Path:
    """`path` as a Path when it is a regular file of at most `max_bytes`; InputError otherwise.

    Looks at the file type with stat() before anything opens it: opening a FIFO blocks until a
    writer appears (forever), and /dev/zero or /dev/urandom never end."""
    p = Path(path)
    try:
        st = p.stat()
    except FileNotFoundError:
        raise InputError(f"{what} {p} not found (no such file)") from None
    except OSError as exc:
        raise InputError(f"cannot read {what} {p}: {exc.strerror or exc}") from None
    if stat.S_ISDIR(st.st_mode):
        raise InputError(f"{what} {p} is a folder, not a file")
    if not stat.S_ISREG(st.st_mode):
        raise InputError(f"{what} {p} is not a regular file (a pipe, device or socket cannot be read as data)")
    if st.st_size == 0:
        raise InputError(f"{what} {p} is empty (0 bytes)")
    if max_bytes is not None and st.st_size > max_bytes:
        raise InputError(f"{what} {p} is {st.st_size / 1024**3:.1f} GB; at most {max_bytes / 1024**3:g} GB can be read")
    return p


def open_npz(path: str | os.PathLike, holds: str):
    """The `.npz` archive at `path` (a regular file, no pickles), opened for reading; InputError
    naming the fault otherwise. `holds` says what the archive should hold, for the .npy message."""
    import zipfile

    import numpy as np

    p = check_regular_file(path, "data file")  # a FIFO, device or folder: refused before opening
    try:
        d = np.load(p, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise InputError(f"{p} is not a readable .npz file (corrupt or truncated?): {file_fault(exc)}") from None
    if not isinstance(d, np.lib.npyio.NpzFile):
        raise InputError(f"{p} holds a single array (.npy), not an .npz archive of {holds}")
    return d
