"""The README's Python examples run as written (with the CIF they read made here)."""

import re
from pathlib import Path

from pymatgen.core import Lattice, Structure

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_examples_run(tmp_path, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert len(blocks) >= 2
    Structure.from_spacegroup(225, Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]]).to(
        filename=str(tmp_path / "NaCl.cif"))
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile("\n".join(blocks), str(README), "exec"), namespace)
    assert str(namespace["rep"]) == "Fm-3m (225): Na 4a, Cl 4b"
    assert all("Li" in crystal.elements for crystal in namespace["crystals"])
    assert namespace["predictor"].config.id2label == {0: "formation_energy_per_atom"}
    assert len(namespace["gapped"].sequences_scores) == 100
