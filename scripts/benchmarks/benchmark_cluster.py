"""Benchmark: can a local Dask cluster replace the local process pool for structure work without losing speed?

    python scripts/benchmarks/benchmark_cluster.py --realise 60 --relax 4 --workers 2

The same samples (Wyckoff representations of the first rows of the MP-20 binary/ternary validation split; for
relaxation the first of them with at most ``--max-atoms`` atoms, since one large cell can take minutes) are
realised with pyxtal (``realise_structures``) and relaxed with CHGNet under the screening protocol
(``relax_samples``, one trial, ``--stability-screen``'s settings) twice: on the process pool of a local run
(``--num-workers N``) and on a ``distributed.LocalCluster`` of N single-threaded worker processes, reached
through ``utils.cluster.connect`` as ``--scheduler`` reaches a real cluster. The pool's seconds include starting
its processes (every call starts a pool, as a command does); the cluster's start-up is timed apart, since a
command with ``--scheduler`` finds its workers already running, and a local run would have to start them.
Each stage is run once: it is a ratio on a shared machine, not a tight timing. The results of the two engines
must agree (same structures, same energies), or the script fails.
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import pandas as pd
from pymatgen.core import Structure

from wyckoff_hf.evaluation.relaxation import SCREEN_FMAX, RelaxationSettings, relax_samples
from wyckoff_hf.generation.realisation import realise_structures
from wyckoff_hf.tokenization import WyckoffRepresentation
from wyckoff_hf.utils.cluster import connect

DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "mp_20_biternary" / "val.csv.gz"


def _timed(function, *args, **kwargs) -> tuple[object, float]:
    start = time.perf_counter()
    result = function(*args, **kwargs)
    return result, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--realise", type=int, default=60, help="samples realised (default: %(default)s)")
    parser.add_argument("--relax", type=int, default=4,
                        help="samples relaxed with CHGNet, 0 skips (default: %(default)s)")
    parser.add_argument("--max-atoms", type=int, default=6,
                        help="largest sample relaxed, in atoms of the CSV's cell (default: %(default)s)")
    parser.add_argument("--workers", type=int, default=2,
                        help="pool processes, and cluster workers (default: %(default)s)")
    parser.add_argument("--data", type=Path, default=DATA, help="CSV with a cif column (default: %(default)s)")
    args = parser.parse_args()

    from distributed import Client, LocalCluster

    rows = pd.read_csv(args.data, nrows=max(args.realise, 20 * args.relax))  # about 40 % of MP-20 cells are small
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pymatgen's note on rounded coordinates, once per CIF
        structures = [Structure.from_str(cif, fmt="cif") for cif in rows["cif"]]
    representations = [WyckoffRepresentation.from_structure(s) for s in structures[:args.realise]]
    small = [WyckoffRepresentation.from_structure(s) for s in structures if len(s) <= args.max_atoms][:args.relax]
    relax = RelaxationSettings(num_trials=1, screen_fmax=SCREEN_FMAX)
    stages = [("realisation", args.realise, lambda: realise_structures(representations, args.workers)),
              ("relaxation", args.relax, lambda: [(r.index, getattr(r, "energy", r))
                                                  for r in relax_samples(small, relax, num_workers=args.workers)])]
    stages = [stage for stage in stages if stage[1] > 0]
    pool = {name: _timed(run) for name, _, run in stages}
    start = time.perf_counter()
    with LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as cluster, Client(cluster, set_as_default=False) as client:
        startup = time.perf_counter() - start
        with connect(client):
            dask = {name: _timed(run) for name, _, run in stages}

    print(f"\n{args.workers} pool processes vs a LocalCluster of {args.workers} single-threaded workers; "
          f"cluster start-up {startup:.1f} s\n")
    print("| stage | samples | pool s | pool samples/s | Dask s | Dask samples/s | Dask / pool time | "
          "Dask + start-up / pool time |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, count, _ in stages:
        (pool_result, pool_s), (dask_result, dask_s) = pool[name], dask[name]
        if pool_result != dask_result:
            raise SystemExit(f"{name}: the two engines disagree")
        print(f"| {name} | {count} | {pool_s:.1f} | {count / pool_s:.2f} | {dask_s:.1f} | {count / dask_s:.2f} | "
              f"{dask_s / pool_s:.2f} | {(dask_s + startup) / pool_s:.2f} |")


if __name__ == "__main__":
    main()
