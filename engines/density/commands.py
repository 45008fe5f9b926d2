"""`chainrule generate image`, `score --image`, `eval` and `bench density` for NADE and MADE models.

`generate image` parses its flags into an `engines.density.request.DensityRequest`
(`request_from_args`) and runs it with `generate_from_request`, which `chainrule generate --from
FILE` calls too: every PNG written carries the request of its own sample, so it is made again bit
for bit. The request module holds the rules (validation, orderings, the seed-per-sample rule).

The JSON keys are those of `engines.image.commands` (samples[i].path/total_logprob/n/
bits_per_dim/seed/pixels, score's total_logprob/per_element/logprob_map, eval's
nats_per_example/bits_per_dim/n_examples), so the studio and scripts treat PixelCNN and
density models alike. What only density models have is added under its own keys:
the ordering and MADE mask seed a sample was drawn with, and the ensemble size K.

Which log-likelihood is which, for MADE:
* `generate`: `total_logprob` is log p(image) under the mask set the image was sampled with
  (so total = sampled + known, exactly); `ensemble_logprob` is the mixture of the card's
  default K masks, the number `score` and `eval` report.
* `score` / `eval`: the mixture of K masks (`--ensemble K`, default: the card's). `score`'s
  `per_element` are the conditionals under the first training mask, or under `--ordering NAME`
  (`per_element_ordering`); they sum to `per_element_logprob` (= `total_logprob` when K = 1 and
  no other ordering is asked for).

Orderings on the command line: `--ordering random` without a seed is the card's first trained
random ordering (a MADE is only good in orderings like those it was trained on); any ordering
the card did not train is still exact, and a note on stderr says it was not trained.
"""

from __future__ import annotations

import argparse
import math
from typing import Any

import numpy as np

from engines.cli import config_from_args
from engines.cli_common import (check_count, check_image_geometry, check_out_path, eval_indices, eval_subset_label,
                                print_model_and_seed, print_notes, read_init_and_mask, refuse_overwriting_inputs,
                                sample_paths)
from engines.density import request as density_request
from engines.density.model import DensityModel, MadeModel, NadeModel, load_density_model
from engines.density.orderings import positions
from engines.density.request import (DensityDrawn, DensityRequest, DensitySample, DensityStarted, image_input,
                                     mask_input, ordering_label, resolve_ordering, run, sample_image)
from engines.density.sampling import DensityStep
from engines.errors import InputError, stopped_note
from engines.image.data import load_split
from engines.image.png import read_image
from engines.requests import embed_in_png, stamp
from engines.progress import Progress
from engines.registry import ModelInfo

LN2 = math.log(2)


def _read_inputs(model: DensityModel, args: argparse.Namespace) -> tuple[np.ndarray | None, np.ndarray | None, list[str]]:
    """--init and --mask -> (image (H, W) 0/1, regenerate (H, W) bool) or (None, None); notes on every conversion."""
    pixels, mask, notes = read_init_and_mask(args, channels=1, height=model.height, width=model.width, levels=2)
    if pixels is None:
        return None, None, notes
    return pixels[0], mask, notes


def _rows(flat: np.ndarray, model: DensityModel) -> list:
    return np.asarray(flat).reshape(model.height, model.width).tolist()


def request_from_args(args: argparse.Namespace, info: ModelInfo, model: DensityModel | None = None,
                      notes: list[str] | None = None) -> DensityRequest:
    """The DensityRequest `generate image --model <density model>` asks for (its init image and mask read,
    converted and carried by content; each conversion appended to `notes`). InputError / DecodingError
    in one line for anything the flags get wrong."""
    model = load_density_model(info) if model is None else model
    config = config_from_args(args, model.decoding_defaults)
    check_count(args.count, config.seed)
    if getattr(args, "label", None) is not None:
        raise InputError(f"{info.id} is an unconditional density model: it takes no label (leave --label out)")
    if getattr(args, "guidance", None):
        raise InputError(f"--guidance does not apply to {info.id}: an unconditional density model has no label to "
                         "guide toward")
    if getattr(args, "candidates", None) is not None:
        raise InputError("--candidates is for PixelCNN models; density models inpaint exactly without it "
                         "(MADE conditions on every known pixel)")
    refuse_overwriting_inputs(args.out, args.count, {flag: getattr(args, flag, None) for flag in ("init", "mask")})
    image, regenerate, read_notes = _read_inputs(model, args)
    if notes is not None:
        notes.extend(read_notes)
    init = mask = None
    if image is not None:
        init, mask = image_input(image, args.init), mask_input(regenerate, args.mask)
    return DensityRequest(model=info.id, decoding=config, count=args.count,
                          ordering=(getattr(args, "ordering", None) or "raster").strip(),
                          ensemble_k=getattr(args, "ensemble", None), init=init, mask=mask)


def generate(args: argparse.Namespace, info: ModelInfo) -> dict[str, Any]:
    check_out_path(args.out)  # before any work: nothing computed is lost to a bad --out
    model = load_density_model(info)
    notes: list[str] = []
    request = request_from_args(args, info, model, notes)
    scale = getattr(args, "scale", None)
    return generate_from_request(request, info, args.out, model=model, notes=notes,
                                 scale=1 if scale is None else scale)


def generate_from_request(request: DensityRequest, info: ModelInfo, out: str | None, *,
                          model: DensityModel | None = None, notes: list[str] | tuple = (),
                          scale: int = 1) -> dict[str, Any]:
    """Run `request` (engines.density.request.run) and write sample i to its --out path as soon as its
    group is drawn, as a PNG carrying `for_sample(i)`'s request (with `scale` > 1 also a nearest-neighbour
    NAME@{scale}x.png display copy carrying it too); the result dict (with "request")."""
    from engines.image.png import check_scale, scaled_path

    check_scale(scale)
    check_out_path(out)
    request = request.resolved()
    refuse_overwriting_inputs(out, request.count, {"init": request.init and request.init.path,
                                                   "mask": request.mask and request.mask.path})
    model = load_density_model(info) if model is None else model
    events = run(request, info, model=model)
    started = next(events)  # everything is checked before this: nothing is written on bad input
    notes = list(notes) + list(started.notes)
    print_notes(notes)
    seed, count = request.seed, request.count
    settings = {**request.decoding.to_dict(), "seed": seed, "ordering": started.ordering,
                "init": request.init and request.init.path, "mask": request.mask and request.mask.path,
                "count": count}
    paths = sample_paths(out, count)
    finished: list[np.ndarray] = []  # (D,) 0/1 images in sample order, added as each group is drawn
    written: list[str] = []
    samples: list[dict[str, Any]] = []
    reached = 0  # pixels of the running group sampled so far, in its ordering (for the note when stopped)

    def write_finished() -> None:  # each finished image to its --out path, carrying its own request
        while out is not None and len(written) < len(finished):
            i = len(written)
            image = sample_image(finished[i], model.height, model.width)
            stamped = stamp(request.for_sample(i).to_json(), info)
            embed_in_png(paths[i], image, stamped)
            if scale > 1:  # the display copy: nearest neighbour keeps every pixel a crisp square
                from PIL import Image

                big = image.resize((image.width * scale, image.height * scale), Image.Resampling.NEAREST)
                embed_in_png(scaled_path(paths[i], scale), big, stamped)
            written.append(paths[i])

    try:
        for event in events:
            if isinstance(event, DensityStep):
                reached = event.position + 1
            elif isinstance(event, DensityDrawn):
                finished.extend(event.images)
                write_finished()  # before scoring: an interrupt from here on keeps this group whole
            elif isinstance(event, DensitySample):
                samples.append(_sample_result(model, event, started, paths[event.index]))
    except KeyboardInterrupt as exc:  # Ctrl-C or SIGTERM: keep every finished sample, then stop
        kept = len(finished)
        if out is not None:
            write_finished()  # the rest of a group whose writing the interrupt cut short
        else:  # nothing on disk: the pictures on stdout are what the user keeps
            for i, image in enumerate(finished):
                print(f"--- sample {i + 1} (seed {seed + i})")
                print(ascii_art(_rows(image, model)))
        if kept:
            shown = ", ".join(written) if len(written) <= 3 else f"{written[0]} ... {written[-1]}"
            where = f"wrote the finished samples to {shown}" if out is not None else "printed the finished samples"
        else:
            n = min(density_request.SAMPLE_GROUP, count)
            where = (f"nothing was kept (stopped at pixel {reached} of {model.dims} of the {n} sample"
                     f"{'s' if n > 1 else ''} drawn together)")
        stopped_note(exc, f"after {kept} of {count} samples: {where}")
        raise
    return {"model": info.id, "seed": seed, "settings": settings, "notes": notes, "samples": samples,
            "request": request.to_json()}


def _sample_result(model: DensityModel, s: DensitySample, started: DensityStarted, path: str | None
                   ) -> dict[str, Any]:
    """The result entry of one finished sample, with its log-likelihoods."""
    completing = not started.pending.all()
    sample = {
        "path": path, "total_logprob": s.total_logprob, "n": model.dims,
        "bits_per_dim": -s.total_logprob / LN2 / model.dims, "sampled_logprob": s.sampled_logprob,
        "n_sampled": s.n_sampled, "known_logprob": s.total_logprob - s.sampled_logprob if completing else 0.0,
        "seed": s.seed, "label": None, "pixels": _rows(s.image, model),
        "width": model.width, "height": model.height, "channels": 1, "levels": 2,
        "family": model.family, "ordering": started.ordering,
        "inpainting": None if not completing else (
            "exact: known pixels first, then the unknown ones in the chosen ordering"
            if model.family == "made" else "exact: every known pixel precedes the masked ones in raster order"),
    }
    if isinstance(model, MadeModel):
        sample.update({"mask_seed": started.mask_seed, "ensemble_logprob": s.ensemble_logprob, "ensemble_k": s.k})
    return sample


def _ensemble_arg(model: DensityModel, args: argparse.Namespace) -> int:
    return model.check_k(getattr(args, "ensemble", None))


def score(args: argparse.Namespace, info: ModelInfo) -> dict[str, Any]:
    if getattr(args, "image", None) is None:
        raise InputError(f"{info.id} is a density (binary image) model: score it with --image PNG")
    for flag in ("label", "digit", "speaker"):
        if getattr(args, flag, None) is not None:
            raise InputError(f"{info.id} is an unconditional density model: leave --{flag} out")
    model = load_density_model(info, threads=None)
    k = _ensemble_arg(model, args)
    ordering_arg = getattr(args, "ordering", None)
    order_notes: list[str] = []
    if ordering_arg is not None:
        base, random_seed, order_notes = resolve_ordering(model, ordering_arg, what="its conditionals")
        order = model.ordering(base, random_seed)
        spec = ordering_label(base, random_seed)
    elif isinstance(model, MadeModel):
        order, spec = model.training_order(0), model.trained_orderings[0]
    else:
        order, spec = np.arange(model.dims), "raster"
    img = read_image(args.image, channels=1, height=model.height, width=model.width, levels=2)
    notes = img.notes + order_notes
    print_notes(notes)
    x = img.pixels.reshape(1, -1).astype(np.float32)
    per_mask = model.log_prob_per_mask(x, k)[:, 0]  # (K,)
    total = float(np.logaddexp.reduce(per_mask) - np.log(k)) if k > 1 else float(per_mask[0])
    if isinstance(model, NadeModel):
        lp = model.conditionals(x)[0]  # (D,) raster: the only ordering NADE has
    else:
        lp = model.conditionals(x, order)[0]  # (D,) under that ordering (its trained mask seed when it has one)
    pos = positions(order)  # (D,) place of each pixel in the ordering
    per_element = [{"row": d // model.width, "col": d % model.width, "channel": 0, "value": int(x[0, d]),
                    "logprob": float(lp[d]), "position": int(pos[d])} for d in range(model.dims)]
    result = {
        "model": info.id, "image": args.image, "label": None, "total_logprob": total, "n": model.dims,
        "bits_per_dim": -total / LN2 / model.dims, "nats_per_dim": -total / model.dims,
        "per_element": per_element, "logprob_map": _rows(lp, model), "notes": notes,
        "pixels": _rows(img.pixels.reshape(-1), model), "family": model.family,
        "per_element_ordering": spec, "per_element_logprob": float(lp.sum()),
    }
    if isinstance(model, MadeModel):
        result.update({"ensemble_k": k, "n_masks": model.n_masks, "single_mask_logprob": float(per_mask[0]),
                       "per_mask_logprob": per_mask.tolist(), "per_element_mask_seed": model.resolve(order)[1],
                       "per_element_ordering_trained": model.is_trained_ordering(order)})
    return result


def evaluate(args: argparse.Namespace, info: ModelInfo) -> dict[str, Any]:
    """Exact average NLL over a split of binarized_mnist.npz (all, the first --limit images or a seeded
    random --sample of them: `engines.cli_common.eval_indices`)."""
    task = getattr(args, "task", None)
    if task == "recognition":
        from engines.image.recognition import density_recognition

        return density_recognition(info, n=10 * (getattr(args, "seeds", None) or 10))
    if task not in (None, "likelihood"):
        raise InputError(f"--task {task} is for speech models; a density model measures likelihood or recognition")
    model = load_density_model(info, threads=None)
    k = _ensemble_arg(model, args)
    data = load_split(args.data, args.split)
    if data.levels != 2:
        raise InputError(f"{args.data} holds {data.levels}-level images but {info.id} models binary pixels: "
                         "use binarized_mnist.npz (0/1 pixels)")
    check_image_geometry(data.images, args.data, info.id, (1, model.height, model.width))
    images = data.images[eval_indices(len(data.images), args)]  # all, the first --limit, or --sample's draw
    n, D = len(images), model.dims
    totals = np.zeros(k, dtype=np.float64)  # sum over images of log p_k(x), per mask
    total_mix = 0.0
    progress = Progress(n, "eval")
    batch = model.eval_batch
    for i in range(0, n, batch):
        x = images[i:i + batch].reshape(-1, D).astype(np.float32)
        per = model.log_prob_per_mask(x, k)  # (K, B)
        totals += per.sum(axis=1)
        mix = per[0] if k == 1 else np.logaddexp.reduce(per, axis=0) - np.log(k)
        total_mix += float(mix.sum())
        progress.advance(len(x))
    progress.close()
    result = {
        "model": info.id, "data": args.data, "split": args.split, "nats_per_element": -total_mix / (n * D),
        "nats_per_example": -total_mix / n, "bits_per_dim": -total_mix / LN2 / (n * D), "n_examples": n,
        "n_dims": n * D, "conditioning": "none (unconditional)", "family": model.family,
        "subset": eval_subset_label(n, len(data.images), args),
    }
    if isinstance(model, MadeModel):
        result.update({
            "ensemble_k": k, "n_masks": model.n_masks,
            "nats_per_example_k1": -float(totals[0]) / n, "bits_per_dim_k1": -float(totals[0]) / LN2 / (n * D),
            "nats_per_example_per_mask": (-totals / n).tolist(),
        })
    return result


def ascii_art(rows: list) -> str:
    return "\n".join("".join("##" if v else "  " for v in row) for row in rows)


def print_result(command: str, result: dict[str, Any]) -> None:
    if result.get("task") == "recognition":
        from engines.image.recognition import print_recognition

        print_recognition(result)
        return
    if command == "generate":
        for i, s in enumerate(result["samples"]):
            head = f"--- sample {i + 1}" if len(result["samples"]) > 1 else "---"
            extra = ""
            if "ensemble_logprob" in s:
                extra = f"; mixture of {s['ensemble_k']} masks: {s['ensemble_logprob']:.2f} nats"
            print(f"{head}: log p(image) = {s['total_logprob']:.2f} nats ({s['bits_per_dim']:.4f} bits/dim) in "
                  f"{s['ordering']} order{extra}" + (f", saved to {s['path']}" if s["path"] else ""))
            if s["inpainting"]:
                print(f"inpainted {s['n_sampled']} pixels ({s['inpainting']}): log p(completion | known) = "
                      f"{s['sampled_logprob']:.2f} nats")
            print(ascii_art(s["pixels"]))
        print_model_and_seed(result)
    elif command == "score":
        k = f" (mixture of {result['ensemble_k']} masks)" if "ensemble_k" in result else ""
        print(f"log p(image) = {result['total_logprob']:.3f} nats{k} over {result['n']} pixels; "
              f"{result['bits_per_dim']:.4f} bits/dim")
    else:
        line = (f"{result['split']}: {result['nats_per_example']:.3f} nats/image, {result['bits_per_dim']:.4f} bits/dim "
                f"over {result['n_examples']} images")
        if "ensemble_k" in result:
            line += (f" (MADE mixture of K={result['ensemble_k']} of {result['n_masks']} masks; "
                     f"single mask: {result['nats_per_example_k1']:.3f} nats/image)")
        print(line)


def bench(args: argparse.Namespace) -> dict[str, Any]:
    from engines.density.bench import run_density_bench

    return run_density_bench(args.models_dir)


def bench_card_parts(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """model id -> its part of a `bench density` result: the nade_* figures go to the NADE model's
    card, the made_* ones to the MADE model's; the provider to both."""
    parts = {}
    for family in ("nade", "made"):
        model_id = result.get(f"{family}_model")
        if isinstance(model_id, str):
            parts[model_id] = {k: v for k, v in result.items()
                               if k.startswith(f"{family}_") or k == "provider"}
    return parts
