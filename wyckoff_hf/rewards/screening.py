"""``wyckoff-hf generate --stability-filter MODEL``: keep only the samples a fast surrogate calls stable.

The cheap alternative to reward fine-tuning: the model is unchanged, its samples are drawn as usual and each chunk
is scored by the surrogate (``rewards.SurrogateStability``: an energy-above-hull predictor, or a formation-energy
predictor placed on the proxy hull), and a sample is kept when its predicted energy above hull is at most the
threshold and it can be the crystal it names (``realisable``). The kept samples follow the model's distribution
restricted to what the filter accepts (rejection: no step is renormalised); their
``log_probabilities.txt`` stay the unrestricted model's scores.

A threshold passes fewer new structure types than known ones (new templates are less often stable, and the
surrogate knows them less), so filtering alone lowers template novelty. With ``template_reference`` (a prepared
dataset: its train and validation crystals' types are the known ones), each chunk's new-template samples pass as
often as its known ones do, those the surrogate ranks lowest: the sampler's template novelty is kept, and the filter
sorts each kind on its own.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from ..tokenization import RealizationError, WyckoffRepresentation
from .terms import NewTemplate, NotAmongKnown, SurrogateStability

MAX_DRAWS_PER_SAMPLE = 20  # the stream a filter may use: -n × this many draws, then it stops with what it kept
CHUNK_DRAWS_PER_SAMPLE = 4  # one chunk's draws per wanted sample: at the default sampler's pass rate (56 %) one chunk
# is nearly always enough, so a small -n draws a few times -n, not the whole stream's 20 × -n


def realisable(representation: WyckoffRepresentation) -> bool:
    """False for a rigid representation whose one structure has another group (Fm-3m Li 4a, Li 4b, Cd 8c is
    CsCl-type Pm-3m): no placement realises it, so CHGNet cannot judge it, yet the surrogate passes it readily (17
    of the default sampler's 1,000 samples before this check; 33 of the 446 distinct rigid crystals among 2,000
    draws of its generator). A placement decides the others."""
    return not representation.rigid or _places_as_sampled(representation)


@lru_cache(maxsize=65536)  # rigid crystals recur (rock salts, Heuslers): one placement (about 36 ms) each
def _places_as_sampled(representation: WyckoffRepresentation) -> bool:
    try:
        representation.to_structure(seed=0)
    except RealizationError:
        return False
    return True


@dataclass
class StabilityFilter:
    """A surrogate and its threshold (eV/atom above hull), with the counts of what it has screened (``drawn``),
    found within the threshold (``passed``: ``passed / drawn`` is the acceptance rate) and kept (``passed`` less
    the surplus of the last chunk); with ``template_reference``, new templates pass at the known ones' rate."""

    surrogate: SurrogateStability
    threshold: float = 0.08
    template_reference: str | None = None
    new_template: NotAmongKnown | None = field(init=False, default=None)
    drawn: int = 0
    passed: int = 0
    kept: int = 0

    def __post_init__(self) -> None:
        if self.template_reference is not None:
            from ..data import known_crystals

            try:
                self.new_template = NewTemplate(known_crystals(self.template_reference))
            except FileNotFoundError as err:
                raise ValueError(f"template reference {self.template_reference}: not a prepared dataset "
                                 f"({err})") from None

    def keep(self, chunks: Iterable[tuple[list, list[float]]], wanted: int) -> Iterator[tuple[list, list[float]]]:
        """Each chunk cut to the samples predicted within ``threshold``, until ``wanted`` are kept."""
        for representations, scores in chunks:
            self.drawn += len(representations)
            stable = np.flatnonzero(self.passing(representations))
            self.passed += len(stable)
            stable = stable[:wanted - self.kept]
            self.kept += len(stable)
            yield [representations[i] for i in stable], [scores[i] for i in stable]
            if self.kept >= wanted:
                return

    @staticmethod
    def chunk_size(wanted: int) -> int:
        """Draws per chunk for ``wanted`` samples, at most one model batch (``SAMPLING_CHUNK``). A template balance
        is struck per chunk, so a smaller chunk balances over fewer samples: less exactly, as fairly."""
        from ..generation.jobs import SAMPLING_CHUNK

        return min(SAMPLING_CHUNK, CHUNK_DRAWS_PER_SAMPLE * wanted)

    def passing(self, representations: list) -> np.ndarray:
        """Which samples pass: realisable and predicted within ``threshold``; with ``new_template``, new templates
        instead as often as the known ones pass, the lowest predicted first."""
        predicted = self.surrogate.e_above_hull(representations)
        judged = range(len(predicted)) if self.new_template is not None else np.flatnonzero(predicted <= self.threshold)
        predicted[[i for i in judged if not realisable(representations[i])]] = np.inf  # never passes
        passed = predicted <= self.threshold
        if self.new_template is not None:
            new = np.flatnonzero(self.new_template(representations))
            known = np.setdiff1d(np.arange(len(passed)), new)
            count = round(passed[known].mean() * len(new)) if len(known) else int(passed[new].sum())
            passed[new] = False
            passed[new[np.argsort(predicted[new], kind="stable")[:count]]] = True
        return passed & np.isfinite(predicted)

    def record(self) -> dict[str, object]:
        """What the manifest says about the filter."""
        return {"model": self.surrogate.predictor.name, "column": self.surrogate.column, "threshold": self.threshold,
                "drawn": self.drawn, "passed": self.passed, "kept": self.kept,
                "template_reference": self.template_reference}
