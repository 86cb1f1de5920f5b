"""scripts/benchmarks/benchmark_quality.py on a tiny random model and a tiny prepared dataset: every row, sane
values."""

import math
from pathlib import Path

import pytest
import torch
from conftest import TINY_DATASET_MAX_SITES, load_script

from wyckoff_hf.data import load_wyckoff_dataset
from wyckoff_hf.evaluation import ReferenceSet
from wyckoff_hf.generation import load_generator
from wyckoff_hf.modeling import WyckoffTransformerConfig, WyckoffTransformerForCrystalGeneration
from wyckoff_hf.tokenization import WyckoffRepresentation, WyckoffTokenizer

ROOT = Path(__file__).resolve().parent.parent
TINY = {"space_group_embedding_size": 8, "element_embedding_size": 16, "site_symmetry_embedding_size": 8,
        "enumeration_embedding_size": 4, "derived_feature_size": 4, "num_hidden_layers": 1,
        "num_attention_heads": 2, "intermediate_size": 32, "hidden_dropout_prob": 0.0,
        "max_sites": TINY_DATASET_MAX_SITES}
NUM_SAMPLES = 300


@pytest.fixture(scope="module")
def benchmark():
    return load_script("benchmarks/benchmark_quality")


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    tokenizer = WyckoffTokenizer()
    torch.manual_seed(0)
    model = WyckoffTransformerForCrystalGeneration(WyckoffTransformerConfig.from_tokenizer(tokenizer, **TINY))
    path = tmp_path_factory.mktemp("model")
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def test_table_has_every_row_and_sane_values(benchmark, tiny_model, tiny_dataset, capsys):
    result = benchmark.main(["--model", str(tiny_model), "--dataset", str(tiny_dataset), "--num-samples",
                             str(NUM_SAMPLES), "--seed", "3", "--markdown-row", "tiny"])
    out = capsys.readouterr().out
    table = [line for line in out.splitlines() if line.startswith("| ")]
    assert table[0] == "| metric | target | value | test split (baseline) |"
    assert [line.split(" | ")[0].removeprefix("| ") for line in table[1:-1]] == [row.label for row in benchmark.ROWS]
    assert f"{NUM_SAMPLES} samples (seed 3" in out and "wall time" in out
    assert f"99 % uniqueness of {NUM_SAMPLES} samples needs Σ p² ≤ 6.7e-05" in out  # the collisions line

    values, baseline = result["values"], result["baseline"]
    fractions = [row.key for row in benchmark.ROWS if row.is_fraction]
    for key in fractions:
        assert 0.0 <= values[key] <= 1.0, key
        assert 0.0 <= baseline[key] <= 1.0, key
    assert baseline["p1_fraction"] == 0.0  # the 20 test crystals are symmetric
    for key in benchmark.DISTANCE_KEYS:
        assert values[key] >= 0.0 and baseline[key] >= 0.0
    assert 0.0 <= values["space_group_tv"] <= 1.0
    assert values["nll_per_site"] > 1.0  # a random model spreads its mass over ~100 elements per site
    assert all(values[f"{field}_cross_entropy"] > 0 for field in ("element", "site_symmetry", "enumeration"))

    row = table[-1]
    assert row.startswith("| tiny | `python scripts/benchmarks/benchmark_quality.py --model ")
    assert "--markdown-row" not in row
    header = next(line for line in (ROOT / "model_cards" / "experiments.md").read_text().splitlines()
                  if line.startswith("| experiment |"))
    assert row.count(" | ") == header.count(" | ")  # the row fits the experiments table


def test_field_temperatures_reach_the_sampler_and_the_header(benchmark, tiny_model, tiny_dataset, capsys,
                                                             monkeypatch):
    seen = {}
    sample = benchmark.sample_crystals

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return sample(*args, **kwargs)

    monkeypatch.setattr(benchmark, "sample_crystals", spy)
    benchmark.main(["--model", str(tiny_model), "--dataset", str(tiny_dataset), "--num-samples", "50",
                    "--temperature", "0.8", "--field-temperature", "site_symmetry=2", "--markdown-row", "hot"])
    out = capsys.readouterr().out
    assert seen["temperature"] == 0.8 and seen["field_temperatures"] == {"site_symmetry": 2.0}
    assert "temperatures element 0.8, site_symmetry 2, enumeration 0.8)" in out
    assert "--temperature 0.8 --field-temperature site_symmetry=2`" in out.splitlines()[-1]


def test_collisions_estimate_the_sum_of_squared_probabilities(benchmark):
    nacl = WyckoffRepresentation.from_sites(225, [("Na", "a"), ("Cl", "b")])
    swapped = WyckoffRepresentation.from_sites(225, [("Na", "b"), ("Cl", "a")], canonical=False)  # the same crystal
    kcl = WyckoffRepresentation.from_sites(225, [("K", "a"), ("Cl", "b")])
    line = benchmark.collisions([nacl, swapped, kcl, nacl])  # NaCl 3 times: 3 equal pairs of 6
    assert line == ("collisions: 1 crystals drawn more than once, 3 equal pairs: Σ p² ≈ 0.5, as from 2 equally "
                    "likely crystals; 99 % uniqueness of 4 samples needs Σ p² ≤ 0.0067, at least 150 of them")
    assert benchmark.collisions([nacl, kcl]).endswith("0 equal pairs; 99 % uniqueness of 2 samples needs Σ p² ≤ 0.02")


def test_validation_nll_does_not_depend_on_batching(benchmark, tiny_model, tiny_dataset, monkeypatch):
    model, tokenizer = load_generator(tiny_model)
    validation = ReferenceSet.from_dataset(load_wyckoff_dataset(tiny_dataset)).validation
    batched = benchmark.validation_nll(model, tokenizer, validation)
    monkeypatch.setattr(benchmark, "NLL_BATCH", 1)
    one_by_one = benchmark.validation_nll(model, tokenizer, validation)
    assert one_by_one == pytest.approx(batched, rel=1e-5)
    expected = -sum(float(model(**tokenizer([rep], return_tensors="pt")).log_likelihood) / (len(rep.sites) + 1)
                    for rep in validation) / len(validation)
    assert batched["nll_per_site"] == pytest.approx(expected, rel=1e-5)


def test_crystal_nll_sums_the_equivalent_labellings(benchmark, tiny_model):
    model, tokenizer = load_generator(tiny_model)
    rock_salt = WyckoffRepresentation.from_sites(225, [("Na", "a"), ("Cl", "b")])
    log_p = [float(model(**tokenizer([rep], return_tensors="pt")).log_likelihood)
             for rep in (rock_salt, rock_salt.relabelled(1))]  # Na 4a Cl 4b and Na 4b Cl 4a
    expected = -math.log(math.exp(log_p[0]) + math.exp(log_p[1])) / 3
    assert benchmark.crystal_nll(model, tokenizer, [rock_salt])["crystal_nll_per_site"] == pytest.approx(expected)


def test_crystal_nll_of_a_model_of_any_order_also_sums_the_orders(benchmark, tokenizer, monkeypatch):
    torch.manual_seed(0)
    model = WyckoffTransformerForCrystalGeneration(
        WyckoffTransformerConfig.from_tokenizer(tokenizer, **TINY, site_order="any")).eval()
    rock_salt = WyckoffRepresentation.from_sites(225, [("Na", "a"), ("Cl", "b")])
    sequences = [WyckoffRepresentation(225, order) for labelling in (rock_salt, rock_salt.relabelled(1))
                 for order in (labelling.sites, labelling.sites[::-1])]
    p = sum(math.exp(float(model(**tokenizer([rep], return_tensors="pt")).log_likelihood)) for rep in sequences)
    assert benchmark.crystal_nll(model, tokenizer, [rock_salt])["crystal_nll_per_site"] == pytest.approx(
        -math.log(p) / 3)
    # more sequences than MAX_VARIANTS: count × the mean p of uniform draws, unbiased for p itself
    monkeypatch.setattr(benchmark, "MAX_VARIANTS", 3)
    estimates = [math.exp(-3 * benchmark.crystal_nll(model, tokenizer, [rock_salt], seed)["crystal_nll_per_site"])
                 for seed in range(300)]
    assert len(set(estimates)) > 1 and sum(estimates) / len(estimates) == pytest.approx(p, rel=0.05)


def test_distinct_orders_of_repeated_sites_are_listed_once(benchmark):
    # 13 silicon orbits on P1's one position and one oxygen: 14 distinct orders, where 14! permutations would hang
    crystal = WyckoffRepresentation.from_sites(1, [("Si", "a")] * 13 + [("O", "a")])
    orders = benchmark.distinct_orders(crystal.sites)
    assert len(orders) == len(set(orders)) == 14
    assert all(sorted(map(str, order)) == sorted(map(str, crystal.sites)) for order in orders)
    sequences, log_factor = benchmark.crystal_sequences(crystal, True, None)
    assert log_factor == 0.0 and {rep.sites for rep in sequences} == set(orders)


def test_command_line_drops_the_row_name(benchmark):
    assert benchmark.command_line(["--model", "m", "--markdown-row", "a b", "--seed", "1"]) == \
        "python scripts/benchmarks/benchmark_quality.py --model m --seed 1"
    assert benchmark.command_line(["--markdown-row=x", "--dataset", "d"]) == \
        "python scripts/benchmarks/benchmark_quality.py --dataset d"
