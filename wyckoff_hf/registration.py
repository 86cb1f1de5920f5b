"""Make the WyckoffTransformer known to transformers' auto classes (in-process, and in saved checkpoints).

In-process, ``register_auto_classes()`` maps the ``wyckoff_transformer`` model type to our classes:
``AutoConfig`` → ``WyckoffTransformerConfig``, ``AutoModel`` → the bare encoder ``WyckoffTransformerModel``,
``AutoModelForPreTraining`` → ``WyckoffTransformerForCrystalGeneration`` (the encoder with its training
heads, which is also the sampler), ``AutoModelForSequenceClassification`` →
``WyckoffTransformerForPropertyPrediction`` (properties from the Wyckoff representation, regression or classes),
``AutoTokenizer`` → ``WyckoffTokenizer``, and the pipeline tasks ``crystal-generation`` →
``CrystalGenerationPipeline`` and ``crystal-property-prediction`` → ``PropertyPredictionPipeline``.

For ``trust_remote_code`` it also marks the classes with ``register_for_auto_class``, so that
``save_pretrained`` copies their code next to the weights and writes ``auto_map``: the model saves the two
self-contained modeling files into ``config.json``'s map (``AutoConfig``, ``AutoModel`` → the encoder,
``AutoModelForPreTraining`` → the generator, or ``AutoModelForSequenceClassification`` → the property
predictor), the tokenizer saves ``tokenization_wyckoff.py``, the sibling modules it imports and the JSON tables
they read, with ``auto_map`` in ``tokenizer_config.json`` (``AutoTokenizer``). Where ``wyckoff_hf`` is not
installed, a folder holding both then loads with its Auto classes and ``trust_remote_code=True``; ``.generate()``
returns id tensors that the remote tokenizer decodes to representations (pymatgen is needed only to read or
build 3D structures).
"""

from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForPreTraining,
    AutoModelForSequenceClassification,
    AutoTokenizer,
)
from transformers.pipelines import PIPELINE_REGISTRY

from .generation.pipeline import TASK, TASK_DEFAULTS, CrystalGenerationPipeline
from .modeling import (
    WyckoffTransformerConfig,
    WyckoffTransformerForCrystalGeneration,
    WyckoffTransformerForPropertyPrediction,
    WyckoffTransformerModel,
)
from .prediction.pipeline import TASK as PROPERTY_TASK
from .prediction.pipeline import PropertyPredictionPipeline
from .tokenization import WyckoffTokenizer


def register_auto_classes() -> None:
    """Register config, models, tokenizer and the pipeline task; safe to call more than once."""
    AutoConfig.register(WyckoffTransformerConfig.model_type, WyckoffTransformerConfig, exist_ok=True)
    AutoModel.register(WyckoffTransformerConfig, WyckoffTransformerModel, exist_ok=True)
    AutoModelForPreTraining.register(WyckoffTransformerConfig, WyckoffTransformerForCrystalGeneration,
                                     exist_ok=True)
    AutoModelForSequenceClassification.register(WyckoffTransformerConfig, WyckoffTransformerForPropertyPrediction,
                                                exist_ok=True)
    AutoTokenizer.register(WyckoffTransformerConfig, tokenizer_class=WyckoffTokenizer, exist_ok=True)
    WyckoffTransformerConfig.register_for_auto_class()
    WyckoffTransformerModel.register_for_auto_class("AutoModel")
    WyckoffTransformerForCrystalGeneration.register_for_auto_class("AutoModelForPreTraining")
    WyckoffTransformerForPropertyPrediction.register_for_auto_class("AutoModelForSequenceClassification")
    WyckoffTokenizer.register_for_auto_class("AutoTokenizer")
    if TASK not in PIPELINE_REGISTRY.supported_tasks:
        PIPELINE_REGISTRY.register_pipeline(TASK, pipeline_class=CrystalGenerationPipeline,
                                            pt_model=WyckoffTransformerForCrystalGeneration, default=TASK_DEFAULTS)
    if PROPERTY_TASK not in PIPELINE_REGISTRY.supported_tasks:
        PIPELINE_REGISTRY.register_pipeline(PROPERTY_TASK, pipeline_class=PropertyPredictionPipeline,
                                            pt_model=AutoModelForSequenceClassification)
