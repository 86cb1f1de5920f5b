"""Generation as jobs: load a checkpoint, sample, realise in 3D, write files; temperature calibration; the
``crystal-generation`` pipeline task."""

from .calibration import CalibrationPoint, calibrate_checkpoint, calibrate_temperature, distribution_distance
from .jobs import DEFAULT_MODEL, RealisationFailure, load_generator, realise_structures, write_samples
from .pipeline import TASK, CrystalGenerationPipeline

__all__ = [
    "DEFAULT_MODEL",
    "TASK",
    "CalibrationPoint",
    "CrystalGenerationPipeline",
    "RealisationFailure",
    "calibrate_checkpoint",
    "calibrate_temperature",
    "distribution_distance",
    "load_generator",
    "realise_structures",
    "write_samples",
]
