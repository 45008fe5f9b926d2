"""A loaded text model: tokenizer + KV-cache decoder + card defaults, and the recogniser that
lets a Hugging Face Optimum export folder (GPT-2, GPT-NeoX, Llama, Mistral, Phi-3, Qwen2 families) or an
onnxruntime-genai folder work without a hand-written card."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from engines.card_schema import CardError, printable
from engines.errors import ModelLoadError, file_fault
from engines.registry import ModelInfo, read_json_in_folder, resolve_in_folder
from engines.text.decoder import DecoderShape, GPTDecoder
from engines.text.tokenizer import TextTokenizer, load_tokenizer


@dataclass
class TextModel:
    info: ModelInfo
    tokenizer: TextTokenizer
    decoder: GPTDecoder
    decoding_defaults: dict[str, Any] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return self.info.id

    @property
    def context_length(self) -> int:
        return self.decoder.shape.context_length


def shape_from_card(card: dict[str, Any], vocab_size: int) -> DecoderShape:
    arch = card.get("architecture", {})
    try:
        n_layer, n_head = int(arch["n_layer"]), int(arch["n_head"])
        head_dim = int(arch.get("head_dim") or int(arch["n_embd"]) // n_head)
        context = int(card.get("context_length") or arch.get("block_size"))
        n_kv = int(arch["n_kv_head"]) if arch.get("n_kv_head") is not None else None
    except (KeyError, TypeError, ValueError, ZeroDivisionError) as exc:  # n_head 0 divides by zero
        raise ModelLoadError(printable(f"card of {card.get('id')!r}: architecture lacks valid n_layer/n_head/n_embd/"
                                       f"context_length ({type(exc).__name__}: {file_fault(exc)})")) from exc
    if n_kv is not None and (n_kv < 1 or n_head % n_kv):
        raise ModelLoadError(printable(f"card of {card.get('id')!r}: {n_kv} key/value heads do not divide "
                                       f"{n_head} attention heads"))
    return DecoderShape(n_layer, n_head, head_dim, int(arch.get("vocab_size") or vocab_size), context, n_kv)


Progress = Callable[[str], None]  # called with "tokenizer", "session", "ready" as loading goes


def load_text_model(info: ModelInfo, threads: int | None = 1, progress: Progress | None = None) -> TextModel:
    """Load a text model; `progress` (optional) hears each stage: "tokenizer", "session", "ready".

    Before anything large is read, the graph's weights (the .onnx file and the external data files
    it names, each inside the model folder) are measured against the free memory: a model that
    cannot fit is refused with the sizes."""
    say = progress or (lambda stage: None)
    path = info.file("decoder")
    check_fits_in_memory(path, info.path)
    say("tokenizer")
    tokenizer = load_tokenizer(info.path, info.card)
    shape = shape_from_card(info.card, tokenizer.vocab_size)
    names = None
    if info.card.get("foreign") == "genai":
        from engines.text.genai_folder import decoder_names

        names = decoder_names(info.card, shape.n_layer)
    say("session")
    decoder = GPTDecoder(path, shape, threads=threads, names=names, left_padding=names is None)
    logits_dim = decoder.session.session.get_outputs()[
        decoder.session.output_names.index(decoder.logits_name)].shape[-1]
    if isinstance(logits_dim, int):
        n_tok = tokenizer.vocab_size
        if n_tok > logits_dim or (info.card.get("tokenizer", {}).get("type") == "char" and n_tok != logits_dim):
            raise ModelLoadError(
                f"{info.path}: tokenizer and model do not match: the tokenizer has {n_tok} tokens, "
                f"the model scores {logits_dim}"
            )
    model = TextModel(info, tokenizer, decoder, dict(info.card.get("decoding_defaults", {})))
    say("ready")
    return model


# --- weights vs. free memory ----------------------------------------------------------------------

def available_memory() -> int | None:
    """Bytes of memory free for a new allocation (MemAvailable; psutil where installed), None if unknown."""
    try:
        with open("/proc/meminfo", "rb") as f:
            for line in f:
                if line.startswith(b"MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        import psutil  # optional: macOS / Windows

        return int(psutil.virtual_memory().available)
    except Exception:  # noqa: BLE001 - not installed or not supported: the check is skipped
        return None


def _varint(buf, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise ValueError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def _fields(buf, start: int, end: int):
    """(field number, wire type, value or (offset, length)) of one protobuf message in buf[start:end]."""
    pos = start
    while pos < end:
        key, pos = _varint(buf, pos)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
            yield field, wire, value
        elif wire == 2:
            length, pos = _varint(buf, pos)
            if pos + length > end:
                raise ValueError("field runs past its message")
            yield field, wire, (pos, length)
            pos += length
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        else:
            raise ValueError(f"wire type {wire}")


def external_data_locations(path: Path) -> list[str]:
    """The external data files the initializers of an ONNX graph name (ModelProto.graph.initializer
    [i].external_data["location"]), read from the protobuf without loading any weights: a memory-
    mapped walk that skips over tensor bytes."""
    import mmap

    with open(path, "rb") as f:
        if f.seek(0, 2) == 0:
            return []
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            found: list[str] = []
            for mf, wire, val in _fields(buf, 0, len(buf)):
                if mf != 7 or wire != 2:  # ModelProto.graph
                    continue
                g0, glen = val
                for gf, gw, gval in _fields(buf, g0, g0 + glen):
                    if gf != 5 or gw != 2:  # GraphProto.initializer (TensorProto)
                        continue
                    t0, tlen = gval
                    for tf, tw, tval in _fields(buf, t0, t0 + tlen):
                        if tf != 13 or tw != 2:  # TensorProto.external_data (StringStringEntryProto)
                            continue
                        e0, elen = tval
                        entry = {ef: bytes(buf[v[0]:v[0] + v[1]]).decode("utf-8", "replace")
                                 for ef, ew, v in _fields(buf, e0, e0 + elen) if ew == 2}
                        if entry.get(1) == "location" and entry.get(2) is not None and entry[2] not in found:
                            found.append(entry[2])
            return found


def weight_files(path: Path, folder: Path) -> list[Path]:
    """The graph file and every external data file it names, each resolved inside `folder`."""
    try:
        locations = external_data_locations(path)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(printable(f"{path}: cannot be read as an ONNX model ({file_fault(exc)})")) from None
    files = [path]
    for loc in locations:
        # ONNX Runtime resolves a location beside the graph; it must stay inside the model folder.
        parts = loc.replace("\\", "/").split("/")
        if not loc or loc.startswith(("/", "\\")) or (len(loc) > 1 and loc[1] == ":") or ".." in parts:
            raise ModelLoadError(printable(f"{path}: external data file {loc!r} leads outside the model folder; refused"))
        target = resolve_in_folder(folder, str((Path(path).parent / loc).relative_to(folder)), "external data file")
        if not target.is_file():
            raise ModelLoadError(printable(f"{path}: its weights are in {loc!r}, which is missing from {folder}"))
        if target not in files:
            files.append(target)
    return files


def check_fits_in_memory(path: Path, folder: Path, available: int | None = None) -> int:
    """The bytes of the graph's weights; ModelLoadError naming the sizes when they exceed free memory."""
    files = weight_files(Path(path), Path(folder))
    total = sum(f.stat().st_size for f in files)
    free = available_memory() if available is None else available
    if free is not None and total > free:
        listed = ", ".join(f"{f.name} {f.stat().st_size / 2**30:.2f} GiB" for f in files)
        raise ModelLoadError(printable(
            f"{folder}: the model's weights take {total / 2**30:.2f} GiB ({listed}) but only {free / 2**30:.2f} GiB "
            "of memory is free: not loaded (close other programs, or use a smaller or quantized model)"))
    return total


# --- Hugging Face Optimum export folders -------------------------------------------------

OPTIMUM_FAMILIES = {"gpt2", "gpt_neox", "llama", "mistral", "phi3", "qwen2"}
# The graph: Optimum writes model.onnx beside config.json; the hub's transformers.js-style repositories
# (onnx-community/...) keep it in onnx/, with config.json and tokenizer.json at the top.
OPTIMUM_GRAPHS = ("model.onnx", "onnx/model.onnx")


def _first(config: dict, *keys: str) -> Any:
    return next((config[k] for k in keys if config.get(k) is not None), None)


def optimum_architecture(config: dict[str, Any]) -> tuple[dict[str, Any], Any]:
    """The card's architecture section and context length from a transformers config.json, any family:
    GPT-2 names (n_layer, n_head, n_embd, n_positions) or the Llama-style ones (num_hidden_layers,
    num_attention_heads, num_key_value_heads, hidden_size, head_dim, max_position_embeddings).
    Where the family attends through a sliding window (Mistral, Phi-3; Qwen2 only with
    use_sliding_window), the engine's own window is no wider than it."""
    n_layer = _first(config, "n_layer", "num_hidden_layers")
    n_head = _first(config, "n_head", "num_attention_heads")
    n_embd = _first(config, "n_embd", "hidden_size")
    arch = {"family": config.get("model_type"), "n_layer": n_layer, "n_head": n_head, "n_embd": n_embd,
            "vocab_size": config.get("vocab_size")}
    n_kv = _first(config, "num_key_value_heads")
    if n_kv is not None:
        arch["n_kv_head"] = n_kv
    head_dim = config.get("head_dim")
    if isinstance(head_dim, int) and not isinstance(head_dim, bool):
        arch["head_dim"] = head_dim
    elif isinstance(n_embd, int) and isinstance(n_head, int) and n_head > 0:
        arch["head_dim"] = n_embd // n_head
    positions = _first(config, "n_positions", "n_ctx", "max_position_embeddings") or 1024
    arch["max_position_embeddings"] = positions
    context = positions
    window = config.get("sliding_window")
    if isinstance(window, int) and not isinstance(window, bool) and window > 0 and config.get("use_sliding_window", True):
        arch["sliding_window"] = window
        if isinstance(positions, int) and not isinstance(positions, bool):
            context = min(positions, window)
    if config.get("tie_word_embeddings") is not None:
        arch["tied_embeddings"] = bool(config.get("tie_word_embeddings"))
    context = _fit_window(arch, context)
    return arch, context


def _fit_window(arch: dict[str, Any], context: Any) -> Any:
    """A context too long for the per-sequence state cap (a 32k- or 128k-token model's KV cache can
    take tens of GiB) becomes the engine's window, the largest power of two that fits: the model
    still loads and the window slides as it does for every model (`arch["window_capped_from"]`
    records the model's own length; the Models view shows it with the architecture)."""
    from engines.card_schema import max_cached_positions

    sizes = [arch.get(k) for k in ("n_layer", "head_dim")] + [arch.get("n_kv_head") or arch.get("n_head")]
    if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in sizes) \
            or not isinstance(context, int) or isinstance(context, bool):
        return context  # the schema refuses what is malformed, with its own message
    fits = max_cached_positions(sizes[0], sizes[2], sizes[1])
    if context <= fits or fits < 1:
        return context
    window = 1 << (fits.bit_length() - 1)
    arch["window_capped_from"] = context
    return window


def _token_name(value: Any) -> str | None:
    """A token as tokenizer_config.json writes it: a string, or an AddedToken object {"content": ...}."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


def _token_id(value: Any) -> int | None:
    if isinstance(value, list):
        value = value[0] if value else None
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def hf_tokenizer_section(tok_cfg: dict, config: dict, gen: dict) -> dict[str, Any]:
    """The card's tokenizer section from tokenizer_config.json, with ids from generation_config.json /
    config.json where the tokenizer config names no token."""
    section = {"type": "hf", "file": "tokenizer.json", "start_token": _token_name(tok_cfg.get("bos_token")),
               "eos_token": _token_name(tok_cfg.get("eos_token"))}
    bos = _token_id(gen.get("bos_token_id", config.get("bos_token_id")))
    eos = _token_id(gen.get("eos_token_id", config.get("eos_token_id")))
    if bos is not None:
        section["bos_id"] = bos
    if eos is not None:
        section["eos_id"] = eos
    if isinstance(tok_cfg.get("add_bos_token"), bool):
        section["add_bos_token"] = tok_cfg["add_bos_token"]
    return section


def recognise_optimum_folder(folder: Path, source: str) -> ModelInfo | None:
    """A folder with model.onnx (or onnx/model.onnx) + config.json + tokenizer.json as Optimum writes it, or an
    onnxruntime-genai folder (genai_config.json; see engines.text.genai_folder).

    The card built here goes through the registry's one schema like any card.json, so absurd
    sizes in config.json (n_layer 10^9, n_head 0) are refused when listing, not when loading.
    Every file is read through `read_json_in_folder`: inside the folder, bounded in size and
    nesting; a broken config makes this folder unusable, with the reason, and nothing else."""
    if (folder / "genai_config.json").is_file():
        from engines.text.genai_folder import recognise_genai_folder

        return recognise_genai_folder(folder, source)
    graph = next((name for name in OPTIMUM_GRAPHS if (folder / name).is_file()), None)
    if graph is None or not all((folder / name).is_file() for name in ("config.json", "tokenizer.json")):
        return None
    info = ModelInfo(id=folder.name, kind="text", path=folder, card={"foreign": "optimum"}, source=source)
    try:
        config = read_json_in_folder(folder, "config.json", "config.json")
        gen = read_json_in_folder(folder, "generation_config.json") if (folder / "generation_config.json").is_file() else {}
        tok_cfg = read_json_in_folder(folder, "tokenizer_config.json") if (folder / "tokenizer_config.json").is_file() else {}
        for name, value in (("config.json", config), ("generation_config.json", gen), ("tokenizer_config.json", tok_cfg)):
            if not isinstance(value, dict):
                raise CardError(f"{name} must hold a JSON object")
    except (CardError, ModelLoadError, OSError) as exc:
        info.problem = printable(f"{folder}: {(exc.strerror or type(exc).__name__) if isinstance(exc, OSError) else exc}")
        return info
    family = config.get("model_type")
    if family not in OPTIMUM_FAMILIES:
        info.problem = printable(f"{folder / 'config.json'}: model_type {family!r} is not supported "
                                 f"(supported: {', '.join(sorted(OPTIMUM_FAMILIES))})")
        return info
    arch, context = optimum_architecture(config)
    info.card = {
        "id": folder.name,
        "kind": "text",
        "name": f"{folder.name} (Optimum {family} export)",
        "description": "Recognised from a Hugging Face Optimum text-generation-with-past export; no card was written.",
        "architecture": arch,  # checked (types, ranges, KV-cache size) by the card schema
        "context_length": context,
        "files": {"decoder": graph, "tokenizer": "tokenizer.json"},
        "tokenizer": hf_tokenizer_section(tok_cfg, config, gen),
        "decoding_defaults": {
            k: v for k, v in {
                "temperature": gen.get("temperature"), "top_k": gen.get("top_k"), "top_p": gen.get("top_p"),
            }.items() if v is not None
        },
        "metrics": {},
        "foreign": "optimum",
    }
    info.parameters = None
    return info
