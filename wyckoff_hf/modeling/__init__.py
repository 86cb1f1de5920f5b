"""The neural side: the WyckoffTransformer config, encoder and cascade generator (transformers 5 models)."""

from .configuration_wyckoff_transformer import WyckoffTransformerConfig
from .modeling_wyckoff_transformer import (
    CrystalGenerationModelOutput,
    GeneratedCrystals,
    WyckoffTransformerForCrystalGeneration,
    WyckoffTransformerModel,
    WyckoffTransformerPreTrainedModel,
)

__all__ = [
    "CrystalGenerationModelOutput",
    "GeneratedCrystals",
    "WyckoffTransformerConfig",
    "WyckoffTransformerForCrystalGeneration",
    "WyckoffTransformerModel",
    "WyckoffTransformerPreTrainedModel",
]
