"""WyckoffTransformer: a permutation-aware encoder over Wyckoff sites, its cascade generator and its property head.

It imports torch, transformers and its sibling modules only (the configuration, and the sampler of
``sampling_wyckoff_transformer`` with its constraints), so that ``save_pretrained`` of a model registered for the
Auto classes can copy the set next to the weights and ``trust_remote_code=True`` works where ``wyckoff_hf`` is not
installed.

The autoregressive factorisation ("cascade"). A crystal is a sequence of sites (element, site symmetry,
enumeration) closed by STOP. To predict token i, tokens before i are given in full, token i has its
not-yet-predicted fields replaced by MASK and tokens after i are invisible (a key mask). The heads predict,
in order, the element (or STOP), then the site symmetry given the element, then the enumeration given
both, each from the encoder state of token i in its own encoder pass. There is no positional encoding
and attention is bidirectional, so the prefix is seen as a set of sites.

One mask builder (``WyckoffPositionTables.element_allowed`` / ``position_allowed``) restricts every prediction,
in the loss and in ``generate`` (``WyckoffGenerationMixin``) alike, so the probability ``forward`` assigns a
sequence is exactly the one ``generate`` samples it with at temperature 1, without STOP shifts (a checkpoint's
generation config may add both) and without masking options (see ``GeneratedCrystals.sequences_scores``):

- site symmetries and enumerations of the sample's group only, each 0-dof position held by at most one site;
- STOP never first, and the only choice once ``config.max_sites`` sites are placed;
- canonical order. The training data list sites in canonical order (Pauling electronegativity of the element,
  then Z, then the Wyckoff letter), so the data distribution puts no mass on any other order. Sampling enforces
  that order (an element ranks at or after the previous site's; a site of the same element takes a letter at or
  after the previous one) rather than re-sorting decoded samples: re-sorting would leave the model conditioning
  on prefixes it never saw in training, and the log-probability of a sample would not be the one ``forward``
  gives its decoded (canonical) sequence. For a model that fits the data the order masks remove no mass; for
  an imperfect one they renormalise the mass it leaks to out-of-order continuations. Not enforced: the choice
  among the equivalent labellings of the affine normalizer (``WyckoffRepresentation.from_sites(...,
  canonical=True)``), which is global, not a property of a prefix. A model with ``config.site_order = "any"``
  (trained on the sites in random orders) has no order masks: it samples the sites in any order, and the
  probability ``forward`` gives a sequence is that of this one order.

A target outside these masks makes ``forward`` raise (it would otherwise get a huge loss, or silently none).

Property prediction (``WyckoffTransformerForPropertyPrediction``) uses the same encoder on the whole crystal, every
field visible, and pools the site states weighted by multiplicity.
"""


import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn
from torch.nn import functional as F
from transformers import GenerationConfig, GenerationMixin, PreTrainedModel
from transformers import initialization as init
from transformers.masking_utils import create_bidirectional_mask
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutput, SequenceClassifierOutput
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.utils import ModelOutput, logging
from transformers.utils.generic import can_return_tuple, merge_with_config_defaults
from transformers.utils.output_capturing import capture_outputs

from .configuration_wyckoff_transformer import (
    CASCADE_HIDDEN,
    FIELD_INPUTS,
    WyckoffTransformerConfig,
    hidden_value,
)
from .sampling_wyckoff_transformer import DEFAULT_GENERATION_CONFIG, WyckoffGenerationMixin

logger = logging.get_logger(__name__)


@dataclass
class CrystalGenerationModelOutput(ModelOutput):
    r"""
    loss: sum of the three per-field losses (≈ negative log-likelihood per site); ``None`` with ``return_loss=False``.
    element_loss, site_symmetry_loss, enumeration_loss: mean cross-entropy over the predictions of each
        field (the element head is also scored on the STOP token; the other two on real sites only).
    log_likelihood: ``(batch,)``, log p(sites, STOP | space group) of each sequence under the model (temperature 1):
        the sum over the cascade of the log-softmax at the targets, under the masks ``generate`` samples with.
    element_logits, site_symmetry_logits, enumeration_logits: ``(batch, length, vocab)``; at ``[b, i]`` the
        logits that predict token i of row b from the visible prefix, with impossible values at the dtype's
        minimum. Padding (and, for the last two, the STOP position) holds zeros.
    """

    loss: torch.FloatTensor | None = None
    element_loss: torch.FloatTensor | None = None
    site_symmetry_loss: torch.FloatTensor | None = None
    enumeration_loss: torch.FloatTensor | None = None
    log_likelihood: torch.FloatTensor | None = None
    element_logits: torch.FloatTensor | None = None
    site_symmetry_logits: torch.FloatTensor | None = None
    enumeration_logits: torch.FloatTensor | None = None


@dataclass
class CascadeSteps:
    """The cascade steps of a batch, one row per real token (``WyckoffTransformerForCrystalGeneration._cascade_steps``):
    its sequence and position, the sequence's ids repeated per row (``inputs``), which tokens the row sees
    (``key_mask``), the targets per field, which rows are sites (not STOP, ``site``), and the masks of the element
    prediction (all rows) and of the site-symmetry and enumeration predictions (site rows)."""

    sequence: torch.Tensor
    position: torch.Tensor
    inputs: dict[str, torch.Tensor]
    key_mask: torch.Tensor
    targets: dict[str, torch.Tensor]
    site: torch.Tensor
    element_allowed: torch.Tensor
    site_symmetry_allowed: torch.Tensor
    enumeration_allowed: torch.Tensor


class WyckoffPositionTables(nn.Module):
    """The crystallographic tables of the model and the mask builder that both ``forward`` and ``generate`` use.

    Persistent buffers (saved in ``model.safetensors``, filled from the config's construction inputs):
    ``wyckoff_positions``, ``(num_positions, 5)`` rows [space group, site symmetry, enumeration, multiplicity, dof]
    with the rows of one group in ITA letter order, and ``element_rank``, the canonical rank of every element id
    (-1 for the special tokens). Dense lookups over (space group, site symmetry, enumeration) are derived from them
    (non-persistent, rebuilt by ``_init_weights`` after loading).
    """

    def __init__(self, config: WyckoffTransformerConfig) -> None:
        super().__init__()
        if not config.num_wyckoff_positions:
            raise ValueError("the config has no wyckoff_positions; build it with "
                             "WyckoffTransformerConfig.from_tokenizer(WyckoffTokenizer())")
        self.ordered = config.site_order == "canonical"
        self.register_buffer("wyckoff_positions", torch.zeros(config.num_wyckoff_positions, 5, dtype=torch.int32))
        self.register_buffer("element_rank", torch.zeros(config.element_vocab_size, dtype=torch.int32))
        shape = (config.space_group_vocab_size, config.site_symmetry_vocab_size, config.enumeration_vocab_size)
        self.register_buffer("exists", torch.zeros(shape, dtype=torch.bool), persistent=False)
        for name in ("multiplicity", "dof", "letter_index"):
            self.register_buffer(name, torch.zeros(shape, dtype=torch.long), persistent=False)

    @staticmethod
    def source_tables(config: WyckoffTransformerConfig) -> dict[str, torch.Tensor]:
        """The persistent buffers from the config's construction inputs (a fresh model)."""
        if config.wyckoff_positions is None or config.element_canonical_order is None:
            raise ValueError("no Wyckoff tables: the weights hold no tables.wyckoff_positions / tables.element_rank "
                             "(a checkpoint of an older format: retrain it) and the config no wyckoff_positions / "
                             "element_canonical_order (build it with WyckoffTransformerConfig.from_tokenizer)")
        rank = torch.full((config.element_vocab_size,), -1, dtype=torch.int32)
        rank[config.element_canonical_order] = torch.arange(len(config.element_canonical_order), dtype=torch.int32)
        return {"wyckoff_positions": torch.tensor(config.wyckoff_positions, dtype=torch.int32), "element_rank": rank}

    def dense_tables(self) -> dict[str, torch.Tensor]:
        """The dense lookups, from ``wyckoff_positions`` (tensor operations only, so meta tensors pass through)."""
        space_group, site_symmetry, enumeration, multiplicity, dof = self.wyckoff_positions.long().unbind(1)
        tables = {"exists": torch.zeros_like(self.exists)}
        tables["exists"][space_group, site_symmetry, enumeration] = True
        row = torch.arange(len(space_group), device=space_group.device)
        first_row = torch.full((self.exists.shape[0],), len(row), device=row.device).scatter_reduce(
            0, space_group, row, "amin")
        letter_index = row - first_row[space_group]
        for name, value in (("multiplicity", multiplicity), ("dof", dof), ("letter_index", letter_index)):
            tables[name] = torch.zeros_like(self.multiplicity)
            tables[name][space_group, site_symmetry, enumeration] = value
        return tables

    def element_allowed(self, position: torch.Tensor, previous_element: torch.Tensor, max_sites: int,
                        config: WyckoffTransformerConfig) -> torch.Tensor:
        """``(N, element vocabulary)``: elements (in canonical order, those ranked at or after the previous site's),
        STOP after the first site, only STOP once ``max_sites`` sites are placed. ``previous_element`` is PAD for
        the first token."""
        rank = self.element_rank
        allowed = (rank >= 0)[None, :].expand(len(position), -1).clone()
        if self.ordered:
            allowed &= rank[None, :] >= rank[previous_element][:, None]
        allowed[:, config.stop_token_id] = position > 0
        full = position >= max_sites
        allowed[full] = False
        allowed[full, config.stop_token_id] = True
        return allowed

    def position_allowed(self, space_group: torch.Tensor, used: torch.Tensor, element: torch.Tensor,
                         previous_element: torch.Tensor, previous_letter: torch.Tensor) -> torch.Tensor:
        """``(N, site_symmetry, enumeration)``: positions of each row's group that are not a 0-dof position already
        taken (``used``, ``(N, site_symmetry * enumeration)``) and, in canonical order after a site of the same
        element, at or after its letter (``previous_letter``)."""
        floor = torch.where((element == previous_element) & self.ordered, previous_letter, -1)
        return (self.exists[space_group] & (used.view(-1, *self.exists.shape[1:]) == 0)
                & (self.letter_index[space_group] >= floor[:, None, None]))

    def mark_used(self, used: torch.Tensor, space_group: torch.Tensor, site_symmetry: torch.Tensor,
                  enumeration: torch.Tensor, is_site: torch.Tensor) -> torch.Tensor:
        """``used`` plus the 0-dof positions among the given sites (ids of shape ``(N, ...)``; ``is_site``
        says which entries are real sites)."""
        fixed = is_site & (self.dof[space_group, site_symmetry, enumeration] == 0)
        flat = site_symmetry * self.exists.shape[2] + enumeration
        return used.scatter_add(1, flat.view(len(used), -1), fixed.view(len(used), -1).to(used.dtype))



class ConditionEmbedding(nn.Module):
    """One vector per crystal from its scalar conditions (``config.condition_names``), standardised.

    A NaN condition is unknown: the network sees (0, known = 0) for it, so a crystal with every condition unknown
    gets one learned vector, the unconditional embedding of classifier-free guidance.
    """

    def __init__(self, config: WyckoffTransformerConfig) -> None:
        super().__init__()
        self.config = config
        count, width = len(config.condition_names), config.condition_embedding_size
        self.project = nn.Sequential(nn.Linear(2 * count, width), nn.GELU(), nn.Linear(width, width))

    def forward(self, conditions: torch.Tensor) -> torch.Tensor:
        config, count = self.config, len(self.config.condition_names)
        mean = torch.tensor(config.condition_mean or [0.0] * count, device=conditions.device)
        std = torch.tensor(config.condition_std or [1.0] * count, device=conditions.device)
        known = ~conditions.isnan()
        scaled = ((conditions.float() - mean) / std).nan_to_num(0.0)
        features = torch.cat([scaled, known.float()], dim=-1)
        return self.project(features.to(self.project[0].weight.dtype))



class WyckoffEmbeddings(nn.Module):
    """Concatenated per-field embeddings plus a projection of the derived integers (and, for a conditional
    generator, the crystal's condition embedding, the same in every token, like the space group).

    Multiplicity enters as log(1 + m): it spans 1..192, and the log keeps a linear layer well scaled.
    With ``config.site_count_embedding`` the token being predicted (a MASK in any field) also gets the embedding
    of its index, which is the number of sites before it: the model's inputs are always a crystal's first sites in
    order, followed by that token (and, in training, later tokens that the attention mask hides).
    With ``config.element_descriptors`` an element's embedding is its learned vector plus a linear projection of its
    chemical descriptors (the persistent buffer ``element_descriptor_table``, filled from the config at
    construction and saved with the weights).
    """

    def __init__(self, config: WyckoffTransformerConfig) -> None:
        super().__init__()
        self.space_group = nn.Embedding(config.space_group_vocab_size, config.space_group_embedding_size)
        self.element = nn.Embedding(config.element_vocab_size, config.element_embedding_size)
        self.element_descriptor_projection = None
        if config.element_descriptors:
            self.register_buffer("element_descriptor_table",
                                 torch.zeros(config.element_vocab_size, config.element_descriptor_size))
            self.element_descriptor_projection = nn.Linear(config.element_descriptor_size,
                                                           config.element_embedding_size, bias=False)
        self.site_symmetry = nn.Embedding(config.site_symmetry_vocab_size, config.site_symmetry_embedding_size)
        self.enumeration = nn.Embedding(config.enumeration_vocab_size, config.enumeration_embedding_size)
        self.derived = nn.Linear(2, config.derived_feature_size)
        self.condition = ConditionEmbedding(config) if config.condition_names else None
        self.site_count = (nn.Embedding(config.max_sites + 1, config.hidden_size) if config.site_count_embedding
                           else None)
        self.mask_token_id, self.max_sites = config.mask_token_id, config.max_sites
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, space_group_ids: torch.Tensor, element_ids: torch.Tensor, site_symmetry_ids: torch.Tensor,
                enumeration_ids: torch.Tensor, multiplicity: torch.Tensor, dof: torch.Tensor,
                conditions: torch.Tensor | None = None) -> torch.Tensor:
        derived = torch.stack([torch.log1p(multiplicity.float()), dof.float()], dim=-1)
        fields = [self.space_group(space_group_ids), self.element_embedding(element_ids),
                  self.site_symmetry(site_symmetry_ids), self.enumeration(enumeration_ids),
                  self.derived(derived.to(self.derived.weight.dtype))]
        if self.condition is not None:
            if conditions is None:  # unconditional: every condition unknown
                conditions = torch.full((len(element_ids), len(self.condition.config.condition_names)), math.nan,
                                        device=element_ids.device)
            fields.append(self.condition(conditions)[:, None, :].expand(*element_ids.shape, -1))
        elif conditions is not None:
            raise ValueError("conditions given to a model without config.condition_names (not a conditional model)")
        tokens = torch.cat(fields, dim=-1)
        if self.site_count is not None:
            predicted = ((element_ids == self.mask_token_id) | (site_symmetry_ids == self.mask_token_id)
                         | (enumeration_ids == self.mask_token_id))
            count = torch.arange(element_ids.shape[1], device=element_ids.device).clamp(max=self.max_sites)
            tokens = tokens + predicted[..., None] * self.site_count(count)
        return self.dropout(tokens)

    def element_embedding(self, element_ids: torch.Tensor) -> torch.Tensor:
        """The learned element vectors, plus the projected descriptors with ``config.element_descriptors``."""
        embedded = self.element(element_ids)
        if self.element_descriptor_projection is None:
            return embedded
        descriptors = self.element_descriptor_table[element_ids].to(self.element_descriptor_projection.weight.dtype)
        return embedded + self.element_descriptor_projection(descriptors)


def eager_attention_forward(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                            attention_mask: torch.Tensor | None, scaling: float, dropout: float = 0.0,
                            **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain softmax attention (as transformers' encoders): the one that can return its weights."""
    weights = torch.matmul(query, key.transpose(2, 3)) * scaling
    if attention_mask is not None:
        weights = weights + attention_mask
    weights = F.dropout(weights.softmax(-1), p=dropout, training=module.training)
    return torch.matmul(weights, value).transpose(1, 2).contiguous(), weights


class WyckoffSelfAttention(nn.Module):
    """Multi-head bidirectional self-attention, dispatched on ``config._attn_implementation`` (eager, sdpa, ...)."""

    is_causal = False

    def __init__(self, config: WyckoffTransformerConfig) -> None:
        super().__init__()
        self.config = config
        self.num_heads = config.num_attention_heads
        self.scaling = (config.hidden_size // config.num_attention_heads) ** -0.5
        self.qkv = nn.Linear(config.hidden_size, 3 * config.hidden_size)
        self.out = nn.Linear(config.hidden_size, config.hidden_size)
        self.dropout = config.attention_dropout

    def forward(self, hidden: torch.Tensor, attention_mask: torch.Tensor | None,
                **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
        batch, length, width = hidden.shape
        query, key, value = self.qkv(hidden).view(batch, length, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        attention: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(self.config._attn_implementation,
                                                                    eager_attention_forward)
        attended, weights = attention(self, query, key, value, attention_mask, scaling=self.scaling,
                                      dropout=self.dropout if self.training else 0.0, **kwargs)
        return self.out(attended.reshape(batch, length, width)), weights


class WyckoffTransformerLayer(GradientCheckpointingLayer):
    """Pre-LN encoder block: pre-LN trains stably without a learning-rate warm-up at this small scale."""

    def __init__(self, config: WyckoffTransformerConfig) -> None:
        super().__init__()
        self.attention_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.attention = WyckoffSelfAttention(config)
        self.mlp_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = nn.Sequential(nn.Linear(config.hidden_size, config.intermediate_size), nn.GELU(),
                                 nn.Linear(config.intermediate_size, config.hidden_size))
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden: torch.Tensor, attention_mask: torch.Tensor | None, **kwargs: Any) -> torch.Tensor:
        attended, _ = self.attention(self.attention_norm(hidden), attention_mask, **kwargs)
        hidden = hidden + self.dropout(attended)
        return hidden + self.dropout(self.mlp(self.mlp_norm(hidden)))


class WyckoffTransformerPreTrainedModel(PreTrainedModel):
    """Shared loading/initialisation conventions of the WyckoffTransformer models."""

    config_class = WyckoffTransformerConfig
    base_model_prefix = "model"
    main_input_name = "element_ids"
    supports_gradient_checkpointing = True
    _no_split_modules: ClassVar[list[str]] = ["WyckoffTransformerLayer"]
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    _supports_attention_backend = True
    _can_record_outputs: ClassVar[dict[str, type[nn.Module]]] = {
        "hidden_states": WyckoffTransformerLayer, "attentions": WyckoffSelfAttention}

    def save_pretrained(self, save_directory: str | os.PathLike, *args: Any, **kwargs: Any) -> Any:
        """As ``PreTrainedModel.save_pretrained``; with remote code, a model with heads also maps ``AutoModel`` to
        the bare encoder (transformers writes only the class's own Auto entry)."""
        if self._auto_class is not None:
            module = type(self).__module__.rsplit(".", 1)[-1]
            self.config.auto_map = {**(getattr(self.config, "auto_map", None) or {}),
                                    "AutoModel": f"{module}.WyckoffTransformerModel"}
        return super().save_pretrained(save_directory, *args, **kwargs)

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, WyckoffPositionTables):
            # a loaded checkpoint already holds the persistent tables (init.copy_ skips initialised tensors)
            if not getattr(module.wyckoff_positions, "_is_hf_initialized", False):
                for name, value in module.source_tables(self.config).items():
                    init.copy_(getattr(module, name), value)
            for name, value in module.dense_tables().items():
                init.copy_(getattr(module, name), value)
        if isinstance(module, WyckoffEmbeddings) and module.element_descriptor_projection is not None:
            table = module.element_descriptor_table
            if not getattr(table, "_is_hf_initialized", False):
                if self.config.element_descriptor_table is None:
                    raise ValueError("no element descriptors: the weights hold no embeddings.element_descriptor_table "
                                     "and the config no element_descriptor_table (build it with "
                                     "WyckoffTransformerConfig.from_tokenizer)")
                init.copy_(table, torch.tensor(self.config.element_descriptor_table, dtype=table.dtype))


class WyckoffTransformerModel(WyckoffTransformerPreTrainedModel):
    """The encoder: field embeddings → pre-LN bidirectional layers (no positional encoding) → LayerNorm.

    ``attention_mask`` is a key mask, ``(batch, length)`` with 1 for visible tokens; ``None`` = all visible.
    ``conditions`` (conditional models only), ``(batch, len(config.condition_names))``: each crystal's conditions,
    NaN where unknown; ``None`` = all unknown.
    ``output_hidden_states`` / ``output_attentions`` (the latter with ``attn_implementation="eager"``) add
    the per-layer states and attention weights to the output.
    """

    _keys_to_ignore_on_load_unexpected: ClassVar[list[str]] = [r"^(tables|heads|classifier)\."]  # the heads' own

    def __init__(self, config: WyckoffTransformerConfig) -> None:
        super().__init__(config)
        self.embeddings = WyckoffEmbeddings(config)
        self.layers = nn.ModuleList(WyckoffTransformerLayer(config) for _ in range(config.num_hidden_layers))
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.gradient_checkpointing = False
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.embeddings.element

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.embeddings.element = value

    @merge_with_config_defaults
    @capture_outputs
    def forward(self, space_group_ids: torch.Tensor, element_ids: torch.Tensor, site_symmetry_ids: torch.Tensor,
                enumeration_ids: torch.Tensor, multiplicity: torch.Tensor, dof: torch.Tensor,
                attention_mask: torch.Tensor | None = None, conditions: torch.Tensor | None = None,
                **kwargs: Any) -> BaseModelOutput:
        hidden = self.embeddings(space_group_ids, element_ids, site_symmetry_ids, enumeration_ids, multiplicity, dof,
                                 conditions)
        mask = create_bidirectional_mask(config=self.config, inputs_embeds=hidden, attention_mask=attention_mask)
        for layer in self.layers:
            hidden = layer(hidden, mask, **kwargs)
        return BaseModelOutput(last_hidden_state=self.norm(hidden))


class WyckoffTransformerForCrystalGeneration(WyckoffTransformerPreTrainedModel, WyckoffGenerationMixin,
                                             GenerationMixin):
    """The encoder with the three cascade heads: training loss in ``forward``, sampling in ``generate``.

    Saved checkpoints map ``AutoModel`` to the bare encoder and ``AutoModelForPreTraining`` to this class
    (the model with its training heads), for in-process registration and for ``trust_remote_code`` alike.
    Sampling defaults live in ``generation_config.json`` (``model.generation_config``): ``temperature`` (and
    ``field_temperatures``, per field), ``space_group_counts`` (the prior p(S), counts per space-group id) and
    ``min_acceptance_rate``.
    """

    accepts_loss_kwargs = False  # the loss is a per-prediction mean; Trainer need not pass num_items_in_batch

    def __init__(self, config: WyckoffTransformerConfig) -> None:
        super().__init__(config)
        self.model = WyckoffTransformerModel(config)
        self.tables = WyckoffPositionTables(config)
        self.heads = nn.ModuleDict({
            "element": nn.Linear(config.hidden_size, config.element_vocab_size),
            "site_symmetry": nn.Linear(config.hidden_size, config.site_symmetry_vocab_size),
            "enumeration": nn.Linear(config.hidden_size, config.enumeration_vocab_size),
        })
        self.generation_config = GenerationConfig(**DEFAULT_GENERATION_CONFIG)
        self.post_init()

    def _predict(self, field: str, inputs: dict[str, torch.Tensor], position: torch.Tensor,
                 key_mask: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        """Logits of ``field`` of token ``position`` (one per row), impossible values at the dtype minimum.

        ``inputs`` already hold MASK / 0 in the hidden fields of that token.
        """
        hidden = self.model(**inputs, attention_mask=key_mask).last_hidden_state
        logits = self.heads[field](hidden[torch.arange(len(position), device=position.device), position])
        return logits.masked_fill(~allowed, torch.finfo(logits.dtype).min)

    def _hide(self, inputs: dict[str, torch.Tensor], position: torch.Tensor, field: str) -> dict[str, torch.Tensor]:
        """A copy of ``inputs`` with the fields not yet known when predicting ``field`` of token ``position``
        replaced by their hidden value (MASK, 0 for the derived integers)."""
        rows = torch.arange(len(position), device=position.device)
        hidden = dict(inputs)
        for key in CASCADE_HIDDEN[field]:
            hidden[key] = inputs[key].clone()
            hidden[key][rows, position] = hidden_value(key, self.config)
        return hidden

    @staticmethod
    def _check_targets(field: str, allowed: torch.Tensor, target: torch.Tensor, sequence: torch.Tensor,
                       position: torch.Tensor, name: str) -> None:
        """Raise on the first target outside the masks: it has probability zero under the model."""
        bad = (~allowed.gather(1, target[:, None]).squeeze(1)).nonzero()
        if len(bad):
            row = int(bad[0])
            raise ValueError(
                f"{name} {int(sequence[row])}, token {int(position[row])}: {field} id {int(target[row])} is "
                f"impossible there ({IMPOSSIBLE_REASONS[field]}); the model gives it probability 0")

    def cascade_steps(self, inputs: dict[str, torch.Tensor], attention_mask: torch.Tensor, max_sites: int,
                       name: str = "sequence") -> CascadeSteps:
        """Every real token of every sequence as one row, with its targets and the masks that restrict them.

        The masks are the ones ``generate`` samples with (``max_sites`` sites at most); a target outside them raises
        a ``ValueError`` naming ``name`` ("sequence", or "prompt" when ``generate`` validates its prompts) and the
        token. Rows see the tokens up to their own (``key_mask``)."""
        config, tables = self.config, self.tables
        element_ids = inputs["element_ids"]
        length = element_ids.shape[1]
        sequence, position = attention_mask.nonzero(as_tuple=True)
        expanded = {key: value[sequence] for key, value in inputs.items()}
        rows = torch.arange(len(sequence), device=element_ids.device)
        before = torch.arange(length, device=element_ids.device)[None, :]
        group = expanded["space_group_ids"][rows, position]
        targets = {field: expanded[f"{field}_ids"][rows, position] for field in CASCADE_HIDDEN}
        previous = (position - 1).clamp(min=0)
        previous_element = expanded["element_ids"][rows, previous].masked_fill(position == 0, config.pad_token_id)
        previous_letter = tables.letter_index[group, expanded["site_symmetry_ids"][rows, previous],
                                              expanded["enumeration_ids"][rows, previous]]
        is_site = expanded["element_ids"] > config.mask_token_id
        used = tables.mark_used(
            torch.zeros(len(sequence), tables.exists[0].numel(), dtype=torch.long, device=element_ids.device),
            expanded["space_group_ids"], expanded["site_symmetry_ids"], expanded["enumeration_ids"],
            is_site & (before < position[:, None]))

        element_allowed = tables.element_allowed(position, previous_element, max_sites, config)
        self._check_targets("element", element_allowed, targets["element"], sequence, position, name)
        site = targets["element"] != config.stop_token_id
        available = tables.position_allowed(group[site], used[site], targets["element"][site],
                                            previous_element[site], previous_letter[site])
        site_symmetry_allowed = available.any(-1)
        self._check_targets("site_symmetry", site_symmetry_allowed, targets["site_symmetry"][site], sequence[site],
                            position[site], name)
        enumeration_allowed = available[torch.arange(int(site.sum()), device=element_ids.device),
                                        targets["site_symmetry"][site]]
        self._check_targets("enumeration", enumeration_allowed, targets["enumeration"][site], sequence[site],
                            position[site], name)
        return CascadeSteps(sequence, position, expanded, before <= position[:, None], targets, site,
                            element_allowed, site_symmetry_allowed, enumeration_allowed)

    @can_return_tuple
    def forward(self, space_group_ids: torch.Tensor, element_ids: torch.Tensor, site_symmetry_ids: torch.Tensor,
                enumeration_ids: torch.Tensor, multiplicity: torch.Tensor, dof: torch.Tensor,
                attention_mask: torch.Tensor | None = None, conditions: torch.Tensor | None = None,
                return_loss: bool = True, **kwargs: Any) -> CrystalGenerationModelOutput:
        """Loss and log-likelihood of every cascade step of every token, in three encoder passes.

        The batch is expanded to one row per (sequence, target token i); row (b, i) sees tokens ≤ i only.
        Pass 1 hides all of token i and predicts its element (or STOP); passes 2 and 3 run on the rows whose
        token is a site, revealing the element, then the site symmetry. Every prediction is restricted by the
        masks of ``WyckoffPositionTables``; a target outside them raises a ``ValueError``.

        The targets are the inputs themselves, so no labels are needed and, as with ``return_loss`` in
        transformers' contrastive models, ``return_loss=True`` (the default) lets ``Trainer`` compute training and
        evaluation losses from unlabelled batches. ``labels``, if a collator adds them, must equal ``element_ids``
        on the real tokens; they are taken through ``**kwargs`` so that ``Trainer`` does not wait for a label
        column that the model does not need.

        ``conditions`` (a conditional generator), ``(batch, len(config.condition_names))``, NaN where unknown: the
        loss is then of p(sites | S, conditions). In training each condition of each crystal is dropped (made
        unknown) with probability ``config.condition_dropout_prob``, so the same network also learns p(sites | S),
        the unconditional half of classifier-free guidance.
        """
        labels = kwargs.pop("labels", None)
        if kwargs:
            raise TypeError(f"unexpected arguments {sorted(kwargs)}")
        if attention_mask is None:
            attention_mask = torch.ones_like(element_ids)
        if labels is not None and not torch.equal(labels[attention_mask.bool()], element_ids[attention_mask.bool()]):
            raise ValueError("labels must equal element_ids on the real tokens: the cascade's targets are its inputs")
        inputs = dict(zip(FIELD_INPUTS, (space_group_ids, element_ids, site_symmetry_ids, enumeration_ids,
                                          multiplicity, dof), strict=True))
        if conditions is not None:
            if self.training and self.config.condition_dropout_prob > 0:
                dropped = torch.rand(conditions.shape, device=conditions.device) < self.config.condition_dropout_prob
                conditions = conditions.masked_fill(dropped, math.nan)
            inputs["conditions"] = conditions
        steps = self.cascade_steps(inputs, attention_mask, self.config.max_sites)
        sequence, position, site, targets = steps.sequence, steps.position, steps.site, steps.targets
        batch, length = element_ids.shape
        element_logits = self._predict("element", self._hide(steps.inputs, position, "element"), position,
                                       steps.key_mask, steps.element_allowed)
        site_inputs = {key: value[site] for key, value in steps.inputs.items()}
        site_position = position[site]
        site_symmetry_logits = self._predict("site_symmetry", self._hide(site_inputs, site_position, "site_symmetry"),
                                             site_position, steps.key_mask[site], steps.site_symmetry_allowed)
        enumeration_logits = self._predict("enumeration", self._hide(site_inputs, site_position, "enumeration"),
                                           site_position, steps.key_mask[site], steps.enumeration_allowed)

        predictions = (("element", element_logits, slice(None), steps.element_allowed),
                       ("site_symmetry", site_symmetry_logits, site, steps.site_symmetry_allowed),
                       ("enumeration", enumeration_logits, site, steps.enumeration_allowed))
        log_likelihood = element_logits.new_zeros(batch, dtype=torch.float32)
        losses, per_token = {}, {}
        for field, logits, where, allowed in predictions:
            all_log_probs = logits.float().log_softmax(-1)
            log_probs = all_log_probs.gather(1, targets[field][where][:, None]).squeeze(1)
            log_likelihood = log_likelihood.index_add(0, sequence[where], log_probs)
            if return_loss:
                losses[field] = self._cross_entropy(all_log_probs, log_probs, allowed)
            per_token[field] = logits.new_zeros(batch, length, logits.shape[-1])
            per_token[field][sequence[where], position[where]] = logits
        return CrystalGenerationModelOutput(
            loss=sum(losses.values()) if return_loss else None, element_loss=losses.get("element"),
            site_symmetry_loss=losses.get("site_symmetry"), enumeration_loss=losses.get("enumeration"),
            log_likelihood=log_likelihood, element_logits=per_token["element"],
            site_symmetry_logits=per_token["site_symmetry"], enumeration_logits=per_token["enumeration"])

    def _cross_entropy(self, all_log_probs: torch.Tensor, log_probs: torch.Tensor,
                       allowed: torch.Tensor) -> torch.Tensor:
        """Mean negative log-likelihood of the targets; in training with ``config.label_smoothing`` ε,
        (1 - ε) times that plus ε times the mean cross-entropy to the uniform distribution over the allowed values
        (smoothing toward impossible values would only teach the network what the masks already enforce)."""
        loss = -log_probs.mean()
        smoothing = self.config.label_smoothing if self.training else 0.0
        if not smoothing:
            return loss
        uniform = -(all_log_probs.masked_fill(~allowed, 0.0).sum(-1) / allowed.sum(-1)).mean()
        return (1 - smoothing) * loss + smoothing * uniform

    # ------------------------------------------------------------------------------------------- sampling


class WyckoffTransformerForPropertyPrediction(WyckoffTransformerPreTrainedModel):
    """The encoder with a property head: scalar properties (regression) or classes of a crystal from its Wyckoff
    representation alone, no coordinates (``AutoModelForSequenceClassification``, the transformers way:
    ``config.problem_type``, ``config.num_labels``, ``labels`` → ``loss``).

    The input is the encoded crystal, all fields visible (no cascade masking). The site states are pooled with
    weights equal to their multiplicities: a crystal is its atoms, not its list of sites, so a 16-atom site counts
    16 times a 1-atom one, and the prediction does not change when a site is split into equivalent ones. The
    pooled vector goes through a two-layer head.

    Regression targets are standardised with ``config.label_mean`` / ``label_std``: the head fits standardised
    values (the loss is on that scale, L1 or MSE by ``config.regression_loss``) and ``logits`` come back in the
    labels' units. ``problem_type`` ``None`` is inferred as transformers does: regression for one label, else
    single-label classification for integer labels, multi-label for float ones.
    """

    _keys_to_ignore_on_load_unexpected: ClassVar[list[str]] = [r"^(tables|heads)\."]  # a generator's heads

    def __init__(self, config: WyckoffTransformerConfig) -> None:
        super().__init__(config)
        self.model = WyckoffTransformerModel(config)
        self.classifier = nn.Sequential(nn.Dropout(config.hidden_dropout_prob),
                                        nn.Linear(config.hidden_size, config.hidden_size), nn.GELU(),
                                        nn.Linear(config.hidden_size, config.num_labels))
        self.post_init()

    def pool(self, hidden: torch.Tensor, element_ids: torch.Tensor, multiplicity: torch.Tensor,
             attention_mask: torch.Tensor) -> torch.Tensor:
        """``(batch, hidden)``: the multiplicity-weighted mean of the site states (STOP and padding excluded)."""
        weight = multiplicity.to(hidden.dtype) * (attention_mask.bool() & (element_ids > self.config.mask_token_id))
        return (hidden * weight[..., None]).sum(1) / weight.sum(1, keepdim=True).clamp(min=1)

    def _standardisation(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        count = self.config.num_labels
        mean = torch.tensor(self.config.label_mean or [0.0] * count, device=device)
        return mean, torch.tensor(self.config.label_std or [1.0] * count, device=device)

    @can_return_tuple
    def forward(self, space_group_ids: torch.Tensor, element_ids: torch.Tensor, site_symmetry_ids: torch.Tensor,
                enumeration_ids: torch.Tensor, multiplicity: torch.Tensor, dof: torch.Tensor,
                attention_mask: torch.Tensor | None = None, labels: torch.Tensor | None = None,
                **kwargs: Any) -> SequenceClassifierOutput:
        """``logits`` ``(batch, num_labels)`` (label units for regression) and, given ``labels`` (``(batch,)`` or
        ``(batch, num_labels)``), the loss. ``output_hidden_states`` / ``output_attentions`` pass to the encoder."""
        if attention_mask is None:
            attention_mask = torch.ones_like(element_ids)
        encoded = self.model(space_group_ids, element_ids, site_symmetry_ids, enumeration_ids, multiplicity, dof,
                             attention_mask=attention_mask, **kwargs)
        raw = self.classifier(self.pool(encoded.last_hidden_state, element_ids, multiplicity, attention_mask))
        config = self.config
        if config.problem_type is None and labels is not None:
            config.problem_type = ("regression" if config.num_labels == 1 else "single_label_classification"
                                   if not labels.is_floating_point() else "multi_label_classification")
        regression = config.problem_type == "regression" or (config.problem_type is None and config.num_labels == 1)
        mean, std = self._standardisation(raw.device)
        logits = raw.float() * std + mean if regression else raw
        loss = None
        if labels is not None:
            if regression:
                target = (labels.float().view(len(raw), -1) - mean) / std
                loss = (F.l1_loss if config.regression_loss == "l1" else F.mse_loss)(raw.float(), target)
            elif config.problem_type == "single_label_classification":
                loss = F.cross_entropy(raw.float().view(-1, config.num_labels), labels.view(-1))
            else:
                loss = F.binary_cross_entropy_with_logits(raw.float(), labels.float())
        return SequenceClassifierOutput(loss=loss, logits=logits, hidden_states=encoded.hidden_states,
                                        attentions=encoded.attentions)


IMPOSSIBLE_REASONS = {
    "element": "STOP as the first token, a site after config.max_sites sites, a special token, or an element out "
               "of the canonical order (Pauling electronegativity, then Z)",
    "site_symmetry": "a site symmetry the group lacks, only 0-dof positions already taken, or only letters before "
                     "the previous site's of the same element",
    "enumeration": "not a position of the group, a 0-dof position already taken, or a letter before the previous "
                   "site's of the same element",
}


