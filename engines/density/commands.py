"""`chainrule generate image`, `score --image`, `eval` and `bench density` for NADE and MADE models.

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
from engines.cli_common import (check_count, check_image_geometry, check_out_path, eval_size, print_model_and_seed,
                                print_notes, read_init_and_mask, refuse_overwriting_inputs, sample_paths)
from engines.decoding.config import DecodingConfig
from engines.density.model import DensityModel, MadeModel, NadeModel, load_density_model
from engines.density.orderings import positions
from engines.density.sampling import DensityDone, sample_events
from engines.errors import DecodingError, InputError, stopped_note
from engines.generation import resolve_seed
from engines.image.data import load_split
from engines.image.png import read_image, write_image
from engines.progress import Progress
from engines.registry import ModelInfo

LN2 = math.log(2)
# Samples drawn together (one model run per pixel serves them all). A --count above it is drawn in
# groups of this size, each written (or kept for printing) as soon as it is finished: Ctrl-C or
# SIGTERM then keeps every finished group and loses at most the one being drawn. Up to here a larger
# batch is much cheaper per sample (MADE on 2 cores: 2.2 s for 1 sample, 9.5 s for 128); beyond it,
# a little (512 samples as 2 groups took about 11% longer than as one). The samples are the same:
# sample i draws from seed + i whatever group it is in.
SAMPLE_GROUP = 256


def check_config(config: DecodingConfig) -> float:
    """The temperature to sample with; DecodingError for settings a binary pixel cannot use."""
    if config.strategy == "beam":
        raise DecodingError("strategy = 'beam' is not available for density models: pixels are sampled one at a "
                            "time (use --strategy sample or greedy)")
    default = DecodingConfig()
    for name, flag in (("top_p", "top-p"), ("min_p", "min-p"), ("typical_p", "typical-p"),
                       ("repetition_penalty", "repetition-penalty"), ("no_repeat_ngram", "no-repeat-ngram")):
        if getattr(config, name) != getattr(default, name):
            raise DecodingError(f"{flag} has no effect on a black-or-white pixel; density models take only "
                                "--temperature and --strategy greedy|sample")
    if config.top_k not in (0, 1, 2):
        raise DecodingError(f"top-k = {config.top_k} is invalid for binary pixels: use 1 (greedy) or 0 (off)")
    return 0.0 if config.is_greedy else float(config.temperature)


def _ordering_spec(model: DensityModel, name: str | None, what: str = "samples"
                   ) -> tuple[str, int, list[str]]:
    """(ordering name for the engine, random seed, notes) from --ordering NAME | random | random:SEED.

    `random` without a seed is the card's first trained random ordering; an ordering the card did not
    train gets a note (exact, but `what` may be poorer). InputError when unknown."""
    name = (name or "raster").strip()
    base, sep, seed_text = name.partition(":")
    random_seed = 0
    if sep:
        if base != "random":
            raise InputError(f"ordering {name!r}: only 'random' takes a seed (random:SEED)")
        try:
            random_seed = int(seed_text)
        except ValueError:
            raise InputError(f"ordering {name!r}: the seed after 'random:' must be a whole number") from None
        if random_seed < 0:
            raise InputError(f"ordering {name!r}: the seed must be >= 0")
    if base not in model.orderings():
        if model.family == "nade" and base in ("reverse", "column", "random"):
            raise InputError(f"NADE model {model.id!r} is trained in raster order only, not {base!r}; "
                             "use a MADE model for reverse, column or random orderings")
        raise InputError(f"unknown ordering {name!r}; {model.id} offers: {', '.join(model.orderings())}"
                         + (" (random takes a seed: random:SEED)" if "random" in model.orderings() else ""))
    if base == "random" and not sep:
        trained = model.trained_random_seed()
        random_seed = trained if trained is not None else 0
    notes = []
    if not model.is_trained_ordering(model.ordering(base, random_seed)):
        trained_specs = list(dict.fromkeys(getattr(model, "trained_orderings", ("raster",))))
        shown = ", ".join(trained_specs[:6]) + (", ..." if len(trained_specs) > 6 else "")
        notes.append(f"ordering {_ordering_label(base, random_seed)}: exact, but this ordering was not trained; "
                     f"{what} may be poorer ({model.id} was trained on {shown})")
    return base, random_seed, notes


def _ordering_label(base: str, random_seed: int) -> str:
    return f"random:{random_seed}" if base == "random" else base


def _read_inputs(model: DensityModel, args: argparse.Namespace) -> tuple[np.ndarray | None, np.ndarray | None, list[str]]:
    """--init and --mask -> (image (D,) 0/1, regenerate (D,) bool) or (None, None); notes on every conversion."""
    pixels, mask, notes = read_init_and_mask(args, channels=1, height=model.height, width=model.width, levels=2)
    if pixels is None:
        return None, None, notes
    return pixels.reshape(-1), mask.reshape(-1), notes  # (1, H, W) and (H, W) -> raster order (D,)


def _rows(flat: np.ndarray, model: DensityModel) -> list:
    return np.asarray(flat).reshape(model.height, model.width).tolist()


def generate(args: argparse.Namespace, info: ModelInfo) -> dict[str, Any]:
    check_out_path(args.out)  # before any work: nothing computed is lost to a bad --out
    model = load_density_model(info)
    config = config_from_args(args, model.decoding_defaults)
    temperature = check_config(config)
    check_count(args.count, config.seed)
    if getattr(args, "label", None) is not None:
        raise InputError(f"{info.id} is an unconditional density model: it takes no label (leave --label out)")
    if getattr(args, "guidance", None):
        raise InputError(f"--guidance does not apply to {info.id}: an unconditional density model has no label to "
                         "guide toward")
    if getattr(args, "candidates", None) is not None:
        raise InputError("--candidates is for PixelCNN models; density models inpaint exactly without it "
                         "(MADE conditions on every known pixel)")
    order_name, random_seed, order_notes = _ordering_spec(model, getattr(args, "ordering", None))
    refuse_overwriting_inputs(args.out, args.count, {flag: getattr(args, flag, None) for flag in ("init", "mask")})
    init, regenerate, notes = _read_inputs(model, args)
    notes = notes + order_notes
    known_mask = None if regenerate is None else ~regenerate
    seed = resolve_seed(config)
    groups = [(start, min(SAMPLE_GROUP, args.count - start)) for start in range(0, args.count, SAMPLE_GROUP)]

    def group_events(start: int, n: int):
        return sample_events(model, order_name=order_name, seed=seed + start, count=n, known=init,
                             known_mask=known_mask, random_seed=random_seed, temperature=temperature)

    first = group_events(*groups[0])  # checks everything before any sampling
    print_notes(notes)
    ordering = _ordering_label(order_name, random_seed)
    settings = {**config.to_dict(), "seed": seed, "ordering": ordering, "init": getattr(args, "init", None),
                "mask": getattr(args, "mask", None), "count": args.count}
    n_sampled = int(model.dims - (0 if known_mask is None else known_mask.sum()))
    paths = sample_paths(args.out, args.count)
    finished: list[np.ndarray] = []  # (D,) 0/1 images in sample order, added as each group completes
    written: list[str] = []
    samples: list[dict[str, Any]] = []
    reached = 0  # pixels of the running group sampled so far, in its ordering (for the note when stopped)

    def write_finished() -> None:  # each finished image to its --out path, as soon as it is finished
        while args.out is not None and len(written) < len(finished):
            i = len(written)
            write_image(paths[i], finished[i].reshape(1, model.height, model.width), 2)
            written.append(paths[i])

    try:
        for g, (start, n) in enumerate(groups):
            done = None
            for event in first if g == 0 else group_events(start, n):
                if isinstance(event, DensityDone):
                    done = event
                else:
                    reached = event.position + 1
            finished.extend(done.images)
            write_finished()  # before scoring: an interrupt from here on keeps this group whole
            samples += _scored_samples(model, done, start, seed, ordering, known_mask, n_sampled, paths)
    except KeyboardInterrupt as exc:  # Ctrl-C or SIGTERM: keep every finished sample, then stop
        kept = len(finished)
        if args.out is not None:
            write_finished()  # the rest of a group whose writing the interrupt cut short
        else:  # nothing on disk: the pictures on stdout are what the user keeps
            for i, image in enumerate(finished):
                print(f"--- sample {i + 1} (seed {seed + i})")
                print(ascii_art(_rows(image, model)))
        if kept:
            shown = ", ".join(written) if len(written) <= 3 else f"{written[0]} ... {written[-1]}"
            where = f"wrote the finished samples to {shown}" if args.out is not None else "printed the finished samples"
        else:
            n = groups[0][1]
            where = (f"nothing was kept (stopped at pixel {reached} of {model.dims} of the {n} sample"
                     f"{'s' if n > 1 else ''} drawn together)")
        stopped_note(exc, f"after {kept} of {args.count} samples: {where}")
        raise
    return {"model": info.id, "seed": seed, "settings": settings, "notes": notes, "samples": samples}


def _scored_samples(model: DensityModel, done: DensityDone, start: int, seed: int, ordering: str,
                    known_mask: np.ndarray | None, n_sampled: int, paths: list) -> list[dict[str, Any]]:
    """The result entries of one group of finished samples (sample `start` + i), with their log-likelihoods."""
    images = done.images.astype(np.float32)  # (n, D)
    cond = model.conditionals(images, done.order, done.mask_seed)  # (n, D) under the sampling ordering
    ensemble = model.log_prob(images) if isinstance(model, MadeModel) else None
    samples = []
    for i in range(len(images)):
        total = float(cond[i].sum())
        sampled = float(done.sampled_logprob[i])
        sample = {
            "path": paths[start + i], "total_logprob": total, "n": model.dims,
            "bits_per_dim": -total / LN2 / model.dims, "sampled_logprob": sampled, "n_sampled": n_sampled,
            "known_logprob": total - sampled if known_mask is not None else 0.0,
            "seed": seed + start + i, "label": None, "pixels": _rows(done.images[i], model),
            "width": model.width, "height": model.height, "channels": 1, "levels": 2,
            "family": model.family, "ordering": ordering,
            "inpainting": None if known_mask is None else (
                "exact: known pixels first, then the unknown ones in the chosen ordering"
                if model.family == "made" else "exact: every known pixel precedes the masked ones in raster order"),
        }
        if ensemble is not None:
            sample.update({"mask_seed": done.mask_seed, "ensemble_logprob": float(ensemble[i]),
                           "ensemble_k": model.default_k})
        samples.append(sample)
    return samples


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
        base, random_seed, order_notes = _ordering_spec(model, ordering_arg, what="its conditionals")
        order = model.ordering(base, random_seed)
        spec = _ordering_label(base, random_seed)
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
    """Exact average NLL over a split of binarized_mnist.npz (first --limit images, in order)."""
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
    images = data.images[:eval_size(len(data.images), args)]  # the first --limit images, in order
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
