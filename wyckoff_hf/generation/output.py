"""The folder a generation job writes, and the proof that its files belong together.

Layout (read back by ``wyckoff-hf evaluate``):

- ``samples.jsonl``: one ``WyckoffRepresentation.to_dict()`` per line, in sampling order;
- ``manifest.json``: the settings of the job and the sha256 of ``samples.jsonl``;
- ``structures/{index:06d}.cif`` (or ``.extxyz``): the 3D structure of line ``index``; each file carries the
  sha256 of its line, so a structure provably belongs to its sample (a stale file of an earlier run, or one
  beside an edited ``samples.jsonl``, is caught instead of being scored against the wrong sample);
- ``log_probabilities.txt``: ``generate``'s log-probability of each sample, line for line;
- ``manifest.json``'s ``files``: the entries the job (and ``realise``, ``predict``) wrote, all that
  ``--overwrite`` may remove;
- ``realisation_failures.csv``: index, representation, the limit that ended the search (``attempts`` or
  ``time``) and the reason, for every sample pyxtal could not realise.

Samples are written before any structure, and structures one file at a time as they complete (atomically:
written to a temporary name, then renamed), so an interrupted job loses nothing that was finished.

CIFs are symmetrised: the space group, its operations and one line per Wyckoff orbit (multiplicity and
``_atom_site_Wyckoff_symbol``, coordinates in [0, 1)), readable by pymatgen, ASE and VESTA. ``extxyz``
(through ASE) lists every atom of the conventional cell, with the space group in the frame's info.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pymatgen.core import Structure

    from ..tokenization import WyckoffRepresentation

SAMPLES_FILE = "samples.jsonl"
MANIFEST_FILE = "manifest.json"
STRUCTURES_DIR = "structures"
FAILURES_FILE = "realisation_failures.csv"
FAILURE_COLUMNS = ("index", "representation", "limit", "reason")
STRUCTURE_FORMATS = ("cif", "extxyz")
SYMPREC = 0.01  # pyxtal places atoms exactly on their orbits; a tight tolerance finds the sampled group
_CIF_TAG = re.compile(r"^# wyckoff-hf sample (\d+) sha256 ([0-9a-f]{64})$", re.MULTILINE)
SAMPLE_HASH_KEY = "sample_sha256"
SCORES_FILE = "log_probabilities.txt"
PREDICTIONS_FILE = "predictions.csv"
FILES_KEY = "files"  # the manifest's list of the folder entries the job wrote
# what a job and the commands that add to its folder (realise, predict) may write: the files of a manifest older
# than FILES_KEY
OUTPUT_LAYOUT = (SAMPLES_FILE, MANIFEST_FILE, SCORES_FILE, STRUCTURES_DIR, FAILURES_FILE, PREDICTIONS_FILE)


class ManifestError(ValueError):
    """The files of an output folder do not belong together (a stale structure, an edited samples file)."""


@dataclass(frozen=True)
class RealisationFailure:
    index: int
    representation: str
    limit: str  # "attempts" (deterministic), "time" (the wall-time safety net, load-dependent) or "write" (the file)
    reason: str


def sample_line(representation: WyckoffRepresentation) -> str:
    """The ``samples.jsonl`` line of a representation (without the newline)."""
    return json.dumps(representation.to_dict())


def line_sha256(line: str) -> str:
    return hashlib.sha256(line.rstrip("\n").encode()).hexdigest()


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_writable(path: str | os.PathLike) -> None:
    """``PermissionError`` unless a file can be created in ``path`` (or, for a folder still to be made, in its
    nearest existing parent): a job checks this before its long part, not after."""
    folder = Path(path).absolute()
    while not folder.exists():
        folder = folder.parent
    if not folder.is_dir():
        raise NotADirectoryError(f"output folder {path}: {folder} is a file")
    try:
        tempfile.TemporaryFile(dir=folder).close()
    except OSError as err:
        raise PermissionError(f"output folder {path} is not writable: cannot create a file in {folder} "
                              f"({err.strerror or err})") from None


def owned_entries(out: Path) -> list[str]:
    """The entries of ``out`` that a wyckoff-hf job wrote, by its manifest's ``files`` (an older manifest without
    it: the layout's names); none for a folder without a readable manifest."""
    try:
        manifest = read_manifest(out)
    except (OSError, ValueError):
        manifest = None
    if manifest is None:
        return []
    names = manifest.get(FILES_KEY, OUTPUT_LAYOUT) if isinstance(manifest, dict) else []
    return [name for name in names if isinstance(name, str) and name == Path(name).name and name not in ("", "..")]


def check_output_dir(path: str | os.PathLike, overwrite: bool = False) -> Path:
    """``FileExistsError`` unless ``path`` is absent or an empty folder, or ``overwrite`` is set and it holds only
    what an earlier wyckoff-hf job wrote there (its manifest's ``files``): old structures beside new samples
    would be scored as theirs, and a user's own files are never deleted. ``PermissionError`` for a folder that
    cannot be written. Cheap, so a job checks before its long part."""
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"output path {out} exists and is not a folder")
    present = sorted(child.name for child in out.iterdir()) if out.is_dir() else []
    if present and not overwrite:
        raise FileExistsError(f"output folder {out} is not empty: pass --overwrite to replace the files of the "
                              f"wyckoff-hf job there, or `wyckoff-hf realise {out}` to finish an interrupted job")
    foreign = sorted(set(present) - set(owned_entries(out)))
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise FileExistsError(f"output folder {out} holds entries no wyckoff-hf job wrote ({shown}): --overwrite "
                              "replaces only a job's own files; choose another --output-dir")
    check_writable(out)
    return out


def prepare_output_dir(path: str | os.PathLike, overwrite: bool = False) -> Path:
    """An empty folder at ``path`` (see ``check_output_dir``); ``overwrite`` deletes the entries an earlier job's
    manifest lists, and nothing else."""
    out = check_output_dir(path, overwrite)
    for name in owned_entries(out) if out.is_dir() else []:
        child = out / name
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        elif child.exists() or child.is_symlink():
            child.unlink()
    out.mkdir(parents=True, exist_ok=True)
    return out


def record_files(out_dir: str | os.PathLike, *names: str) -> None:
    """Add ``names`` (those that exist) to the manifest's ``files``: what ``--overwrite`` may later remove."""
    out = Path(out_dir)
    manifest = read_manifest(out)
    if manifest is None:
        return
    files = list(manifest.get(FILES_KEY) or [name for name in OUTPUT_LAYOUT if (out / name).exists()])
    files += [name for name in names if (out / name).exists() and name not in files]
    if files != manifest.get(FILES_KEY):
        write_manifest(out, {**manifest, FILES_KEY: files})


class SampleWriter:
    """``samples.jsonl`` (and ``log_probabilities.txt``, one per sample, with scores) written chunk by chunk as
    sampling goes, so any number of samples takes bounded memory and an interrupted job keeps what it made;
    ``close`` writes ``manifest.json`` with the count and sha256 of what was written."""

    def __init__(self, out_dir: str | os.PathLike, with_scores: bool = False) -> None:
        self.out = Path(out_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        self.count = 0
        self._digest = hashlib.sha256()
        self._samples = open(self.out / SAMPLES_FILE, "w")  # noqa: SIM115 (closed by close)
        self._scores = open(self.out / SCORES_FILE, "w") if with_scores else None  # noqa: SIM115

    def write(self, representations: Sequence[WyckoffRepresentation], scores: Sequence[float] | None = None) -> None:
        text = "".join(sample_line(rep) + "\n" for rep in representations)
        self._samples.write(text)
        self._digest.update(text.encode())
        self._samples.flush()  # on disk as made: a killed job keeps its finished chunks
        if self._scores is not None:
            self._scores.write("".join(f"{score!r}\n" for score in scores))
            self._scores.flush()
        self.count += len(representations)

    def close(self, settings: dict[str, Any] | None = None) -> Path:
        """Flush the files and write the manifest (``settings`` JSON-safe, plus the files written)."""
        from .. import __version__

        self._samples.close()
        files = [SAMPLES_FILE, MANIFEST_FILE]
        if self._scores is not None:
            self._scores.close()
            files.insert(1, SCORES_FILE)
        manifest = {"wyckoff_hf_version": __version__,
                    "samples": {"file": SAMPLES_FILE, "count": self.count, "sha256": self._digest.hexdigest()},
                    FILES_KEY: files, **(settings or {})}
        write_manifest(self.out, manifest)
        return self.out


def write_samples(out_dir: str | os.PathLike, representations: Sequence[WyckoffRepresentation],
                  settings: dict[str, Any] | None = None) -> Path:
    """Write ``samples.jsonl`` and ``manifest.json`` (with ``settings``, JSON-safe) into ``out_dir``."""
    writer = SampleWriter(out_dir)
    writer.write(representations)
    return writer.close(settings)


def write_manifest(out_dir: Path, manifest: dict[str, Any]) -> None:
    (out_dir / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")


def read_manifest(out_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The folder's manifest, ``None`` for a folder without one (hand-made, or older than manifests)."""
    path = Path(out_dir) / MANIFEST_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def verify_samples_file(out_dir: str | os.PathLike, manifest: dict[str, Any]) -> None:
    """``ManifestError`` unless ``samples.jsonl`` is the file the manifest was written for."""
    samples = Path(out_dir) / SAMPLES_FILE
    if file_sha256(samples) != manifest["samples"]["sha256"]:
        raise ManifestError(f"{samples} changed after {MANIFEST_FILE} was written: its structures and failures "
                            "may belong to other samples; generate again with --overwrite")


def structure_path(out_dir: str | os.PathLike, index: int, fmt: str) -> Path:
    return Path(out_dir) / STRUCTURES_DIR / f"{index:06d}.{fmt}"


def symmetrised_cif(structure: Structure, symprec: float = SYMPREC) -> str:
    """CIF text in the structure's space group: symmetry operations and one line per Wyckoff orbit,
    with its multiplicity and Wyckoff letter (pymatgen's ``CifWriter`` plus ``_atom_site_Wyckoff_symbol``)."""
    from pymatgen.io.cif import CifWriter
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    refined = SpacegroupAnalyzer(structure, symprec).get_refined_structure()
    orbits = SpacegroupAnalyzer(refined, symprec).get_symmetrized_structure()
    letters = {}
    for number, (indices, symbol) in enumerate(zip(orbits.equivalent_indices, orbits.wyckoff_symbols,
                                                   strict=True), start=1):
        label = f"{refined[indices[0]].specie.symbol}{number}"
        letters[label] = symbol.lstrip("0123456789")
        for i in indices:
            refined[i].label = label
    writer = CifWriter(refined, symprec=symprec, refine_struct=False)
    block = next(iter(writer.cif_file.data.values()))
    block.data["_atom_site_Wyckoff_symbol"] = [letters[label] for label in block.data["_atom_site_label"]]
    atom_loop = next(loop for loop in block.loops if "_atom_site_label" in loop)
    atom_loop.insert(atom_loop.index("_atom_site_symmetry_multiplicity") + 1, "_atom_site_Wyckoff_symbol")
    return str(writer)


def write_structure(out_dir: str | os.PathLike, index: int, structure: Structure, sample_hash: str,
                    fmt: str = "cif") -> Path:
    """Write the structure of sample ``index``, tagged with its line's sha256; atomic (temp file + rename)."""
    path = structure_path(out_dir, index, fmt)
    if fmt == "cif":
        text = f"# wyckoff-hf sample {index} sha256 {sample_hash}\n" + symmetrised_cif(structure)
    elif fmt == "extxyz":
        import ase.io
        from pymatgen.io.ase import AseAtomsAdaptor
        from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

        atoms = AseAtomsAdaptor.get_atoms(SpacegroupAnalyzer(structure, SYMPREC).get_refined_structure())
        atoms.info.update({"sample_index": index, SAMPLE_HASH_KEY: sample_hash,
                           "spacegroup_number": SpacegroupAnalyzer(structure, SYMPREC).get_space_group_number()})
        buffer = io.StringIO()
        ase.io.write(buffer, atoms, format="extxyz")
        text = buffer.getvalue()
    else:
        raise ValueError(f"structure format {fmt!r} is not one of {STRUCTURE_FORMATS}")
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(text)
    temporary.replace(path)
    return path


def read_structure(path: str | os.PathLike) -> tuple[Structure, str | None]:
    """A structure file written by ``write_structure`` (or any CIF / extxyz) and its sample hash, if tagged."""
    from ..tokenization import StructureParseError, load_structure

    path = Path(path)
    if path.suffix == ".extxyz":
        import ase.io
        from pymatgen.io.ase import AseAtomsAdaptor

        try:
            atoms = ase.io.read(path, format="extxyz")
        except Exception as err:  # ASE raises assorted errors for broken files
            raise StructureParseError(f"unreadable extxyz: {type(err).__name__}: {err}") from err
        return AseAtomsAdaptor.get_structure(atoms), atoms.info.get(SAMPLE_HASH_KEY)
    text = path.read_text()
    tag = _CIF_TAG.search(text[:200])
    return load_structure(text), tag.group(2) if tag else None


def append_failure(out_dir: str | os.PathLike, failure: RealisationFailure) -> None:
    """Add one row to ``realisation_failures.csv`` (with the header when the file is new), flushed at once."""
    path = Path(out_dir) / FAILURES_FILE
    new = not path.is_file()
    with open(path, "a", newline="") as f:
        writer = csv.writer(f)
        if new:
            writer.writerow(FAILURE_COLUMNS)
        writer.writerow((failure.index, failure.representation, failure.limit, failure.reason))


def read_failures(out_dir: str | os.PathLike) -> dict[int, dict[str, str]]:
    """Rows of ``realisation_failures.csv`` by sample index (empty when there is none)."""
    path = Path(out_dir) / FAILURES_FILE
    if not path.is_file():
        return {}
    with open(path, newline="") as f:
        return {int(row["index"]): row for row in csv.DictReader(f)}
