"""Stability, S.U.N. and S.S.U.N. of generated Wyckoff representations: CHGNet relaxation against an offline hull.

Pipeline (``stability_metrics``): every Wyckoff-valid sample is realised ``num_trials`` times with pyxtal
and relaxed with CHGNet under its symmetry (``relaxation``); the lowest-energy trial's CHGNet energy is put
on MP's formation-energy scale and compared with a convex hull built offline from the MP-derived shared
data (``hull``); unique and novel are decided by ``StructureMatcher`` on the relaxed structures (``novelty``),
and the fractions with their 95 % intervals follow (``sun``).

It is a proxy, and the report says so: CHGNet is not DFT (the element-reference fit alone leaves an MAE
of about 0.03 eV/atom against MP formation energies), and the hull is exact only at compositions the data
covers (elsewhere the energy above hull is a lower bound; ``hull_composition_covered`` says how often a
sample's composition is covered). Compare models under the same protocol rather than against DFT numbers.

Install with ``pip install 'wyckoff-hf[stability]'``; ``wyckoff-hf evaluate --stability`` switches it on.
Relaxed structures (CIF), energies and every failure with its reason are written under ``stability/``.
"""

from __future__ import annotations

import csv
import importlib.util
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from pymatgen.core import Structure

from ..tokenization import WyckoffRepresentation
from .hull import ConvexHullReference, MissingReferenceError, packaged_e_above_hull, packaged_hull
from .novelty import novel_structures, unique_structures
from .relaxation import RelaxationFailure, RelaxationSettings, Relaxed, relax_samples
from .sun import METASTABLE, STABLE, sun_metrics

INSTALL_HINT = "pip install 'wyckoff-hf[stability]'"
SKIP_MESSAGE = f"skipped: the optional package chgnet is not installed ({INSTALL_HINT} to relax with CHGNet)"
STABILITY_DIR = "stability"
RELAXED_DIR = "relaxed"
RELAXATIONS_FILE = "relaxations.csv"
FAILURES_FILE = "failures.csv"
HISTOGRAM_PNG = "energy_above_hull.png"
SUN_KEYS = ("stable", "metastable", "unique", "novel", "sun", "ssun")
# eV/atom: no crystal of the MP data has a formation energy below -4.47 (ErF3); a CHGNet relaxation that ends below
# this has collapsed (one generated U-Si-Ru crystal relaxed to -47.9 eV/atom) and is a failure, not a new hull phase
COLLAPSED_FORMATION_ENERGY = -5.0


def chgnet_available() -> bool:
    return importlib.util.find_spec("chgnet") is not None


def require_chgnet() -> None:
    """Fail before any work when stability was asked for and chgnet is missing."""
    if not chgnet_available():
        raise ValueError(f"stability metrics need the optional package chgnet: {INSTALL_HINT}")


@dataclass
class HullPlacement:
    """One relaxed sample on the hull."""

    relaxed: Relaxed
    formation_energy_per_atom: float
    e_above_hull: float
    covered: bool  # the hull data has a point at exactly this composition


def place_on_hull(relaxed: Sequence[Relaxed], hull: ConvexHullReference
                  ) -> tuple[list[HullPlacement], list[RelaxationFailure]]:
    """Energy above hull of every relaxed sample; samples with an element outside the fit, or whose relaxation
    collapsed (``COLLAPSED_FORMATION_ENERGY``), become failures."""
    placed, failures = [], []
    for result in relaxed:
        composition = result.structure.composition
        try:
            formation = hull.formation_energy_per_atom(composition, result.energy)
        except MissingReferenceError as err:
            failures.append(RelaxationFailure(result.index, f"hull: {err}"))
            continue
        if formation < COLLAPSED_FORMATION_ENERGY:
            failures.append(RelaxationFailure(
                result.index, f"collapsed: CHGNet formation energy of {composition.reduced_formula} "
                              f"{formation:.2f} eV/atom, below {COLLAPSED_FORMATION_ENERGY} (no known crystal's)"))
            continue
        placed.append(HullPlacement(result, formation, hull.e_above_hull(composition, formation),
                                    hull.covers(composition)))
    return placed, failures


def write_relaxations(out_dir: Path, placed: Sequence[HullPlacement], failures: Sequence[RelaxationFailure]) -> None:
    """``relaxed/{index:06d}.cif``, ``relaxations.csv`` (energies, groups, steps) and ``failures.csv``."""
    (out_dir / RELAXED_DIR).mkdir(parents=True, exist_ok=True)
    with open(out_dir / RELAXATIONS_FILE, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["index", "trial", "energy_per_atom", "formation_energy_per_atom", "e_above_hull",
                         "composition_covered", "space_group_sampled", "space_group_relaxed", "steps",
                         "converged", "seconds", "trial_failures"])
        for p in placed:
            r = p.relaxed
            r.structure.to(filename=str(out_dir / RELAXED_DIR / f"{r.index:06d}.cif"))
            writer.writerow([r.index, r.trial, f"{r.energy_per_atom:.6f}", f"{p.formation_energy_per_atom:.6f}",
                             f"{p.e_above_hull:.6f}", p.covered, r.space_group_sampled, r.space_group_relaxed,
                             r.steps, r.converged, f"{r.seconds:.2f}", "; ".join(r.trial_failures)])
    with open(out_dir / FAILURES_FILE, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["index", "reason"])
        writer.writerows((failure.index, failure.reason) for failure in failures)


def plot_e_above_hull(values: Sequence[float], path: Path, threshold: float = METASTABLE) -> Path:
    """Histogram of the energies above hull (clipped to [-0.5, 2] eV/atom) with the 0 and S.U.N. thresholds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.hist(np.clip(values, -0.5, 2.0), bins=np.linspace(-0.5, 2.0, 51), color="tab:blue")
    for x, label in ((STABLE, "hull"), (threshold, f"{threshold} eV/atom")):
        ax.axvline(x, color="k", linestyle="--" if x else "-", linewidth=1, label=label)
    ax.set(xlabel="CHGNet energy above the MP-data hull (eV/atom, clipped to [-0.5, 2])", ylabel="samples")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def stability_metrics(representations: Sequence[WyckoffRepresentation | None],
                      known_structures: Sequence[Structure | str], known_formulas: Sequence[str] | None = None,
                      out_dir: str | Path | None = None, settings: RelaxationSettings | None = None,
                      num_workers: int | None = 1, hull: ConvexHullReference | None = None,
                      relaxation_cache: str | Path | None = None) -> dict[str, object]:
    """Relax the valid samples, place them on the hull and compute stability, S.U.N. and S.S.U.N.

    ``representations`` are index-aligned with the samples (``None`` for an invalid one, skipped);
    ``known_structures`` (Structures or CIFs; train and validation, with ``known_formulas`` to avoid parsing
    them all) decide novelty. With ``out_dir``, relaxed CIFs, ``relaxations.csv``, ``failures.csv`` and the
    histogram are written there. Fractions are over the samples that got an energy above hull.
    ``relaxation_cache`` is a folder that keeps every finished relaxation, so that a rerun resumes.
    Without chgnet the result is ``{"skipped": SKIP_MESSAGE}``.
    """
    if not chgnet_available():
        return {"skipped": SKIP_MESSAGE}
    settings = settings or RelaxationSettings()
    # the packaged hull travels to pool workers by name, not pickled with its 10⁴ points
    hull, e_above_hull = ((packaged_hull(), packaged_e_above_hull) if hull is None
                          else (hull, hull.chgnet_e_above_hull))
    indices = [i for i, rep in enumerate(representations) if rep is not None]
    results = relax_samples([representations[i] for i in indices], settings, indices, num_workers,
                            e_above_hull if settings.refine_below is not None else None, relaxation_cache)
    failures = [r for r in results if isinstance(r, RelaxationFailure)]
    placed, hull_failures = place_on_hull([r for r in results if isinstance(r, Relaxed)], hull)
    failures += hull_failures

    structures = [p.relaxed.structure for p in placed]
    above = [p.e_above_hull for p in placed]
    novel, unreadable = novel_structures(structures, known_structures, known_formulas, num_workers)
    fractions = sun_metrics(above, unique_structures(structures, num_workers), novel,
                            [p.relaxed.space_group_relaxed for p in placed])
    metrics: dict[str, object] = {key: fractions[key]["value"] for key in SUN_KEYS}
    metrics.update({
        "num_samples": len(indices), "num_with_energy": len(placed), "num_failed": len(failures),
        "e_above_hull_mean": float(np.mean(above)) if above else None,
        "e_above_hull_median": float(np.median(above)) if above else None,
        "space_group_kept": float(np.mean([p.relaxed.space_group_kept for p in placed])) if placed else None,
        "hull_composition_covered": float(np.mean([p.covered for p in placed])) if placed else None,
        "converged": float(np.mean([p.relaxed.converged for p in placed])) if placed else None,
        "intervals": {key: fractions[key]["interval"] for key in SUN_KEYS},
        "threshold_ev_per_atom": fractions["threshold_ev_per_atom"],
        "reference_fit": hull.fit,
        "settings": asdict(settings),
        "failures": {str(f.index): f.reason for f in sorted(failures, key=lambda f: f.index)},
        "unreadable_known_cifs": unreadable,
    })
    if out_dir is not None:
        out = Path(out_dir)
        write_relaxations(out, placed, failures)
        metrics["histogram"] = plot_e_above_hull(above, out / HISTOGRAM_PNG).name
    return metrics


def stability_notes(metrics: dict[str, object]) -> list[str]:
    """Report lines: the protocol, the intervals and the limits of the proxy."""
    if "skipped" in metrics:
        return [f"- Stability: {metrics['skipped']}"]
    intervals = metrics["intervals"]
    settings, fit = metrics["settings"], metrics["reference_fit"]
    refined = settings.get("screen_refine", 1)  # reports written before the option are one-trial refinements
    ranges = ", ".join(f"{key} [{100 * interval[0]:.1f}, {100 * interval[1]:.1f}] %"
                       for key, interval in intervals.items() if interval is not None)
    return [
        f"- Stability: {metrics['num_with_energy']} of {metrics['num_samples']} Wyckoff-valid samples got an "
        f"energy ({metrics['num_failed']} failures, reasons in {STABILITY_DIR}/{FAILURES_FILE}); "
        f"{settings['num_trials']} pyxtal trial(s) each relaxed with CHGNet "
        f"({'primitive cell, ' if settings.get('primitive_cell') else ''}"
        f"{'symmetry fixed, ' if settings['fix_symmetry'] else ''}fmax {settings['fmax']} eV/Å, "
        f"≤ {settings['max_steps']} steps), lowest energy kept"
        + (f" (screening: every trial to fmax {settings['screen_fmax']} eV/Å first, only the lowest"
           f"{'' if refined == 1 else f' {refined}'} refined)." if settings["screen_fmax"] else "."),
        f"- 95 % Wilson intervals: {ranges}.",
        f"- Energy above hull is a proxy: CHGNet energies on MP's scale through fitted element references "
        f"(held-out MAE {fit.get('held_out_mae_ev_per_atom', 'n/a')} eV/atom) against a hull of MP points from "
        "the shared data, exact only at covered compositions and a lower bound elsewhere.",
    ]
