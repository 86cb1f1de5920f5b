"""``WyckoffTransformerConfig``: the hyper-parameters of the WyckoffTransformer.

This file is copied next to the weights for ``trust_remote_code`` and must import nothing from
``wyckoff_hf``. Build the config from a tokenizer with ``WyckoffTransformerConfig.from_tokenizer(WyckoffTokenizer(),
...)``: the crystallographic tables it hands over (every Wyckoff position of every group as id rows, the canonical
order of the elements) are construction inputs only. The model keeps them as buffers in ``model.safetensors``
(``tables.wyckoff_positions``, ``tables.element_rank``, ``model.embeddings.element_descriptor_table``), so
``config.json`` stays small and readable; what a saved config keeps of them is their shapes
(``num_wyckoff_positions``, ``element_descriptor_size``). Sampling defaults (temperature, the
space-group prior p(S)) are not hyper-parameters of the network and live in ``generation_config.json``
(``model.generation_config``), the way transformers models keep them.

Default size (d_model = 32 + 48 + 32 + 8 + 8 = 128, 3 pre-LN layers, 4 heads, feed-forward 256, about
0.5 M parameters): the MP-20 data are ~27k crystals of a handful of sites each, so a small encoder is
enough to fit them, and generation re-encodes the prefix once per cascade step, so its cost is linear in
the model size; this size is what keeps CPU generation at thousands of crystals per second
(``scripts/benchmarks/benchmark_generation.py``). The element embedding is the widest because the element vocabulary
is the largest and the hardest field to predict; the enumeration (0..7) needs only a few dimensions.

``max_sites`` = 20: MP-20 holds at most 20 atoms per cell, hence at most 20 Wyckoff sites. It is part of the
model's distribution, not only a sampling default: both the loss and ``generate`` force STOP after that many
sites (one mask builder). Raise it for larger cells (MPTS-52 needs up to 52).
"""

import re
from typing import Any

from huggingface_hub.dataclasses import strict
from huggingface_hub.errors import StrictDataclassClassValidationError, StrictDataclassFieldValidationError
from transformers import PreTrainedConfig

CONSTRUCTION_ONLY = ("wyckoff_positions", "element_canonical_order", "element_descriptor_table")
CONDITION_FIELDS = ("condition_names", "condition_mean", "condition_std", "condition_embedding_size",
                    "condition_dropout_prob")
LABEL_FIELDS = ("label_mean", "label_std", "regression_loss")
SITE_ORDERS = ("canonical", "any")
# The token layout every model reads: four id fields and two integers derived from the position.
FIELD_INPUTS = ("space_group_ids", "element_ids", "site_symmetry_ids", "enumeration_ids", "multiplicity", "dof")
DERIVED_INPUTS = ("multiplicity", "dof")
# Cascade order: the fields of token i hidden when predicting each of them (the derived integers follow
# from the full position, so they stay hidden until the enumeration is known).
CASCADE_HIDDEN = {
    "element": ("element_ids", "site_symmetry_ids", "enumeration_ids", "multiplicity", "dof"),
    "site_symmetry": ("site_symmetry_ids", "enumeration_ids", "multiplicity", "dof"),
    "enumeration": ("enumeration_ids", "multiplicity", "dof"),
}
SAMPLED_FIELDS = tuple(CASCADE_HIDDEN)  # the cascade's heads, in the order a token samples them
_SCALAR = r'(?:"(?:[^"\\]|\\.)*"|[-+\w.]+)'
# a JSON list of scalars (strings, numbers, literals), as json.dumps(indent=2) spreads it over one line per item
_SCALAR_LIST = re.compile(rf"\[\s*({_SCALAR}(?:,\s*{_SCALAR})*)\s*\]")


@strict
class WyckoffTransformerConfig(PreTrainedConfig):
    r"""
    Configuration of [`WyckoffTransformerModel`], [`WyckoffTransformerForCrystalGeneration`] and
    [`WyckoffTransformerForPropertyPrediction`].

    Every token of a crystal is a tuple of fields (space group, element, site symmetry, enumeration) plus
    two derived integers (multiplicity, dof). Each field has its own embedding; the token vector is their
    concatenation, so ``hidden_size`` (d_model) is the sum of the per-field sizes.

    The space group is a field of *every* token rather than a prefix token: with no positional encoding
    and bidirectional attention, a prefix token would have to be told apart from the sites by its ids
    alone, and each site would see the group only through attention. Concatenated into every token, the
    group conditions every layer directly and the sequence stays a plain set of sites.

    Args:
        space_group_vocab_size, element_vocab_size, site_symmetry_vocab_size, enumeration_vocab_size:
            sizes of the four field vocabularies (each starts with PAD = 0, STOP = 1, MASK = 2).
        space_group_embedding_size, element_embedding_size, site_symmetry_embedding_size,
        enumeration_embedding_size: embedding width of each field.
        derived_feature_size: width of the linear projection of (log(1 + multiplicity), dof).
        num_hidden_layers, num_attention_heads, intermediate_size: encoder shape (pre-LN layers).
        hidden_dropout_prob, attention_dropout: dropout on the residual branches / attention weights.
        layer_norm_eps, initializer_range: LayerNorm epsilon, std of the normal initialisation.
        max_sites: most sites per crystal; STOP is forced after that many, in the loss and in ``generate``.
        site_count_embedding: add a learned embedding of the number of sites before it to the token being predicted
            (the one with a MASK field), and to no other token. Without positional encoding the encoder sees the
            prefix as a set, and attention, which averages, cannot count a set: a prefix of one site repeated looks
            the same at any length, so a sampled crystal that starts repeating a site never stops (1.55 % of the
            samples of a model without it ran to ``max_sites``, 0.10 % with it; 0.14 % of test crystals have 20
            sites). The WyckoffTransformer authors give the masked token its position the same way; the prefix
            stays an unordered set.
        element_descriptors: add a linear projection of each element's chemical descriptors (electronegativity,
            period, group, radius, block, metal, common oxidation states; ``wyckoff_hf.tokenization.
            element_descriptors``) to its learned embedding, so that what the model learns of one element carries
            over to chemically similar ones, rare ones included.
        element_descriptor_size: the number of descriptors per element (the width of
            ``model.embeddings.element_descriptor_table``); set from ``element_descriptor_table`` when
            ``element_descriptors`` is on.
        element_descriptor_table: construction input, not saved: one row of descriptors per element id (zeros for
            the special tokens), which ``from_tokenizer`` takes from the tokenizer when ``element_descriptors`` is on.
        label_smoothing: training regularisation of the generator: each field's cross-entropy is mixed with this
            weight with the mean cross-entropy over the values the masks allow (not over impossible ones). Applied
            in training mode only: the evaluation loss and ``log_likelihood`` stay the true negative log-likelihood.
        element_vocabulary: the element tokens, so that ``generate`` can take element symbols.
        num_wyckoff_positions: rows of the Wyckoff position table (the shape of ``tables.wyckoff_positions``).
        wyckoff_positions: construction input, not saved: every Wyckoff position as ``[space_group_id,
            site_symmetry_id, enumeration_id, multiplicity, dof]``, the rows of one group in ITA letter order
            (``WyckoffTokenizer.wyckoff_position_ids()``).
        element_canonical_order: construction input, not saved: the element ids in the canonical site order of
            the training data (Pauling electronegativity, then Z); sampling keeps sites in this order.
        site_order: ``"canonical"``: the model learns the sites in the canonical order of the data (element rank,
            then the letter within an element), and the masks of the loss and of ``generate`` enforce it, so the
            likelihood of a crystal is that of its one sequence. ``"any"``: the sites come in any order, the masks
            enforce none, and training shows every crystal in a random order drawn afresh each time (``scripts/
            train.py``), as the WyckoffTransformer authors train a permutation-invariant model; a crystal's
            likelihood is then the sum over its orders, and that of one order is a lower bound of it.
        pad_token_id, stop_token_id, mask_token_id: the special ids shared by all fields.
        label_mean, label_std: per-label standardisation of regression targets (property prediction): the
            network fits standardised values, so one learning rate suits eV/atom and eV alike, and its outputs
            come back in the labels' own units. ``None``: 0 and 1.
        regression_loss: ``"l1"`` (the field reports mean absolute errors, and L1 fits them directly, unmoved by
            the long tail of large band gaps) or ``"mse"`` (transformers' default for regression).
        condition_names: the scalar properties a generator is conditioned on (e.g. ``["band_gap"]``); ``None``
            for an unconditional generator. Each crystal's condition vector is embedded and concatenated into
            every token, like the space group, so ``hidden_size`` grows by ``condition_embedding_size``.
        condition_mean, condition_std: standardisation of the conditions (from the training split).
        condition_embedding_size: width of the condition embedding.
        condition_dropout_prob: chance that a condition is dropped (treated as unknown) for a crystal in training,
            so one network learns p(x | c) and p(x) together, as classifier-free guidance needs.
    """

    model_type = "wyckoff_transformer"

    space_group_vocab_size: int = 233
    element_vocab_size: int = 121
    site_symmetry_vocab_size: int = 81
    enumeration_vocab_size: int = 11
    space_group_embedding_size: int = 32
    element_embedding_size: int = 48
    site_symmetry_embedding_size: int = 32
    enumeration_embedding_size: int = 8
    derived_feature_size: int = 8
    num_hidden_layers: int = 3
    num_attention_heads: int = 4
    intermediate_size: int = 256
    hidden_dropout_prob: float | int = 0.1
    attention_dropout: float | int = 0.0
    layer_norm_eps: float = 1e-5
    initializer_range: float = 0.02
    max_sites: int = 20
    site_count_embedding: bool = False
    element_descriptors: bool = False
    element_descriptor_size: int | None = None
    element_descriptor_table: list[list[float]] | None = None
    label_smoothing: float | int = 0.0
    element_vocabulary: list[str] | None = None
    num_wyckoff_positions: int | None = None
    wyckoff_positions: list[list[int]] | None = None
    element_canonical_order: list[int] | None = None
    site_order: str = "canonical"
    pad_token_id: int | None = 0
    stop_token_id: int = 1
    mask_token_id: int = 2
    label_mean: list[float] | None = None
    label_std: list[float] | None = None
    regression_loss: str = "l1"
    condition_names: list[str] | None = None
    condition_mean: list[float] | None = None
    condition_std: list[float] | None = None
    condition_embedding_size: int = 16
    condition_dropout_prob: float | int = 0.2

    def __post_init__(self, **kwargs: Any) -> None:
        if self.wyckoff_positions is not None and self.num_wyckoff_positions is None:
            self.num_wyckoff_positions = len(self.wyckoff_positions)
        if self.element_descriptors and self.element_descriptor_table and self.element_descriptor_size is None:
            self.element_descriptor_size = len(self.element_descriptor_table[0])
        super().__post_init__(**kwargs)

    @property
    def hidden_size(self) -> int:
        """d_model: the concatenated width of all field embeddings."""
        return (self.space_group_embedding_size + self.element_embedding_size + self.site_symmetry_embedding_size
                + self.enumeration_embedding_size + self.derived_feature_size
                + (self.condition_embedding_size if self.condition_names else 0))

    def validate_architecture(self) -> None:
        """Part of ``@strict`` validation: shapes and tables that the model could not be built from."""
        if self.hidden_size % self.num_attention_heads != 0:
            raise ValueError(f"hidden_size {self.hidden_size} (the sum of the field embedding sizes) is not a "
                             f"multiple of num_attention_heads {self.num_attention_heads}")
        if self.max_sites < 1:
            raise ValueError(f"max_sites must be at least 1, got {self.max_sites}")
        if self.element_vocabulary is not None and len(self.element_vocabulary) != self.element_vocab_size:
            raise ValueError(f"element_vocabulary has {len(self.element_vocabulary)} tokens, "
                             f"element_vocab_size is {self.element_vocab_size}")
        if self.wyckoff_positions is not None and len(self.wyckoff_positions) != self.num_wyckoff_positions:
            raise ValueError(f"wyckoff_positions has {len(self.wyckoff_positions)} rows, "
                             f"num_wyckoff_positions is {self.num_wyckoff_positions}")
        limits = (self.space_group_vocab_size, self.site_symmetry_vocab_size, self.enumeration_vocab_size)
        for row in self.wyckoff_positions or ():
            if len(row) != 5 or not all(0 <= row[k] < limits[k] for k in range(3)):
                raise ValueError(f"wyckoff_positions row {row} is not [space_group_id, site_symmetry_id, "
                                 f"enumeration_id, multiplicity, dof] within the vocabulary sizes {limits}")
        if self.element_descriptors and not self.element_descriptor_size:
            raise ValueError("element_descriptors needs the element_descriptor_table: build the config with "
                             "WyckoffTransformerConfig.from_tokenizer(WyckoffTokenizer(), element_descriptors=True)")
        table = self.element_descriptor_table
        if self.element_descriptors and table is not None and (len(table) != self.element_vocab_size
                                  or any(len(row) != self.element_descriptor_size for row in table)):
            raise ValueError(f"element_descriptor_table must have element_vocab_size={self.element_vocab_size} rows "
                             f"of element_descriptor_size={self.element_descriptor_size} values")
        if not isinstance(self.label_smoothing, int | float) or not 0 <= self.label_smoothing < 1:
            raise ValueError(f"label_smoothing must be a number in [0, 1), got {self.label_smoothing!r}")
        if self.site_order not in SITE_ORDERS:
            raise ValueError(f"site_order must be one of {SITE_ORDERS}, got {self.site_order!r}")
        if self.regression_loss not in ("l1", "mse"):
            raise ValueError(f"regression_loss must be 'l1' or 'mse', got {self.regression_loss!r}")
        for name in ("label_mean", "label_std"):
            values = getattr(self, name)
            if values is not None and len(values) != self.num_labels:
                raise ValueError(f"{name} has {len(values)} values for num_labels={self.num_labels}")
        conditions = self.condition_names or []
        if len(set(conditions)) != len(conditions):
            raise ValueError(f"condition_names {conditions} repeat a name")
        for name in ("condition_mean", "condition_std"):
            values = getattr(self, name)
            if values is not None and len(values) != len(conditions):
                raise ValueError(f"{name} has {len(values)} values for condition_names {conditions}")
        if any(std <= 0 for std in (self.label_std or []) + (self.condition_std or [])):
            raise ValueError("label_std and condition_std must be positive")
        if not 0 <= self.condition_dropout_prob < 1:
            raise ValueError(f"condition_dropout_prob must be in [0, 1), got {self.condition_dropout_prob}")
        order = self.element_canonical_order
        if order is not None and sorted(order) != list(range(self.mask_token_id + 1, self.element_vocab_size)):
            raise ValueError("element_canonical_order must list every element id (all but the special tokens) "
                             "exactly once")

    def to_dict(self) -> dict[str, Any]:
        """As ``PreTrainedConfig.to_dict``, without the tables the model stores as buffers in its weights, and
        without the condition fields of an unconditional model, the label fields of a model without a
        ``problem_type`` or the descriptor width of a model without descriptors (their defaults come back on
        loading): a config shows what applies to its model."""
        output = super().to_dict()
        unused = [*CONSTRUCTION_ONLY, *(() if self.condition_names else CONDITION_FIELDS),
                  *(() if self.problem_type else LABEL_FIELDS),
                  *(() if self.element_descriptors else ("element_descriptor_size",))]
        for key in unused:
            output.pop(key, None)
        return output

    def to_json_string(self, use_diff: bool = True) -> str:
        """As ``PreTrainedConfig.to_json_string`` (so also ``config.json`` and ``print(config)``), with each list of
        plain values on one line: the element vocabulary is one line, not 121."""
        return _SCALAR_LIST.sub(lambda m: "[" + re.sub(rf"({_SCALAR}),\s*", r"\1, ", m.group(1)) + "]",
                                super().to_json_string(use_diff))

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: Any, **kwargs: Any) -> Any:
        """As ``PreTrainedConfig.from_pretrained``, passing the source on (as ``AutoConfig`` does) so that a bad
        field is refused naming its file."""
        kwargs.setdefault("name_or_path", str(pretrained_model_name_or_path))
        return super().from_pretrained(pretrained_model_name_or_path, **kwargs)

    @classmethod
    def from_dict(cls, config_dict: dict[str, Any], **kwargs: Any) -> Any:
        """As ``PreTrainedConfig.from_dict`` (which every ``from_pretrained`` and Auto class goes through), with a
        field of the wrong type or value refused in one line that names the file and the field, instead of the
        validators' multi-line report."""
        try:
            return super().from_dict(config_dict, **kwargs)
        except (StrictDataclassFieldValidationError, StrictDataclassClassValidationError) as err:
            source = kwargs.get("name_or_path") or config_dict.get("name_or_path") or config_dict.get("_name_or_path")
            where = f"{source}/config.json" if source else "config"
            cause = str(err.__cause__ or err).replace("\n", " ")  # the validator's own words name the field
            raise ValueError(f"{where}: {cause}") from None

    @classmethod
    def from_tokenizer(cls, tokenizer: Any, **kwargs: Any) -> "WyckoffTransformerConfig":
        """A config whose vocabularies and tables match ``tokenizer`` (anything with
        ``model_config_kwargs()``, i.e. a ``WyckoffTokenizer``); ``kwargs`` set the other fields."""
        tables = tokenizer.model_config_kwargs(element_descriptors=bool(kwargs.get("element_descriptors")))
        return cls(**{**tables, **kwargs})


def hidden_value(key: str, config: WyckoffTransformerConfig) -> int:
    """What a not-yet-predicted field of the predicted token holds: MASK, or 0 for the derived integers."""
    return 0 if key in DERIVED_INPUTS else config.mask_token_id


__all__ = ["WyckoffTransformerConfig"]
