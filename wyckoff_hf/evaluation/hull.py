"""An offline convex hull from the shared Materials Project data, and CHGNet energies put on its scale.

Method. Every row of an MP-derived dataset carries its DFT formation energy per atom and its energy above
MP's hull; their difference is the hull's own formation energy at that composition. ``mp_hull_points``
collects these points (one per reduced formula, the lowest where sources disagree), and
``ConvexHullReference`` builds, per chemical system, a pymatgen ``PhaseDiagram`` from the points of all
its subsystems plus the elements at 0 eV/atom. A CHGNet total energy becomes a formation energy with
per-element reference energies μ fitted once by least squares on DFT-relaxed MP structures,
E_CHGNet − Σ n_el μ_el ≈ N · E_form (``fit_element_references``); the μ absorb CHGNet's elemental
offsets and the composition-independent part of MP's energy corrections.

Limits (it is a proxy). The hull is exact only at compositions the data covers: between them, the convex
hull of a subset of MP's hull points lies on or above MP's hull, so an energy above hull is a lower bound
(optimistic), most of all in chemical systems the data barely samples. The μ fit has a residual (its MAE
is stored with the table and printed in reports); corrections that depend on the chemistry (the GGA+U
corrections of transition metals in oxides and fluorides) are averaged away, not modelled.

The tables ship in ``wyckoff_hf/evaluation/data/`` and are rebuilt with ``python scripts/build_hull_tables.py``.
"""

from __future__ import annotations

import json
import re
import warnings
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from itertools import combinations
from pathlib import Path

import numpy as np
from pymatgen.analysis.phase_diagram import PDEntry, PhaseDiagram
from pymatgen.core import Composition, Structure

DATA_DIR = Path(__file__).parent / "data"
HULL_POINTS_FILE = DATA_DIR / "mp_hull_points.json"
ELEMENT_REFERENCES_FILE = DATA_DIR / "chgnet_element_references.json"
REBUILD_COMMAND = "python scripts/build_hull_tables.py"
# energy-above-hull column of each shared dataset (CDVAE's MP-20 and DiffCSP's MPTS-52 name it differently)
ABOVE_HULL_COLUMNS = ("e_above_hull", "energy_above_hull")
_FORMULA_SUM = re.compile(r"_chemical_formula_sum\s+'?([^'\n]+)'?")


class MissingReferenceError(ValueError):
    """A composition has an element the fitted CHGNet reference energies do not cover."""


def cif_formula(cif: str) -> str:
    """Reduced formula from a CIF's ``_chemical_formula_sum`` (no structure parsing: the table has 10⁴ rows)."""
    match = _FORMULA_SUM.search(cif)
    return Composition(match.group(1) if match else Structure.from_str(cif, fmt="cif").composition).reduced_formula


def mp_hull_points(rows: Iterable[Mapping[str, object]]) -> dict[str, float]:
    """Reduced formula → MP hull formation energy (eV/atom), from rows with ``cif``,
    ``formation_energy_per_atom`` and one of ``ABOVE_HULL_COLUMNS``."""
    points: dict[str, float] = {}
    for row in rows:
        column = next((c for c in ABOVE_HULL_COLUMNS if c in row), None)
        if column is None:
            raise ValueError(f"row {row.get('material_id', '?')} has none of the columns {ABOVE_HULL_COLUMNS}")
        formula = cif_formula(str(row["cif"]))
        energy = float(row["formation_energy_per_atom"]) - float(row[column])
        points[formula] = min(energy, points.get(formula, np.inf))
    return points


def fit_element_references(compositions: Sequence[Composition], total_energies: Sequence[float],
                           formation_energies_per_atom: Sequence[float]) -> tuple[dict[str, float], np.ndarray]:
    """Least-squares μ_el with E_total − Σ n_el μ_el ≈ N · E_form; returns μ and the per-atom residuals
    (CHGNet formation energy − DFT formation energy, eV/atom)."""
    elements = sorted({el.symbol for c in compositions for el in c.elements})
    column = {el: j for j, el in enumerate(elements)}
    counts = np.zeros((len(compositions), len(elements)))
    for i, composition in enumerate(compositions):
        for el, amount in composition.get_el_amt_dict().items():
            counts[i, column[el]] = amount
    atoms = counts.sum(axis=1)
    target = np.asarray(total_energies) - atoms * np.asarray(formation_energies_per_atom)
    mu, *_ = np.linalg.lstsq(counts, target, rcond=None)
    residuals = (target - counts @ mu) / atoms
    return dict(zip(elements, mu.tolist(), strict=True)), residuals


@dataclass
class ConvexHullReference:
    """MP hull points (reduced formula → formation energy per atom) and CHGNet's element references (eV/atom)."""

    points: dict[str, float]
    references: dict[str, float]
    fit: dict[str, object] = field(default_factory=dict)  # how the references were fitted (rows, MAE)
    _by_system: dict[frozenset[str], list[tuple[str, float]]] = field(default_factory=dict, repr=False)
    _diagrams: dict[tuple[str, ...], PhaseDiagram] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        by_system: dict[frozenset[str], list[tuple[str, float]]] = defaultdict(list)
        for formula, energy in self.points.items():
            by_system[frozenset(el.symbol for el in Composition(formula).elements)].append((formula, energy))
        self._by_system = dict(by_system)

    @classmethod
    def load(cls, hull_points: str | Path = HULL_POINTS_FILE,
             element_references: str | Path = ELEMENT_REFERENCES_FILE) -> ConvexHullReference:
        """The packaged tables (or others written by ``scripts/build_hull_tables.py``)."""
        points = json.loads(Path(hull_points).read_text())["points"]
        references = json.loads(Path(element_references).read_text())
        return cls(points, references["references"], references["fit"])

    def covers(self, composition: Composition | str) -> bool:
        """The data has a hull point at exactly this composition (where the proxy is exact)."""
        return Composition(composition).reduced_formula in self.points

    def formation_energy_per_atom(self, composition: Composition, total_energy: float) -> float:
        """CHGNet total energy (eV) → formation energy per atom on MP's scale."""
        amounts = composition.get_el_amt_dict()
        missing = sorted(set(amounts) - set(self.references))
        if missing:
            raise MissingReferenceError(f"{composition.reduced_formula}: no CHGNet reference energy for {missing} "
                                        f"(the fit in {ELEMENT_REFERENCES_FILE.name} had no structure with it)")
        return (total_energy - sum(n * self.references[el] for el, n in amounts.items())) / composition.num_atoms

    def phase_diagram(self, elements: Iterable[str]) -> PhaseDiagram:
        """The hull of one chemical system: hull points of every subsystem, elements at 0 eV/atom (cached)."""
        system = tuple(sorted(set(elements)))
        if system not in self._diagrams:
            entries = [PDEntry(Composition(el), 0.0) for el in system]
            for size in range(2, len(system) + 1):
                for subsystem in combinations(system, size):
                    for formula, energy in self._by_system.get(frozenset(subsystem), ()):
                        composition = Composition(formula)
                        entries.append(PDEntry(composition, energy * composition.num_atoms))
            self._diagrams[system] = PhaseDiagram(entries)
        return self._diagrams[system]

    def e_above_hull(self, composition: Composition | str, formation_energy_per_atom: float) -> float:
        """Energy above the hull (eV/atom); negative when the point lies below it (a new hull phase)."""
        composition = Composition(composition)
        with warnings.catch_warnings():  # pymatgen orders formulas by electronegativity and warns, for an element
            # without one (Fl, sampled now and then), that it sorts it last; the hull does not depend on it
            warnings.filterwarnings("ignore", message="No Pauling electronegativity")
            diagram = self.phase_diagram(el.symbol for el in composition.elements)
            entry = PDEntry(composition, formation_energy_per_atom * composition.num_atoms)
            _, above = diagram.get_decomp_and_e_above_hull(entry, allow_negative=True, check_stable=False)
        return float(above)

    def chgnet_e_above_hull(self, structure: Structure, total_energy: float) -> float:
        """Energy above hull of a structure from its CHGNet total energy."""
        composition = structure.composition
        return self.e_above_hull(composition, self.formation_energy_per_atom(composition, total_energy))


@cache
def packaged_hull() -> ConvexHullReference:
    """The shipped tables, loaded once per process."""
    return ConvexHullReference.load()


def packaged_e_above_hull(structure: Structure, total_energy: float) -> float:
    """``chgnet_e_above_hull`` on the shipped tables; a module-level function, so it pickles into a pool."""
    return packaged_hull().chgnet_e_above_hull(structure, total_energy)

