"""Decoding: the validated `DecodingConfig`, sampler chains and beam search (numpy only).

The package re-exports its modules' public names: `DecodingConfig` and the setting names from
config, and every name in `samplers.__all__` (filters, selectors, chains) and `beam.__all__`.
Those two lists are kept in their modules only: a name added there is exported here too.
"""

from engines.decoding import beam, samplers
from engines.decoding.beam import *  # noqa: F401,F403 - the names in beam.__all__
from engines.decoding.config import DEFAULT_CHAIN, FILTER_NAMES, STRATEGIES, DecodingConfig
from engines.decoding.samplers import *  # noqa: F401,F403 - the names in samplers.__all__

__all__ = ["DecodingConfig", "STRATEGIES", "FILTER_NAMES", "DEFAULT_CHAIN"]
__all__ += samplers.__all__
__all__ += beam.__all__
