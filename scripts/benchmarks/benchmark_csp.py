"""Crystal structure prediction from a composition: how often is the true crystal among the model's top k?

    python scripts/benchmarks/benchmark_csp.py --dataset data_prepared/mp20-biternary-dev --split test --num 200
        [--samples 100] [--model DIR] [--seed 0] [--temperature T] [--given-space-group]

For the first ``--num`` distinct reduced formulas of the split, ``predict_structures`` samples ``--samples``
crystals of that composition (any Z; space groups from the prior, or the true one with ``--given-space-group``)
and ranks the distinct ones by the model's log-probability. A formula counts as found in the top k when the
canonical Wyckoff representation of one of the split's crystals of that formula is among the k likeliest
predictions. Also printed: the mean number of distinct predictions and samples per second (sampling and scoring).
"""

from __future__ import annotations

import argparse
import time
import warnings
from collections import defaultdict

import torch

from wyckoff_hf.data import load_wyckoff_dataset, representation_from_row
from wyckoff_hf.generation import load_generator, predict_structures

TOP_K = (1, 10, 100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True, help="prepared dataset folder (scripts/prepare_dataset.py)")
    parser.add_argument("--split", default="test", help="split whose compositions are predicted (default: test)")
    parser.add_argument("--num", type=int, default=200, help="compositions: the split's first NUM distinct formulas")
    parser.add_argument("--samples", type=int, default=100, help="crystals sampled per composition")
    parser.add_argument("--model", default=None, help="saved model folder (default: the shipped checkpoint)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--temperature", type=float, default=None, help="default: the checkpoint's")
    parser.add_argument("--given-space-group", action="store_true",
                        help="give each formula's space group (that of its first crystal in the split)")
    args = parser.parse_args()
    warnings.simplefilter("ignore", UserWarning)  # pymatgen's notes on elements without electronegativity

    torch.set_num_threads(1)
    truths: dict[str, set] = defaultdict(set)
    groups: dict[str, int] = {}
    for row in load_wyckoff_dataset(args.dataset)[args.split]:
        crystal = representation_from_row(row)
        formula = crystal.composition.reduced_formula
        if formula in truths or len(truths) < args.num:
            truths[formula].add(crystal.canonical())
            groups.setdefault(formula, crystal.space_group)
    model, tokenizer = load_generator(args.model)
    found = dict.fromkeys(TOP_K, 0)
    distinct = 0
    start = time.perf_counter()
    for formula, truth in truths.items():
        predictions = predict_structures(formula, model, tokenizer, n=args.samples, seed=args.seed,
                                         temperature=args.temperature,
                                         space_group=groups[formula] if args.given_space_group else None)
        ranks = [rank for rank, p in enumerate(predictions) if p.representation in truth]
        for k in TOP_K:
            found[k] += bool(ranks) and ranks[0] < k
        distinct += len(predictions)
    seconds = time.perf_counter() - start
    print(f"model: {args.model or 'shipped'}; {len(truths)} formulas of {args.dataset} {args.split}, {args.samples} "
          f"samples each, space group {'given' if args.given_space_group else 'sampled'}; temperature "
          f"{args.temperature or model.generation_config.temperature}; torch {torch.__version__}, 1 thread")
    print("| formulas | " + " | ".join(f"top-{k}" for k in TOP_K) + " | distinct predictions | samples/s |")
    print("|---|" + "---|" * (len(TOP_K) + 2))
    print(f"| {len(truths)} | " + " | ".join(f"{found[k] / len(truths):.3f}" for k in TOP_K)
          + f" | {distinct / len(truths):.1f} | {len(truths) * args.samples / seconds:.0f} |")


if __name__ == "__main__":
    main()
