"""wyckoff-hf: WyckoffTransformer, an autoregressive generative model of symmetric crystals.

Importing the package registers the config, models and tokenizer with transformers' Auto classes and the
``crystal-generation`` pipeline task.
"""

from .modeling import WyckoffTransformerConfig, WyckoffTransformerForCrystalGeneration, WyckoffTransformerModel
from .registration import register_auto_classes
from .tokenization import WyckoffRepresentation, WyckoffSite, WyckoffTokenizer

__version__ = "0.1.0"

register_auto_classes()

__all__ = [
    "WyckoffRepresentation",
    "WyckoffSite",
    "WyckoffTokenizer",
    "WyckoffTransformerConfig",
    "WyckoffTransformerForCrystalGeneration",
    "WyckoffTransformerModel",
    "__version__",
    "register_auto_classes",
]
