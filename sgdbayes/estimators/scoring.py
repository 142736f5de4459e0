"""What every scorer shares: which of the samplers' functions it scores, in shards of ``group``."""

from __future__ import annotations

from pydantic import Field

from .base import Estimator, Options


class ScorerOptions(Options):
    """Options every scorer has."""

    top: int = Field(0, ge=0, description="Score only the ``top`` most frequent functions (0: all).")
    min_count: int = Field(1, ge=1, description="Score functions the case's samplers found at least this often "
                                                "(total over samplers).")
    group: int = Field(2000, ge=1, description="Functions per shard.")


class Scorer(Estimator):
    """Base of the P_B scorers."""

    kind = "scorer"
    Options = ScorerOptions

    def plan(self, case, options, functions=None):
        """Shards of ``group`` functions each, in order: of ``functions`` (each function the samplers
        found -> its total count, most frequent first) those with ``count >= min_count``, then the
        first ``top``."""
        chosen = [f for f, c in (functions or {}).items() if c >= options.min_count]
        chosen, g = chosen[:options.top] if options.top else chosen, options.group
        return [{"functions": chosen[a:a + g], "items": len(chosen[a:a + g])} for a in range(0, len(chosen), g)]
