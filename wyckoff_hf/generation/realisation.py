"""3D structures for sampled Wyckoff representations through pyxtal, in parallel, resumable.

Each sample gets a bounded number of pyxtal attempts (``max_attempts``): that bound is deterministic, so
the same samples and seeds realise the same way on an idle and on a busy machine. The wall-time limit is
only a generous safety net against pyxtal's unbounded attempts (13 orbits on one 1-dof position of R3m took
89 s to fail); a failure records which of the two limits ended it.

Sample ``i`` is seeded with ``seed + i``, so results depend neither on the worker count nor on whether the
job was interrupted and resumed.

A structure must read back as its sample (``WyckoffRepresentation.to_structure`` checks it with spglib at the
tokenizer's tolerance and retries other derived seeds): one that analyses as a supergroup, or with other sites,
is a failure with limit ``symmetry`` and the reason ("realised in group 221 (Pm-3m), sampled 225 (Fm-3m)"),
never a structure scored as the sampled group.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..tokenization.errors import RealizationError, RealizationSymmetryError, RealizationTimeoutError
from ..utils.parallel import parallel_as_completed, parallel_map
from .output import (
    SAMPLES_FILE,
    STRUCTURE_FORMATS,
    STRUCTURES_DIR,
    ManifestError,
    RealisationFailure,
    append_failure,
    line_sha256,
    read_failures,
    read_manifest,
    read_structure,
    structure_path,
    verify_samples_file,
    write_manifest,
    write_structure,
)

if TYPE_CHECKING:
    from pymatgen.core import Structure

    from ..tokenization import WyckoffRepresentation

REALISATION_KEY = "realisation"  # the manifest's section of realisation settings
SYMMETRY_LIMIT = "symmetry"  # a failure's limit when every realisation read back as another crystal


@dataclass(frozen=True)
class RealisationSettings:
    """How samples become structures; stored in the manifest so a resumed job continues the same way."""

    seed: int = 0
    max_attempts: int = 10
    timeout: float = 60.0  # seconds per sample: a safety net well above what a normal sample needs
    format: str = "cif"

    def __post_init__(self) -> None:
        if self.max_attempts < 1 or self.timeout <= 0:
            raise ValueError(f"need max_attempts ≥ 1 and timeout > 0, got {self.max_attempts}, {self.timeout}")
        if self.format not in STRUCTURE_FORMATS:
            raise ValueError(f"structure format {self.format!r} is not one of {STRUCTURE_FORMATS}")


@dataclass(frozen=True)
class RealisationSummary:
    total: int
    realised: int
    failed: int
    out_dir: Path


def realise_one(representation: WyckoffRepresentation, index: int,
                settings: RealisationSettings) -> Structure | RealisationFailure:
    """The structure of sample ``index``, or why it has none (returned, so one failure never stops a pool)."""
    try:
        return representation.to_structure(seed=settings.seed + index, max_attempts=settings.max_attempts,
                                           timeout=settings.timeout)
    except RealizationTimeoutError as err:
        return RealisationFailure(index, str(representation), "time", str(err))
    except RealizationSymmetryError as err:
        return RealisationFailure(index, str(representation), SYMMETRY_LIMIT, str(err))
    except RealizationError as err:
        return RealisationFailure(index, str(representation), "attempts", str(err))


def _realise_job(job: tuple[WyckoffRepresentation, int, RealisationSettings]) -> Structure | RealisationFailure:
    return realise_one(*job)


def realise_structures(representations: Sequence[WyckoffRepresentation], num_workers: int | None = None,
                       settings: RealisationSettings | None = None,
                       indices: Sequence[int] | None = None) -> tuple[dict[int, Structure], list[RealisationFailure]]:
    """Structures in memory (for ``evaluate --realise``): representation ``k`` is sample ``indices[k]``
    (default ``k``) and seeded accordingly. Failures are returned, never dropped."""
    settings = settings or RealisationSettings()
    indices = list(range(len(representations))) if indices is None else list(indices)
    jobs = [(rep, index, settings) for rep, index in zip(representations, indices, strict=True)]
    structures, failures = {}, []
    for index, result in zip(indices, parallel_map(_realise_job, jobs, num_workers, desc="realising structures",
                                                   chunksize=1), strict=True):
        if isinstance(result, RealisationFailure):
            failures.append(result)
        else:
            structures[index] = result
    return structures, failures


def _realise_into(job: tuple[Path, WyckoffRepresentation, int, str, RealisationSettings]) -> RealisationFailure | None:
    """Worker: realise one sample and write its file (symmetrising a CIF is work worth spreading too)."""
    out_dir, representation, index, sample_hash, settings = job
    result = realise_one(representation, index, settings)
    if isinstance(result, RealisationFailure):
        return result
    try:
        write_structure(out_dir, index, result, sample_hash, settings.format)
    except Exception as err:  # symmetrising or writing one file must not stop the job (nor every resume)
        return RealisationFailure(index, str(representation), "write", f"{type(err).__name__}: {err}")
    return None


def pending_samples(out_dir: str | Path) -> tuple[list[WyckoffRepresentation], list[int], RealisationSettings]:
    """All samples of a generated folder, the indices still without a structure or a failure record, and
    the folder's realisation settings. Finished structures are checked against their sample lines."""
    from ..tokenization import WyckoffRepresentation

    out = Path(out_dir)
    manifest = read_manifest(out)
    if manifest is None:
        raise FileNotFoundError(f"{out} has no manifest.json: not a folder written by `wyckoff-hf generate`")
    verify_samples_file(out, manifest)
    settings = RealisationSettings(**manifest[REALISATION_KEY])
    lines = (out / SAMPLES_FILE).read_text().splitlines()
    representations = [WyckoffRepresentation.from_dict(json.loads(line)) for line in lines]
    for leftover in (out / STRUCTURES_DIR).glob("*.tmp"):
        leftover.unlink()  # a write cut short by the interrupt
    done = set(read_failures(out))
    for index, line in enumerate(lines):
        path = structure_path(out, index, settings.format)
        if path.is_file():
            if read_structure(path)[1] != line_sha256(line):
                raise ManifestError(f"{path} does not belong to line {index + 1} of {SAMPLES_FILE}")
            done.add(index)
    return representations, [i for i in range(len(lines)) if i not in done], settings


def folder_settings(out_dir: str | Path, seed: int = 0, **given: object) -> RealisationSettings:
    """The settings ``wyckoff-hf realise`` continues a folder with: those its manifest records, which an option the
    user gave (``given``: ``format``, ``max_attempts``, ``timeout``; ``None`` for one not given) may not contradict,
    since a folder realised as extxyz and continued as CIF would hold two formats and a changed bound would realise
    the rest differently; for a folder without settings, the given ones over the defaults, with ``seed``."""
    given = {name: value for name, value in given.items() if value is not None}
    unknown = sorted(set(given) - set(RealisationSettings.__dataclass_fields__))
    if unknown:
        raise ValueError(f"unknown realisation settings {unknown}")
    manifest = read_manifest(out_dir) or {}
    kept = manifest.get(REALISATION_KEY)
    if kept is None:
        return RealisationSettings(**{"seed": seed, **given})
    conflicts = [f"{name} {value} (the folder's: {kept[name]})" for name, value in given.items() if kept[name] != value]
    if conflicts:
        raise ValueError(f"{out_dir} keeps the realisation settings it was started with; drop the options that change "
                         f"them: {', '.join(conflicts)}")
    return RealisationSettings(**kept)


def realise_folder(out_dir: str | Path, num_workers: int | None = None,
                   settings: RealisationSettings | None = None) -> RealisationSummary:
    """Realise every sample of a generated folder that has neither a structure nor a failure record.

    Files are written as samples complete, so after Ctrl-C (``KeyboardInterrupt`` propagates, the pool is
    stopped) calling this again continues where it stopped, with the same seeds. ``settings`` is recorded in
    the manifest the first time; a folder that has settings keeps them.
    """
    out = Path(out_dir)
    manifest = read_manifest(out)
    if manifest is not None and manifest.get(REALISATION_KEY) is None:
        verify_samples_file(out, manifest)  # an edited samples file fails before the manifest is touched
        manifest[REALISATION_KEY] = asdict(settings or RealisationSettings())
        write_manifest(out, manifest)
    representations, pending, settings = pending_samples(out)
    (out / STRUCTURES_DIR).mkdir(exist_ok=True)
    lines = (out / SAMPLES_FILE).read_text().splitlines()
    jobs = [(i, (out, representations[i], i, line_sha256(lines[i]), settings)) for i in pending]
    for _, failure in parallel_as_completed(_realise_into, jobs, num_workers, desc="realising structures",
                                            total=len(representations)):
        if failure is not None:
            append_failure(out, failure)
    failed = len(read_failures(out))
    return RealisationSummary(len(representations), len(representations) - failed, failed, out)
