"""Benchmark: does batching structures through CHGNet make a relaxation step cheaper on the CPU?

    OMP_NUM_THREADS=1 python scripts/benchmarks/benchmark_chgnet_batching.py --num-structures 32 --threads 1

A relaxation step needs energy, forces and stress of one structure. ``wyckoff_hf.evaluation.relaxation`` asks
CHGNet for them through ASE, one structure at a time (``CHGNetCalculator``). The alternative the stability issue
names is to step many relaxations in lock-step and evaluate their structures in one CHGNet batch
(``CHGNet.predict_structure(structures, batch_size=B)``). This times both on the same structures: the primitive
cells of the shipped model's first samples, realised with the relaxation protocol's trial-0 seeds. Each row is
the median of ``--repeats`` passes over all structures, after one warm-up pass.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import time
import warnings

import torch

from wyckoff_hf.evaluation.relaxation import RelaxationSettings, load_chgnet, primitive_cell
from wyckoff_hf.generation import load_generator


def sample_structures(count: int, seed: int) -> list:
    """Primitive cells of the shipped model's samples, as the relaxation protocol builds its first trial."""
    model, tokenizer = load_generator()
    settings = RelaxationSettings()
    structures = []
    for index, representation in enumerate(model.generate(num_samples=4 * count, tokenizer=tokenizer, seed=seed)):
        try:
            structures.append(primitive_cell(representation.to_structure(seed=settings.trial_seed(index, 0))))
        except ValueError:
            continue
        if len(structures) == count:
            break
    return structures


def time_passes(evaluate, repeats: int) -> float:
    evaluate()  # warm-up
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        evaluate()
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-structures", type=int, default=32)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if min(args.num_structures, args.repeats, args.threads, *args.batch_sizes) < 1:
        parser.error("--num-structures, --batch-sizes, --repeats and --threads must be at least 1")
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")
    from chgnet.model.dynamics import CHGNetCalculator
    from pymatgen.io.ase import AseAtomsAdaptor

    structures = sample_structures(args.num_structures, args.seed)
    chgnet = load_chgnet()
    with contextlib.redirect_stdout(io.StringIO()):
        calculator = CHGNetCalculator(chgnet, use_device="cpu", on_isolated_atoms="ignore")
    atoms = [AseAtomsAdaptor.get_atoms(structure) for structure in structures]

    def through_ase() -> None:
        for item in atoms:
            calculator.calculate(item, properties=["energy", "forces", "stress"])

    rows = [("ASE calculator, one structure per call (the relaxation's path)", time_passes(through_ase, args.repeats))]
    for batch_size in args.batch_sizes:
        def batched(batch_size: int = batch_size) -> None:
            chgnet.predict_structure(structures, task="efs", batch_size=batch_size)

        rows.append((f"CHGNet.predict_structure, batch of {batch_size}", time_passes(batched, args.repeats)))

    atoms_per_structure = sum(len(s) for s in structures) / len(structures)
    print(f"\n{len(structures)} structures, {atoms_per_structure:.1f} atoms on average (primitive cells), "
          f"torch threads {args.threads}, median of {args.repeats} passes\n")
    print("| energy + forces + stress | ms per structure | structures/s | vs ASE path |")
    print("|---|---:|---:|---:|")
    reference = rows[0][1]
    for name, seconds in rows:
        print(f"| {name} | {1000 * seconds / len(structures):.1f} | {len(structures) / seconds:.1f} "
              f"| {reference / seconds:.2f}x |")


if __name__ == "__main__":
    main()
