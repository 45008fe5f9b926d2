"""A loaded text model: tokenizer + KV-cache decoder + card defaults, and the recogniser that
lets a Hugging Face Optimum export folder (GPT-2 family) work without a hand-written card."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engines.errors import ModelLoadError
from engines.registry import ModelInfo
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
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelLoadError(f"card of {card.get('id')!r}: architecture lacks n_layer/n_head/n_embd/context_length ({exc})") from exc
    return DecoderShape(n_layer, n_head, head_dim, int(arch.get("vocab_size") or vocab_size), context)


def load_text_model(info: ModelInfo, threads: int | None = 1) -> TextModel:
    tokenizer = load_tokenizer(info.path, info.card)
    shape = shape_from_card(info.card, tokenizer.vocab_size)
    decoder = GPTDecoder(info.file("decoder"), shape, threads=threads)
    logits_dim = decoder.session.session.get_outputs()[0].shape[-1]
    if isinstance(logits_dim, int):
        n_tok = tokenizer.vocab_size
        if n_tok > logits_dim or (info.card.get("tokenizer", {}).get("type") == "char" and n_tok != logits_dim):
            raise ModelLoadError(
                f"{info.path}: tokenizer and model do not match: the tokenizer has {n_tok} tokens, "
                f"the model scores {logits_dim}"
            )
    return TextModel(info, tokenizer, decoder, dict(info.card.get("decoding_defaults", {})))


# --- Hugging Face Optimum export folders -------------------------------------------------

OPTIMUM_FAMILIES = {"gpt2"}


def recognise_optimum_folder(folder: Path, source: str) -> ModelInfo | None:
    """A folder with model.onnx + config.json (+ tokenizer.json) as Optimum writes it."""
    config_path, onnx_path = folder / "config.json", folder / "model.onnx"
    if not (config_path.is_file() and onnx_path.is_file() and (folder / "tokenizer.json").is_file()):
        return None
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    family = config.get("model_type")
    info = ModelInfo(id=folder.name, kind="text", path=folder, card={}, source=source)
    info.size_bytes = sum(p.stat().st_size for p in folder.iterdir() if p.is_file())
    if family not in OPTIMUM_FAMILIES:
        info.problem = f"{config_path}: model_type {family!r} is not supported (supported: {', '.join(sorted(OPTIMUM_FAMILIES))})"
        return info
    gen_path = folder / "generation_config.json"
    gen = json.loads(gen_path.read_text(encoding="utf-8")) if gen_path.is_file() else {}
    tok_cfg_path = folder / "tokenizer_config.json"
    tok_cfg = json.loads(tok_cfg_path.read_text(encoding="utf-8")) if tok_cfg_path.is_file() else {}
    n_embd, n_head = int(config["n_embd"]), int(config["n_head"])
    info.card = {
        "id": folder.name,
        "kind": "text",
        "name": f"{folder.name} (Optimum {family} export)",
        "description": "Recognised from a Hugging Face Optimum text-generation-with-past export; no card was written.",
        "architecture": {
            "family": family, "n_layer": int(config["n_layer"]), "n_head": n_head, "n_embd": n_embd,
            "head_dim": n_embd // n_head, "vocab_size": int(config["vocab_size"]),
        },
        "context_length": int(config.get("n_positions") or config.get("n_ctx") or 1024),
        "files": {"decoder": "model.onnx", "tokenizer": "tokenizer.json"},
        "tokenizer": {
            "type": "hf", "file": "tokenizer.json",
            "start_token": tok_cfg.get("bos_token") if isinstance(tok_cfg.get("bos_token"), str) else None,
            "eos_token": tok_cfg.get("eos_token") if isinstance(tok_cfg.get("eos_token"), str) else None,
        },
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

