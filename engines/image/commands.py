"""`chainrule generate image`, `score --image`, `eval` and `bench image` for Gated PixelCNN models."""

from __future__ import annotations

import argparse
import math
from typing import Any

import numpy as np

from engines import limits
from engines.cli import config_from_args
from engines.cli_common import (check_count, check_image_geometry, check_out_path, eval_size, print_model_and_seed,
                                print_notes, read_init_and_mask, refuse_overwriting_inputs, sample_paths)
from engines.decoding.config import DecodingConfig
from engines.errors import InputError
from engines.generation import resolve_seed
from engines.image.data import load_split
from engines.image.model import ImageModel, card_n_classes, load_image_model
from engines.image.png import read_image, write_image
from engines.image.sampler import (PixelSampler, card_guidance, check_config, check_guidance, posterior_resample,
                                   score_images)
from engines.progress import Progress
from engines.registry import ModelInfo

LN2 = math.log(2)
MAX_CANDIDATES = limits.MAX_CANDIDATES


def _pixels_json(pixels: np.ndarray) -> list:
    """(C, H, W) -> rows of values (grey) or rows of [r, g, b] (colour)."""
    return pixels[0].tolist() if pixels.shape[0] == 1 else pixels.transpose(1, 2, 0).tolist()


def _read_inputs(model: ImageModel, args: argparse.Namespace) -> tuple[np.ndarray | None, np.ndarray | None, list[str]]:
    """--init and --mask at the model's geometry: (pixels (C, H, W), mask (H, W)), or (None, None, [])."""
    s = model.shape
    return read_init_and_mask(args, channels=s.channels, height=s.height, width=s.width, levels=s.levels)


def candidates_config_problems(config: DecodingConfig) -> list[str]:
    """Settings that make posterior-aware completion wrong (empty when it is fine).

    It weights candidates by p(known after | candidate), which is only the right importance
    weight when candidates come from the model's own conditionals: temperature 1, no filters."""
    changed = []
    if config.is_greedy:
        changed.append("greedy decoding")
    elif config.temperature != 1:
        changed.append(f"temperature {config.temperature:g}")
    for name, label, off in (("top_k", "top-k", 0), ("top_p", "top-p", 1.0), ("min_p", "min-p", 0.0),
                             ("typical_p", "typical-p", 1.0)):
        value = getattr(config, name)
        if value != off and not (name == "top_k" and config.is_greedy):
            changed.append(f"{label} {value:g}")
    return changed


def check_candidates_config(config: DecodingConfig) -> None:
    changed = candidates_config_problems(config)
    if changed:
        flags = [c if c.startswith(("greedy", "temperature")) else f"--{c}" for c in changed]
        raise InputError(f"--candidates needs plain sampling (temperature 1, no top-k/top-p/min-p/typical-p); "
                         f"got {', '.join(flags)}: its weights are only right for samples from the model's own "
                         "conditionals (pass --temperature 1 and leave the filters off)")


def generate(args: argparse.Namespace, info: ModelInfo) -> dict[str, Any]:
    check_out_path(args.out)  # before any work: nothing computed is lost to a bad --out
    model = load_image_model(info)
    config = config_from_args(args, model.decoding_defaults)
    check_config(config)
    check_count(args.count, config.seed)
    if getattr(args, "ordering", None):
        raise InputError("--ordering is for density models; a PixelCNN samples in raster order")
    label = getattr(args, "label", None)
    model.label_value(label)  # refuse a bad label before any work
    candidates = getattr(args, "candidates", None)
    if candidates is not None:
        check_candidates_config(config)
    guidance = getattr(args, "guidance", None)
    if guidance is None:  # the card's default, toward a label; plain sampling without one
        guidance = card_guidance(info.card) if label is not None and candidates is None else 0.0
    guidance = check_guidance(model, guidance, label)
    if guidance > 0 and candidates is not None:
        raise InputError("--candidates weighs completions drawn from the model's own conditionals; with --guidance "
                         "they are not: use one or the other")
    # the step graphs are optional in a card: without them every pixel runs the full network (same samples)
    method = "fast" if model.has_fast_path else "naive"
    refuse_overwriting_inputs(args.out, args.count, {flag: getattr(args, flag, None) for flag in ("init", "mask")})
    init, mask, notes = _read_inputs(model, args)
    if candidates is not None:
        if mask is None:
            raise InputError("--candidates needs --init and --mask: it resamples completions by how well they "
                             "explain the known pixels that follow the masked ones")
        if not 1 <= candidates <= MAX_CANDIDATES:
            raise InputError(f"candidates = {candidates} is invalid: must be in 1..{MAX_CANDIDATES}")
    if guidance > 0:
        notes = [*notes, f"guidance {guidance:g}: samples follow log p(x|label) + {guidance:g} (log p(x|label) - "
                         "log p(x)); the log-probabilities reported are the unguided conditional model's"]
    print_notes(notes)
    seed = resolve_seed(config)
    s = model.shape
    settings = {**config.to_dict(), "seed": seed, "label": label, "init": getattr(args, "init", None),
                "mask": getattr(args, "mask", None), "candidates": candidates, "count": args.count, "method": method,
                "guidance": guidance}
    samples: list[dict[str, Any]] = []
    for i in range(args.count):
        sample_seed = seed + i  # each sample is reproducible on its own
        K = candidates or 1
        sampler = PixelSampler(model, config, sample_seed, label=label, init=init, mask=mask, batch=K,
                               method=method, distributions=False, guidance=guidance).run()
        posterior = None
        if candidates is not None:
            post = posterior_resample(model, sampler.images, mask, sample_seed, label, sampler.sampled_logprobs)
            image, k = post.image, post.chosen
            posterior = {
                "candidates": K, "chosen": k, "known_after_logprob": float(post.known_after_logprobs[k]),
                "candidate_known_after_logprobs": post.known_after_logprobs.tolist(),
                "weights": post.weights.tolist(), "log_evidence": post.log_evidence,
                "effective_sample_size": post.effective_sample_size, "n_known_after": post.n_known_after,
            }
        else:
            image, k = sampler.images[0], 0
        lp = score_images(model, image, label)[0]  # (C, H, W) exact conditionals of the final image
        total = float(lp.sum())
        sample = {
            "path": None, "total_logprob": total, "n": int(lp.size), "bits_per_dim": -total / LN2 / lp.size,
            "sampled_logprob": float(sampler.sampled_logprobs[k]), "n_sampled": sampler.n_sampled,
            "known_logprob": total - float(sampler.sampled_logprobs[k]) if mask is not None else 0.0,
            "seed": sample_seed, "label": label, "pixels": _pixels_json(image),
            "width": s.width, "height": s.height, "channels": s.channels, "levels": s.levels,
        }
        if posterior is not None:
            sample["posterior"] = posterior
        samples.append(sample)
        # written as soon as it is done: Ctrl-C or SIGTERM later loses none of the finished images
        sample["path"] = sample_paths(args.out, args.count)[i]
        if sample["path"] is not None:
            write_image(sample["path"], image, s.levels)
    return {"model": info.id, "seed": seed, "settings": settings, "notes": notes, "samples": samples}


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
    """Exact average NLL over a split of mnist.npz / binarized_mnist.npz (first --limit images, in order)."""
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
    n = eval_size(len(data.images), args)  # the first --limit images, in order
    images = data.images[:n]
    labels = data.labels[:n] if data.labels is not None else None
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
                  + (f", saved to {s['path']}" if s["path"] else ""))
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
