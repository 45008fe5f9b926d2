"""Which samplers each modality can use: the one place that says so.

A tab (or CLI command) samples from one kind of distribution (`distribution_of`: text tokens,
PixelCNN levels, NADE/MADE binary pixels, audio), and each entry of the table of samplers says
which kinds it does not suit and why. From that:

* `supported_samplers(kind, card)` -> {sampler name: None if supported, else the reason}: the
  Decoding panel greys out the unsupported rows with the reason on hover;
* `check_supported(config, kind, card)` refuses a config that turns on an unsupported sampler
  (or asks for beam search outside text) with one line naming the setting in words, e.g.
  "repetition penalty 1.2 cannot be used for PixelCNN pixels: ...; turn it off (repetition
  penalty 1)". The engines call it, so the CLI and the studio refuse the same things the same way.
"""

from __future__ import annotations

from typing import Any, Mapping

from engines.decoding.config import DecodingConfig
from engines.decoding.sampler_table import AUDIO, BINARY, LEVELS, SAMPLERS, TOKENS
from engines.errors import DecodingError

KINDS = ("text", "image", "density", "audio")  # the tabs' MODEL_KIND

# How messages name each kind of distribution.
NOUNS = {TOKENS: "text", LEVELS: "PixelCNN pixels", BINARY: "black-or-white pixels (NADE / MADE)",
         AUDIO: "audio models"}

# Why beam search is text-only, per kind of distribution.
_NO_BEAM = {
    LEVELS: "pixels are sampled one at a time",
    BINARY: "pixels are sampled one at a time",
    AUDIO: "audio is sampled one value at a time",
}


def _family(card: Mapping[str, Any] | None) -> str:
    arch = card.get("architecture") if isinstance(card, Mapping) else None
    family = arch.get("family") if isinstance(arch, Mapping) else None
    return family if isinstance(family, str) else ""


def distribution_of(kind: str, card: Mapping[str, Any] | None = None) -> str:
    """The kind of distribution a tab (`kind`: text | image | density | audio) samples for a model.

    `card` decides within a kind: `chainrule generate image` also serves NADE / MADE models.
    """
    if kind == "text":
        return TOKENS
    if kind == "density" or (kind == "image" and _family(card) in ("nade", "made")):
        return BINARY
    if kind == "image":
        return LEVELS
    if kind == "audio":
        return AUDIO
    raise ValueError(f"unknown model kind {kind!r}; expected one of {', '.join(KINDS)}")


def supported_samplers(kind: str, card: Mapping[str, Any] | None = None) -> dict[str, str | None]:
    """{sampler name: None when the model of this kind can use it, else why not (for a tooltip)}."""
    dist = distribution_of(kind, card)
    return {spec.name: spec.unsuited.get(dist) for spec in SAMPLERS}


def check_supported(config: DecodingConfig, kind: str, card: Mapping[str, Any] | None = None) -> None:
    """DecodingError naming the first setting of `config` that this kind of model cannot use.

    Settings the strategy does not read (top-p under greedy) are not refused: `build_chain`
    leaves them out, and the CLI refuses them as unused flags already."""
    dist = distribution_of(kind, card)
    if config.strategy == "beam" and dist in _NO_BEAM:
        raise DecodingError(f"beam search (strategy beam) is not available for {NOUNS[dist]}: {_NO_BEAM[dist]} "
                            "(use strategy sample or greedy)")
    for spec in SAMPLERS:
        reason = spec.unsuited.get(dist)
        read = config.strategy == "sample" or spec.role == "penalty"  # what build_chain would use
        if reason is not None and read and spec.is_on(config):
            off = spec.primary.off
            raise DecodingError(f"{spec.describe(config)} cannot be used for {NOUNS[dist]}: {reason}; "
                                f"turn it off ({spec.primary.label} {off:g})")


# --- sampling from the model's own distribution ---------------------------------------------------

def plain(config: DecodingConfig) -> DecodingConfig:
    """`config` drawing from the model's own conditionals: every filter and selector setting of the
    table at its off value (temperature 1, no truncation, a categorical draw), strategy sample.
    Penalties, the chain order and the seed stay. What posterior-aware completion needs."""
    off = {st.field: st.off for spec in SAMPLERS if spec.role != "penalty" for st in spec.settings
           if st.off is not None}
    return config.replace(strategy="sample", **off)


def changes_from_plain(config: DecodingConfig) -> list[str]:
    """The settings that make `config` draw from something other than the model's own conditionals, in
    words ("greedy decoding", "temperature 0.8", "top-p 0.9", "Mirostat tau 5"); [] when plain."""
    greedy = config.is_greedy or config.strategy != "sample"
    changed = ["greedy decoding"] if greedy else []
    for spec in SAMPLERS:
        if spec.role == "penalty" or not spec.is_on(config):
            continue
        if greedy and spec.name in ("temperature", "top_k"):  # what made it greedy, said already
            continue
        changed.append(spec.describe(config))
    return changed
