"""Crystal datasets in the CDVAE CSV format (``train/val/test.csv[.gz]``) → a ``datasets.DatasetDict``.

A *layout* says which source file feeds which split. The full MP-20 ships as three files (``cdvae``);
the development machines only hold a validation and a test file, so two more layouts make such folders
usable without copying or renaming anything.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
from datasets import Dataset, DatasetDict, Features

SOURCE_FILES = {"train": "train", "validation": "val", "test": "test"}
INDEX_COLUMN = "source_index"
ID_COLUMN = "material_id"
DEV_TRAIN_FRACTION = 0.9
DEV_SEED = 0


def find_split_file(folder: Path, stem: str) -> Path | None:
    """``folder/stem.csv.gz`` or ``folder/stem.csv``, whichever exists."""
    for name in (f"{stem}.csv.gz", f"{stem}.csv"):
        if (folder / name).is_file():
            return folder / name
    return None


def read_split_frame(folder: Path, stem: str, layout: str) -> pd.DataFrame:
    """One CDVAE CSV as a DataFrame; pandas' unnamed index column becomes ``source_index``.

    Identifiers are text: perov_5 and carbon_24 use numbers, MP-20 ``mp-1234``, and one dataset's splits
    must share one column type (pyarrow refuses a column of numbers in one split and text in another).
    """
    path = find_split_file(folder, stem)
    if path is None:
        present = sorted(s for s in SOURCE_FILES.values() if find_split_file(folder, s) is not None)
        hint = " Use layout='val-test' or 'mp20-biternary-dev' for a folder without a train file." if (
            stem == "train" and {"val", "test"} <= set(present)) else ""
        raise FileNotFoundError(
            f"layout {layout!r} needs {folder / stem}.csv.gz (or .csv), which is missing; "
            f"the folder has {present or 'no split files'}.{hint}"
        )
    frame = pd.read_csv(path, dtype={ID_COLUMN: str})
    return frame.rename(columns={"Unnamed: 0": INDEX_COLUMN})


def _cdvae(folder: Path) -> dict[str, pd.DataFrame]:
    return {split: read_split_frame(folder, stem, "cdvae") for split, stem in SOURCE_FILES.items()}


def _val_test(folder: Path) -> dict[str, pd.DataFrame]:
    return {split: read_split_frame(folder, SOURCE_FILES[split], "val-test") for split in ("validation", "test")}


def _mp20_biternary_dev(folder: Path) -> dict[str, pd.DataFrame]:
    """train/validation carved out of val.csv.gz (the full MP-20 train split is not on these machines).

    Rule: ``numpy.random.default_rng(0).permutation(n)``; the first ``round(0.9 n)`` permuted positions
    go to train, the rest to validation; each part keeps the source file's row order.
    """
    source = read_split_frame(folder, "val", "mp20-biternary-dev")
    order = np.random.default_rng(DEV_SEED).permutation(len(source))
    cut = round(DEV_TRAIN_FRACTION * len(source))
    return {
        "train": source.iloc[np.sort(order[:cut])],
        "validation": source.iloc[np.sort(order[cut:])],
        "test": read_split_frame(folder, "test", "mp20-biternary-dev"),
    }


LAYOUTS: dict[str, Callable[[Path], dict[str, pd.DataFrame]]] = {
    "cdvae": _cdvae,
    "mp20-biternary-dev": _mp20_biternary_dev,
    "val-test": _val_test,
}
LAYOUT_DESCRIPTIONS = {
    "cdvae": "train, validation, test ← train.csv.gz, val.csv.gz, test.csv.gz",
    "mp20-biternary-dev": (
        f"train, validation ← a {DEV_TRAIN_FRACTION:.0%} / {1 - DEV_TRAIN_FRACTION:.0%} split of val.csv.gz "
        f"(numpy.random.default_rng({DEV_SEED}).permutation), test ← test.csv.gz"
    ),
    "val-test": "validation, test ← val.csv.gz, test.csv.gz (no train split)",
}


def load_crystal_csv_splits(folder: str | Path, layout: str = "cdvae", max_rows: int | None = None) -> DatasetDict:
    """Read a folder of CDVAE-format CSV splits; every source column is kept.

    Layouts: ``cdvae`` (train/val/test files), ``mp20-biternary-dev`` (train and validation carved
    90/10 out of ``val``, test from ``test``) and ``val-test`` (a two-file source → validation, test).
    ``max_rows`` keeps the first N rows of every split (after the layout's carving), for quick trials.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; choose one of {sorted(LAYOUTS)}")
    if max_rows is not None and max_rows < 1:
        raise ValueError(f"max_rows must be at least 1, got {max_rows}")
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"source folder {folder} does not exist")
    frames = {split: frame.head(max_rows).reset_index(drop=True) for split, frame in LAYOUTS[layout](folder).items()}
    # One schema for all splits (an integer column with a gap in one file is float there), as the Hub needs.
    features = Features.from_arrow_schema(pa.Schema.from_pandas(pd.concat(frames.values()), preserve_index=False))
    return DatasetDict({split: Dataset.from_pandas(frame, features=features, split=split, preserve_index=False)
                        for split, frame in frames.items()})
