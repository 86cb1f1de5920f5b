"""``evaluate``: every metric for one sample set in one call, written as metrics.json, report.md and PNGs."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from datasets import DatasetDict

from ..data import load_wyckoff_dataset
from ..generation.realisation import RealisationSettings
from .distributions import wasserstein_distances
from .novelty import novelty_metrics
from .reference import ReferenceSet
from .relaxation import RelaxationCache, RelaxationSettings
from .samples import GeneratedSamples, load_samples, realise_missing
from .stability import HISTOGRAM_PNG, STABILITY_DIR, require_chgnet, stability_metrics, stability_notes
from .statistics import plot_distributions
from .symmetry import plot_space_groups, symmetry_metrics
from .validity import SMACT_TIMEOUT, validity_metrics

METRICS_FILE = "metrics.json"
STRUCTURES_COMPUTED = "computed"
STRUCTURES_DISABLED = "not computed (structure metrics disabled)"
STRUCTURES_NOT_REALISED = "not measured (the samples have no structures/; pass --realise to realise them)"
REPORT_FILE = "report.md"
DISTRIBUTIONS_PNG = "distributions.png"
SPACE_GROUPS_PNG = "space_groups.png"

# (section, key, label, what the fraction or distance is taken over) — the rows of report.md, in order.
REPORT_ROWS = (
    ("validity", "wyckoff_valid", "Wyckoff validity", "samples"),
    ("validity", "realised", "Realised in 3D (pyxtal)", "Wyckoff-valid samples"),
    ("validity", "symmetry_failed", "Realisation read back as another crystal", "Wyckoff-valid samples"),
    ("validity", "structural_valid", "Structural validity", "realised structures"),
    ("validity", "compositional_valid", "Compositional validity (SMACT)", "Wyckoff-valid samples SMACT decided"),
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
    ("stability", "stable", "Stable: on or below the hull (CHGNet proxy)", "relaxed samples"),
    ("stability", "metastable", "Within 0.08 eV/atom of the hull (CHGNet proxy)", "relaxed samples"),
    ("stability", "sun", "S.U.N. (stable, unique, novel)", "relaxed samples, novel vs train + validation"),
    ("stability", "ssun", "S.S.U.N. (S.U.N. and not P1)", "relaxed samples, novel vs train + validation"),
    ("stability", "e_above_hull_median", "Energy above hull, median (eV/atom)", "relaxed samples"),
    ("stability", "space_group_kept", "Sampled space group kept by relaxation", "relaxed samples"),
    ("stability", "hull_composition_covered", "Composition on the MP-data hull (proxy exact)", "relaxed samples"),
)
FRACTIONS = {"wyckoff_valid", "realised", "symmetry_failed", "structural_valid", "compositional_valid", "valid",
             "wyckoff_unique", "wyckoff_novel", "template_novel", "structure_unique", "structure_novel", "p1_fraction",
             "p1_fraction_reference", "stable", "metastable", "sun", "ssun", "space_group_kept",
             "hull_composition_covered"}


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
             seed: int = 0, realise_timeout: float = 60.0,
             smact_timeout: float | None = SMACT_TIMEOUT,
             stability: RelaxationSettings | None = None,
             relaxation_cache: str | os.PathLike | None = None) -> dict[str, Any]:
    """Compute every metric family, write ``metrics.json``, ``report.md`` and the PNGs, return the metrics.

    ``samples``: a samples folder / ``.jsonl`` (see ``load_samples``) or ``GeneratedSamples``.
    ``reference``: a ``ReferenceSet``, a prepared ``DatasetDict`` or its folder / Hub id (train split for
    novelty, test split for distributions; ``max_reference`` rows of each at most). ``realise`` runs
    pyxtal (``max_attempts`` tries, ``realise_timeout`` seconds as a safety net, seed ``seed + index``)
    for valid samples without a structure. Samples that were never realised (no ``structures/``, no
    ``realise``) get Wyckoff-level metrics and ``realised: None``: not measured, rather than 0 %.
    ``structure_metrics=False`` keeps only the Wyckoff-level metrics (no CIF is read or matched).
    SMACT gets ``smact_timeout`` seconds per formula. Structure work runs on ``num_workers`` processes.
    ``stability`` (a relaxation protocol; needs chgnet) adds CHGNet relaxation, energy above hull, S.U.N.
    and S.S.U.N. of the Wyckoff-valid samples (``stability.stability_metrics``; files under ``stability/``);
    ``relaxation_cache`` keeps each finished relaxation in that folder, so that a rerun resumes.
    """
    if stability is not None:
        require_chgnet()
    if relaxation_cache is not None:
        RelaxationCache(relaxation_cache)  # a bad folder fails now, not after the other metrics
    if max_reference is not None and max_reference < 1:
        raise ValueError(f"max_reference must be at least 1, got {max_reference}")
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
        realise_missing(samples, num_workers, RealisationSettings(seed, max_attempts, realise_timeout))
        lap("realisation")
    valid = samples.valid
    metrics: dict[str, Any] = {"validity": validity_metrics(samples, structure_metrics, smact_timeout)}
    metrics["structure_metrics"] = (STRUCTURES_DISABLED if not structure_metrics else
                                    STRUCTURES_COMPUTED if samples.has_structures else STRUCTURES_NOT_REALISED)
    structure_metrics = metrics["structure_metrics"] == STRUCTURES_COMPUTED
    lap("validity")
    metrics["novelty"] = novelty_metrics(samples, ref.train, ref.train_cifs if structure_metrics else None,
                                         ref.train_formulas, num_workers)
    lap("novelty")
    metrics["symmetry"] = symmetry_metrics(valid, ref.test)
    metrics["distributions"] = wasserstein_distances(valid, ref.test)
    lap("symmetry_and_distributions")
    if stability is not None:
        metrics["stability"] = stability_metrics(samples.representations, ref.known_cifs, ref.known_formulas,
                                                 out / STABILITY_DIR, stability, num_workers,
                                                 relaxation_cache=relaxation_cache)
        lap("stability")
    metrics["reference"] = {"num_train": len(ref.train), "num_validation": len(ref.validation),
                           "num_test": len(ref.test), "skipped_rows": ref.skipped}
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
    if "histogram" in metrics.get("stability", {}):
        metrics["figures"].append(f"{STABILITY_DIR}/{HISTOGRAM_PNG}")
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


def metrics_table(metrics: dict[str, Any], sections: Sequence[str] | None = None) -> str:
    """The literature-style markdown table of the headline metrics (also used by the model card), of every section
    of ``metrics`` or of ``sections`` only."""
    validity = metrics["validity"]
    lines = [
        f"{validity['num_samples']} samples, {validity['num_wyckoff_valid']} Wyckoff-valid; reference: "
        f"{metrics['reference']['num_train']} train and {metrics['reference']['num_test']} test rows.",
        "",
        "| Metric | Value | Over |",
        "|---|---:|---|",
    ]
    lines += [f"| {label} | {_format(key, metrics[section][key])} | {over} |"
              for section, key, label, over in REPORT_ROWS
              if key in metrics.get(section, {}) and (sections is None or section in sections)]
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
    if "stability" in metrics:
        notes += stability_notes(metrics["stability"])
    if metrics.get("structure_metrics", STRUCTURES_COMPUTED) != STRUCTURES_COMPUTED:
        notes.append(f"- Structure-level metrics: {metrics['structure_metrics']}.")
    if metrics["validity"].get("num_compositional_timeouts"):
        notes.append(f"- SMACT did not decide {metrics['validity']['num_compositional_timeouts']} Wyckoff-valid "
                     "sample(s) within its time limit; they are left out of compositional validity.")
    failures = metrics["failures"]
    notes.append(f"- Invalid samples: {len(failures['invalid_samples'])}; samples without a structure: "
                 f"{len(failures['missing_structures'])}; skipped reference rows: "
                 f"{len(metrics['reference']['skipped_rows'])}; unreadable reference CIFs: "
                 f"{len(metrics['novelty'].get('unreadable_reference_cifs', []))} (reasons in {METRICS_FILE}).")
    lines += ["", "## Notes", "", *notes, "", "## Figures", ""]
    lines += [f"![{name}]({name})" for name in metrics["figures"]]
    return "\n".join(lines) + "\n"
