"""Errors the studio and the CLI show to users as one clear line.

Every error a user can cause (a bad file, a bad setting, a missing model) is a
`ChainruleError`; the CLI prints `str(error)` on stderr and exits non-zero, the
studio shows it in a dialog or the status bar. Anything else is a bug.
"""


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
