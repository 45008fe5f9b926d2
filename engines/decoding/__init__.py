"""Decoding: the validated `DecodingConfig`, sampler chains and beam search (numpy only)."""

from engines.decoding.beam import BeamHypothesis, BeamScorer, PrefixBeamScorer, beam_search
from engines.decoding.config import DEFAULT_CHAIN, FILTER_NAMES, STRATEGIES, DecodingConfig
from engines.decoding.samplers import (
    CategoricalSelector,
    GreedySelector,
    LogitsFilter,
    MinP,
    NoRepeatNGram,
    RepetitionPenalty,
    SamplerChain,
    Temperature,
    TokenSelector,
    TopK,
    TopP,
    TypicalP,
    build_chain,
    log_softmax,
    top_alternatives,
)

__all__ = [
    "DecodingConfig",
    "STRATEGIES",
    "FILTER_NAMES",
    "DEFAULT_CHAIN",
    "build_chain",
    "SamplerChain",
    "LogitsFilter",
    "Temperature",
    "TopK",
    "TopP",
    "MinP",
    "TypicalP",
    "RepetitionPenalty",
    "NoRepeatNGram",
    "TokenSelector",
    "GreedySelector",
    "CategoricalSelector",
    "log_softmax",
    "top_alternatives",
    "beam_search",
    "BeamHypothesis",
    "BeamScorer",
    "PrefixBeamScorer",
]
