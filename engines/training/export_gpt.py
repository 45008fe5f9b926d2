"""Export a trained GPT checkpoint to ONNX with a key/value cache.

The graph follows the Hugging Face Optimum "text-generation-with-past" naming:

inputs
  ``input_ids``                 int64 (batch, sequence)
  ``attention_mask``            int64 (batch, past_sequence + sequence), 0 = padding
  ``position_ids``              int64 (batch, sequence)
  ``past_key_values.{i}.key``   float32 (batch, n_head, past_sequence, head_dim)
  ``past_key_values.{i}.value`` float32 (batch, n_head, past_sequence, head_dim)
outputs
  ``logits``                    float32 (batch, sequence, vocab)
  ``present.{i}.key``           float32 (batch, n_head, past_sequence + sequence, head_dim)
  ``present.{i}.value``         float32 (batch, n_head, past_sequence + sequence, head_dim)

Batch, sequence and past lengths are dynamic; an empty past (length 0) is
valid for the first call. Weights are embedded in the single ``model.onnx``.

By default the graph is written directly with ``onnx.helper``
(:mod:`engines.training.gpt_onnx_graph`: a few fat nodes, constant reshapes, the attention
mask computed once, weights named after the state dict); ``--attention mha`` uses ONNX
Runtime's MultiHeadAttention contrib operator for the attention. ``--torch-exporter`` keeps
the legacy path: ``torch.onnx.export`` (TorchScript) of ``GPT.forward_with_past``.

Run as::

    python -m engines.training.export_gpt --ckpt runs/shakespeare-char/ckpt.pt --out assets/models/shakespeare-char

``--metrics-from OLD/card.json`` carries the ``metrics`` of an earlier export of the same
checkpoint over into the new card (the weights, and so the evaluation, do not change).

A checkpoint trained with ``--tokenizer bpe`` also gets its ``tokenizer.json`` (kept inside
the checkpoint) written beside ``model.onnx``, and a card whose tokenizer is ``{"type": "hf"}``.
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import string
import sys
import warnings
from pathlib import Path

import onnx
import torch

from engines.training.gpt import GPT, GPTConfig
from engines import atomic
from engines.training.gpt_onnx_graph import ATTENTION_STYLES, build_decoder_graph, input_names, output_names

OPSET = 17


class _CacheWrapper(torch.nn.Module):
    """Flat-argument view of ``GPT.forward_with_past`` for the exporter."""

    def __init__(self, model: GPT):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, position_ids, *past_flat):
        past = [(past_flat[2 * i], past_flat[2 * i + 1]) for i in range(len(past_flat) // 2)]
        logits, presents = self.model.forward_with_past(input_ids, attention_mask, position_ids, past)
        flat = [logits]
        for k, v in presents:
            flat += [k, v]
        return tuple(flat)


def load_checkpoint(ckpt_path: str | Path) -> tuple[GPT, dict]:
    """Load a training checkpoint; the model comes back in eval mode (dropout off)."""
    ck = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    model = GPT(GPTConfig(**ck["config"]))
    model.load_state_dict(ck["model"])
    model.eval()
    return model, ck


def metadata(model: GPT) -> dict:
    c = model.config
    return {"n_layer": c.n_layer, "n_head": c.n_head, "head_dim": c.n_embd // c.n_head,
            "n_embd": c.n_embd, "vocab_size": c.vocab_size, "block_size": c.block_size,
            "parameters": model.num_parameters()}


def export_onnx(model: GPT, onnx_path: str | Path, opset: int = OPSET, *, torch_exporter: bool = False,
                attention: str = "ops") -> dict:
    """Write ``onnx_path`` (weights embedded, float32) and return the model metadata.

    By default the graph is built directly from the weights (``gpt_onnx_graph``, opset 17;
    ``attention`` is ``"ops"`` or ``"mha"``). With ``torch_exporter`` it is traced by the
    TorchScript-based exporter (``dynamo=False``) at ``opset``: it traces the shape
    arithmetic (past length, causal mask) as graph ops, so one graph serves both the
    empty and the non-empty cache.
    """
    model = model.float().eval()
    c = model.config
    if not torch_exporter:
        onnx_path = Path(onnx_path)
        onnx_path.parent.mkdir(parents=True, exist_ok=True)
        graph = build_decoder_graph(model.state_dict(), n_layer=c.n_layer, n_head=c.n_head, n_embd=c.n_embd,
                                    vocab_size=c.vocab_size, bias=c.bias, attention=attention)
        with atomic.atomic_path(onnx_path) as tmp:  # an interrupted export leaves the old file or none
            onnx.save_model(graph, str(tmp))
        return metadata(model)
    return _export_torch(model, onnx_path, opset)


def _export_torch(model: GPT, onnx_path: str | Path, opset: int) -> dict:
    """The legacy path: ``torch.onnx.export`` of ``GPT.forward_with_past``."""
    c = model.config
    hd = c.n_embd // c.n_head
    onnx_path = Path(onnx_path)
    onnx_path.parent.mkdir(parents=True, exist_ok=True)

    # example with batch 2, sequence 3, past 4: every dynamic dim >= 2 and distinct
    B, T, P = 2, 3, 4
    input_ids = torch.randint(c.vocab_size, (B, T), dtype=torch.long)
    attention_mask = torch.ones(B, P + T, dtype=torch.long)
    position_ids = torch.arange(P, P + T, dtype=torch.long).unsqueeze(0).expand(B, T).contiguous()
    past = []
    for _ in range(c.n_layer):
        past += [torch.randn(B, c.n_head, P, hd), torch.randn(B, c.n_head, P, hd)]

    in_names, out_names = input_names(c.n_layer), output_names(c.n_layer)
    dynamic_axes = {"input_ids": {0: "batch", 1: "sequence"},
                    "attention_mask": {0: "batch", 1: "past_sequence + sequence"},
                    "position_ids": {0: "batch", 1: "sequence"},
                    "logits": {0: "batch", 1: "sequence"}}
    for i in range(c.n_layer):
        for kv in ("key", "value"):
            dynamic_axes[f"past_key_values.{i}.{kv}"] = {0: "batch", 2: "past_sequence"}
            dynamic_axes[f"present.{i}.{kv}"] = {0: "batch", 2: "past_sequence + sequence"}

    wrapper = _CacheWrapper(model).eval()
    with atomic.atomic_path(onnx_path) as tmp:  # an interrupted export leaves the old file or none
        stray = tmp.with_name(tmp.name + ".data")  # external data the exporter may write beside it
        try:
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.onnx.export(
                    wrapper, (input_ids, attention_mask, position_ids, *past), str(tmp),
                    input_names=in_names, output_names=out_names, dynamic_axes=dynamic_axes,
                    opset_version=opset, do_constant_folding=True, dynamo=False,
                )
            # keep everything in the one file: fold a stray external-data file back in
            if stray.exists():
                m = onnx.load(str(tmp), load_external_data=True)
                onnx.save_model(m, str(tmp), save_as_external_data=False)
        finally:
            stray.unlink(missing_ok=True)
    return metadata(model)


CHAR_DATA_SOURCE = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
EOT = "<|endoftext|>"


def is_bpe(ck: dict) -> bool:
    return (ck.get("tokenizer") or {}).get("type") == "bpe"


def build_card(meta: dict, ck: dict, *, model_id: str, name: str | None = None,
               description: str | None = None, data_name: str = "Tiny Shakespeare",
               data_source: str | None = None, export_command: str | None = None) -> dict:
    if is_bpe(ck):
        return build_bpe_card(meta, ck, model_id=model_id, name=name, description=description,
                              data_source=data_source, export_command=export_command)
    hp = ck.get("hparams", {})
    cfg = ck["config"]
    return {
        "id": model_id,
        "kind": "text",
        "name": name or "Shakespeare char GPT",
        "description": description or (
            f"A character-level GPT ({meta['n_layer']} layers, {meta['n_head']} heads, "
            f"{meta['n_embd']}-wide, {meta['parameters'] / 1e6:.1f}M parameters) trained on "
            f"{data_name}. It writes play-like text one character at a time."),
        "architecture": _architecture(meta, cfg),
        "parameters": meta["parameters"],
        "files": {"decoder": "model.onnx"},
        "io": {"inputs": input_names(meta["n_layer"]), "outputs": output_names(meta["n_layer"])},
        "tokenizer": {"type": "char", "vocab": list(ck["vocab"])},
        "data": {"name": data_name,
                 "source": data_source or ck.get("data_path", ""),
                 "split": "first 90% of characters train, last 10% validation",
                 "train_command": ck.get("command", "")},
        "training": {"iterations": ck.get("iter", -1) + 1, "best_val_loss_estimate": ck.get("best_val"),
                     "hparams": hp},
        "metrics": {},
        "decoding_defaults": {"strategy": "sample", "temperature": 0.8, "top_k": 0, "top_p": 0.95},
        "context_length": cfg["block_size"],
    }


def _architecture(meta: dict, cfg: dict) -> dict:
    return {"family": "gpt", "n_layer": cfg["n_layer"], "n_head": cfg["n_head"],
            "n_embd": cfg["n_embd"], "head_dim": meta["head_dim"],
            "block_size": cfg["block_size"], "vocab_size": cfg["vocab_size"],
            "dropout": cfg["dropout"], "bias": cfg["bias"],
            "positional": "learned", "norm": "layernorm (pre-norm)",
            "tied_embeddings": True, "kv_cache": True}


_NUMBERS = dict(enumerate("zero one two three four five six seven eight nine ten".split()))


def _gutenberg_url(pg_number) -> str | None:
    return f"https://www.gutenberg.org/ebooks/{pg_number}" if pg_number else None


def build_bpe_card(meta: dict, ck: dict, *, model_id: str, name: str | None = None,
                   description: str | None = None, data_source: str | None = None,
                   export_command: str | None = None) -> dict:
    """The card of a byte-level BPE model (the tokenizer ships as ``tokenizer.json``)."""
    hp = ck.get("hparams", {})
    cfg = ck["config"]
    tok = ck["tokenizer"]
    docs = tok.get("documents", [])
    titles = [d.get("title") or d["file"] for d in docs]
    pg = [d["pg_number"] for d in docs if d.get("pg_number")]
    train_chars, val_chars = tok.get("train_chars", 0), tok.get("val_chars", 0)
    # token counts of the id streams (one <|endoftext|> before each document part included)
    train_tokens = tok.get("train_tokens", sum(d.get("train_tokens", 0) + 1 for d in docs))
    val_tokens = tok.get("val_tokens", sum(d.get("val_tokens", 0) + 1 for d in docs))
    n = _NUMBERS.get(len(docs), str(len(docs)))
    plural = "s" if len(docs) != 1 else ""
    data_name = (f"{n} Project Gutenberg book{plural}" if pg and len(pg) == len(docs)
                 else f"{n} text document{plural}")
    return {
        "id": model_id,
        "kind": "text",
        "name": name or "Gutenberg BPE GPT",
        "description": description or (
            f"A GPT ({meta['n_layer']} layers, {meta['n_head']} heads, {meta['n_embd']}-wide, "
            f"{meta['parameters'] / 1e6:.1f}M parameters) over a {cfg['vocab_size']}-token byte-level "
            f"BPE, trained on {data_name} ({'; '.join(string.capwords(t.lower()) for t in titles)}). It writes "
            f"novel-like English prose one sub-word token (about "
            f"{train_chars / max(1, train_tokens):.1f} characters) at a time; "
            f"{EOT} marks where a book starts."),
        "architecture": _architecture(meta, cfg),
        "parameters": meta["parameters"],
        "files": {"decoder": "model.onnx", "tokenizer": "tokenizer.json"},
        "io": {"inputs": input_names(meta["n_layer"]), "outputs": output_names(meta["n_layer"])},
        "tokenizer": {"type": "hf", "file": "tokenizer.json", "start_token": EOT, "eos_token": EOT,
                      "model": "byte-level BPE (Hugging Face tokenizers)",
                      "vocab_size": cfg["vocab_size"]},
        "data": {
            "name": data_name,
            "source": data_source or ("Project Gutenberg, https://www.gutenberg.org/ (eBooks "
                                      + ", ".join(f"#{n}" for n in pg) + ")" if pg else ck.get("data_path", "")),
            "path": ck.get("data_path", ""),
            "documents": [{**d, "url": _gutenberg_url(d.get("pg_number"))} for d in docs],
            "cleaning": ("UTF-8 BOM removed; CRLF line endings turned into LF; only the text between "
                         "the '*** START OF' and '*** END OF' lines kept (Project Gutenberg header, "
                         "licence and an 'End of Project Gutenberg's ...' line dropped); trailing "
                         "spaces and blank lines at both ends removed"),
            "split": ("per book: the first ~90% of its characters (cut at the nearest paragraph "
                      "break) train, the rest validation, so validation covers every book; each "
                      f"part is preceded by {EOT} in the token stream"),
            "tokenizer_training": (f"byte-level BPE (ByteLevel pre-tokenizer without prefix space, "
                                   f"256-byte initial alphabet, special token {EOT} = id "
                                   f"0, min frequency 2) trained on the training parts only"),
            "train_chars": train_chars, "val_chars": val_chars,
            "train_tokens": train_tokens, "val_tokens": val_tokens,
            "train_chars_per_token": round(train_chars / max(1, train_tokens), 4),
            "val_chars_per_token": round(val_chars / max(1, val_tokens), 4),
            "train_command": ck.get("command", ""),
            "export_command": export_command or "",
        },
        "training": {"iterations": ck.get("iter", -1) + 1, "best_val_loss_estimate": ck.get("best_val"),
                     "best_val_bits_per_char_estimate": (
                         round(ck["best_val"] / math.log(2) * val_tokens / val_chars, 4)
                         if ck.get("best_val") is not None and val_chars else None),
                     "hparams": hp},
        "metrics": {},
        "decoding_defaults": {"strategy": "sample", "temperature": 0.8, "top_k": 0, "top_p": 0.95},
        "context_length": cfg["block_size"],
    }


def write_tokenizer(ck: dict, path: Path) -> None:
    """Write the checkpoint's tokenizer.json (kept inside it; else copied from the run dir)."""
    tok = ck["tokenizer"]
    text = tok.get("json")
    if text is None:
        text = Path(tok["path"]).read_text(encoding="utf-8")
    atomic.write_text(path, text)


def export_checkpoint(ckpt_path: str | Path, out_dir: str | Path, *, model_id: str | None = None,
                      name: str | None = None, data_source: str | None = None,
                      export_command: str | None = None, char_data_source: str | None = None,
                      torch_exporter: bool = False, attention: str = "ops",
                      metrics_from: str | Path | None = None) -> dict:
    """Export ``ckpt_path`` to ``out_dir/model.onnx`` + ``out_dir/card.json`` (+ ``tokenizer.json``
    for a BPE model); return the card. ``char_data_source`` is the data source a char model's
    card names when ``data_source`` is None. ``metrics_from`` names an earlier card of the
    same checkpoint whose ``metrics`` the new card keeps."""
    out = Path(out_dir)
    model, ck = load_checkpoint(ckpt_path)
    kept_metrics = None
    if metrics_from is not None:  # read first: it may be the card this export overwrites
        kept_metrics = json.loads(Path(metrics_from).read_text(encoding="utf-8")).get("metrics") or {}
    meta = export_onnx(model, out / "model.onnx", torch_exporter=torch_exporter, attention=attention)
    if is_bpe(ck):
        write_tokenizer(ck, out / "tokenizer.json")
    elif data_source is None:
        data_source = char_data_source
    card = build_card(meta, ck, model_id=model_id or out.name, name=name, data_source=data_source,
                      export_command=export_command)
    if kept_metrics:
        card["metrics"] = kept_metrics
    atomic.write_json(out / "card.json", card)
    return card


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m engines.training.export_gpt",
                                description="Export a GPT checkpoint to ONNX (with KV cache) + card.json")
    p.add_argument("--ckpt", required=True, help="training checkpoint (ckpt.pt)")
    p.add_argument("--out", required=True, help="model folder to write model.onnx and card.json into")
    p.add_argument("--id", default=None, help="model id (default: the folder name)")
    p.add_argument("--name", default=None, help="display name")
    p.add_argument("--data-source", default=None,
                   help="where the training text came from (for the card; default: the Tiny Shakespeare "
                        "URL for char models, Project Gutenberg for BPE models)")
    p.add_argument("--attention", choices=ATTENTION_STYLES, default="ops",
                   help="attention in the built graph: 'ops' (standard ONNX operators, default) or 'mha' "
                        "(ONNX Runtime's com.microsoft MultiHeadAttention)")
    p.add_argument("--torch-exporter", action="store_true",
                   help="legacy: trace GPT.forward_with_past with torch.onnx.export instead of building the graph")
    p.add_argument("--metrics-from", default=None, metavar="CARD",
                   help="keep the 'metrics' of this earlier card.json of the same checkpoint")
    argv = list(sys.argv[1:] if argv is None else argv)
    args = p.parse_args(argv)
    command = " ".join(shlex.quote(a) for a in ["python", "-m", "engines.training.export_gpt"] + argv)
    card = export_checkpoint(args.ckpt, args.out, model_id=args.id, name=args.name,
                             data_source=args.data_source, export_command=command,
                             char_data_source=CHAR_DATA_SOURCE, torch_exporter=args.torch_exporter,
                             attention=args.attention, metrics_from=args.metrics_from)
    print(json.dumps({k: card[k] for k in ("id", "parameters", "architecture", "files", "context_length")}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
