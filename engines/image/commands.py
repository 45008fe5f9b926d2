"""`chainrule generate image`, `score --image`, `eval` and `bench image` for Gated PixelCNN models.

`generate image` parses its flags into an `engines.image.request.ImageRequest` (`request_from_args`)
and runs it with `generate_from_request`, which `chainrule generate --from sample.png` calls too:
the request (validation, guidance default, notes, seed per sample) and its runner live in
engines/image/request.py, shared with the studio; this module only reads files, writes PNGs
(each carrying the request of its own sample) and prints."""

from __future__ import annotations

import argparse
import math
from typing import Any

import numpy as np

from engines.cli import config_from_args
from engines.cli_common import (check_count, check_image_geometry, check_out_path, eval_indices,
                                eval_subset_label, print_model_and_seed, print_notes, read_init_and_mask,
                                refuse_overwriting_inputs, sample_paths)
from engines.errors import InputError
from engines.image.data import load_split
from engines.image.model import card_n_classes, load_image_model, shape_from_card
from engines.image.png import check_scale, read_image, write_sample
from engines.image.request import ImageRequest, PixelArray, RunStarted, SampleDone, run
from engines.image.sampler import score_images
from engines.progress import Progress
from engines.registry import ModelInfo
from engines.requests import stamp

LN2 = math.log(2)


def _pixels_json(pixels: np.ndarray) -> list:
    """(C, H, W) -> rows of values (grey) or rows of [r, g, b] (colour)."""
    return pixels[0].tolist() if pixels.shape[0] == 1 else pixels.transpose(1, 2, 0).tolist()


def request_from_args(args: argparse.Namespace, info: ModelInfo) -> ImageRequest:
    """`generate image` flags as an ImageRequest: the card's decoding defaults overridden by the flags,
    --init and --mask read at the model's size (notes printed) and held by value in the request."""
    check_out_path(args.out)  # before any work: nothing computed is lost to a bad --out
    check_scale(_scale(args))
    config = config_from_args(args, info.card.get("decoding_defaults") or {})
    check_count(args.count, config.seed)
    if getattr(args, "ordering", None):
        raise InputError("--ordering is for density models; a PixelCNN samples in raster order")
    if getattr(args, "ensemble", None) is not None:
        raise InputError("--ensemble is for MADE density models (how many mask sets are mixed); a PixelCNN has one "
                         "network: leave --ensemble out")
    refuse_overwriting_inputs(args.out, args.count, {flag: getattr(args, flag, None) for flag in ("init", "mask")})
    s = shape_from_card(info.card)
    init, mask, notes = read_init_and_mask(args, channels=s.channels, height=s.height, width=s.width, levels=s.levels)
    print_notes(notes)
    return ImageRequest(
        model=info.id, decoding=config, count=args.count, label=getattr(args, "label", None),
        guidance=getattr(args, "guidance", None), candidates=getattr(args, "candidates", None),
        init=None if init is None else PixelArray.of(init),
        mask=None if mask is None else PixelArray.of(mask.astype(np.uint8)))


def generate(args: argparse.Namespace, info: ModelInfo) -> dict[str, Any]:
    request = request_from_args(args, info)
    return generate_from_request(request, info, args.out, scale=_scale(args))


def _scale(args: argparse.Namespace) -> int:
    """--scale N (1: no display copy when it is left out)."""
    scale = getattr(args, "scale", None)
    return 1 if scale is None else scale


def generate_from_request(request: ImageRequest, info: ModelInfo, out: str | None, *, scale: int = 1) -> dict[str, Any]:
    """Run `request` and write each sample to `out` (several: _1, _2 ...) as a PNG carrying the
    request that makes it alone (with `scale` > 1 also a NAME@{scale}x.png display copy beside it);
    the result dict `chainrule generate` prints (the keys of before, plus "request")."""
    check_out_path(out)
    check_scale(scale)
    paths = sample_paths(out, request.count)
    samples: list[dict[str, Any]] = []
    started = None
    for ev in run(request, info):
        if isinstance(ev, RunStarted):
            started = ev
            print_notes(ev.notes)
        elif isinstance(ev, SampleDone):
            sample = _sample_json(ev, started.request)
            samples.append(sample)
            # written as soon as it is done: Ctrl-C or SIGTERM later loses none of the finished images
            path = paths[ev.sample]
            if path is not None:
                display = write_sample(path, ev.image, sample["levels"], stamp(ev.request.to_json(), info), scale)
                sample["path"] = path
                if display is not None:
                    sample["display_path"] = display
    resolved = started.request
    settings = {**resolved.decoding.to_dict(), "label": resolved.label, "candidates": resolved.candidates,
                "init": None if resolved.init is None else resolved.init.sha256,
                "mask": None if resolved.mask is None else resolved.mask.sha256,
                "count": resolved.count, "method": started.method, "guidance": resolved.guidance}
    return {"model": info.id, "seed": resolved.seed, "settings": settings, "notes": list(started.notes),
            "samples": samples, "request": resolved.to_json()}


def _sample_json(ev: SampleDone, request: ImageRequest) -> dict[str, Any]:
    """One finished sample as `generate`'s JSON reports it."""
    c, h, w = ev.image.shape
    sample = {
        "path": None, "total_logprob": ev.total_logprob, "n": ev.n, "bits_per_dim": ev.bits_per_dim,
        "sampled_logprob": ev.sampled_logprob, "n_sampled": ev.n_sampled,
        "known_logprob": ev.total_logprob - ev.sampled_logprob if request.mask is not None else 0.0,
        "seed": ev.seed, "label": request.label, "pixels": _pixels_json(ev.image),
        "width": w, "height": h, "channels": c, "levels": ev.levels,
    }
    if ev.candidates is not None:
        k = ev.chosen
        sample["posterior"] = {
            "candidates": len(ev.candidates), "chosen": k, "known_after_logprob": float(ev.known_after_logprobs[k]),
            "candidate_known_after_logprobs": ev.known_after_logprobs.tolist(),
            "weights": ev.weights.tolist(), "log_evidence": ev.log_evidence,
            "effective_sample_size": ev.effective_sample_size, "n_known_after": ev.n_known_after,
        }
    return sample


def score(args: argparse.Namespace, info: ModelInfo) -> dict[str, Any]:
    if getattr(args, "image", None) is None:
        raise InputError(f"{info.id} is an image model: score it with --image PNG")
    model = load_image_model(info, threads=None)
    label = getattr(args, "label", None)
    model.label_value(label)
    s = model.shape
    img = read_image(args.image, channels=s.channels, height=s.height, width=s.width, levels=s.levels)
    print_notes(img.notes)
    lp = score_images(model, img.pixels, label)[0]  # (C, H, W)
    total = float(lp.sum())
    per_element = [
        {"row": r, "col": c, "channel": ch, "value": int(img.pixels[ch, r, c]), "logprob": float(lp[ch, r, c])}
        for r in range(s.height) for c in range(s.width) for ch in range(s.channels)
    ]
    return {
        "model": info.id, "image": args.image, "label": label, "total_logprob": total, "n": int(lp.size),
        "bits_per_dim": -total / LN2 / lp.size, "nats_per_dim": -total / lp.size,
        "per_element": per_element, "logprob_map": lp.sum(axis=0).tolist(), "notes": img.notes,
        "pixels": _pixels_json(img.pixels),
    }


def evaluate(args: argparse.Namespace, info: ModelInfo) -> dict[str, Any]:
    """Exact average NLL over a split of mnist.npz / binarized_mnist.npz (all, the first --limit images or a
    seeded random --sample of them: `engines.cli_common.eval_indices`)."""
    task = getattr(args, "task", None)
    if task == "recognition":
        from engines.image.recognition import pixelcnn_recognition

        if args.data is not None and card_n_classes(info.card) == 0:  # completions need labels to ask for
            raise InputError(f"--data does not apply to --task recognition of {info.id}, an unconditional image "
                             "model: its recognition reads only its own samples (test images are completed for "
                             "label-conditioned models only); leave --data out")
        per_digit = getattr(args, "seeds", None) or 10
        progress = Progress(per_digit * 10 * 4, "recognise")
        result = pixelcnn_recognition(info, per_digit=per_digit, data=args.data, progress=progress)
        progress.close()
        return result
    if task not in (None, "likelihood"):
        raise InputError(f"--task {task} is for speech models; an image model measures likelihood or recognition")
    model = load_image_model(info, threads=None, fast=False)
    data = load_split(args.data, args.split)
    s = model.shape
    if data.levels != s.levels:
        want = "binarized_mnist.npz (0/1 pixels)" if s.levels == 2 else f"data with {s.levels} levels (mnist.npz)"
        raise InputError(f"{args.data} holds {data.levels}-level images but {info.id} models {s.levels} levels: use {want}")
    check_image_geometry(data.images, args.data, info.id, (s.channels, s.height, s.width))
    chosen = eval_indices(len(data.images), args)  # ascending: all, the first --limit, or --sample's draw
    images = data.images[chosen]
    labels = data.labels[chosen] if data.labels is not None else None
    conditional = model.n_classes > 0 and labels is not None
    if conditional and (labels.min() < 0 or labels.max() >= model.n_classes):
        raise InputError(f"{args.data}: labels outside 0..{model.n_classes - 1}")
    lab = labels if conditional else np.full(len(images), model.none_label, dtype=np.int64)
    batch = 100
    total = 0.0
    progress = Progress(len(images), "eval")
    for i in range(0, len(images), batch):
        lp = score_images(model, images[i:i + batch], labels=lab[i:i + batch])
        total += float(lp.sum())
        progress.advance(len(lp))
    progress.close()
    n, dims = len(images), s.dims
    return {
        "model": info.id, "data": args.data, "split": args.split, "nats_per_element": -total / (n * dims),
        "nats_per_example": -total / n, "bits_per_dim": -total / LN2 / (n * dims), "n_examples": n,
        "n_dims": n * dims, "conditioning": "true labels" if conditional else "none (unconditional)",
        "subset": eval_subset_label(n, len(data.images), args),
    }


_SHADES = " .:-=+*#%@"


def ascii_art(pixels: list, levels: int) -> str:
    a = np.asarray(pixels, dtype=np.float64)
    if a.ndim == 3:
        a = a.mean(axis=2)
    idx = np.round(a / max(1, levels - 1) * (len(_SHADES) - 1)).astype(int)
    return "\n".join("".join(_SHADES[i] * 2 for i in row) for row in idx)


def print_result(command: str, result: dict[str, Any]) -> None:
    if result.get("task") == "recognition":
        from engines.image.recognition import print_recognition

        print_recognition(result)
        return
    if command == "generate":
        for i, s in enumerate(result["samples"]):
            head = f"--- sample {i + 1}" if len(result["samples"]) > 1 else "---"
            print(f"{head}: log p(image) = {s['total_logprob']:.2f} nats ({s['bits_per_dim']:.4f} bits/dim)"
                  + (f", saved to {s['path']}" if s["path"] else "")
                  + (f" (and {s['display_path']})" if s.get("display_path") else ""))
            print(ascii_art(s["pixels"], s["levels"]))
            if "posterior" in s:
                p = s["posterior"]
                print(f"posterior-aware: candidate {p['chosen'] + 1} of {p['candidates']}, log p(known pixels after the mask) "
                      f"= {p['known_after_logprob']:.2f} nats; log evidence {p['log_evidence']:.2f}; "
                      f"effective sample size {p['effective_sample_size']:.1f}")
        print_model_and_seed(result)
    elif command == "score":
        print(f"log p(image) = {result['total_logprob']:.3f} nats over {result['n']} values; "
              f"{result['bits_per_dim']:.4f} bits/dim")
    else:
        print(f"{result['split']}: {result['nats_per_example']:.3f} nats/image, {result['bits_per_dim']:.4f} bits/dim "
              f"over {result['n_examples']} images (conditioning: {result['conditioning']})")


def bench(args: argparse.Namespace) -> dict[str, Any]:
    from engines.image.bench import run_image_bench

    return run_image_bench(args.models_dir)


def bench_card_parts(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """model id -> its part of a `bench image` result: the first model's figures, and each of `others`."""
    parts = {result["model"]: {k: v for k, v in result.items() if k != "others"}}
    for model_id, other in (result.get("others") or {}).items():
        parts[model_id] = other
    return parts
