"""Build the offline hull tables shipped in ``wyckoff_hf/evaluation/data/`` (see ``wyckoff_hf.evaluation.hull``).

    python scripts/build_hull_tables.py --data-dir ../shared/data

1. ``mp_hull_points.json``: one MP hull point per reduced formula from every row of the MP-derived splits
   (formation energy − energy above hull; the elements are implicit at 0).
2. ``chgnet_element_references.json``: per-element CHGNet reference energies μ, fitted by least squares on
   CHGNet single points of DFT-relaxed structures from the validation splits (up to ``--per-element``
   smallest structures per element, so every element of the data gets rows), and the fit's MAE on those
   rows and on ``--held-out`` random rows of the MP-20 test split. Single points only: a few minutes on one core.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
from pymatgen.core import Composition, Structure

from wyckoff_hf.evaluation.hull import (
    ELEMENT_REFERENCES_FILE,
    HULL_POINTS_FILE,
    REBUILD_COMMAND,
    ConvexHullReference,
    cif_formula,
    fit_element_references,
    mp_hull_points,
)
from wyckoff_hf.evaluation.relaxation import static_energies

HULL_SOURCES = ("mp_20_biternary/val", "mp_20_biternary/test", "mpts_52/val", "mpts_52/test")
FIT_SOURCES = ("mp_20_biternary/val", "mpts_52/val")
HELD_OUT_SOURCE = "mp_20_biternary/test"


def read_split(data_dir: Path, name: str) -> pd.DataFrame:
    frame = pd.read_csv(data_dir / f"{name}.csv.gz")
    frame["source"] = name
    frame["formula"] = [cif_formula(cif) for cif in frame["cif"]]
    frame["num_atoms"] = [Composition(f).num_atoms for f in frame["formula"]]  # reduced; ranks small cells first
    return frame


def fit_rows(frame: pd.DataFrame, per_element: int, seed: int) -> pd.DataFrame:
    """Up to ``per_element`` rows per element, small formulas first (ties in random order)."""
    frame = frame.sample(frac=1.0, random_state=seed).sort_values("num_atoms", kind="stable")
    chosen: set[int] = set()
    elements = frame["formula"].map(lambda f: [el.symbol for el in Composition(f).elements])
    counts: dict[str, int] = {}
    for index, row_elements in zip(frame.index, elements, strict=True):
        if any(counts.get(el, 0) < per_element for el in row_elements):
            chosen.add(index)
            for el in row_elements:
                counts[el] = counts.get(el, 0) + 1
    return frame.loc[sorted(chosen)]


def chgnet_formation_inputs(rows: pd.DataFrame) -> tuple[list[Composition], list[float], list[float]]:
    structures = [Structure.from_str(cif, fmt="cif") for cif in rows["cif"]]
    energies = static_energies(structures)
    return [s.composition for s in structures], energies, rows["formation_energy_per_atom"].tolist()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/data"))
    parser.add_argument("--per-element", type=int, default=8, help="fit rows per element (default: %(default)s)")
    parser.add_argument("--held-out", type=int, default=300, help="held-out rows for the MAE (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    start = time.perf_counter()

    splits = {name: read_split(args.data_dir, name) for name in HULL_SOURCES}
    points = mp_hull_points(row for name in HULL_SOURCES for row in splits[name].to_dict("records"))
    HULL_POINTS_FILE.parent.mkdir(parents=True, exist_ok=True)
    HULL_POINTS_FILE.write_text(json.dumps({
        "description": "MP hull formation energy (eV/atom) per reduced formula: formation_energy_per_atom minus "
                       "energy above hull, lowest over rows; elements are at 0. See wyckoff_hf.evaluation.hull.",
        "sources": [f"{name}.csv.gz ({len(splits[name])} rows)" for name in HULL_SOURCES],
        "rebuild": REBUILD_COMMAND,
        "points": {formula: round(energy, 6) for formula, energy in sorted(points.items())},
    }, indent=0) + "\n")
    print(f"{len(points)} hull points -> {HULL_POINTS_FILE}")

    fit = fit_rows(pd.concat([splits[name] for name in FIT_SOURCES], ignore_index=True), args.per_element, args.seed)
    compositions, energies, formation = chgnet_formation_inputs(fit)
    references, residuals = fit_element_references(compositions, energies, formation)
    held_out = splits[HELD_OUT_SOURCE].sample(n=min(args.held_out, len(splits[HELD_OUT_SOURCE])),
                                              random_state=args.seed)
    held_out = held_out[[set(el.symbol for el in Composition(f).elements) <= set(references)
                         for f in held_out["formula"]]]
    hull = ConvexHullReference(points, references)
    compositions, energies, formation = chgnet_formation_inputs(held_out)
    errors = [hull.formation_energy_per_atom(c, e) - f for c, e, f in zip(compositions, energies, formation,
                                                                           strict=True)]
    fit_summary = {
        "method": "least squares: E_CHGNet_total - sum_el n_el mu_el = N * E_form(MP), CHGNet 0.3.0 single points "
                  "of the DFT-relaxed structures",
        "fit_rows": len(fit), "fit_sources": list(FIT_SOURCES), "per_element": args.per_element,
        "fit_mae_ev_per_atom": round(float(np.mean(np.abs(residuals))), 4),
        "held_out_rows": len(held_out), "held_out_source": HELD_OUT_SOURCE,
        "held_out_mae_ev_per_atom": round(float(np.mean(np.abs(errors))), 4),
        "held_out_median_ae_ev_per_atom": round(float(np.median(np.abs(errors))), 4),
    }
    ELEMENT_REFERENCES_FILE.write_text(json.dumps({
        "description": "CHGNet per-element reference energies mu (eV/atom) putting CHGNet total energies on MP's "
                       "formation-energy scale. See wyckoff_hf.evaluation.hull.",
        "rebuild": REBUILD_COMMAND, "fit": fit_summary,
        "references": {el: round(mu, 6) for el, mu in sorted(references.items())},
    }, indent=1) + "\n")
    print(json.dumps(fit_summary, indent=1))
    print(f"{len(references)} element references -> {ELEMENT_REFERENCES_FILE} ({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
