"""``evaluate``: every metric for one sample set in one call, written as metrics.json, report.md and PNGs."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from datasets import DatasetDict

from ..data import load_wyckoff_dataset
from .distributions import wasserstein_distances
from .novelty import novelty_metrics
from .reference import ReferenceSet
from .samples import GeneratedSamples, load_samples, realise_missing
from .stability import stability_metrics
from .statistics import plot_distributions
from .symmetry import plot_space_groups, symmetry_metrics
from .validity import validity_metrics

METRICS_FILE = "metrics.json"
REPORT_FILE = "report.md"
DISTRIBUTIONS_PNG = "distributions.png"
SPACE_GROUPS_PNG = "space_groups.png"

# (section, key, label, what the fraction or distance is taken over) — the rows of report.md, in order.
REPORT_ROWS = (
    ("validity", "wyckoff_valid", "Wyckoff validity", "samples"),
    ("validity", "realised", "Realised in 3D (pyxtal)", "Wyckoff-valid samples"),
    ("validity", "structural_valid", "Structural validity", "realised structures"),
    ("validity", "compositional_valid", "Compositional validity (SMACT)", "Wyckoff-valid samples"),
    ("validity", "valid", "Valid (structural and compositional)", "realised structures"),
    ("novelty", "wyckoff_unique", "Uniqueness, Wyckoff", "Wyckoff-valid samples"),
    ("novelty", "wyckoff_novel", "Novelty, Wyckoff", "Wyckoff-valid samples vs train"),
    ("novelty", "template_novel", "Novelty, template", "Wyckoff-valid samples vs train"),
    ("novelty", "structure_unique", "Uniqueness, structure", "realised structures"),
    ("novelty", "structure_novel", "Novelty, structure", "realised structures vs train"),
    ("symmetry", "p1_fraction", "P1 fraction", "Wyckoff-valid samples"),
    ("symmetry", "p1_fraction_reference", "P1 fraction, reference", "test"),
    ("symmetry", "space_group_tv", "Space-group TV distance", "vs test"),
    ("symmetry", "crystal_system_tv", "Crystal-system TV distance", "vs test"),
    ("distributions", "wasserstein_num_elements", "Wasserstein, #elements", "vs test"),
    ("distributions", "wasserstein_num_sites", "Wasserstein, #Wyckoff sites", "vs test"),
    ("distributions", "wasserstein_num_atoms", "Wasserstein, #atoms (conventional cell)", "vs test"),
    ("stability", "energy_per_atom_mean", "CHGNet energy, mean (eV/atom)", "realised structures"),
    ("stability", "energy_per_atom_reference_mean", "CHGNet energy, reference mean (eV/atom)", "test"),
    ("stability", "energy_wasserstein", "Wasserstein, CHGNet energy (eV/atom)", "vs test"),
    ("stability", "energy_above_reference_mean", "Energy above lowest same-formula test (eV/atom)",
     "realised structures with a test formula"),
)
FRACTIONS = {"wyckoff_valid", "realised", "structural_valid", "compositional_valid", "valid", "wyckoff_unique",
             "wyckoff_novel", "template_novel", "structure_unique", "structure_novel", "p1_fraction",
             "p1_fraction_reference"}


def _reference(reference: ReferenceSet | DatasetDict | str | os.PathLike, max_rows: int | None) -> ReferenceSet:
    if isinstance(reference, ReferenceSet):
        return reference
    if not isinstance(reference, DatasetDict):
        reference = load_wyckoff_dataset(reference)
    return ReferenceSet.from_dataset(reference, max_rows)


def evaluate(samples: GeneratedSamples | str | os.PathLike,
             reference: ReferenceSet | DatasetDict | str | os.PathLike,
             out_dir: str | os.PathLike, num_workers: int | None = None, structure_metrics: bool = True,
             realise: bool = False, max_reference: int | None = None, max_attempts: int = 10,
             seed: int = 0, realise_timeout: float = 10.0) -> dict[str, Any]:
    """Compute every metric family, write ``metrics.json``, ``report.md`` and the PNGs, return the metrics.

    ``samples``: a samples folder / ``.jsonl`` (see ``load_samples``) or ``GeneratedSamples``.
    ``reference``: a ``ReferenceSet``, a prepared ``DatasetDict`` or its folder / Hub id (train split for
    novelty, test split for distributions; ``max_reference`` rows of each at most). ``realise`` runs
    pyxtal (``max_attempts`` tries and ``realise_timeout`` seconds per sample, seed ``seed + index``)
    for valid samples without a structure.
    ``structure_metrics=False`` keeps only the Wyckoff-level metrics (no CIF is read or matched).
    Structure work runs on ``num_workers`` processes (all cores by default).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    seconds: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        seconds[name] = round(now - clock, 3)
        clock = now

    if not isinstance(samples, GeneratedSamples):
        samples = load_samples(samples, num_workers, read_structures=structure_metrics)
    ref = _reference(reference, max_reference)
    lap("loading")
    if structure_metrics and realise:
        realise_missing(samples, num_workers, max_attempts, seed, realise_timeout)
        lap("realisation")
    valid = samples.valid
    metrics: dict[str, Any] = {"validity": validity_metrics(samples, structure_metrics)}
    lap("validity")
    metrics["novelty"] = novelty_metrics(samples, ref.train, ref.train_cifs if structure_metrics else None,
                                         ref.train_formulas, num_workers)
    lap("novelty")
    metrics["symmetry"] = symmetry_metrics(valid, ref.test)
    metrics["distributions"] = wasserstein_distances(valid, ref.test)
    lap("symmetry_and_distributions")
    if structure_metrics:
        metrics["stability"] = stability_metrics(samples.realised, ref.test_cifs)
        lap("stability")
    metrics["reference"] = {"num_train": len(ref.train), "num_test": len(ref.test), "skipped_rows": ref.skipped}
    metrics["failures"] = {
        "invalid_samples": {str(i): reason for i, reason in sorted(samples.errors.items())},
        "missing_structures": {
            str(i): samples.structure_errors.get(i, "no CIF in structures/ (pass --realise to realise it)")
            for i, rep in enumerate(samples.representations) if rep is not None and i not in samples.structures
        } if structure_metrics else {},
    }
    groups = {"generated": valid, "test": ref.test}
    metrics["figures"] = [plot_distributions(groups, out / DISTRIBUTIONS_PNG).name,
                          plot_space_groups(groups, out / SPACE_GROUPS_PNG).name]
    lap("figures")
    metrics["seconds"] = seconds
    (out / METRICS_FILE).write_text(json.dumps(metrics, indent=2, default=str) + "\n")
    (out / REPORT_FILE).write_text(markdown_report(metrics))
    return metrics


def _format(key: str, value: Any) -> str:
    if value is None:
        return "n/a"
    if key in FRACTIONS:
        return f"{100 * value:.1f} %"
    return f"{value:.3f}"


def metrics_table(metrics: dict[str, Any]) -> str:
    """The literature-style markdown table of the headline metrics (also used by the model card)."""
    validity = metrics["validity"]
    lines = [
        f"{validity['num_samples']} samples, {validity['num_wyckoff_valid']} Wyckoff-valid; reference: "
        f"{metrics['reference']['num_train']} train and {metrics['reference']['num_test']} test rows.",
        "",
        "| Metric | Value | Over |",
        "|---|---:|---|",
    ]
    lines += [f"| {label} | {_format(key, metrics[section][key])} | {over} |"
              for section, key, label, over in REPORT_ROWS if key in metrics.get(section, {})]
    return "\n".join(lines)


def markdown_report(metrics: dict[str, Any]) -> str:
    """The metrics as a literature-style markdown table, plus skips, failures and figures."""
    lines = ["# Evaluation report", "", metrics_table(metrics)]
    systems = metrics["symmetry"]["crystal_systems"]
    reference_systems = metrics["symmetry"]["crystal_systems_reference"]
    lines += ["", "## Crystal systems", "", "| Crystal system | Generated | Test |", "|---|---:|---:|"]
    lines += [f"| {name} | {100 * systems[name]:.1f} % | {100 * reference_systems[name]:.1f} % |"
              for name in systems]
    notes = []
    if "skipped" in metrics.get("stability", {}):
        notes.append(f"- Stability: {metrics['stability']['skipped']}")
    if "stability" not in metrics:
        notes.append("- Structure-level metrics and stability: not computed (structure metrics disabled).")
    failures = metrics["failures"]
    notes.append(f"- Invalid samples: {len(failures['invalid_samples'])}; samples without a structure: "
                 f"{len(failures['missing_structures'])}; skipped reference rows: "
                 f"{len(metrics['reference']['skipped_rows'])}; unreadable reference CIFs: "
                 f"{len(metrics['novelty'].get('unreadable_reference_cifs', []))} (reasons in {METRICS_FILE}).")
    lines += ["", "## Notes", "", *notes, "", "## Figures", ""]
    lines += [f"![{name}]({name})" for name in metrics["figures"]]
    return "\n".join(lines) + "\n"
