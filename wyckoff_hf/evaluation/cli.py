"""The ``wyckoff-hf evaluate`` subcommand: arguments and entry point, for the main CLI to mount."""

from __future__ import annotations

import argparse

from .report import METRICS_FILE, REPORT_FILE, evaluate, markdown_report


def add_evaluate_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``SAMPLES --reference DATASET [--out] [--num-workers] [--realise] [--no-structure-metrics]
    [--max-reference] [--max-attempts] [--realise-timeout] [--seed]`` to ``parser``."""
    parser.add_argument("samples", help="folder written by `wyckoff-hf generate` (samples.jsonl, structures/) "
                                        "or a single .jsonl file")
    parser.add_argument("--reference", required=True,
                        help="prepared dataset folder or Hub id: train split for novelty, test for distributions")
    parser.add_argument("--out", default="report", help="output folder (default: %(default)s)")
    parser.add_argument("--num-workers", type=int, default=None,
                        help="processes for structure work (default: all cores)")
    parser.add_argument("--realise", action="store_true",
                        help="realise valid samples that have no CIF with pyxtal before the structure metrics")
    parser.add_argument("--no-structure-metrics", dest="structure_metrics", action="store_false",
                        help="Wyckoff-level metrics only: no CIF is read, realised or matched")
    parser.add_argument("--max-reference", type=int, default=None,
                        help="use at most this many rows of each reference split")
    parser.add_argument("--max-attempts", type=int, default=10, help="pyxtal attempts per sample with --realise")
    parser.add_argument("--realise-timeout", type=float, default=10.0,
                        help="seconds per sample for pyxtal with --realise (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="sample i is realised with seed SEED + i")


def run_evaluate(args: argparse.Namespace) -> int:
    """Run ``evaluate`` from parsed arguments, print the report, return the exit status."""
    metrics = evaluate(args.samples, args.reference, args.out, num_workers=args.num_workers,
             structure_metrics=args.structure_metrics, realise=args.realise, max_reference=args.max_reference,
             max_attempts=args.max_attempts, seed=args.seed, realise_timeout=args.realise_timeout)
    print(markdown_report(metrics))
    print(f"wrote {args.out}/{METRICS_FILE} and {args.out}/{REPORT_FILE}")
    return 0
