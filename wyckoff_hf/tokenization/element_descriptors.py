"""Chemical descriptors of the elements, the model's prior knowledge of chemistry.

A learned element embedding knows an element only from the crystals it occurs in: MP-20's binaries and ternaries
hold a few elements hundreds of times and many a few dozen times. Descriptors from pymatgen's periodic table tell
the model what it cannot learn from a few crystals: that Se is an anion like S, that Sm and Nd take the same
oxidation state. The model projects them into the element embedding (``WyckoffTransformerConfig.
element_descriptors``); the table is frozen into its weights when it is built, so a saved model does not depend on
the pymatgen version that loads it.

Per element: Pauling electronegativity, period and group, atomic radius (these four standardised over the elements
of the vocabulary, 0 where pymatgen has no value, e.g. the electronegativity of He), the block (s, p, d, f: one-hot),
whether it is a metal, and its common oxidation states (one-hot over -4..+8), which charge balance is made of.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from functools import cache

import numpy as np

from .structure_libraries import structure_library

BLOCKS = ("s", "p", "d", "f")
OXIDATION_STATES = tuple(range(-4, 9))
CONTINUOUS = ("electronegativity", "period", "group", "atomic_radius")
DESCRIPTOR_NAMES = (*CONTINUOUS, *(f"block_{b}" for b in BLOCKS), "is_metal",
                    *(f"oxidation_state_{s:+d}" for s in OXIDATION_STATES))


@cache
def _raw_descriptors(symbol: str) -> tuple[float, ...]:
    """Unscaled descriptors of one element (NaN where pymatgen has no value)."""
    element = structure_library("pymatgen.core").Element(symbol)
    with warnings.catch_warnings():  # pymatgen warns for elements without an electronegativity or a radius
        warnings.simplefilter("ignore")
        electronegativity = float(element.X)
        radius = element.atomic_radius
    states = set(element.common_oxidation_states)
    return (electronegativity, float(element.row), float(element.group),
            float(radius) if radius is not None else math.nan,
            *(float(element.block == b) for b in BLOCKS), float(element.is_metal),
            *(float(s in states) for s in OXIDATION_STATES))


def element_descriptor_table(symbols: Sequence[str | None]) -> list[list[float]]:
    """One row of ``len(DESCRIPTOR_NAMES)`` descriptors per symbol; ``None`` (a special token) gets zeros.

    The continuous descriptors are standardised over the elements given, so every column is on the scale of the
    embedding's initialisation; a missing value becomes the column's mean (0)."""
    elements = [s for s in symbols if s is not None]
    raw = np.array([_raw_descriptors(s) for s in elements]).reshape(len(elements), len(DESCRIPTOR_NAMES))
    continuous = raw[:, :len(CONTINUOUS)]
    mean, std = np.nanmean(continuous, axis=0), np.nanstd(continuous, axis=0)
    raw[:, :len(CONTINUOUS)] = np.nan_to_num((continuous - mean) / np.where(std > 0, std, 1.0))
    rows = iter(raw.tolist())
    return [next(rows) if s is not None else [0.0] * len(DESCRIPTOR_NAMES) for s in symbols]
