"""Crystal structure prediction: samples hold exactly the asked composition, by masks that never dead-end.

The masks of ``CompositionMoves`` are checked against a brute-force enumeration (from the crystallographic tables,
not the model's tensors) of every canonical site sequence that holds Z formula units: walking the masks must reach
exactly those sequences, and never a state with nothing allowed.
"""

from __future__ import annotations

import json
import time
from collections import Counter

import pytest
import torch
from test_generation_exactness import TINY

from wyckoff_hf.cli import main
from wyckoff_hf.generation.csp import formula_unit, predict_structures
from wyckoff_hf.modeling import WyckoffTransformerConfig, WyckoffTransformerForCrystalGeneration
from wyckoff_hf.modeling.sampling_arguments import composition_moves
from wyckoff_hf.tokenization import WyckoffRepresentation, space_group_table
from wyckoff_hf.tokenization.representation import electronegativity_key

NACL = WyckoffRepresentation.from_sites(225, [("Na", "a"), ("Cl", "b")])


@pytest.fixture(scope="module")
def model(tokenizer) -> WyckoffTransformerForCrystalGeneration:
    torch.manual_seed(0)
    return WyckoffTransformerForCrystalGeneration(WyckoffTransformerConfig.from_tokenizer(tokenizer, **TINY)).eval()


def formula_units(representation: WyckoffRepresentation, formula: dict[str, int]) -> int | None:
    """Z when the representation holds exactly Z formula units, else None."""
    counts = Counter()
    for site in representation.sites:
        counts[site.element] += site.multiplicity
    z = counts[next(iter(formula))] // formula[next(iter(formula))]
    return z if z >= 1 and counts == Counter({e: z * n for e, n in formula.items()}) else None


def brute_force(space_group: int, formula: dict[str, int], max_atoms: int, max_sites: int) -> set[tuple]:
    """Every canonical sequence ((element, letter), ...) holding Z formula units, Z × atoms ≤ max_atoms."""
    positions = space_group_table(space_group).positions
    elements = sorted(formula, key=electronegativity_key)
    found = set()

    def fill(index: int, first: int, missing: int, used: frozenset, sequence: tuple, z: int) -> None:
        if len(sequence) > max_sites:
            return
        if missing == 0:
            if index + 1 == len(elements):
                found.add(sequence)
            elif index + 1 < len(elements):
                fill(index + 1, 0, z * formula[elements[index + 1]], used, sequence, z)
        for k in range(first, len(positions)):
            position = positions[k]
            if position.multiplicity <= missing and position.letter not in used:
                taken = used | ({position.letter} if not position.dof else set())
                site = (elements[index], position.letter)
                fill(index, k, missing - position.multiplicity, taken, (*sequence, site), z)

    for z in range(1, max_atoms // sum(formula.values()) + 1):
        fill(0, 0, z * formula[elements[0]], frozenset(), (), z)
    return found


def walk(moves, space_group: int, tokenizer) -> set[tuple]:
    """Every sequence the composition masks let the sampler produce (asserting that no state is a dead end)."""
    group = space_group + 2
    table = space_group_table(space_group)
    vocabulary = tokenizer.vocabularies
    found = set()

    def visit(state, sequence: tuple) -> None:
        stop, options = moves.moves(group, state)
        assert stop or options, f"dead end after {sequence}"
        if stop:
            found.add(sequence)
        for element, positions in options.items():
            for site_symmetry, enumeration in positions:
                letter = table.by_site_symmetry(vocabulary["site_symmetry"][site_symmetry],
                                               int(vocabulary["enumeration"][enumeration])).letter
                visit(moves.advance(group, state, element, site_symmetry, enumeration),
                      (*sequence, (vocabulary["element"][element], letter)))

    visit(None, ())
    return found


@pytest.mark.parametrize(("space_group", "formula", "max_atoms", "max_sites"), [
    (225, {"Na": 1, "Cl": 1}, 64, 6),  # Z ≥ 4 in Fm-3m, 0-dof positions shared by the two elements
    (221, {"Sr": 1, "Ti": 1, "O": 3}, 20, 5),
    (62, {"Li": 2, "O": 1}, 24, 4),  # Pnma: 4a, 4b 0-dof; 4c (1 dof) reusable; 8d
    (191, {"Mg": 1, "B": 2}, 12, 4),
    (2, {"Si": 1}, 4, 6),  # one element; P-1's eight 1-fold 0-dof positions
])
def test_masks_reach_exactly_the_sequences_of_the_composition(model, tokenizer, space_group, formula, max_atoms,
                                                               max_sites):
    moves = composition_moves(model, formula, max_atoms, max_sites)
    expected = brute_force(space_group, formula, max_atoms, max_sites)
    assert expected and walk(moves, space_group, tokenizer) == expected
    assert moves.reachable_from_start(space_group + 2)


@pytest.mark.parametrize(("formula", "space_group", "minimum_z"), [
    ({"Na": 1, "Cl": 1}, 225, 4),
    ({"Sr": 1, "Ti": 1, "O": 3}, None, 1),
    ({"Li": 2, "O": 1}, 62, 4),
    ({"Fe": 2, "O": 3}, 167, 6),
])
def test_every_sample_has_exactly_the_composition(model, tokenizer, formula, space_group, minimum_z):
    out = model.generate(200, composition=formula, space_group=space_group, max_atoms=40, seed=0)
    crystals = tokenizer.decode(out)
    units = [formula_units(crystal, formula) for crystal in crystals]
    assert None not in units, [str(c) for c, z in zip(crystals, units, strict=True) if z is None][:3]
    assert min(units) >= minimum_z and max(c.num_atoms for c in crystals) <= 40
    assert space_group is None or {c.space_group for c in crystals} == {space_group}
    assert torch.isfinite(out.sequences_scores).all() and (out.sequences_scores <= 0).all()


def test_sampled_groups_can_hold_the_composition(model, tokenizer):
    crystals = model.generate(300, composition={"Na": 1, "Cl": 1}, max_atoms=2, seed=1, tokenizer=tokenizer)
    groups = {c.space_group for c in crystals}
    assert len(groups) > 10 and all(c.num_atoms == 2 for c in crystals)  # groups with a 1- or 2-fold position
    assert all(space_group_table(g).positions[0].multiplicity <= 2 for g in groups)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"composition": {"Na": 1, "Cl": 1}, "space_group": 225, "max_atoms": 7},
     r"composition Na1Cl1: space group 225 cannot hold it \(Z ≥ 1 formula units, at most max_atoms=7"),
    ({"composition": {element: 1 for element in ("H", "Li", "Be", "B", "C", "N", "O", "F", "Na", "Mg", "Al", "Si",
                                                 "P", "S", "Cl", "K", "Ca", "Sc", "Ti", "V", "Cr")}},
     r"no space group of the prior can hold it"),
    # the default max_atoms is 4 × max_sites (6 for the tiny model)
    ({"composition": {"O": 25}}, r"composition O25 has 25 atoms per formula unit, more than max_atoms=24"),
    ({"composition": {"Xx": 1}}, r"composition: 'Xx' is not an element symbol"),
    ({"composition": {"O": 0}}, r"composition: 'O' needs one count of at least 1"),
    ({"composition": {"O": 1}, "allowed_elements": ["O"]}, r"not combined with prompt, allowed_elements"),
])
def test_impossible_requests_fail_fast_with_a_clear_error(model, kwargs, message):
    start = time.perf_counter()
    with pytest.raises(ValueError, match=message):
        model.generate(5, **kwargs)
    assert time.perf_counter() - start < 5


def test_rock_salt_is_among_the_predictions_of_a_random_model(model, tokenizer):
    predictions = predict_structures("NaCl", model, tokenizer, n=300, space_group=225)
    assert NACL in [p.representation for p in predictions]
    scores = [p.log_probability for p in predictions]
    assert scores == sorted(scores, reverse=True) and sum(p.count for p in predictions) == 300
    assert len({p.representation for p in predictions}) == len(predictions)  # deduplicated by canonical form
    assert all(formula_units(p.representation, {"Na": 1, "Cl": 1}) for p in predictions)


def test_a_crystal_scores_the_probability_of_all_its_labellings(model, tokenizer):
    predictions = predict_structures("NaCl", model, tokenizer, n=300, space_group=225)
    swapped = WyckoffRepresentation.from_sites(225, [("Na", "b"), ("Cl", "a")], canonical=False)
    with torch.no_grad():
        both = model(**tokenizer([NACL, swapped], return_tensors="pt")).log_likelihood
    score = next(p.log_probability for p in predictions if p.representation == NACL)
    assert score == pytest.approx(float(torch.logsumexp(both, 0)), abs=1e-4)
    # without a given group, the prior's log p(S) is added
    prior = model.space_group_prior()
    unconditioned = predict_structures("NaCl", model, tokenizer, n=300, max_atoms=8, seed=1)  # one that draws NaCl
    score = next(p.log_probability for p in unconditioned if p.representation == NACL)
    assert score == pytest.approx(float(torch.logsumexp(both, 0) + (prior[227] / prior.sum()).log()), abs=1e-4)


@pytest.mark.parametrize(("text", "expected"), [
    ("SrTiO3", {"Sr": 1, "Ti": 1, "O": 3}), ("Sr2Ti2O6", {"Sr": 1, "Ti": 1, "O": 3}), ("Na4Cl4", {"Na": 1, "Cl": 1}),
])
def test_formula_units_are_reduced(text, expected):
    assert formula_unit(text) == expected


@pytest.mark.parametrize(("text", "message"), [("Fe0.5O", "whole, positive numbers"), ("Qq2", "not a chemical")])
def test_bad_formulas_are_refused(text, message):
    with pytest.raises(ValueError, match=message):
        formula_unit(text)


def test_csp_command_writes_the_generate_layout_with_log_probabilities(tmp_path, model, tokenizer, capsys):
    checkpoint = tmp_path / "model"
    model.save_pretrained(checkpoint)
    tokenizer.save_pretrained(checkpoint)
    out = tmp_path / "out"
    assert main(["csp", "NaCl", "-n", "40", "--sample", "--space-group", "225", "--model", str(checkpoint),
                 "--output-dir", str(out)]) == 0
    lines = (out / "samples.jsonl").read_text().splitlines()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["csp"]["composition"] == {"Na": 1, "Cl": 1} and len(manifest["csp"]["log_probabilities"]) == len(
        lines) and sum(manifest["csp"]["counts"]) == 40
    crystals = [WyckoffRepresentation.from_dict(json.loads(line)) for line in lines]
    assert all(c.space_group == 225 and formula_units(c, {"Na": 1, "Cl": 1}) for c in crystals)
    assert "distinct crystals of NaCl in 40 samples" in capsys.readouterr().out
    # nearly greedy structural fields (--field-temperature) reach csp's sampler: fewer distinct crystals
    assert main(["csp", "NaCl", "-n", "40", "--sample", "--space-group", "225", "--model", str(checkpoint),
                 "--output-dir", str(tmp_path / "cold"), "--field-temperature", "site_symmetry=0.01",
                 "--field-temperature", "enumeration=0.01"]) == 0
    cold = json.loads((tmp_path / "cold" / "manifest.json").read_text())
    assert cold["generation"]["temperature"] == {"element": 1.0, "site_symmetry": 0.01, "enumeration": 0.01}
    assert len(cold["csp"]["counts"]) < len(lines)
    assert main(["csp", "Fe0.5O", "--output-dir", str(tmp_path / "bad")]) == 2
    assert "whole, positive numbers" in capsys.readouterr().err


def test_distinct_crystals_keep_the_likeliest_with_exact_counts():
    """The bounded store: at most ``capacity`` crystals, the likeliest, and a dropped crystal never comes back, so
    the counts of those kept are those of every sample."""
    from wyckoff_hf.generation.csp import DistinctCrystals

    scores = {"a": -1.0, "b": -2.0, "c": -3.0, "d": -0.5}
    found = DistinctCrystals(capacity=2)
    scored = []

    def score(crystals):
        scored.extend(crystals)
        return [scores[c] for c in crystals]

    for chunk in (["c", "c", "b"], ["a", "c"], ["d", "c", "a", "b"]):
        found.add(chunk, score)
        assert len(found) <= 2
    assert [(p.representation, p.log_probability, p.count) for p in found.predictions()] == [("d", -0.5, 1),
                                                                                             ("a", -1.0, 2)]
    assert found.drawn == 9 and found.dropped == 2 and found.floor == -2.0
    assert scored == ["c", "b", "a", "d", "c"]  # "c", once dropped, is scored again when sampled, and refused


def test_predict_structures_streams_chunks_into_a_bounded_store(model, tokenizer, monkeypatch):
    from wyckoff_hf.generation.csp import DistinctCrystals

    asked = []
    generate = model.generate

    def recording(*args, **kwargs):
        asked.append(kwargs["num_samples"])
        return generate(*args, **kwargs)

    monkeypatch.setattr(model, "generate", recording)
    found = DistinctCrystals(capacity=3)
    predictions = predict_structures("NaCl", model, tokenizer, n=100, max_atoms=8, batch_size=16, found=found)
    assert asked == [16] * 6 + [4] and found.drawn == 100
    assert len(predictions) == 3 and found.dropped > 0
    unbounded = predict_structures("NaCl", model, tokenizer, n=100, max_atoms=8, batch_size=16)
    assert predictions == unbounded[:3]  # the same likeliest crystals, with the same (exact) counts
