"""A loaded text model: tokenizer + KV-cache decoder + card defaults, and the recogniser that
lets a Hugging Face Optimum export folder (GPT-2 family) work without a hand-written card."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engines.card_schema import CardError, printable
from engines.errors import ModelLoadError, file_fault
from engines.registry import ModelInfo, read_json_in_folder
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
    except (KeyError, TypeError, ValueError, ZeroDivisionError) as exc:  # n_head 0 divides by zero
        raise ModelLoadError(printable(f"card of {card.get('id')!r}: architecture lacks valid n_layer/n_head/n_embd/"
                                       f"context_length ({type(exc).__name__}: {file_fault(exc)})")) from exc
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
    """A folder with model.onnx + config.json (+ tokenizer.json) as Optimum writes it.

    The card built here goes through the registry's one schema like any card.json, so absurd
    sizes in config.json (n_layer 10^9, n_head 0) are refused when listing, not when loading.
    Every file is read through `read_json_in_folder`: inside the folder, bounded in size and
    nesting; a broken config makes this folder unusable, with the reason, and nothing else."""
    if not all((folder / name).is_file() for name in ("config.json", "model.onnx", "tokenizer.json")):
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
    n_embd, n_head = config.get("n_embd"), config.get("n_head")
    arch = {"family": family, "n_layer": config.get("n_layer"), "n_head": n_head, "n_embd": n_embd,
            "vocab_size": config.get("vocab_size")}
    if isinstance(n_embd, int) and isinstance(n_head, int) and n_head > 0:
        arch["head_dim"] = n_embd // n_head
    info.card = {
        "id": folder.name,
        "kind": "text",
        "name": f"{folder.name} (Optimum {family} export)",
        "description": "Recognised from a Hugging Face Optimum text-generation-with-past export; no card was written.",
        "architecture": arch,  # checked (types, ranges, KV-cache size) by the card schema
        "context_length": config.get("n_positions") or config.get("n_ctx") or 1024,
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
