"""Write rows of a prepared dataset split as a samples folder (the layout ``wyckoff-hf generate`` writes).

    python scripts/export_split_samples.py --dataset DIR_OR_HUB_ID --split test --num 1000 --output-dir baseline/

Used for the sanity baseline of ``wyckoff-hf evaluate``: real crystals scored as if generated (validity
should be ~100 %, novelty against the train split high).
"""

from __future__ import annotations

import argparse

from wyckoff_hf.data import load_wyckoff_dataset, representation_from_row
from wyckoff_hf.generation.output import (
    STRUCTURES_DIR,
    line_sha256,
    prepare_output_dir,
    sample_line,
    write_samples,
    write_structure,
)
from wyckoff_hf.tokenization import load_structure


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", required=True, help="prepared dataset folder or Hub id")
    parser.add_argument("--split", default="test", help="which split to export")
    parser.add_argument("--num", type=int, default=1000, help="first N rows of the split")
    parser.add_argument("--output-dir", "--out", dest="out", required=True, help="samples folder to write")
    parser.add_argument("--overwrite", action="store_true", help="clear a non-empty output folder first")
    args = parser.parse_args()
    rows = load_wyckoff_dataset(args.dataset)[args.split]
    rows = rows.select(range(min(args.num, len(rows))))
    representations = [representation_from_row(row) for row in rows]
    source = {"source": {"dataset": args.dataset, "split": args.split}}
    out = write_samples(prepare_output_dir(args.out, args.overwrite), representations, source)
    (out / STRUCTURES_DIR).mkdir(exist_ok=True)
    for index, (rep, cif) in enumerate(zip(representations, rows["cif"], strict=True)):
        write_structure(out, index, load_structure(cif), line_sha256(sample_line(rep)))
    print(f"wrote {len(representations)} {args.split} crystals to {out}")


if __name__ == "__main__":
    main()
