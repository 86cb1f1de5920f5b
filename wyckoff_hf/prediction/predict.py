"""Crystal properties from the Wyckoff representation: load a property model, predict batches, name the columns.

A property model is a ``WyckoffTransformerForPropertyPrediction`` checkpoint (``AutoModelForSequenceClassification``)
with its tokenizer. Its outputs become named columns, from ``config.id2label``:

- regression: one column per property, in the label's units (the model undoes its own standardisation); a property
  that cannot be negative (``non_negative_labels``: band gap, energy above hull) is clamped at 0, since the regression
  head is unbounded and gave metals band gaps down to -0.004 eV;
- single-label classification: ``p_{class}`` per class (softmax) and ``label``, the likeliest class;
- multi-label classification: ``p_{class}`` per class (independent sigmoids).

Several models make one table; a column name two models share is qualified with the model's name, so two band
gap models give ``band_gap [model_a]`` and ``band_gap [model_b]``.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from ..generation.jobs import load_checkpoint, resolve_model_source
from ..generation.support import NON_NEGATIVE_PROPERTIES
from ..tokenization import InvalidRepresentationError, WyckoffError, WyckoffRepresentation, WyckoffTokenizer
from ..utils.model_kind import PREDICTOR, check_model_kind

DEFAULT_BATCH_SIZE = 512  # crystals per forward pass: a few MB of activations for the default model size
PROBLEM_TYPES = ("regression", "single_label_classification", "multi_label_classification")
UNITS = {"formation_energy_per_atom": "eV/atom", "e_above_hull": "eV/atom", "energy_per_atom": "eV/atom",
         "band_gap": "eV"}
LABEL_COLUMN = "label"


def problem_type(config: Any) -> str:
    """The checkpoint's task; an unset ``problem_type`` is inferred as transformers does at inference (one label:
    regression, else classes)."""
    kind = config.problem_type or ("regression" if config.num_labels == 1 else "single_label_classification")
    if kind not in PROBLEM_TYPES:
        raise ValueError(f"problem_type {kind!r} is not one of {PROBLEM_TYPES}")
    return kind


def property_names(config: Any) -> list[str]:
    """The labels of the model's outputs, in output order (``config.id2label``)."""
    return [str(config.id2label[i]) for i in range(config.num_labels)]


def non_negative_labels(config: Any) -> list[str]:
    """The regression outputs clamped at 0: ``config.non_negative_labels`` where the checkpoint sets it (a list; empty
    turns clamping off), else the labels among ``NON_NEGATIVE_PROPERTIES``, so checkpoints saved before the field
    existed are covered too."""
    names = property_names(config)
    listed = getattr(config, "non_negative_labels", None)
    if listed is None:
        return [name for name in names if name in NON_NEGATIVE_PROPERTIES]
    unknown = sorted(set(listed) - set(names))
    if unknown:
        raise ValueError(f"config.non_negative_labels names {unknown}, which are not among the model's labels {names}")
    return list(listed)


def output_columns(config: Any) -> list[str]:
    """The columns one model contributes to a prediction table (see the module docstring)."""
    names = property_names(config)
    kind = problem_type(config)
    if kind == "regression":
        return names
    probabilities = [f"p_{name}" for name in names]
    return [*probabilities, LABEL_COLUMN] if kind == "single_label_classification" else probabilities


def rows_from_logits(logits: torch.Tensor, config: Any) -> list[dict[str, float | str]]:
    """``(batch, num_labels)`` logits → one dict per crystal, keyed by ``output_columns(config)``."""
    kind, names = problem_type(config), property_names(config)
    columns = output_columns(config)
    if kind == "regression":
        values = logits.float().cpu().numpy().copy()  # a view of a CPU tensor otherwise: clamp a copy, not the logits
        clamped = [names.index(name) for name in non_negative_labels(config)]
        values[:, clamped] = np.maximum(values[:, clamped], 0.0)
        return [dict(zip(columns, map(float, row), strict=True)) for row in values]
    probabilities = (logits.float().softmax(-1) if kind == "single_label_classification"
                     else logits.float().sigmoid()).cpu().numpy()
    rows: list[dict[str, float | str]] = []
    for row in probabilities:
        values: dict[str, float | str] = {f"p_{name}": float(p) for name, p in zip(names, row, strict=True)}
        if kind == "single_label_classification":
            values[LABEL_COLUMN] = names[int(np.argmax(row))]
        rows.append(values)
    return rows


@torch.inference_mode()
def predict_properties(model: Any, tokenizer: WyckoffTokenizer, representations: Sequence[WyckoffRepresentation],
                       batch_size: int = DEFAULT_BATCH_SIZE) -> list[dict[str, float | str]]:
    """Per crystal, the model's outputs by column name, in input order.

    A crystal the tokenizer cannot encode (an element outside its vocabulary, more than its ``max_sites`` sites)
    raises an ``InvalidRepresentationError`` naming its index; ``PropertyPredictor.check`` finds those first.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    rows: list[dict[str, float | str]] = []
    for start in range(0, len(representations), batch_size):
        encodings = []
        for index, representation in enumerate(representations[start:start + batch_size], start=start):
            try:
                encodings.append(tokenizer.encode(representation))
            except WyckoffError as err:
                raise InvalidRepresentationError(f"item {index} ({representation}): {err}") from err
        batch = tokenizer.pad(encodings, return_tensors="pt").to(model.device)
        rows += rows_from_logits(model(**batch).logits, model.config)
    return rows


@dataclass
class PropertyPredictor:
    """A property model, its tokenizer and the name it goes by in tables (the folder or Hub id it was loaded from)."""

    model: Any
    tokenizer: WyckoffTokenizer
    name: str

    @classmethod
    def from_pretrained(cls, model: str | os.PathLike, device: str | None = None) -> PropertyPredictor:
        """Load a saved property model (local folder or Hub id) with ``load_generator``'s one-line errors; a
        checkpoint of another kind (a generator) is refused, since its missing head would predict noise."""
        from transformers import AutoModelForSequenceClassification

        # refuse before transformers loads (and warns about) the weights, and again once loaded (a Hub id not cached)
        check_model_kind(resolve_model_source(model), PREDICTOR, model)
        loaded, tokenizer = load_checkpoint(AutoModelForSequenceClassification, model, device)
        if PREDICTOR not in (loaded.config.architectures or []):
            raise ValueError(f"{model} is not a property predictor: its architectures are {loaded.config.architectures}"
                             f", not [{PREDICTOR!r}]")
        problem_type(loaded.config)
        return cls(loaded, tokenizer, str(model))

    @property
    def columns(self) -> list[str]:
        return output_columns(self.model.config)

    @property
    def problem_type(self) -> str:
        return problem_type(self.model.config)

    def check(self, representation: WyckoffRepresentation) -> None:
        """``WyckoffError`` with the reason when this model's tokenizer cannot encode ``representation``."""
        self.tokenizer.encode(representation)

    def predict(self, representations: Sequence[WyckoffRepresentation],
                batch_size: int = DEFAULT_BATCH_SIZE) -> list[dict[str, float | str]]:
        """Per crystal, the outputs by column name (``columns``)."""
        return predict_properties(self.model, self.tokenizer, representations, batch_size)


def table_columns(predictors: Sequence[PropertyPredictor]) -> list[dict[str, str]]:
    """Per predictor, its own column name → its name in the joint table (qualified where two models share it)."""
    counts = Counter(column for predictor in predictors for column in predictor.columns)
    names = [{column: column if counts[column] == 1 else f"{column} [{predictor.name}]" for column in predictor.columns}
             for predictor in predictors]
    repeated = [name for name, count in Counter(name for mapping in names for name in mapping.values()).items()
                if count > 1]
    if repeated:
        raise ValueError(f"two models would write the column {repeated[0]!r}: is one model given twice?")
    return names


@dataclass(frozen=True)
class Unpredicted:
    """Why one model left a crystal's cells empty: the row, the model's name, the tokenizer's reason."""

    row: int
    model: str
    reason: str


def predict_table(predictors: Sequence[PropertyPredictor], representations: Sequence[WyckoffRepresentation],
                  batch_size: int = DEFAULT_BATCH_SIZE) -> tuple[pd.DataFrame, list[Unpredicted]]:
    """All predictors' columns for ``representations`` (one row each, in order) and why cells are empty.

    A crystal that one model cannot encode (see ``PropertyPredictor.check``) keeps its row, with empty cells (NaN)
    in that model's columns, and is listed in the returned ``Unpredicted`` records.
    """
    frame = pd.DataFrame(index=range(len(representations)))
    problems: list[Unpredicted] = []
    for predictor, names in zip(predictors, table_columns(predictors), strict=True):
        encodable = []
        for row, representation in enumerate(representations):
            try:
                predictor.check(representation)
                encodable.append(row)
            except WyckoffError as err:
                problems.append(Unpredicted(row, predictor.name, str(err)))
        outputs = pd.DataFrame(predictor.predict([representations[row] for row in encodable], batch_size),
                               index=encodable, columns=predictor.columns)
        for column, name in names.items():
            frame[name] = outputs[column].reindex(frame.index)
    return frame, problems


def summarise(frame: pd.DataFrame, predictors: Sequence[PropertyPredictor]) -> str:
    """One line: the median of every regression column (with its unit), the share of each predicted class."""
    parts = []
    for predictor, names in zip(predictors, table_columns(predictors), strict=True):
        if predictor.problem_type == "regression":
            for column, name in names.items():
                unit = UNITS.get(column, "")
                parts.append(f"median {name} {frame[name].median():.3f}{' ' + unit if unit else ''}")
        elif predictor.problem_type == "single_label_classification":
            shares = frame[names[LABEL_COLUMN]].value_counts(normalize=True)
            parts.append(f"{names[LABEL_COLUMN]}: " + ", ".join(f"{label} {share:.1%}" for label, share in
                                                                   shares.items()))
        else:
            parts += [f"mean {name} {frame[name].mean():.3f}" for name in names.values()]
    return "; ".join(parts)

