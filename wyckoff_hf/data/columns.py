"""Structures (CIF column) → Wyckoff representation and token ids as plain dataset columns.

The conversion is a batched ``Dataset.map`` so it runs on several processes with datasets' progress
bar. A structure that cannot be converted (unparseable CIF, partial occupancies, symmetry failure: any
``WyckoffError``) is never dropped silently: it is removed from the dataset and returned, with its
identifier and the reason, in a failures table.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd
from datasets import Dataset, DatasetDict, Features, List, Value

from ..tokenization import WyckoffError, WyckoffRepresentation, WyckoffTokenizer

REPRESENTATION_FEATURES = Features({
    "space_group": Value("int32"),
    "site_elements": List(Value("string")),
    "site_symmetries": List(Value("string")),
    "enumerations": List(Value("int32")),
    "letters": List(Value("string")),
    "multiplicities": List(Value("int32")),
    "dofs": List(Value("int32")),
})
TOKEN_FEATURES = Features({name: List(Value("int32")) for name in WyckoffTokenizer.model_input_names})
_ERROR_FEATURES = Features({"wyckoff_error_type": Value("string"), "wyckoff_error": Value("string")})
FAILURE_COLUMNS = ["split", "material_id", "error_type", "reason"]


def representation_columns(rep: WyckoffRepresentation) -> dict[str, Any]:
    """The representation as the plain values of ``REPRESENTATION_FEATURES`` (one row)."""
    return {
        "space_group": rep.space_group,
        "site_elements": [s.element for s in rep.sites],
        "site_symmetries": [s.site_symmetry for s in rep.sites],
        "enumerations": [s.enumeration for s in rep.sites],
        "letters": [s.letter for s in rep.sites],
        "multiplicities": [s.multiplicity for s in rep.sites],
        "dofs": [s.dof for s in rep.sites],
    }


def representation_from_row(row: Mapping[str, Any]) -> WyckoffRepresentation:
    """A prepared row (its ``space_group``, ``site_elements`` and ``letters``) → the validated representation.

    The rows are stored in canonical order already, so no relabelling is done; the other site columns
    follow from the letters and are re-derived (and checked) by the representation itself.
    """
    return WyckoffRepresentation.from_sites(
        int(row["space_group"]), list(zip(row["site_elements"], row["letters"], strict=True)), canonical=False
    )


_EMPTY_ROW = {
    **{name: ([] if isinstance(feature, List) else 0) for name, feature in REPRESENTATION_FEATURES.items()},
    **{name: [] for name in TOKEN_FEATURES},
}


def _convert_batch(batch: dict[str, list], cif_column: str, symprec: float,
                   tokenizer: WyckoffTokenizer) -> dict[str, list]:
    out: dict[str, list] = {name: [] for name in (*_EMPTY_ROW, *_ERROR_FEATURES)}
    for cif in batch[cif_column]:
        try:
            rep = WyckoffRepresentation.from_structure(cif, symprec, tokenizer.angle_tolerance)
            row = {**representation_columns(rep), **tokenizer.encode(rep)}
            error_type = error = None
        except WyckoffError as err:
            row, error_type, error = _EMPTY_ROW, type(err).__name__, str(err)
        for name, value in row.items():
            out[name].append(value)
        out["wyckoff_error_type"].append(error_type)
        out["wyckoff_error"].append(error)
    return out


def _add_to_split(dataset: Dataset, split: str, num_proc: int | None, symprec: float,
                  tokenizer: WyckoffTokenizer, id_column: str, cif_column: str,
                  batch_size: int) -> tuple[Dataset, pd.DataFrame]:
    for column in (id_column, cif_column):
        if column not in dataset.column_names:
            raise KeyError(f"split {split!r} has no {column!r} column (columns: {dataset.column_names})")
    clashes = sorted(set(dataset.column_names) & {*_EMPTY_ROW, *_ERROR_FEATURES})
    if clashes:
        raise ValueError(f"split {split!r} already has the column(s) {clashes}; refusing to overwrite them")
    features = Features({**dataset.features, **REPRESENTATION_FEATURES, **TOKEN_FEATURES, **_ERROR_FEATURES})
    converted = dataset.map(
        _convert_batch, batched=True, batch_size=batch_size, num_proc=num_proc, features=features,
        fn_kwargs={"cif_column": cif_column, "symprec": symprec, "tokenizer": tokenizer},
        desc=f"Wyckoff representation ({split})",
    )
    errors = converted.select_columns([id_column, "wyckoff_error_type", "wyckoff_error"]).to_pandas()
    failed = errors["wyckoff_error_type"].notna().to_numpy()
    failures = pd.DataFrame({
        "split": split,
        "material_id": errors.loc[failed, id_column].astype(str),
        "error_type": errors.loc[failed, "wyckoff_error_type"],
        "reason": errors.loc[failed, "wyckoff_error"],
    }, columns=FAILURE_COLUMNS)
    kept = converted.select([i for i, bad in enumerate(failed) if not bad]) if failed.any() else converted
    return kept.remove_columns(list(_ERROR_FEATURES)), failures.reset_index(drop=True)


def add_wyckoff_columns(dataset: Dataset | DatasetDict, num_proc: int | None = None, symprec: float = 0.1,
                        tokenizer: WyckoffTokenizer | None = None, id_column: str = "material_id",
                        cif_column: str = "cif", batch_size: int = 64,
                        ) -> tuple[Dataset | DatasetDict, pd.DataFrame]:
    """Add the Wyckoff columns to every row; return the converted data and the failures table.

    Columns added: ``space_group``, ``site_elements``, ``site_symmetries``, ``enumerations``,
    ``letters``, ``multiplicities``, ``dofs`` and the unpadded token ids of ``WyckoffTokenizer.encode``.
    The failures table has one row per excluded structure: ``split, material_id, error_type, reason``.
    ``symprec`` is spglib's tolerance; the angle tolerance is the tokenizer's.
    """
    tokenizer = tokenizer or WyckoffTokenizer(symprec=symprec)
    if isinstance(dataset, Dataset):
        split = str(dataset.split) if dataset.split is not None else "dataset"
        return _add_to_split(dataset, split, num_proc, symprec, tokenizer, id_column, cif_column, batch_size)
    converted, failures = {}, []
    for split, part in dataset.items():
        converted[split], split_failures = _add_to_split(part, split, num_proc, symprec, tokenizer, id_column,
                                                         cif_column, batch_size)
        failures.append(split_failures)
    return DatasetDict(converted), pd.concat(failures, ignore_index=True)
