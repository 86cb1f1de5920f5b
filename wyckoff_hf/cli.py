"""The ``wyckoff-hf`` console script: ``generate`` (the main job), ``tokenize`` and ``evaluate``."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence


def _add_generate(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("generate", help="sample crystals from a WyckoffTransformer checkpoint")
    parser.add_argument("-n", "--num-samples", type=int, default=1000)
    parser.add_argument("--out", required=True, help="output folder (samples.jsonl, structures/)")
    parser.add_argument("--model", default=None, help="checkpoint folder or Hub id (default: the shipped model)")
    parser.add_argument("--space-group", type=int, nargs="*", default=None,
                        help="space group(s) to condition on (default: the training prior)")
    parser.add_argument("--temperature", type=float, default=None,
                        help="sampling temperature (default: the checkpoint's calibrated one)")
    parser.add_argument("--allowed-elements", nargs="*", default=None)
    parser.add_argument("--required-elements", nargs="*", default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default=None, help="torch device (default: cpu)")
    parser.add_argument("--structures", action="store_true", help="also realise 3D structures (CIFs) with pyxtal")
    parser.add_argument("--workers", type=int, default=None, help="processes for --structures (default: all cores)")
    parser.set_defaults(run=_run_generate)


def _run_generate(args: argparse.Namespace) -> int:
    from .generation.jobs import load_generator, realise_structures, write_samples

    model, tokenizer = load_generator(args.model, args.device)
    space_group = args.space_group[0] if args.space_group and len(args.space_group) == 1 else args.space_group
    representations = model.generate(
        num_samples=args.num_samples, space_group=space_group, temperature=args.temperature, seed=args.seed,
        allowed_elements=args.allowed_elements, required_elements=args.required_elements, tokenizer=tokenizer)
    structures, failures = (None, [])
    if args.structures:
        seeds = [args.seed + i for i in range(len(representations))]
        structures, failures = realise_structures(representations, workers=args.workers, seeds=seeds)
    out = write_samples(args.out, representations, structures, failures)
    print(f"wrote {len(representations)} Wyckoff representations to {out / 'samples.jsonl'}")
    if structures is not None:
        print(f"realised {len(structures)}/{len(representations)} structures in {out / 'structures'}; "
              f"{len(failures)} failures listed in {out / 'realisation_failures.csv'}")
    for rep in representations[:10]:
        print(f"  {rep}")
    return 0


def _add_tokenize(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("tokenize", help="print the Wyckoff representation and tokens of CIF files")
    parser.add_argument("cifs", nargs="+", help="CIF files")
    parser.add_argument("--symprec", type=float, default=0.1)
    parser.set_defaults(run=_run_tokenize)


def _run_tokenize(args: argparse.Namespace) -> int:
    from .tokenization import WyckoffError, WyckoffTokenizer

    tokenizer = WyckoffTokenizer(symprec=args.symprec)
    failures = 0
    for path in args.cifs:
        try:
            rep = tokenizer.to_representation(path)
        except WyckoffError as err:
            failures += 1
            print(f"{path}: ERROR {type(err).__name__}: {err}", file=sys.stderr)
            continue
        print(f"{path}: {rep}")
        print(json.dumps(tokenizer.encode(rep)))
    return 1 if failures else 0


def _add_evaluate(subparsers: argparse._SubParsersAction) -> None:
    from .evaluation.cli import add_evaluate_arguments, run_evaluate

    parser = subparsers.add_parser("evaluate", help="metrics of generated samples against a reference dataset")
    add_evaluate_arguments(parser)
    parser.set_defaults(run=run_evaluate)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="wyckoff-hf", description=__doc__)
    subparsers = parser.add_subparsers(required=True, dest="command")
    for add in (_add_generate, _add_tokenize, _add_evaluate):
        add(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run a subcommand; bad input (unknown model, impossible constraints, unreadable files) ends with a
    one-line error and exit status 2 instead of a traceback."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, OSError) as err:  # WyckoffError is a ValueError
        print(f"wyckoff-hf {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
