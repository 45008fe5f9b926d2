"""Should Inpaint be posterior-aware by default? Measured on more digits than the card's figure.

    python benchmarks/inpainting_default.py [--per-digit 30] [--candidates 8] [--model mnist-pixelcnn]
        --data ../shared/data/mnist.npz

The middle band (rows 9-18) of the first `per-digit` test images of every digit is regenerated
given the rest and the true label, plainly (one draw) and posterior-aware (`candidates` draws,
one kept by how well it explains the known pixels below the band), on the same images with the
same seeds; the MNIST recogniser reads each result. Prints both accuracies and the paired
counts (digits only one of the two got right), which decide whether the gap is noise.
"""
import argparse
import json
import math

import numpy as np

from engines.decoding.config import DecodingConfig
from engines.image.data import load_split
from engines.image.model import load_image_model
from engines.image.sampler import PixelSampler, posterior_resample
from engines.recognise import default_judge
from engines.registry import get_model


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="mnist-pixelcnn")
    p.add_argument("--data", required=True)
    p.add_argument("--per-digit", type=int, default=30)
    p.add_argument("--candidates", type=int, default=8)
    p.add_argument("--models-dir", action="append", default=[])
    args = p.parse_args()
    model = load_image_model(get_model(args.model, args.models_dir))
    judge = default_judge("image")
    test = load_split(args.data, "test")
    picks = np.concatenate([np.flatnonzero(test.labels == d)[:args.per_digit] for d in range(10)])
    band = np.zeros((28, 28), bool)
    band[9:19] = True
    config = DecodingConfig()  # plain sampling: the only setting under which the weights are right
    plain_ok, post_ok, only_plain, only_post = 0, 0, 0, 0
    for i, k in enumerate(picks):
        d, init = int(test.labels[k]), test.images[k]
        plain = PixelSampler(model, config, i, label=d, init=init, mask=band).run().images
        cands = PixelSampler(model, config, i, label=d, init=init, mask=band, batch=args.candidates).run()
        chosen = posterior_resample(model, cands.images, band, i, d, cands.sampled_logprobs).image
        a = judge.judge(plain.reshape(1, 28, 28), levels=model.shape.levels)[0].label == d
        b = judge.judge(chosen.reshape(1, 28, 28), levels=model.shape.levels)[0].label == d
        plain_ok += a
        post_ok += b
        only_plain += a and not b
        only_post += b and not a
    n = len(picks)
    # two-sided sign test on the discordant pairs: how often a fair coin splits them this unevenly
    m, lo = only_plain + only_post, min(only_plain, only_post)
    p_value = min(1.0, 2 * sum(math.comb(m, j) for j in range(lo + 1)) / 2 ** m) if m else 1.0
    print(json.dumps({"model": args.model, "images": n, "candidates": args.candidates,
                      "plain_accuracy": plain_ok / n, "posterior_accuracy": post_ok / n,
                      "only_plain_right": only_plain, "only_posterior_right": only_post,
                      "sign_test_p": round(p_value, 4)}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
