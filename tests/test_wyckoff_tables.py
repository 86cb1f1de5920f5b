"""The Wyckoff tables: complete, consistent with pyxtal, and (site symmetry, enumeration) ↔ letter bijective."""

import math
import warnings

import numpy as np
import pytest
from pymatgen.core import Element
from pyxtal.symmetry import Group

from wyckoff_hf.tokenization.wyckoff_tables import (
    TABLES_PATH,
    all_site_symmetries,
    all_space_group_tables,
    build_tables,
    element_electronegativity,
    space_group_table,
    tables_json,
)


def test_all_230_groups_present_in_order():
    tables = all_space_group_tables()
    assert [t.number for t in tables] == list(range(1, 231))
    assert sum(len(t.positions) for t in tables) == 1731  # the number of Wyckoff positions in the ITA


@pytest.mark.parametrize("table", all_space_group_tables(), ids=lambda t: str(t.number))
def test_site_symmetry_and_enumeration_determine_the_letter(table):
    pairs = {(p.site_symmetry, p.enumeration) for p in table.positions}
    assert len(pairs) == len(table.positions)
    for p in table.positions:
        assert table.by_site_symmetry(p.site_symmetry, p.enumeration) is p
        assert table.by_letter(p.letter) is p
        assert 0 <= p.dof <= 3
    # the general position is the last letter, has 3 free parameters and the largest multiplicity
    general = table.positions[-1]
    assert general.dof == 3 and general.site_symmetry == "1"
    assert general.multiplicity == max(p.multiplicity for p in table.positions)
    # enumerations count up from 0 in letter order within each site symmetry
    for symmetry in {p.site_symmetry for p in table.positions}:
        same = [p.enumeration for p in table.positions if p.site_symmetry == symmetry]
        assert same == list(range(len(same)))


def test_known_entries():
    fm3m = space_group_table(225)
    assert fm3m.symbol == "Fm-3m"
    assert [(p.letter, p.multiplicity, p.site_symmetry, p.dof) for p in fm3m.positions[:3]] == [
        ("a", 4, "m-3m", 0), ("b", 4, "m-3m", 0), ("c", 8, "-43m", 0)]
    assert fm3m.by_site_symmetry("m-3m", 1).letter == "b"
    pmmm = space_group_table(47)
    assert pmmm.positions[-1].letter == "A" and pmmm.letter_index("A") == 26
    assert space_group_table(136).by_letter("f").site_symmetry == "m.2m"
    assert len(all_site_symmetries()) == 78


@pytest.mark.parametrize("table", all_space_group_tables(), ids=lambda t: str(t.number))
def test_relabellings_are_a_group_of_letter_permutations(table):
    letters = [p.letter for p in table.positions]
    assert table.relabellings[0] == dict(zip(letters, letters, strict=True))
    rows = table.relabelling_indices
    assert np.all(np.sort(rows, axis=1) == np.arange(len(letters)))  # permutations
    assert len({row.tobytes() for row in rows}) == len(rows)
    composed = rows[:, rows].transpose(1, 0, 2).reshape(-1, len(letters))  # row b applied after row a
    assert {row.tobytes() for row in composed} == {row.tobytes() for row in rows}  # closed: a group
    for relabel in table.relabellings:  # a relabelling keeps multiplicity and free parameters
        for letter, image in relabel.items():
            before, after = table.by_letter(letter), table.by_letter(image)
            assert (before.multiplicity, before.dof) == (after.multiplicity, after.dof)


def test_relabellings_contain_the_euclidean_normalizer():
    for table in all_space_group_tables():
        letters = [p.letter for p in table.positions]
        for transformed in Group(table.number).get_alternatives()["Transformed WP"]:
            assert dict(zip(letters, transformed.split(), strict=True)) in table.relabellings


def test_relabellings_include_cell_changes():
    assert any(r["a"] == "b" and r["b"] == "a" for r in space_group_table(225).relabellings)  # origin shift
    # P-1: unimodular cell changes and origin shifts act on the 8 inversion centres as AGL(3, 2)
    assert len(space_group_table(2).relabellings) == 8 * 168
    # P2/m: shifts by half vectors (8) times GL(2, 2) on the (a, c) plane (6)
    assert len(space_group_table(10).relabellings) == 48
    # P2_1/m (the example): b and c swap, which no Euclidean map of a generic cell does
    assert any(r["b"] == "c" and r["a"] == "a" for r in space_group_table(11).relabellings)


def test_electronegativities_are_frozen_from_pymatgen():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for element in Element:
            z, x = element_electronegativity(element.symbol)
            assert z == element.Z
            assert (math.isnan(x) and math.isnan(element.X)) or x == element.X
    assert element_electronegativity("O") == (8, 3.44)
    with pytest.raises(KeyError, match="'Xx' is not a chemical element"):
        element_electronegativity("Xx")


def test_unknown_inputs_raise_clear_errors():
    with pytest.raises(KeyError, match="no space group 231"):
        space_group_table(231)
    with pytest.raises(KeyError, match="has no Wyckoff position 'z'"):
        space_group_table(225).by_letter("z")


@pytest.mark.slow  # the affine-normalizer search takes about a minute
def test_packaged_tables_match_a_fresh_build():
    assert TABLES_PATH.read_text() == tables_json(build_tables())
