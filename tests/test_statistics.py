"""Statistics and distribution plots of sets of Wyckoff representations."""

from __future__ import annotations

from pathlib import Path

import matplotlib.image
import pytest

from wyckoff_hf.evaluation.statistics import crystal_system, plot_distributions, representation_statistics
from wyckoff_hf.tokenization import WyckoffRepresentation


@pytest.fixture
def reps() -> list[WyckoffRepresentation]:
    rock_salt = WyckoffRepresentation.from_sites(225, [("Na", "a"), ("Cl", "b")])
    perovskite = WyckoffRepresentation.from_sites(221, [("Sr", "a"), ("Ti", "b"), ("O", "c")])
    wurtzite = WyckoffRepresentation.from_sites(186, [("Zn", "b"), ("O", "b")])
    return [rock_salt, perovskite, wurtzite, rock_salt]


def test_representation_statistics(reps: list[WyckoffRepresentation]) -> None:
    stats = representation_statistics(reps)
    assert stats["num_structures"] == 4
    assert stats["space_group"] == {"186": 1, "221": 1, "225": 2}
    assert stats["crystal_system"] == {"cubic": 3, "hexagonal": 1}
    assert stats["num_elements"] == {"2": 3, "3": 1}
    assert stats["num_sites"] == {"2": 3, "3": 1}
    assert stats["num_atoms"] == {"4": 1, "5": 1, "8": 2}  # conventional cells: 2+2, 1+1+3, 4+4
    assert stats["mean_num_atoms"] == pytest.approx(25 / 4)
    assert representation_statistics([])["mean_num_sites"] is None


def test_crystal_system_follows_pymatgen() -> None:
    assert [crystal_system(n) for n in (1, 2, 15, 62, 139, 166, 194, 225)] == [
        "triclinic", "triclinic", "monoclinic", "orthorhombic", "tetragonal", "trigonal", "hexagonal", "cubic"]


def test_plot_distributions_writes_a_png(tmp_path: Path, reps: list[WyckoffRepresentation]) -> None:
    path = plot_distributions({"generated": reps[:2], "test": reps, "empty": []}, tmp_path / "plots" / "d.png")
    assert path == tmp_path / "plots" / "d.png"
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[1] > image.shape[0] > 100
