"""Benchmark: seconds per evaluation metric for a sample set (default 1,000 samples on 2 cores).

    python scripts/benchmarks/benchmark_evaluation.py [--samples PATH] [--num-samples N] [--num-workers K]
                                           [--reference-rows R] [--data FOLDER]

Without ``--samples`` the first N rows of ``test.csv.gz`` stand in for generated samples (their
Wyckoff representations and CIFs, written to a temporary samples folder so loading is timed too).
The reference train split is the first R rows of ``val.csv.gz``, the reference test split the next N
rows of ``test.csv.gz``. Prints a table: metric, seconds, samples/s.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from wyckoff_hf.evaluation import (
    GeneratedSamples,
    ReferenceSet,
    evaluate,
    load_samples,
    novel_representations,
    novel_structures,
    novel_templates,
    realise_missing,
    structure_uniqueness,
    structure_validity,
    symmetry_metrics,
    validity_metrics,
    wasserstein_distances,
    wyckoff_uniqueness,
)
from wyckoff_hf.tokenization import representations_from_structures

DEFAULT_DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "mp_20_biternary"


def _representations(cifs: list[str], label: str) -> tuple[list, list[str]]:
    converted, failures = representations_from_structures((f"{label}[{i}]", cif) for i, cif in enumerate(cifs))
    for failure in failures:
        print(f"skipped {failure.identifier}: {failure.error_type}: {failure.reason}")
    kept = {int(identifier.split("[")[1].rstrip("]")) for identifier, _ in converted}
    return [rep for _, rep in converted], [cif for i, cif in enumerate(cifs) if i in kept]


def _write_stand_in(folder: Path, reps: list, cifs: list[str]) -> None:
    folder.mkdir()
    (folder / "samples.jsonl").write_text("".join(json.dumps(rep.to_dict()) + "\n" for rep in reps))
    (folder / "structures").mkdir()
    for index, cif in enumerate(cifs):
        (folder / "structures" / f"{index:06d}.cif").write_text(cif)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=Path, default=None, help="a generated samples folder or .jsonl")
    parser.add_argument("--num-samples", type=int, default=1000)
    parser.add_argument("--num-workers", type=int, default=2)
    parser.add_argument("--reference-rows", type=int, default=5000)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    args = parser.parse_args()
    n, workers = args.num_samples, args.num_workers

    test = pd.read_csv(args.data / "test.csv.gz", nrows=2 * n).cif.tolist()
    train_reps, train_cifs = _representations(
        pd.read_csv(args.data / "val.csv.gz", nrows=args.reference_rows).cif.tolist(), "val")
    test_reps, test_cifs = _representations(test[n:], "test")
    reference = ReferenceSet(train_reps, test_reps, train_cifs, test_cifs)

    rows: list[tuple[str, float, int]] = []

    def timed(name: str, count: int, function: Callable[[], Any]) -> Any:
        start = time.perf_counter()
        result = function()
        rows.append((name, time.perf_counter() - start, count))
        return result

    with tempfile.TemporaryDirectory() as tmp:
        folder = args.samples
        if folder is None:
            folder = Path(tmp) / "samples"
            _write_stand_in(folder, *_representations(test[:n], "test"))
        samples = timed("load samples (jsonl + CIFs)", n, lambda: load_samples(folder, workers))
        n = len(samples)
        valid, structures = samples.valid, samples.realised
        timed("Wyckoff + compositional validity", n, lambda: validity_metrics(samples, structure_metrics=False))
        timed("structural validity", len(structures), lambda: [structure_validity(s) for s in structures])
        timed("uniqueness, Wyckoff", len(valid), lambda: wyckoff_uniqueness(valid))
        timed("novelty, Wyckoff", len(valid), lambda: novel_representations(valid, reference.train))
        timed("novelty, template", len(valid), lambda: novel_templates(valid, reference.train))
        timed("uniqueness, structure", len(structures), lambda: structure_uniqueness(structures, workers))
        timed("novelty, structure", len(structures), lambda: novel_structures(
            structures, reference.train_cifs, reference.train_formulas, workers))
        timed("symmetry (P1, TV, crystal systems)", len(valid), lambda: symmetry_metrics(valid, reference.test))
        timed("Wasserstein distances", len(valid), lambda: wasserstein_distances(valid, reference.test))
        bare = GeneratedSamples.from_representations(valid)
        realised = timed("realisation with pyxtal (10 attempts)", len(valid),
                         lambda: realise_missing(bare, workers, max_attempts=10))
        timed("evaluate() end to end (no realisation)", n,
              lambda: evaluate(folder, reference, Path(tmp) / "report", num_workers=workers))

    print(f"{n} samples, {len(reference.train)} reference train rows, {len(reference.test)} test rows, "
          f"{workers} workers; {len(realised.structures)}/{len(valid)} realised by pyxtal")
    print("| metric | seconds | samples/s |")
    print("|---|---:|---:|")
    for name, seconds, count in rows:
        print(f"| {name} | {seconds:.2f} | {count / seconds:,.0f} |")


if __name__ == "__main__":
    main()
