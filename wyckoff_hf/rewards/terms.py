"""The reward terms: each maps a batch of crystals to one value per crystal, higher is better, on a scale of
about [0, 1] so that weights compare. The stability terms share one score of the energy above hull."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Hashable, Iterable, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

from ..evaluation.sun import METASTABLE as STABILITY_THRESHOLD  # eV/atom: the field's "stable" in S.U.N.
from ..tokenization import WyckoffRepresentation

STABILITY_WIDTH = 0.02  # eV/atom over which the stability score falls from ~0.98 to ~0.02 around the threshold
SURROGATE_COLUMNS = ("e_above_hull", "formation_energy_per_atom")  # what a surrogate may predict, preferred first
FAILED_E_ABOVE_HULL = 1.0  # eV/atom charged to a crystal that cannot be realised, relaxed or placed on the hull


def stability_score(e_above_hull: np.ndarray) -> np.ndarray:
    """A smooth step at the 0.08 eV/atom threshold: σ((0.08 − E_hull) / 0.02).

    The target is the *share* of stable crystals (S.U.N.), not the deepest hull energy: a reward linear in
    −E_hull would keep pushing samples toward the few deepest templates, which is how reward fine-tuning loses
    diversity. Above the step nothing more is gained."""
    return 1.0 / (1.0 + np.exp(-(STABILITY_THRESHOLD - np.asarray(e_above_hull, dtype=float)) / STABILITY_WIDTH))


class RewardTerm(Protocol):
    """One term of a reward: its ``name`` and its value per crystal."""

    name: str

    def __call__(self, crystals: Sequence[WyckoffRepresentation]) -> np.ndarray: ...


class SurrogateStability:
    """``stability_score`` of the energy above hull from a property predictor: its ``e_above_hull`` output, or its
    ``formation_energy_per_atom`` placed on the proxy hull of ``wyckoff-hf evaluate --stability`` (the shipped
    formation-energy predictor qualifies; the hull is built from the MP rows once per chemical system)."""

    name = "stability"

    def __init__(self, predictor: object) -> None:
        usable = [column for column in SURROGATE_COLUMNS if column in predictor.columns]
        if not usable:
            raise ValueError(f"surrogate {predictor.name}: predicts {predictor.columns}, not one of "
                             f"{list(SURROGATE_COLUMNS)}; train one with scripts/train.py --task property --target "
                             "e_above_hull")
        self.predictor, self.column = predictor, usable[0]

    def e_above_hull(self, crystals: Sequence[WyckoffRepresentation]) -> np.ndarray:
        values = [row[self.column] for row in self.predictor.predict(list(crystals))]
        if self.column == "e_above_hull":
            return np.array(values, dtype=float)
        from ..evaluation.hull import packaged_hull

        return np.array([packaged_hull().e_above_hull(crystal.composition, float(formation_energy))
                         for crystal, formation_energy in zip(crystals, values, strict=True)], dtype=float)

    def __call__(self, crystals: Sequence[WyckoffRepresentation]) -> np.ndarray:
        return stability_score(self.e_above_hull(crystals))


class ChgnetStability:
    """``stability_score`` of the CHGNet energy above the proxy hull, by the relaxation protocol of
    ``wyckoff-hf evaluate --stability --stability-screen`` (pool, Dask cluster and cache as there). A crystal that
    fails to realise, relax or be placed on the hull (a collapsed relaxation included: ``evaluation.stability.
    place_on_hull``) scores as ``FAILED_E_ABOVE_HULL``. ``indices`` seeds the pyxtal trials, so calls
    number their crystals consecutively (``start``) to keep the cache's names apart."""

    name = "chgnet"

    def __init__(self, num_workers: int | None = 1, cache_dir: str | Path | None = None, seed: int = 0) -> None:
        from ..evaluation.relaxation import SCREEN_FMAX, RelaxationSettings

        self.settings = RelaxationSettings(screen_fmax=SCREEN_FMAX, seed=seed)
        self.num_workers, self.cache_dir, self.start = num_workers, cache_dir, 0

    def e_above_hull(self, crystals: Sequence[WyckoffRepresentation]) -> np.ndarray:
        from ..evaluation.hull import packaged_hull
        from ..evaluation.relaxation import Relaxed, relax_samples
        from ..evaluation.stability import place_on_hull

        indices = range(self.start, self.start + len(crystals))
        self.start += len(crystals)
        results = relax_samples(list(crystals), self.settings, indices, self.num_workers, cache_dir=self.cache_dir)
        placed, _ = place_on_hull([result for result in results if isinstance(result, Relaxed)], packaged_hull())
        by_index = {placement.relaxed.index: placement.e_above_hull for placement in placed}
        values = [by_index.get(index, FAILED_E_ABOVE_HULL) for index in indices]
        return np.array(values, dtype=float)

    def __call__(self, crystals: Sequence[WyckoffRepresentation]) -> np.ndarray:
        return stability_score(self.e_above_hull(crystals))


class NotAmongKnown:
    """1 for a crystal whose ``key`` is not among the known crystals' keys, else 0 (``evaluate``'s novelty)."""

    def __init__(self, name: str, key: Callable[[WyckoffRepresentation], Hashable],
                 known: Iterable[WyckoffRepresentation]) -> None:
        from ..evaluation.novelty import KnownKeys

        self.name, self.known = name, KnownKeys(key, known)

    def __call__(self, crystals: Sequence[WyckoffRepresentation]) -> np.ndarray:
        return np.array(self.known.novel(crystals), dtype=float)


def Novelty(known: Iterable[WyckoffRepresentation]) -> NotAmongKnown:
    """1 for a crystal whose canonical representation is not among the known ones (train + validation)."""
    return NotAmongKnown("novelty", WyckoffRepresentation.canonical, known)


def NewTemplate(known: Iterable[WyckoffRepresentation]) -> NotAmongKnown:
    """1 for a crystal whose structure type (``canonical_template``: group and letters, elements abstracted away) is
    not among the known crystals' types: new templates are where new materials are."""
    return NotAmongKnown("new_template", WyckoffRepresentation.canonical_template, known)


class Uniqueness:
    """1 / (copies of the crystal in the batch): a crystal drawn k times shares one reward among its k copies, so a
    policy that collapses onto a few crystals gains nothing from repeating them (the guard against mode collapse,
    with the KL penalty)."""

    name = "uniqueness"

    def __call__(self, crystals: Sequence[WyckoffRepresentation]) -> np.ndarray:
        keys = [crystal.canonical() for crystal in crystals]
        counts = Counter(keys)
        return np.array([1.0 / counts[key] for key in keys], dtype=float)
