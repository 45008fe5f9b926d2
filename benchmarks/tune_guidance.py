"""Choose a label-conditioned PixelCNN's default guidance by what the recogniser reads.

    python benchmarks/tune_guidance.py W [W ...] [--model mnist-pixelcnn] [--models-dir DIR]

Five samples of every digit (seeds 100..104, not the 0..9 that `chainrule eval --task recognition`
uses) at each guidance weight W, read by the installed image recogniser: the share read as the
digit asked for and the recogniser's mean probability of that digit.
"""
import argparse

import numpy as np

from engines.decoding.config import DecodingConfig
from engines.image.model import load_image_model
from engines.image.sampler import PixelSampler
from engines.recognise import default_judge
from engines.registry import get_model


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("weights", type=float, nargs="+")
    p.add_argument("--model", default="mnist-pixelcnn")
    p.add_argument("--models-dir", action="append", default=[])
    args = p.parse_args()
    model = load_image_model(get_model(args.model, args.models_dir))
    judge = default_judge("image")
    config = DecodingConfig.from_dict(dict(model.decoding_defaults or {}))
    for w in args.weights:
        ok, conf = 0, []
        for d in range(10):
            for seed in range(100, 105):
                img = PixelSampler(model, config, seed, label=d, guidance=w).run().images
                v = judge.judge(img.reshape(1, 28, 28))[0]
                ok += v.label == d
                conf.append(v.probs[d])
        print(f"guidance {w:g}: {ok / 50:.2f} read as the digit asked for, p(asked digit) {np.mean(conf):.2f}",
              flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
