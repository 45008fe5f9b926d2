"""How often a decoding config collapses each shipped model's distributions (the Decoding panel's warning).

    python benchmarks/collapse_table.py [--models-dir DIR] [--top-p 0.9]

For every text, image and density model: the share of probe positions (engines.decoding.probes:
next-token distributions over a Shakespeare passage; per-pixel distributions of a few drawn digits)
where the sampler chain keeps at most one value, under the card's decoding defaults and under
top-p P, and how long one check takes (best of 5; what each config change in the studio costs).
"""
import argparse
import time

from engines.decoding.collapse import COLLAPSE_THRESHOLD, collapse_fraction
from engines.decoding.config import DecodingConfig
from engines.decoding.flags import card_config
from engines.decoding.probes import probe_rows
from engines.registry import list_models


def _load(info):
    if info.kind == "text":
        from engines.text.model import load_text_model

        return load_text_model(info)
    if info.kind == "density":
        from engines.density.model import load_density_model

        return load_density_model(info, threads=1)
    from engines.image.model import load_image_model

    return load_image_model(info, threads=1)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models-dir", action="append", default=[])
    p.add_argument("--top-p", type=float, default=0.9)
    args = p.parse_args()
    print(f"{'model':<18} {'positions':>9} {'card defaults':>14} {'top-p ' + format(args.top_p, 'g'):>10} "
          f"{'check ms':>9}  (warning above {COLLAPSE_THRESHOLD:.0%})")
    for info in list_models(args.models_dir, include_unusable=False):
        if info.kind not in ("text", "image", "density"):
            continue
        rows = probe_rows(info.kind, _load(info))
        if rows is None:
            continue
        defaults = card_config(info.card.get("decoding_defaults")) or DecodingConfig()
        nucleus = defaults.replace(top_p=args.top_p)
        times = []
        for _ in range(5):
            t = time.perf_counter()
            top_p = collapse_fraction(nucleus, rows)
            times.append(time.perf_counter() - t)
        print(f"{info.id:<18} {rows.shape[0]:>9} {collapse_fraction(defaults, rows):>14.2f} {top_p:>10.2f} "
              f"{min(times) * 1000:>9.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
