"""The decoding configuration: one frozen, validated value shared by every modality.

A `DecodingConfig` is built once (from CLI flags, the studio's decoding panel or a
model card's defaults), refuses bad values on creation with a `DecodingError`
naming the setting, and is turned into a sampler chain by `build_chain`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from engines import limits
from engines.decoding.sampler_table import DEFAULT_CHAIN, FILTER_NAMES, SAMPLING_SETTINGS, SETTINGS, setting_problem
from engines.errors import DecodingError

STRATEGIES = ("greedy", "sample", "beam")

# The filters a chain may contain (by the name the UI and `--chain` use) and their default
# order (llama.cpp's: penalties first, then truncation, temperature last) come from the table.


@dataclass(frozen=True)
class DecodingConfig:
    strategy: str = "sample"  # greedy | sample | beam
    temperature: float = 1.0  # > 0 rescales logits; 0 means greedy (never divides by zero)
    top_k: int = 0  # keep the k most likely values; 0 = off
    top_p: float = 1.0  # nucleus: smallest set with mass >= p; 1 = off; (0, 1]
    min_p: float = 0.0  # drop values with p < min_p * p_max; 0 = off; [0, 1)
    typical_p: float = 1.0  # locally typical sampling mass; 1 = off; (0, 1]
    repetition_penalty: float = 1.0  # CTRL-style penalty on already-seen values; 1 = off; > 0
    no_repeat_ngram: int = 0  # forbid repeating any n-gram of this size; 0 = off
    mirostat_tau: float = 0.0  # Mirostat v2 target surprise in bits; 0 = off; (0, 30]
    mirostat_eta: float = 0.1  # Mirostat v2 learning rate; (0, 1]
    chain: tuple[str, ...] = DEFAULT_CHAIN  # order in which the filters run
    num_beams: int = 4  # beam search width
    length_penalty: float = 1.0  # beam score = sum logprob / length ** length_penalty
    early_stopping: bool = True  # stop once num_beams hypotheses are finished
    num_return_sequences: int = 1  # beams returned (<= num_beams)
    seed: int | None = None  # None: a fresh seed is drawn and reported

    def __post_init__(self) -> None:
        if isinstance(self.chain, list):
            object.__setattr__(self, "chain", tuple(self.chain))
        _validate(self)

    # --- conversions -------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["chain"] = list(self.chain)
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "DecodingConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise DecodingError(f"unknown decoding setting(s): {', '.join(unknown)}")
        kwargs = dict(data)
        if "chain" in kwargs:
            if kwargs["chain"] is None:  # null in a card or settings file: the default order
                del kwargs["chain"]
            else:
                kwargs["chain"] = tuple(kwargs["chain"])
        return cls(**kwargs)

    def replace(self, **changes: Any) -> "DecodingConfig":
        return dataclasses.replace(self, **changes)

    # The sampler settings above (temperature .. mirostat_eta) are those of the table of samplers
    # (engines.decoding.sampler_table.SETTINGS), which validates them; tests check the two agree.

    @property
    def is_greedy(self) -> bool:
        """Greedy when asked for, or when temperature 0 / top-k 1 make sampling deterministic."""
        return self.strategy == "greedy" or (
            self.strategy == "sample" and (self.temperature == 0 or self.top_k == 1)
        )


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _validate(c: DecodingConfig) -> None:
    def bad(name: str, value: Any, why: str) -> DecodingError:
        return DecodingError(f"{name.replace('_', '-')} = {value!r} is invalid: {why}")

    if c.strategy not in STRATEGIES:
        raise bad("strategy", c.strategy, f"choose one of {', '.join(STRATEGIES)}")
    for setting in SETTINGS:  # the table's ranges; limits' caps keep logits finite in float32
        value = getattr(c, setting.field)
        why = setting_problem(setting.field, value)
        if why is not None:
            raise bad(setting.field, value, why)
    unknown = [n for n in c.chain if n not in FILTER_NAMES]
    if unknown:
        raise bad("chain", ",".join(c.chain), f"unknown sampler(s) {', '.join(unknown)}; known: {', '.join(FILTER_NAMES)}")
    if len(set(c.chain)) != len(c.chain):
        raise bad("chain", ",".join(c.chain), "names a sampler twice")
    if not isinstance(c.num_beams, int) or isinstance(c.num_beams, bool) or not 1 <= c.num_beams <= limits.MAX_NUM_BEAMS:
        raise bad("num_beams", c.num_beams, f"must be a whole number in 1..{limits.MAX_NUM_BEAMS}")
    if not _is_number(c.length_penalty) or abs(c.length_penalty) > limits.MAX_ABS_LENGTH_PENALTY:
        raise bad("length_penalty", c.length_penalty, f"must be a number in -{limits.MAX_ABS_LENGTH_PENALTY:g}.."
                  f"{limits.MAX_ABS_LENGTH_PENALTY:g}")
    if not isinstance(c.early_stopping, bool):
        raise bad("early_stopping", c.early_stopping, "must be true or false")
    if not isinstance(c.num_return_sequences, int) or isinstance(c.num_return_sequences, bool) \
            or not 1 <= c.num_return_sequences <= limits.MAX_NUM_BEAMS:
        raise bad("num_return_sequences", c.num_return_sequences, f"must be a whole number in 1..{limits.MAX_NUM_BEAMS}")
    if c.strategy == "beam" and c.num_return_sequences > c.num_beams:
        raise bad(
            "num_return_sequences", c.num_return_sequences,
            f"cannot exceed num-beams ({c.num_beams})",
        )
    if c.seed is not None and (not isinstance(c.seed, int) or isinstance(c.seed, bool) or not 0 <= c.seed < 2**63):
        raise bad("seed", c.seed, "must be a whole number in [0, 2**63)")


# Which settings only one strategy reads (build_chain / beam_search). A setting the user gave
# that the chosen strategy does not read is refused, never silently ignored.
BEAM_ONLY = ("num_beams", "length_penalty", "early_stopping", "num_return_sequences")
SAMPLING_ONLY = (*SAMPLING_SETTINGS, "chain")


def unused_settings(config: DecodingConfig, given: Iterable[str]) -> list[str]:
    """The names in `given` (settings the user set) that `config.strategy` does not read."""
    given = set(given)
    unused = [n for n in BEAM_ONLY if n in given and config.strategy != "beam"]
    return unused + [n for n in SAMPLING_ONLY if n in given and config.strategy != "sample"]


def unused_reason(name: str, strategy: str, beam_available: bool = True) -> str:
    """Why `name` does nothing under `strategy`, and what to do instead (for a refusal)."""
    if name in BEAM_ONLY:
        if not beam_available:
            return "it is a beam-search setting, and beam search is only for text models"
        more = "; for several samples use --count" if name == "num_return_sequences" else ""
        return f"it is a beam-search setting (add --strategy beam{more})"
    if strategy == "greedy":
        return "greedy decoding always takes the most likely value (use --strategy sample)"
    return "beam search keeps the most likely sequences and does not sample (use --strategy sample)"
