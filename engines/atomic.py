"""Atomic file writes: write a temporary file in the target's folder, then rename over it.

A crash or a full disk mid-write leaves the old file (or nothing), never a half-written one.
"""

from __future__ import annotations

import atexit
import os
import signal
import stat
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from engines.errors import InputError

# Ctrl-C and SIGTERM (the CLI turns both into KeyboardInterrupt): held back while a temporary file
# is created or removed, so no interrupt can land between "the file exists" and "we know its name".
_STOP_SIGNALS = tuple(s for s in (getattr(signal, "SIGINT", None), getattr(signal, "SIGTERM", None)) if s is not None)
# Temporary files not yet renamed or removed. A last resort for an interrupt that lands where no
# `except` of ours can run (inside contextlib's own __exit__): they are removed at interpreter exit.
# No lock: set.add/discard and list(set) are single steps under the GIL, whereas an interrupt can land
# inside `with lock:` after the acquire and leave the lock held for good (then the next write hangs).
_LIVE: set[Path] = set()
_NAME_MAX = 255  # bytes in one file name on every file system we write to (ext4, APFS, NTFS in UTF-16 units)
_RANDOM_PART = 8 + 2  # mkstemp's random characters, plus the dots around the stem


@contextmanager
def deferred_signals() -> Iterator[None]:
    """Hold back Ctrl-C and SIGTERM for the body; one that arrived meanwhile is handled right after.

    Main thread only: Python runs signal handlers, and so raises KeyboardInterrupt, only there. The
    Python-level handlers are swapped, not the thread's signal mask: ONNX Runtime's and Qt's threads
    do not block the signals, so the kernel hands them one and Python still interrupts the main thread.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    # Read first (this changes nothing), so an interrupt before the try leaves every handler as it was.
    # A handler installed outside Python (getsignal gives None) cannot be put back: leave it alone.
    old = {s: h for s in _STOP_SIGNALS if (h := signal.getsignal(s)) is not None}
    held: list[int] = []
    holding = [True]

    def hold(signum, frame):
        if holding[0]:
            held.append(signum)
            return
        # Left installed by an interrupt in the finally below: behave as the handler it stands for.
        signal.signal(signum, old[signum])
        signal.raise_signal(signum)

    try:
        for s in old:
            signal.signal(s, hold)
        yield
    finally:
        holding[0] = False  # from here a signal is handled at once (through `hold` until it is restored)
        for s, h in old.items():
            signal.signal(s, h)
        for s in held:
            signal.raise_signal(s)  # handled now by the restored handler, as if it had just arrived


def _remove(path: Path) -> None:
    with deferred_signals():  # a second Ctrl-C must not stop the clean-up half way
        try:
            path.unlink(missing_ok=True)
        except OSError:
            pass  # nothing more can be done; the error that brought us here is the one to report
        _LIVE.discard(path)


@atexit.register
def _remove_leftovers() -> None:
    for path in list(_LIVE):
        _remove(path)


def _check_target(target: Path) -> int | None:
    """InputError unless `target` is a regular file or absent; its permission bits when it exists."""
    try:
        st = os.lstat(target)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise InputError(f"cannot write {target}: {exc.strerror or exc}") from exc
    if stat.S_ISREG(st.st_mode):
        return stat.S_IMODE(st.st_mode)
    what = ("a symbolic link" if stat.S_ISLNK(st.st_mode) else "a folder" if stat.S_ISDIR(st.st_mode)
            else "a FIFO (named pipe)" if stat.S_ISFIFO(st.st_mode)
            else "a device" if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)
            else "a socket" if stat.S_ISSOCK(st.st_mode) else "not a regular file")
    # Renaming over it would replace the link (or fail on a folder) rather than write where it points:
    # refuse, so nothing the user did not mean to change is changed.
    raise InputError(f"cannot write {target}: it is {what}, not a regular file; give another file name")


def _name_max(folder: Path) -> int:
    try:
        limit = os.pathconf(folder, "PC_NAME_MAX")
    except (AttributeError, OSError, ValueError):  # Windows has no pathconf
        return _NAME_MAX
    return min(_NAME_MAX, limit) if limit > 0 else _NAME_MAX  # -1: the system states no limit


def _temp_affixes(target: Path, name_max: int) -> tuple[str, str]:
    """(prefix, suffix) of the temporary name: `.STEM.` + random + the target's suffix (writers such as
    PIL and soundfile pick the format from it), with the stem cut so the whole name fits `name_max` bytes."""
    suffix = target.suffix or ".tmp"
    if len(suffix.encode("utf-8", "surrogateescape")) > 32:  # no real format has such a suffix
        suffix = ".tmp"
    room = name_max - _RANDOM_PART - len(suffix.encode("utf-8", "surrogateescape"))
    stem = target.stem.encode("utf-8", "surrogateescape")[:max(room, 0)].decode("utf-8", "ignore")
    return f".{stem}.", suffix


def fsync_file(path: str | os.PathLike) -> None:
    """Flush a file written by someone else (an exporter into a temporary folder) to disk."""
    _fsync(Path(path))


def _fsync(path: Path, *, folder: bool = False) -> None:
    """Flush `path` (a file, or a folder's entries) to disk. Folders cannot be opened on Windows, and
    some file systems refuse fsync on them: that is no error, the rename itself is still atomic."""
    if folder and os.name == "nt":
        return
    flags = (os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)) if folder else (os.O_RDWR if os.name == "nt" else os.O_RDONLY)
    try:
        fd = os.open(path, flags)
    except OSError:
        if folder:
            return
        raise
    try:
        os.fsync(fd)
    except OSError:
        if not folder:
            raise
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it replaces `path`.

    For writers that want a file name (PIL, soundfile, onnx): they keep the target's suffix,
    so format detection by extension still works. The target must be a regular file or absent
    (a link, FIFO, device or folder is refused with InputError); an existing file keeps its
    permission bits. The data is flushed to disk before the rename, so a crash leaves the old
    file or the new one, never an empty one; an interrupt at any moment leaves no temporary file.
    """
    target = Path(path)
    folder = target.parent if str(target.parent) else Path(".")
    if not folder.is_dir():
        raise InputError(f"cannot write {target}: folder {folder} does not exist")
    name_max = _name_max(folder)
    if len(target.name.encode("utf-8", "surrogateescape")) > name_max:
        raise InputError(f"cannot write {target}: the file name is longer than the {name_max} bytes "
                         "this file system allows")
    mode = _check_target(target)
    prefix, suffix = _temp_affixes(target, name_max)
    tmp_path: Path | None = None
    try:
        with deferred_signals():  # the file and our record of it come into being together
            try:
                fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=folder)
            except OSError as exc:
                raise InputError(f"cannot write {target}: {exc.strerror or exc}") from exc
            tmp_path = Path(tmp)
            _LIVE.add(tmp_path)
            os.close(fd)
        yield tmp_path
        # mkstemp creates the file 0600: give it the old file's bits, or those a plain open() would.
        os.chmod(tmp_path, mode if mode is not None else 0o666 & ~_UMASK)
        _fsync(tmp_path)
        _check_target(target)  # it may have become a link or a folder while we wrote
        os.replace(tmp_path, target)
        _LIVE.discard(tmp_path)
        _fsync(folder, folder=True)  # the rename itself reaches the disk
    except BaseException as exc:
        if tmp_path is not None:
            _remove(tmp_path)
        if isinstance(exc, OSError) and not isinstance(exc, InputError):
            raise InputError(f"cannot write {target}: {exc.strerror or exc}") from exc
        raise


def _read_umask() -> int:
    mask = os.umask(0)  # the only way to read it; done once at import, before any worker thread
    os.umask(mask)
    return mask


_UMASK = _read_umask()


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj) -> None:
    """`obj` as indented UTF-8 JSON (non-ASCII kept as is) with a final newline, atomically:
    the one format of every card, settings and sample record the project writes."""
    import json

    write_text(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")
