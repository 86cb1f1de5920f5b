"""The reference a generated set is compared with: train rows (novelty), validation rows (with train, the
"known" crystals of S.U.N. novelty, as the WyckoffTransformer authors define it) and test rows (distributions).

Kept as plain Python objects so notebooks and tests can build one by hand; ``from_dataset`` reads a
prepared ``DatasetDict`` (columns ``space_group``, ``site_elements``, ``letters`` and the source ``cif``).
Structures are kept as CIF text and parsed only where a metric needs them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from datasets import Dataset, DatasetDict

from ..data import representation_from_row
from ..tokenization import WyckoffError, WyckoffRepresentation

TRAIN_SPLIT = "train"
VALIDATION_SPLIT = "validation"
TEST_SPLIT = "test"
REQUIRED_COLUMNS = ("space_group", "site_elements", "letters", "cif")


@dataclass
class ReferenceSet:
    """Train, validation and test representations with their CIFs (index-aligned), and the skipped rows."""

    train: list[WyckoffRepresentation]
    test: list[WyckoffRepresentation]
    train_cifs: list[str] = field(default_factory=list)
    test_cifs: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    validation: list[WyckoffRepresentation] = field(default_factory=list)
    validation_cifs: list[str] = field(default_factory=list)

    @property
    def train_formulas(self) -> list[str]:
        """Reduced formulas of the train rows, known without parsing a CIF (used to bucket matching)."""
        return [rep.composition.reduced_formula for rep in self.train]

    @property
    def known_cifs(self) -> list[str]:
        """CIFs of train + validation: what a S.U.N. sample must not match."""
        return self.train_cifs + self.validation_cifs

    @property
    def known_formulas(self) -> list[str]:
        """Reduced formulas of train + validation, index-aligned with ``known_cifs``."""
        return [rep.composition.reduced_formula for rep in self.train + self.validation]

    @classmethod
    def from_dataset(cls, dataset: DatasetDict, max_rows: int | None = None) -> ReferenceSet:
        """Read the train, validation (when present) and test splits (the first ``max_rows`` rows of each).

        A row whose representation does not validate is skipped and named in ``skipped``.
        """
        missing = [split for split in (TRAIN_SPLIT, TEST_SPLIT) if split not in dataset]
        if missing:
            raise ValueError(f"the reference dataset has splits {sorted(dataset)}; it needs {missing} as well")
        reference = cls([], [])
        splits = [(TRAIN_SPLIT, reference.train, reference.train_cifs),
                  (TEST_SPLIT, reference.test, reference.test_cifs)]
        if VALIDATION_SPLIT in dataset:
            splits.append((VALIDATION_SPLIT, reference.validation, reference.validation_cifs))
        for split, reps, cifs in splits:
            rows = _rows(dataset[split], split, max_rows)
            for index, row in enumerate(rows):
                try:
                    reps.append(representation_from_row(row))
                except WyckoffError as err:
                    name = row.get("material_id", f"row {index}")
                    reference.skipped.append(f"{split} {name}: {err}")
                    continue
                cifs.append(row["cif"])
        return reference


def _rows(split: Dataset, name: str, max_rows: int | None) -> Dataset:
    absent = [column for column in REQUIRED_COLUMNS if column not in split.column_names]
    if absent:
        raise ValueError(f"reference split {name!r} lacks the column(s) {absent}; is it a prepared dataset?")
    if max_rows is not None and max_rows < len(split):
        split = split.select(range(max_rows))
    return split.select_columns([c for c in (*REQUIRED_COLUMNS, "material_id") if c in split.column_names])
