"""Export a trained WaveNet checkpoint to ONNX (four graphs) + card.json.

The graphs are written directly with ``onnx.helper`` (:mod:`engines.training.wavenet_onnx_graph`,
which documents their inputs and outputs and why the step graph is shaped as it is):

``model.onnx`` (role ``model``): the full network, for scoring, teacher forcing and naive sampling
    ``audio`` int64 (B, T), ``digit`` int64 (B,), ``speaker`` int64 (B,) -> ``logits`` (B, T, 256)
``prime.onnx`` (role ``prime``): every layer's input over a context, to fill the queues
    same inputs -> ``layer_inputs`` (L, B, T, R)
``cond.onnx`` (role ``cond``): once per run, ``digit``, ``speaker`` -> ``cond`` (2, L, B, G)
``step.onnx`` (role ``step``): Fast WaveNet, O(layers) per sample, up to ``--block`` samples per
    call (an ONNX Loop that draws each sample inside the graph from uniforms the host passes)
    ``sample``, ``past``, ``ring``, ``cond``, ``uniforms``, ``inv_temperature``, ``ring_slots``
    -> ``samples``, ``logits``, ``layer_inputs``, ``ring_out`` (shapes in wavenet_onnx_graph)

"none" is a value of each condition: digit ``n_digits`` and speaker ``len(speakers)`` (the card's
``architecture.none_digit`` / ``none_speaker``). Run as::

    python -m engines.training.export_wavenet --ckpt runs/fsdd-wavenet/ckpt.pt --out assets/models/fsdd-wavenet
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

import onnx
import torch

from engines.training.wavenet import WaveNet, WaveNetConfig
from engines import atomic
from engines.training.wavenet_onnx_graph import DEFAULT_BLOCK, cond_graph, full_graph, split_layers, step_block, step_graph

FILES = {"model": "model.onnx", "prime": "prime.onnx", "cond": "cond.onnx", "step": "step.onnx"}
IO = {
    "model": {"inputs": ["audio", "digit", "speaker"], "outputs": ["logits"]},
    "prime": {"inputs": ["audio", "digit", "speaker"], "outputs": ["layer_inputs"]},
    "cond": {"inputs": ["digit", "speaker"], "outputs": ["cond"]},
    "step": {"inputs": ["sample", "past", "ring", "cond", "uniforms", "inv_temperature", "ring_slots"],
             "outputs": ["samples", "logits", "layer_inputs", "ring_out"]},
}
LN2 = math.log(2)


def load_checkpoint(ckpt_path: str | Path) -> tuple[WaveNet, dict]:
    ck = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    model = WaveNet(WaveNetConfig(**ck["config"]))
    model.load_state_dict(ck["model"])
    return model.eval(), ck


def export_onnx(model: WaveNet, out_dir: str | Path, block: int = DEFAULT_BLOCK) -> dict[str, Path]:
    """Write the four graphs into `out_dir` (step.onnx for up to `block` samples per call); return role -> path."""
    state = {k: v.detach().float() for k, v in model.state_dict().items()}
    config = model.config.to_dict()
    graphs = {"model": full_graph(state, config), "prime": full_graph(state, config, output="layer_inputs"),
              "cond": cond_graph(state, config), "step": step_graph(state, config, block)}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for role, graph in graphs.items():
        paths[role] = out / FILES[role]
        with atomic.atomic_path(paths[role]) as tmp:  # an interrupted export leaves the old file or none
            onnx.save_model(graph, str(tmp))
    return paths


def architecture(cfg: WaveNetConfig, block: int = DEFAULT_BLOCK) -> dict[str, Any]:
    block = step_block(cfg.to_dict(), block)
    big, small = split_layers(cfg.dilations, block)
    return {
        "family": "wavenet", **cfg.to_dict(), "n_layers": cfg.n_layers, "dilations": cfg.dilations,
        "receptive_field": cfg.receptive_field, "none_digit": cfg.none_digit, "none_speaker": cfg.none_speaker,
        "gated_units": "tanh x sigmoid", "input": "mu-law classes (mu = 255), embedded",
        "conditioning": "global: digit and speaker embeddings add a per-layer bias; each may be none",
        "context_before_audio": "digital silence (mu-law class 128)",
        "step_block": block, "step_big_layers": big, "step_small_layers": small,
    }


def _metrics(ck: dict) -> dict[str, Any]:
    """The checkpoint's final evaluation (train_wavenet.final_evaluation) in `chainrule eval` form."""
    metrics_in = ck.get("metrics", {}) or {}
    data_path = (ck.get("data") or {}).get("path", "fsdd.npz")
    stem = Path(data_path).stem
    out = {}
    for split in ("test", "val"):
        m = metrics_in.get(split)
        if not m:
            continue
        nats = float(m["nats_per_sample"])
        n_samples, n_clips = int(m["n_samples"]), int(m["n_clips"])
        out[f"{stem}/{split}"] = {
            "nats_per_element": nats, "bits_per_dim": nats / LN2, "bits_per_sample": nats / LN2,
            "nats_per_example": nats * n_samples / n_clips, "n_examples": n_clips, "n_samples": n_samples,
            "conditioning": metrics_in.get("conditioning", "true digit and speaker"),
            "command": f"chainrule eval --model {{id}} --data {data_path} --split {split}",
            "measured_by": "the trainer's final evaluation of the checkpoint (same math as chainrule eval)",
        }
    return out


def build_card(model: WaveNet, ck: dict, *, model_id: str, name: str | None = None,
               description: str | None = None, block: int = DEFAULT_BLOCK) -> dict[str, Any]:
    cfg = model.config
    data = ck.get("data", {}) or {}
    metrics = {k: {**v, "command": v["command"].replace("{id}", model_id)} for k, v in _metrics(ck).items()}
    trained_s = ck.get("trained_s")
    return {
        "id": model_id,
        "kind": "audio",
        "name": name or "WaveNet, spoken digits (FSDD)",
        "description": description or (
            f"A WaveNet ({cfg.n_layers} dilated layers in {cfg.n_stacks} stacks, receptive field "
            f"{cfg.receptive_field} samples = {1000 * cfg.receptive_field / cfg.sample_rate:.0f} ms, "
            f"{model.num_parameters() / 1e6:.2f}M parameters) trained on the Free Spoken Digit Dataset. It speaks "
            f"one mu-law sample at a time at {cfg.sample_rate} Hz, conditioned on the digit and the speaker "
            "(either may be left unset)."),
        "architecture": architecture(cfg, block),
        "audio": {"sample_rate": cfg.sample_rate, "levels": cfg.levels, "encoding": "mu-law", "mu": cfg.levels - 1},
        "conditioning": {
            "digits": list(range(cfg.n_digits)), "none_digit": cfg.none_digit,
            "speakers": list(cfg.speakers), "none_speaker": cfg.none_speaker,
            "note": "leave --digit / --speaker out to generate without that condition",
        },
        "parameters": model.num_parameters(),
        "files": dict(FILES),
        "io": IO,
        "data": {"name": "Free Spoken Digit Dataset", "source": data.get("path", ""),
                 "split": "by take: test = takes 0-4, val = takes 5-9, train = takes 10-49 of every digit and speaker",
                 "train_clips": data.get("train_clips"), "train_samples": data.get("train_samples"),
                 "train_command": ck.get("command", "")},
        "training": {"iterations": ck.get("iter", -1) + 1,
                     "best_val_bits_per_sample": (ck["best_val"] / LN2 if isinstance(ck.get("best_val"), (int, float))
                                                  and math.isfinite(ck["best_val"]) else None),
                     "trained_seconds": trained_s, "hparams": ck.get("hparams", {})},
        "metrics": metrics,
        "decoding_defaults": {"strategy": "sample", "temperature": 1.0},
    }


def export_wavenet(model: WaveNet, folder: str | Path, meta: dict | None = None, *, model_id: str | None = None,
                   name: str | None = None, block: int = DEFAULT_BLOCK) -> dict[str, Any]:
    """Write `folder` (four .onnx graphs + card.json) for `model`; `meta` is the checkpoint dict
    (command, iter, metrics, data, ...) or any part of it. Returns the card."""
    folder = Path(folder)
    model = model.float().eval()
    export_onnx(model, folder, block)
    card = build_card(model, dict(meta or {}), model_id=model_id or folder.name, name=name, block=block)
    atomic.write_json(folder / "card.json", card)
    return card


def export_checkpoint(ckpt_path: str | Path, out_dir: str | Path, *, model_id: str | None = None,
                      name: str | None = None, block: int = DEFAULT_BLOCK) -> dict[str, Any]:
    model, ck = load_checkpoint(ckpt_path)
    return export_wavenet(model, out_dir, ck, model_id=model_id, name=name, block=block)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m engines.training.export_wavenet",
                                description="Export a WaveNet checkpoint to ONNX (+ card.json)")
    p.add_argument("--ckpt", required=True, help="training checkpoint (ckpt.pt)")
    p.add_argument("--out", required=True, help="model folder to write the .onnx files and card.json into")
    p.add_argument("--id", default=None, help="model id (default: the folder name)")
    p.add_argument("--name", default=None, help="display name")
    p.add_argument("--block", type=int, default=DEFAULT_BLOCK, help="samples per step.onnx call at most")
    args = p.parse_args(argv)
    card = export_checkpoint(args.ckpt, args.out, model_id=args.id, name=args.name, block=args.block)
    print(json.dumps({k: card[k] for k in ("id", "parameters", "files", "metrics")}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
