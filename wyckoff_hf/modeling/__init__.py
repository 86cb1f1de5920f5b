"""The neural side (transformers 5 models): the WyckoffTransformer config, encoder, cascade generator and property
predictor, and the cascade's sampler (``sampling_wyckoff_transformer``) with its constraints."""

from .composition_moves import CompositionMoves
from .configuration_wyckoff_transformer import SAMPLED_FIELDS, WyckoffTransformerConfig
from .modeling_wyckoff_transformer import (
    CrystalGenerationModelOutput,
    WyckoffTransformerForCrystalGeneration,
    WyckoffTransformerForPropertyPrediction,
    WyckoffTransformerModel,
    WyckoffTransformerPreTrainedModel,
)
from .sampling_wyckoff_transformer import (
    DEFAULT_GENERATION_BATCH_SIZE,
    DecodedCrystals,
    GeneratedCrystals,
    WyckoffGenerationMixin,
)

__all__ = [
    "DEFAULT_GENERATION_BATCH_SIZE",
    "SAMPLED_FIELDS",
    "CompositionMoves",
    "CrystalGenerationModelOutput",
    "DecodedCrystals",
    "GeneratedCrystals",
    "WyckoffGenerationMixin",
    "WyckoffTransformerConfig",
    "WyckoffTransformerForCrystalGeneration",
    "WyckoffTransformerForPropertyPrediction",
    "WyckoffTransformerModel",
    "WyckoffTransformerPreTrainedModel",
]
