"""Export a trained NADE or MADE checkpoint to ONNX + card.json (the density-model folder layout).

NADE (``architecture.family == "nade"``), all float32 with a dynamic batch B:
``model.onnx`` (role ``model``): ``x`` (B, D) -> ``logits`` (B, D), every conditional
    p(x_d = 1 | x_<d) in raster order in one O(DH) pass.
``step.onnx`` (role ``step``): ``a`` (B, H), ``x_prev`` (B, 1), ``prev`` int64 (1,), ``d`` int64
    (1,) -> ``a_next`` = a + x_prev * W[:, prev] (B, H), ``logit`` (B, 1) of pixel d: O(H) per
    pixel for sampling. ``init_a.npy`` (role ``init_a``) holds the starting ``a`` (the bias c, (H,)).
MADE (``family == "made"``):
``model.onnx``: ``x`` (B, D), ``mask0`` (D, H1), ``mask1`` (H1, H2), ..., ``mask_direct`` (D, D)
    -> ``logits`` (B, D). The masks are inputs, so the one graph serves every ordering; the
    card lists the (ordering, seed) pairs trained over (`engines.density.orderings.made_masks`).

The folder is written to a temporary folder beside the target and renamed into place, so a
failed export never leaves half a model. Run as::

    python -m engines.training.export_density --ckpt runs/bmnist-nade/ckpt.pt --out assets/models/bmnist-nade
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch

from engines.errors import InputError
from engines.training.made import MADE, MADEGraph
from engines import atomic
from engines.training.nade import NADE, NADEStep

OPSET = 17
NADE_IO = {"model": {"inputs": ["x"], "outputs": ["logits"]},
           "step": {"inputs": ["a", "x_prev", "prev", "d"], "outputs": ["a_next", "logit"]}}
NADE_FILES = {"model": "model.onnx", "step": "step.onnx", "init_a": "init_a.npy"}
IMAGE = {"height": 28, "width": 28, "channels": 1, "levels": 2, "mode": "L"}


def made_io(model: MADE) -> dict:
    masks = [f"mask{i}" for i in range(model.n_weight_layers)] + ["mask_direct"]
    return {"model": {"inputs": ["x", *masks], "outputs": ["logits"]}}


def _onnx_export(module, args, path: Path, inputs, outputs, dynamic: dict) -> None:
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), args, str(path), input_names=inputs, output_names=outputs,
                          dynamic_axes=dynamic, opset_version=OPSET, do_constant_folding=True, dynamo=False)
    stray = path.with_name(path.name + ".data")
    if stray.exists():  # keep the weights inside the one file
        import onnx

        onnx.save_model(onnx.load(str(path), load_external_data=True), str(path), save_as_external_data=False)
        stray.unlink()


def _write_card(folder: Path, card: dict) -> None:
    atomic.write_json(folder / "card.json", card)


def _atomic_folder(out: Path, write) -> None:
    """Run write(tmp_folder), then put tmp_folder in place of `out` (replacing an old export)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = None
    try:
        with atomic.deferred_signals():  # no interrupt between "the folder exists" and "we know its name"
            tmp = Path(tempfile.mkdtemp(prefix=f".{out.name[:200]}.", dir=out.parent))
        tmp.chmod(0o755)  # mkdtemp makes it private; a model folder is readable like any other
        write(tmp)
        for f in tmp.iterdir():  # on disk before the rename: a crash cannot leave empty model files
            if f.is_file():
                atomic.fsync_file(f)
        old = None
        with atomic.deferred_signals():  # both renames or neither: never a moment with no model folder
            if out.exists():
                old = out.with_name(f".{out.name[:200]}.old-{os.getpid()}")
                os.replace(out, old)
            try:
                os.replace(tmp, out)
            except OSError:
                if old is not None:  # put the old export back rather than leave none
                    os.replace(old, out)
                raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        if tmp is not None:
            with atomic.deferred_signals():
                shutil.rmtree(tmp, ignore_errors=True)
        raise


def _common_card(meta: dict, *, model_id: str, family: str, parameters: int) -> dict:
    """The card fields NADE and MADE share; `meta` is the checkpoint dict (or a test's stand-in)."""
    data = meta.get("data", {}) or {}
    height, width = data.get("height", IMAGE["height"]), data.get("width", IMAGE["width"])
    return {
        "id": model_id,
        "kind": "density",
        "parameters": parameters,
        "image": {**IMAGE, "height": height, "width": width},
        "data": {"name": "binarized MNIST", "source": data.get("path", ""), "kind": data.get("kind", "binarized_mnist"),
                 "split": "standard 50k/10k/10k", "train_command": meta.get("command", "")},
        "training": {"iterations": meta.get("iter", -1) + 1, "best_val_nats_per_image": meta.get("best_val"),
                     "trained_seconds": meta.get("trained_s"), "hparams": meta.get("hparams", {}),
                     "final_eval": meta.get("metrics", {}) or {}},
        "decoding_defaults": {"strategy": "sample", "temperature": 1.0},
    }


def _metrics(meta: dict) -> dict:
    """Trainer-measured NLLs for the card (`chainrule eval` adds its own entries later)."""
    m = meta.get("metrics", {}) or {}
    out = {}
    for key, v in m.items():
        if isinstance(v, dict) and "nats_per_image" in v:
            out[f"{key}_nats_per_image"] = v["nats_per_image"]
            out[f"{key}_bits_per_dim"] = v["bits_per_dim"]
    if "default_k" in m:
        out["default_k"] = m["default_k"]
    return out


def export_nade(model: NADE, folder: str | Path, meta: dict | None = None, *, model_id: str | None = None) -> dict:
    """Write model.onnx, step.onnx, init_a.npy and card.json for `model` into `folder`; return the card."""
    meta = meta or {}
    folder = Path(folder)
    model = model.float().eval()
    B, D, H = 2, model.dims, model.hidden

    def write(tmp: Path) -> None:
        g = torch.Generator().manual_seed(0)
        x = (torch.rand(B, D, generator=g) < 0.5).float()
        _onnx_export(model, (x,), tmp / NADE_FILES["model"], ["x"], ["logits"], {"x": {0: "batch"}, "logits": {0: "batch"}})
        step_args = (torch.randn(B, H, generator=g), torch.ones(B, 1), torch.tensor([1]), torch.tensor([2]))
        _onnx_export(NADEStep(model), step_args, tmp / NADE_FILES["step"], *NADE_IO["step"].values(),
                     {"a": {0: "batch"}, "x_prev": {0: "batch"}, "a_next": {0: "batch"}, "logit": {0: "batch"}})
        np.save(tmp / NADE_FILES["init_a"], model.c.detach().numpy().astype(np.float32))
        _write_card(tmp, card)

    card = _common_card(meta, model_id=model_id or folder.name, family="nade", parameters=model.num_parameters())
    card = {**card, "name": "NADE, binarized MNIST",
            "description": (f"NADE (Larochelle & Murray 2011) with {H} hidden units, "
                            f"{model.num_parameters() / 1e6:.2f}M parameters, trained on binarized MNIST in raster "
                            "order: exact log-likelihood, every conditional in one pass, O(H) per sampled pixel."),
            "architecture": {"family": "nade", "dims": D, "hidden": H, "ordering": "raster"},
            "files": dict(NADE_FILES), "io": NADE_IO, "metrics": _metrics(meta)}
    _atomic_folder(folder, write)
    return card


def export_made(model: MADE, folder: str | Path, meta: dict | None = None, *, model_id: str | None = None) -> dict:
    """Write model.onnx (masks as inputs) and card.json for `model` into `folder`; return the card.

    meta["made"] gives n_masks, mask_seeds, orderings, default_k (a single raster mask set with
    seed 0 when absent).
    """
    meta = meta or {}
    folder = Path(folder)
    model = model.float().eval()
    made = meta.get("made") or {"n_masks": 1, "mask_seeds": [0], "orderings": ["raster"], "default_k": 1}
    io = made_io(model)
    D = model.dims

    def write(tmp: Path) -> None:
        from engines.density.orderings import made_masks, make_ordering

        g = torch.Generator().manual_seed(0)
        x = (torch.rand(2, D, generator=g) < 0.5).float()
        masks = [torch.from_numpy(m) for m in made_masks(make_ordering("raster", D), model.hidden, 0)]
        names = io["model"]["inputs"]
        _onnx_export(MADEGraph(model), (x, *masks), tmp / "model.onnx", names, ["logits"],
                     {"x": {0: "batch"}, "logits": {0: "batch"}})
        _write_card(tmp, card)

    card = _common_card(meta, model_id=model_id or folder.name, family="made", parameters=model.num_parameters())
    hidden = list(model.hidden)
    card = {**card, "name": "MADE, binarized MNIST",
            "description": (f"MADE (Germain et al. 2015) with hidden layers {hidden} and a direct input-output "
                            f"connection, {model.num_parameters() / 1e6:.2f}M parameters, trained order- and "
                            f"connectivity-agnostic over {made['n_masks']} masks on binarized MNIST. Exact "
                            "likelihood in any ordering; the default score is the mixture of the first "
                            f"{made['default_k']} masks."),
            "architecture": {"family": "made", "dims": D, "hidden": hidden, "direct_connection": True,
                             "n_masks": made["n_masks"], "mask_seeds": list(made["mask_seeds"]),
                             "orderings": list(made["orderings"]), "default_k": made["default_k"]},
            "files": {"model": "model.onnx"}, "io": io, "metrics": _metrics(meta)}
    _atomic_folder(folder, write)
    return card


def export_checkpoint(ckpt_path: str | Path, out_dir: str | Path, *, model_id: str | None = None,
                      name: str | None = None) -> dict:
    """Export a `chainrule train nade|made` checkpoint to `out_dir`; return the card."""
    ck = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    family = ck.get("family")
    if family == "nade":
        model = NADE(**ck["config"])
    elif family == "made":
        model = MADE(**ck["config"])
    else:
        raise InputError(f"{ckpt_path}: not a NADE or MADE checkpoint (family {family!r})")
    model.load_state_dict(ck["model"])
    exporter = export_nade if family == "nade" else export_made
    card = exporter(model, out_dir, ck, model_id=model_id)
    if name:
        card["name"] = name
        _write_card(Path(out_dir), card)
    return card


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m engines.training.export_density",
                                description="Export a NADE or MADE checkpoint to ONNX (+ card.json)")
    p.add_argument("--ckpt", required=True, help="training checkpoint (ckpt.pt)")
    p.add_argument("--out", required=True, help="model folder to write (replaced atomically)")
    p.add_argument("--id", default=None, help="model id (default: the folder name)")
    p.add_argument("--name", default=None, help="display name")
    args = p.parse_args(argv)
    card = export_checkpoint(args.ckpt, args.out, model_id=args.id, name=args.name)
    print(json.dumps({k: card[k] for k in ("id", "parameters", "architecture", "files", "metrics")}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
