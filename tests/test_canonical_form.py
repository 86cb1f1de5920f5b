"""The canonical form is a true invariant (issue 9): it does not depend on which of the equally correct
labellings spglib happens to produce, whatever cell, setting or supercell the crystal comes in."""

import numpy as np
import pytest
import spglib
from pymatgen.core import Lattice, Structure
from pyxtal.lattice import Lattice as RandomLattice
from pyxtal.symmetry import Group

from wyckoff_hf.evaluation.novelty import novel_templates, wyckoff_uniqueness
from wyckoff_hf.tokenization import WyckoffRepresentation

SYMPREC = 1e-3  # coordinates are exact: a tight tolerance keeps spglib from finding accidental symmetry
ELEMENTS = ("Li", "Mg", "O")
GENERAL_ELEMENTS = ("Na", "Cl")  # two general orbits of different elements: one alone can be more symmetric
VOLUME_PER_ATOM = 20.0
MIN_DISTANCE = 0.5  # Å; a random point this close to a symmetry element merges with its image: draw again


def random_crystal(number: int, rng: np.random.Generator,
                   num_special: int = 3) -> tuple[Structure, list[tuple[str, str]]]:
    """A crystal of group ``number`` built from pyxtal's Wyckoff positions: two general orbits (so the crystal
    keeps exactly this group) and up to ``num_special`` random special positions, random elements, free
    parameters and metric (drawn again while atoms overlap). Returns it and the (element, letter) pairs."""
    while True:
        structure, sites = _draw_crystal(number, rng, num_special)
        distances = structure.distance_matrix + np.eye(len(structure)) * MIN_DISTANCE
        if distances.min() >= MIN_DISTANCE:
            return structure, sites


def _draw_crystal(number: int, rng: np.random.Generator, num_special: int) -> tuple[Structure, list[tuple[str, str]]]:
    group = Group(number)
    general, special = group.Wyckoff_positions[0], group.Wyckoff_positions[1:]
    chosen = [special[i] for i in rng.permutation(len(special))[:num_special]]
    elements = list(GENERAL_ELEMENTS) + [str(rng.choice(ELEMENTS)) for _ in chosen]
    species, coords, sites = [], [], []
    for element, wp in zip(elements, [general, general, *chosen], strict=True):
        orbit = wp.get_all_positions(wp.ops[0].operate(rng.random(3)))
        species += [element] * len(orbit)
        coords += list(orbit)
        sites.append((element, wp.letter))
    volume = VOLUME_PER_ATOM * len(species)
    lattice = RandomLattice(group.lattice_type, volume, random_state=rng).matrix
    return Structure(lattice, species, coords), sites


def spglib_letters(structure: Structure) -> list[tuple[str, str]]:
    """spglib's own labelling, before canonicalisation."""
    cell = (structure.lattice.matrix, structure.frac_coords, np.array(structure.atomic_numbers))
    dataset = spglib.get_symmetry_dataset(cell, symprec=SYMPREC)
    orbits = sorted({int(i) for i in dataset.crystallographic_orbits})
    return sorted((structure[i].specie.symbol, dataset.wyckoffs[i]) for i in orbits)


def _check_round_trip(number: int, seed: int, num_special: int) -> None:
    structure, sites = random_crystal(number, np.random.default_rng(seed), num_special)
    found = WyckoffRepresentation.from_structure(structure, symprec=SYMPREC)
    expected = WyckoffRepresentation.from_sites(number, sites, canonical=True)
    assert found.space_group == number
    assert [(s.element, s.letter) for s in found.sites] == [(s.element, s.letter) for s in expected.sites]


@pytest.mark.parametrize("number", range(1, 231))
def test_spglib_round_trip_keeps_the_canonical_letters(number):
    _check_round_trip(number, seed=number, num_special=3)


@pytest.mark.slow
@pytest.mark.parametrize("number", range(1, 231))
def test_spglib_round_trip_keeps_the_canonical_letters_many_seeds(number):
    for seed in range(1, 11):
        _check_round_trip(number, seed=1000 * seed + number, num_special=2 + seed % 4)


# ------------------------------------------------------------------------------- other cells of one crystal

def _centring_vectors(number: int) -> np.ndarray:
    ops = Group(number)[0].ops
    return np.array([op.translation_vector % 1.0 for op in ops if np.allclose(op.rotation_matrix, np.eye(3))])


def _preserves_centring(matrix: np.ndarray, centrings: np.ndarray) -> bool:
    images = (centrings @ np.linalg.inv(matrix)) % 1.0
    distance = np.abs(images[:, None, :] - centrings[None, :, :])
    return bool(np.all(np.any(np.all(np.minimum(distance, 1 - distance) < 1e-8, axis=2), axis=1)))


def _cell_changes(number: int, rng: np.random.Generator, count: int) -> list[np.ndarray]:
    """Integer basis changes a' = M a that keep the group's axes (unique axis b for monoclinic groups, the
    axes up to order for orthorhombic ones) and its centring: other conventional cells of one crystal."""
    centrings = _centring_vectors(number)
    changes: list[np.ndarray] = []
    while len(changes) < count:
        if number <= 2:
            matrix = rng.integers(-2, 3, size=(3, 3))
        elif number <= 15:
            a, c, d, f = rng.integers(-2, 3, size=4)
            matrix = np.array([[a, 0, c], [0, rng.choice([-1, 1]), 0], [d, 0, f]])
        else:
            matrix = np.eye(3, dtype=int)[rng.permutation(3)] * rng.choice([-1, 1], size=(3, 1))
        if round(abs(np.linalg.det(matrix))) == 1 and _preserves_centring(matrix, centrings):
            changes.append(matrix)
    return changes


def other_cell(structure: Structure, matrix: np.ndarray, lattice_type: str, rng: np.random.Generator) -> Structure:
    """The crystal described in the cell a' = M a, then given a fresh random metric of its lattice type in
    that cell, so spglib's conventional cell is now the one spanned by a': the atoms carry the labelling
    that another cell choice (axis order, origin) gives."""
    frac = structure.frac_coords @ np.linalg.inv(matrix)
    metric = RandomLattice(lattice_type, structure.volume, random_state=rng).matrix
    return Structure(metric, structure.species, frac % 1.0)


@pytest.mark.parametrize("number", [1, 2, 3, 5, 6, 9, 10, 11, 12, 13, 14, 15, 16, 25, 38, 47, 51, 63, 65, 69, 74])
def test_other_cell_choices_give_the_same_canonical_form(number):
    rng = np.random.default_rng(number)
    structure, sites = random_crystal(number, rng, num_special=4)
    expected = WyckoffRepresentation.from_sites(number, sites)
    relabelled = 0
    for matrix in _cell_changes(number, rng, count=6):
        copy = other_cell(structure, matrix, Group(number).lattice_type, rng)
        found = WyckoffRepresentation.from_structure(copy, symprec=SYMPREC)
        assert found == expected, f"cell change {matrix.tolist()}"
        relabelled += spglib_letters(copy) != spglib_letters(structure)
    if number in (2, 10, 11, 12, 13, 14, 15, 47):  # the test must see spglib's raw labelling change
        assert relabelled > 0


@pytest.mark.parametrize("number", [2, 11, 12, 15, 62, 166, 194, 225])
def test_supercells_and_rotations_give_the_same_canonical_form(number):
    rng = np.random.default_rng(number)
    structure, sites = random_crystal(number, rng, num_special=3)
    expected = WyckoffRepresentation.from_sites(number, sites)
    angle = rng.random() * np.pi
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    copies = [
        structure.make_supercell([[2, 0, 0], [0, 1, 0], [0, 0, 1]], in_place=False),
        structure.make_supercell([[1, 1, 0], [-1, 1, 0], [0, 0, 1]], in_place=False),
        Structure(Lattice(structure.lattice.matrix @ rotation.T), structure.species, structure.frac_coords),
    ]
    for copy in copies:
        assert WyckoffRepresentation.from_structure(copy, symprec=SYMPREC) == expected


# ------------------------------------------------------------------------------- known cases

def test_issue_example_p21m():
    # representation → pyxtal → spglib turned the first into the second before the affine normalizer
    first = WyckoffRepresentation.from_sites(11, [("Li", "a"), ("Li", "b"), ("Li", "f"), ("O", "c")])
    second = WyckoffRepresentation.from_sites(11, [("Li", "a"), ("Li", "c"), ("Li", "f"), ("O", "b")])
    assert first == second
    assert [(s.element, s.letter) for s in first.sites] == [("Li", "a"), ("Li", "b"), ("Li", "f"), ("O", "c")]


def test_triclinic_inversion_centres_are_one_orbit_under_cell_changes():
    # any two distinct inversion centres of P-1 are related by an affine map (AGL(3, 2) on the eight)
    reps = {WyckoffRepresentation.from_sites(2, [("Na", "a"), ("Cl", x)]) for x in "bcdefgh"}
    assert reps == {WyckoffRepresentation.from_sites(2, [("Na", "a"), ("Cl", "b")], canonical=False)}


def test_template_is_canonical_without_the_elements():
    li_on_a = WyckoffRepresentation.from_sites(166, [("Li", "a"), ("O", "e")])
    o_on_a = WyckoffRepresentation.from_sites(166, [("O", "a"), ("Li", "e")])
    assert li_on_a.template() != o_on_a.template()  # the element-dependent canonical labellings differ
    assert li_on_a.canonical_template() == o_on_a.canonical_template() == (166, ("a", "e"))
    assert novel_templates([o_on_a], [li_on_a]) == [False]
    assert novel_templates([WyckoffRepresentation.from_sites(166, [("O", "a"), ("Li", "c")])], [li_on_a]) == [True]


def test_uniqueness_counts_relabelled_copies_once():
    first = WyckoffRepresentation.from_sites(11, [("Li", "a"), ("Li", "b"), ("Li", "f"), ("O", "c")], canonical=False)
    second = WyckoffRepresentation.from_sites(11, [("Li", "a"), ("Li", "c"), ("Li", "f"), ("O", "b")],
                                              canonical=False)
    assert wyckoff_uniqueness([first, second]) == 0.5


def test_relabelled_copies_are_the_equivalent_labellings_in_canonical_order():
    rock_salt = WyckoffRepresentation.from_sites(225, [("Na", "a"), ("Cl", "b")])
    assert rock_salt.num_labellings == 2
    assert str(rock_salt.relabelled(1)) == "Fm-3m (225): Na 4b, Cl 4a"
    triclinic = WyckoffRepresentation.from_sites(2, [("Li", "a"), ("Li", "c"), ("O", "i")])
    copies = {triclinic.relabelled(index) for index in range(triclinic.num_labellings)}
    assert triclinic.num_labellings == 1344 and len(copies) == 28  # Li on any 2 of the 8 inversion centres
    for copy in copies:
        assert [site.letter for site in copy.sites][:2] == sorted(site.letter for site in copy.sites[:2])
        assert WyckoffRepresentation.from_sites(2, [(s.element, s.letter) for s in copy.sites]) == triclinic
