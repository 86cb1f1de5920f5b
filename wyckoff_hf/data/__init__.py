"""MP-20 style crystal datasets as Hugging Face ``datasets``: CSV sources, Wyckoff columns, prepared parquet."""

from .columns import (
    FAILURE_COLUMNS,
    REPRESENTATION_FEATURES,
    TOKEN_FEATURES,
    add_wyckoff_columns,
    representation_columns,
    representation_from_row,
)
from .prepared import (
    claim_output_folder,
    known_crystals,
    load_wyckoff_dataset,
    local_data_files,
    push_prepared_dataset,
    shard_name,
    write_parquet_splits,
)
from .sources import LAYOUT_DESCRIPTIONS, LAYOUTS, load_crystal_csv_splits

__all__ = [
    "FAILURE_COLUMNS",
    "LAYOUTS",
    "LAYOUT_DESCRIPTIONS",
    "REPRESENTATION_FEATURES",
    "TOKEN_FEATURES",
    "add_wyckoff_columns",
    "claim_output_folder",
    "known_crystals",
    "load_crystal_csv_splits",
    "load_wyckoff_dataset",
    "local_data_files",
    "push_prepared_dataset",
    "representation_columns",
    "representation_from_row",
    "shard_name",
    "write_parquet_splits",
]
