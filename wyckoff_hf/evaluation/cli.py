"""The ``wyckoff-hf evaluate`` subcommand: arguments and entry point, for the main CLI to mount.

Only argparse at import time: the metrics (pymatgen, datasets, SMACT) are imported when the command runs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..utils.arguments import add_hidden_alias, add_seed_option, positive_float, positive_int
from ..utils.cluster import add_scheduler_option
from ..utils.devices import check_device


def add_evaluate_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``SAMPLES --reference DATASET [--output-dir] [--num-workers] [--scheduler] [--realise]
    [--no-structure-metrics] [--max-reference] [--max-attempts] [--realise-timeout] [--smact-timeout] [--seed]
    [--stability] [--stability-trials] [--stability-screen] [--stability-screen-refine] [--stability-device]
    [--relaxation-cache] [--relax-only]`` to ``parser``."""
    parser.add_argument("samples", help="folder written by `wyckoff-hf generate` (samples.jsonl, structures/) "
                                        "or a single .jsonl file")
    parser.add_argument("--reference", required=True,
                        help="prepared dataset folder or Hub id: train split for novelty, test for distributions")
    parser.add_argument("--output-dir", default="report", help="output folder (default: %(default)s)")
    add_hidden_alias(parser, "--out", "output_dir")
    parser.add_argument("--num-workers", type=positive_int, default=None,
                        help="processes for structure work (default: all cores)")
    add_hidden_alias(parser, "--workers", "num_workers", type=positive_int)
    add_scheduler_option(parser)
    parser.add_argument("--realise", action="store_true",
                        help="realise valid samples that have no structure with pyxtal before the structure metrics")
    parser.add_argument("--no-structure-metrics", dest="structure_metrics", action="store_false",
                        help="Wyckoff-level metrics only: no CIF is read, realised or matched")
    parser.add_argument("--max-reference", type=positive_int, default=None,
                        help="use at most this many rows of each reference split (default: all)")
    parser.add_argument("--max-attempts", type=positive_int, default=10,
                        help="pyxtal attempts per sample with --realise (default: %(default)s)")
    parser.add_argument("--realise-timeout", type=positive_float, default=60.0,
                        help="safety-net seconds per sample for pyxtal with --realise (default: %(default)s)")
    parser.add_argument("--smact-timeout", type=positive_float, default=10.0,
                        help="seconds SMACT may spend on one formula; undecided ones are counted apart "
                             "(default: %(default)s)")
    add_seed_option(parser, "sample i is realised with seed SEED + i")
    parser.add_argument("--stability", action="store_true",
                        help="relax the valid samples with CHGNet and report energy above hull, S.U.N. and S.S.U.N. "
                             "(needs pip install 'wyckoff-hf[stability]'; about 20 s per pyxtal trial on one core)")
    parser.add_argument("--stability-trials", type=positive_int, default=3,
                        help="pyxtal realisations relaxed per sample with --stability, lowest energy kept "
                             "(default: %(default)s; the WyckoffTransformer authors use 6)")
    parser.add_argument("--stability-screen", action="store_true",
                        help="with --stability: relax every trial loosely (fmax 0.1 eV/Å, 100 steps) and refine only "
                             "the lowest to 0.02 (faster, and biased low: the README says what it costs)")
    parser.add_argument("--stability-screen-refine", type=positive_int, default=1, metavar="K",
                        help="with --stability-screen: refine the K lowest loosely relaxed trials, not just the "
                             "lowest (default: %(default)s; at most --stability-trials)")
    parser.add_argument("--stability-device", default="cpu", metavar="DEVICE",
                        help="torch device CHGNet runs on with --stability, e.g. cuda (default: %(default)s)")
    parser.add_argument("--relaxation-cache", metavar="DIR",
                        help="with --stability: keep every finished relaxation in DIR (one JSON per sample) and reuse "
                             "it, so that an interrupted or split run resumes where it stopped")
    parser.add_argument("--relax-only", type=int, nargs=2, metavar=("FIRST", "LAST"),
                        help="with --relaxation-cache: relax samples FIRST to LAST (downward when LAST < FIRST) into "
                             "the cache and stop, no metrics: one machine's share of a split run, which the full "
                             "run with the same --stability options then finds")


def run_evaluate(args: argparse.Namespace) -> int:
    """Run ``evaluate`` from parsed arguments, print the report, return the exit status."""
    from ..generation.output import check_writable
    from .report import METRICS_FILE, REPORT_FILE, markdown_report
    from .samples import EmptySamplesError

    if args.relaxation_cache and not args.stability:
        raise ValueError("--relaxation-cache keeps CHGNet relaxations: it needs --stability")
    if args.stability_screen and not args.stability:
        raise ValueError("--stability-screen screens CHGNet relaxations: it needs --stability")
    if args.stability_screen_refine > 1 and not args.stability_screen:
        raise ValueError("--stability-screen-refine decides after the loose stage: it needs --stability-screen")
    if args.stability_screen_refine > args.stability_trials:
        raise ValueError(f"--stability-screen-refine {args.stability_screen_refine} is more than the "
                         f"{args.stability_trials} trial(s) of --stability-trials")
    if args.relax_only and not args.relaxation_cache:
        raise ValueError("--relax-only fills --relaxation-cache: it needs one")
    if args.stability:
        check_device(args.stability_device, "--stability-device")
    if args.relax_only:
        return _relax_only(args)
    out = Path(args.output_dir)
    created = not out.exists()
    check_writable(out)  # before the metrics, not after them
    try:
        metrics = _evaluate(args)
    except EmptySamplesError as err:
        print(f"wyckoff-hf evaluate: error: {err}", file=sys.stderr)
        return 1
    finally:
        if created and out.is_dir() and not any(out.iterdir()):
            out.rmdir()  # a failed run leaves no empty folder of its own making
    print(markdown_report(metrics))
    print(f"wrote {args.output_dir}/{METRICS_FILE} and {args.output_dir}/{REPORT_FILE}")
    return 0


def _relaxation_settings(args: argparse.Namespace):
    """The CHGNet protocol the ``--stability`` options name (what a cached relaxation is keyed by)."""
    from .relaxation import SCREEN_FMAX, RelaxationSettings

    return RelaxationSettings(num_trials=args.stability_trials, seed=args.seed,
                              screen_fmax=SCREEN_FMAX if args.stability_screen else None,
                              screen_refine=args.stability_screen_refine, device=args.stability_device)


def _relax_only(args: argparse.Namespace) -> int:
    """``--relax-only FIRST LAST``: those samples' relaxations into the cache, in that order."""
    from .relaxation import relax_samples
    from .samples import load_samples
    from .stability import require_chgnet

    require_chgnet()
    (first, last), crystals = args.relax_only, load_samples(args.samples).representations
    span = range(max(min(first, last), 0), min(max(first, last) + 1, len(crystals)))  # within the file, however wide
    indices = [i for i in (span if last >= first else reversed(span)) if crystals[i] is not None]
    if not indices:
        raise ValueError(f"--relax-only {first} {last}: no valid sample there ({args.samples} holds {len(crystals)})")
    relax_samples([crystals[i] for i in indices], _relaxation_settings(args), indices, args.num_workers,
                  cache_dir=args.relaxation_cache)
    print(f"relaxed {len(indices)} valid samples of {first}-{last} into {args.relaxation_cache}")
    return 0


def _evaluate(args: argparse.Namespace) -> dict:
    """``evaluate`` with the command's arguments: the metrics."""
    from .report import evaluate

    return evaluate(args.samples, args.reference, args.output_dir, num_workers=args.num_workers,
                    structure_metrics=args.structure_metrics, realise=args.realise,
                    max_reference=args.max_reference, max_attempts=args.max_attempts, seed=args.seed,
                    realise_timeout=args.realise_timeout, smact_timeout=args.smact_timeout,
                    stability=_relaxation_settings(args) if args.stability else None,
                    relaxation_cache=args.relaxation_cache)
