"""wyckoff-hf: WyckoffTransformer, an autoregressive generative model of symmetric crystals."""

from .tokenization import WyckoffRepresentation, WyckoffSite, WyckoffTokenizer

__version__ = "0.1.0"

__all__ = ["WyckoffRepresentation", "WyckoffSite", "WyckoffTokenizer", "__version__"]
