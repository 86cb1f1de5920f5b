"""Compare ``wyckoff-hf evaluate --stability`` runs of the same samples under different relaxation protocols.

    python scripts/diagnostics/compare_stability_runs.py report-full/ report-screen/ [more runs] \\
        [--names full screen ...]

The first run is the reference. The reports must come from the same samples (the same folder, or one a prefix of
another: rows are matched by sample index). Printed: each run's S.U.N., S.S.U.N. and fractions from its
``metrics.json``, with 95 % intervals, then, on the samples every run relaxed, the space group kept and the
relaxation seconds per sample (from ``stability/relaxations.csv``; seconds are those of the worker, so they compare
protocols run on the same machine), and for each other run against the reference the mean absolute difference of
the energy above hull and how often the two agree on "within 0.08 eV/atom". This is how the screening shortcut
(``--stability-screen``) is checked against the full protocol, and the full protocol against itself with other
pyxtal trials (``evaluate --seed``).
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


def row(label: str, cells: list[str]) -> str:
    return f"| {label} | " + " | ".join(cells) + " |"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("reference", type=Path, help="evaluate --output-dir of the reference protocol")
    parser.add_argument("candidates", type=Path, nargs="+", metavar="candidate",
                        help="evaluate --output-dir of a shortcut, or of the reference with another seed")
    parser.add_argument("--names", nargs="+", default=None, metavar="NAME", help="one column name per run")
    args = parser.parse_args(argv)
    folders = [args.reference, *args.candidates]
    names = args.names or [folder.name for folder in folders]
    if len(names) != len(folders):
        parser.error(f"--names: {len(names)} name(s) for {len(folders)} runs")
    runs = [load_run(folder) for folder in folders]
    header = row("metric", names) + "\n|---|" + "---:|" * len(names)

    print(header)
    print(row("samples with an energy", [f"{m['num_with_energy']} / {m['num_samples']}" for m, _ in runs]))
    for key in FRACTIONS:
        print(row(key, [percent(m[key], m["intervals"].get(key)) for m, _ in runs]))
    for key in ("space_group_kept", "converged"):
        print(row(key, [percent(m[key]) for m, _ in runs]))

    common = runs[0][1].index
    for _, rows in runs[1:]:
        common = common.intersection(rows.index)
    if common.empty:
        raise SystemExit("the runs relaxed no sample in common: are they runs of the same samples?")
    tables = [rows.loc[common] for _, rows in runs]
    within = [t.e_above_hull <= METASTABLE for t in tables]
    print(f"\nOn the {len(common)} samples {'both' if len(runs) == 2 else 'all'} relaxed:\n")
    print(header.replace("| metric |", "| measure |"))
    print(row(f"within {METASTABLE} eV/atom of the hull", [percent(w.mean()) for w in within]))
    print(row("sampled group kept", [percent((t.space_group_relaxed == t.space_group_sampled).mean()) for t in tables]))
    print(row("median energy above hull (eV/atom)", [f"{t.e_above_hull.median():.3f}" for t in tables]))
    print(row("relaxation seconds per sample, mean (median)",
              [f"{t.seconds.mean():.1f} ({t.seconds.median():.1f})" for t in tables]))
    reference = tables[0]
    for name, table, within_candidate in zip(names[1:], tables[1:], within[1:], strict=True):
        difference = (table.e_above_hull - reference.e_above_hull).to_numpy()
        print(f"\nenergy above hull, {name} minus {names[0]}: mean {difference.mean():+.4f}, mean absolute "
              f"{np.abs(difference).mean():.4f}, largest {np.abs(difference).max():.4f} eV/atom; same 'within "
              f"{METASTABLE}' label for {percent((within[0] == within_candidate).mean())} of the samples; "
              f"relaxation time {names[0]} / {name}: {reference.seconds.sum() / table.seconds.sum():.2f}")


if __name__ == "__main__":
    main()
