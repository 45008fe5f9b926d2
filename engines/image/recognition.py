"""`chainrule eval --task recognition`: how the image recogniser reads a model's samples.

A likelihood alone does not say whether samples look like digits; the MNIST recogniser
(`engines.recognise`, 99.4% on real test digits) is the instrument. For a label-conditioned
PixelCNN:

* ``conditional``: `per_digit` samples of every digit (seeds 0..per_digit-1) at the card's
  default decoding settings, with no guidance and with the default guidance (`guidance`):
  the share read as the digit asked for, and the mean confidence of the recogniser;
* ``completion``: the bottom half of `per_digit` test images of every digit (the first of
  each digit in the test split) completed given the top half and the true label, plainly
  and posterior-aware (`candidates` completions weighed by how well they explain the known
  pixels after the mask; for a bottom half there are none, so the weights are uniform and
  the two agree up to sampling noise): the share read as the true digit;
* ``inpainting``: the same images with a band across the middle (rows 9-18) regenerated,
  where known pixels DO follow the mask, plainly and posterior-aware: the case the
  posterior-aware mode exists for, measured so the tab's default can follow the numbers.

For an unconditional model (binarized PixelCNN, NADE, MADE): `n_unconditional` samples, the
recogniser's mean confidence, and how the predicted digits spread over 0-9 (a good model
draws all ten: `digits_drawn`, and the entropy of the predicted-digit histogram in bits,
log2(10) = 3.32 for a perfectly even spread).
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np

from engines.errors import InputError

DIGIT_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
DEFAULT_GUIDANCE = 3.0


def _judge():
    from engines.recognise import default_judge

    judge = default_judge("image")
    if judge is None:
        raise InputError("no image recogniser is installed (mnist-recogniser): it judges what the samples show")
    return judge


def _spread(labels: np.ndarray, confidences: np.ndarray) -> dict[str, Any]:
    counts = np.bincount(labels, minlength=10)[:10]
    p = counts / max(1, counts.sum())
    entropy = float(-(p[p > 0] * np.log2(p[p > 0])).sum())
    return {"mean_confidence": float(np.mean(confidences)), "digits_drawn": int((counts > 0).sum()),
            "digit_entropy_bits": entropy, **{f"read_as_{DIGIT_NAMES[d]}": int(c) for d, c in enumerate(counts)}}


def _read(judge, images: np.ndarray, levels: int) -> tuple[np.ndarray, np.ndarray]:
    verdicts = judge.judge(np.asarray(images).reshape(len(images), 28, 28), levels=levels)
    return np.array([v.label for v in verdicts]), np.array([v.probability for v in verdicts])


def pixelcnn_recognition(info, *, per_digit: int = 10, data: str | None = None, guidance: float | None = None,
                         candidates: int = 8, progress=None) -> dict[str, Any]:
    """The figures of the module doc for an image (PixelCNN) model."""
    from engines.decoding.config import DecodingConfig
    from engines.image.data import load_split
    from engines.image.model import load_image_model
    from engines.image.sampler import PixelSampler, posterior_resample

    judge = _judge()
    model = load_image_model(info)
    s = model.shape
    if (s.height, s.width, s.channels) != (28, 28, 1):
        raise InputError(f"{info.id} draws {s.width}x{s.height}x{s.channels} images; the recogniser reads 28x28 grey")
    config = DecodingConfig.from_dict(dict(model.decoding_defaults or {}))
    t0 = time.perf_counter()
    out: dict[str, Any] = {"model": info.id, "task": "recognition", "judge": judge.id, "settings": str(config.to_dict())}
    if model.n_classes == 0:
        images = np.concatenate([PixelSampler(model, config, seed, batch=1).run().images
                                 for seed in range(per_digit * 10)])
        labels, conf = _read(judge, images, s.levels)
        out.update({"n_samples": len(images), **_spread(labels, conf)})
    else:
        from engines.image.sampler import card_guidance

        w = guidance if guidance is not None else (card_guidance(info.card) or DEFAULT_GUIDANCE)
        for name, g in (("w0", 0.0), ("guided", w)):
            ok, confs = 0, []
            for d in range(10):
                for seed in range(per_digit):
                    img = PixelSampler(model, config, seed, label=d, guidance=g).run().images
                    label, conf = _read(judge, img, s.levels)
                    ok += int(label[0] == d)
                    confs.append(float(judge.judge(img.reshape(1, 28, 28), levels=s.levels)[0].probs[d]))
                    if progress is not None:
                        progress.advance(1)
            out[f"conditional_accuracy_{name}"] = ok / (10 * per_digit)
            out[f"conditional_confidence_{name}"] = float(np.mean(confs))  # p(asked digit) by the recogniser
        out["guidance"] = w
        if data is not None:
            test = load_split(data, "test")
            if test.labels is None:
                raise InputError(f"{data}: completion needs labelled test images (mnist.npz)")
            picks = np.concatenate([np.flatnonzero(test.labels == d)[:per_digit] for d in range(10)])
            bottom, band = np.zeros((28, 28), bool), np.zeros((28, 28), bool)
            bottom[14:] = True  # completion: the bottom half is regenerated
            band[9:19] = True  # inpainting: a band across the middle, known pixels below it
            from engines.decoding.support import plain

            plain_cfg = plain(config)  # the model's own conditionals: every sampler of the table off
            for task, mask in (("completion", bottom), ("inpainting", band)):
                plain_ok = post_ok = 0
                for i, k in enumerate(picks):
                    d, init = int(test.labels[k]), test.images[k]
                    img = PixelSampler(model, config, i, label=d, init=init, mask=mask).run().images
                    plain_ok += int(_read(judge, img, s.levels)[0][0] == d)
                    cands = PixelSampler(model, plain_cfg, i, label=d, init=init, mask=mask, batch=candidates).run()
                    chosen = posterior_resample(model, cands.images, mask, i, d, cands.sampled_logprobs).image
                    post_ok += int(_read(judge, chosen[None], s.levels)[0][0] == d)
                    if progress is not None:
                        progress.advance(1)
                out.update({f"{task}_accuracy": plain_ok / len(picks),
                            f"{task}_posterior_accuracy": post_ok / len(picks)})
            out.update({"completion_candidates": candidates, "completion_images": len(picks)})
    out["seconds"] = time.perf_counter() - t0
    return out


def density_recognition(info, *, n: int = 100) -> dict[str, Any]:
    """Unconditional samples of a NADE / MADE model (seeds 0..n-1, raster order), read by the recogniser."""
    from engines.density.model import load_density_model
    from engines.density.sampling import sample

    judge = _judge()
    model = load_density_model(info)
    if (model.height, model.width) != (28, 28):
        raise InputError(f"{info.id} draws {model.width}x{model.height} images; the recogniser reads 28x28")
    t0 = time.perf_counter()
    done = sample(model, seed=0, count=n)
    labels, conf = _read(judge, done.images.reshape(n, 28, 28), 2)
    return {"model": info.id, "task": "recognition", "judge": judge.id, "n_samples": n, **_spread(labels, conf),
            "seconds": time.perf_counter() - t0}


def print_recognition(result: dict[str, Any]) -> None:
    r = result
    if "conditional_accuracy_w0" in r:
        print(f"conditional samples read as the digit asked for: {r['conditional_accuracy_w0']:.0%} with no guidance "
              f"(recogniser's p(asked digit) {r['conditional_confidence_w0']:.2f}), {r['conditional_accuracy_guided']:.0%} "
              f"with guidance {r['guidance']:g} ({r['conditional_confidence_guided']:.2f})")
        if "completion_accuracy" in r:
            print(f"bottom-half completion of {r['completion_images']} test digits with the true label: "
                  f"{r['completion_accuracy']:.0%} read as the true digit (posterior-aware, "
                  f"{r['completion_candidates']} candidates: {r['completion_posterior_accuracy']:.0%})")
            print(f"middle-band inpainting of the same digits: {r['inpainting_accuracy']:.0%} (posterior-aware: "
                  f"{r['inpainting_posterior_accuracy']:.0%})")
    else:
        counts = " ".join(str(r[f"read_as_{n}"]) for n in DIGIT_NAMES)
        print(f"{r['n_samples']} unconditional samples: mean recogniser confidence {r['mean_confidence']:.2f}, "
              f"{r['digits_drawn']} of 10 digits drawn (entropy {r['digit_entropy_bits']:.2f} of "
              f"{math.log2(10):.2f} bits); read as 0-9: {counts}")
