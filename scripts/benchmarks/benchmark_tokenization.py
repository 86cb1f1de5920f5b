"""Benchmark: CIF text → Wyckoff representation → token ids, structures per second per core.

    python scripts/benchmarks/benchmark_tokenization.py [--num N] [--source PATH] [--workers K]

Prints a table of throughput (CIF parsing included) and the failures with their reasons.
Goal of the foundation issue: ≥ 150 structures/s/core.
"""

from __future__ import annotations

import argparse
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pandas as pd

from wyckoff_hf.tokenization import WyckoffError, WyckoffRepresentation, WyckoffTokenizer, load_structure

DEFAULT_SOURCE = Path(__file__).resolve().parents[3] / "shared" / "data" / "mp_20_biternary" / "test.csv.gz"


def _tokenize_chunk(cifs: list[str]) -> tuple[float, float, list[str]]:
    """Parse, analyse and encode ``cifs``; returns (parse seconds, total seconds, failure reasons)."""
    tokenizer = WyckoffTokenizer()
    failures, parse_seconds = [], 0.0
    start = time.perf_counter()
    for cif in cifs:
        try:
            t0 = time.perf_counter()
            structure = load_structure(cif)
            parse_seconds += time.perf_counter() - t0
            tokenizer.encode(WyckoffRepresentation.from_structure(structure))
        except WyckoffError as err:
            failures.append(f"{type(err).__name__}: {err}")
    return parse_seconds, time.perf_counter() - start, failures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE)
    parser.add_argument("--num", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()

    cifs = pd.read_csv(args.source, nrows=args.num).cif.tolist()
    chunks = [cifs[i:: args.workers] for i in range(args.workers)]
    wall = time.perf_counter()
    with ProcessPoolExecutor(args.workers) as pool:
        results = list(pool.map(_tokenize_chunk, chunks))
    wall = time.perf_counter() - wall
    busy = sum(total for _, total, _ in results)
    parse = sum(p for p, _, _ in results)
    failures = Counter(reason for _, _, reasons in results for reason in reasons)

    print("| source | structures | workers | wall s | structures/s | structures/s/core | CIF parse share |")
    print("|---|---|---|---|---|---|---|")
    print(f"| {args.source.name} | {len(cifs)} | {args.workers} | {wall:.2f} | {len(cifs) / wall:.0f} "
          f"| {len(cifs) / busy:.0f} | {parse / busy:.0%} |")
    print(f"\nfailures: {sum(failures.values())}")
    for reason, count in failures.most_common():
        print(f"  {count} × {reason}")


if __name__ == "__main__":
    main()
