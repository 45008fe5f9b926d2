"""The model registry: every installed model is a folder holding a JSON card and ONNX files.

Where models are found, in this order (an id found earlier wins):
1. folders given explicitly (`--models-dir DIR` in the CLI, folders added in the studio);
2. `CHAINRULE_MODELS_DIR` (one or more folders separated by the OS path separator);
3. the user data dir (`platformdirs.user_data_dir("chainrule-studio")/models`);
4. the models shipped inside the package (`chainrule_assets/models`).

A models folder holds one sub-folder per model. A sub-folder counts as a model when it
has a `card.json`. Every card is checked against one schema (`engines.card_schema`) before
anything uses it. A card that cannot be used (bad JSON, a field of the wrong type or out of
range, missing files, a path leading outside its folder) is listed with the reason in
`problem`, so the user sees why a model is unavailable instead of it silently vanishing, and
whatever goes wrong in one folder stays with that folder: every other model keeps working.

Nothing is read from outside a model's folder: every file a card or a foreign folder's config
names is resolved, symlinks included, and refused when it lands elsewhere (`resolve_in_folder`).
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Iterable, Sequence

from engines.card_schema import KINDS, MAX_CARD_BYTES, CardError, check_card, named_files, parse_json, printable
from engines.errors import ModelLoadError, ModelNotFoundError

# KINDS: "classifier" is a recogniser (engines.recognise) that judges samples; it generates
# nothing, so no modality tab or `generate` command lists it (each picks its own kind).
__all__ = ["KINDS", "CARD_NAME", "ModelInfo", "get_model", "list_models", "read_card", "printable",
           "resolve_in_folder", "read_json_in_folder"]
CARD_NAME = "card.json"


@dataclass
class ModelInfo:
    id: str
    kind: str  # text | image | audio | density | classifier
    path: Path  # the model's folder
    card: dict[str, Any]
    source: str  # "shipped", "user", "env" or "extra"
    parameters: int | None = None
    size_bytes: int = 0  # all files in the folder
    metrics: dict[str, Any] = field(default_factory=dict)
    problem: str | None = None  # why the model cannot be used, if it cannot

    @property
    def usable(self) -> bool:
        return self.problem is None

    def file(self, role: str) -> Path:
        """The path of the file the card lists under `files[role]` (inside the folder, or refused)."""
        files = self.card.get("files", {})
        if not isinstance(files, dict) or role not in files:
            raise ModelNotFoundError(printable(f"model {self.id!r} has no {role!r} file in its card ({self.path / CARD_NAME})"))
        return resolve_in_folder(self.path, files[role], f"files.{role}")

    def summary(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "parameters": self.parameters,
            "size": self.size_bytes,
            "metrics": self.metrics,
            "source": self.source,
            "path": str(self.path),
            "problem": self.problem,
        }


def shipped_models_dir() -> Path:
    return Path(str(resources.files("chainrule_assets") / "models"))


def user_models_dir() -> Path:
    import platformdirs

    return Path(platformdirs.user_data_dir("chainrule-studio", appauthor=False)) / "models"


def search_dirs(extra_dirs: Iterable[str | os.PathLike] = ()) -> list[tuple[Path, str]]:
    dirs: list[tuple[Path, str]] = [(Path(d).expanduser(), "extra") for d in extra_dirs]
    env = os.environ.get("CHAINRULE_MODELS_DIR", "")
    dirs += [(Path(d).expanduser(), "env") for d in env.split(os.pathsep) if d]
    dirs.append((user_models_dir(), "user"))
    dirs.append((shipped_models_dir(), "shipped"))
    return dirs


# A model folder holds a card and a few graphs: walking it is bounded so that a hostile tree
# (thousands of levels, millions of files) costs milliseconds, and is refused beyond the bounds.
MAX_FOLDER_DEPTH = 8
MAX_FOLDER_ENTRIES = 10_000


def inside(folder: Path, path: Path) -> bool:
    """Whether `path`, with every symlink followed, lies inside `folder` (itself resolved)."""
    try:
        return path.resolve().is_relative_to(folder.resolve())
    except (OSError, RuntimeError):  # a symlink loop (RuntimeError before Python 3.13)
        return False


def resolve_in_folder(folder: Path, name: str, what: str) -> Path:
    """folder / name, refused with one line (ModelLoadError) when it leads outside the folder:
    an absolute path, '..', or a symlink pointing elsewhere. Every file a card or a foreign
    folder's config names is opened through this."""
    if not isinstance(name, str) or not name or not inside(folder, folder / name):
        raise ModelLoadError(printable(f"{folder}: {what} {name!r} leads outside the model folder; refused"))
    return folder / name


def read_bytes_in_folder(folder: Path, name: str, what: str = "file", max_bytes: int = MAX_CARD_BYTES) -> bytes:
    """The bytes of a small file of a model folder: contained (`resolve_in_folder`), a regular file of
    at most `max_bytes`; CardError otherwise."""
    path = resolve_in_folder(folder, name, what)
    # Non-blocking open: a FIFO put in place of the file must not hang the listing.
    with open(os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0)), "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode) or st.st_size > max_bytes:
            raise CardError(f"{name} is not a regular file of at most {max_bytes:,} bytes")
        return f.read(max_bytes + 1)


def read_json_in_folder(folder: Path, name: str, what: str = "file") -> Any:
    """A JSON file of a model folder, contained, bounded in size and nesting; CardError otherwise."""
    return parse_json(read_bytes_in_folder(folder, name, what), name)


def scan_folder(folder: Path) -> int:
    """Bytes in the folder's files, walked without following links, within the bounds above.
    CardError when the walk meets a link leading outside the folder (ONNX external data or any
    other file a graph may name must stay inside) or the folder exceeds the bounds."""
    root = folder.resolve()
    size, seen, stack = 0, 0, [(folder, 0)]
    while stack:
        current, depth = stack.pop()
        with os.scandir(current) as entries:
            for entry in entries:
                seen += 1
                if seen > MAX_FOLDER_ENTRIES:
                    raise CardError(f"the folder holds more than {MAX_FOLDER_ENTRIES:,} files and folders")
                rel = Path(entry.path).relative_to(folder)
                if entry.is_symlink():
                    if not inside(root, Path(entry.path)):
                        raise CardError(f"{rel} is a link leading outside the model folder")
                elif entry.is_dir(follow_symlinks=False):
                    if depth + 1 >= MAX_FOLDER_DEPTH:
                        raise CardError(f"the folder nests sub-folders deeper than {MAX_FOLDER_DEPTH} levels")
                    stack.append((Path(entry.path), depth + 1))
                elif entry.is_file(follow_symlinks=False):
                    size += entry.stat(follow_symlinks=False).st_size
    return size


def read_card(folder: Path, source: str = "extra") -> ModelInfo | None:
    """Read one model folder; None when it is not a model folder at all.

    Never raises: whatever goes wrong reading this folder (bad JSON, a card breaking the schema,
    a file outside the folder, an OSError, a RecursionError) becomes the `problem` of its entry,
    so one bad folder cannot take the other models down."""
    try:
        return _read_card(folder, source)
    except Exception as exc:  # noqa: BLE001 - contained to this folder, reported as its problem
        info = ModelInfo(id=folder.name, kind="?", path=folder, card={}, source=source)
        # The type and the OS's words only: an exception's text may quote what it read.
        detail = f": {exc.strerror}" if isinstance(exc, OSError) and exc.strerror else ""
        info.problem = printable(f"{folder}: cannot be read ({type(exc).__name__}{detail})")
        return info


def _read_card(folder: Path, source: str) -> ModelInfo | None:
    card_path = folder / CARD_NAME
    if card_path.exists() and not card_path.is_file():  # a folder, FIFO or device named card.json
        return ModelInfo(id=folder.name, kind="?", path=folder, card={}, source=source,
                         problem=printable(f"{card_path}: is not a regular file"))
    if not card_path.is_file():
        info = recognise_foreign_folder(folder, source)
        if info is not None and info.problem is None:
            _validate(info, folder, info.card)
        return info
    info = ModelInfo(id=folder.name, kind="?", path=folder, card={}, source=source)
    try:
        card = read_json_in_folder(folder, CARD_NAME, "the card")
    except (CardError, ModelLoadError, OSError) as exc:
        info.problem = printable(f"{card_path}: {(exc.strerror or type(exc).__name__) if isinstance(exc, OSError) else exc}")
        return info
    if isinstance(card, dict):
        # What a broken card says about itself, so the listing names it; no loader sees it.
        info.id = card["id"] if isinstance(card.get("id"), str) and card["id"] else folder.name
        info.kind = card["kind"] if card.get("kind") in KINDS else "?"
        info.card = card
    _validate(info, folder, card)
    return info


def _validate(info: ModelInfo, folder: Path, card: Any) -> None:
    """Check `card` against the schema and the folder on disk; fill `info` or set its problem."""
    foreign = info.card.get("foreign")  # a card built from another tool's files: name the folder
    where = folder / CARD_NAME if foreign is None else f"{folder} ({foreign} export)"
    try:
        check_card(card)
        absent = []
        for what, name in named_files(card):
            if not resolve_in_folder(folder, name, what).is_file():
                absent.append(name)
        if absent:
            raise CardError(f"file(s) named in the card are missing: {', '.join(absent)}")
        info.size_bytes = scan_folder(folder)
    except ModelLoadError as exc:  # already names the folder
        info.problem = str(exc)
        return
    except (CardError, OSError) as exc:
        info.problem = printable(f"{where}: {exc}")
        return
    info.parameters = card.get("parameters")
    info.metrics = dict(card.get("metrics") or {})


# Folders written by other tools (e.g. Hugging Face Optimum exports) are recognised by
# these functions ("module:function", imported on first use): each takes (folder, source)
# and returns a ModelInfo (possibly with a `problem`) or None when the folder is not theirs.
FOREIGN_RECOGNISERS = ["engines.text.model:recognise_optimum_folder"]


def recognise_foreign_folder(folder: Path, source: str) -> ModelInfo | None:
    import importlib

    for spec in FOREIGN_RECOGNISERS:
        module, _, func = spec.partition(":")
        info = getattr(importlib.import_module(module), func)(folder, source)
        if info is not None:
            return info
    return None


def list_models(extra_dirs: Sequence[str | os.PathLike] = (), *, include_unusable: bool = True) -> list[ModelInfo]:
    """Every model found, first occurrence of an id winning, sorted by kind then id."""
    found: dict[str, ModelInfo] = {}
    shadowed: list[ModelInfo] = []  # broken entries whose id a later, usable model took
    for base, source in search_dirs(extra_dirs):
        try:
            if not base.is_dir():
                continue
            candidates = [base] if (base / CARD_NAME).is_file() else sorted(p for p in base.iterdir() if p.is_dir())
        except OSError:  # an unreadable models folder hides nothing else
            continue
        for folder in candidates:
            info = read_card(folder, source)
            if info is None:
                continue
            earlier = found.get(info.id)
            if earlier is not None:
                # An earlier folder wins, unless it is broken and this one works: a broken copy
                # must not take a working model down. The broken one stays listed with its reason.
                if earlier.usable or not info.usable:
                    continue
                if include_unusable:
                    shadowed.append(earlier)
            if info.usable or include_unusable:
                found[info.id] = info
    return sorted([*found.values(), *shadowed], key=lambda m: (KINDS.index(m.kind) if m.kind in KINDS else 99, m.id, m.usable))


def get_model(model_id: str, extra_dirs: Sequence[str | os.PathLike] = (), kind: str | None = None) -> ModelInfo:
    """The usable model with this id (optionally of this kind), or a ModelNotFoundError that lists the choices."""
    models = list_models(extra_dirs)
    for m in sorted(models, key=lambda m: not m.usable):  # a working model before a broken one of that id
        if m.id == model_id:
            if not m.usable:  # one line naming the folder and the fault
                raise ModelNotFoundError(printable(f"model {model_id!r} cannot be used: {m.problem}"))
            if kind is not None and m.kind != kind:
                raise ModelNotFoundError(f"model {model_id!r} is a {m.kind} model, not a {kind} model")
            return m
    choices = [printable(m.id) for m in models if m.usable and (kind is None or m.kind == kind)]
    hint = f"installed{' ' + kind if kind else ''} models: {', '.join(choices)}" if choices else (
        f"no{' ' + kind if kind else ''} models are installed"
    )
    raise ModelNotFoundError(printable(f"unknown model {model_id!r}; {hint}"))
