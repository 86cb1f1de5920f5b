"""The trivial baseline a property model must beat: the mean train value of the crystal's composition family.

For each crystal: the mean over train rows with the same reduced formula (polymorphs of one compound), else over
train rows with the same chemical system (the same set of elements: NaCl and Na2Cl3 share Cl-Na), else the global
train mean. On MP-20 the formula level alone already knows much of the formation energy, since polymorphs differ
little in it: a model's MAE means something only next to this one's on the same rows.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from pymatgen.core import Composition

FORMULA, CHEMICAL_SYSTEM, GLOBAL = "formula", "chemical_system", "global"
LEVELS = (FORMULA, CHEMICAL_SYSTEM, GLOBAL)


def _keys(composition: Composition | str) -> tuple[str, str]:
    composition = Composition(composition)
    return composition.reduced_formula, composition.chemical_system


def _means(groups: dict[str, list[float]]) -> dict[str, float]:
    return {key: float(np.mean(values)) for key, values in groups.items()}


@dataclass(frozen=True)
class CompositionFamilyBaseline:
    """Train means by reduced formula and by chemical system, and the global train mean."""

    formula_means: dict[str, float]
    system_means: dict[str, float]
    global_mean: float

    @classmethod
    def fit(cls, compositions: Sequence[Composition | str], values: Sequence[float]) -> CompositionFamilyBaseline:
        """Group the train rows (compositions or formulas, with their values); rows without a finite value are
        left out, as they have nothing to average."""
        if len(compositions) != len(values):
            raise ValueError(f"{len(compositions)} compositions but {len(values)} values")
        by_formula: dict[str, list[float]] = defaultdict(list)
        by_system: dict[str, list[float]] = defaultdict(list)
        kept = []
        for composition, value in zip(compositions, values, strict=True):
            if not np.isfinite(value):
                continue
            formula, system = _keys(composition)
            by_formula[formula].append(float(value))
            by_system[system].append(float(value))
            kept.append(float(value))
        if not kept:
            raise ValueError("the baseline needs at least one train row with a finite value")
        return cls(_means(by_formula), _means(by_system), float(np.mean(kept)))

    def predict_one(self, composition: Composition | str) -> tuple[float, str]:
        """The prediction for one crystal and the level that served it (``formula``, ``chemical_system`` or
        ``global``)."""
        formula, system = _keys(composition)
        if formula in self.formula_means:
            return self.formula_means[formula], FORMULA
        if system in self.system_means:
            return self.system_means[system], CHEMICAL_SYSTEM
        return self.global_mean, GLOBAL

    def predict(self, compositions: Sequence[Composition | str]) -> tuple[np.ndarray, list[str]]:
        """Predictions for many crystals and, per crystal, the level that served it."""
        pairs = [self.predict_one(composition) for composition in compositions]
        return np.array([value for value, _ in pairs], dtype=float), [level for _, level in pairs]
