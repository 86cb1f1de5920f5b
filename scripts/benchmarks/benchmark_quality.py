"""Sample quality against the issue-13 targets: N Wyckoff-level samples, one table (one row per experiment).

    python scripts/benchmarks/benchmark_quality.py --model wyckoff_hf/pretrained/mp20-biternary \\
        --dataset data_prepared/mp20-biternary-dev --num-samples 10000 [--seed 0] [--temperature T] \\
        [--field-temperature FIELD=T ...] [--num-elements-range LOW HIGH] [--markdown-row NAME]

Every row is measured on Wyckoff representations only (no 3D realisation), so 10,000 samples take about
20 s on one CPU core (the shipped model); the metrics are those of ``wyckoff_hf.evaluation`` (``wyckoff-hf
evaluate``), here without structures:

- out-of-support #elements: samples whose number of distinct elements never occurs in the train split
  (an MP-20 binary/ternary model should never write a quaternary); out-of-support atoms: samples whose atoms per
  primitive cell lie outside the train split's range (MP-20: at most 20);
- W1 #elements / W1 #sites / W1 atoms per conventional cell / space-group TV distance: to the whole test split;
- Wyckoff novelty and template novelty vs train, Wyckoff uniqueness, P1 fraction, SMACT compositional validity;
- validation NLL per site: the mean over validation crystals of −log p(sites, STOP | S) / (#sites + 1), where
  log p is ``forward(...).log_likelihood`` (teacher forcing on the crystal's canonical labelling, temperature 1):
  one term per site plus the STOP decision, so crystals of different sizes weigh alike. ``forward`` exposes
  per-field losses rather than per-field log-likelihoods, so the split by field is the mean cross-entropy of each
  head over the whole validation split (element head: one prediction per site and per STOP; site-symmetry and
  enumeration heads: one per site).
- validation NLL per site of the crystal: the same with p(crystal) = the sum of p over its distinct equivalent
  labellings (``WyckoffRepresentation.relabelled``), the likelihood of the crystal itself rather than of one of its
  labellings. A model trained on canonical labellings only puts almost no mass on the others, so the two NLLs
  nearly agree for it; for a model trained on every labelling (augmentation) only this one is comparable.
  For a model of any site order (``config.site_order = "any"``) the sum also runs over the distinct orders of the
  sites of every labelling, which the canonical NLL above counts one of. Up to ``MAX_VARIANTS`` sequences per
  crystal it is exact; beyond, it is estimated from ``MAX_VARIANTS`` (labelling, order) draws, uniform over all of
  them, as their count times the mean of p, whose logarithm is low on average (Jensen): the NLL is then an
  upper bound, in expectation, not an estimate that could flatter the model.

The baseline column scores real crystals the same way: the first N test rows against train for the set metrics
(novelty, uniqueness, P1, SMACT, support), and the first N train rows against test for the distances (a test row
compared with the test split would be at distance 0; train vs test is the floor two samples of the data reach).
Uniqueness is not comparable between the two columns: the test split lists distinct materials (its few repeats are
structures that share a Wyckoff representation), the samples are independent draws; the collision line under the
table says how spread out a sampler must be to meet the target.
"""

from __future__ import annotations

import argparse
import math
import shlex
import sys
import time
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from sympy.utilities.iterables import multiset_permutations

from wyckoff_hf.data import load_wyckoff_dataset
from wyckoff_hf.evaluation import (
    GeneratedSamples,
    ReferenceSet,
    novelty_metrics,
    symmetry_metrics,
    validity_metrics,
    wasserstein_distances,
)
from wyckoff_hf.evaluation.statistics import COUNTED_PROPERTIES
from wyckoff_hf.evaluation.validity import fraction
from wyckoff_hf.generation import load_generator, sample_crystals
from wyckoff_hf.generation.jobs import set_threads
from wyckoff_hf.tokenization import WyckoffRepresentation
from wyckoff_hf.utils.arguments import add_field_temperature_option

NLL_BATCH = 64  # validation crystals per teacher-forced forward pass, of similar sizes
MAX_VARIANTS = 64  # sequences per crystal summed exactly in the crystal NLL; beyond, as many drawn


@dataclass(frozen=True)
class Row:
    key: str
    label: str
    target: str
    is_fraction: bool = False


ROWS = (
    Row("out_of_support_num_elements", "out-of-support #elements (vs train)", "≤ 1 %", True),
    Row("wasserstein_num_elements", "W1 #elements to test", "≤ 0.05"),
    Row("wasserstein_num_sites", "W1 #sites to test", "≤ 0.15"),
    Row("space_group_tv", "space-group TV distance to test", "≤ 0.11"),
    Row("wyckoff_novel", "Wyckoff novelty vs train", "≥ 92 %", True),
    Row("template_novel", "template novelty vs train", "≥ 40 %", True),
    Row("wyckoff_unique", "Wyckoff uniqueness", "≥ 99 %", True),
    Row("p1_fraction", "P1 fraction", "≤ 1.5 %", True),
    Row("compositional_valid", "SMACT compositional validity", "≥ test split", True),
    Row("nll_per_site", "validation NLL per site (nats)", "lower is better"),
    Row("crystal_nll_per_site", "validation NLL per site of the crystal (all its labellings and site orders)",
        "lower is better"),
    Row("element_cross_entropy", "  element head CE per prediction (sites + STOP)", "lower is better"),
    Row("site_symmetry_cross_entropy", "  site-symmetry head CE per site", "lower is better"),
    Row("enumeration_cross_entropy", "  enumeration head CE per site", "lower is better"),
    Row("out_of_support_num_atoms", "out-of-support atoms per primitive cell (vs train's range)", "0 %", True),
    Row("wasserstein_num_atoms", "W1 atoms per conventional cell to test", "≤ 0.5"),
)
DISTANCE_KEYS = ("wasserstein_num_elements", "wasserstein_num_sites", "wasserstein_num_atoms", "space_group_tv")


def set_metrics(crystals: Sequence[WyckoffRepresentation], train: Sequence[WyckoffRepresentation]
                ) -> dict[str, float | None]:
    """The metrics of a set of crystals on its own or against ``train``: support, novelty, uniqueness, P1, SMACT."""
    count_elements = COUNTED_PROPERTIES["num_elements"]
    support = {count_elements(rep) for rep in train}
    atoms = [rep.num_primitive_atoms for rep in train]
    samples = GeneratedSamples.from_representations(crystals)
    novelty = novelty_metrics(samples, train)
    return {
        "out_of_support_num_elements": fraction(sum(count_elements(rep) not in support for rep in crystals),
                                                len(crystals)),
        "out_of_support_num_atoms": fraction(sum(not min(atoms) <= rep.num_primitive_atoms <= max(atoms)
                                                 for rep in crystals), len(crystals)),
        **{key: novelty[key] for key in ("wyckoff_novel", "template_novel", "wyckoff_unique")},
        "p1_fraction": symmetry_metrics(crystals, [])["p1_fraction"],
        "compositional_valid": validity_metrics(samples, structure_metrics=False)["compositional_valid"],
    }


def collisions(crystals: Sequence[WyckoffRepresentation]) -> str:
    """How concentrated the sampler is, which uniqueness measures at one sample size only: the unbiased estimate of
    Σ p² over crystals (pairs of equal samples / all pairs), read as the number of equally likely crystals that
    would collide as often, beside what 99 % uniqueness asks at this size (uniqueness ≈ 1 − (n − 1) Σ p² / 2 while
    collisions are rare, so Σ p² ≤ 0.02 / (n − 1))."""
    counts = Counter(rep.canonical() for rep in crystals)
    n = len(crystals)
    repeated = sum(count > 1 for count in counts.values())
    pairs = sum(count * (count - 1) // 2 for count in counts.values())
    if n < 2:
        return "collisions: fewer than two samples"
    head = f"collisions: {repeated} crystals drawn more than once, {pairs} equal pairs"
    if not pairs:
        return f"{head}; 99 % uniqueness of {n} samples needs Σ p² ≤ {0.02 / (n - 1):.2g}"
    sum_p2 = pairs / (n * (n - 1) / 2)
    return (f"{head}: Σ p² ≈ {sum_p2:.3g}, as from {1 / sum_p2:,.0f} equally likely crystals; 99 % uniqueness of "
            f"{n} samples needs Σ p² ≤ {0.02 / (n - 1):.2g}, at least {(n - 1) / 0.02:,.0f} of them")


def distance_metrics(crystals: Sequence[WyckoffRepresentation], test: Sequence[WyckoffRepresentation]
                     ) -> dict[str, float | None]:
    """W1 of #elements, #sites and atoms per conventional cell and the space-group TV distance of ``crystals`` to
    ``test``."""
    distances = wasserstein_distances(crystals, test)
    return {"wasserstein_num_elements": distances["wasserstein_num_elements"],
            "wasserstein_num_sites": distances["wasserstein_num_sites"],
            "wasserstein_num_atoms": distances["wasserstein_num_atoms"],
            "space_group_tv": symmetry_metrics(crystals, test)["space_group_tv"]}


@torch.no_grad()
def validation_nll(model, tokenizer, validation: Sequence[WyckoffRepresentation]) -> dict[str, float]:
    """Validation NLL per site (see the module docstring) and the per-head mean cross-entropies.

    Each head's batch loss is a mean over that batch's predictions, so it is weighted by their count
    (element: sites + STOP; the other heads: sites) to give the mean over the whole split."""
    if not validation:
        raise ValueError("the validation NLL needs a validation split with at least one crystal")
    order = sorted(range(len(validation)), key=lambda i: len(validation[i].sites))  # little padding per batch
    nll_per_site = 0.0
    cross_entropy = {"element": 0.0, "site_symmetry": 0.0, "enumeration": 0.0}
    predictions = {"element": 0, "site_symmetry": 0, "enumeration": 0}
    for start in range(0, len(order), NLL_BATCH):
        batch = tokenizer([validation[i] for i in order[start:start + NLL_BATCH]], return_tensors="pt")
        output = model(**batch.to(model.device))
        tokens = batch["attention_mask"].sum(1)  # sites + STOP, per crystal
        nll_per_site += float((-output.log_likelihood / tokens).sum())
        counts = {"element": int(tokens.sum()), "site_symmetry": int((tokens - 1).sum())}
        counts["enumeration"] = counts["site_symmetry"]
        for field, count in counts.items():
            cross_entropy[field] += float(getattr(output, f"{field}_loss")) * count
            predictions[field] += count
    return {"nll_per_site": nll_per_site / len(validation),
            **{f"{field}_cross_entropy": total / predictions[field] if predictions[field] else float("nan")
               for field, total in cross_entropy.items()}}


def distinct_orders(sites: Sequence) -> list[tuple]:
    """Every distinct order of ``sites``, each once: repeated sites (same element and position) are not told apart, so
    there are n! / (product of the repeats' factorials) of them, where ``itertools.permutations`` would make n!."""
    kinds = list(dict.fromkeys(sites))
    return [tuple(kinds[kind] for kind in order)
            for order in multiset_permutations([kinds.index(site) for site in sites])]


def crystal_sequences(crystal: WyckoffRepresentation, any_order: bool,
                      rng: np.random.Generator) -> tuple[list[WyckoffRepresentation], float]:
    """The sequences whose probabilities add up to the crystal's, and the log of the factor their sum is scaled by:
    its distinct labellings (and, for a model of any site order, every distinct order of each), all of them with
    factor 1, or ``MAX_VARIANTS`` uniform draws among them with factor count / draws (see the module docstring)."""
    labellings = sorted({crystal.relabelled(index) for index in range(crystal.num_labellings)}, key=str)
    if not any_order:
        return labellings, 0.0
    # a relabelling maps sites one to one, so every labelling has the same number of distinct orders
    orders = math.factorial(len(crystal.sites)) // math.prod(map(math.factorial, Counter(crystal.sites).values()))
    count = len(labellings) * orders
    if count <= MAX_VARIANTS:
        return [WyckoffRepresentation(labelling.space_group, order) for labelling in labellings
                for order in distinct_orders(labelling.sites)], 0.0
    draws = [labellings[rng.integers(len(labellings))] for _ in range(MAX_VARIANTS)]
    return ([WyckoffRepresentation(draw.space_group, tuple(draw.sites[i] for i in rng.permutation(len(draw.sites))))
             for draw in draws], math.log(count / MAX_VARIANTS))


@torch.no_grad()
def crystal_nll(model, tokenizer, validation: Sequence[WyckoffRepresentation], seed: int = 0) -> dict[str, float]:
    """Validation NLL per site of each crystal, its probability summed over its distinct equivalent labellings, and
    over the orders of its sites for a model of any order (see the module docstring)."""
    rng = np.random.default_rng(seed)
    any_order = model.config.site_order == "any"
    sequences = [crystal_sequences(rep, any_order, rng) for rep in validation]
    flat = [(crystal, sequence) for crystal, (copies, _) in enumerate(sequences) for sequence in copies]
    flat.sort(key=lambda item: len(item[1].sites))  # little padding per batch
    log_p = [[] for _ in validation]
    for start in range(0, len(flat), NLL_BATCH):
        chunk = flat[start:start + NLL_BATCH]
        batch = tokenizer([sequence for _, sequence in chunk], return_tensors="pt")
        for (crystal, _), value in zip(chunk, model(**batch.to(model.device)).log_likelihood.tolist(), strict=True):
            log_p[crystal].append(value)
    per_site = [-(float(torch.logsumexp(torch.tensor(values, dtype=torch.float64), 0)) + log_factor)
                / (len(rep.sites) + 1)
                for values, (_, log_factor), rep in zip(log_p, sequences, validation, strict=True)]
    return {"crystal_nll_per_site": sum(per_site) / len(per_site)}


def format_value(row: Row, value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{100 * value:.2f} %" if row.is_fraction else f"{value:.3f}"


def quality_table(values: dict[str, float | None], baseline: dict[str, float | None]) -> str:
    lines = ["| metric | target | value | test split (baseline) |", "|---|---|---:|---:|"]
    lines += [f"| {row.label} | {row.target} | {format_value(row, values.get(row.key))} | "
              f"{format_value(row, baseline.get(row.key))} |" for row in ROWS]
    return "\n".join(lines)


def experiments_row(name: str, command: str, values: dict[str, float | None]) -> str:
    """One row of ``model_cards/experiments.md``: experiment, command, then the value of every ``ROWS`` metric."""
    return "| " + " | ".join([name, f"`{command}`", *(format_value(row, values.get(row.key)) for row in ROWS)]) + " |"


def command_line(argv: Sequence[str]) -> str:
    """The command that reproduces the row: this script with ``argv`` less ``--markdown-row NAME``."""
    kept, skip = [], False
    for arg in argv:
        if skip or arg.startswith("--markdown-row="):
            skip = False
            continue
        skip = arg == "--markdown-row"
        if not skip:
            kept.append(arg)
    return shlex.join(["python", "scripts/benchmarks/benchmark_quality.py", *kept])


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="a model folder saved with save_pretrained, or a Hub id")
    parser.add_argument("--dataset", required=True, help="a prepared dataset (train, validation, test splits)")
    parser.add_argument("--num-samples", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--temperature", type=float, default=None,
                        help="sampling temperature (default: the model's generation_config)")
    add_field_temperature_option(parser)
    parser.add_argument("--num-elements-range", type=int, nargs=2, default=None, metavar=("LOW", "HIGH"),
                        help="distinct elements per sample (default: the model's generation_config)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--markdown-row", metavar="NAME", help="also print the experiments-table row named NAME")
    args = parser.parse_args(argv)
    if args.num_samples < 1:
        parser.error(f"--num-samples must be at least 1, got {args.num_samples}")
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, dict[str, float | None]]:
    """Print the quality table (and the experiments row with ``--markdown-row``); return the values and baseline."""
    args = parse_args(argv)
    # pymatgen's note that a noble gas has no Pauling electronegativity, once per element SMACT screens
    warnings.filterwarnings("ignore", message="No Pauling electronegativity")
    start = time.perf_counter()
    set_threads(None, args.device)
    model, tokenizer = load_generator(args.model, args.device)
    reference = ReferenceSet.from_dataset(load_wyckoff_dataset(args.dataset))
    if not reference.validation:
        raise ValueError(f"{args.dataset} has no validation split: the validation NLL needs one")
    sampling = time.perf_counter()
    temperatures = model.sampling_temperatures(args.temperature, args.field_temperatures)
    crystals = sample_crystals(model, tokenizer, args.num_samples, seed=args.seed, temperature=args.temperature,
                               field_temperatures=args.field_temperatures, num_elements_range=args.num_elements_range)
    sampling = time.perf_counter() - sampling
    values = {**set_metrics(crystals, reference.train), **distance_metrics(crystals, reference.test),
              **validation_nll(model, tokenizer, reference.validation),
              **crystal_nll(model, tokenizer, reference.validation, args.seed)}
    baseline = {**set_metrics(reference.test[:args.num_samples], reference.train),
                **distance_metrics(reference.train[:args.num_samples], reference.test)}
    seconds = time.perf_counter() - start
    temperature = ", ".join(f"{field} {value:g}" for field, value in temperatures.items())
    print(f"model {args.model}, {len(crystals)} samples (seed {args.seed}, temperatures {temperature}); reference "
          f"{args.dataset}: {len(reference.train)} train, {len(reference.validation)} validation, "
          f"{len(reference.test)} test rows ({len(reference.skipped)} skipped)")
    print(quality_table(values, baseline))
    print(collisions(crystals))
    print(f"wall time {seconds:.1f} s (sampling {sampling:.1f} s)")
    if args.markdown_row:
        print(experiments_row(args.markdown_row, command_line(sys.argv[1:] if argv is None else argv), values))
    return {"values": values, "baseline": baseline}


if __name__ == "__main__":
    main()
