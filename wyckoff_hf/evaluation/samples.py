"""Reading generated samples: ``samples.jsonl`` (one representation dict per line) and optional CIFs.

The layout is the one ``wyckoff-hf generate`` writes (``wyckoff_hf.generation``): a folder with
``samples.jsonl`` and, optionally, ``structures/{index:06d}.cif`` where ``index`` is the 0-based line
number (a missing file means pyxtal could not realise that sample, and ``realisation_failures.csv``
says why). A bare ``.jsonl`` path is accepted too (no structures then).

Every line is kept, valid or not: Wyckoff validity is a metric, so an unparseable line is recorded with
its reason instead of being dropped.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from pymatgen.core import Structure

from ..generation.jobs import FAILURES_FILE, SAMPLES_FILE, STRUCTURES_DIR, realise_structures
from ..tokenization import WyckoffError, WyckoffRepresentation, load_structure
from ..utils.parallel import parallel_map


@dataclass
class GeneratedSamples:
    """All generated samples, index-aligned with the lines of ``samples.jsonl``.

    ``representations[i]`` is ``None`` exactly when ``errors[i]`` says why line ``i`` is not a valid
    Wyckoff representation. ``structures`` maps an index to its 3D structure (read or realised);
    ``structure_errors`` maps an index to why it has none (unparseable CIF, pyxtal failure).
    """

    representations: list[WyckoffRepresentation | None]
    errors: dict[int, str] = field(default_factory=dict)
    structures: dict[int, Structure] = field(default_factory=dict)
    structure_errors: dict[int, str] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.representations)

    @property
    def valid(self) -> list[WyckoffRepresentation]:
        """The Wyckoff-valid representations, in sample order."""
        return [rep for rep in self.representations if rep is not None]

    @property
    def realised(self) -> list[Structure]:
        """Structures of the Wyckoff-valid samples, in sample order (a CIF beside an invalid line is ignored)."""
        return [self.structures[i] for i in sorted(self.structures) if self.representations[i] is not None]

    @classmethod
    def from_representations(cls, representations: list[WyckoffRepresentation],
                             structures: dict[int, Structure] | None = None) -> GeneratedSamples:
        """Samples from Python objects (notebooks, tests): all valid, structures optional."""
        return cls(list(representations), structures=dict(structures or {}))


def parse_sample_line(line: str) -> WyckoffRepresentation:
    """One ``samples.jsonl`` line → representation; ``WyckoffError`` (with the reason) otherwise."""
    try:
        data = json.loads(line)
    except json.JSONDecodeError as err:
        raise WyckoffError(f"not JSON: {err}") from None
    if not isinstance(data, dict):
        raise WyckoffError(f"expected a JSON object, got {type(data).__name__}")
    return WyckoffRepresentation.from_dict(data)


def _read_cif(path: Path) -> Structure | str:
    """A parsed CIF or the reason it could not be parsed (returned, so one bad file never stops a pool)."""
    try:
        return load_structure(path)
    except WyckoffError as err:
        return f"{path.name}: {err}"


def load_samples(path: str | os.PathLike, num_workers: int | None = 1,
                 read_structures: bool = True) -> GeneratedSamples:
    """Read a samples folder (``samples.jsonl`` + optional ``structures/``) or a single ``.jsonl`` file.

    CIFs are parsed on ``num_workers`` processes; ``read_structures=False`` skips them altogether.
    """
    path = Path(path)
    if path.is_dir():
        jsonl, structures_dir = path / SAMPLES_FILE, path / STRUCTURES_DIR
    elif path.is_file():
        jsonl, structures_dir = path, None
    else:
        raise FileNotFoundError(f"no samples at {path}: expected a folder with {SAMPLES_FILE} or a .jsonl file")
    if not jsonl.is_file():
        raise FileNotFoundError(f"{path} has no {SAMPLES_FILE}")

    samples = GeneratedSamples([])
    for index, line in enumerate(jsonl.read_text().splitlines()):
        try:
            samples.representations.append(parse_sample_line(line))
        except WyckoffError as err:
            samples.representations.append(None)
            samples.errors[index] = f"{jsonl.name} line {index + 1}: {err}"

    if read_structures and structures_dir is not None and structures_dir.is_dir():
        indexed = []
        for cif in sorted(structures_dir.glob("*.cif")):
            if not cif.stem.isdigit() or int(cif.stem) >= len(samples):
                raise ValueError(f"{cif}: structure files must be named {{index:06d}}.cif with an index below "
                                 f"the {len(samples)} lines of {jsonl}")
            indexed.append((int(cif.stem), cif))
        read = parallel_map(_read_cif, [cif for _, cif in indexed], num_workers, desc="reading CIFs")
        for (index, _), result in zip(indexed, read, strict=True):
            if isinstance(result, Structure):
                samples.structures[index] = result
            else:
                samples.structure_errors[index] = result
        failures = path / FAILURES_FILE
        if failures.is_file():
            with open(failures, newline="") as f:
                for row in csv.DictReader(f):
                    index = int(row["index"])
                    if index not in samples.structures:
                        samples.structure_errors.setdefault(index, f"pyxtal: {row['reason']}")
    return samples


def realise_missing(samples: GeneratedSamples, num_workers: int | None = None, max_attempts: int = 10,
                    seed: int = 0, timeout: float = 10.0) -> GeneratedSamples:
    """Realise with pyxtal every valid sample that has no structure yet, in place, over a process pool.

    Sample ``i`` uses seed ``seed + i`` (as ``wyckoff-hf generate --structures`` does), with ``max_attempts``
    tries and ``timeout`` seconds each. A failure is recorded in ``structure_errors``.
    """
    missing = [i for i, rep in enumerate(samples.representations)
               if rep is not None and i not in samples.structures]
    structures, failures = realise_structures([samples.representations[i] for i in missing], num_workers,
                                              seeds=[seed + i for i in missing], max_attempts=max_attempts,
                                              timeout=timeout)
    for position, structure in structures.items():
        samples.structures[missing[position]] = structure
        samples.structure_errors.pop(missing[position], None)
    for failure in failures:
        samples.structure_errors[missing[failure.index]] = f"sample {missing[failure.index]}: {failure.reason}"
    return samples
