"""The neural side (transformers 5 models): the WyckoffTransformer config, encoder, cascade generator and property
predictor."""

from .configuration_wyckoff_transformer import WyckoffTransformerConfig
from .modeling_wyckoff_transformer import (
    CrystalGenerationModelOutput,
    GeneratedCrystals,
    WyckoffTransformerForCrystalGeneration,
    WyckoffTransformerForPropertyPrediction,
    WyckoffTransformerModel,
    WyckoffTransformerPreTrainedModel,
)

__all__ = [
    "CrystalGenerationModelOutput",
    "GeneratedCrystals",
    "WyckoffTransformerConfig",
    "WyckoffTransformerForCrystalGeneration",
    "WyckoffTransformerForPropertyPrediction",
    "WyckoffTransformerModel",
    "WyckoffTransformerPreTrainedModel",
]
