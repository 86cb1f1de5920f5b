"""Property prediction from the Wyckoff representation: load a property model and predict crystals (``predict``),
read what ``wyckoff-hf predict`` is given (``inputs``), the ``crystal-property-prediction`` pipeline task
(``pipeline``) and the composition-family baseline (``baseline``). Names are imported on first use."""

from ..utils.lazy import lazy_exports

_EXPORTS = {
    **dict.fromkeys(("CompositionFamilyBaseline", "LEVELS"), ".baseline"),
    **dict.fromkeys(("NamedCrystal", "read_inputs"), ".inputs"),
    **dict.fromkeys(("PropertyPredictor", "output_columns", "predict_properties", "predict_table", "summarise"),
                    ".predict"),
    **dict.fromkeys(("TASK", "PropertyPredictionPipeline"), ".pipeline"),
}
__getattr__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
