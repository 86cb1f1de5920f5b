"""What ``wyckoff-hf predict`` reads: CIF files, folders of CIFs, generated folders (or their ``samples.jsonl``) and
CDVAE-format CSVs (a ``cif`` column), as named Wyckoff representations.

Structures are analysed with ``WyckoffRepresentation.from_structure`` (spglib, standardised cell). An input that
cannot be read or converted is never fatal: it becomes a ``ConversionFailure`` naming it and the reason, and the
others go on.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..evaluation.samples import EmptySamplesError, load_samples
from ..generation.output import SAMPLES_FILE
from ..tokenization import ConversionFailure, WyckoffRepresentation, representations_from_structures

CIF_COLUMN = "cif"
ID_COLUMN = "material_id"
CSV_SUFFIXES = (".csv", ".csv.gz")


@dataclass(frozen=True)
class NamedCrystal:
    """A crystal to predict: the INPUT argument it came from, its name within it, its representation."""

    input: str
    name: str
    representation: WyckoffRepresentation


def is_generated(path: Path) -> bool:
    """A folder written by ``wyckoff-hf generate`` (it holds ``samples.jsonl``) or a ``.jsonl`` samples file."""
    return (path.is_dir() and (path / SAMPLES_FILE).is_file()) or (path.is_file() and path.suffix == ".jsonl")


def read_inputs(paths: Sequence[str | os.PathLike], symprec: float = 0.1,
                angle_tolerance: float = 5.0) -> tuple[list[NamedCrystal], list[ConversionFailure]]:
    """Every crystal of every input, in order, and a failure per input or crystal that could not be used."""
    crystals: list[NamedCrystal] = []
    failures: list[ConversionFailure] = []
    for argument in map(str, paths):
        path = Path(argument)
        if is_generated(path):
            _read_samples(argument, path, crystals, failures)
            continue
        sources = [source for source in _structure_sources(argument, path, failures) if _readable(source, failures)]
        converted, failed = representations_from_structures(
            [(str(k), source.structure) for k, source in enumerate(sources)], symprec, angle_tolerance)
        crystals += [NamedCrystal(argument, sources[int(k)].name, representation) for k, representation in converted]
        failures += [ConversionFailure(sources[int(failure.identifier)].label, failure.error_type, failure.reason)
                     for failure in failed]
    return crystals, failures


@dataclass(frozen=True)
class _Source:
    """One structure to convert: its name in the table, its name in messages, its CIF text or file."""

    name: str
    label: str
    structure: str | Path


def _structure_sources(argument: str, path: Path, failures: list[ConversionFailure]) -> list[_Source]:
    if path.name.endswith(CSV_SUFFIXES) and path.is_file():
        return _csv_sources(argument, path, failures)
    if path.is_dir():
        files = sorted(file for file in path.iterdir() if file.suffix.lower() == ".cif" and file.is_file())
        if not files:
            failures.append(ConversionFailure(argument, "FileNotFoundError",
                                              f"a folder with neither {SAMPLES_FILE} nor CIF files"))
        return [_Source(file.stem, str(file), file) for file in files]
    return [_Source(path.stem, argument, path)]


def _read_samples(argument: str, path: Path, crystals: list[NamedCrystal], failures: list[ConversionFailure]) -> None:
    """The valid lines of a samples file, named by their 0-based index (the structure files' numbering)."""
    try:
        samples = load_samples(path, read_structures=False)
    except EmptySamplesError as err:
        failures.append(ConversionFailure(argument, type(err).__name__, str(err)))
        return
    for index, representation in enumerate(samples.representations):
        if representation is None:
            failures.append(ConversionFailure(argument, "InvalidRepresentationError", samples.errors[index]))
        else:
            crystals.append(NamedCrystal(argument, str(index), representation))


def _csv_sources(argument: str, path: Path, failures: list[ConversionFailure]) -> list[_Source]:
    """One source per row of a CDVAE CSV, named by ``material_id`` (else the row number)."""
    import pandas as pd

    try:
        frame = pd.read_csv(path, dtype={ID_COLUMN: str})
    except (ValueError, OSError) as err:  # pandas' ParserError and EmptyDataError are ValueErrors
        failures.append(ConversionFailure(argument, type(err).__name__, f"unreadable CSV: {err}"))
        return []
    if CIF_COLUMN not in frame.columns:
        failures.append(ConversionFailure(argument, "KeyError", f"no {CIF_COLUMN!r} column (columns: "
                                                                f"{list(frame.columns)})"))
        return []
    names = frame[ID_COLUMN] if ID_COLUMN in frame.columns else [f"row {i}" for i in range(len(frame))]
    return [_Source(str(name), f"{argument}: {name}", str(cif)) for name, cif in zip(names, frame[CIF_COLUMN],
                                                                                   strict=True)]


def _readable(source: _Source, failures: list[ConversionFailure]) -> bool:
    """Whether a CIF file can be read as text (a missing, unreadable or binary file is a failure, not a crash)."""
    if not isinstance(source.structure, Path):
        return True
    try:
        source.structure.read_text()
    except (OSError, UnicodeDecodeError) as err:
        reason = "no such file or folder" if isinstance(err, FileNotFoundError) else f"unreadable: {err}"
        failures.append(ConversionFailure(source.label, type(err).__name__, reason))
        return False
    return True
