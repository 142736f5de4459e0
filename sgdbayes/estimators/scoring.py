"""What every scorer shares: which of the samplers' functions it scores, in shards of ``group``."""

from __future__ import annotations

from typing import Mapping

from pydantic import Field

from .base import Estimator, Options


class ScorerOptions(Options):
    """Options every scorer has.

    Attributes
    ----------
    top : int
        Score only the ``top`` most frequent functions (0: all).
    min_count : int
        Score functions the case's samplers found at least this often (total over samplers).
    group : int
        Functions per shard.
    """

    top: int = Field(0, ge=0)
    min_count: int = Field(1, ge=1)
    group: int = Field(2000, ge=1)


class Scorer(Estimator):
    """Base of the P_B scorers: they score the functions the case's samplers found, in shards of
    ``options.group`` (:func:`group_shards`)."""

    quantity = "p_b"
    kind = "scorer"
    Options = ScorerOptions

    def plan(self, case, options, functions=None):
        return group_shards(functions or {}, options)


def choose(functions: Mapping[str, int], options: ScorerOptions) -> list[str]:
    """The functions to score: ``functions`` maps each function the case's samplers found to its
    total count, most frequent first; keep those with ``count >= min_count``, then the first
    ``top`` (all when ``top = 0``)."""
    chosen = [f for f, c in functions.items() if c >= options.min_count]
    return chosen[:options.top] if options.top else chosen


def group_shards(functions: Mapping[str, int], options: ScorerOptions) -> list[dict]:
    """Shards of ``options.group`` chosen functions each, in order."""
    chosen, g = choose(functions, options), options.group
    return [{"functions": chosen[a:a + g], "items": len(chosen[a:a + g])} for a in range(0, len(chosen), g)]
