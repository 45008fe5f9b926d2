"""Export a trained Gated PixelCNN checkpoint to ONNX (masks baked into the weights) + card.json.

Three graphs, all float32 with a dynamic batch dimension B (shapes from the card's
architecture: C channels, H x W image, L layers, F filters, V outputs per channel):

``model.onnx`` (role ``model``): the whole network, for scoring and naive sampling
    inputs   ``pixels`` float32 (B, C, H, W) raw values 0..levels-1; ``label`` int64 (B,)
    outputs  ``logits`` float32 (B, H, W, C, V)
``row_step.onnx`` (role ``row_step``): the vertical stack for one row r (fast sampling)
    inputs   ``xwin`` (B, C, k0//2, W) image rows above r; ``vwin`` (B, L-1, F, k//2, W) cached
             vertical features of the rows above r; ``label`` int64 (B,)
    outputs  ``link`` (B, L, 2F, W) what each horizontal layer adds at row r;
             ``vrow`` (B, L-1, F, W) vertical features of row r (to cache)
``pixel_step.onnx`` (role ``pixel_step``): the horizontal stack and head at one pixel (r, c)
    inputs   ``xwin`` (B, C, k0//2 + 1) image row r, columns c-k0//2..c; ``hwin`` (B, L-1, F, k//2)
             cached horizontal features of the columns left of c; ``link`` (B, L, 2F) at column c
    outputs  ``logits`` (B, C, V); ``hcol`` (B, L-1, F) horizontal features at (r, c) (to cache)

V is 1 for a Bernoulli output (one logit per pixel: p(1) = sigmoid(logit)) and `levels` for a
categorical one. Run as::

    python -m engines.training.export_pixelcnn --ckpt runs/bmnist-pixelcnn/ckpt.pt --out assets/models/bmnist-pixelcnn
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

import torch

from engines import atomic
from engines.training.pixelcnn import PixelCNN, PixelCNNConfig, PixelStep, RowStep, baked_copy

OPSET = 17

IO = {
    "model": {"inputs": ["pixels", "label"], "outputs": ["logits"]},
    "row_step": {"inputs": ["xwin", "vwin", "label"], "outputs": ["link", "vrow"]},
    "pixel_step": {"inputs": ["xwin", "hwin", "link"], "outputs": ["logits", "hcol"]},
}
FILES = {"model": "model.onnx", "row_step": "row_step.onnx", "pixel_step": "pixel_step.onnx"}


def load_checkpoint(ckpt_path: str | Path) -> tuple[PixelCNN, dict]:
    ck = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    model = PixelCNN(PixelCNNConfig(**ck["config"]))
    model.load_state_dict(ck["model"])
    return model.eval(), ck


def example_inputs(cfg: PixelCNNConfig, batch: int = 2) -> dict[str, tuple[torch.Tensor, ...]]:
    """Example inputs of each graph (batch 2 so the batch dimension is traced as dynamic)."""
    B, C, H, W, L, Fn = batch, cfg.channels, cfg.height, cfg.width, cfg.n_layers, cfg.n_filters
    g = torch.Generator().manual_seed(0)
    label = torch.full((B,), cfg.none_label, dtype=torch.long)
    return {
        "model": (torch.randint(0, cfg.levels, (B, C, H, W), generator=g).float(), label),
        "row_step": (torch.randint(0, cfg.levels, (B, C, cfg.row_window, W), generator=g).float(),
                     torch.randn(B, L - 1, Fn, cfg.vertical_window, W, generator=g), label),
        "pixel_step": (torch.randint(0, cfg.levels, (B, C, cfg.pixel_window), generator=g).float(),
                       torch.randn(B, L - 1, Fn, cfg.horizontal_window, generator=g),
                       torch.randn(B, L, 2 * Fn, generator=g)),
    }


def _export(module: torch.nn.Module, args: tuple, path: Path, role: str, opset: int) -> None:
    names = IO[role]
    dynamic = {n: {0: "batch"} for n in names["inputs"] + names["outputs"]}
    with atomic.atomic_path(path) as tmp:  # an interrupted export leaves the old file or none
        stray = tmp.with_name(tmp.name + ".data")  # external data the exporter may write beside it
        try:
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.onnx.export(module.eval(), args, str(tmp), input_names=names["inputs"],
                                  output_names=names["outputs"], dynamic_axes=dynamic, opset_version=opset,
                                  do_constant_folding=True, dynamo=False)
            if stray.exists():  # keep the weights inside the one file
                import onnx

                m = onnx.load(str(tmp), load_external_data=True)
                onnx.save_model(m, str(tmp), save_as_external_data=False)
        finally:
            stray.unlink(missing_ok=True)


def export_onnx(model: PixelCNN, out_dir: str | Path, opset: int = OPSET) -> dict[str, Path]:
    """Write the three graphs into `out_dir` (masks folded into the weights); return role -> path."""
    baked = baked_copy(model)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ex = example_inputs(baked.config)
    modules = {"model": baked, "row_step": RowStep(baked), "pixel_step": PixelStep(baked)}
    paths = {}
    for role, module in modules.items():
        paths[role] = out / FILES[role]
        _export(module, ex[role], paths[role], role, opset)
    return paths


def architecture(cfg: PixelCNNConfig) -> dict:
    return {
        "family": "gated-pixelcnn", **cfg.to_dict(),
        "masks": "type A (layer 0) then B; vertical + horizontal stacks; baked into the weights",
        "row_window": cfg.row_window, "vertical_window": cfg.vertical_window,
        "pixel_window": cfg.pixel_window, "horizontal_window": cfg.horizontal_window,
        "none_label": cfg.none_label,
    }


def output_type(cfg: PixelCNNConfig) -> str:
    return "bernoulli" if cfg.output == "bernoulli" else f"categorical{cfg.levels}"


def build_card(model: PixelCNN, ck: dict, *, model_id: str, name: str | None = None, guidance: float = 0.0,
               description: str | None = None) -> dict:
    cfg = model.config
    data = ck.get("data", {})
    metrics_in = ck.get("metrics", {}) or {}
    metrics = {}
    for split in ("test", "val"):
        if split in metrics_in:
            m = metrics_in[split]
            metrics[f"{split}_nats_per_image"] = m["nats_per_image"]
            metrics[f"{split}_bits_per_dim"] = m["bits_per_dim"]
    binary = cfg.output == "bernoulli"
    kind_name = "binarized MNIST" if binary else "MNIST (256 grey levels)"
    conditioning = ({"type": "class", "num_classes": cfg.n_classes, "none_label": cfg.none_label,
                     "labels": [str(i) for i in range(cfg.n_classes)], "unconditional": True,
                     "note": "label none_label (or no --label) samples unconditionally"}
                    if cfg.n_classes else {"type": "none", "num_classes": 0, "none_label": 0, "unconditional": True})
    return {
        "id": model_id,
        "kind": "image",
        "name": name or f"Gated PixelCNN, {kind_name}",
        "description": description or (
            f"A Gated PixelCNN ({cfg.n_layers} layers, {cfg.n_filters} filters per stack, "
            f"{model.num_parameters() / 1e6:.2f}M parameters) trained on {kind_name}"
            f"{', conditioned on the digit' if cfg.n_classes else ''}. It draws {cfg.height}x{cfg.width} "
            "images one pixel at a time, in raster order."),
        "architecture": architecture(cfg),
        "parameters": model.num_parameters(),
        "files": dict(FILES),
        "io": IO,
        "image": {"height": cfg.height, "width": cfg.width, "channels": cfg.channels, "levels": cfg.levels,
                  "mode": "L" if cfg.channels == 1 else "RGB"},
        "output": output_type(cfg),
        "conditioning": conditioning,
        "data": {"name": kind_name, "source": data.get("path", ""), "kind": data.get("kind"),
                 "split": ("standard 50k/10k/10k" if binary else
                           "train: first 50000 of x_train; val: last 10000; test: x_test"),
                 "train_command": ck.get("command", "")},
        "training": {"iterations": ck.get("iter", -1) + 1, "best_val_nats_per_dim": ck.get("best_val"),
                     "trained_seconds": ck.get("trained_s"), "hparams": ck.get("hparams", {})},
        "metrics": metrics,
        "decoding_defaults": {"strategy": "sample", "temperature": 1.0},
        # classifier-free guidance a conditional model starts with (generate image --guidance; the Image tab);
        # chosen by `chainrule eval --task recognition` (README), 0 for unconditional models
        "guidance_default": float(guidance) if cfg.n_classes else 0.0,
    }


def export_checkpoint(ckpt_path: str | Path, out_dir: str | Path, *, model_id: str | None = None,
                      name: str | None = None, guidance: float = 0.0) -> dict:
    """Export `ckpt_path` to `out_dir` (three .onnx files + card.json); return the card."""
    out = Path(out_dir)
    model, ck = load_checkpoint(ckpt_path)
    export_onnx(model, out)
    card = build_card(model, ck, model_id=model_id or out.name, name=name, guidance=guidance)
    atomic.write_json(out / "card.json", card)
    return card


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m engines.training.export_pixelcnn",
                                description="Export a Gated PixelCNN checkpoint to ONNX (+ card.json)")
    p.add_argument("--ckpt", required=True, help="training checkpoint (ckpt.pt)")
    p.add_argument("--out", required=True, help="model folder to write the .onnx files and card.json into")
    p.add_argument("--id", default=None, help="model id (default: the folder name)")
    p.add_argument("--name", default=None, help="display name")
    p.add_argument("--guidance", type=float, default=0.0,
                   help="the classifier-free guidance a conditional model starts with (the card's guidance_default)")
    args = p.parse_args(argv)
    card = export_checkpoint(args.ckpt, args.out, model_id=args.id, name=args.name, guidance=args.guidance)
    print(json.dumps({k: card[k] for k in ("id", "parameters", "output", "conditioning", "files", "metrics")}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
