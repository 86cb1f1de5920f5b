"""Constrained sampling against the exact conditional: rejection (``exact``), sequential Monte Carlo, masking.

    python scripts/benchmarks/benchmark_constraints.py --allowed-elements Ca Cl F K Li Mg N Na O S
        [--num-elements-range 3 3] [--num-samples 1000] [--modes exact smc masked] [--model DIR] [--threads 1]

Rejection keeps the unconstrained draws that meet the constraint, so it is the model's conditional p(x | constraint)
and the reference of the other rows: the mean number of sites (± standard error), the share at the site cap, a χ²
test of the site counts against those of the first ``exact`` row, and the total-variation distance of the space
groups and of the reduced compositions from its (two independent samples of one distribution are not at 0: compare
with ``--modes exact exact``). Rejection of rare constraints needs ``--min-acceptance-rate`` below their rate.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter

import numpy as np
import torch
from scipy.stats import chi2_contingency

from wyckoff_hf.generation import load_generator


def total_variation(first: list, second: list) -> float:
    a, b = Counter(first), Counter(second)
    return 0.5 * sum(abs(a[key] / len(first) - b[key] / len(second)) for key in a.keys() | b.keys())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--allowed-elements", nargs="+", required=True)
    parser.add_argument("--num-elements-range", type=int, nargs=2, default=None)
    parser.add_argument("--num-samples", type=int, default=1000)
    parser.add_argument("--modes", nargs="+", choices=("exact", "smc", "masked"), default=["exact", "smc", "masked"])
    parser.add_argument("--min-acceptance-rate", type=float, default=0.001)
    parser.add_argument("--model", default=None, help="saved model folder (default: the shipped checkpoint)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, tokenizer = load_generator(args.model)
    model.generation_config.min_acceptance_rate = args.min_acceptance_rate
    constraint = {"allowed_elements": args.allowed_elements, "num_elements_range": args.num_elements_range}
    print(f"{args.num_samples} samples per mode, {constraint}; torch {torch.__version__}, {args.threads} threads")
    print("| mode | seconds | mean sites | at the cap | site counts vs exact (χ² p) | TV groups | TV compositions "
          "| acceptance / ESS |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    reference = None
    for seed, mode in enumerate(args.modes):
        start = time.perf_counter()
        crystals = model.generate(args.num_samples, seed=seed, tokenizer=tokenizer, constraint_sampling=mode,
                                  **{key: value for key, value in constraint.items() if value is not None})
        seconds = time.perf_counter() - start
        sites = np.array([len(c.sites) for c in crystals])
        sample = (sites, [c.space_group for c in crystals], [c.composition.reduced_formula for c in crystals])
        versus = ["-", "-", "-"]
        if reference is not None:
            bins = range(1, model.config.max_sites + 1)
            table = [pair for pair in zip(*[[int((x == n).sum()) for n in bins] for x in (reference[0], sites)],
                                          strict=True) if sum(pair)]
            versus = [f"{chi2_contingency(table).pvalue:.2g}", f"{total_variation(reference[1], sample[1]):.3f}",
                      f"{total_variation(reference[2], sample[2]):.3f}"]
        elif mode == "exact":
            reference = sample
        rate = crystals.acceptance_rate if mode == "exact" else crystals.effective_sample_size
        print(f"| {mode} | {seconds:.1f} | {sites.mean():.2f} ± {sites.std() / np.sqrt(len(sites)):.2f} "
              f"| {(sites >= model.config.max_sites).mean():.3f} | {' | '.join(versus)} "
              f"| {'-' if rate is None else f'{rate:.3g}'} |")


if __name__ == "__main__":
    try:
        main()
    except ValueError as err:  # an unknown element, a constraint too rare for --min-acceptance-rate: one line
        sys.exit(f"benchmark_constraints.py: error: {err}")
