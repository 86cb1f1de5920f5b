"""``wyckoff-hf tokenize``: prints each CIF's representation and tokens; a broken file is reported, not fatal."""

import json

from pymatgen.core import Lattice, Structure

from wyckoff_hf.cli import main


def test_tokenize_prints_representation_and_tokens(tmp_path, capsys):
    nacl = Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    good, bad = tmp_path / "nacl.cif", tmp_path / "bad.cif"
    nacl.to(filename=str(good))
    bad.write_text("data_bad\nnot a cif\n")
    assert main(["tokenize", str(good), str(bad)]) == 1
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert lines[0] == f"{good}: Fm-3m (225): Na 4a, Cl 4b"
    assert json.loads(lines[1])["element_ids"] == [13, 19, 1]
    assert f"{bad}: ERROR StructureParseError" in err
