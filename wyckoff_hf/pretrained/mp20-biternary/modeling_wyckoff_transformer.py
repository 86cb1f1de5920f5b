"""WyckoffTransformer: a permutation-aware encoder over Wyckoff sites and its cascade generator.

Self-contained on purpose (torch, transformers and the sibling configuration file only): the file is
copied next to the weights so that ``trust_remote_code=True`` works where ``wyckoff_hf`` is not installed.

The autoregressive factorisation ("cascade"). A crystal is a sequence of sites (element, site symmetry,
enumeration) closed by STOP. To predict token i, tokens before i are given in full, token i has its
not-yet-predicted fields replaced by MASK and tokens after i are invisible (a key mask). The heads predict,
in order, the element (or STOP), then the site symmetry given the element, then the enumeration given
both, each from the encoder state of token i in its own encoder pass. There is no positional encoding
and attention is bidirectional, so the prefix is seen as a set of sites: the model cannot lean on the
canonical order beyond what the MASK token tells it. The probability of a crystal is the product of
these conditionals; every prediction is restricted by masks built from the Wyckoff tables, so a sampled
sequence is always a valid crystal and training uses the same restricted softmax as sampling.
"""

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn
from torch.nn import functional as F
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.modeling_outputs import BaseModelOutput
from transformers.utils import ModelOutput
from transformers.utils.generic import can_return_tuple

from .configuration_wyckoff_transformer import WyckoffTransformerConfig

FIELD_INPUTS = ("space_group_ids", "element_ids", "site_symmetry_ids", "enumeration_ids", "multiplicity", "dof")
# Cascade order: the fields of token i hidden when predicting each of them (the derived integers follow
# from the full position, so they stay hidden until the enumeration is known).
DEFAULT_GENERATION_BATCH_SIZE = 2048
CASCADE_HIDDEN = {
    "element": ("element_ids", "site_symmetry_ids", "enumeration_ids", "multiplicity", "dof"),
    "site_symmetry": ("site_symmetry_ids", "enumeration_ids", "multiplicity", "dof"),
    "enumeration": ("enumeration_ids", "multiplicity", "dof"),
}


@dataclass
class CrystalGenerationModelOutput(ModelOutput):
    r"""
    loss: sum of the three per-field losses (≈ negative log-likelihood per site).
    element_loss, site_symmetry_loss, enumeration_loss: mean cross-entropy over the predictions of each
        field (the element head is also scored on the STOP token; the other two on real sites only).
    element_logits, site_symmetry_logits, enumeration_logits: ``(batch, length, vocab)``; at ``[b, i]`` the
        logits that predict token i of row b from the visible prefix, with impossible values at the dtype's
        minimum. Padding (and, for the last two, the STOP position) holds zeros.
    """

    loss: torch.FloatTensor | None = None
    element_loss: torch.FloatTensor | None = None
    site_symmetry_loss: torch.FloatTensor | None = None
    enumeration_loss: torch.FloatTensor | None = None
    element_logits: torch.FloatTensor | None = None
    site_symmetry_logits: torch.FloatTensor | None = None
    enumeration_logits: torch.FloatTensor | None = None


@dataclass
class GeneratedCrystals(ModelOutput):
    r"""
    Sampled crystals as id tensors of shape ``(num_samples, length)`` in the tokenizer's layout: one token per
    site, then a STOP token (element/site-symmetry/enumeration id = STOP), then padding (0). Decode with
    ``WyckoffTokenizer.decode``.
    """

    space_group_ids: torch.LongTensor | None = None
    element_ids: torch.LongTensor | None = None
    site_symmetry_ids: torch.LongTensor | None = None
    enumeration_ids: torch.LongTensor | None = None
    multiplicity: torch.LongTensor | None = None
    dof: torch.LongTensor | None = None
    attention_mask: torch.LongTensor | None = None


class WyckoffPositionTables(nn.Module):
    """Dense lookups over (space group, site symmetry, enumeration) ids and the log space-group prior.

    Non-persistent buffers: they follow from ``config.wyckoff_positions`` / ``space_group_counts``, so they
    are not stored with the weights, and ``_init_weights`` rebuilds them after (meta-device) loading.
    """

    def __init__(self, config: WyckoffTransformerConfig) -> None:
        super().__init__()
        for name, value in self.build(config).items():
            self.register_buffer(name, value, persistent=False)

    @staticmethod
    def build(config: WyckoffTransformerConfig) -> dict[str, torch.Tensor]:
        if not config.wyckoff_positions:
            raise ValueError("the config has no wyckoff_positions; build it with "
                             "WyckoffTransformerConfig.from_tokenizer(WyckoffTokenizer())")
        shape = (config.space_group_vocab_size, config.site_symmetry_vocab_size, config.enumeration_vocab_size)
        space_group, site_symmetry, enumeration, multiplicity, dof = torch.tensor(
            config.wyckoff_positions, dtype=torch.long).unbind(1)
        tables = {name: torch.zeros(shape, dtype=torch.long) for name in ("multiplicity", "dof")}
        tables["multiplicity"][space_group, site_symmetry, enumeration] = multiplicity
        tables["dof"][space_group, site_symmetry, enumeration] = dof
        exists = torch.zeros(shape, dtype=torch.bool)
        exists[space_group, site_symmetry, enumeration] = True
        # validated on plain Python values: from_pretrained builds modules on the meta device, where
        # tensors have no data to compare
        group_ids = {row[0] for row in config.wyckoff_positions}
        counts_list = config.space_group_counts or [
            1.0 if i in group_ids else 0.0 for i in range(config.space_group_vocab_size)]
        if min(counts_list) < 0 or sum(counts_list) <= 0 or any(
                c > 0 for i, c in enumerate(counts_list) if i not in group_ids):
            raise ValueError("space_group_counts must be non-negative, not all zero, and zero for ids "
                             "that are not space groups with Wyckoff positions")
        counts = torch.tensor(counts_list, dtype=torch.float64)
        return {"exists": exists, **tables, "space_group_log_prior": (counts / counts.sum()).log().float()}

    def available(self, space_group: torch.Tensor, used: torch.Tensor) -> torch.Tensor:
        """``(N, site_symmetry, enumeration)``: positions of each row's group not taken as a 0-dof site.

        ``used`` is ``(N, site_symmetry * enumeration)``, non-zero where a 0-dof position already holds a site.
        """
        return self.exists[space_group] & (used.view(-1, *self.exists.shape[1:]) == 0)

    def mark_used(self, used: torch.Tensor, space_group: torch.Tensor, site_symmetry: torch.Tensor,
                  enumeration: torch.Tensor, is_site: torch.Tensor) -> torch.Tensor:
        """``used`` plus the 0-dof positions among the given sites (ids of shape ``(N, ...)``; ``is_site``
        says which entries are real sites)."""
        fixed = is_site & (self.dof[space_group, site_symmetry, enumeration] == 0)
        flat = site_symmetry * self.exists.shape[2] + enumeration
        return used.scatter_add(1, flat.view(len(used), -1), fixed.view(len(used), -1).to(used.dtype))


class WyckoffEmbeddings(nn.Module):
    """Concatenated per-field embeddings plus a projection of the derived integers.

    Multiplicity enters as log(1 + m): it spans 1..192, and the log keeps a linear layer well scaled.
    """

    def __init__(self, config: WyckoffTransformerConfig) -> None:
        super().__init__()
        self.space_group = nn.Embedding(config.space_group_vocab_size, config.space_group_embedding_size)
        self.element = nn.Embedding(config.element_vocab_size, config.element_embedding_size)
        self.site_symmetry = nn.Embedding(config.site_symmetry_vocab_size, config.site_symmetry_embedding_size)
        self.enumeration = nn.Embedding(config.enumeration_vocab_size, config.enumeration_embedding_size)
        self.derived = nn.Linear(2, config.derived_feature_size)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, space_group_ids: torch.Tensor, element_ids: torch.Tensor, site_symmetry_ids: torch.Tensor,
                enumeration_ids: torch.Tensor, multiplicity: torch.Tensor, dof: torch.Tensor) -> torch.Tensor:
        derived = torch.stack([torch.log1p(multiplicity.float()), dof.float()], dim=-1)
        return self.dropout(torch.cat([
            self.space_group(space_group_ids), self.element(element_ids), self.site_symmetry(site_symmetry_ids),
            self.enumeration(enumeration_ids), self.derived(derived.to(self.derived.weight.dtype)),
        ], dim=-1))


class WyckoffSelfAttention(nn.Module):
    """Multi-head bidirectional self-attention through ``F.scaled_dot_product_attention`` (always SDPA)."""

    def __init__(self, config: WyckoffTransformerConfig) -> None:
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.qkv = nn.Linear(config.hidden_size, 3 * config.hidden_size)
        self.out = nn.Linear(config.hidden_size, config.hidden_size)
        self.dropout = config.attention_dropout

    def forward(self, hidden: torch.Tensor, key_mask: torch.Tensor | None) -> torch.Tensor:
        batch, length, width = hidden.shape
        query, key, value = self.qkv(hidden).view(batch, length, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        attended = F.scaled_dot_product_attention(query, key, value, attn_mask=key_mask,
                                                  dropout_p=self.dropout if self.training else 0.0)
        return self.out(attended.transpose(1, 2).reshape(batch, length, width))


class WyckoffTransformerLayer(nn.Module):
    """Pre-LN encoder block: pre-LN trains stably without a learning-rate warm-up at this small scale."""

    def __init__(self, config: WyckoffTransformerConfig) -> None:
        super().__init__()
        self.attention_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.attention = WyckoffSelfAttention(config)
        self.mlp_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = nn.Sequential(nn.Linear(config.hidden_size, config.intermediate_size), nn.GELU(),
                                 nn.Linear(config.intermediate_size, config.hidden_size))
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden: torch.Tensor, key_mask: torch.Tensor | None) -> torch.Tensor:
        hidden = hidden + self.dropout(self.attention(self.attention_norm(hidden), key_mask))
        return hidden + self.dropout(self.mlp(self.mlp_norm(hidden)))


class WyckoffTransformerPreTrainedModel(PreTrainedModel):
    """Shared loading/initialisation conventions of the WyckoffTransformer models."""

    config_class = WyckoffTransformerConfig
    base_model_prefix = "model"
    main_input_name = "element_ids"
    _no_split_modules: ClassVar[list[str]] = ["WyckoffTransformerLayer"]
    _supports_sdpa = True

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, WyckoffPositionTables):
            for name, value in module.build(self.config).items():
                init.copy_(getattr(module, name), value)


class WyckoffTransformerModel(WyckoffTransformerPreTrainedModel):
    """The encoder: field embeddings → pre-LN bidirectional layers (no positional encoding) → LayerNorm.

    ``attention_mask`` is a key mask, ``(batch, length)`` with 1 for visible tokens; ``None`` = all visible.
    """

    def __init__(self, config: WyckoffTransformerConfig) -> None:
        super().__init__(config)
        self.embeddings = WyckoffEmbeddings(config)
        self.layers = nn.ModuleList(WyckoffTransformerLayer(config) for _ in range(config.num_hidden_layers))
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.embeddings.element

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.embeddings.element = value

    @can_return_tuple
    def forward(self, space_group_ids: torch.Tensor, element_ids: torch.Tensor, site_symmetry_ids: torch.Tensor,
                enumeration_ids: torch.Tensor, multiplicity: torch.Tensor, dof: torch.Tensor,
                attention_mask: torch.Tensor | None = None,
                output_hidden_states: bool | None = None) -> BaseModelOutput:
        hidden = self.embeddings(space_group_ids, element_ids, site_symmetry_ids, enumeration_ids, multiplicity, dof)
        key_mask = None if attention_mask is None else attention_mask.bool()[:, None, None, :]
        collect = self.config.output_hidden_states if output_hidden_states is None else output_hidden_states
        all_hidden: tuple[torch.Tensor, ...] = ()
        for layer in self.layers:
            if collect:
                all_hidden += (hidden,)
            hidden = layer(hidden, key_mask)
        hidden = self.norm(hidden)
        return BaseModelOutput(last_hidden_state=hidden, hidden_states=(*all_hidden, hidden) if collect else None)


class WyckoffTransformerForCrystalGeneration(WyckoffTransformerPreTrainedModel):
    """The encoder with the three cascade heads: training loss in ``forward``, sampling in ``generate``.

    Saved checkpoints map ``AutoModel`` to the bare encoder and ``AutoModelForPreTraining`` to this class
    (the model with its training heads), for in-process registration and for ``trust_remote_code`` alike.
    """

    def __init__(self, config: WyckoffTransformerConfig) -> None:
        super().__init__(config)
        self.model = WyckoffTransformerModel(config)
        self.tables = WyckoffPositionTables(config)
        self.heads = nn.ModuleDict({
            "element": nn.Linear(config.hidden_size, config.element_vocab_size),
            "site_symmetry": nn.Linear(config.hidden_size, config.site_symmetry_vocab_size),
            "enumeration": nn.Linear(config.hidden_size, config.enumeration_vocab_size),
        })
        self.post_init()

    def save_pretrained(self, save_directory: str | os.PathLike, *args: Any, **kwargs: Any) -> Any:
        """As ``PreTrainedModel.save_pretrained``; with remote code, also map ``AutoModel`` to the encoder."""
        if self._auto_class is not None:
            module = type(self).__module__.rsplit(".", 1)[-1]
            self.config.auto_map = {**(getattr(self.config, "auto_map", None) or {}),
                                    "AutoModel": f"{module}.{WyckoffTransformerModel.__name__}"}
        return super().save_pretrained(save_directory, *args, **kwargs)

    # ------------------------------------------------------------------------------------------- training

    def _predict(self, field: str, inputs: dict[str, torch.Tensor], position: torch.Tensor,
                 key_mask: torch.Tensor | None, allowed: torch.Tensor) -> torch.Tensor:
        """Logits of ``field`` of token ``position`` (one per row), impossible values at the dtype minimum.

        ``inputs`` already hold MASK / 0 in the hidden fields of that token.
        """
        hidden = self.model(**inputs, attention_mask=key_mask).last_hidden_state
        logits = self.heads[field](hidden[torch.arange(len(position), device=position.device), position])
        return logits.masked_fill(~allowed, torch.finfo(logits.dtype).min)

    def _hide(self, inputs: dict[str, torch.Tensor], position: torch.Tensor, field: str) -> dict[str, torch.Tensor]:
        """A copy of ``inputs`` with the fields not yet known when predicting ``field`` of token ``position``
        replaced by MASK (the derived integers by 0)."""
        rows = torch.arange(len(position), device=position.device)
        hidden = dict(inputs)
        for key in CASCADE_HIDDEN[field]:
            hidden[key] = inputs[key].clone()
            hidden[key][rows, position] = 0 if key in ("multiplicity", "dof") else self.config.mask_token_id
        return hidden

    def _element_allowed(self, position: torch.Tensor) -> torch.Tensor:
        """Element/STOP head mask in training: never PAD or MASK, STOP not before the first site."""
        allowed = torch.ones(len(position), self.config.element_vocab_size, dtype=torch.bool,
                             device=position.device)
        allowed[:, [self.config.pad_token_id, self.config.mask_token_id]] = False
        allowed[:, self.config.stop_token_id] = position > 0
        return allowed

    @can_return_tuple
    def forward(self, space_group_ids: torch.Tensor, element_ids: torch.Tensor, site_symmetry_ids: torch.Tensor,
                enumeration_ids: torch.Tensor, multiplicity: torch.Tensor, dof: torch.Tensor,
                attention_mask: torch.Tensor | None = None) -> CrystalGenerationModelOutput:
        """Loss of every cascade step of every token, in three encoder passes.

        The batch is expanded to one row per (sequence, target token i); row (b, i) sees tokens ≤ i only.
        Pass 1 hides all of token i and predicts its element (or STOP); passes 2 and 3 run on the rows whose
        token is a site, revealing the element, then the site symmetry. Site symmetries and enumerations are
        restricted to the positions of the group that are still free (a 0-dof position holds one site).
        """
        if attention_mask is None:
            attention_mask = torch.ones_like(element_ids)
        inputs = dict(zip(FIELD_INPUTS, (space_group_ids, element_ids, site_symmetry_ids, enumeration_ids,
                                          multiplicity, dof), strict=True))
        batch, length = element_ids.shape
        sequence, position = attention_mask.nonzero(as_tuple=True)
        expanded = {key: value[sequence] for key, value in inputs.items()}
        before = torch.arange(length, device=element_ids.device)[None, :]
        key_mask = before <= position[:, None]
        is_site = expanded["element_ids"] > self.config.mask_token_id
        used = self.tables.mark_used(
            torch.zeros(len(sequence), self.tables.exists[0].numel(), dtype=torch.long, device=element_ids.device),
            expanded["space_group_ids"], expanded["site_symmetry_ids"], expanded["enumeration_ids"],
            is_site & (before < position[:, None]))
        rows = torch.arange(len(sequence), device=element_ids.device)
        targets = {field: expanded[f"{field}_ids"][rows, position] for field in CASCADE_HIDDEN}

        element_logits = self._predict("element", self._hide(expanded, position, "element"), position, key_mask,
                                       self._element_allowed(position))
        site = targets["element"] != self.config.stop_token_id
        site_inputs = {key: value[site] for key, value in expanded.items()}
        site_position = position[site]
        available = self.tables.available(site_inputs["space_group_ids"][:, 0], used[site])
        site_symmetry_logits = self._predict("site_symmetry", self._hide(site_inputs, site_position, "site_symmetry"),
                                             site_position, key_mask[site], available.any(-1))
        enumeration_logits = self._predict(
            "enumeration", self._hide(site_inputs, site_position, "enumeration"), site_position, key_mask[site],
            available[torch.arange(len(site_position), device=element_ids.device), targets["site_symmetry"][site]])

        losses = {
            "element": F.cross_entropy(element_logits, targets["element"]),
            "site_symmetry": F.cross_entropy(site_symmetry_logits, targets["site_symmetry"][site]),
            "enumeration": F.cross_entropy(enumeration_logits, targets["enumeration"][site]),
        }
        per_token = {}
        for field, logits, where in (("element", element_logits, slice(None)),
                                     ("site_symmetry", site_symmetry_logits, site),
                                     ("enumeration", enumeration_logits, site)):
            per_token[field] = logits.new_zeros(batch, length, logits.shape[-1])
            per_token[field][sequence[where], position[where]] = logits
        return CrystalGenerationModelOutput(
            loss=sum(losses.values()), element_loss=losses["element"], site_symmetry_loss=losses["site_symmetry"],
            enumeration_loss=losses["enumeration"], element_logits=per_token["element"],
            site_symmetry_logits=per_token["site_symmetry"], enumeration_logits=per_token["enumeration"])

    # ------------------------------------------------------------------------------------------- sampling

    @torch.inference_mode()
    def generate(self, num_samples: int = 1, space_group: int | Sequence[int] | None = None,
                 temperature: float | None = None, seed: int | None = None,
                 allowed_elements: Sequence[str | int] | None = None,
                 required_elements: Sequence[str | int] | None = None, max_sites: int | None = None,
                 batch_size: int | None = None, tokenizer: Any = None) -> GeneratedCrystals | list[Any]:
        """Sample ``num_samples`` crystals, valid by construction.

        Args:
            space_group: a group number (1-230) for every sample, or one number per sample; ``None`` samples
                each group from the training prior ``config.space_group_counts``.
            temperature: softmax temperature (default ``config.sampling_temperature``).
            seed: seeds a ``torch.Generator`` on the model's device, so equal seeds give equal samples
                (for the same ``batch_size`` and device).
            allowed_elements: element symbols (or element token ids) that sites may hold.
            required_elements: symbols/ids every sample must contain: STOP waits until all are present,
                and the last free site slots are reserved for the ones still missing.
            max_sites: most sites per sample (default ``config.max_sites``).
            batch_size: samples per batch (default 2048: on a 2-core CPU larger batches are no faster,
                and memory stays bounded; results depend on it, as the random stream is shared).
            tokenizer: a ``WyckoffTokenizer``; given, the samples come back decoded as representations.

        Masks keep every sample valid: site symmetries and enumerations of the sample's group only, each
        0-dof position used by at most one site, STOP never first and forced at ``max_sites``.
        """
        config = self.config
        max_sites = config.max_sites if max_sites is None else max_sites
        temperature = config.sampling_temperature if temperature is None else temperature
        if num_samples < 1 or max_sites < 1 or temperature <= 0 or (batch_size is not None and batch_size < 1):
            raise ValueError(f"need num_samples, max_sites, batch_size ≥ 1 and temperature > 0, got {num_samples}, "
                             f"{max_sites}, {batch_size}, {temperature}")
        generator = torch.Generator(device=self.device)
        if seed is None:
            generator.seed()
        else:
            generator.manual_seed(seed)
        element_allowed = torch.zeros(config.element_vocab_size, dtype=torch.bool, device=self.device)
        allowed = self._element_ids(allowed_elements, "allowed_elements")
        element_allowed[config.mask_token_id + 1:] = allowed is None
        if allowed is not None:
            element_allowed[allowed] = True
        required = self._element_ids(required_elements, "required_elements")
        if required is None:
            required = torch.zeros(0, dtype=torch.long, device=self.device)
        elif not element_allowed[required].all() or len(required) > max_sites:
            raise ValueError(f"required_elements {required_elements} must be among the allowed elements and "
                             f"number at most max_sites={max_sites}")
        space_groups = self._space_group_ids(space_group, num_samples, generator)
        step = batch_size or DEFAULT_GENERATION_BATCH_SIZE
        was_training = self.training
        self.eval()
        try:
            chunks = [self._sample_batch(space_groups[start:start + step], element_allowed, required, max_sites,
                                         temperature, generator) for start in range(0, num_samples, step)]
        finally:
            self.train(was_training)
        width = max(chunk["attention_mask"].shape[1] for chunk in chunks)
        output = GeneratedCrystals(**{key: torch.cat([F.pad(chunk[key], (0, width - chunk[key].shape[1]))
                                                      for chunk in chunks]) for key in chunks[0]})
        return output if tokenizer is None else tokenizer.decode(output)

    def _element_ids(self, elements: Sequence[str | int] | None, argument: str) -> torch.Tensor | None:
        """Element symbols or element token ids → sorted unique ids; a ValueError names any unknown one."""
        if elements is None:
            return None
        first, vocabulary = self.config.mask_token_id + 1, self.config.element_vocabulary or []
        ids = set()
        for element in elements:
            index = vocabulary.index(element) if isinstance(element, str) and element in vocabulary else element
            if isinstance(index, str) or not first <= int(index) < self.config.element_vocab_size:
                raise ValueError(f"{argument}: {element!r} is not an element symbol or element id of the vocabulary")
            ids.add(int(index))
        if not ids:
            raise ValueError(f"{argument} is empty")
        return torch.tensor(sorted(ids), dtype=torch.long, device=self.device)

    def _space_group_ids(self, space_group: int | Sequence[int] | None, num_samples: int,
                         generator: torch.Generator) -> torch.Tensor:
        """Group numbers → ids (the three specials come first, so id = number + 2); ``None`` → the prior."""
        if space_group is None:
            return torch.multinomial(self.tables.space_group_log_prior.exp(), num_samples, replacement=True,
                                     generator=generator)
        numbers = [space_group] * num_samples if isinstance(space_group, int) else [int(n) for n in space_group]
        if len(numbers) != num_samples:
            raise ValueError(f"space_group lists {len(numbers)} groups for {num_samples} samples")
        real = self.tables.exists.flatten(1).any(1)
        for number in numbers:
            index = number + self.config.mask_token_id
            if not 0 < index < len(real) or not real[index]:
                raise ValueError(f"space_group {number} is not a space group of this model's tables (1-230)")
        return torch.tensor(numbers, dtype=torch.long, device=self.device) + self.config.mask_token_id

    def _sample_field(self, field: str, state: dict[str, torch.Tensor], position: int, allowed: torch.Tensor,
                      temperature: float, generator: torch.Generator) -> torch.Tensor:
        """Sample ``field`` of token ``position`` for every row under the mask ``allowed``.

        Rows with a single allowed value take it without an encoder pass: the masked softmax is one-hot
        there, so this is exact, and it skips most enumeration passes (most site symmetries occur once
        per group) and every forced element or STOP.
        """
        choice = allowed.to(torch.uint8).argmax(-1)
        open_rows = (allowed.sum(-1) > 1).nonzero().squeeze(1)
        if len(open_rows):
            inputs = {key: value[open_rows, : position + 1] for key, value in state.items()}
            logits = self.heads[field](self.model(**inputs).last_hidden_state[:, position]).float() / temperature
            probabilities = logits.masked_fill(~allowed[open_rows], -torch.inf).softmax(-1)
            choice[open_rows] = torch.multinomial(probabilities, 1, generator=generator).squeeze(1)
        return choice

    def _sample_batch(self, space_groups: torch.Tensor, element_allowed: torch.Tensor, required: torch.Tensor,
                      max_sites: int, temperature: float, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """One batch of samples, token by token and field by field; finished rows leave the batch."""
        config, device = self.config, space_groups.device
        count, width = len(space_groups), max_sites + 1
        state = {key: torch.zeros(count, width, dtype=torch.long, device=device) for key in FIELD_INPUTS}
        state["space_group_ids"][:] = space_groups[:, None]
        output = {key: value.clone() for key, value in state.items()}
        rows = torch.arange(count, device=device)
        used = torch.zeros(count, self.tables.exists[0].numel(), dtype=torch.long, device=device)
        missing = torch.ones(count, len(required), dtype=torch.bool, device=device)
        for position in range(width):
            for key in CASCADE_HIDDEN["element"]:
                state[key][:, position] = 0 if key in ("multiplicity", "dof") else config.mask_token_id
            allowed = element_allowed.expand(len(rows), -1).clone()
            num_missing = missing.sum(1)
            allowed[:, config.stop_token_id] = (position > 0) & (num_missing == 0)
            if position == max_sites:
                allowed[:] = False
                allowed[:, config.stop_token_id] = True
            forced = (num_missing > 0) & (num_missing == max_sites - position)
            if forced.any():
                allowed[forced] = torch.zeros_like(allowed[forced]).scatter_(
                    1, required.expand(int(forced.sum()), -1), missing[forced])
            element = self._sample_field("element", state, position, allowed, temperature, generator)
            stop = element == config.stop_token_id
            if stop.any():
                for key in ("element_ids", "site_symmetry_ids", "enumeration_ids"):
                    state[key][stop, position] = config.stop_token_id
                for key, value in state.items():
                    output[key][rows[stop]] = value[stop]
                keep = ~stop
                rows, element, used, missing = rows[keep], element[keep], used[keep], missing[keep]
                state = {key: value[keep] for key, value in state.items()}
                if not len(rows):
                    break
            state["element_ids"][:, position] = element
            missing &= element[:, None] != required[None, :]
            group = state["space_group_ids"][:, 0]
            available = self.tables.available(group, used)
            site_symmetry = self._sample_field("site_symmetry", state, position, available.any(-1), temperature,
                                               generator)
            state["site_symmetry_ids"][:, position] = site_symmetry
            enumeration = self._sample_field("enumeration", state, position,
                                             available[torch.arange(len(rows), device=device), site_symmetry],
                                             temperature, generator)
            state["enumeration_ids"][:, position] = enumeration
            state["multiplicity"][:, position] = self.tables.multiplicity[group, site_symmetry, enumeration]
            state["dof"][:, position] = self.tables.dof[group, site_symmetry, enumeration]
            used = self.tables.mark_used(used, group, site_symmetry, enumeration, torch.ones_like(element).bool())
        output["attention_mask"] = (output["element_ids"] != config.pad_token_id).long()
        output["space_group_ids"] *= output["attention_mask"]
        length = int(output["attention_mask"].sum(1).max())
        return {key: value[:, :length] for key, value in output.items()}
