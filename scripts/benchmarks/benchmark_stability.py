"""Benchmark: speed and accuracy of the shortcuts to the full CHGNet relaxation protocol, on the same samples.

    OMP_NUM_THREADS=1 python scripts/benchmarks/benchmark_stability.py --num-samples 100 --trials 3

Every strategy relaxes the primitive cell, as the protocol does.
Samples come from the shipped model (``--num-samples``, seed 0), a samples folder (``--samples``) or the
Wyckoff representations of a CSV's first rows (``--from-csv``, e.g. the MP-20 test split as a baseline). Every
sample gets ``--trials`` pyxtal realisations (the seeds ``wyckoff_hf.evaluation.relaxation`` uses), and on
one core each realisation is: evaluated once (CHGNet single point, batched), relaxed fully (fmax 0.02,
500 steps, symmetry fixed), relaxed loosely (screening: fmax 0.1, 100 steps) and, for the best loose
trial, refined to fmax 0.02; trial 0 is also relaxed without ``FixSymmetry``. The strategies below are
assembled from these measured pieces (a strategy's seconds are the sum of its pieces' measured seconds;
no piece is shared between a strategy and the reference unless the computation is identical):

- full K trials: the reference protocol (lowest-energy trial kept);
- full 1 trial: trial 0 of the above;
- free 1 trial: trial 0 relaxed without FixSymmetry (how much symmetry-fixing costs or saves);
- screen + refine: K loose relaxations, the best refined (``RelaxationSettings(screen_fmax=0.1)``);
- screen + refine if e_hull < cut: refinement only where the loose e_hull is below ``--refine-below``;
- loose only: K loose relaxations, best kept, no refinement;
- single points: K unrelaxed pyxtal structures, best kept (what a relaxation-free proxy would say).

The table: strategy, seconds, structures/s (one core), S.U.N. estimate, S.U.N. agreement (same label as the
reference, per sample), MAE of energy above hull vs the reference, space group kept. Novelty is decided
against the CIFs of ``--known`` (default: the MP-20 binary/ternary validation split; train is not on these
machines).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from wyckoff_hf.evaluation.hull import cif_formula, packaged_hull
from wyckoff_hf.evaluation.novelty import novel_structures, unique_structures
from wyckoff_hf.evaluation.relaxation import (
    SCREEN_FMAX,
    RelaxationSettings,
    primitive_cell,
    relax_structure,
    relaxed_space_group,
    static_energies,
)
from wyckoff_hf.evaluation.sun import METASTABLE, sun_flags
from wyckoff_hf.tokenization import WyckoffRepresentation

MP20 = Path(__file__).resolve().parents[3] / "shared" / "data" / "mp_20_biternary"
FULL = RelaxationSettings()
SCREEN = RelaxationSettings(screen_fmax=SCREEN_FMAX)


@dataclass
class Piece:
    """One measured computation: the structure it ends with, its total energy (eV), its seconds, its steps."""

    structure: object
    energy: float
    seconds: float
    steps: int = 0

    @property
    def energy_per_atom(self) -> float:
        return self.energy / len(self.structure)


def timed_relaxation(structure, fmax: float, steps: int, fix_symmetry: bool = True) -> Piece:
    start = time.perf_counter()
    relaxed, energy, taken, _ = relax_structure(structure, fmax, steps, fix_symmetry)
    return Piece(relaxed, energy, time.perf_counter() - start, taken)


def load_representations(args: argparse.Namespace) -> list[WyckoffRepresentation]:
    if args.from_csv is not None:
        cifs = pd.read_csv(args.from_csv, nrows=args.num_samples, usecols=["cif"]).cif
        return [WyckoffRepresentation.from_structure(cif) for cif in cifs]
    if args.samples is not None:
        from wyckoff_hf.evaluation.samples import load_samples

        return load_samples(args.samples, read_structures=False).valid[:args.num_samples]
    from wyckoff_hf.generation import load_generator

    model, tokenizer = load_generator()
    return list(model.generate(num_samples=args.num_samples, tokenizer=tokenizer, seed=args.seed))


def best(pieces: list[Piece]) -> Piece:
    return min(pieces, key=lambda p: p.energy_per_atom)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-samples", type=int, default=100)
    parser.add_argument("--trials", type=int, default=FULL.num_trials)
    parser.add_argument("--samples", type=Path, default=None, help="a generated samples folder or .jsonl")
    parser.add_argument("--from-csv", type=Path, default=None,
                        help="use the representations of the first rows of this CDVAE CSV (e.g. the test split)")
    parser.add_argument("--known", type=Path, nargs="+", default=[MP20 / "val.csv.gz"], help="CSV(s) of known CIFs")
    parser.add_argument("--max-atoms", type=int, default=None,
                        help="skip samples with more atoms per conventional cell (quick runs on a busy machine)")
    parser.add_argument("--refine-below", type=float, default=0.3, help="screening cut, eV/atom above hull")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    hull = packaged_hull()
    known = pd.concat([pd.read_csv(path, usecols=["cif"]) for path in args.known]).cif.tolist()
    known_formulas = [cif_formula(cif) for cif in known]

    representations = [rep for rep in load_representations(args)
                       if args.max_atoms is None or rep.num_atoms <= args.max_atoms]
    initial: dict[int, list] = {}
    for i, rep in enumerate(representations):
        trials = []
        for trial in range(args.trials):
            try:
                structure = rep.to_structure(seed=FULL.trial_seed(i, trial))
                trials.append(primitive_cell(structure) if FULL.primitive_cell else structure)
            except ValueError as err:
                print(f"sample {i} trial {trial}: {err}")
        if trials:
            initial[i] = trials
    print(f"{len(initial)} of {len(representations)} samples realised; relaxing {args.trials} trial(s) each")

    pieces: dict[str, dict[int, list[Piece]]] = {name: {} for name in ("single", "full", "loose", "free")}
    refined: dict[int, Piece] = {}
    for i, trials in initial.items():
        start = time.perf_counter()
        energies = static_energies(trials)
        share = (time.perf_counter() - start) / len(trials)
        pieces["single"][i] = [Piece(s, e, share) for s, e in zip(trials, energies, strict=True)]
        pieces["full"][i] = [timed_relaxation(s, FULL.fmax, FULL.max_steps) for s in trials]
        pieces["loose"][i] = [timed_relaxation(s, SCREEN.screen_fmax, SCREEN.screen_steps) for s in trials]
        pieces["free"][i] = [timed_relaxation(trials[0], FULL.fmax, FULL.max_steps, fix_symmetry=False)]
        loose = best(pieces["loose"][i])
        refined[i] = timed_relaxation(loose.structure, FULL.fmax, max(1, FULL.max_steps - loose.steps))
        print(f"sample {i} ({representations[i]}): full {sum(p.seconds for p in pieces['full'][i]):.0f} s, "
              f"loose {sum(p.seconds for p in pieces['loose'][i]):.0f} s")

    def e_hull(piece: Piece) -> float:
        return hull.chgnet_e_above_hull(piece.structure, piece.energy)

    def screened_with_cut(i: int) -> tuple[Piece, float]:
        loose = best(pieces["loose"][i])
        cost = sum(p.seconds for p in pieces["loose"][i])
        if e_hull(loose) <= args.refine_below:
            return refined[i], cost + refined[i].seconds
        return loose, cost

    strategies: dict[str, Callable[[int], tuple[Piece, float]]] = {
        f"full, {args.trials} trials (reference)": lambda i: (best(pieces["full"][i]),
                                                              sum(p.seconds for p in pieces["full"][i])),
        "full, 1 trial": lambda i: (pieces["full"][i][0], pieces["full"][i][0].seconds),
        "free (no FixSymmetry), 1 trial": lambda i: (pieces["free"][i][0], pieces["free"][i][0].seconds),
        f"screen {args.trials} + refine best": lambda i: (refined[i], sum(p.seconds for p in pieces["loose"][i])
                                                          + refined[i].seconds),
        f"screen {args.trials} + refine if < {args.refine_below}": screened_with_cut,
        f"loose only (fmax {SCREEN.screen_fmax}), {args.trials} trials":
            lambda i: (best(pieces["loose"][i]), sum(p.seconds for p in pieces["loose"][i])),
        f"single points, {args.trials} trials": lambda i: (best(pieces["single"][i]),
                                                           sum(p.seconds for p in pieces["single"][i])),
    }
    indices = sorted(initial)
    rows, reference = [], None
    for name, strategy in strategies.items():
        chosen = [strategy(i) for i in indices]
        structures = [piece.structure for piece, _ in chosen]
        above = np.array([e_hull(piece) for piece, _ in chosen])
        novel, _ = novel_structures(structures, known, known_formulas)
        sun = np.array(sun_flags(above, unique_structures(structures), novel, METASTABLE))
        kept = np.mean([relaxed_space_group(s) == representations[i].space_group
                        for s, i in zip(structures, indices, strict=True)])
        if reference is None:
            reference = (above, sun)
        seconds = sum(cost for _, cost in chosen)
        rows.append((name, seconds, len(indices) / seconds, sun.mean(), (sun == reference[1]).mean(),
                     np.abs(above - reference[0]).mean(), kept))

    print(f"\n{len(indices)} samples, {args.trials} trials, one core (torch threads = 1)\n")
    print("| strategy | seconds | structures/s | S.U.N. | S.U.N. agreement | e_hull MAE (eV/atom) | group kept |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, seconds, rate, sun, agreement, mae, kept in rows:
        print(f"| {name} | {seconds:.0f} | {rate:.3f} | {100 * sun:.1f} % | {100 * agreement:.1f} % "
              f"| {mae:.3f} | {100 * kept:.1f} % |")
    drops = [e_hull(best(pieces["loose"][i])) - e_hull(refined[i]) for i in indices]
    print(f"\nrefinement lowers e_hull by {np.mean(drops):.3f} eV/atom on average (max {np.max(drops):.3f}); "
          f"screening cut used: {args.refine_below} eV/atom")


if __name__ == "__main__":
    main()
