"""Evaluation metrics on hand-made cases whose answers are known."""

import argparse
import json
import time

import numpy as np
import pytest
from datasets import Dataset, DatasetDict
from pymatgen.core import Lattice, Structure

from wyckoff_hf.data import representation_columns, write_parquet_splits
from wyckoff_hf.evaluation import (
    GeneratedSamples,
    ReferenceSet,
    composition_validity,
    evaluate,
    load_samples,
    novel_representations,
    novel_structures,
    novel_templates,
    p1_fraction,
    realise_missing,
    structure_uniqueness,
    structure_validity,
    symmetry_metrics,
    total_variation_distance,
    validity_metrics,
    wasserstein_distances,
    wyckoff_uniqueness,
)
from wyckoff_hf.evaluation.cli import add_evaluate_arguments, run_evaluate
from wyckoff_hf.generation.realisation import RealisationSettings
from wyckoff_hf.tokenization import RealizationError, RealizationSymmetryError, WyckoffRepresentation


def rock_salt(a: float = 5.64, cation: str = "Na") -> Structure:
    return Structure.from_spacegroup("Fm-3m", Lattice.cubic(a), [cation, "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])


def cesium_chloride_type(a: float = 3.4) -> Structure:
    """NaCl in the CsCl structure: the same formula as rock salt, a different crystal."""
    return Structure(Lattice.cubic(a), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])


def moved_copy(structure: Structure) -> Structure:
    """The same crystal rotated by 30° about z and translated by an arbitrary vector."""
    angle = np.radians(30)
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    lattice = Lattice(structure.lattice.matrix @ rotation.T)
    coords = (structure.frac_coords + np.array([0.13, 0.27, 0.41])) % 1.0
    return Structure(lattice, structure.species, coords)


NACL = WyckoffRepresentation.from_sites(225, [("Na", "a"), ("Cl", "b")])
KCL = WyckoffRepresentation.from_sites(225, [("K", "a"), ("Cl", "b")])
NACL_P1 = WyckoffRepresentation.from_sites(1, [("Na", "a"), ("Cl", "a")])


# ------------------------------------------------------------------------------------------ validity


def test_structural_validity_rejects_close_atoms_and_tiny_cells():
    assert structure_validity(rock_salt())
    close = Structure(Lattice.cubic(5.0), ["Na", "Cl"], [[0, 0, 0], [0.3 / 5.0, 0, 0]])  # 0.3 Å apart
    assert not structure_validity(close)
    across_the_boundary = Structure(Lattice.cubic(5.0), ["Na", "Cl"], [[0.01, 0, 0], [0.97, 0, 0]])  # 0.2 Å
    assert not structure_validity(across_the_boundary)
    assert not structure_validity(Structure(Lattice.cubic(0.4), ["Na"], [[0, 0, 0]]))  # 0.064 Å³


@pytest.mark.parametrize(("formula", "valid"), [("NaCl", True), ("NaCl2", False), ("MgO", True),
                                                ("Na2O", True), ("NaO3", False), ("CuZn", True), ("Si", True),
                                                ("LvO2", False)])  # SMACT has no data for Lv
def test_compositional_validity_is_smact_charge_neutrality(formula, valid):
    assert composition_validity(formula) is valid


def test_an_element_smact_3_has_no_data_for_is_invalid_not_a_crash(monkeypatch):
    """SMACT 3 raises NameError where SMACT 4 raises KeyError ("Elemental data for Db not found."); a model that
    samples such an element once in 10,000 crystals must not crash the evaluation."""
    from wyckoff_hf.evaluation import validity

    def smact_3(composition, **kwargs):
        raise NameError("Elemental data for Db not found.")

    monkeypatch.setattr(validity, "smact_validity", smact_3)
    monkeypatch.setattr(validity, "_smact_cache", {})
    assert composition_validity("DbO2") is False


def test_validity_metrics_denominators():
    close = Structure(Lattice.cubic(5.0), ["Na", "Cl"], [[0, 0, 0], [0.06, 0, 0]])
    nacl2 = WyckoffRepresentation.from_sites(1, [("Na", "a"), ("Cl", "a"), ("Cl", "a")])
    samples = GeneratedSamples([NACL, NACL_P1, nacl2, None], errors={3: "bad"},
                               structures={0: rock_salt(), 1: close})
    metrics = validity_metrics(samples)
    assert metrics["wyckoff_valid"] == 3 / 4
    assert metrics["compositional_valid"] == 2 / 3
    assert metrics["realised"] == 2 / 3
    assert metrics["structural_valid"] == 1 / 2
    assert metrics["valid"] == 1 / 2
    wyckoff_only = validity_metrics(samples, structure_metrics=False)
    assert "realised" not in wyckoff_only and wyckoff_only["wyckoff_valid"] == 3 / 4


def test_smact_gets_a_time_limit_and_undecided_formulas_are_counted_apart(stalling_smact):
    ten_elements = "LiNaKRbCsMgCaSrBaO10"
    start = time.monotonic()
    assert composition_validity(ten_elements, timeout=0.5) is None
    assert time.monotonic() - start < stalling_smact / 2  # the limit ended the stall, not SMACT
    crowded = WyckoffRepresentation.from_sites(1, [(el, "a") for el in
                                                   ("Li", "Na", "K", "Rb", "Cs", "Mg", "Ca", "Sr", "Ba", "O")])
    metrics = validity_metrics(GeneratedSamples([NACL, crowded], structures={0: rock_salt()}), smact_timeout=0.5)
    assert metrics["num_compositional_timeouts"] == 1 and metrics["compositional_valid"] == 1.0


def test_validity_of_nothing_is_undefined_not_zero():
    metrics = validity_metrics(GeneratedSamples([None], errors={0: "bad"}))
    assert metrics["wyckoff_valid"] == 0.0
    assert metrics["compositional_valid"] is None and metrics["structural_valid"] is None


# ------------------------------------------------------------------------------------------ samples


def test_load_samples_keeps_every_line_and_says_why_one_is_invalid(tmp_path):
    lines = [
        json.dumps(NACL.to_dict()),
        json.dumps({"space_group": 225, "sites": [["Na", "z"]]}),  # no position z in Fm-3m
        "not json",
        json.dumps({"space_group": 225, "sites": [["Na", "a"], ["Cl", "a"]]}),  # 0-dof position reused
        json.dumps(NACL_P1.to_dict()),
    ]
    (tmp_path / "samples.jsonl").write_text("\n".join(lines) + "\n")
    (tmp_path / "structures").mkdir()
    (tmp_path / "structures" / "000000.cif").write_text(rock_salt().to(fmt="cif"))
    (tmp_path / "structures" / "000004.cif").write_text("data_broken\n_cell_length_a 1\n")
    (tmp_path / "realisation_failures.csv").write_text("index,representation,reason\n0,x,ignored\n4,x,overlap\n")
    samples = load_samples(tmp_path)
    assert len(samples) == 5
    assert samples.representations[0] == NACL and samples.representations[4] == NACL_P1
    assert sorted(samples.errors) == [1, 2, 3]
    assert "line 2" in samples.errors[1] and "'z'" in samples.errors[1]
    assert "not JSON" in samples.errors[2]
    assert "can hold one atom orbit only" in samples.errors[3]
    assert sorted(samples.structures) == [0] and sorted(samples.structure_errors) == [4]
    assert "000004.cif" in samples.structure_errors[4]  # the unreadable file, not the CSV's older reason
    assert len(load_samples(tmp_path / "samples.jsonl").structures) == 0  # a bare .jsonl has no CIFs


def test_trailing_blank_lines_are_not_samples(tmp_path):
    (tmp_path / "samples.jsonl").write_text(json.dumps(NACL.to_dict()) + "\n\n\n")
    samples = load_samples(tmp_path / "samples.jsonl")
    assert len(samples) == 1 and not samples.errors


def test_load_samples_rejects_misnamed_structures(tmp_path):
    (tmp_path / "samples.jsonl").write_text(json.dumps(NACL.to_dict()) + "\n")
    (tmp_path / "structures").mkdir()
    (tmp_path / "structures" / "000007.cif").write_text(rock_salt().to(fmt="cif"))
    with pytest.raises(ValueError, match=r"000007\.cif"):
        load_samples(tmp_path)


def test_realise_missing_fills_structures_with_the_sampled_symmetry():
    samples = realise_missing(GeneratedSamples.from_representations([NACL]), num_workers=1)
    assert list(samples.structures) == [0] and not samples.structure_errors
    assert WyckoffRepresentation.from_structure(samples.structures[0]) == NACL


# Fm-3m Li 4a + Li 4b is a primitive cubic Li lattice of half the edge, Cd 8c its cube centres: CsCl-type LiCd,
# Pm-3m (221), for every seed, since every site is fixed and a cubic cell has no free shape.
LICD_SUPERGROUP = WyckoffRepresentation.from_sites(225, [("Li", "a"), ("Li", "b"), ("Cd", "c")])


def test_a_realisation_in_a_supergroup_is_a_symmetry_failure_with_its_reason():
    with pytest.raises(RealizationSymmetryError, match=r"realised in group 221 \(Pm-3m\), sampled 225 \(Fm-3m\): "
                                                       r"every site is fixed in a cubic cell"):
        LICD_SUPERGROUP.to_structure(seed=0)
    assert LICD_SUPERGROUP.to_structure(seed=0, symprec=None).composition.reduced_formula == "LiCd"  # unchecked
    samples = realise_missing(GeneratedSamples.from_representations([LICD_SUPERGROUP, NACL]), num_workers=1)
    assert list(samples.structures) == [1] and samples.symmetry_failures == {0}
    assert "realised in group 221 (Pm-3m), sampled 225 (Fm-3m)" in samples.structure_errors[0]
    metrics = validity_metrics(samples)
    assert metrics["symmetry_failed"] == 1 / 2 and metrics["num_symmetry_failed"] == 1
    assert metrics["realised"] == 1 / 2


def test_a_realisation_read_back_as_another_crystal_is_retried_with_derived_seeds(monkeypatch):
    """A placement that reads back as another crystal (here rock salt, Fm-3m) is replaced by one from the next
    derived seed; the seeds depend on the sample's seed alone, so the result is reproducible."""
    place = WyckoffRepresentation._pyxtal_structure
    seeds = []

    def first_in_a_supergroup(self, seed, *args):
        seeds.append(seed)
        return rock_salt() if len(seeds) % 2 == 1 else place(self, seed, *args)

    monkeypatch.setattr(WyckoffRepresentation, "_pyxtal_structure", first_in_a_supergroup)
    first = NACL_P1.to_structure(seed=7)
    assert seeds[0] == 7 and seeds[1] not in (7, 8)  # 8 is the next sample's seed
    assert WyckoffRepresentation.from_structure(first) == NACL_P1
    assert NACL_P1.to_structure(seed=7) == first and seeds[2:] == seeds[:2]


def test_a_retry_pyxtal_cannot_place_leaves_the_symmetry_failure_as_the_reason(monkeypatch):
    def only_the_first_seed_places(self, seed, *args):
        if seed != 7:
            raise RealizationError("pyxtal gave up")
        return rock_salt()

    monkeypatch.setattr(WyckoffRepresentation, "_pyxtal_structure", only_the_first_seed_places)
    with pytest.raises(RealizationSymmetryError, match=r"realised in group 225 \(Fm-3m\), sampled 1 \(P1\): 1 of 4 "
                                                       r"pyxtal seeds placed it"):
        NACL_P1.to_structure(seed=7)


def test_evaluate_reads_symmetry_failures_from_the_failures_record(tmp_path):
    (tmp_path / "samples.jsonl").write_text(json.dumps(LICD_SUPERGROUP.to_dict()) + "\n" +
                                            json.dumps(NACL.to_dict()) + "\n")
    (tmp_path / "structures").mkdir()
    (tmp_path / "structures" / "000001.cif").write_text(rock_salt().to(fmt="cif"))
    (tmp_path / "realisation_failures.csv").write_text(
        "index,representation,limit,reason\n0,x,symmetry,\"realised in group 221 (Pm-3m), sampled 225 (Fm-3m)\"\n")
    samples = load_samples(tmp_path)
    assert samples.symmetry_failures == {0} and "sampled 225" in samples.structure_errors[0]
    assert validity_metrics(samples)["symmetry_failed"] == 1 / 2


def test_realisation_is_bounded_in_time_inside_the_pool(stalling_pyxtal):
    crowded = WyckoffRepresentation.from_sites(160, [("Nb", "a")] * 4 + [("Ag", "a")] + [("S", "a")] * 8)
    samples = GeneratedSamples.from_representations([crowded, NACL])
    start = time.monotonic()
    realise_missing(samples, num_workers=2, settings=RealisationSettings(timeout=1.0))
    assert time.monotonic() - start < stalling_pyxtal / 2  # the forked worker's alarm ended the stall
    assert list(samples.structures) == [1]
    assert "within 1.0 s" in samples.structure_errors[0] and "R3m" in samples.structure_errors[0]


# ------------------------------------------------------------------------------------------ novelty


def test_wyckoff_uniqueness_of_a_duplicate_pair_is_one_half():
    assert wyckoff_uniqueness([NACL, NACL]) == 0.5
    assert wyckoff_uniqueness([NACL, KCL, NACL_P1]) == 1.0
    # the same crystal type under another origin choice (Na on b, Cl on a) is not unique
    relabelled = WyckoffRepresentation.from_sites(225, [("Na", "b"), ("Cl", "a")], canonical=False)
    assert relabelled != NACL and relabelled.canonical() == NACL.canonical()
    assert wyckoff_uniqueness([NACL, relabelled]) == 0.5


def test_wyckoff_and_template_novelty():
    assert novel_representations([NACL, KCL, NACL_P1], train=[NACL]) == [False, True, True]
    # KCl rock salt has a new composition but the template (Fm-3m, a + b) of NaCl
    assert novel_templates([NACL, KCL, NACL_P1], train=[NACL]) == [False, False, True]


def test_structure_novelty_sees_through_rotation_and_translation():
    train = [rock_salt(), cesium_chloride_type()]
    flags, errors = novel_structures([rock_salt(), moved_copy(rock_salt()), rock_salt(cation="K")], train)
    assert flags == [False, False, True] and errors == []
    flags, _ = novel_structures([moved_copy(rock_salt())], [cesium_chloride_type()])
    assert flags == [True]  # same formula bucket, different crystal


def test_structure_novelty_parses_only_matching_reference_cifs():
    unparseable = "data_x\nthis is not a CIF\n"
    reference = [rock_salt().to(fmt="cif"), unparseable]
    flags, errors = novel_structures([rock_salt()], reference, reference_formulas=["NaCl", "KBr"])
    assert flags == [False] and errors == []  # the KBr entry is never parsed
    flags, errors = novel_structures([rock_salt()], [unparseable], reference_formulas=["NaCl"])
    assert flags == [True] and len(errors) == 1 and "unparseable CIF" in errors[0]


def test_structure_uniqueness_in_one_process_and_in_a_pool():
    structures = [rock_salt(), moved_copy(rock_salt()), cesium_chloride_type(), rock_salt(cation="K")]
    assert structure_uniqueness(structures, num_workers=1) == 3 / 4
    assert structure_uniqueness(structures, num_workers=2) == 3 / 4


# ------------------------------------------------------------------------------------------ symmetry, distributions


def test_p1_fraction_and_total_variation():
    assert p1_fraction([NACL, NACL_P1, KCL, NACL_P1]) == 0.5
    assert total_variation_distance({1: 0.5, 225: 0.5}, {225: 1.0}) == 0.5
    assert total_variation_distance({1: 1.0}, {2: 1.0}) == 1.0
    metrics = symmetry_metrics([NACL], [NACL, NACL_P1])
    assert metrics["space_group_tv"] == 0.5 and metrics["crystal_system_tv"] == 0.5
    assert metrics["crystal_systems"]["cubic"] == 1.0
    assert metrics["crystal_systems_reference"] == pytest.approx(
        {"triclinic": 0.5, "monoclinic": 0, "orthorhombic": 0, "tetragonal": 0, "trigonal": 0,
         "hexagonal": 0, "cubic": 0.5})


def test_wasserstein_distances():
    assert wasserstein_distances([NACL, NACL_P1], [NACL_P1, NACL]) == {
        "wasserstein_num_elements": 0.0, "wasserstein_num_sites": 0.0, "wasserstein_num_atoms": 0.0}
    # rock salt has 8 atoms in the conventional cell, the P1 cell 2
    assert wasserstein_distances([NACL], [NACL_P1])["wasserstein_num_atoms"] == 6.0
    assert wasserstein_distances([], [NACL])["wasserstein_num_atoms"] is None


# ------------------------------------------------------------------------------------------ evaluate, CLI


def reference_dataset() -> DatasetDict:
    def split(structures, ids):
        rows = [{"material_id": i, "cif": s.to(fmt="cif"),
                 **representation_columns(WyckoffRepresentation.from_structure(s))}
                for s, i in zip(structures, ids, strict=True)]
        return Dataset.from_list(rows)

    return DatasetDict({
        "train": split([rock_salt(), cesium_chloride_type()], ["mp-22862", "mp-x"]),
        "test": split([rock_salt(cation="K"), rock_salt()], ["mp-23193", "mp-22862b"]),
    })


def write_samples(folder, reps, structures):
    folder.mkdir()
    (folder / "samples.jsonl").write_text("".join(json.dumps(r.to_dict()) + "\n" for r in reps))
    (folder / "structures").mkdir()
    for index, structure in structures.items():
        (folder / "structures" / f"{index:06d}.cif").write_text(structure.to(fmt="cif"))


def test_evaluate_writes_metrics_report_and_figures(tmp_path):
    write_samples(tmp_path / "samples", [NACL, NACL, NACL_P1], {0: moved_copy(rock_salt()), 1: rock_salt()})
    (tmp_path / "samples" / "realisation_failures.csv").write_text("index,representation,reason\n2,x,overlap\n")
    metrics = evaluate(tmp_path / "samples", reference_dataset(), tmp_path / "out", num_workers=1)
    assert metrics["validity"]["wyckoff_valid"] == 1.0 and metrics["validity"]["realised"] == 2 / 3
    assert metrics["failures"]["missing_structures"] == {"2": "pyxtal: overlap"}
    assert metrics["novelty"]["wyckoff_unique"] == 2 / 3
    assert metrics["novelty"]["wyckoff_novel"] == 1 / 3  # only the P1 sample is not a train row
    assert metrics["novelty"]["structure_novel"] == 0.0 and metrics["novelty"]["structure_unique"] == 0.5
    assert metrics["symmetry"]["p1_fraction"] == 1 / 3
    assert metrics["symmetry"]["space_group_tv"] == pytest.approx(1 / 3)
    assert json.loads((tmp_path / "out" / "metrics.json").read_text())["novelty"] == metrics["novelty"]
    report = (tmp_path / "out" / "report.md").read_text()
    assert "| Novelty, structure | 0.0 % | realised structures vs train |" in report
    assert "| P1 fraction | 33.3 % |" in report
    for figure in metrics["figures"]:
        assert (tmp_path / "out" / figure).read_bytes().startswith(b"\x89PNG")


def test_cli_reads_a_prepared_reference_folder(tmp_path, capsys):
    write_parquet_splits(reference_dataset(), tmp_path / "reference")
    write_samples(tmp_path / "samples", [KCL, NACL_P1], {})
    parser = argparse.ArgumentParser()
    add_evaluate_arguments(parser)
    args = parser.parse_args([str(tmp_path / "samples"), "--reference", str(tmp_path / "reference"),
                              "--output-dir", str(tmp_path / "out"), "--num-workers", "1", "--no-structure-metrics",
                              "--max-reference", "1"])
    assert run_evaluate(args) == 0
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["reference"]["num_train"] == 1 and metrics["reference"]["num_test"] == 1
    assert metrics["novelty"] == {"wyckoff_unique": 1.0, "wyckoff_novel": 1.0, "template_novel": 0.5}
    assert "stability" not in metrics and "Uniqueness, Wyckoff" in capsys.readouterr().out


def test_samples_never_realised_are_not_measured_rather_than_failed(tmp_path):
    (tmp_path / "samples").mkdir()
    (tmp_path / "samples" / "samples.jsonl").write_text(json.dumps(NACL.to_dict()) + "\n")
    metrics = evaluate(tmp_path / "samples", reference_dataset(), tmp_path / "out", num_workers=1)
    assert metrics["validity"]["realised"] is None and metrics["failures"]["missing_structures"] == {}
    assert "structure_novel" not in metrics["novelty"] and "stability" not in metrics
    report = (tmp_path / "out" / "report.md").read_text()
    assert "| Realised in 3D (pyxtal) | n/a |" in report and "pass --realise" in report


def test_evaluate_rejects_a_non_positive_reference_size(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    add_evaluate_arguments(parser)
    with pytest.raises(SystemExit):
        parser.parse_args(["samples", "--reference", "ref", "--max-reference", "-3"])
    assert "--max-reference: must be at least 1, got -3" in capsys.readouterr().err
    with pytest.raises(ValueError, match="max_reference must be at least 1"):
        evaluate(GeneratedSamples.from_representations([NACL]), reference_dataset(), tmp_path, max_reference=0)


def test_reference_set_names_the_rows_it_skips():
    dataset = reference_dataset()
    bad = dataset["test"].to_list()
    bad[0]["letters"] = ["a", "a"]  # Na and Cl on the same fixed position
    dataset["test"] = Dataset.from_list(bad)
    reference = ReferenceSet.from_dataset(dataset)
    assert len(reference.test) == 1 and len(reference.test_cifs) == 1
    assert len(reference.skipped) == 1 and "mp-23193" in reference.skipped[0]
    with pytest.raises(ValueError, match="needs"):
        ReferenceSet.from_dataset(DatasetDict({"train": dataset["train"]}))


def test_known_crystals_of_sun_novelty_are_train_plus_validation():
    dataset = reference_dataset()
    without_validation = ReferenceSet.from_dataset(dataset)
    assert without_validation.validation == [] and without_validation.known_cifs == without_validation.train_cifs
    dataset["validation"] = dataset["test"].select([0])
    reference = ReferenceSet.from_dataset(dataset)
    assert [str(rep) for rep in reference.validation] == ["Fm-3m (225): K 4a, Cl 4b"]
    assert reference.known_cifs == reference.train_cifs + reference.validation_cifs
    assert reference.known_formulas == [*reference.train_formulas, "KCl"]


def test_one_structure_object_listed_twice_counts_once_and_first():
    from wyckoff_hf.evaluation.novelty import unique_structures

    salt = rock_salt()
    assert unique_structures([salt, salt, moved_copy(salt)]) == [True, False, False]
