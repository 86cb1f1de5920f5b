"""``pipeline("crystal-property-prediction", model=...)``: a property model as a transformers pipeline task.

    predictor = pipeline("crystal-property-prediction", model="path/or/hub-id")
    predictor("nacl.cif")  # → {"representation": ..., "text": "Fm-3m (225): Na 4a, Cl 4b", "band_gap": 4.1}
    predictor([structure, representation, cif_text])  # → a list of such dicts, predicted in batches

A crystal is a ``WyckoffRepresentation``, a pymatgen ``Structure``, CIF text or a CIF path (analysed with the
model's tokenizer settings). The prediction keys are ``wyckoff_hf.prediction.predict.output_columns``: the
property names of a regression model, ``p_{class}`` and ``label`` of a classifier.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..generation.pipeline import WyckoffPipeline
from .predict import DEFAULT_BATCH_SIZE, predict_properties

TASK = "crystal-property-prediction"


@dataclass(frozen=True)
class _Crystals:
    """The crystals of one call, handed to the Pipeline machinery as one input: a list would be split into one
    model call per crystal, while predicting them together batches them."""

    items: list[Any]


class PropertyPredictionPipeline(WyckoffPipeline):
    """Predicts properties of crystals with a ``WyckoffTransformerForPropertyPrediction``."""

    def _sanitize_parameters(self, prediction_batch_size: int | None = None, **kwargs: Any) -> tuple[dict, dict, dict]:
        forward = {} if prediction_batch_size is None else {"batch_size": prediction_batch_size}
        return {}, forward, {}

    def __call__(self, inputs: Any, **kwargs: Any) -> dict[str, Any] | list[dict[str, Any]]:
        """One crystal → one dict; a list or tuple of crystals → a list of dicts (``batch_size``: crystals per
        forward pass). A crystal that cannot be analysed raises a ``WyckoffError`` naming its index."""
        # only a list or tuple is a batch: a pymatgen Structure is itself a Sequence (of sites)
        single = not isinstance(inputs, list | tuple)
        kwargs["prediction_batch_size"] = kwargs.pop("batch_size", None)
        outputs = super().__call__(_Crystals([inputs] if single else list(inputs)), **kwargs)
        return outputs[0] if single else outputs

    def preprocess(self, inputs: _Crystals) -> dict[str, Any]:
        representations = []
        for index, item in enumerate(inputs.items):
            try:
                representations.append(self.wyckoff_tokenizer.to_representation(item))
            except ValueError as err:  # WyckoffError, or a bad tolerance
                raise type(err)(f"item {index}: {err}") from err
        return {"representations": representations}

    def _forward(self, model_inputs: dict[str, Any], batch_size: int = DEFAULT_BATCH_SIZE) -> dict[str, Any]:
        representations = model_inputs["representations"]
        return {"representations": representations,
                "predictions": predict_properties(self.model, self.wyckoff_tokenizer, representations, batch_size)}

    def postprocess(self, model_outputs: dict[str, Any]) -> list[dict[str, Any]]:
        return [{"representation": representation, "text": str(representation), **prediction}
                for representation, prediction in zip(model_outputs["representations"], model_outputs["predictions"],
                                                      strict=True)]
