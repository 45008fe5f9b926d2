"""The table of samplers: every filter and selector, described once.

Each `SamplerSpec` says what a sampler is called (chain name, panel label), which settings it
reads (config field, CLI flag, range, the value that turns it off, default, help), what role it
has in a chain (penalty / filter / selector), which kinds of distribution it does not suit and
why, and how to build it (factory: config, seed -> LogitsFilter / TokenSelector, or None when
off). Everything else is derived from this table:

* `DecodingConfig` validation of the sampler settings (`setting_problem`);
* the chain names (`FILTER_NAMES`, `DEFAULT_CHAIN`) and `build_chain` (`chain_filters`,
  `chain_selector`);
* the CLI flags (`engines.cli.add_decoding_arguments` / `config_from_args`,
  `engines.decoding.flags.FLAG_OF`);
* the studio's Decoding panel rows, in table order;
* which samplers each modality supports (`engines.decoding.support`).

Adding a sampler is one entry here plus its implementation (and, since `DecodingConfig`'s
fields are written out for readers and type checkers, one line per new setting there; a test
checks that the two agree).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Mapping

from engines import limits
from engines.decoding.mirostat import MirostatV2
from engines.decoding.samplers import (CategoricalSelector, GreedySelector, LogitsFilter, MinP, NoRepeatNGram,
                                       RepetitionPenalty, Temperature, TokenSelector, TopK, TopP, TypicalP)

if TYPE_CHECKING:
    from engines.decoding.config import DecodingConfig

ROLES = ("penalty", "filter", "selector")

# The kinds of distribution the modalities sample from (engines.decoding.support maps a tab and
# its model's card to one of them).
TOKENS = "tokens"  # text: a vocabulary of tokens or characters
LEVELS = "levels"  # PixelCNN: one categorical over the intensity levels of a pixel (2 or 256)
BINARY = "binary"  # NADE / MADE: one Bernoulli per pixel, sampled as the 2-value row [0, logit]
AUDIO = "audio"  # WaveNet (drawn inside its ONNX step graph) and the speech frame prior (a mixture)
DISTRIBUTIONS = (TOKENS, LEVELS, BINARY, AUDIO)

_NO_HISTORY_PIXELS = "pixels have no history of tokens to penalise: a digit repeats its background by design"
_BINARY_COLLAPSE = ("on a black-or-white pixel (two values) it keeps only the likelier value at most pixels, "
                    "which is greedy; use temperature instead")
_AUDIO_TEMPERATURE_ONLY = ("the audio models draw at a temperature only (WaveNet inside its ONNX step graph, "
                           "the speech prior from a Gaussian mixture)")


def _is_number(x: Any) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool) and math.isfinite(x)


def _is_whole(x: Any) -> bool:
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


@dataclass(frozen=True)
class Setting:
    """One config field of a sampler: its flag, range, off value and panel spin box."""

    field: str  # DecodingConfig field, e.g. "top_p"
    label: str  # shown in the panel and in messages, e.g. "top-p"
    type: type  # int or float
    lo: float | None  # lower end of the valid range (None: unbounded)
    hi: float | None  # upper end (None: unbounded)
    lo_open: bool  # True: (lo, ...; False: [lo, ...
    hi_open: bool
    off: Any  # the value that turns the sampler off (None: this setting cannot turn it off)
    default: Any  # DecodingConfig's default
    on_value: Any  # what the panel's spin box starts at when the sampler is ticked on
    help: str  # one line for --help and the panel's tooltip
    invalid: str  # why a value is refused (after "NAME = VALUE is invalid: ")
    panel_range: tuple[float, float]  # the spin box's range: generous, so refused values show why
    panel_step: float = 1.0
    panel_decimals: int = 0
    check: Callable[[Any], str | None] | None = None  # a rule the range cannot say; returns why not

    @property
    def flag(self) -> str:
        return "--" + self.field.replace("_", "-")

    @property
    def message_name(self) -> str:
        """How DecodingConfig's messages name the setting (the flag without dashes)."""
        return self.field.replace("_", "-")

    def in_range(self, value: Any) -> bool:
        if self.lo is not None and (value <= self.lo if self.lo_open else value < self.lo):
            return False
        return self.hi is None or (value < self.hi if self.hi_open else value <= self.hi)

    def problem(self, value: Any) -> str | None:
        """Why `value` is refused, or None when it is valid."""
        ok_type = _is_whole(value) if self.type is int else _is_number(value)
        if not ok_type or not (value == self.off or self.in_range(value)):
            return self.invalid
        return self.check(value) if self.check is not None else None


@dataclass(frozen=True)
class SamplerSpec:
    name: str  # chain / support name, e.g. "top_p"
    role: str  # penalty | filter | selector
    label: str  # panel label
    help: str
    settings: tuple[Setting, ...]  # the first turns the sampler on and off; () for greedy / categorical
    factory: Callable[["DecodingConfig", int], LogitsFilter | TokenSelector | None]
    unsuited: Mapping[str, str] = field(default_factory=dict)  # distribution kind -> why it does not fit
    chain_rank: int = 0  # filters: place in the default chain (llama.cpp: penalties, truncation, temperature)
    toggle: bool = True  # False: always shown on (temperature: its off value 1 is just a number)

    @property
    def primary(self) -> Setting | None:
        return self.settings[0] if self.settings else None

    @property
    def field(self) -> str | None:
        return self.primary.field if self.primary else None

    @property
    def flag(self) -> str | None:
        return self.primary.flag if self.primary else None

    def is_on(self, config: "DecodingConfig") -> bool:
        """Whether `config` asks for this sampler (its main setting is not at its off value)."""
        p = self.primary
        return p is not None and p.off is not None and getattr(config, p.field) != p.off

    def describe(self, config: "DecodingConfig") -> str:
        """e.g. "top-p 0.9": the label and value, as messages name a setting."""
        p = self.primary
        value = getattr(config, p.field)
        return f"{p.label} {value:g}" if isinstance(value, (int, float)) else f"{p.label} {value}"


# --- checks a plain range cannot express -------------------------------------------------------

def _temperature_check(t: float) -> str | None:
    if t != 0 and not limits.MIN_TEMPERATURE <= t <= limits.MAX_TEMPERATURE:
        return f"must be 0 (greedy) or in {limits.MIN_TEMPERATURE:g}..{limits.MAX_TEMPERATURE:g}"
    return None


def _penalty_check(p: float) -> str | None:
    # The caps keep logits x penalty finite in float32: beyond them the sampler would overflow.
    if not limits.MIN_REPETITION_PENALTY <= p <= limits.MAX_REPETITION_PENALTY:
        return f"must be in {limits.MIN_REPETITION_PENALTY:g}..{limits.MAX_REPETITION_PENALTY:g}; 1 turns it off"
    return None


MAX_MIROSTAT_TAU = 30.0  # bits; a 2**30-value vocabulary would be needed to reach it


# --- the table ------------------------------------------------------------------------------------
# Listed in the panel's order; `chain_rank` gives the default chain order.

SAMPLERS: tuple[SamplerSpec, ...] = (
    SamplerSpec(
        "temperature", "filter", "temperature", "Divides the logits: < 1 sharper, > 1 flatter; 0 means greedy",
        (Setting("temperature", "temperature", float, 0.0, None, False, False, off=1.0, default=1.0, on_value=1.0,
                 help="0 means greedy", invalid="must be a number >= 0 (0 means greedy)",
                 panel_range=(0.0, 5.0), panel_step=0.05, panel_decimals=2, check=_temperature_check),),
        lambda c, seed: Temperature(c.temperature) if c.temperature not in (0, 1) else None,  # 0: greedy selector
        chain_rank=6, toggle=False),
    SamplerSpec(
        "top_k", "filter", "top-k", "Keep only the k most likely values",
        (Setting("top_k", "top-k", int, 1, None, False, False, off=0, default=0, on_value=40,
                 help="keep the k most likely; 0 turns it off",
                 invalid="must be a whole number >= 1, or 0 to turn it off", panel_range=(1, 1000)),),
        lambda c, seed: TopK(c.top_k) if c.top_k > 0 else None,
        unsuited={BINARY: "on a black-or-white pixel top-k 1 is greedy and top-k 2 changes nothing; "
                          "use strategy greedy or temperature", AUDIO: _AUDIO_TEMPERATURE_ONLY},
        chain_rank=2),
    SamplerSpec(
        "top_p", "filter", "top-p", "Nucleus: keep the smallest set whose probability reaches p",
        (Setting("top_p", "top-p", float, 0.0, 1.0, True, False, off=1.0, default=1.0, on_value=0.9,
                 help="nucleus mass in (0, 1]", invalid="must be in (0, 1]; 1 turns it off (0 would keep nothing)",
                 panel_range=(0.0, 1.0), panel_step=0.01, panel_decimals=3),),
        lambda c, seed: TopP(c.top_p) if c.top_p < 1 else None,
        # PixelCNN keeps it: on a digit's background one level often holds more than p, so the
        # nucleus is that level alone (all-black digits); the panel's collapse warning flags it.
        unsuited={BINARY: _BINARY_COLLAPSE, AUDIO: _AUDIO_TEMPERATURE_ONLY},
        chain_rank=4),
    SamplerSpec(
        "min_p", "filter", "min-p", "Drop values less likely than min-p times the most likely one",
        (Setting("min_p", "min-p", float, 0.0, 1.0, False, True, off=0.0, default=0.0, on_value=0.05,
                 help="drop values below min-p x the top probability", invalid="must be in [0, 1); 0 turns it off",
                 panel_range=(0.0, 1.0), panel_step=0.01, panel_decimals=3),),
        lambda c, seed: MinP(c.min_p) if c.min_p > 0 else None,
        unsuited={BINARY: _BINARY_COLLAPSE, AUDIO: _AUDIO_TEMPERATURE_ONLY},
        chain_rank=5),
    SamplerSpec(
        "typical_p", "filter", "typical-p", "Locally typical sampling: keep values whose surprise is close to the entropy",
        (Setting("typical_p", "typical-p", float, 0.0, 1.0, True, False, off=1.0, default=1.0, on_value=0.95,
                 help="locally typical sampling mass in (0, 1]", invalid="must be in (0, 1]; 1 turns it off",
                 panel_range=(0.0, 1.0), panel_step=0.01, panel_decimals=3),),
        lambda c, seed: TypicalP(c.typical_p) if c.typical_p < 1 else None,
        # PixelCNN keeps it, with the same collapse risk as top-p on near-certain background pixels.
        unsuited={BINARY: _BINARY_COLLAPSE, AUDIO: _AUDIO_TEMPERATURE_ONLY},
        chain_rank=3),
    SamplerSpec(
        "repetition_penalty", "penalty", "repetition penalty", "Make already-seen values less likely (> 1) or more likely (< 1)",
        (Setting("repetition_penalty", "repetition penalty", float, 0.0, None, True, False, off=1.0, default=1.0,
                 on_value=1.1, help="> 1 discourages repeats", invalid="must be > 0; 1 turns it off",
                 panel_range=(0.0, 5.0), panel_step=0.05, panel_decimals=2, check=_penalty_check),),
        lambda c, seed: RepetitionPenalty(c.repetition_penalty) if c.repetition_penalty != 1 else None,
        unsuited={LEVELS: _NO_HISTORY_PIXELS, BINARY: _NO_HISTORY_PIXELS, AUDIO: _AUDIO_TEMPERATURE_ONLY},
        chain_rank=0),
    SamplerSpec(
        "no_repeat_ngram", "penalty", "no-repeat n-gram", "Forbid repeating any n-gram of this size",
        (Setting("no_repeat_ngram", "no-repeat n-gram", int, 1, None, False, False, off=0, default=0, on_value=3,
                 help="forbid repeating n-grams of this size",
                 invalid="must be a whole number >= 1, or 0 to turn it off", panel_range=(1, 20)),),
        lambda c, seed: NoRepeatNGram(c.no_repeat_ngram) if c.no_repeat_ngram > 0 else None,
        unsuited={LEVELS: _NO_HISTORY_PIXELS, BINARY: _NO_HISTORY_PIXELS, AUDIO: _AUDIO_TEMPERATURE_ONLY},
        chain_rank=1),
    # Selectors: the first whose factory applies ends the chain (categorical always applies).
    SamplerSpec(
        "greedy", "selector", "greedy", "Take the most likely value (strategy greedy, temperature 0 or top-k 1)",
        (), lambda c, seed: GreedySelector() if c.is_greedy or c.strategy != "sample" else None),
    SamplerSpec(
        "mirostat", "selector", "Mirostat v2",
        "Keep the surprise of each value near tau bits: drop values more surprising than a running "
        "threshold that learns at rate eta",
        (Setting("mirostat_tau", "Mirostat tau", float, 0.0, MAX_MIROSTAT_TAU, True, False, off=0.0, default=0.0,
                 on_value=5.0, help="Mirostat v2 target surprise in bits; 0 turns it off",
                 invalid=f"must be in (0, {MAX_MIROSTAT_TAU:g}] bits; 0 turns it off",
                 panel_range=(0.0, 40.0), panel_step=0.5, panel_decimals=2),
         Setting("mirostat_eta", "Mirostat eta", float, 0.0, 1.0, True, False, off=None, default=0.1,
                 on_value=0.1, help="Mirostat v2 learning rate in (0, 1]", invalid="must be in (0, 1]",
                 panel_range=(0.0, 1.0), panel_step=0.01, panel_decimals=3)),
        lambda c, seed: MirostatV2(c.mirostat_tau, c.mirostat_eta, seed) if c.mirostat_tau > 0 else None,
        unsuited={LEVELS: "Mirostat steers the surprise of text; most pixels are near-certain background, so a "
                          "target surprise per pixel is not a useful knob",
                  BINARY: "Mirostat steers the surprise of text; a black-or-white pixel has at most 1 bit",
                  AUDIO: _AUDIO_TEMPERATURE_ONLY}),
    SamplerSpec(
        "categorical", "selector", "draw", "Draw from the filtered distribution (strategy sample)",
        (), lambda c, seed: CategoricalSelector(seed)),
)

SPECS: dict[str, SamplerSpec] = {s.name: s for s in SAMPLERS}
SETTINGS: tuple[Setting, ...] = tuple(st for s in SAMPLERS for st in s.settings)
SETTING_OF: dict[str, Setting] = {st.field: st for st in SETTINGS}
SPEC_OF_FIELD: dict[str, SamplerSpec] = {st.field: s for s in SAMPLERS for st in s.settings}

# The filters a chain may contain, by the name the UI and `--chain` use, in the default order.
FILTER_NAMES: tuple[str, ...] = tuple(s.name for s in sorted((s for s in SAMPLERS if s.role != "selector"),
                                                            key=lambda s: s.chain_rank))
DEFAULT_CHAIN = FILTER_NAMES
PENALTY_NAMES: tuple[str, ...] = tuple(n for n in FILTER_NAMES if SPECS[n].role == "penalty")
SELECTOR_NAMES: tuple[str, ...] = tuple(s.name for s in SAMPLERS if s.role == "selector")
# Settings only sampling reads (greedy and beam search use the penalties alone).
SAMPLING_SETTINGS: tuple[str, ...] = tuple(st.field for s in SAMPLERS if s.role != "penalty" for st in s.settings)


def setting_problem(name: str, value: Any) -> str | None:
    """Why the sampler setting `name` refuses `value`, or None."""
    return SETTING_OF[name].problem(value)


def chain_filters(config: "DecodingConfig") -> list[LogitsFilter]:
    """The active filters of `config` in its chain order (only the penalties unless sampling)."""
    names = config.chain if config.strategy == "sample" else [n for n in config.chain if n in PENALTY_NAMES]
    made = (SPECS[n].factory(config, 0) for n in names)
    return [f for f in made if f is not None]


def chain_selector(config: "DecodingConfig", seed: int) -> TokenSelector:
    """The first selector of the table that applies to `config`."""
    for name in SELECTOR_NAMES:
        selector = SPECS[name].factory(config, seed)
        if selector is not None:
            return selector
    raise AssertionError("the categorical selector always applies")  # pragma: no cover
