"""The model registry: every installed model is a folder holding a JSON card and ONNX files.

Where models are found, in this order (an id found earlier wins):
1. folders given explicitly (`--models-dir DIR` in the CLI, folders added in the studio);
2. `CHAINRULE_MODELS_DIR` (one or more folders separated by the OS path separator);
3. the user data dir (`platformdirs.user_data_dir("chainrule-studio")/models`);
4. the models shipped inside the package (`chainrule_assets/models`).

A models folder holds one sub-folder per model. A sub-folder counts as a model when it
has a `card.json`. A card that cannot be used (bad JSON, missing fields, missing files) is
listed with the reason in `problem`, so the user sees why a model is unavailable instead
of it silently vanishing.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Iterable, Sequence

from engines.errors import ModelNotFoundError

# "classifier": a recogniser (engines.recognise) that judges samples; it generates nothing, so no
# modality tab or `generate` command lists it (each picks its own kind).
KINDS = ("text", "image", "audio", "density", "classifier")
CARD_NAME = "card.json"
REQUIRED_FIELDS = ("id", "kind", "files")


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
        """The path of the file the card lists under `files[role]`."""
        files = self.card.get("files", {})
        if role not in files:
            raise ModelNotFoundError(f"model {self.id!r} has no {role!r} file in its card ({self.path / CARD_NAME})")
        return self.path / files[role]

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


def _folder_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def read_card(folder: Path, source: str = "extra") -> ModelInfo | None:
    """Read one model folder; None when it is not a model folder at all."""
    card_path = folder / CARD_NAME
    if not card_path.is_file():
        return recognise_foreign_folder(folder, source)
    info = ModelInfo(id=folder.name, kind="?", path=folder, card={}, source=source)
    try:
        card = json.loads(card_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        info.problem = f"{card_path}: not valid JSON ({exc})"
        return info
    if not isinstance(card, dict):
        info.problem = f"{card_path}: the card must be a JSON object"
        return info
    info.card = card
    missing = [k for k in REQUIRED_FIELDS if k not in card]
    info.id = str(card.get("id", folder.name))
    info.kind = str(card.get("kind", "?"))
    info.parameters = card.get("parameters")
    info.metrics = dict(card.get("metrics", {}) or {})
    info.size_bytes = _folder_size(folder)
    if missing:
        info.problem = f"{card_path}: missing field(s) {', '.join(missing)}"
    elif info.kind not in KINDS:
        info.problem = f"{card_path}: kind {info.kind!r} is not one of {', '.join(KINDS)}"
    elif not isinstance(card["files"], dict):
        info.problem = f"{card_path}: 'files' must map roles to file names"
    else:
        absent = [name for name in card["files"].values() if not (folder / name).is_file()]
        if absent:
            info.problem = f"{folder}: file(s) named in the card are missing: {', '.join(absent)}"
    return info


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
    for base, source in search_dirs(extra_dirs):
        if not base.is_dir():
            continue
        candidates = [base] if (base / CARD_NAME).is_file() else sorted(p for p in base.iterdir() if p.is_dir())
        for folder in candidates:
            info = read_card(folder, source)
            if info is None or info.id in found:
                continue
            if info.usable or include_unusable:
                found[info.id] = info
    return sorted(found.values(), key=lambda m: (KINDS.index(m.kind) if m.kind in KINDS else 99, m.id))


def get_model(model_id: str, extra_dirs: Sequence[str | os.PathLike] = (), kind: str | None = None) -> ModelInfo:
    """The usable model with this id (optionally of this kind), or a ModelNotFoundError that lists the choices."""
    models = list_models(extra_dirs)
    for m in models:
        if m.id == model_id:
            if not m.usable:
                raise ModelNotFoundError(f"model {model_id!r} cannot be used: {m.problem}")
            if kind is not None and m.kind != kind:
                raise ModelNotFoundError(f"model {model_id!r} is a {m.kind} model, not a {kind} model")
            return m
    choices = [m.id for m in models if m.usable and (kind is None or m.kind == kind)]
    hint = f"installed{' ' + kind if kind else ''} models: {', '.join(choices)}" if choices else (
        f"no{' ' + kind if kind else ''} models are installed"
    )
    raise ModelNotFoundError(f"unknown model {model_id!r}; {hint}")
