"""``wyckoff-hf generate --stability-filter MODEL``: keep only the samples a fast surrogate calls stable.

The cheap alternative to reward fine-tuning: the model is unchanged, its samples are drawn as usual and each chunk
is scored by the surrogate (``rewards.SurrogateStability``: an energy-above-hull predictor, or a formation-energy
predictor placed on the proxy hull), and a sample is kept when its predicted energy above hull is at most the
threshold. The kept samples follow the model's distribution restricted to what the surrogate accepts; their
``log_probabilities.txt`` stay the unrestricted model's scores.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from .terms import SurrogateStability

MAX_DRAWS_PER_SAMPLE = 20  # the stream a filter may use: -n × this many draws, then it stops with what it kept


@dataclass
class StabilityFilter:
    """A surrogate and its threshold (eV/atom above hull), with the counts of what it has screened (``drawn``),
    found within the threshold (``passed``: ``passed / drawn`` is the acceptance rate) and kept (``passed`` less
    the surplus of the last chunk)."""

    surrogate: SurrogateStability
    threshold: float = 0.08
    drawn: int = 0
    passed: int = 0
    kept: int = 0

    def keep(self, chunks: Iterable[tuple[list, list[float]]], wanted: int) -> Iterator[tuple[list, list[float]]]:
        """Each chunk cut to the samples predicted within ``threshold``, until ``wanted`` are kept."""
        for representations, scores in chunks:
            self.drawn += len(representations)
            stable = np.flatnonzero(self.surrogate.e_above_hull(representations) <= self.threshold)
            self.passed += len(stable)
            stable = stable[:wanted - self.kept]
            self.kept += len(stable)
            yield [representations[i] for i in stable], [scores[i] for i in stable]
            if self.kept >= wanted:
                return

    def record(self) -> dict[str, object]:
        """What the manifest says about the filter."""
        return {"model": self.surrogate.predictor.name, "column": self.surrogate.column, "threshold": self.threshold,
                "drawn": self.drawn, "passed": self.passed, "kept": self.kept}
