"""Prepare a CDVAE-format crystal dataset (MP-20 and friends) as a Hugging Face dataset of Wyckoff representations.

    python scripts/prepare_dataset.py --source ../shared/data/mp_20_biternary --layout mp20-biternary-dev \
        --output-dir data_prepared/mp20-biternary-dev --num-workers 2 [--max-rows N] [--overwrite] \
        [--push-to-hub ORG/NAME]

Writes ``OUT/data/{split}-00000-of-00001.parquet``, ``OUT/failures.csv`` (structures excluded and why),
``OUT/statistics.json`` (per-split statistics), ``OUT/distributions.png`` and the dataset card
``OUT/README.md``; ``--push-to-hub`` uploads all of it to a Hub dataset repository (created, or checked
for access, before the conversion starts, so a bad id or token fails at once).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from datasets import DatasetDict

from wyckoff_hf.cards import render_dataset_card
from wyckoff_hf.data import (
    LAYOUTS,
    add_wyckoff_columns,
    claim_output_folder,
    load_crystal_csv_splits,
    push_prepared_dataset,
    representation_from_row,
    write_parquet_splits,
)
from wyckoff_hf.evaluation.statistics import plot_distributions, representation_statistics
from wyckoff_hf.tokenization import WyckoffRepresentation
from wyckoff_hf.utils.hub import HubRepoError, ensure_hub_repo


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", type=Path, required=True, help="folder of train/val/test.csv[.gz]")
    parser.add_argument("--layout", choices=sorted(LAYOUTS), default="cdvae", help="which file feeds which split")
    parser.add_argument("--output-dir", "--out", dest="out", type=Path, required=True, help="output folder")
    parser.add_argument("--overwrite", action="store_true", help="replace a prepared dataset already in it")
    parser.add_argument("--num-workers", "--num-proc", type=int, default=None,
                        help="worker processes for the conversion (default: this process only)")
    parser.add_argument("--max-rows", type=int, default=None, help="use only the first N rows of every split")
    parser.add_argument("--symprec", type=float, default=0.1, help="spglib symmetry tolerance")
    parser.add_argument("--pretty-name", default=None, help="card title (default: from the source folder)")
    parser.add_argument("--push-to-hub", metavar="ORG/NAME", default=None, help="upload to this dataset repo")
    args = parser.parse_args(argv)
    for name in ("num_workers", "max_rows"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    return args


def split_representations(dataset: DatasetDict) -> dict[str, list[WyckoffRepresentation]]:
    """Every split's representations, read back from the plain columns (so the files are what is summarised)."""
    columns = ["space_group", "site_elements", "letters"]
    return {split: [representation_from_row(row) for row in part.select_columns(columns)]
            for split, part in dataset.items()}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    start = time.perf_counter()
    if args.push_to_hub:
        try:
            ensure_hub_repo(args.push_to_hub, repo_type="dataset")
        except HubRepoError as err:
            raise SystemExit(f"prepare_dataset.py: error: {err}") from None
    try:
        claim_output_folder(args.out, args.overwrite)
        source = load_crystal_csv_splits(args.source, args.layout, max_rows=args.max_rows)
    except (FileNotFoundError, FileExistsError) as err:
        raise SystemExit(f"prepare_dataset.py: error: {err}") from None
    dataset, failures = add_wyckoff_columns(source, num_proc=args.num_workers, symprec=args.symprec)
    write_parquet_splits(dataset, args.out)
    failures.to_csv(args.out / "failures.csv", index=False)

    representations = split_representations(dataset)
    stats = {split: representation_statistics(reps) for split, reps in representations.items()}
    failed = failures["split"].value_counts()
    summary = {
        "source": str(args.source), "layout": args.layout, "symprec": args.symprec,
        "source_rows": {split: part.num_rows for split, part in source.items()},
        "rows": {split: part.num_rows for split, part in dataset.items()},
        "failures": {split: int(failed.get(split, 0)) for split in dataset},
        "failure_types": {str(k): int(v) for k, v in failures["error_type"].value_counts().items()},
        "splits": stats,
    }
    (args.out / "statistics.json").write_text(json.dumps(summary, indent=1) + "\n")
    plot_distributions(representations, args.out / "distributions.png")

    pretty_name = args.pretty_name or f"{args.source.resolve().name} (Wyckoff representations)"
    card = render_dataset_card(dataset, failures, pretty_name=pretty_name, source_name=args.source.resolve().name,
                               layout=args.layout, symprec=args.symprec,
                               dataset_id=args.push_to_hub or str(args.out))
    (args.out / "README.md").write_text(card)

    print(f"{'split':<12}{'source rows':>12}{'rows':>8}{'failures':>10}{'mean sites':>12}{'mean atoms':>12}")
    for split, part in dataset.items():
        s = stats[split]
        print(f"{split:<12}{source[split].num_rows:>12}{part.num_rows:>8}{summary['failures'][split]:>10}"
              f"{s['mean_num_sites'] or 0:>12.2f}{s['mean_num_atoms'] or 0:>12.2f}")
    for row in failures.itertuples():
        print(f"failed: {row.split} {row.material_id} {row.error_type}: {row.reason}")
    if args.push_to_hub:
        push_prepared_dataset(dataset, args.out, args.push_to_hub)
        print(f"pushed to {args.push_to_hub}")
    print(f"wrote {args.out} in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
