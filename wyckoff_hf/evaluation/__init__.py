"""Evaluation of generated crystals: the standard metrics of crystal generative models, one module per family.

``evaluate(samples, reference, out_dir)`` runs them all and writes metrics.json, report.md and PNGs;
the functions below are importable one by one for notebooks and take plain Python objects (imported on
first use, so the command line stays quick to start).
"""

from ..utils.lazy import lazy_exports

_EXPORTS = {
    "wasserstein_distances": ".distributions",
    **dict.fromkeys(("MATCHER_TOLERANCES", "novel_representations", "novel_structures",
                     "novel_templates", "novelty_metrics", "structure_uniqueness", "wyckoff_uniqueness"), ".novelty"),
    "ReferenceSet": ".reference",
    **dict.fromkeys(("evaluate", "markdown_report", "metrics_table"), ".report"),
    **dict.fromkeys(("GeneratedSamples", "load_samples", "realise_missing"), ".samples"),
    **dict.fromkeys(("SKIP_MESSAGE", "chgnet_available", "stability_metrics", "stability_notes"), ".stability"),
    "ConvexHullReference": ".hull",
    **dict.fromkeys(("RelaxationSettings", "relax_samples"), ".relaxation"),
    "sun_metrics": ".sun",
    **dict.fromkeys(("distribution", "p1_fraction", "plot_space_groups", "symmetry_metrics",
                     "total_variation_distance"), ".symmetry"),
    **dict.fromkeys(("composition_validity", "fraction", "structure_validity", "validity_metrics"), ".validity"),
}
__getattr__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
