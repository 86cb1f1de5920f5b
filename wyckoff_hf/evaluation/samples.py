"""Reading generated samples: ``samples.jsonl`` (one representation dict per line) and optional structures.

The layout is the one ``wyckoff-hf generate`` writes (``wyckoff_hf.generation.output``): a folder with
``samples.jsonl`` and, optionally, ``structures/{index:06d}.cif`` (or ``.extxyz``) where ``index`` is the
0-based line number (a missing file means pyxtal could not realise that sample, and
``realisation_failures.csv`` says why). Where the folder has a ``manifest.json``, every structure must
carry the hash of its line: a stale file is an error, not a sample. A bare ``.jsonl`` path is accepted too
(no structures then).

Every line is kept, valid or not: Wyckoff validity is a metric, so an unparseable line is recorded with
its reason instead of being dropped. Trailing blank lines end the file; they are not samples.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from pymatgen.core import Structure

from ..generation.output import (
    SAMPLES_FILE,
    STRUCTURE_FORMATS,
    STRUCTURES_DIR,
    ManifestError,
    line_sha256,
    read_failures,
    read_manifest,
    read_structure,
    verify_samples_file,
)
from ..generation.realisation import SYMMETRY_LIMIT, RealisationSettings, realise_structures
from ..tokenization import WyckoffError, WyckoffRepresentation
from ..utils.parallel import parallel_map


@dataclass
class GeneratedSamples:
    """All generated samples, index-aligned with the lines of ``samples.jsonl``.

    ``representations[i]`` is ``None`` exactly when ``errors[i]`` says why line ``i`` is not a valid
    Wyckoff representation. ``structures`` maps an index to its 3D structure (read or realised);
    ``structure_errors`` maps an index to why it has none (unparseable CIF, pyxtal failure);
    ``symmetry_failures`` holds the indices among those whose every realisation read back as another crystal
    (a supergroup, other sites), which ``evaluate`` reports as a share.
    ``has_structures`` says whether structures were measured at all (a folder without ``structures/``
    was never realised: its realisation rate is unknown, not 0).
    """

    representations: list[WyckoffRepresentation | None]
    errors: dict[int, str] = field(default_factory=dict)
    structures: dict[int, Structure] = field(default_factory=dict)
    structure_errors: dict[int, str] = field(default_factory=dict)
    has_structures: bool = True
    symmetry_failures: set[int] = field(default_factory=set)

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


def _read_structure(path: Path) -> tuple[Structure, str | None] | str:
    """A parsed structure file with its sample hash, or the reason it could not be parsed (returned, so one
    bad file never stops a pool)."""
    try:
        return read_structure(path)
    except WyckoffError as err:
        return f"{path.name}: {err}"


class EmptySamplesError(ValueError):
    """A samples file without a single line: nothing to evaluate or predict, an error in every command."""


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

    lines = jsonl.read_text().rstrip().splitlines()
    if not lines:
        raise EmptySamplesError(f"{jsonl} holds no samples")
    samples = GeneratedSamples([], has_structures=structures_dir is not None and structures_dir.is_dir())
    for index, line in enumerate(lines):
        try:
            samples.representations.append(parse_sample_line(line))
        except WyckoffError as err:
            samples.representations.append(None)
            samples.errors[index] = f"{jsonl.name} line {index + 1}: {err}"

    if read_structures and samples.has_structures:
        manifest = read_manifest(path)
        if manifest is not None:
            verify_samples_file(path, manifest)
        indexed = []
        for file in sorted(f for fmt in STRUCTURE_FORMATS for f in structures_dir.glob(f"*.{fmt}")):
            if not file.stem.isdigit() or int(file.stem) >= len(samples):
                raise ValueError(f"{file}: structure files must be named {{index:06d}}.cif with an index below "
                                 f"the {len(samples)} lines of {jsonl}")
            indexed.append((int(file.stem), file))
        read = parallel_map(_read_structure, [file for _, file in indexed], num_workers, desc="reading structures")
        for (index, file), result in zip(indexed, read, strict=True):
            if isinstance(result, str):
                samples.structure_errors[index] = result
                continue
            structure, sample_hash = result
            if manifest is not None and sample_hash != line_sha256(lines[index]):
                raise ManifestError(f"{file} does not belong to line {index + 1} of {jsonl} (a file left by "
                                    "another run?); generate again into an empty folder")
            samples.structures[index] = structure
        for index, row in read_failures(path).items():
            if index not in samples.structures:
                samples.structure_errors.setdefault(index, f"pyxtal: {row['reason']}")
                if row.get("limit") == SYMMETRY_LIMIT:
                    samples.symmetry_failures.add(index)
    return samples


def realise_missing(samples: GeneratedSamples, num_workers: int | None = None,
                    settings: RealisationSettings | None = None) -> GeneratedSamples:
    """Realise with pyxtal every valid sample that has no structure yet, in place, over a process pool.

    Sample ``i`` uses seed ``settings.seed + i`` (as ``wyckoff-hf generate --structures`` does), with
    ``settings.max_attempts`` tries and the ``settings.timeout`` safety net. A failure is recorded in
    ``structure_errors``.
    """
    missing = [i for i, rep in enumerate(samples.representations)
               if rep is not None and i not in samples.structures]
    structures, failures = realise_structures([samples.representations[i] for i in missing], num_workers,
                                              settings, indices=missing)
    samples.has_structures = True
    for index, structure in structures.items():
        samples.structures[index] = structure
        samples.structure_errors.pop(index, None)
        samples.symmetry_failures.discard(index)
    for failure in failures:
        samples.structure_errors[failure.index] = f"sample {failure.index}: {failure.reason}"
        if failure.limit == SYMMETRY_LIMIT:
            samples.symmetry_failures.add(failure.index)
    return samples
