"""Symmetry metrics: the P1 fraction and how the space-group and crystal-system distributions compare.

Generative models that ignore symmetry put most samples in P1 (or P-1) while real crystals are mostly
symmetric. The P1 fraction and the total-variation distance between the space-group distributions of
generated and test crystals measure that directly; the crystal-system distribution is a coarser view
that small sample sets can still resolve (230 groups need many samples for a stable TV estimate).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Iterable, Mapping, Sequence
from pathlib import Path

from ..tokenization import WyckoffRepresentation
from .statistics import crystal_system
from .validity import fraction

CRYSTAL_SYSTEMS = ("triclinic", "monoclinic", "orthorhombic", "tetragonal", "trigonal", "hexagonal", "cubic")


def distribution(values: Iterable[Hashable]) -> dict[Hashable, float]:
    """Empirical probabilities of the values (an empty input gives an empty distribution)."""
    counts = Counter(values)
    total = sum(counts.values())
    return {value: count / total for value, count in counts.items()}


def total_variation_distance(p: Mapping[Hashable, float], q: Mapping[Hashable, float]) -> float:
    """TV(p, q) = ½ Σ_x |p(x) − q(x)| ∈ [0, 1]: the largest difference in probability of any event."""
    return 0.5 * sum(abs(p.get(x, 0.0) - q.get(x, 0.0)) for x in set(p) | set(q))


def p1_fraction(representations: Sequence[WyckoffRepresentation]) -> float | None:
    """Representations in space group 1 (P1) / representations."""
    return fraction(sum(rep.space_group == 1 for rep in representations), len(representations))


def symmetry_metrics(generated: Sequence[WyckoffRepresentation],
                     reference: Sequence[WyckoffRepresentation]) -> dict[str, object]:
    """P1 fraction of both sets, TV distances of the space-group and crystal-system distributions
    (``None`` when either set is empty), and the two crystal-system distributions in a fixed order."""
    sg_gen = distribution(rep.space_group for rep in generated)
    sg_ref = distribution(rep.space_group for rep in reference)
    cs_gen = distribution(crystal_system(rep.space_group) for rep in generated)
    cs_ref = distribution(crystal_system(rep.space_group) for rep in reference)
    both = bool(generated) and bool(reference)
    return {
        "p1_fraction": p1_fraction(generated),
        "p1_fraction_reference": p1_fraction(reference),
        "space_group_tv": total_variation_distance(sg_gen, sg_ref) if both else None,
        "crystal_system_tv": total_variation_distance(cs_gen, cs_ref) if both else None,
        "crystal_systems": {name: cs_gen.get(name, 0.0) for name in CRYSTAL_SYSTEMS},
        "crystal_systems_reference": {name: cs_ref.get(name, 0.0) for name in CRYSTAL_SYSTEMS},
    }


def plot_space_groups(groups: Mapping[str, Sequence[WyckoffRepresentation]], path: str | Path) -> Path:
    """Bar chart of the space-group frequencies of each named set, one colour per set, saved as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    fig, ax = plt.subplots(figsize=(12, 4))
    width = 0.8 / max(1, len(groups))
    for k, (name, reps) in enumerate(groups.items()):
        dist = distribution(rep.space_group for rep in reps)
        numbers = sorted(dist)
        ax.bar([n - 0.4 + (k + 0.5) * width for n in numbers], [dist[n] for n in numbers], width=width,
               label=f"{name} ({len(reps)})")
    ax.set_xlabel("space group number")
    ax.set_ylabel("fraction")
    ax.set_xlim(0, 231)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
