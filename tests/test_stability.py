"""Stability, S.U.N. and S.S.U.N.: the real CHGNet on small crystals, the hull on hand-made systems."""

import csv
import json
import time
import warnings
from dataclasses import asdict

import pandas as pd
import pytest
from conftest import load_script
from pymatgen.core import Composition, Element, Lattice, Structure

from wyckoff_hf.cards import render_model_card
from wyckoff_hf.data import load_wyckoff_dataset, representation_from_row
from wyckoff_hf.evaluation import GeneratedSamples, ReferenceSet, evaluate, relaxation, stability
from wyckoff_hf.evaluation.hull import ConvexHullReference, MissingReferenceError, fit_element_references, packaged_hull
from wyckoff_hf.evaluation.novelty import novel_templates, unique_structures
from wyckoff_hf.evaluation.relaxation import (
    RelaxationFailure,
    RelaxationSettings,
    Relaxed,
    relax_representation,
    relax_samples,
    relax_structure,
    relaxed_space_group,
    static_energies,
)
from wyckoff_hf.evaluation.sun import sun_metrics, wilson_interval
from wyckoff_hf.evaluation.validity import composition_validity
from wyckoff_hf.generation.jobs import DEFAULT_MODEL
from wyckoff_hf.tokenization import WyckoffRepresentation
from wyckoff_hf.utils.parallel import parallel_map

# CI installs the stability extra; elsewhere the tests of the real CHGNet say why they did not run
needs_chgnet = pytest.mark.skipif(not stability.chgnet_available(), reason="needs the stability extra (chgnet)")

NACL = WyckoffRepresentation.from_sites(225, [("Na", "a"), ("Cl", "b")])
KCL = WyckoffRepresentation.from_sites(225, [("K", "a"), ("Cl", "b")])
ONE_TRIAL = RelaxationSettings(num_trials=1)


def rock_salt(a: float, cation: str = "Na") -> Structure:
    """The conventional rock-salt cell, written out (pymatgen's ``from_spacegroup`` costs seconds on first use)."""
    fcc = [[0, 0, 0], [0, 0.5, 0.5], [0.5, 0, 0.5], [0.5, 0.5, 0]]
    return Structure(Lattice.cubic(a), [cation] * 4 + ["Cl"] * 4, fcc + [[x, y, z + 0.5] for x, y, z in fcc])


# ------------------------------------------------------------------------------------------ hull


def lithium_oxygen_hull() -> ConvexHullReference:
    """Li–O with one hull phase, Li2O at −2.0 eV/atom, and made-up CHGNet references."""
    return ConvexHullReference({"Li2O": -2.0}, {"Li": -1.9, "O": -4.9})


def test_hull_of_a_two_element_system():
    hull = lithium_oxygen_hull()
    assert hull.e_above_hull("Li2O", -2.0) == pytest.approx(0.0)
    assert hull.e_above_hull("Li2O", -1.9) == pytest.approx(0.1)
    assert hull.e_above_hull("Li2O", -2.1) == pytest.approx(-0.1)  # below the hull: negative, not clipped
    # LiO (x_O = 1/2) lies on the tie line Li2O (x_O = 1/3, −2.0) – O (x_O = 1, 0): −1.5 eV/atom
    assert hull.e_above_hull("LiO", -1.4) == pytest.approx(0.1)
    assert hull.e_above_hull("Li", 0.25) == pytest.approx(0.25)
    assert hull.covers("Li4O2") and not hull.covers("LiO")
    Element("Fl").__dict__.pop("X", None)  # pymatgen caches the value, and warns only when it first looks it up
    with warnings.catch_warnings():  # an element without an electronegativity (Fl, sampled now and then) is quiet
        warnings.simplefilter("error")
        assert hull.e_above_hull("FlO", 0.1) == pytest.approx(0.1)


def test_chgnet_energy_to_formation_energy_with_element_references():
    hull = lithium_oxygen_hull()
    total = 4 * -1.9 + 2 * -4.9 + 6 * -2.0  # Li4O2 exactly on the hull
    assert hull.formation_energy_per_atom(Composition("Li4O2"), total) == pytest.approx(-2.0)
    assert hull.chgnet_e_above_hull(Structure(Lattice.cubic(4), ["Li", "Li", "O"],
                                              [[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0, 0]]),
                                    2 * -1.9 - 4.9 - 3 * 1.9) == pytest.approx(0.1)
    with pytest.raises(MissingReferenceError, match=r"NaCl: no CHGNet reference energy for \['Cl', 'Na'\]"):
        hull.formation_energy_per_atom(Composition("NaCl"), -7.0)


def test_a_collapsed_relaxation_is_a_failure_not_a_new_hull_phase():
    """A relaxation ending 40 eV/atom below its elements (as one generated crystal did) is reported as collapsed;
    one just above the hull and one below it by an ordinary margin are placed."""
    hull = lithium_oxygen_hull()
    structure = Structure(Lattice.cubic(4), ["Li", "Li", "O"], [[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0, 0]])
    references = 2 * -1.9 - 4.9

    def relaxed(index: int, formation_energy: float) -> relaxation.Relaxed:
        return relaxation.Relaxed(index, structure, references + 3 * formation_energy, 0, 1, True, 225, 225, 1.0)

    placed, failures = stability.place_on_hull([relaxed(0, -1.9), relaxed(1, -42.0), relaxed(2, -2.5)], hull)
    assert [(p.relaxed.index, round(p.e_above_hull, 6)) for p in placed] == [(0, 0.1), (2, -0.5)]
    assert [(f.index, f.reason) for f in failures] == [
        (1, "collapsed: CHGNet formation energy of Li2O -42.00 eV/atom, below -5.0 (no known crystal's)")]


def test_element_reference_fit_recovers_exact_references():
    mu = {"Li": -1.9, "O": -4.9, "Na": -1.3}
    rows = [("Li2O", -2.0), ("Li2O2", -1.7), ("Na2O", -1.4), ("NaLiO", -1.6), ("Na", 0.0)]
    compositions = [Composition(f) for f, _ in rows]
    totals = [sum(n * mu[el] for el, n in c.get_el_amt_dict().items()) + c.num_atoms * e
              for c, (_, e) in zip(compositions, rows, strict=True)]
    fitted, residuals = fit_element_references(compositions, totals, [e for _, e in rows])
    assert fitted == pytest.approx(mu) and abs(residuals).max() < 1e-9


def test_packaged_tables_cover_the_shared_data_and_record_their_fit():
    hull = packaged_hull()
    assert len(hull.points) > 20_000 and hull.points["NaCl"] < -2.0  # rock salt is deep below its elements
    assert {"Na", "Cl", "O", "Fe", "Li"} <= set(hull.references)
    assert 0 < hull.fit["held_out_mae_ev_per_atom"] < 0.1


@needs_chgnet
def test_energy_above_hull_of_mp_test_rows_is_small(shared_data):
    """CHGNet single points of DFT-relaxed MP test rows land near MP's own energy above hull."""
    rows = pd.read_csv(shared_data / "mp_20_biternary" / "test.csv.gz", nrows=40)
    rows = rows[rows.e_above_hull == 0].head(8)
    structures = [Structure.from_str(cif, fmt="cif") for cif in rows.cif]
    hull = packaged_hull()
    above = [hull.chgnet_e_above_hull(s, e) for s, e in zip(structures, static_energies(structures), strict=True)]
    assert all(abs(a) < 0.25 for a in above), above
    assert sum(abs(a) for a in above) / len(above) < 0.1


# ------------------------------------------------------------------------------------------ relaxation


@needs_chgnet
def test_relaxing_a_strained_rock_salt_lowers_its_energy_and_keeps_fm3m():
    strained = rock_salt(6.0).get_primitive_structure()
    (before,) = static_energies([strained])
    relaxed, energy, steps, converged = relax_structure(strained, fmax=0.02, max_steps=200)
    assert converged and 0 < steps < 200 and energy < before - 0.05
    assert 5.5 < relaxed.lattice.a * 2**0.5 < 5.85  # CHGNet's NaCl: a ≈ 5.7 Å (experiment 5.64)
    assert relaxed_space_group(relaxed) == 225


@needs_chgnet
def test_relax_representation_keeps_the_lowest_trial_and_the_sampled_group():
    result = relax_representation(NACL, 0, RelaxationSettings(num_trials=2))
    assert isinstance(result, Relaxed)
    assert result.space_group_sampled == result.space_group_relaxed == 225 and result.space_group_kept
    assert result.converged and result.trial in (0, 1) and result.trial_failures == []
    assert result.structure.composition.reduced_formula == "NaCl" and -4.0 < result.energy_per_atom < -3.0


@needs_chgnet
def test_a_centred_crystal_is_relaxed_in_its_primitive_cell():
    """Rock salt's conventional cell has 8 atoms, its primitive cell 2: the relaxed structure is the primitive one,
    with the energy per atom and the group of the conventional relaxation."""
    primitive = relax_representation(NACL, 0, ONE_TRIAL)
    conventional = relax_representation(NACL, 0, RelaxationSettings(num_trials=1, primitive_cell=False))
    assert len(primitive.structure) == 2 and len(conventional.structure) == 8
    assert primitive.energy_per_atom == pytest.approx(conventional.energy_per_atom, abs=2e-3)
    assert primitive.space_group_relaxed == conventional.space_group_relaxed == 225


def test_trial_seeds_depend_only_on_seed_index_and_trial():
    assert ONE_TRIAL.trial_seed(3, 1) == RelaxationSettings(num_trials=6).trial_seed(3, 1)
    assert len({ONE_TRIAL.trial_seed(i, t) for i in range(10) for t in range(6)}) == 60


def test_a_relaxation_over_its_time_limit_is_a_recorded_failure(monkeypatch):
    """The limit strikes in the relaxation (made slow here). A limit of a millisecond struck inside pyxtal instead,
    where a bare ``except:`` can swallow it: the test then failed now and then on a loaded machine."""
    monkeypatch.setattr(relaxation, "relax_structure", lambda *args: time.sleep(30))
    start = time.perf_counter()
    result = relax_representation(NACL, 7, RelaxationSettings(num_trials=1, timeout=0.5))
    assert isinstance(result, RelaxationFailure) and result.index == 7 and result.reason.startswith("time:")
    assert time.perf_counter() - start < 10


@needs_chgnet
def test_the_relaxation_cache_resumes_a_run_and_reuses_only_the_same_job(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    first = relax_samples([NACL, KCL], ONE_TRIAL, indices=[4, 9], cache_dir=cache)
    files = sorted(p.name for p in cache.iterdir())
    assert len(files) == 2 and files[0].startswith("000004-") and files[1].startswith("000009-")

    def no_relaxation(*args):
        raise AssertionError("relaxed a cached sample")

    monkeypatch.setattr(relaxation, "relax_representation", no_relaxation)
    again = relax_samples([NACL, KCL], ONE_TRIAL, indices=[4, 9], cache_dir=cache)
    for old, new in zip(first, again, strict=True):
        assert (new.index, new.energy, new.trial, new.steps, new.space_group_relaxed) == \
            (old.index, old.energy, old.trial, old.steps, old.space_group_relaxed)
        assert new.structure == old.structure
    # another index, another representation or another protocol is another job
    calls = []
    monkeypatch.setattr(relaxation, "relax_representation",
                        lambda rep, index, settings, e: calls.append(index) or RelaxationFailure(index, "pyxtal: x"))
    relax_samples([NACL, KCL, NACL], ONE_TRIAL, indices=[5, 4, 4], cache_dir=cache)
    relax_samples([NACL], RelaxationSettings(num_trials=2), indices=[4], cache_dir=cache)
    assert calls == [5, 4, 4]
    (failure,) = relax_samples([NACL], ONE_TRIAL, indices=[5], cache_dir=cache)  # failures are kept as well
    assert failure == RelaxationFailure(5, "pyxtal: x") and calls == [5, 4, 4]
    # a damaged file is relaxed again, with a warning naming it
    damaged = next(cache.glob("000009-*.json"))
    damaged.write_text("{not json")
    with pytest.warns(UserWarning, match=f"{damaged.name}: unreadable"):
        relax_samples([KCL], ONE_TRIAL, indices=[9], cache_dir=cache)
    assert calls == [5, 4, 4, 9] and not list(cache.glob("*.partial"))


def test_settings_reject_impossible_protocols():
    with pytest.raises(ValueError, match="fmax"):
        RelaxationSettings(fmax=0.1, screen_fmax=0.05)
    with pytest.raises(ValueError, match="screen_fmax"):
        RelaxationSettings(refine_below=0.2)
    for refine in (0, 4):
        with pytest.raises(ValueError, match=f"screen_refine must be between 1 and num_trials=3, got {refine}"):
            RelaxationSettings(screen_fmax=0.1, screen_refine=refine)


def test_parallel_map_runs_in_fresh_spawned_workers_on_request():
    assert parallel_map(abs, [-1, -2, -3], 2, start_method="spawn") == [1, 2, 3]


def test_relaxing_on_an_accelerator_uses_spawned_workers(monkeypatch):
    """A forked child cannot use CUDA once the parent touched it (the device check does): workers start fresh."""
    start_methods = []

    def record(function, items, *args, start_method=None, **kwargs):
        start_methods.append(start_method)
        return [(position, RelaxationFailure(0, "not run")) for position, _ in items]

    monkeypatch.setattr(relaxation, "parallel_as_completed", record)
    relax_samples([NACL], RelaxationSettings(device="cuda"), num_workers=2)
    relax_samples([NACL], RelaxationSettings(), num_workers=2)
    assert start_methods == ["spawn", None]


def test_a_cache_key_names_the_protocol_but_not_the_device(tmp_path):
    cache = relaxation.RelaxationCache(tmp_path)
    screened = RelaxationSettings(screen_fmax=0.1)
    assert cache.path(NACL, 0, screened) == cache.path(NACL, 0, RelaxationSettings(screen_fmax=0.1, device="cuda"))
    assert cache.path(NACL, 0, screened) != cache.path(NACL, 0, RelaxationSettings(screen_fmax=0.1, screen_refine=2))
    assert "device" not in screened.protocol() and screened.protocol()["screen_refine"] == 1


@needs_chgnet
@pytest.mark.parametrize("refine", [1, 2])
def test_screening_refines_the_lowest_loose_trials_and_keeps_the_lowest_refined(monkeypatch, refine):
    calls = []

    def spy(structure, fmax, max_steps, *args):
        result = relax_structure(structure, fmax, max_steps, *args)
        calls.append((fmax, structure, result))
        return result

    monkeypatch.setattr(relaxation, "relax_structure", spy)
    kept = relax_representation(NACL, 3, RelaxationSettings(num_trials=3, screen_fmax=0.1, screen_refine=refine))
    loose = [result for fmax, _, result in calls if fmax == 0.1]
    refined = [(start, result) for fmax, start, result in calls if fmax == 0.02]
    assert len(loose) == 3 and len(refined) == refine
    lowest_loose = sorted(loose, key=lambda r: r[1] / len(r[0]))[:refine]
    assert [start for start, _ in refined] == [structure for structure, *_ in lowest_loose]
    assert kept.energy == min(result[1] for _, result in refined) and kept.converged


@pytest.mark.parametrize(("settings", "protocol"), [
    (RelaxationSettings(), "≤ 500 steps), lowest energy kept."),
    (RelaxationSettings(screen_fmax=0.1), "lowest energy kept (screening: every trial to fmax 0.1 eV/Å first, "
                                          "only the lowest refined)."),
    (RelaxationSettings(screen_fmax=0.1, screen_refine=2), "only the lowest 2 refined)."),
])
def test_the_report_states_the_relaxation_protocol(settings, protocol):
    metrics = {"num_with_energy": 9, "num_samples": 10, "num_failed": 1, "intervals": {"sun": [0.2, 0.6]},
               "settings": asdict(settings), "reference_fit": {"held_out_mae_ev_per_atom": 0.03}}
    first, intervals, _ = stability.stability_notes(metrics)
    assert first.startswith("- Stability: 9 of 10 Wyckoff-valid samples got an energy (1 failures")
    assert "3 pyxtal trial(s) each relaxed with CHGNet (primitive cell, symmetry fixed, fmax 0.02 eV/Å" in first
    assert first.endswith(protocol) and intervals == "- 95 % Wilson intervals: sun [20.0, 60.0] %."


# ------------------------------------------------------------------------------------------ S.U.N.


def test_wilson_interval():
    assert wilson_interval(5, 10) == pytest.approx([0.2366, 0.7634], abs=1e-4)
    assert wilson_interval(0, 10) == pytest.approx([0.0, 0.2775], abs=1e-4)
    assert wilson_interval(0, 0) is None


def test_sun_and_ssun_arithmetic():
    #              stable  meta   unstable  meta, dup  meta, known  meta, P1
    e_above_hull = [-0.01, 0.05, 0.2, 0.07, 0.0, 0.03]
    unique = [True, True, True, False, True, True]
    novel = [True, True, True, True, False, True]
    groups = [225, 194, 62, 225, 12, 1]
    metrics = sun_metrics(e_above_hull, unique, novel, groups)
    assert metrics["stable"]["count"] == 2 and metrics["metastable"]["count"] == 5
    assert metrics["sun"]["value"] == pytest.approx(3 / 6)
    assert metrics["ssun"]["value"] == pytest.approx(2 / 6)
    assert metrics["sun"]["interval"] == pytest.approx(wilson_interval(3, 6))


def test_unique_structures_keep_the_first_of_each_duplicate_group():
    structures = [rock_salt(5.64), rock_salt(5.64, "K"), rock_salt(5.65), rock_salt(5.64, "K")]
    assert unique_structures(structures) == [True, True, False, False]


# ------------------------------------------------------------------------------------------ pipeline


@needs_chgnet
def test_evaluate_with_stability_relaxes_places_on_the_hull_and_reports_sun(tmp_path):
    nacl_cif = rock_salt(5.64).to(fmt="cif")  # NaCl is a train row, KCl is not
    reference = ReferenceSet([NACL], [NACL, KCL], [nacl_cif], [nacl_cif, rock_salt(6.3, "K").to(fmt="cif")])
    samples = GeneratedSamples([NACL, None, KCL], errors={1: "not a representation"}, has_structures=False)
    everything = evaluate(samples, reference, tmp_path, num_workers=1, stability=ONE_TRIAL)
    metrics = everything["stability"]
    assert metrics["num_samples"] == 2 and metrics["num_with_energy"] == 2 and metrics["failures"] == {}
    assert metrics["novel"] == 0.5 and metrics["unique"] == 1.0 and metrics["space_group_kept"] == 1.0
    assert metrics["hull_composition_covered"] == 1.0
    assert metrics["sun"] == metrics["ssun"] == 0.5  # KCl in rock salt is on MP's hull, within CHGNet's error
    assert metrics["intervals"]["sun"] == pytest.approx(wilson_interval(1, 2))
    folder = tmp_path / stability.STABILITY_DIR
    with open(folder / stability.RELAXATIONS_FILE) as f:
        rows = list(csv.DictReader(f))
    assert [r["index"] for r in rows] == ["0", "2"] and all(abs(float(r["e_above_hull"])) < 0.08 for r in rows)
    assert Structure.from_file(folder / stability.RELAXED_DIR / "000002.cif").composition.reduced_formula == "KCl"
    assert (folder / stability.HISTOGRAM_PNG).read_bytes().startswith(b"\x89PNG")
    report = (tmp_path / "report.md").read_text()
    assert "| S.U.N. (stable, unique, novel) | 50.0 % | relaxed samples, novel vs train + validation |" in report
    assert "2 of 2 Wyckoff-valid samples got an energy" in report and "sun [" in report and "proxy" in report
    assert f"![{stability.STABILITY_DIR}/{stability.HISTOGRAM_PNG}]" in report
    # the model card's Stability section: the S.U.N. rows and the protocol, not the run's other metrics
    summary = json.loads((DEFAULT_MODEL / "training_summary.json").read_text())
    card = render_model_card(summary, stability=everything)
    section = card.split("## Stability")[1].split("## Limitations")[0]
    assert "| S.U.N. (stable, unique, novel) | 50.0 % | relaxed samples, novel vs train + validation |" in section
    assert "2 of 2 Wyckoff-valid samples got an energy" in section and "Wyckoff validity" not in section
    assert "Not measured yet" in render_model_card(summary)
    with pytest.raises(ValueError, match="hold no relaxation results"):
        render_model_card(summary, stability={k: v for k, v in everything.items() if k != "stability"})


def test_without_chgnet_the_metrics_say_how_to_install_it(monkeypatch):
    monkeypatch.setattr(stability, "chgnet_available", lambda: False)
    assert stability.stability_metrics([NACL], []) == {"skipped": stability.SKIP_MESSAGE}
    assert "pip install 'wyckoff-hf[stability]'" in stability.SKIP_MESSAGE
    with pytest.raises(ValueError, match=r"chgnet: pip install 'wyckoff-hf\[stability\]'"):
        evaluate(GeneratedSamples([NACL]), ReferenceSet([NACL], [NACL]), "unused", stability=ONE_TRIAL)


# ------------------------------------------------------------------------------------------ protocol comparison


def write_stability_run(folder, e_above_hull, seconds, groups_relaxed, sun):
    """An ``evaluate --stability`` output folder as the comparison script reads it (metrics.json + relaxations)."""
    (folder / stability.STABILITY_DIR).mkdir(parents=True)
    fractions = {key: sun for key in ("sun", "ssun", "metastable", "stable", "unique", "novel")}
    metrics = {**fractions, "num_samples": len(e_above_hull), "num_with_energy": len(e_above_hull),
               "space_group_kept": 1.0, "converged": 1.0, "intervals": {"sun": wilson_interval(1, 2)}}
    (folder / "metrics.json").write_text(json.dumps({"stability": metrics}))
    pd.DataFrame({"index": range(len(e_above_hull)), "e_above_hull": e_above_hull, "seconds": seconds,
                  "space_group_sampled": 225, "space_group_relaxed": groups_relaxed}).to_csv(
        folder / stability.STABILITY_DIR / stability.RELAXATIONS_FILE, index=False)


def test_diagnose_stability_splits_the_stable_share_by_template_and_size(tmp_path, capsys, tiny_dataset):
    diagnose = load_script("diagnostics/diagnose_stability")
    train = [representation_from_row(row) for row in load_wyckoff_dataset(tiny_dataset)["train"]]
    new_small = WyckoffRepresentation.from_sites(1, [("Na", "a"), ("Cl", "a")])
    new_large = WyckoffRepresentation.from_sites(1, [("Na", "a")] * 4 + [("Cl", "a")] * 5)
    samples = [train[0], train[1], new_small, new_large]
    assert novel_templates(samples, train) == [False, False, True, True]
    (tmp_path / "samples.jsonl").write_text("".join(json.dumps(rep.to_dict()) + "\n" for rep in samples))
    write_stability_run(tmp_path / "run", [0.0, 0.5, 0.05, 0.3], [1.0] * 4, [225] * 4, 0.5)
    diagnose.main(["--dataset", str(tiny_dataset), "--run", "tiny", str(tmp_path / "run"), str(tmp_path)])
    rows = {line.split(" | ")[0].removeprefix("| "): line.split(" | ")[1].removesuffix(" |")
            for line in capsys.readouterr().out.splitlines() if line.startswith("| ") and "---" not in line}
    assert rows["all"] == "4 (100 %): 50.0 % [15.0, 85.0]"
    assert rows["known template"] == rows["new template"] == "2 (50 %): 50.0 % [9.5, 90.5]"
    assert rows["new template, at most 3 sites"] == "1 (25 %): 100.0 % [20.7, 100.0]"
    assert rows["new template, more than 3 sites"] == "1 (25 %): 0.0 % [0.0, 79.3]"
    # Tm4Mg4Hg8 (metals: an alloy), Zn3N2 and NaCl are charge-balanced, Na4Cl5 is not
    assert [composition_validity(rep.composition) for rep in samples] == [True, True, True, False]
    assert rows["SMACT-valid composition"] == "3 (75 %): 66.7 % [20.8, 93.9]"
    assert rows["SMACT-invalid composition"] == "1 (25 %): 0.0 % [0.0, 79.3]"
    (tmp_path / "samples.jsonl").write_text(json.dumps(new_small.to_dict()) + "\n")
    with pytest.raises(SystemExit, match="sample index 3 is past the 1 lines"):
        diagnose.main(["--dataset", str(tiny_dataset), "--run", "tiny", str(tmp_path / "run"), str(tmp_path)])
