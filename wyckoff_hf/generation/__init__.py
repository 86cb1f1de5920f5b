"""Generation as jobs: load a checkpoint, sample, realise in 3D, write files; crystal structure prediction from a
composition; the ``crystal-generation`` pipeline task. Names are imported on first use (the pipeline needs
transformers)."""

from ..utils.lazy import lazy_exports

_EXPORTS = {
    "DistinctCrystals": ".csp",
    "StructurePrediction": ".csp",
    "formula_unit": ".csp",
    "predict_structures": ".csp",
    "SearchResults": ".search",
    "search_structures": ".search",
    "DEFAULT_MODEL": ".jobs",
    "DEFAULT_SAMPLER": ".jobs",
    "PRETRAINED": ".jobs",
    "load_generator": ".jobs",
    "sample_chunks": ".jobs",
    "sample_crystals": ".jobs",
    "ManifestError": ".output",
    "RealisationFailure": ".output",
    "SampleWriter": ".output",
    "prepare_output_dir": ".output",
    "read_structure": ".output",
    "write_samples": ".output",
    "write_structure": ".output",
    "RealisationSettings": ".realisation",
    "realise_folder": ".realisation",
    "realise_structures": ".realisation",
    "TASK": ".pipeline",
    "CrystalGenerationPipeline": ".pipeline",
}
__getattr__ = lazy_exports(__name__, _EXPORTS)
__all__ = list(_EXPORTS)
