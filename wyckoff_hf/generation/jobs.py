"""Generation as a job: load a checkpoint, sample Wyckoff representations, realise them in 3D, write files.

The output folder layout (read back by ``wyckoff-hf evaluate``):

- ``samples.jsonl``: one ``WyckoffRepresentation.to_dict()`` per line, in sampling order;
- ``structures/{index:06d}.cif``: with ``realise=True``, the pyxtal structure of line ``index`` (a
  missing file means that representation could not be realised);
- ``realisation_failures.csv``: index, representation and reason of every representation pyxtal
  could not realise.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pymatgen.core import Structure

from ..tokenization import RealizationError, WyckoffRepresentation, WyckoffTokenizer
from ..utils.parallel import parallel_map

DEFAULT_MODEL = Path(__file__).resolve().parent.parent / "pretrained" / "mp20-biternary"
SAMPLES_FILE = "samples.jsonl"
STRUCTURES_DIR = "structures"
FAILURES_FILE = "realisation_failures.csv"


def load_generator(model: str | os.PathLike | None = None, device: str | None = None):
    """``(model, tokenizer)`` from a local folder or a Hub id; the shipped checkpoint by default."""
    from ..modeling import WyckoffTransformerForCrystalGeneration

    source = str(model or DEFAULT_MODEL)
    generator = WyckoffTransformerForCrystalGeneration.from_pretrained(source)
    if device is not None:
        generator.to(device)
    return generator.eval(), WyckoffTokenizer.from_pretrained(source)


@dataclass(frozen=True)
class RealisationFailure:
    index: int
    representation: str
    reason: str


def _realise(job: tuple[WyckoffRepresentation, int | None, int, float | None]) -> Structure | str:
    representation, seed, max_attempts, timeout = job
    try:
        return representation.to_structure(seed=seed, max_attempts=max_attempts, timeout=timeout)
    except RealizationError as err:
        return str(err)


def realise_structures(representations: Sequence[WyckoffRepresentation], workers: int | None = None,
                       seeds: Sequence[int | None] | None = None, max_attempts: int = 10,
                       timeout: float | None = 10.0) -> tuple[dict[int, Structure], list[RealisationFailure]]:
    """3D structures for representations through pyxtal, in parallel over ``workers`` processes.

    ``seeds[i]`` seeds representation ``i`` (default ``i``), so results do not depend on the worker count.
    Each gets ``max_attempts`` tries and ``timeout`` seconds. Failures are returned (index,
    representation, reason), never dropped.
    """
    seeds = list(range(len(representations))) if seeds is None else list(seeds)
    jobs = [(rep, seed, max_attempts, timeout) for rep, seed in zip(representations, seeds, strict=True)]
    structures, failures = {}, []
    for index, result in enumerate(parallel_map(_realise, jobs, workers, desc="realising structures")):
        if isinstance(result, Structure):
            structures[index] = result
        else:
            failures.append(RealisationFailure(index, str(representations[index]), result))
    return structures, failures


def write_samples(out_dir: str | os.PathLike, representations: Sequence[WyckoffRepresentation],
                  structures: dict[int, Structure] | None = None,
                  failures: Sequence[RealisationFailure] = ()) -> Path:
    """Write the folder layout described in the module docstring; returns the folder."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / SAMPLES_FILE, "w") as f:
        for rep in representations:
            f.write(json.dumps(rep.to_dict()) + "\n")
    if structures is not None:
        (out / STRUCTURES_DIR).mkdir(exist_ok=True)
        for index, structure in structures.items():
            structure.to(filename=str(out / STRUCTURES_DIR / f"{index:06d}.cif"))
        with open(out / FAILURES_FILE, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["index", "representation", "reason"])
            writer.writerows((x.index, x.representation, x.reason) for x in failures)
    return out
