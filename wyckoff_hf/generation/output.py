"""The folder a generation job writes, and the proof that its files belong together.

Layout (read back by ``wyckoff-hf evaluate``):

- ``samples.jsonl``: one ``WyckoffRepresentation.to_dict()`` per line, in sampling order;
- ``manifest.json``: the settings of the job and the sha256 of ``samples.jsonl``;
- ``structures/{index:06d}.cif`` (or ``.extxyz``): the 3D structure of line ``index``; each file carries the
  sha256 of its line, so a structure provably belongs to its sample (a stale file of an earlier run, or one
  beside an edited ``samples.jsonl``, is caught instead of being scored against the wrong sample);
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


def check_output_dir(path: str | os.PathLike, overwrite: bool = False) -> Path:
    """``FileExistsError`` unless ``path`` is absent, an empty folder, or ``overwrite`` is set: old structures
    beside new samples would be scored as theirs. Cheap, so a job can check before its long part."""
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"output path {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"output folder {out} is not empty: pass --overwrite to replace its contents, "
                              f"or `wyckoff-hf realise {out}` to finish an interrupted job")
    return out


def prepare_output_dir(path: str | os.PathLike, overwrite: bool = False) -> Path:
    """An empty folder at ``path`` (see ``check_output_dir``); ``overwrite`` deletes what it holds."""
    out = check_output_dir(path, overwrite)
    if out.is_dir():
        for child in out.iterdir():
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()
    out.mkdir(parents=True, exist_ok=True)
    return out


def write_samples(out_dir: str | os.PathLike, representations: Sequence[WyckoffRepresentation],
                  settings: dict[str, Any] | None = None) -> Path:
    """Write ``samples.jsonl`` and ``manifest.json`` (with ``settings``, JSON-safe) into ``out_dir``."""
    from .. import __version__

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    samples = out / SAMPLES_FILE
    samples.write_text("".join(sample_line(rep) + "\n" for rep in representations))
    manifest = {"wyckoff_hf_version": __version__,
                "samples": {"file": SAMPLES_FILE, "count": len(representations), "sha256": file_sha256(samples)},
                **(settings or {})}
    write_manifest(out, manifest)
    return out


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
