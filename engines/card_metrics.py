"""The short summaries of a model card's metrics that model lists show (`chainrule models`, the
studio's Models view): the main likelihood result (for a classifier, its accuracy) and the bench
speed-up, in the units each field reports in.

A card's ``metrics`` mixes eval records written by ``chainrule eval --write-card`` (keyed
``<dataset>/<split>``), bench records (``bench/<modality>``) and plain numbers from training.
`key_metrics` picks the eval record of the most telling split (test, then val, then train) and
the bench's headline ratio; cards without either fall back to their first plain numbers.
"""

from __future__ import annotations

from typing import Any

SPLIT_ORDER = {"test": 0, "val": 1, "train": 2}

# bench field -> how the list names it; the first one a bench record has is shown.
BENCH_RATIOS = (
    ("speedup", "fast sampling {:.1f}x naive"),  # bench image
    ("nade_speedup", "incremental sampling {:.1f}x naive"),  # bench density (NADE)
    ("cached_over_naive", "cached generation {:.1f}x naive"),  # bench audio
    ("realtime_factor", "{:.1f}x real time"),  # bench audio, a speech model
    ("kv_over_recompute", "KV cache {:.1f}x recompute"),  # bench text
)


def eval_headline(name: str, record: dict) -> str | None:
    """'test 90.38 nats/image (K = 32)' for one eval record, in the unit of its field: bits per
    character for text, bits per sample for audio, nats per image for binary images (the density
    literature's convention), bits per dimension otherwise; a classifier's record (a recogniser's
    test accuracy) as 'test digit accuracy 97.3%, speaker 99.7%' or 'test accuracy 99.2% (binarized 99.0%)'."""
    split = name.rsplit("/", 1)[-1]

    def number(key: str) -> float | None:
        value = record.get(key)
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None

    if record.get("task") == "generation" and number("digit_accuracy") is not None:  # a speech model's samples
        return (f"generated digits recognised {number('digit_accuracy'):.0%} "
                f"(speaker {number('speaker_accuracy') or 0:.0%})")
    if number("vocoder_bits_per_sample") is not None:  # a speech model: both levels
        return (f"{split} vocoder {number('vocoder_bits_per_sample'):.3f} bits/sample, "
                f"prior {number('prior_nats_per_frame'):.2f} nats/frame")
    if number("digit_accuracy") is not None:  # the audio recogniser: digit and speaker heads
        text = f"digit accuracy {number('digit_accuracy'):.1%}"
        if number("speaker_accuracy") is not None:
            text += f", speaker {number('speaker_accuracy'):.1%}"
        return f"{split} {text}"
    if number("accuracy") is not None:  # the image recogniser: grey test images, and binarized
        text = f"accuracy {number('accuracy'):.1%}"
        if number("binarized_accuracy") is not None:
            text += f" (binarized {number('binarized_accuracy'):.1%})"
        return f"{split} {text}"
    if number("bits_per_char") is not None:
        text = f"{number('bits_per_char'):.3f} bits/char"
    elif number("bits_per_sample") is not None:
        text = f"{number('bits_per_sample'):.3f} bits/sample"
    elif name.startswith("binarized") and number("nats_per_example") is not None:
        text = f"{number('nats_per_example'):.2f} nats/image"
    elif number("bits_per_dim") is not None:
        text = f"{number('bits_per_dim'):.4f} bits/dim"
    elif number("nats_per_example") is not None:
        text = f"{number('nats_per_example'):.4g} nats/example"
    else:
        return None
    if number("ensemble_k") is not None:
        text += f" (K = {int(number('ensemble_k'))})"
    return f"{split} {text}"


def bench_headline(record: dict) -> str | None:
    for key, label in BENCH_RATIOS:
        value = record.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return label.format(value)
    return None


def headline_metric(value: Any) -> str:
    """One short string for any card metric (a number, or a record holding several)."""
    if isinstance(value, dict):
        for key in ("bits_per_dim", "nats_per_element", "nats_per_example"):
            if isinstance(value.get(key), (int, float)):
                return f"{value[key]:.4g} {key.replace('_', ' ')}"
        return "..."
    return f"{value:.4g}" if isinstance(value, (int, float)) else str(value)


def key_metrics(metrics: dict | None, fallback: int = 3) -> str:
    """The main eval result and the bench ratio of a card's metrics, joined by ' · ' ('' if none)."""
    metrics = metrics or {}
    evals = [(name, rec) for name, rec in metrics.items()
             if isinstance(rec, dict) and "/" in name and not name.startswith("bench/")]
    evals.sort(key=lambda item: SPLIT_ORDER.get(item[0].rsplit("/", 1)[-1], len(SPLIT_ORDER)))
    parts = [h for h in (eval_headline(name, rec) for name, rec in evals
                         if rec.get("task") in (None, "likelihood")) if h][:1]
    # a speech model's recognition of its own samples says more than any likelihood
    parts += [h for h in (eval_headline(name, rec) for name, rec in evals if rec.get("task") == "generation") if h][:1]
    parts += [h for h in (bench_headline(rec) for name, rec in metrics.items()
                          if name.startswith("bench/") and isinstance(rec, dict)) if h]
    if not parts:  # a card with plain numbers only (e.g. a foreign model's)
        parts = [f"{k}: {headline_metric(v)}" for k, v in metrics.items() if not isinstance(v, bool)][:fallback]
    return " · ".join(parts)


def human_size(n: int | float) -> str:
    """Bytes as '12.2 MB' (binary multiples, as file managers show them)."""
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"
