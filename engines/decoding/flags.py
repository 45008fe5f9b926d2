"""Decoding settings as `chainrule` flags: the inverse of the CLI's parsing, with no argparse.

`decoding_arguments(config, card_defaults)` gives the flags that rebuild `config` when the CLI
starts from the card's decoding defaults (only the settings that differ, and only those the
strategy reads, since the CLI refuses the others). Every request type's `to_command` uses it.
"""

from __future__ import annotations

from typing import Any, Mapping

from engines.decoding.config import DecodingConfig, unused_settings
from engines.decoding.sampler_table import SETTINGS

# config field -> CLI flag, for every setting passed as `--flag VALUE`: the strategy, every
# sampler setting of the table, and the beam settings
FLAG_OF = {
    "strategy": "--strategy",
    **{setting.field: setting.flag for setting in SETTINGS},
    "num_beams": "--num-beams", "length_penalty": "--length-penalty", "num_return_sequences": "--num-return-sequences",
}


def card_config(card_defaults: Mapping[str, Any] | None) -> DecodingConfig | None:
    """The config a card's `decoding_defaults` make, or None when they are unusable."""
    try:
        return DecodingConfig.from_dict(dict(card_defaults or {}))
    except Exception:  # noqa: BLE001 - a bad card default: callers pass everything
        return None


def decoding_arguments(config: DecodingConfig, card_defaults: Mapping[str, Any] | None) -> list[str]:
    """Flags (without --seed) that turn the card's defaults into `config`; floats as repr (exact)."""
    base = card_config(card_defaults)
    args: list[str] = []
    unused = set(unused_settings(config, [*FLAG_OF, "chain", "early_stopping"]))
    for name, flag in FLAG_OF.items():
        value = getattr(config, name)
        if name not in unused and (base is None or getattr(base, name) != value):
            args += [flag, repr(value) if isinstance(value, float) else str(value)]
    if "chain" not in unused and (base is None or tuple(base.chain) != tuple(config.chain)):
        args += ["--chain", ",".join(config.chain)]
    if "early_stopping" not in unused and not config.early_stopping and (base is None or base.early_stopping):
        args.append("--no-early-stopping")
    return args


def model_arguments(info) -> list[str]:
    """`--model ID` plus `--models-dir` when the model is found only through an extra folder."""
    args = ["--model", info.id]
    if info.source not in ("shipped", "user"):
        args += ["--models-dir", str(info.path.parent)]
    return args
