"""Summary statistics and distribution plots of sets of Wyckoff representations.

Used for the prepared dataset (one group per split) and by the evaluation (generated vs test): the
seed paper compares the distributions of the number of elements and of Wyckoff sites.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import Any

from pymatgen.symmetry.groups import SpaceGroup

from ..tokenization import WyckoffRepresentation

COUNTED_PROPERTIES: dict[str, Callable[[WyckoffRepresentation], int]] = {
    "num_elements": lambda rep: len(rep.elements),
    "num_sites": lambda rep: len(rep.sites),
    "num_atoms": lambda rep: rep.num_atoms,
}
MAX_BINS = 40
PROPERTY_LABELS = {
    "num_elements": "number of elements",
    "num_sites": "number of Wyckoff sites",
    "num_atoms": "atoms in the conventional cell",
}


@cache
def crystal_system(space_group: int) -> str:
    """The crystal system of a space group number, as pymatgen names it."""
    return SpaceGroup.from_int_number(space_group).crystal_system


def _distribution(values: Iterable[Any]) -> dict[str, int]:
    """Counts keyed by the value as a string (JSON keys), sorted by value."""
    return {str(value): count for value, count in sorted(Counter(values).items())}


def representation_statistics(reps: Sequence[WyckoffRepresentation]) -> dict[str, Any]:
    """Counts over a set of representations: size, space groups, crystal systems, elements, sites, atoms.

    ``num_atoms`` is the conventional cell's atom count (the sum of the site multiplicities).
    """
    stats: dict[str, Any] = {
        "num_structures": len(reps),
        "space_group": _distribution(rep.space_group for rep in reps),
        "crystal_system": dict(Counter(crystal_system(rep.space_group) for rep in reps).most_common()),
    }
    for name, value in COUNTED_PROPERTIES.items():
        values = [value(rep) for rep in reps]
        stats[name] = _distribution(values)
        stats[f"mean_{name}"] = sum(values) / len(values) if values else None
    return stats


def plot_distributions(groups: Mapping[str, Sequence[WyckoffRepresentation]], path: str | Path) -> Path:
    """Normalised histograms of #elements, #Wyckoff sites and #atoms, one series per group; saved to ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(COUNTED_PROPERTIES), figsize=(5 * len(COUNTED_PROPERTIES), 3.8))
    for ax, (name, value) in zip(axes, COUNTED_PROPERTIES.items(), strict=True):
        series = {label: [value(rep) for rep in reps] for label, reps in groups.items() if len(reps)}
        top = max((max(v) for v in series.values()), default=1)
        width = max(1, math.ceil(top / MAX_BINS))  # one bin per integer unless the range is wide
        edges = [x - 0.5 for x in range(1, top + width + 1, width)]
        if series:
            ax.hist(list(series.values()), bins=edges, density=True, label=list(series), histtype="bar")
            ax.legend()
        ax.set_xlabel(PROPERTY_LABELS[name])
        ax.set_ylabel("fraction of structures")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
