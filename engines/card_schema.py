"""One schema for every model card, checked before anything uses the card.

The registry (`engines.registry.read_card`) runs `check_card` on each card.json and on the card it
builds for a foreign folder (an Optimum export); a card that fails is listed as unusable with the
one-line reason, and no loader ever sees it through `get_model`. The checks are what the loaders
and the studio rely on: the JSON types of the sections they read, the fields each kind of model
needs, value ranges, and sizes whose run-time state fits in memory (a card saying 10^9 layers is
refused here, not after minutes of allocating). Free-form sections (data, training, ...) are only
bounded in size and nesting.

Messages name the field and the rule. Values are quoted only as numbers or short escaped
strings, never as the contents of another file.
"""

from __future__ import annotations

import json
import math
from typing import Any

KINDS = ("text", "image", "audio", "density", "classifier")
MAX_CARD_BYTES = 32 << 20  # the largest shipped card is ~50 KB; a card is metadata, not weights
MAX_DEPTH = 64  # nesting of objects/lists: shipped cards use 5; JSON parsers recurse per level
MAX_STATE_BYTES = 4 << 30  # per-sequence run-time state a card may ask for (KV cache, queues, masks)
MAX_NAME_CHARS = 1024  # a file name a card lists (a path relative to the model folder)
MAX_ID_CHARS = 200


class CardError(ValueError):
    """One fault of a card: the message names the field and the rule it breaks."""


def printable(text: Any) -> str:
    """`text` with control and other non-printing characters escaped (ESC -> \\x1b, newline -> \\n),
    for ids, names and messages printed to a terminal or shown in a table: a card cannot clear
    the screen, move the cursor or fake a row."""
    s = str(text)
    if s.isprintable():
        return s
    return "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in s)


def _shown(value: Any) -> str:
    """A card value for a message: numbers as they are, strings escaped and cut short."""
    if isinstance(value, str):
        return repr(value[:40] + ("..." if len(value) > 40 else ""))  # repr escapes control characters
    if isinstance(value, (bool, int, float)) or value is None:
        return json.dumps(value)[:40]
    return _json_type(value)


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


# --- reading ------------------------------------------------------------------------------------

def parse_json(data: bytes, what: str = "card") -> Any:
    """A JSON document from bytes, bounded in size and nesting; CardError otherwise."""
    if len(data) > MAX_CARD_BYTES:
        raise CardError(f"the {what} is {len(data):,} bytes; at most {MAX_CARD_BYTES:,} are read")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CardError(f"the {what} is not UTF-8 text (bad byte at offset {exc.start})") from None
    try:
        value = json.loads(text)
    except RecursionError:  # the parser recurses per nesting level
        raise CardError(f"the {what} is nested deeper than {MAX_DEPTH} levels") from None
    except json.JSONDecodeError as exc:  # its message gives the position, not the text
        raise CardError(f"the {what} is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
    check_depth(value, what)
    return value


def check_depth(value: Any, what: str = "card") -> None:
    """CardError when `value` nests deeper than MAX_DEPTH (iterative: no recursion to exhaust)."""
    stack = [(value, 1)]
    while stack:
        v, depth = stack.pop()
        if isinstance(v, (dict, list)):
            if depth > MAX_DEPTH:
                raise CardError(f"the {what} is nested deeper than {MAX_DEPTH} levels")
            stack.extend((c, depth + 1) for c in (v.values() if isinstance(v, dict) else v))


# --- field checks -------------------------------------------------------------------------------

def _section(d: dict, key: str, where: str, required: bool = False) -> dict | None:
    v = d.get(key)
    if v is None and not required:
        return None
    if not isinstance(v, dict):
        raise CardError(f"{where}{key} must be an object, not {_json_type(v)}")
    return v


def _int(d: dict, key: str, where: str, lo: int, hi: int, required: bool = True) -> int | None:
    v = d.get(key)
    if v is None and not required:
        return None
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    if isinstance(v, bool) or not isinstance(v, int):
        raise CardError(f"{where}{key} must be a whole number {lo}..{hi}, not {_shown(v)}")
    if not lo <= v <= hi:
        raise CardError(f"{where}{key} = {v} is out of range {lo}..{hi}")
    return v


def _number(d: dict, key: str, where: str, lo: float, hi: float) -> float | None:
    v = d.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not lo <= v <= hi:
        raise CardError(f"{where}{key} must be a number in {lo:g}..{hi:g}, not {_shown(v)}")
    return float(v)


def _str(d: dict, key: str, where: str, choices: tuple[str, ...] | None = None, required: bool = False) -> str | None:
    v = d.get(key)
    if v is None and not required:
        return None
    if not isinstance(v, str) or len(v) > 10_000:
        raise CardError(f"{where}{key} must be a string, not {_shown(v)}")
    if choices is not None and v not in choices:
        raise CardError(f"{where}{key} {_shown(v)} is not one of {', '.join(choices)}")
    return v


def _list(d: dict, key: str, where: str, item: type, max_len: int, required: bool = True,
          lo: int = 1, hi: int = 1 << 20) -> list | None:
    v = d.get(key)
    if v is None and not required:
        return None
    what = "strings" if item is str else f"whole numbers {lo}..{hi}"
    if not isinstance(v, list) or not 1 <= len(v) <= max_len:
        raise CardError(f"{where}{key} must be a list of 1 to {max_len} {what}, not {_json_type(v)}"
                        + (f" of {len(v)}" if isinstance(v, list) else ""))
    for x in v:
        ok = isinstance(x, str) if item is str else (isinstance(x, int) and not isinstance(x, bool) and lo <= x <= hi)
        if not ok:
            raise CardError(f"{where}{key} must list {what}; it holds {_shown(x)}")
    return v


def check_file_name(name: Any, where: str) -> str:
    """A file name a card lists: a relative path with no '..' (containment is checked on disk by
    the registry, which also follows symlinks)."""
    if not isinstance(name, str) or not name or len(name) > MAX_NAME_CHARS or "\0" in name:
        raise CardError(f"{where} must be a file name (a non-empty string), not {_shown(name)}")
    parts = name.replace("\\", "/").split("/")
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":") or ".." in parts:
        raise CardError(f"{where} {_shown(name)} leaves the model folder (absolute or '..')")
    return name


def max_cached_positions(n_layer: int, n_kv_head: int, head_dim: int) -> int:
    """The most positions a float32 KV cache of this shape may hold within MAX_STATE_BYTES."""
    return MAX_STATE_BYTES // _state_bytes(2, n_layer, n_kv_head, head_dim)


def _state_bytes(*factors: int) -> int:
    return 4 * math.prod(factors)  # float32


def _check_state(total: int, what: str) -> None:
    if total > MAX_STATE_BYTES:
        raise CardError(f"{what} would take {total / 2**30:,.1f} GiB per sequence; at most "
                        f"{MAX_STATE_BYTES / 2**30:g} GiB is allowed")


# --- sections shared by kinds -------------------------------------------------------------------

def _check_common(card: dict) -> None:
    ident = card.get("id")
    if not isinstance(ident, str) or not ident.strip() or len(ident) > MAX_ID_CHARS or not ident.isprintable():
        raise CardError(f"id must be a printable string of 1 to {MAX_ID_CHARS} characters, not {_shown(ident)}")
    _str(card, "kind", "", KINDS, required=True)
    for key in ("name", "description"):
        _str(card, key, "")
    _int(card, "parameters", "", 0, 1 << 50, required=False)
    files = _section(card, "files", "", required=True)
    if not files or len(files) > 64:
        raise CardError("files must map 1 to 64 roles to file names")
    for role, name in files.items():
        check_file_name(name, f"files.{printable(role)}")
    metrics = _section(card, "metrics", "")
    if metrics is not None and len(metrics) > 10_000:
        raise CardError("metrics holds more than 10,000 entries")
    _check_io(card)
    _check_decoding_defaults(card)


def _check_io(card: dict) -> None:
    io = _section(card, "io", "")
    for role, spec in (io or {}).items():
        if isinstance(spec, list):  # a text card lists its decoder's names directly
            _list(io, role, "io.", str, 4096)
            continue
        if not isinstance(spec, dict):
            raise CardError(f"io.{printable(role)} must be an object or a list, not {_json_type(spec)}")
        for key in ("inputs", "outputs"):
            _list(spec, key, f"io.{printable(role)}.", str, 4096, required=False)


# Card-only decoding defaults that the DecodingConfig does not hold: (low, high) of each.
EXTRA_DECODING = {"frame_temperature": (0.0, 100.0)}


def _check_decoding_defaults(card: dict) -> None:
    defaults = _section(card, "decoding_defaults", "")
    if defaults is None:
        return
    from engines.decoding.config import DecodingConfig
    from engines.errors import DecodingError

    for key, (lo, hi) in EXTRA_DECODING.items():
        _number(defaults, key, "decoding_defaults.", lo, hi)
    try:
        DecodingConfig.from_dict({k: v for k, v in defaults.items() if k not in EXTRA_DECODING})
    except (DecodingError, TypeError, ValueError) as exc:  # the config names the setting
        raise CardError(f"decoding_defaults: {printable(exc)}") from None


def _check_mel(card: dict, required: bool = False) -> None:
    if card.get("mel") is None and not required:
        return
    from engines.audio.mel import MelSpec
    from engines.errors import ModelLoadError

    try:
        MelSpec.from_dict(card.get("mel"), "card")
    except ModelLoadError as exc:
        raise CardError(str(exc).removeprefix("card: ")) from None


# --- per kind ------------------------------------------------------------------------------------

def _check_text(card: dict) -> None:
    context = _int(card, "context_length", "", 1, 1 << 20, required=False)
    tok = _section(card, "tokenizer", "")
    if tok is not None:
        _str(tok, "type", "tokenizer.", ("char", "hf", "bpe"))
        if tok.get("file") is not None:
            check_file_name(tok["file"], "tokenizer.file")
        if tok.get("vocab") is not None:
            _list(tok, "vocab", "tokenizer.", str, 1 << 20)
        for key in ("start_token", "eos_token"):
            _str(tok, key, "tokenizer.")
    arch = _section(card, "architecture", "")
    if arch is None:  # a bare card: the loader says what is missing when it is used
        return
    w = "architecture."
    n_layer = _int(arch, "n_layer", w, 1, 1024)
    n_head = _int(arch, "n_head", w, 1, 1024)
    n_embd = _int(arch, "n_embd", w, 1, 1 << 16, required=arch.get("head_dim") is None)
    head_dim = _int(arch, "head_dim", w, 1, 1 << 14, required=False)
    if head_dim is None:
        if n_embd % n_head:
            raise CardError(f"architecture.n_embd = {n_embd} is not a multiple of n_head = {n_head}")
        head_dim = n_embd // n_head
    _int(arch, "vocab_size", w, 1, 1 << 22, required=False)
    block = _int(arch, "block_size", w, 1, 1 << 20, required=False)
    if context is None and block is None:
        raise CardError("the card gives neither context_length nor architecture.block_size")
    # grouped- and multi-query attention cache only the key/value heads
    n_kv_head = _int(arch, "n_kv_head", w, 1, 1024, required=False) or n_head
    if n_head % n_kv_head:
        raise CardError(f"architecture.n_head = {n_head} is not a multiple of n_kv_head = {n_kv_head}")
    _check_state(_state_bytes(2, n_layer, n_kv_head, head_dim, context or block), "the KV cache")


IMAGE_FIELDS = {"height": (1, 4096), "width": (1, 4096), "channels": (1, 4), "levels": (2, 65536),
                "n_layers": (1, 256), "n_filters": (1, 4096), "row_window": (0, 4096),  # k // 2: 0 for 1x1 kernels
                "vertical_window": (0, 4096), "pixel_window": (1, 4096), "horizontal_window": (0, 4096)}


def _check_image(card: dict) -> None:
    arch = _section(card, "architecture", "", required=True)
    v = {k: _int(arch, k, "architecture.", lo, hi) for k, (lo, hi) in IMAGE_FIELDS.items()}
    _check_state(_state_bytes(v["height"], v["width"], v["channels"], v["levels"]), "one image's logits")
    _check_state(_state_bytes(v["n_layers"], v["n_filters"], v["width"], v["row_window"] + v["vertical_window"]),
                 "the sampler's row caches")
    _str(card, "output", "", required=True)
    cond = _section(card, "conditioning", "")
    if cond is not None:
        n = _int(cond, "num_classes", "conditioning.", 0, 100_000, required=False) or 0
        _int(cond, "none_label", "conditioning.", 0, n, required=False)
        _list(cond, "labels", "conditioning.", str, 100_000, required=False)
    _number(card, "guidance_default", "", 0.0, 1000.0)
    _check_image_section(card)


def _check_image_section(card: dict) -> None:
    image = _section(card, "image", "")
    if image is not None:
        _int(image, "height", "image.", 1, 4096, required=False)
        _int(image, "width", "image.", 1, 4096, required=False)
        _int(image, "channels", "image.", 1, 4, required=False)
        _int(image, "levels", "image.", 2, 65536, required=False)


def _check_audio(card: dict) -> None:
    arch = _section(card, "architecture", "", required=True)
    w = "architecture."
    _list(arch, "speakers", w, str, 4096)
    dilations = _list(arch, "dilations", w, int, 512, hi=1 << 16)
    n_digits = _int(arch, "n_digits", w, 0, 100_000)
    _int(arch, "none_digit", w, 0, n_digits, required=False)
    _int(arch, "none_speaker", w, 0, len(arch["speakers"]), required=False)
    _int(arch, "step_block", w, 2, max(dilations))
    rf = _int(arch, "receptive_field", w, 1, 1 << 30, required=False)
    if rf is not None and rf != sum(dilations) + 1:
        raise CardError(f"architecture.receptive_field {rf} does not match the dilations (sum + 1 = {sum(dilations) + 1})")
    _int(arch, "sample_rate", w, 1000, 192_000)
    _int(arch, "levels", w, 2, 65536)
    residual = _int(arch, "residual_channels", w, 1, 4096)
    _int(arch, "gate_channels", w, 1, 4096)
    _int(arch, "n_mels", w, 0, 512, required=False)
    _check_state(_state_bytes(sum(dilations) + 1, residual), "the layer queues")
    _check_mel(card, required=bool(arch.get("n_mels")))
    prior = _section(card, "prior", "")
    if prior is not None:
        for key, lo, hi in (("n_mels", 1, 512), ("hidden", 1, 8192), ("n_layers", 1, 16),
                            ("n_components", 1, 1024), ("n_digits", 0, 100_000)):
            _int(prior, key, "prior.", lo, hi)
        _list(prior, "speakers", "prior.", str, 4096)
        if _number(prior, "floor_value", "prior.", -1e6, 1e6) is None:
            raise CardError("prior.floor_value must be a number")


def _check_density(card: dict) -> None:
    arch = _section(card, "architecture", "", required=True)
    w = "architecture."
    family = _str(arch, "family", w, ("nade", "made"), required=True)
    dims = _int(arch, "dims", w, 1, 1 << 20)
    _check_image_section(card)
    if family == "nade":
        hidden = _int(arch, "hidden", w, 1, 1 << 16)
        _check_state(_state_bytes(dims, hidden), "the weights")
        return
    hidden = _list(arch, "hidden", w, int, 16, hi=1 << 16)
    n_masks = _int(arch, "n_masks", w, 1, 4096, required=False)
    seeds = _list(arch, "mask_seeds", w, int, 4096, lo=0, hi=2**63 - 1)
    orderings = _list(arch, "orderings", w, str, 4096)
    if n_masks is not None and not len(seeds) == len(orderings) == n_masks:
        raise CardError(f"architecture.n_masks = {n_masks} but {len(seeds)} mask_seeds and "
                        f"{len(orderings)} orderings are listed")
    _int(arch, "default_k", w, 1, len(seeds), required=False)
    sizes = [dims, *hidden, dims]
    _check_state(4 * (sum(a * b for a, b in zip(sizes, sizes[1:])) + dims * dims), "one mask set")


def _check_classifier(card: dict) -> None:
    _str(card, "modality", "", ("audio", "image"), required=True)
    _section(card, "architecture", "")
    labels = _section(card, "labels", "")
    for key in labels or {}:
        _list(labels, key, "labels.", str, 100_000)
    _check_mel(card)
    _check_image_section(card)


_KIND_CHECKS = {"text": _check_text, "image": _check_image, "audio": _check_audio,
                "density": _check_density, "classifier": _check_classifier}


def check_card(card: Any) -> dict:
    """`card` when it follows the schema; CardError naming the first fault otherwise."""
    if not isinstance(card, dict):
        raise CardError(f"the card must be a JSON object, not {_json_type(card)}")
    check_depth(card)
    missing = [k for k in ("id", "kind", "files") if k not in card]
    if missing:
        raise CardError(f"missing field(s) {', '.join(missing)}")
    _check_common(card)
    _KIND_CHECKS[card["kind"]](card)
    return card


def named_files(card: dict) -> list[tuple[str, str]]:
    """(where, name) of every file a checked card names, for the registry to find on disk."""
    named = [(f"files.{printable(role)}", name) for role, name in card["files"].items()]
    tok = card.get("tokenizer")
    if isinstance(tok, dict) and isinstance(tok.get("file"), str):
        named.append(("tokenizer.file", tok["file"]))
    return named
