"""The Wyckoff tables: complete, consistent with pyxtal, and (site symmetry, enumeration) ↔ letter bijective."""

import json

import pytest

from wyckoff_hf.tokenization.wyckoff_tables import (
    TABLES_PATH,
    all_site_symmetries,
    all_space_group_tables,
    build_tables,
    space_group_table,
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


def test_relabellings_are_a_group_of_letter_permutations():
    for table in all_space_group_tables():
        letters = [p.letter for p in table.positions]
        identity = dict(zip(letters, letters, strict=True))
        assert table.relabellings[0] == identity
        for relabel in table.relabellings:
            assert sorted(relabel.values()) == sorted(letters)
            for letter, image in relabel.items():  # a relabelling keeps multiplicity and site symmetry order
                assert table.by_letter(letter).multiplicity == table.by_letter(image).multiplicity
            for other in table.relabellings:
                assert {x: other[relabel[x]] for x in letters} in table.relabellings
    nacl = space_group_table(225).relabellings
    assert any(r["a"] == "b" and r["b"] == "a" for r in nacl)


def test_unknown_inputs_raise_clear_errors():
    with pytest.raises(KeyError, match="no space group 231"):
        space_group_table(231)
    with pytest.raises(KeyError, match="has no Wyckoff position 'z'"):
        space_group_table(225).by_letter("z")


def test_packaged_tables_match_pyxtal():
    assert json.loads(TABLES_PATH.read_text()) == json.loads(json.dumps(build_tables()))
