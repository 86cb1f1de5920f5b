"""The dataset card (README.md with the Hub's YAML metadata) of a prepared Wyckoff dataset."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from datasets import DatasetDict, DatasetInfo, SplitDict, SplitInfo
from datasets.info import DatasetInfosDict
from huggingface_hub import DatasetCardData

from ..data.columns import REPRESENTATION_FEATURES, TOKEN_FEATURES
from ..data.prepared import DATA_DIR
from ..data.sources import LAYOUT_DESCRIPTIONS
from .rendering import render_card, template_path

TEMPLATE = "dataset_card.md"
SIZE_CATEGORIES = ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
                   (10_000_000, "1M<n<10M"))


def size_category(num_rows: int) -> str:
    """The Hub's ``size_categories`` label for a row count."""
    return next((label for limit, label in SIZE_CATEGORIES if num_rows < limit), "n>10M")


def card_metadata(dataset: DatasetDict, pretty_name: str) -> DatasetCardData:
    """YAML metadata: license, names, one parquet config per split and the features and split sizes."""
    card_data = DatasetCardData(
        license="cc-by-4.0",
        pretty_name=pretty_name,
        task_categories=["other"],
        tags=["chemistry", "materials-science", "crystal-structure", "wyckoff-positions"],
        size_categories=[size_category(sum(part.num_rows for part in dataset.values()))],
        configs=[{"config_name": "default",
                  "data_files": [{"split": split, "path": f"{DATA_DIR}/{split}-*"} for split in dataset]}],
    )
    splits = SplitDict()
    for split, part in dataset.items():
        splits.add(SplitInfo(name=split, num_examples=part.num_rows, num_bytes=part.data.nbytes))
    features = next(iter(dataset.values())).features
    DatasetInfosDict({"default": DatasetInfo(features=features, splits=splits)}).to_dataset_card_data(card_data)
    return card_data


def render_dataset_card(dataset: DatasetDict, failures: pd.DataFrame, *, pretty_name: str, source_name: str,
                        layout: str, symprec: float, dataset_id: str, template: str | Path | None = None) -> str:
    """The README.md of a prepared dataset, from the packaged ``templates/dataset_card.md`` and the real counts."""
    failed = failures["split"].value_counts()
    added = {*REPRESENTATION_FEATURES, *TOKEN_FEATURES}
    source_columns = [c for c in next(iter(dataset.values())).column_names if c not in added]
    values = {
        "card_metadata": card_metadata(dataset, pretty_name).to_yaml(),
        "pretty_name": pretty_name,
        "source_name": source_name,
        "layout": layout,
        "layout_description": LAYOUT_DESCRIPTIONS[layout],
        "symprec": symprec,
        "split_table": "\n".join(f"| {split} | {part.num_rows:,} | {int(failed.get(split, 0)):,} |"
                                 for split, part in dataset.items()),
        "num_failures": len(failures),
        "source_columns": ", ".join(f"`{c}`" for c in source_columns),
        "dataset_id": dataset_id,
    }
    return render_card(template or template_path(TEMPLATE), values)
