"""Evaluation of generated crystals: the standard metrics of crystal generative models, one module per family.

``evaluate(samples, reference, out_dir)`` runs them all and writes metrics.json, report.md and PNGs;
the functions below are importable one by one for notebooks and take plain Python objects.
"""

from .distributions import wasserstein_distances
from .novelty import (
    MATCHER_TOLERANCES,
    canonical,
    novel_representations,
    novel_structures,
    novel_templates,
    novelty_metrics,
    structure_uniqueness,
    wyckoff_uniqueness,
)
from .reference import ReferenceSet
from .report import evaluate, markdown_report, metrics_table
from .samples import GeneratedSamples, load_samples, realise_missing
from .stability import SKIP_MESSAGE, chgnet_available, stability_metrics
from .symmetry import distribution, p1_fraction, plot_space_groups, symmetry_metrics, total_variation_distance
from .validity import composition_validity, fraction, structure_validity, validity_metrics

__all__ = [
    "MATCHER_TOLERANCES",
    "SKIP_MESSAGE",
    "GeneratedSamples",
    "ReferenceSet",
    "canonical",
    "chgnet_available",
    "composition_validity",
    "distribution",
    "evaluate",
    "fraction",
    "load_samples",
    "markdown_report",
    "metrics_table",
    "novel_representations",
    "novel_structures",
    "novel_templates",
    "novelty_metrics",
    "p1_fraction",
    "plot_space_groups",
    "realise_missing",
    "stability_metrics",
    "structure_uniqueness",
    "structure_validity",
    "symmetry_metrics",
    "total_variation_distance",
    "validity_metrics",
    "wasserstein_distances",
    "wyckoff_uniqueness",
]
