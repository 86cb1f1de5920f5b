"""Crystal structure prediction from a composition: how often is the true crystal among the model's top k?

    python scripts/benchmarks/benchmark_csp.py --csv ../shared/data/mp_20_biternary/test.csv.gz --num 200
        [--methods search sample] [--groups sampled given] [--k 10] [--samples 100] [--time-limit 20]
        [--budget 20000] [--beam-width 64] [--model DIR] [--seed 0] [--threads 2] [--log results.jsonl]
    python scripts/benchmarks/benchmark_csp.py --dataset data_prepared/mp20-biternary-dev --split test --num 200 ...
    python scripts/benchmarks/benchmark_csp.py --csv VAL TEST --formulas NaCl GaN SrTiO3 ... --groups sampled

For the first ``--num`` distinct reduced formulas of the split (a prepared dataset, or CDVAE-format CSVs whose
crystals of those formulas are tokenised here with spglib; or the CSVs' crystals of ``--formulas``), each method
predicts the crystals of that composition (any Z), with the space group sampled from the prior or given (that of
the formula's first crystal in the split):

- ``search``: ``search_structures``, the ``--k`` likeliest crystals by best-first search over the cascade (a search
  cut by ``--budget`` filled from a beam of ``--beam-width``; the log records how many came from it);
- ``sample``: ``predict_structures``, ``--samples`` draws under the composition masks, the distinct crystals ranked
  by the model's log-probability.

A formula counts as found in the top k when the canonical Wyckoff representation of one of the split's crystals of
that formula is among the k likeliest predictions. The table gives top-1/5/10 recovery and the mean seconds per
formula per method (on a shared machine, compare the methods' ratio rather than the seconds); with ``--log`` each
formula's outcome is appended as it finishes, so an interrupted run still reports its formulas.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from collections import defaultdict

import torch

from wyckoff_hf.generation import load_generator, predict_structures
from wyckoff_hf.generation.search import DEFAULT_BEAM_WIDTH, DEFAULT_BUDGET, search_structures

TOP_K = (1, 5, 10)


def split_truths(args: argparse.Namespace) -> tuple[dict[str, set], dict[str, int]]:
    """The first ``--num`` distinct reduced formulas: their canonical crystals and the first crystal's group."""
    truths: dict[str, set] = defaultdict(set)
    groups: dict[str, int] = {}
    if args.csv:
        import pandas as pd
        from pymatgen.core import Composition

        from wyckoff_hf.tokenization import WyckoffError, WyckoffRepresentation

        rows = pd.concat([pd.read_csv(path) for path in args.csv])
        wanted = args.formulas and {Composition(formula).reduced_formula for formula in args.formulas}
        for cif, formula in zip(rows["cif"], rows["pretty_formula"], strict=True):
            formula = Composition(formula).reduced_formula
            if formula in wanted if wanted else formula in truths or len(truths) < args.num:
                try:
                    crystal = WyckoffRepresentation.from_structure(cif)
                except WyckoffError:
                    continue
                truths[formula].add(crystal.canonical())
                groups.setdefault(formula, crystal.space_group)
        return truths, groups
    from wyckoff_hf.data import load_wyckoff_dataset, representation_from_row

    for row in load_wyckoff_dataset(args.dataset)[args.split]:
        crystal = representation_from_row(row)
        formula = crystal.composition.reduced_formula
        if formula in truths or len(truths) < args.num:
            truths[formula].add(crystal.canonical())
            groups.setdefault(formula, crystal.space_group)
    return truths, groups


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--dataset", help="prepared dataset folder (scripts/prepare_dataset.py)")
    source.add_argument("--csv", nargs="+", help="CDVAE-format CSV split(s) (cif and pretty_formula columns)")
    parser.add_argument("--formulas", nargs="+", help="with --csv: these formulas (those the files hold) instead")
    parser.add_argument("--split", default="test", help="split of --dataset whose compositions are predicted")
    parser.add_argument("--num", type=int, default=200, help="compositions: the split's first NUM distinct formulas")
    parser.add_argument("--methods", nargs="+", choices=("search", "sample"), default=["search", "sample"])
    parser.add_argument("--groups", nargs="+", choices=("sampled", "given"), default=["sampled", "given"])
    parser.add_argument("--k", type=int, default=10, help="crystals the search finds per composition")
    parser.add_argument("--samples", type=int, default=100, help="crystals sampled per composition")
    parser.add_argument("--time-limit", type=float, default=None, help="seconds per search (default: none)")
    parser.add_argument("--budget", type=int, default=DEFAULT_BUDGET,
                        help="node expansions per search, a limit that does not depend on the machine's load "
                             "(default: %(default)s)")
    parser.add_argument("--beam-width", type=int, default=DEFAULT_BEAM_WIDTH,
                        help="width of the beam search that fills a cut search's list (0: none; default: %(default)s)")
    parser.add_argument("--model", default=None, help="saved model folder (default: the shipped checkpoint)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--log", default=None, help="append each formula's outcome to this JSON-lines file")
    args = parser.parse_args()
    if args.formulas and not args.csv:
        parser.error("--formulas chooses among the crystals of --csv files")
    warnings.simplefilter("ignore", UserWarning)  # pymatgen's notes on elements without electronegativity

    torch.set_num_threads(args.threads)
    truths, groups = split_truths(args)
    model, tokenizer = load_generator(args.model)
    runs = [(method, group) for group in args.groups for method in args.methods]
    found = {run: dict.fromkeys(TOP_K, 0) for run in runs}
    seconds = dict.fromkeys(runs, 0.0)
    cut = dict.fromkeys(runs, 0)
    done = 0
    for formula, truth in truths.items():
        outcome = {"formula": formula}
        for method, group in runs:
            space_group = groups[formula] if group == "given" else None
            start, cpu = time.perf_counter(), time.process_time()
            if method == "search":
                predictions = search_structures(formula, model, tokenizer, k=args.k, space_group=space_group,
                                                budget=args.budget, time_limit=args.time_limit,
                                                beam_width=args.beam_width)
                cut[method, group] += not predictions.complete
                outcome[f"{method}/{group}/complete"] = predictions.complete
                outcome[f"{method}/{group}/from_beam"] = predictions.from_beam
            else:
                predictions = predict_structures(formula, model, tokenizer, n=args.samples, seed=args.seed,
                                                 space_group=space_group)
            seconds[method, group] += time.perf_counter() - start
            outcome[f"{method}/{group}/seconds"] = round(time.perf_counter() - start, 2)
            outcome[f"{method}/{group}/cpu_seconds"] = round(time.process_time() - cpu, 2)
            ranks = [rank for rank, p in enumerate(predictions) if p.representation in truth]
            for k in TOP_K:
                found[method, group][k] += bool(ranks) and ranks[0] < k
            outcome[f"{method}/{group}"] = ranks[0] if ranks else None
        done += 1
        if args.log:
            with open(args.log, "a") as log:
                log.write(json.dumps(outcome) + "\n")
    source = " ".join(args.csv) if args.csv else f"{args.dataset} {args.split}"
    print(f"model: {args.model or 'shipped'}; {done} formulas of {source}; "
          f"search k={args.k} (limits {args.time_limit} s, {args.budget} expansions, then a beam of "
          f"{args.beam_width}), sampling {args.samples} "
          f"samples at the checkpoint's temperature; torch {torch.__version__}, {args.threads} threads")
    print("| space group | method | formulas | " + " | ".join(f"top-{k}" for k in TOP_K)
          + " | s/formula | searches cut by the budget |")
    print("|---|---|---|" + "---|" * (len(TOP_K) + 2))
    for method, group in runs:
        print(f"| {group} | {method} | {done} | "
              + " | ".join(f"{found[method, group][k] / done:.3f}" for k in TOP_K)
              + f" | {seconds[method, group] / done:.2f} | {cut[method, group] if method == 'search' else '-'} |")


if __name__ == "__main__":
    main()
