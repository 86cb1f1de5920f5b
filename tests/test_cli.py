"""The `wyckoff-hf` console script: `tokenize` output, and clear one-line errors for bad input."""

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


def test_bad_generate_arguments_give_a_clear_error(tmp_path, capsys):
    assert main(["generate", "-n", "2", "--out", str(tmp_path), "--space-group", "999"]) == 2
    assert "wyckoff-hf generate: error: space_group 999 is not a space group" in capsys.readouterr().err
    assert main(["generate", "-n", "2", "--out", str(tmp_path), "--model", str(tmp_path / "missing")]) == 2
    assert "wyckoff-hf generate: error:" in capsys.readouterr().err
