"""Structure → Wyckoff representation → structure, on crystals whose answers are known."""

from collections import Counter

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure
from pymatgen.core.operations import SymmOp

from wyckoff_hf.tokenization import (
    DisorderedStructureError,
    InvalidRepresentationError,
    RealizationError,
    RealizationSymmetryError,
    StructureParseError,
    WyckoffError,
    WyckoffRepresentation,
    representations_from_structures,
    space_group_table,
)


def crystal(space_group, lattice, species, coords):
    return Structure.from_spacegroup(space_group, lattice, species, coords)


KNOWN = {
    "NaCl": (crystal("Fm-3m", Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]]),
             "Fm-3m (225): Na 4a, Cl 4b"),
    "Si": (crystal("Fd-3m", Lattice.cubic(5.43), ["Si"], [[0, 0, 0]]), "Fd-3m (227): Si 8a"),
    "CsCl": (crystal("Pm-3m", Lattice.cubic(4.12), ["Cs", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]]),
             "Pm-3m (221): Cs 1a, Cl 1b"),
    "rutile": (crystal(136, Lattice.tetragonal(4.594, 2.959), ["Ti", "O"], [[0, 0, 0], [0.305, 0.305, 0]]),
               "P4_2/mnm (136): Ti 2a, O 4f"),
    "wurtzite": (crystal(186, Lattice.hexagonal(3.25, 5.21), ["Zn", "O"], [[1 / 3, 2 / 3, 0], [1 / 3, 2 / 3, 0.382]]),
                 "P6_3mc (186): Zn 2b, O 2b"),
    "SrTiO3": (crystal(221, Lattice.cubic(3.905), ["Sr", "Ti", "O"], [[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0.5, 0]]),
               "Pm-3m (221): Sr 1a, Ti 1b, O 3c"),
}


def _plain(text: str) -> str:
    return text.replace("_", "")


@pytest.mark.parametrize("name", KNOWN)
def test_known_crystals_exact(name):
    structure, expected = KNOWN[name]
    assert _plain(str(WyckoffRepresentation.from_structure(structure))) == _plain(expected)


def test_known_crystal_fields():
    rep = WyckoffRepresentation.from_structure(KNOWN["rutile"][0])
    assert rep.space_group == 136
    assert [(s.element, s.letter, s.site_symmetry, s.enumeration, s.multiplicity, s.dof) for s in rep.sites] == [
        ("Ti", "a", "m.mm", 0, 2, 0), ("O", "f", "m.2m", 0, 4, 1)]
    assert rep.num_atoms == 6 and rep.composition.reduced_formula == "TiO2"


def _rotated(structure: Structure) -> Structure:
    op = SymmOp.from_axis_angle_and_translation([1, 2, 3], 37.0)
    return Structure(Lattice(structure.lattice.matrix @ op.rotation_matrix.T), structure.species,
                     structure.frac_coords)


def _translated(structure: Structure) -> Structure:
    moved = structure.copy()
    moved.translate_sites(list(range(len(moved))), [0.5, 0.13, 0.29])
    return moved


def _supercell(structure: Structure) -> Structure:
    return structure * (2, 1, 1)


def _permuted(structure: Structure) -> Structure:
    order = np.random.default_rng(0).permutation(len(structure))
    return Structure(structure.lattice, [structure.species[i] for i in order], structure.frac_coords[order])


@pytest.mark.parametrize("name", KNOWN)
@pytest.mark.parametrize("transform", [_rotated, _translated, _supercell, _permuted])
def test_invariance(name, transform):
    structure = KNOWN[name][0]
    assert WyckoffRepresentation.from_structure(transform(structure)) == WyckoffRepresentation.from_structure(structure)


def test_origin_shift_relabelling_is_canonicalised():
    # spglib labels NaCl shifted by (1/2,0,0) with Na on 4b and Cl on 4a; the canonical labelling undoes that.
    shifted = _translated(KNOWN["NaCl"][0])
    assert [s.letter for s in WyckoffRepresentation.from_structure(shifted).sites] == ["a", "b"]
    assert WyckoffRepresentation.from_sites(225, [("Na", "b"), ("Cl", "a")]) == \
        WyckoffRepresentation.from_sites(225, [("Cl", "b"), ("Na", "a")])


def test_cif_text_and_path_inputs(tmp_path):
    structure = KNOWN["CsCl"][0]
    path = tmp_path / "cscl.cif"
    structure.to(filename=str(path))
    expected = WyckoffRepresentation.from_structure(structure)
    assert WyckoffRepresentation.from_structure(path) == expected
    assert WyckoffRepresentation.from_structure(str(path)) == expected
    assert WyckoffRepresentation.from_structure(path.read_text()) == expected


def test_bad_inputs_raise_specific_errors(tmp_path):
    disordered = KNOWN["NaCl"][0].copy()
    disordered.replace_species({"Na": {"Na": 0.5, "K": 0.5}})
    with pytest.raises(DisorderedStructureError, match="partial occupancies"):
        WyckoffRepresentation.from_structure(disordered)
    with pytest.raises(StructureParseError, match="no atoms"):
        WyckoffRepresentation.from_structure(Structure(Lattice.cubic(3), [], []))
    with pytest.raises(StructureParseError, match="unparseable CIF"):
        WyckoffRepresentation.from_structure("data_broken\n_cell_length_a 3\nnonsense\n")
    with pytest.raises(StructureParseError, match="no such CIF file"):
        WyckoffRepresentation.from_structure(tmp_path / "missing.cif")


@pytest.mark.parametrize(("symprec", "angle_tolerance", "message"), [
    (-1.0, 5.0, "symprec must be a positive"), (0.0, 5.0, "symprec"), (float("nan"), 5.0, "symprec"),
    (float("inf"), 5.0, "symprec"), (0.1, -2.0, "angle_tolerance must be"), (0.1, float("nan"), "angle_tolerance"),
])
def test_invalid_tolerances_fail_before_spglib(symprec, angle_tolerance, message):
    # spglib segfaults on symprec=-1; a bad setting is a plain ValueError, so a batch stops instead of skipping rows
    with pytest.raises(ValueError, match=message) as info:
        WyckoffRepresentation.from_structure(KNOWN["NaCl"][0], symprec, angle_tolerance)
    assert not isinstance(info.value, WyckoffError)
    with pytest.raises(ValueError, match=message):
        representations_from_structures([("NaCl", KNOWN["NaCl"][0])], symprec, angle_tolerance)


def test_an_error_raised_inside_spglib_is_a_symmetry_error_naming_the_structure(monkeypatch):
    """spglib 2 raises (e.g. "too close distance between atoms" on a collapsed relaxation) where spglib 1 returned
    None: either way one structure fails with a WyckoffError, so a batch or a relaxation report skips it."""
    import spglib
    from spglib.error import SpglibError

    def collapsed(*args, **kwargs):
        raise SpglibError("too close distance between atoms")

    monkeypatch.setattr(spglib, "get_symmetry_dataset", collapsed)
    with pytest.raises(WyckoffError, match=r"^NaCl: spglib failed: too close distance between atoms \(symprec=0.1"):
        WyckoffRepresentation.from_structure(KNOWN["NaCl"][0])
    converted, failures = representations_from_structures([("rock salt", KNOWN["NaCl"][0])])
    assert converted == [] and "too close distance" in str(failures)


def test_spglib_default_angle_tolerance_is_accepted():
    assert str(WyckoffRepresentation.from_structure(KNOWN["NaCl"][0], 0.1, -1.0)) == "Fm-3m (225): Na 4a, Cl 4b"


def test_batch_helper_reports_and_skips():
    disordered = KNOWN["NaCl"][0].copy()
    disordered.replace_species({"Na": {"Na": 0.5, "K": 0.5}})
    items = [("ok-1", KNOWN["Si"][0]), ("bad-cif", "data_x\nbroken\n"), ("disordered", disordered),
             ("ok-2", KNOWN["CsCl"][0])]
    converted, failures = representations_from_structures(items)
    assert [i for i, _ in converted] == ["ok-1", "ok-2"]
    assert [(f.identifier, f.error_type) for f in failures] == [
        ("bad-cif", "StructureParseError"), ("disordered", "DisorderedStructureError")]


def test_invalid_representations_are_rejected():
    with pytest.raises(InvalidRepresentationError, match="no Wyckoff position 'z'"):
        WyckoffRepresentation.from_sites(225, [("Na", "z")])
    with pytest.raises(InvalidRepresentationError, match="can hold one atom orbit only"):
        WyckoffRepresentation.from_sites(225, [("Na", "a"), ("Cl", "a")])
    with pytest.raises(InvalidRepresentationError, match="not a chemical element"):
        WyckoffRepresentation.from_sites(225, [("Xx", "a")])
    with pytest.raises(InvalidRepresentationError, match="at least one site"):
        WyckoffRepresentation.from_sites(225, [])
    with pytest.raises(InvalidRepresentationError, match="no space group 0"):
        WyckoffRepresentation.from_sites(0, [("Na", "a")])
    # positions with free parameters may hold several orbits
    assert len(WyckoffRepresentation.from_sites(225, [("O", "e"), ("O", "e")]).sites) == 2


def test_dict_round_trip_and_str():
    rep = WyckoffRepresentation.from_structure(KNOWN["SrTiO3"][0])
    assert WyckoffRepresentation.from_dict(rep.to_dict()) == rep
    assert rep.to_dict() == {"space_group": 221, "sites": [["Sr", "a"], ["Ti", "b"], ["O", "c"]]}
    with pytest.raises(InvalidRepresentationError, match="not a Wyckoff representation"):
        WyckoffRepresentation.from_dict({"sites": []})


def _random_representation(rng: np.random.Generator) -> WyckoffRepresentation:
    """A random (space group, composition, Wyckoff set) that always occupies the general position.

    With a general position at random coordinates the structure has exactly the drawn symmetry; a crystal
    built only of special positions can be more symmetric than its group (see the Fd-3c test below)."""
    while True:
        table = space_group_table(int(rng.integers(1, 231)))
        elements = list(rng.choice(["Li", "O", "Fe", "Si", "Ba", "Cl", "Ti", "N"], size=int(rng.integers(1, 4)),
                                   replace=False))
        used, sites = set(), [(elements[0], table.positions[-1].letter)]
        for element in elements:
            for _ in range(int(rng.integers(1, 3))):
                position = table.positions[int(rng.integers(len(table.positions)))]
                if position.letter not in used and position.multiplicity <= 24:
                    used.update(position.letter for _ in range(position.dof == 0))
                    sites.append((element, position.letter))
        if sum(table.by_letter(letter).multiplicity for _, letter in sites) <= 64:
            return WyckoffRepresentation.from_sites(table.number, sites)


def test_random_round_trip_through_pyxtal():
    rng = np.random.default_rng(0)
    for seed in range(100):
        rep = _random_representation(rng)
        structure = rep.to_structure(seed=seed)
        again = WyckoffRepresentation.from_structure(structure, symprec=0.01)
        assert again.space_group == rep.space_group, (rep, again)
        assert Counter((s.element, s.multiplicity) for s in again.sites) == \
            Counter((s.element, s.multiplicity) for s in rep.sites), (rep, again)


def test_special_positions_only_can_have_higher_symmetry():
    # Ti on 16a of Fd-3c is a body-centred cubic lattice: spglib rightly reports Im-3m 2a, so it is not the sample.
    titanium = WyckoffRepresentation.from_sites(228, [("Ti", "a")])
    with pytest.raises(RealizationSymmetryError, match=r"realised in group 229 \(Im-3m\), sampled 228 \(Fd-3c\)"):
        titanium.to_structure(seed=0)
    structure = titanium.to_structure(seed=0, symprec=None)  # unchecked: pyxtal's placement as it is
    assert str(WyckoffRepresentation.from_structure(structure)) == "Im-3m (229): Ti 2a"


def test_to_structure_is_seeded_and_bounded():
    rep = WyckoffRepresentation.from_sites(136, [("Ti", "a"), ("O", "f")])
    first, second = rep.to_structure(seed=3), rep.to_structure(seed=3)
    assert np.allclose(first.lattice.matrix, second.lattice.matrix)
    assert first.composition.reduced_formula == "TiO2"
    crowded = WyckoffRepresentation.from_sites(221, [("O", "e")] * 4)  # 24 O in a cell squeezed to 10 %
    with pytest.raises(RealizationError, match=r"could not realise Pm-3m \(221\): O 6e"):
        crowded.to_structure(seed=0, max_attempts=1, factor=0.1)


def test_to_structure_is_bounded_in_time(stalling_pyxtal):
    stacked = WyckoffRepresentation.from_sites(160, [("O", "a")] * 13)
    with pytest.raises(RealizationError, match=r"within 0.5 s"):
        stacked.to_structure(seed=0, timeout=0.5)
