"""wyckoff-hf: WyckoffTransformer, an autoregressive generative model of symmetric crystals.

Importing the package registers the config, models and tokenizer with transformers' Auto classes and the
``crystal-generation`` pipeline task, as soon as transformers is imported (at once, if it already is): the
package itself imports nothing heavy, so the ``wyckoff-hf`` command answers ``--help`` at once, and its
names (below) are imported on first use.
"""

from .utils.lazy import lazy_exports, when_imported

__version__ = "0.1.0"

_EXPORTS = {
    "WyckoffRepresentation": ".tokenization",
    "WyckoffSite": ".tokenization",
    "WyckoffTokenizer": ".tokenization",
    "WyckoffTransformerConfig": ".modeling",
    "WyckoffTransformerForCrystalGeneration": ".modeling",
    "WyckoffTransformerForPropertyPrediction": ".modeling",
    "WyckoffTransformerModel": ".modeling",
    "register_auto_classes": ".registration",
}
__getattr__ = lazy_exports(__name__, _EXPORTS)
__all__ = [*_EXPORTS, "__version__"]


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})


def _register() -> None:
    from .registration import register_auto_classes

    register_auto_classes()


when_imported(__name__, "transformers", _register)
