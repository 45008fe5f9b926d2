"""onnxruntime-genai model folders (what `onnxruntime_genai.models.builder` writes): genai_config.json
+ the decoder graph it names (often with its weights in model.onnx.data beside it) + tokenizer.json.

Only the configuration is taken from genai: the graph's input/output names and cache layout
(`model.decoder.inputs/outputs`, with "%d" standing for the layer: "past_key_values.%d.key"), the
heads and head size, the context length and the bos/eos ids. The studio runs the graph with its
own decoding loop, so every sampler, beam search, scoring and the probability views work on it.

The builder's attention (GroupQueryAttention) reads each row's length from the attention mask and
assumes the row's tokens come first, so rows of different lengths (a left-padded batch) are not
fed to such a graph as one batch; one row at a time, or equal-length rows (beams), run as usual.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from engines.card_schema import CardError, printable
from engines.errors import ModelLoadError
from engines.registry import ModelInfo, read_json_in_folder
from engines.text.decoder import DecoderNames

MAX_NAME = 200  # an input/output name or pattern from the config


def _name(section: dict, key: str, where: str, pattern: bool = False, required: bool = True) -> str | None:
    value = section.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value or len(value) > MAX_NAME or not value.isprintable():
        raise CardError(f"{where}.{key} must be a name (a printable string of at most {MAX_NAME} characters)")
    if pattern and (value.count("%d") != 1 or value.replace("%d", "").count("%")):
        raise CardError(f"{where}.{key} {value!r} must hold one %d (the layer number) and no other %")
    return value


def _int(section: dict, key: str, where: str, lo: int, hi: int, required: bool = True) -> int | None:
    value = section.get(key)
    if value is None and not required:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise CardError(f"{where}.{key} must be a whole number {lo}..{hi}, not {printable(repr(value))[:40]}")
    return value


def _ids(value: Any) -> list[int]:
    values = value if isinstance(value, list) else [value]
    return [v for v in values if isinstance(v, int) and not isinstance(v, bool) and v >= 0]


def read_genai_config(folder: Path) -> dict[str, Any]:
    """The parts of genai_config.json the studio uses, checked; CardError naming the field otherwise."""
    config = read_json_in_folder(folder, "genai_config.json", "genai_config.json")
    if not isinstance(config, dict) or not isinstance(config.get("model"), dict):
        raise CardError("genai_config.json must hold an object with a \"model\" object")
    model = config["model"]
    dec = model.get("decoder")
    if not isinstance(dec, dict):
        raise CardError("genai_config.json: model.decoder must be an object")
    w = "model.decoder"
    inputs, outputs = dec.get("inputs"), dec.get("outputs")
    if not isinstance(inputs, dict) or not isinstance(outputs, dict):
        raise CardError(f"genai_config.json: {w}.inputs and {w}.outputs must be objects")
    out = {
        "filename": _name(dec, "filename", w),
        "n_layer": _int(dec, "num_hidden_layers", w, 1, 1024),
        "n_head": _int(dec, "num_attention_heads", w, 1, 1024),
        "n_kv_head": _int(dec, "num_key_value_heads", w, 1, 1024, required=False),
        "head_dim": _int(dec, "head_size", w, 1, 1 << 14),
        "n_embd": _int(dec, "hidden_size", w, 1, 1 << 16, required=False),
        "context_length": _int(model, "context_length", "model", 1, 1 << 20),
        "vocab_size": _int(model, "vocab_size", "model", 1, 1 << 22, required=False),
        "type": model.get("type") if isinstance(model.get("type"), str) else "?",
        "bos_ids": _ids(model.get("bos_token_id")),
        "eos_ids": _ids(model.get("eos_token_id")),
        "names": {
            "input_ids": _name(inputs, "input_ids", f"{w}.inputs"),
            "attention_mask": _name(inputs, "attention_mask", f"{w}.inputs", required=False),
            "position_ids": _name(inputs, "position_ids", f"{w}.inputs", required=False),
            "past_key": _name(inputs, "past_key_names", f"{w}.inputs", pattern=True),
            "past_value": _name(inputs, "past_value_names", f"{w}.inputs", pattern=True),
            "logits": _name(outputs, "logits", f"{w}.outputs"),
            "present_key": _name(outputs, "present_key_names", f"{w}.outputs", pattern=True),
            "present_value": _name(outputs, "present_value_names", f"{w}.outputs", pattern=True),
        },
    }
    if out["n_kv_head"] is not None and out["n_head"] % out["n_kv_head"]:
        raise CardError(f"genai_config.json: {out['n_kv_head']} key/value heads do not divide {out['n_head']} heads")
    search = config.get("search") if isinstance(config.get("search"), dict) else {}
    defaults = {}
    if search.get("do_sample") is True:  # the builder writes top_k 50 etc. even for greedy models
        for key in ("temperature", "top_k", "top_p"):
            if isinstance(search.get(key), (int, float)) and not isinstance(search.get(key), bool):
                defaults[key] = search[key]
    out["decoding_defaults"] = defaults
    return out


def recognise_genai_folder(folder: Path, source: str) -> ModelInfo | None:
    """A folder holding genai_config.json: a text model whose card is built from that config."""
    info = ModelInfo(id=folder.name, kind="text", path=folder, card={"foreign": "genai"}, source=source)
    try:
        g = read_genai_config(folder)
        tok_cfg = read_json_in_folder(folder, "tokenizer_config.json") if (folder / "tokenizer_config.json").is_file() else {}
        if not isinstance(tok_cfg, dict):
            raise CardError("tokenizer_config.json must hold a JSON object")
    except (CardError, ModelLoadError, OSError) as exc:
        info.problem = printable(f"{folder}: {(exc.strerror or type(exc).__name__) if isinstance(exc, OSError) else exc}")
        return info
    if not (folder / "tokenizer.json").is_file():
        info.problem = printable(f"{folder}: an onnxruntime-genai folder needs tokenizer.json (the studio reads "
                                 "tokenizers through the `tokenizers` library)")
        return info
    from engines.text.model import _token_name

    tokenizer = {"type": "hf", "file": "tokenizer.json", "start_token": _token_name(tok_cfg.get("bos_token")),
                 "eos_token": _token_name(tok_cfg.get("eos_token"))}
    if g["bos_ids"]:
        tokenizer["bos_id"] = g["bos_ids"][0]
    if g["eos_ids"]:
        tokenizer["eos_id"] = g["eos_ids"][0]
    if isinstance(tok_cfg.get("add_bos_token"), bool):
        tokenizer["add_bos_token"] = tok_cfg["add_bos_token"]
    arch = {"family": g["type"], "n_layer": g["n_layer"], "n_head": g["n_head"], "head_dim": g["head_dim"],
            "n_embd": g["n_embd"], "vocab_size": g["vocab_size"]}
    if g["n_kv_head"] is not None:
        arch["n_kv_head"] = g["n_kv_head"]
    info.card = {
        "id": folder.name,
        "kind": "text",
        "name": f"{folder.name} (onnxruntime-genai {g['type']} model)",
        "description": "Recognised from an onnxruntime-genai folder (genai_config.json); no card was written. "
                       "The studio runs the graph with its own decoding loop.",
        "architecture": {k: v for k, v in arch.items() if v is not None},
        "context_length": g["context_length"],
        "files": {"decoder": g["filename"], "tokenizer": "tokenizer.json"},
        "tokenizer": tokenizer,
        "genai_io": g["names"],
        "decoding_defaults": g["decoding_defaults"],
        "metrics": {},
        "foreign": "genai",
    }
    return info


def decoder_names(card: dict[str, Any], n_layer: int) -> DecoderNames:
    """The graph's names from the card built above (each layer's cache names from the %d patterns)."""
    io = card.get("genai_io")
    if not isinstance(io, dict):
        raise ModelLoadError(printable(f"card of {card.get('id')!r}: the genai folder's input/output names are missing"))
    return DecoderNames.from_patterns(
        n_layer, io["past_key"], io["past_value"], io["present_key"], io["present_value"],
        input_ids=io["input_ids"], attention_mask=io.get("attention_mask"), position_ids=io.get("position_ids"),
        logits=io["logits"])
