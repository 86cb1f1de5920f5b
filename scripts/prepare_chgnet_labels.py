"""Prepare generated crystals labelled by CHGNet as a dataset the stability surrogate can be fine-tuned on (the
active-learning step of reward fine-tuning: the surrogate learns where the generator goes, not only MP's crystals).

    python scripts/prepare_chgnet_labels.py REPORT [REPORT ...] --output-dir data_prepared/chgnet-labels \
        [--previous EARLIER_ROUND] [--test-share 0.2] [--validation-share 0.1] [--seed 0] [--overwrite]
    python scripts/train.py --task property --target formation_energy_per_atom \
        --init-from wyckoff_hf/pretrained/mp20-biternary-formation-energy --dataset data_prepared/chgnet-labels ...

A REPORT is a ``wyckoff-hf evaluate --stability`` folder holding the ``samples.jsonl`` it evaluated (the reports
under ``model_cards/`` do); each relaxed sample's CHGNet formation energy and energy above the proxy hull
(``stability/relaxations.csv``) become a row, named ``REPORT:INDEX``. A crystal labelled in several reports is
kept once (its first label); collapsed relaxations are left out. The distinct crystals are split at random into
train, validation and test, so the test split is held out from fine-tuning and measures the surrogate
(``benchmark_surrogate.py --dataset``). ``--previous`` (an earlier round's prepared labels) keeps each crystal
it holds in the split it had there, so a crystal held out in one round is never trained on in the next.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
from datasets import Dataset, DatasetDict

from wyckoff_hf.data import claim_output_folder, load_wyckoff_dataset, write_parquet_splits
from wyckoff_hf.data.columns import representation_columns, representation_from_row
from wyckoff_hf.evaluation.stability import COLLAPSED_FORMATION_ENERGY
from wyckoff_hf.tokenization import WyckoffRepresentation, WyckoffTokenizer


def labelled_rows(report: Path, tokenizer: WyckoffTokenizer, seen: set) -> list[dict]:
    """One row per relaxed, not collapsed, not yet seen crystal of ``report``; none, said, for a folder that is not
    a report with its samples."""
    missing = [name for name in ("samples.jsonl", "stability/relaxations.csv") if not (report / name).is_file()]
    if missing:
        print(f"skipped {report}: no {' and no '.join(missing)} (an evaluate --stability folder with its samples)")
        return []
    samples = (report / "samples.jsonl").read_text().splitlines()
    labels = pd.read_csv(report / "stability" / "relaxations.csv")
    if len(labels) and labels["index"].max() >= len(samples):
        raise SystemExit(f"{report}: relaxations.csv labels sample {labels['index'].max()}, samples.jsonl holds "
                         f"{len(samples)}: not the samples that were evaluated")
    rows = []
    for label in labels.itertuples():
        crystal = WyckoffRepresentation.from_dict(json.loads(samples[label.index])).canonical()
        if crystal in seen or label.formation_energy_per_atom < COLLAPSED_FORMATION_ENERGY:
            continue
        seen.add(crystal)
        rows.append({"material_id": f"{report}:{label.index}", **representation_columns(crystal),
                     **tokenizer.encode(crystal), "formation_energy_per_atom": label.formation_energy_per_atom,
                     "e_above_hull": label.e_above_hull})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("reports", nargs="+", type=Path, help="evaluate --stability folders with samples.jsonl")
    parser.add_argument("--output-dir", type=Path, required=True)
    parser.add_argument("--overwrite", action="store_true", help="replace a prepared dataset already there")
    parser.add_argument("--test-share", type=float, default=0.2)
    parser.add_argument("--validation-share", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--previous", type=Path, help="an earlier round's prepared labels: keep their splits")
    args = parser.parse_args()
    if min(args.test_share, args.validation_share) < 0 or args.test_share + args.validation_share >= 1:
        parser.error("--test-share and --validation-share must be at least 0 and leave a share for training")
    tokenizer, seen = WyckoffTokenizer(), set()
    rows = [row for report in args.reports for row in labelled_rows(report, tokenizer, seen)]
    if not rows:
        raise SystemExit("no CHGNet-labelled crystal in these reports: nothing written")
    try:
        claim_output_folder(args.output_dir, args.overwrite)
    except FileExistsError as err:
        parser.error(str(err))
    earlier = {} if args.previous is None else {representation_from_row(row): split for split, rows_there
                                                in load_wyckoff_dataset(args.previous).items() for row in rows_there}
    crystals = [representation_from_row(row) for row in rows]
    parts = {split: [i for i, crystal in enumerate(crystals) if earlier.get(crystal) == split]
             for split in ("test", "validation", "train")}
    new = [i for i, crystal in enumerate(crystals) if crystal not in earlier]
    order = [new[i] for i in np.random.default_rng(args.seed).permutation(len(new))]
    test, validation = round(args.test_share * len(new)), round(args.validation_share * len(new))
    for split, part in (("test", order[:test]), ("validation", order[test:test + validation]),
                        ("train", order[test + validation:])):
        parts[split] += part
    dataset = DatasetDict({split: Dataset.from_list([rows[i] for i in sorted(part)])
                           for split, part in parts.items() if len(part)})  # an empty split has no schema to write
    write_parquet_splits(dataset, args.output_dir)
    print(f"{len(rows)} CHGNet-labelled crystals from {len(args.reports)} reports: "
          + ", ".join(f"{split} {len(part)}" for split, part in dataset.items()) + f" in {args.output_dir}")


if __name__ == "__main__":
    main()
