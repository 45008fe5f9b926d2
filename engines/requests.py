"""What every generation request shares, whatever its modality.

A *request* is everything that makes one run: the model id, its conditioning, its inputs,
the decoding config, the seed and the count. Each modality defines its own frozen, validated
request type in `engines/<modality>/request.py` (`TextRequest`, `ImageRequest`,
`AudioRequest`, `DensityRequest`) with one function that runs it and yields events. The CLI
parses flags into a request and prints events; the studio builds a request from its widgets
and shows events. Both write the request into every output so that any exported file can be
run again bit for bit (`chainrule generate --from FILE`) or reopened in the studio.

This module holds the parts that are the same for every modality:

* the JSON envelope: ``{"chainrule_request": 1, "kind": "image", ...}`` (`envelope`,
  `request_from_json`, which dispatches on ``kind`` to the modality's request type);
* inputs by content (`InputRef`): a small input (a 28x28 mask) is stored in the request
  itself; a large one (a recording) by path and sha256, checked when it is read back;
* where a request lives in a file (`embed_in_png`, `write_sidecar`, `read_request_file`):
  a PNG text chunk, a WAV/FLAC comment tag plus a sidecar ``NAME.json``, or a JSON file
  (a request itself, or any export holding one under ``"request"``);
* `model_fingerprint`: a hash of the model's card and file sizes, so a request run against a
  changed model says so instead of silently giving another sample.

Every file read here is treated as hostile: sizes are checked before parsing, JSON depth is
bounded, and nothing is unpickled.
"""

from __future__ import annotations

import base64
import hashlib
import importlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Protocol

from engines.errors import InputError

if TYPE_CHECKING:
    from engines.decoding.config import DecodingConfig

REQUEST_FORMAT = 1  # the envelope version; a newer one is refused with a clear line
ENVELOPE_KEY = "chainrule_request"
PNG_CHUNK_KEY = "chainrule-request"  # the iTXt keyword exported PNGs carry
MAX_REQUEST_BYTES = 8 * 1024 * 1024  # a request (embedded inputs included) is far smaller
MAX_EMBEDDED_INPUT_BYTES = 256 * 1024  # inputs up to this size travel inside the request
MAX_JSON_DEPTH = 32
MAX_SAMPLE_FILE_BYTES = 64 * 1024 * 1024  # an exported PNG is a few KiB; this is a hostile file
MAX_EXPORT_BYTES = 4 * MAX_REQUEST_BYTES  # a JSON export: the request plus per-token or per-pixel data

# kind -> module defining `REQUEST_TYPE` (the request class) for that modality
REQUEST_MODULES = {
    "text": "engines.text.request",
    "image": "engines.image.request",
    "audio": "engines.audio.request",
    "density": "engines.density.request",
}


class Request(Protocol):
    """What every modality's request type offers (they are frozen dataclasses)."""

    kind: str  # class attribute: "text" | "image" | "audio" | "density"
    model: str  # model id

    def to_json(self) -> dict[str, Any]: ...  # an envelope: `envelope(kind, body)`

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "Request": ...  # InputError naming the field

    def to_command(self) -> list[str]: ...  # the equivalent `chainrule ...` argv


# --- envelope -----------------------------------------------------------------------


def envelope(kind: str, body: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON object a request of `kind` is stored as: the format marker, the kind, then `body`."""
    return {ENVELOPE_KEY: REQUEST_FORMAT, "kind": kind, **body}


FINGERPRINT_KEY = "model_fingerprint"  # provenance beside the request, not part of it


def stamp(request_json: Mapping[str, Any], info) -> dict[str, Any]:
    """The request as written into an output: with the fingerprint of the model that ran it."""
    return {**request_json, FINGERPRINT_KEY: model_fingerprint(info)}


def fingerprint_note(data: Mapping[str, Any], info) -> str | None:
    """A note when a stored request was made by a different build of its model (None when same or unknown)."""
    stored = data.get(FINGERPRINT_KEY)
    if isinstance(stored, str) and stored != model_fingerprint(info):
        return (f"{info.id} has changed since this sample was made (model fingerprint {stored} -> "
                f"{model_fingerprint(info)}): the output may differ from the original")
    return None


def open_envelope(data: Any, kind: str | None = None) -> dict[str, Any]:
    """The body of a stored request (format marker and kind removed), checked.

    InputError when `data` is not a request object, its format is newer than this version
    reads, or (with `kind`) it is a request of another modality."""
    if not isinstance(data, Mapping) or ENVELOPE_KEY not in data:
        raise InputError("not a chainrule request (no \"chainrule_request\" marker)")
    fmt = data[ENVELOPE_KEY]
    if not isinstance(fmt, int) or isinstance(fmt, bool) or fmt < 1:
        raise InputError(f"chainrule_request = {fmt!r} is invalid: must be a whole number >= 1")
    if fmt > REQUEST_FORMAT:
        raise InputError(f"this request was written by a newer chainrule (format {fmt}; this version reads "
                         f"{REQUEST_FORMAT}): update chainrule to run it")
    found = data.get("kind")
    if found not in REQUEST_MODULES:
        raise InputError(f"request kind = {found!r} is invalid: choose one of {', '.join(REQUEST_MODULES)}")
    if kind is not None and found != kind:
        raise InputError(f"this is a {found} request, not a {kind} one")
    return {k: v for k, v in data.items() if k not in (ENVELOPE_KEY, "kind", FINGERPRINT_KEY)}


def open_request(data: Any, kind: str, fields) -> tuple[dict[str, Any], "DecodingConfig"]:
    """The checked body of a stored `kind` request and its decoding config, for `from_json`.

    One line (InputError / DecodingError) for: not an envelope of this kind, a field not in
    `fields`, no model id, decoding that is not an object or that DecodingConfig refuses."""
    from engines.decoding.config import DecodingConfig

    body = open_envelope(data, kind)
    unknown = sorted(set(body) - set(fields))
    if unknown:
        raise InputError(f"{kind} request: unknown field(s) {', '.join(map(repr, unknown))}")
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise InputError(f"{kind} request: \"model\" must name a model id")
    decoding = body.get("decoding") or {}
    if not isinstance(decoding, Mapping):
        raise InputError(f"{kind} request: \"decoding\" must be an object of decoding settings")
    try:
        config = DecodingConfig.from_dict(decoding)
    except TypeError as exc:  # a wrongly typed value the validation compares
        raise InputError(f"{kind} request: decoding is invalid ({exc})") from None
    return body, config


def request_type(kind: str):
    """The request class of a modality (imported lazily: the CLI loads only what it runs)."""
    if kind not in REQUEST_MODULES:
        raise InputError(f"request kind = {kind!r} is invalid: choose one of {', '.join(REQUEST_MODULES)}")
    return importlib.import_module(REQUEST_MODULES[kind]).REQUEST_TYPE


def request_from_json(data: Any) -> Request:
    """A validated request of whatever modality `data` (an envelope) names."""
    open_envelope(data)  # format and kind checked before dispatch
    return request_type(data["kind"]).from_json(data)


def loads_bounded(text: str | bytes, what: str) -> Any:
    """json.loads with the size and nesting caps every stored request is held to."""
    size = len(text)
    if size > MAX_REQUEST_BYTES:
        raise InputError(f"{what}: the request is {size:,} bytes; at most {MAX_REQUEST_BYTES:,} are read")
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise InputError(f"{what}: the request is not valid JSON ({type(exc).__name__})") from None
    if _depth(data) > MAX_JSON_DEPTH:
        raise InputError(f"{what}: the request nests deeper than {MAX_JSON_DEPTH} levels")
    return data


def _depth(obj: Any) -> int:
    """Nesting depth of decoded JSON (iterative: no recursion on hostile input)."""
    deepest, stack = 0, [(obj, 1)]
    while stack:
        node, d = stack.pop()
        deepest = max(deepest, d)
        if d > MAX_JSON_DEPTH:
            return d
        if isinstance(node, dict):
            stack.extend((v, d + 1) for v in node.values())
        elif isinstance(node, list):
            stack.extend((v, d + 1) for v in node)
    return deepest


def dumps(request_json: Mapping[str, Any]) -> str:
    """The compact, key-ordered JSON text of a request (what a PNG chunk or tag carries)."""
    return json.dumps(request_json, ensure_ascii=False, sort_keys=True, separators=(",", ":"))


def request_digest(request_json: Mapping[str, Any]) -> str:
    """sha256 of a request's canonical JSON: equal requests have equal digests (history keys)."""
    return hashlib.sha256(dumps(request_json).encode("utf-8")).hexdigest()


# --- inputs by content ----------------------------------------------------------------


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike, max_bytes: int) -> str:
    """sha256 of a file, refusing one larger than `max_bytes` before reading it."""
    p = Path(path)
    try:
        size = p.stat().st_size
        if size > max_bytes:
            raise InputError(f"{p}: {size:,} bytes; at most {max_bytes:,} are read")
        h = hashlib.sha256()
        with p.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        return h.hexdigest()
    except OSError as exc:
        raise InputError(f"cannot read {p}: {exc.strerror or exc}") from None


@dataclass(frozen=True)
class InputRef:
    """An input file a request depends on, by content.

    `sha256` always identifies the content. `data` holds the bytes themselves when they are
    small (at most MAX_EMBEDDED_INPUT_BYTES), so the request is self-contained; otherwise
    `path` names where they were read from, and reading them back checks the hash."""

    sha256: str
    path: str | None = None
    data: bytes | None = None

    @classmethod
    def from_file(cls, path: str | os.PathLike, max_bytes: int, *, embed: bool = True) -> "InputRef":
        p = Path(path)
        digest = sha256_file(p, max_bytes)
        data = None
        if embed and p.stat().st_size <= MAX_EMBEDDED_INPUT_BYTES:
            data = p.read_bytes()
            if sha256_bytes(data) != digest:  # changed between the two reads
                raise InputError(f"{p} changed while it was read; try again")
        return cls(sha256=digest, path=str(p), data=data)

    @classmethod
    def from_bytes(cls, data: bytes, path: str | None = None) -> "InputRef":
        return cls(sha256=sha256_bytes(data), path=path, data=bytes(data))

    def read(self, max_bytes: int, what: str) -> bytes:
        """The input's bytes, checked against `sha256` (InputError naming `what` if not found or changed)."""
        if self.data is not None:
            data = self.data
        elif self.path is None:
            raise InputError(f"{what}: the request names neither the data nor a file")
        else:
            p = Path(self.path)
            try:
                size = p.stat().st_size
            except OSError as exc:
                raise InputError(f"{what}: {self.path} cannot be read ({exc.strerror or exc}); the request needs "
                                 f"the file with sha256 {self.sha256[:12]}…") from None
            if size > max_bytes:
                raise InputError(f"{what}: {self.path} is {size:,} bytes; at most {max_bytes:,} are read")
            data = p.read_bytes()
        if sha256_bytes(data) != self.sha256:
            where = self.path if self.data is None else "the embedded data"
            raise InputError(f"{what}: {where} is not the file this request was made with (sha256 differs)")
        return data

    def materialise(self, folder: str | os.PathLike, stem: str, suffix: str, max_bytes: int, what: str) -> str:
        """A path holding this input's bytes: its own path when that still matches, else a copy
        written into `folder` (for code that takes file names)."""
        if self.data is None and self.path is not None:
            self.read(max_bytes, what)  # checks the hash
            return self.path
        data = self.read(max_bytes, what)
        target = Path(folder) / f"{stem}-{self.sha256[:12]}{suffix}"
        if not target.exists():
            from engines.atomic import write_bytes

            write_bytes(target, data)
        return str(target)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"sha256": self.sha256}
        if self.path is not None:
            out["path"] = self.path
        if self.data is not None:
            out["data"] = base64.b64encode(self.data).decode("ascii")
        return out

    @classmethod
    def from_json(cls, data: Any, what: str) -> "InputRef":
        if not isinstance(data, Mapping):
            raise InputError(f"{what} is invalid: expected an object with sha256 (and path or data)")
        digest = data.get("sha256")
        if not isinstance(digest, str) or len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise InputError(f"{what}.sha256 is invalid: expected 64 lowercase hex digits")
        path = data.get("path")
        if path is not None and not isinstance(path, str):
            raise InputError(f"{what}.path is invalid: expected a string")
        raw = data.get("data")
        blob = None
        if raw is not None:
            if not isinstance(raw, str) or len(raw) > MAX_EMBEDDED_INPUT_BYTES * 4 // 3 + 4:
                raise InputError(f"{what}.data is invalid: expected base64 of at most "
                                 f"{MAX_EMBEDDED_INPUT_BYTES:,} bytes")
            try:
                blob = base64.b64decode(raw, validate=True)
            except ValueError:
                raise InputError(f"{what}.data is invalid: not base64") from None
            if sha256_bytes(blob) != digest:
                raise InputError(f"{what}.data does not match its sha256")
        if path is None and blob is None:
            raise InputError(f"{what} is invalid: needs a path or the data")
        return cls(sha256=digest, path=path, data=blob)


# --- where requests live in files -------------------------------------------------------


def embed_in_png(path: str | os.PathLike, image, request_json: Mapping[str, Any]) -> None:
    """Save a PIL image as PNG with the request in an iTXt chunk (atomically)."""
    from PIL import PngImagePlugin

    from engines.atomic import atomic_path

    info = PngImagePlugin.PngInfo()
    info.add_itxt(PNG_CHUNK_KEY, dumps(request_json), zip=True)
    with atomic_path(path) as tmp:
        try:
            image.save(tmp, format="PNG", pnginfo=info)
        except OSError as exc:
            raise InputError(f"cannot write {path}: {exc}") from exc


def sidecar_path(path: str | os.PathLike) -> Path:
    """Where a sample's request sidecar lives: `NAME.wav` -> `NAME.json`."""
    return Path(path).with_suffix(".json")


def write_sidecar(path: str | os.PathLike, request_json: Mapping[str, Any], extra: Mapping[str, Any] | None = None) -> Path:
    """Write `NAME.json` beside `path` holding {"request": ..., **extra} (atomically); returns its path."""
    from engines.atomic import write_json

    side = sidecar_path(path)
    write_json(side, {"sample": Path(path).name, **(extra or {}), "request": dict(request_json)})
    return side


AUDIO_SUFFIXES = (".wav", ".flac")


def read_request_file(path: str | os.PathLike) -> dict[str, Any]:
    """The request an exported file carries, as an envelope (not yet validated by its type).

    * `.png`: the `chainrule-request` text chunk;
    * `.wav` / `.flac`: the sidecar `NAME.json`, else the file's comment tag;
    * `.json`: the object itself when it is a request, else its `"request"` entry (any export
      the studio or CLI writes: text JSON, sidecars, audio and density exports).

    InputError (one line) when the file cannot be read or carries no request."""
    p = Path(path)
    suffix = p.suffix.lower()
    try:
        if not p.is_file():
            raise InputError(f"{p}: no such file" if not p.exists() else f"{p} is not a regular file")
        size = p.stat().st_size
    except OSError as exc:
        raise InputError(f"cannot read {p}: {exc.strerror or exc}") from None
    if suffix == ".png":
        return _request_in_png(p, size)
    if suffix in AUDIO_SUFFIXES:
        side = sidecar_path(p)
        if side.is_file():
            return read_request_file(side)
        return _request_in_audio_tags(p)
    if suffix == ".txt":  # the CLI's text --out: the request is in the sidecar NAME.json
        side = sidecar_path(p)
        if not side.is_file():
            raise InputError(f"{p}: plain text carries no request; use the JSON export (or {side.name} beside it)")
        return read_request_file(side)
    if suffix == ".json":
        if size > MAX_EXPORT_BYTES:
            raise InputError(f"{p}: {size:,} bytes; at most {MAX_EXPORT_BYTES:,} are read")
        # a request alone is held to the request caps; an export around one (per-token data) may be larger
        data = loads_bounded(p.read_bytes(), str(p)) if size <= MAX_REQUEST_BYTES else _loads_large(p)
        if isinstance(data, Mapping) and ENVELOPE_KEY in data:
            return dict(data)
        if isinstance(data, Mapping) and isinstance(data.get("request"), Mapping):
            return dict(data["request"])
        raise InputError(f"{p} holds no chainrule request (no \"request\" entry); was it exported by chainrule?")
    raise InputError(f"{p}: cannot read a request from a {suffix or 'suffix-less'} file; give a PNG, WAV, FLAC or "
                     "JSON that chainrule exported")


def _loads_large(p: Path) -> Any:
    """An export larger than one request (a long JSON with per-token data): parsed with the depth cap."""
    try:
        data = json.loads(p.read_bytes())
    except (ValueError, RecursionError) as exc:
        raise InputError(f"{p}: not valid JSON ({type(exc).__name__})") from None
    if _depth(data) > MAX_JSON_DEPTH * 2:
        raise InputError(f"{p}: nests deeper than {MAX_JSON_DEPTH * 2} levels")
    return data


def _request_in_png(p: Path, size: int) -> dict[str, Any]:
    from engines.image.png import _open  # contained, header-checked, bomb-safe: the one PNG reader

    if size > MAX_SAMPLE_FILE_BYTES:
        raise InputError(f"{p}: {size:,} bytes is too large for an exported sample")
    raw = _open(p, "sample").info.get(PNG_CHUNK_KEY)  # Pillow keeps text chunks in .info
    return _request_in_text(raw, p, f"no {PNG_CHUNK_KEY!r} text chunk: only PNGs exported by chainrule can be "
                                    "regenerated")


def _request_in_audio_tags(p: Path) -> dict[str, Any]:
    import soundfile as sf

    try:
        with sf.SoundFile(str(p)) as f:
            raw = f.comment  # the WAV INFO ICMT / FLAC COMMENT tag
    except Exception as exc:  # noqa: BLE001 - libsndfile errors on hostile files
        raise InputError(f"cannot read {p}: {type(exc).__name__}") from None
    return _request_in_text(raw, p, f"neither {sidecar_path(p).name} beside it nor a comment tag; only audio "
                                    "exported by chainrule can be regenerated")


def _request_in_text(raw: Any, p: Path, missing: str) -> dict[str, Any]:
    """The request a file's text chunk or tag holds: a JSON object (InputError otherwise)."""
    if not raw:
        raise InputError(f"{p} carries no chainrule request ({missing})")
    data = loads_bounded(raw, str(p))
    if not isinstance(data, Mapping):
        raise InputError(f"{p}: its embedded request is not a JSON object")
    return dict(data)


def tag_audio(path: str | os.PathLike, request_json: Mapping[str, Any]) -> bool:
    """Put the request into the audio file's comment tag, rewriting it atomically; False when the
    request is too long for the tag (the sidecar then carries it alone)."""
    import soundfile as sf

    from engines.atomic import atomic_path

    text = dumps(request_json)
    if len(text.encode("utf-8")) > 8000:  # libsndfile's string store is about 8 KiB
        return False
    p = Path(path)
    data, rate = sf.read(str(p), dtype="int16", always_2d=False)
    info = sf.info(str(p))
    with atomic_path(p) as tmp:
        with sf.SoundFile(str(tmp), "w", samplerate=rate, channels=info.channels, subtype=info.subtype,
                          format=info.format) as f:
            f.comment = text
            f.write(data)
    return True


# --- the model a request ran on ----------------------------------------------------------


def model_fingerprint(info) -> str:
    """sha256 (first 16 hex digits) of the model's card.json bytes and the sizes of the files it lists.

    Cheap (no weights are hashed) yet changes whenever a model is retrained and re-exported,
    since the card records the new metrics and training command."""
    h = hashlib.sha256()
    try:
        h.update((Path(info.path) / "card.json").read_bytes())
    except OSError:
        h.update(json.dumps(info.card, sort_keys=True, default=str).encode())
    files = info.card.get("files") if isinstance(info.card, dict) else None
    for role in sorted(files or {}):
        try:
            h.update(f"{role}:{info.file(role).stat().st_size};".encode())
        except Exception:  # noqa: BLE001 - a missing file shows up when the model loads
            h.update(f"{role}:?;".encode())
    return h.hexdigest()[:16]
