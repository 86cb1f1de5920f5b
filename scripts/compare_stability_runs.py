"""Compare two ``wyckoff-hf evaluate --stability`` runs of the same samples under different relaxation protocols.

    python scripts/compare_stability_runs.py report-full/ report-screen/ [--names full screen]

The two reports must come from the same samples (the same folder, or one a prefix of the other: rows are matched
by sample index). Printed: each run's S.U.N., S.S.U.N. and fractions from its ``metrics.json``, with 95 %
intervals, then, on the samples both relaxed, the mean absolute difference of the energy above hull, how often
the two agree on "within 0.08 eV/atom", the space group kept, and the relaxation seconds per sample (from
``stability/relaxations.csv``; seconds are those of the worker, so they compare protocols run on the same
machine). This is how the screening shortcut (``--stability-screen``) is checked against the full protocol.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd

from wyckoff_hf.evaluation.stability import RELAXATIONS_FILE, STABILITY_DIR
from wyckoff_hf.evaluation.sun import METASTABLE

FRACTIONS = ("sun", "ssun", "metastable", "stable", "unique", "novel")


def load_run(folder: Path) -> tuple[dict, pd.DataFrame]:
    metrics_path, relaxations_path = folder / "metrics.json", folder / STABILITY_DIR / RELAXATIONS_FILE
    for path in (metrics_path, relaxations_path):
        if not path.is_file():
            raise SystemExit(f"{folder}: no {path.relative_to(folder)}; pass the --output-dir of an evaluate "
                             f"--stability run")
    stability = json.loads(metrics_path.read_text()).get("stability", {})
    if "sun" not in stability:
        raise SystemExit(f"{folder}: metrics.json holds no relaxation results ({stability.get('skipped', 'none')})")
    return stability, pd.read_csv(relaxations_path).set_index("index")


def percent(value: float | None, interval: list[float] | None = None) -> str:
    if value is None:
        return "n/a"
    text = f"{100 * value:.1f} %"
    return text + (f" [{100 * interval[0]:.1f}, {100 * interval[1]:.1f}]" if interval else "")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("reference", type=Path, help="evaluate --output-dir of the reference protocol")
    parser.add_argument("candidate", type=Path, help="evaluate --output-dir of the shortcut")
    parser.add_argument("--names", nargs=2, default=None, metavar=("REFERENCE", "CANDIDATE"))
    args = parser.parse_args(argv)
    names = args.names or [args.reference.name, args.candidate.name]
    (metrics_a, rows_a), (metrics_b, rows_b) = load_run(args.reference), load_run(args.candidate)

    print(f"| metric | {names[0]} | {names[1]} |\n|---|---:|---:|")
    print(f"| samples with an energy | {metrics_a['num_with_energy']} / {metrics_a['num_samples']} "
          f"| {metrics_b['num_with_energy']} / {metrics_b['num_samples']} |")
    for key in FRACTIONS:
        print(f"| {key} | {percent(metrics_a[key], metrics_a['intervals'].get(key))} "
              f"| {percent(metrics_b[key], metrics_b['intervals'].get(key))} |")
    for key in ("space_group_kept", "converged"):
        print(f"| {key} | {percent(metrics_a[key])} | {percent(metrics_b[key])} |")

    common = rows_a.index.intersection(rows_b.index)
    if common.empty:
        raise SystemExit("the two runs relaxed no sample in common: are they runs of the same samples?")
    a, b = rows_a.loc[common], rows_b.loc[common]
    within_a, within_b = a.e_above_hull <= METASTABLE, b.e_above_hull <= METASTABLE
    kept_a, kept_b = a.space_group_relaxed == a.space_group_sampled, b.space_group_relaxed == b.space_group_sampled
    print(f"\nOn the {len(common)} samples both relaxed:\n")
    print(f"| measure | {names[0]} | {names[1]} |\n|---|---:|---:|")
    print(f"| within {METASTABLE} eV/atom of the hull | {percent(within_a.mean())} | {percent(within_b.mean())} |")
    print(f"| sampled group kept | {percent(kept_a.mean())} | {percent(kept_b.mean())} |")
    print(f"| median energy above hull (eV/atom) | {a.e_above_hull.median():.3f} | {b.e_above_hull.median():.3f} |")
    print(f"| relaxation seconds per sample, mean (median) | {a.seconds.mean():.1f} ({a.seconds.median():.1f}) "
          f"| {b.seconds.mean():.1f} ({b.seconds.median():.1f}) |")
    difference = (b.e_above_hull - a.e_above_hull).to_numpy()
    print(f"\nenergy above hull, {names[1]} minus {names[0]}: mean {difference.mean():+.4f}, mean absolute "
          f"{np.abs(difference).mean():.4f}, largest {np.abs(difference).max():.4f} eV/atom; same 'within "
          f"{METASTABLE}' label for {percent((within_a == within_b).mean())} of the samples; "
          f"relaxation time {names[0]} / {names[1]}: {a.seconds.sum() / b.seconds.sum():.2f}")


if __name__ == "__main__":
    main()
