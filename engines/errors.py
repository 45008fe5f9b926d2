"""Errors the studio and the CLI show to users as one clear line.

Every error a user can cause (a bad file, a bad setting, a missing model) is a
`ChainruleError`; the CLI prints `str(error)` on stderr and exits non-zero, the
studio shows it in a dialog or the status bar. Anything else is a bug.

A message never quotes a file's contents (`file_fault` words a library's complaint about a file
without the bytes it may quote): it names the file and says what it is not.
"""

import re


class ChainruleError(Exception):
    """Base class: the message names the problem and, where it helps, the fix."""


class ModelLoadError(ChainruleError):
    """A model file is missing, truncated, not ONNX, or does not match its card."""


class ModelNotFoundError(ChainruleError):
    """No installed model has the requested id."""


class DecodingError(ChainruleError, ValueError):
    """A decoding setting is out of range (names the setting, the value and why)."""


class InputError(ChainruleError, ValueError):
    """User input (a prompt, an image, a recording, a mask) cannot be used."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Ctrl-C raises KeyboardInterrupt (the CLI installs the handler), so a
    terminated command stops the way an interrupted one does: what was made is kept, temporary
    files are removed, one line is said."""


def stopped_note(exc: BaseException, note: str) -> None:
    """Attach what a command kept when it was stopped (`exc` is the KeyboardInterrupt it re-raises)
    to the one line the CLI says: "chainrule: interrupted NOTE"."""
    exc.chainrule_note = note  # type: ignore[attr-defined]


# A quoted literal in a library's message: 'x', "x", b'x', `x` (escapes included).
_QUOTED = re.compile(r"""b?'(?:[^'\\\n]|\\.)*'|b?"(?:[^"\\\n]|\\.)*"|`[^`\n]*`""")
_HEX_BYTE = re.compile(r"\b0x[0-9a-fA-F]{2}\b")


def file_fault(exc: BaseException) -> str:
    """What a library said was wrong with a file, in its words but without the file's contents: the
    first line of its message, each quoted literal (numpy quotes a bad .npy header, Pillow a chunk
    name, int() the text it could not read) and each byte value replaced by "...". A
    UnicodeDecodeError gives its reason and offset; an OSError its strerror."""
    if isinstance(exc, UnicodeDecodeError):
        return f"not {exc.encoding.upper()} text ({exc.reason} at byte {exc.start})"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    text = str(exc).strip()
    line = text.splitlines()[0] if text else ""
    line = _HEX_BYTE.sub("...", _QUOTED.sub("...", line)).strip()
    if "pickled" in line:  # numpy: "... contains pickled (object) data. If you trust the file ... allow_pickle"
        return "it holds pickled Python objects, which are never loaded"
    return line or type(exc).__name__
