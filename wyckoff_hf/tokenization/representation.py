"""The Wyckoff representation of a crystal: its space group and its occupied Wyckoff positions.

structure → ``WyckoffRepresentation.from_structure`` (spglib) → representation → ``to_structure``
(pyxtal) → a new structure with the same symmetry and composition but fresh free parameters and lattice.
"""

from __future__ import annotations

import math
import os
import warnings
from collections import Counter
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

import numpy as np

from .errors import (
    DisorderedStructureError,
    InvalidRepresentationError,
    RealizationError,
    RealizationSymmetryError,
    RealizationTimeoutError,
    StructureParseError,
    SymmetryAnalysisError,
    WyckoffError,
)
from .structure_libraries import structure_library
from .time_limit import TimeLimitExceeded, time_limit
from .wyckoff_tables import SpaceGroupTable, WyckoffPosition, element_electronegativity, space_group_table

if TYPE_CHECKING:  # in a try block, which transformers' remote-code loader does not require to be importable
    try:
        from pymatgen.core import Composition, Structure
    except ImportError:
        raise

StructureLike: TypeAlias = "Structure | str | os.PathLike"
REALISATION_SYMPREC = 0.1  # the tokenizer's default: a realisation must read back as its sample at this tolerance
SYMMETRY_RETRIES = 3  # further pyxtal seeds tried when a realisation reads back as another crystal
FIRST_CUBIC_GROUP = 195


@cache
def electronegativity_key(element: str) -> tuple[float, int]:
    """Sort key of the seed paper: Pauling electronegativity, ties (and noble gases, which have none) by Z.

    The values are frozen in the packaged tables, so the canonical order cannot change with pymatgen.
    """
    try:
        z, x = element_electronegativity(element)
    except KeyError as err:
        raise InvalidRepresentationError(str(err.args[0])) from None
    return (x if not math.isnan(x) else math.inf, z)


@dataclass(frozen=True, slots=True)
class WyckoffSite:
    """One occupied Wyckoff orbit: an element on a Wyckoff position of the space group."""

    element: str
    letter: str
    site_symmetry: str
    enumeration: int
    multiplicity: int
    dof: int

    @classmethod
    def from_position(cls, element: str, position: WyckoffPosition) -> WyckoffSite:
        return cls(element, position.letter, position.site_symmetry, position.enumeration,
                   position.multiplicity, position.dof)

    def __str__(self) -> str:
        return f"{self.element} {self.multiplicity}{self.letter}"


@dataclass(frozen=True, slots=True)
class WyckoffRepresentation:
    """A crystal as (space group, sites), sites in canonical order. Validated on construction."""

    space_group: int
    sites: tuple[WyckoffSite, ...]

    def __post_init__(self) -> None:
        try:
            table = space_group_table(self.space_group)
        except KeyError as err:
            raise InvalidRepresentationError(str(err)) from None
        if not self.sites:
            raise InvalidRepresentationError(f"space group {self.space_group}: a crystal needs at least one site")
        for site in self.sites:
            _check_element(site.element)
            try:
                expected = WyckoffSite.from_position(site.element, table.by_letter(site.letter))
            except KeyError as err:
                raise InvalidRepresentationError(str(err.args[0])) from None
            if site != expected:
                raise InvalidRepresentationError(
                    f"site {site} does not match space group {self.space_group}: expected {expected!r}"
                )
        reused = [
            letter for letter, count in Counter(s.letter for s in self.sites if s.dof == 0).items() if count > 1
        ]
        if reused:
            raise InvalidRepresentationError(
                f"{table.symbol} ({self.space_group}): fixed Wyckoff position(s) {', '.join(reused)} "
                "(0 free parameters) can hold one atom orbit only"
            )

    # ----------------------------------------------------------------------------------------- building

    @classmethod
    def from_sites(cls, space_group: int, sites: list[tuple[str, str]] | tuple[tuple[str, str], ...],
                   canonical: bool = True) -> WyckoffRepresentation:
        """Build from (element, letter) pairs; ``canonical`` picks the canonical labelling and order."""
        pairs = [(str(element), str(letter)) for element, letter in sites]
        try:
            table = space_group_table(space_group)
            for element, letter in pairs:
                table.by_letter(letter)
                _check_element(element)
        except KeyError as err:
            raise InvalidRepresentationError(str(err.args[0])) from None
        if canonical and pairs:  # no sites: __post_init__ says what is wrong
            pairs = canonical_labelling(table, pairs)
        return cls(int(space_group),
                   tuple(WyckoffSite.from_position(element, table.by_letter(letter)) for element, letter in pairs))

    @classmethod
    def from_structure(cls, structure: StructureLike, symprec: float = 0.1,
                       angle_tolerance: float = 5.0) -> WyckoffRepresentation:
        """Analyse a structure (pymatgen ``Structure``, CIF text or CIF path) with spglib.

        One site per symmetry-distinct orbit, letters in the standard setting, then the canonical
        labelling among the affine-normalizer alternatives, so rotated, translated, supercelled or
        permuted copies of one crystal, and other choices of its conventional cell, give the same
        representation. ``symprec`` (Å) must be positive and ``angle_tolerance`` (degrees) non-negative,
        or -1 for spglib's own default; both finite (spglib crashes on some invalid values).
        """
        return cls.from_sites(*spglib_sites(structure, symprec, angle_tolerance))

    # ----------------------------------------------------------------------------------------- views

    @property
    def symbol(self) -> str:
        return space_group_table(self.space_group).symbol

    @property
    def num_atoms(self) -> int:
        """Atoms in the conventional cell: the sum of the multiplicities."""
        return sum(site.multiplicity for site in self.sites)

    @property
    def num_primitive_atoms(self) -> int:
        """Atoms in the primitive cell: those of the conventional cell over its lattice points."""
        return self.num_atoms // space_group_table(self.space_group).lattice_points

    @property
    def composition(self) -> Composition:
        """Composition of the conventional cell."""
        counts: Counter[str] = Counter()
        for site in self.sites:
            counts[site.element] += site.multiplicity
        return structure_library("pymatgen.core").Composition(dict(counts))

    @property
    def rigid(self) -> bool:
        """Every site fixed in a cubic group: one structure up to scale, whatever the seed of a placement."""
        return self.space_group >= FIRST_CUBIC_GROUP and all(site.dof == 0 for site in self.sites)

    @property
    def elements(self) -> tuple[str, ...]:
        """Distinct elements, in site order."""
        return tuple(dict.fromkeys(site.element for site in self.sites))

    def template(self) -> tuple[int, tuple[str, ...]]:
        """The representation with elements abstracted away (space group and letters, in order)."""
        return (self.space_group, tuple(sorted(site.letter for site in self.sites)))

    def canonical_template(self) -> tuple[int, tuple[str, ...]]:
        """The template, minimised over the group's relabellings (letters in ITA order).

        Not the template of the canonical form: that labelling is chosen for the elements, so R-3m
        {Li 3a, O 9e} and {O 3a, Li 9e} would give different templates of one element-free structure type.
        """
        table = space_group_table(self.space_group)
        letters = np.array([table.letter_index(site.letter) for site in self.sites])
        best = _smallest_row(np.sort(table.relabelling_indices[:, letters], axis=1))
        return (self.space_group, tuple(table.positions[i].letter for i in best))

    @property
    def num_labellings(self) -> int:
        """How many relabellings the group's affine normalizer induces (the identity included): the labellings
        ``relabelled`` can give; several may coincide for a given crystal."""
        return len(space_group_table(self.space_group).relabellings)

    def relabelled(self, index: int) -> WyckoffRepresentation:
        """The same crystal under relabelling ``index`` (``0 ≤ index < num_labellings``) of its group's affine
        normalizer, sites in canonical order: an equally correct Wyckoff labelling of it, not necessarily the
        canonical one (training augmentation draws these, as the WyckoffTransformer authors do)."""
        table = space_group_table(self.space_group)
        relabel = table.relabellings[index]
        pairs = sorted(((site.element, relabel[site.letter]) for site in self.sites),
                       key=lambda pair: (electronegativity_key(pair[0]), table.letter_index(pair[1])))
        return WyckoffRepresentation.from_sites(self.space_group, pairs, canonical=False)

    def __str__(self) -> str:
        return f"{self.symbol} ({self.space_group}): " + ", ".join(str(site) for site in self.sites)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict; ``from_dict`` inverts it (and re-validates)."""
        return {
            "space_group": self.space_group,
            "sites": [[site.element, site.letter] for site in self.sites],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> WyckoffRepresentation:
        try:
            space_group, sites = int(data["space_group"]), [tuple(site) for site in data["sites"]]
        except (KeyError, TypeError, ValueError) as err:
            raise InvalidRepresentationError(f"not a Wyckoff representation dict: {data!r} ({err})") from None
        return cls.from_sites(space_group, sites, canonical=False)

    # ----------------------------------------------------------------------------------------- to 3D

    def to_structure(self, seed: int | None = None, max_attempts: int = 10, factor: float = 1.1,
                     timeout: float | None = 10.0, symprec: float | None = REALISATION_SYMPREC,
                     symmetry_retries: int = SYMMETRY_RETRIES) -> Structure:
        """A random 3D structure with this symmetry through pyxtal (conventional cell).

        pyxtal samples the lattice and free coordinates; some combinations cannot be placed without
        overlaps. It is given ``max_attempts`` tries and, in a main thread, ``timeout`` seconds for the whole
        call (its attempts are not bounded in time: 13 orbits on one 1-dof position of R3m took 89 s to fail);
        then a ``RealizationError`` names the representation.

        pyxtal's placement can have more symmetry than asked for (Fm-3m Li 4a, Li 4b, Cd 8c is a CsCl-type
        Pm-3m crystal whatever the seed; a free coordinate drawn near a special value merges orbits), and such a
        structure is not the sample: it would be scored as the sampled group. So the structure is analysed as
        the tokenizer analyses a CIF (spglib at ``symprec``, the tokenizer's default) and must give this
        representation back; otherwise pyxtal is tried again with ``symmetry_retries`` other seeds (derived
        from ``seed``, so the result stays deterministic), and then a ``RealizationSymmetryError`` says what was
        realised instead. ``symprec=None`` skips the check.
        """
        if symmetry_retries < 0:
            raise ValueError(f"symmetry_retries must be non-negative, got {symmetry_retries}")
        expected = self.canonical() if symprec is not None else None
        seeds = [seed] + [None if seed is None else _retry_seed(seed, retry)
                          for retry in range(1, 1 + (0 if self.rigid else symmetry_retries))]
        read_back: list[WyckoffRepresentation | None] = []
        try:
            with time_limit(timeout):
                for attempt_seed in seeds:
                    try:
                        structure = self._pyxtal_structure(attempt_seed, max_attempts, factor)
                    except RealizationError:
                        if not read_back:  # the first seed: pyxtal's failure is the answer
                            raise
                        continue  # a retry that pyxtal cannot place: the symmetry failure stays the reason
                    if expected is None:
                        return structure
                    read_back.append(_realised_representation(structure, symprec))
                    if read_back[-1] == expected:
                        return structure
        except TimeLimitExceeded:
            if timeout is None:  # an enclosing limit (a caller's time_limit) expired: it is the caller's to handle
                raise
            raise RealizationTimeoutError(f"pyxtal could not realise {self} within {timeout} s") from None
        found = read_back[-1]  # what the last placement read back as
        if found is None or found.space_group == self.space_group:
            what = f"realised as {found or 'a structure spglib cannot analyse'}, sampled {self}"
        else:
            what = (f"realised in group {found.space_group} ({found.symbol}), sampled {self.space_group} "
                    f"({self.symbol})")
        if self.rigid:
            why = "every site is fixed in a cubic cell, so no seed can realise it in its group"
        else:
            why = f"{len(read_back)} of {len(seeds)} pyxtal seeds placed it, none as sampled (spglib symprec {symprec})"
        raise RealizationSymmetryError(f"{what}: {why}")

    def canonical(self) -> WyckoffRepresentation:
        """The same crystal in the canonical labelling and site order (what ``from_structure`` returns for it)."""
        return WyckoffRepresentation.from_sites(self.space_group, [(s.element, s.letter) for s in self.sites])

    def _pyxtal_structure(self, seed: int | None, max_attempts: int, factor: float) -> Structure:
        """One pyxtal placement (``max_attempts`` tries), unchecked; ``RealizationError`` if pyxtal gives up."""
        pyxtal = structure_library("pyxtal").pyxtal
        species = list(self.elements)
        num_ions = [sum(s.multiplicity for s in self.sites if s.element == e) for e in species]
        sites = [[f"{s.multiplicity}{s.letter}" for s in self.sites if s.element == e] for e in species]
        crystal = pyxtal()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                crystal.from_random(3, self.space_group, species, num_ions, factor=factor, sites=sites,
                                    max_count=max_attempts, random_state=seed)
                structure = crystal.to_pymatgen()
        except TimeLimitExceeded:
            raise
        except Exception as err:  # pyxtal raises RuntimeError and assorted others for impossible placements
            raise RealizationError(f"pyxtal could not realise {self} in {max_attempts} attempts: {err}") from err
        if not crystal.valid:
            raise RealizationError(f"pyxtal could not realise {self} in {max_attempts} attempts")
        return structure


def _retry_seed(seed: int, retry: int) -> int:
    """The pyxtal seed of symmetry retry ``retry`` of a sample seeded ``seed``: a stream of its own (``seed + 1``
    is the next sample's seed)."""
    return int(np.random.SeedSequence([seed % 2**64, retry]).generate_state(1)[0])


def _realised_representation(structure: Structure, symprec: float) -> WyckoffRepresentation | None:
    """What the tokenizer reads back from a realised structure, or ``None`` if spglib cannot analyse it."""
    try:
        return WyckoffRepresentation.from_structure(structure, symprec)
    except WyckoffError:
        return None


def spglib_sites(structure: StructureLike, symprec: float = 0.1,
                 angle_tolerance: float = 5.0) -> tuple[int, list[tuple[str, str]]]:
    """spglib's space group and one (element, letter) per symmetry-distinct orbit, in spglib's labelling
    (one of the equally correct ones: ``canonical_labelling`` picks the canonical one)."""
    _check_tolerances(symprec, angle_tolerance)
    spglib = structure_library("spglib")
    structure = load_structure(structure)
    if len(structure) == 0:
        raise StructureParseError("the structure has no atoms")
    if not structure.is_ordered:
        raise DisorderedStructureError(
            f"{structure.composition.reduced_formula}: partial occupancies; one element per site is required"
        )
    cell = (structure.lattice.matrix, structure.frac_coords, np.array(structure.atomic_numbers))
    try:
        dataset = spglib.get_symmetry_dataset(cell, symprec=symprec, angle_tolerance=angle_tolerance)
    except spglib.error.SpglibError as err:  # spglib 2 raises where spglib 1 returned None
        raise SymmetryAnalysisError(f"{structure.composition.reduced_formula}: spglib failed: {err} "
                                    f"(symprec={symprec}, angle_tolerance={angle_tolerance})") from err
    if dataset is None:
        raise SymmetryAnalysisError(
            f"{structure.composition.reduced_formula}: spglib found no space group "
            f"(symprec={symprec}, angle_tolerance={angle_tolerance})"
        )
    # crystallographic_orbits (unlike equivalent_atoms) also merges copies related by the pure
    # translations of a supercell, so one orbit of the primitive crystal stays one site.
    orbits = sorted({int(i) for i in dataset.crystallographic_orbits})
    species = [structure[i].specie.symbol for i in orbits]
    letters = [dataset.wyckoffs[i] for i in orbits]
    return int(dataset.number), list(zip(species, letters, strict=True))


def _check_tolerances(symprec: float, angle_tolerance: float) -> None:
    """A plain ``ValueError`` (not a ``WyckoffError``): a bad setting must stop a batch, not skip each row."""
    if not (math.isfinite(symprec) and symprec > 0):
        raise ValueError(f"symprec must be a positive finite distance in Å, got {symprec!r}")
    if not (math.isfinite(angle_tolerance) and (angle_tolerance >= 0 or angle_tolerance == -1)):
        raise ValueError(f"angle_tolerance must be a non-negative finite angle in degrees (or -1 for spglib's "
                         f"default), got {angle_tolerance!r}")


def _check_element(element: str) -> None:
    try:
        element_electronegativity(element)  # the frozen element table, so decoding ids needs no pymatgen
    except KeyError as err:
        raise InvalidRepresentationError(str(err.args[0])) from None


def _smallest_row(rows: np.ndarray) -> np.ndarray:
    """The lexicographically smallest row of a 2D integer array."""
    return rows[np.lexsort(rows.T[::-1])[0]]


def canonical_labelling(table: SpaceGroupTable, sites: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Among the normalizer relabellings, the one whose canonically ordered sites sort first.

    Sites sort by (electronegativity key, letter index). The key is fixed per element, so under each
    relabelling the ordered sites are the elements in key order, each with its letter indices sorted: one
    integer row per relabelling (element rank * letters + letter index), and the smallest row wins.
    """
    elements = sorted({element for element, _ in sites}, key=electronegativity_key)
    rank = {element: r for r, element in enumerate(elements)}
    width = len(table.positions)
    letters = np.array([table.letter_index(letter) for _, letter in sites])
    ranks = np.array([rank[element] for element, _ in sites])
    rows = np.sort(ranks * width + table.relabelling_indices[:, letters], axis=1)
    return [(elements[value // width], table.positions[value % width].letter) for value in _smallest_row(rows)]


def load_structure(source: StructureLike) -> Structure:
    """A pymatgen ``Structure`` from itself, CIF text or a CIF file path; ``StructureParseError`` otherwise."""
    Structure = structure_library("pymatgen.core").Structure
    if isinstance(source, Structure):
        return source
    if isinstance(source, os.PathLike) or (isinstance(source, str) and "\n" not in source):
        path = Path(source)
        if not path.is_file():
            raise StructureParseError(f"no such CIF file: {str(source)[:200]!r}")
        text = path.read_text()
    elif isinstance(source, str):
        text = source
    else:
        raise StructureParseError(f"expected a pymatgen Structure, CIF text or a path, got {type(source).__name__}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return Structure.from_str(text, fmt="cif")
    except Exception as err:  # pymatgen raises ValueError, IndexError, KeyError... for broken CIFs
        raise StructureParseError(f"unparseable CIF: {type(err).__name__}: {err}") from err
