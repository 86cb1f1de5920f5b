"""What differs between training a generator and a property predictor, as one ``Task`` object each: the model
built, the dataset columns the collator reads, the loss terms and metrics of a batch, and the last step on the
best model. The loop in ``loop.py`` serves both without knowing which it runs."""

from __future__ import annotations

import math
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from datasets import Dataset
from transformers import BatchEncoding, PreTrainedModel

from wyckoff_hf.modeling import (
    WyckoffTransformerConfig,
    WyckoffTransformerForCrystalGeneration,
    WyckoffTransformerForPropertyPrediction,
)
from wyckoff_hf.tokenization import WyckoffTokenizer
from wyckoff_hf.training.calibration import calibrate_checkpoint

from .arguments import ModelArguments, TaskArguments, TrainArguments

FIELD_LOSSES = ("element_loss", "site_symmetry_loss", "enumeration_loss")

FIRST_IDS_SHOWN = 5


def column_values(split: Dataset, columns: Sequence[str]) -> np.ndarray:
    """``(rows, len(columns))`` float64 values of a split, NaN where a row has none."""
    return np.asarray([split[column] for column in columns], dtype=float).reshape(len(columns), len(split)).T


def feature_values(features: Sequence[dict[str, Any]], columns: Sequence[str]) -> torch.Tensor:
    """``(batch, len(columns))`` float32 values of a loader's rows, NaN where a row has none."""
    return torch.tensor([[math.nan if row[column] is None else float(row[column]) for column in columns]
                         for row in features], dtype=torch.float32)


def missing_values(split: Dataset, columns: Sequence[str]) -> np.ndarray:
    """Which rows lack a value of any of ``columns`` (missing or NaN)."""
    return np.isnan(column_values(split, columns)).any(axis=1)


def missing_note(split: Dataset, missing: np.ndarray, columns: Sequence[str], split_name: str, outcome: str) -> str:
    """One line saying how many rows lack a value and what became of them, with the first few ids."""
    ids = split["material_id"] if "material_id" in split.column_names else range(len(split))
    first = ", ".join(str(ids[i]) for i in np.flatnonzero(missing)[:FIRST_IDS_SHOWN])
    return (f"{split_name}: {missing.sum()} of {len(split)} rows have no value of {', '.join(columns)}, "
            f"{outcome} (first: {first})")


def standardisation(split: Dataset, columns: Sequence[str], option: str) -> tuple[list[float], list[float]]:
    """Mean and standard deviation of each column over the training split's known values: the scale on which
    the model sees them."""
    values = column_values(split, columns)
    mean, std = np.nanmean(values, axis=0), np.nanstd(values, axis=0)
    for name, spread in zip(columns, std, strict=True):
        if not spread > 0:  # also NaN: no value at all
            sys.exit(f"train.py: error: {option} {name}: the training split's values have no spread to "
                     f"standardise with (std {spread})")
    return mean.tolist(), std.tolist()


class Task(Protocol):
    """What differs between training a generator and a property predictor; ``main``'s loop serves both.

    ``batch_statistics`` returns, for every loss term and then every metric, its mean over the batch and the
    number of predictions that mean is over: the loop weights each loss term by its share of the global batch's
    predictions and sums means × counts exactly across processes (``Totals``)."""

    loss_terms: tuple[str, ...]  # summed into the loss
    metric_names: tuple[str, ...]  # logged beside the loss, not trained on
    columns: list[str]  # the dataset columns the collator reads besides the tokens
    usage: str  # how to use the saved model, with an {output_dir} placeholder

    def select_rows(self, split: Dataset, split_name: str) -> tuple[Dataset, str | None]: ...

    def build_model(self, tokenizer: WyckoffTokenizer, train_split: Dataset,
                    overrides: dict[str, Any]) -> PreTrainedModel: ...

    def collate(self, features: list[dict[str, Any]]) -> BatchEncoding: ...

    def batch_statistics(self, output: Any, batch: BatchEncoding) -> tuple[torch.Tensor, torch.Tensor]: ...

    def finish(self, output_dir: Path, args: TrainArguments, train_split: Dataset,
               validation_split: Dataset) -> tuple[PreTrainedModel, dict[str, Any]]: ...


def prediction_counts(batch: BatchEncoding, stop_token_id: int) -> torch.Tensor:
    """How many predictions each field loss of ``FIELD_LOSSES`` averages over: the element head predicts every
    token (STOP included), the site-symmetry and enumeration heads the site tokens."""
    mask = batch["attention_mask"].bool()
    sites = (mask & (batch["element_ids"] != stop_token_id)).sum()
    return torch.stack([mask.sum(), sites, sites]).float()


def field_losses(output: Any) -> torch.Tensor:
    """The cascade's three field losses of a model output, in ``FIELD_LOSSES`` order."""
    return torch.stack([getattr(output, name) for name in FIELD_LOSSES])


class GenerationTask:
    """A crystal generator: the cascade's three cross-entropies, each a mean over its own predictions.

    With ``conditions`` (dataset columns), a conditional generator: the config gets their names and the training
    split's mean and std, and the collator adds each crystal's values as ``conditions``, NaN (unknown to the
    model) where a row has none. A sampling temperature is calibrated at the end, as for the plain generator.
    """

    loss_terms = FIELD_LOSSES
    metric_names: tuple[str, ...] = ()
    usage = "from_pretrained, or `wyckoff-hf generate --model {output_dir}`"

    def __init__(self, tokenizer: WyckoffTokenizer, conditions: Sequence[str] = ()) -> None:
        self.tokenizer, self.columns = tokenizer, list(conditions)

    def select_rows(self, split: Dataset, split_name: str) -> tuple[Dataset, str | None]:
        """Every row: a missing condition is an unknown one, which the model is trained with anyway."""
        missing = missing_values(split, self.columns) if self.columns else None
        if missing is None or not missing.any():
            return split, None
        return split, missing_note(split, missing, self.columns, split_name, "kept with that condition unknown")

    def build_model(self, tokenizer: WyckoffTokenizer, train_split: Dataset,
                    overrides: dict[str, Any]) -> WyckoffTransformerForCrystalGeneration:
        """A fresh model built for the tokenizer's tables, sampling space groups from the training split's prior
        and keeping its samples' number of distinct elements and of atoms per primitive cell within the split's
        ranges (a binary/ternary split gives (2, 3): ``generate`` then never writes a unary or a quaternary
        crystal; MP-20 gives at most 20 atoms)."""
        conditioning = {}
        if self.columns:
            mean, std = standardisation(train_split, self.columns, "--condition")
            conditioning = {"condition_names": self.columns, "condition_mean": mean, "condition_std": std}
        model = WyckoffTransformerForCrystalGeneration(
            WyckoffTransformerConfig.from_tokenizer(tokenizer, **conditioning, **overrides))
        counts = Counter(train_split["space_group"])
        model.generation_config.space_group_counts = [counts.get(int(token), 0) if token.isdigit() else 0
                                                      for token in tokenizer.vocabularies["space_group"]]
        element_counts = [len(set(elements)) for elements in train_split["site_elements"]]
        model.generation_config.num_elements_range = [min(element_counts), max(element_counts)]
        lattice_points = dict(zip(tokenizer.vocabularies["space_group"], tokenizer.lattice_points(), strict=True))
        atoms = [sum(multiplicities) // lattice_points[str(group)]
                 for group, multiplicities in zip(train_split["space_group"], train_split["multiplicities"],
                                                  strict=True)]
        model.generation_config.num_atoms_range = [min(atoms), max(atoms)]
        model.generation_config.lattice_points = tokenizer.lattice_points()
        return model

    def collate(self, features: list[dict[str, Any]]) -> BatchEncoding:
        batch = self.tokenizer.pad(features, return_tensors="pt")
        if self.columns:
            batch["conditions"] = feature_values(features, self.columns)
        return batch

    def batch_statistics(self, output: Any, batch: BatchEncoding) -> tuple[torch.Tensor, torch.Tensor]:
        return field_losses(output), prediction_counts(batch, self.tokenizer.stop_token_id)

    def finish(self, output_dir: Path, args: TrainArguments, train_split: Dataset,
               validation_split: Dataset) -> tuple[WyckoffTransformerForCrystalGeneration, dict[str, Any]]:
        """Calibrate the best model's sampling temperature and STOP shifts (unconditional samples for a conditional
        model), on the GPU where there is one: calibration samples some 300,000 crystals."""
        device = torch.accelerator.current_accelerator() if torch.accelerator.is_available() else "cpu"
        model = WyckoffTransformerForCrystalGeneration.from_pretrained(output_dir).eval().to(device)
        temperatures = [float(t) for t in args.calibration_temperatures.split(",") if t.strip()]
        calibration = None
        if temperatures:
            calibration = calibrate_checkpoint(model, self.tokenizer, validation_split, temperatures,
                                               args.calibration_rows, args.calibration_samples_per_row, args.seed,
                                               args.calibration_stop_rounds)
            model.save_pretrained(output_dir)
        return model, {"sampling_temperature": model.generation_config.temperature, "calibration": calibration,
                       **self.support(train_split)}

    def support(self, train_split: Dataset) -> dict[str, Any]:
        """What the training split covers, for ``generation.support``'s warnings: the number of training crystals
        holding each element (``element_counts``) and each condition's (min, max) (``condition_ranges``)."""
        holding = Counter(element for elements in train_split["site_elements"] for element in set(elements))
        ranges = {}
        for column in self.columns:
            values = column_values(train_split, [column])[:, 0]
            values = values[~np.isnan(values)]
            ranges[column] = [float(values.min()), float(values.max())]
        return {"element_counts": dict(sorted(holding.items())), **({"condition_ranges": ranges} if ranges else {})}


class PropertyTask:
    """A property predictor (``WyckoffTransformerForPropertyPrediction``, ``AutoModelForSequenceClassification``).

    Regression of ``targets`` (one output each, in its own units; the loss is on the training split's
    standardised scale, so targets in eV and eV/atom weigh alike), or, with ``threshold``, two classes:
    ``target > threshold`` (1) or not (0). Rows without a value are skipped (reported). The loss is a mean over
    crystals, so it is weighted by crystals across processes; the metrics are each target's mean absolute error
    in its units, or the accuracy. No sampling, so no temperature calibration.
    """

    loss_terms = ("loss",)
    usage = ("`import wyckoff_hf; AutoModelForSequenceClassification.from_pretrained({output_dir!r})`, "
             "inputs from `AutoTokenizer.from_pretrained({output_dir!r})`")

    def __init__(self, tokenizer: WyckoffTokenizer, targets: Sequence[str], threshold: float | None = None,
                 init_from: str | None = None) -> None:
        self.tokenizer, self.columns, self.threshold, self.init_from = tokenizer, list(targets), threshold, init_from
        self.metric_names = ("accuracy",) if threshold is not None else tuple(f"mae/{t}" for t in self.columns)

    def select_rows(self, split: Dataset, split_name: str) -> tuple[Dataset, str | None]:
        """The rows with a value of every target; the others are skipped, and the note names them."""
        missing = missing_values(split, self.columns)
        if not missing.any():
            return split, None
        return (split.select(np.flatnonzero(~missing)),
                missing_note(split, missing, self.columns, split_name, "skipped"))

    def label_config(self, train_split: Dataset) -> dict[str, Any]:
        """The config's label fields: names, problem type and, for regression, the training split's scale."""
        if self.threshold is None:
            mean, std = standardisation(train_split, self.columns, "--target")
            names = self.columns
            scale = {"problem_type": "regression", "label_mean": mean, "label_std": std}
        else:
            (target,) = self.columns
            names = [f"{target} <= {self.threshold}", f"{target} > {self.threshold}"]
            scale = {"problem_type": "single_label_classification"}
        return {"num_labels": len(names), "id2label": dict(enumerate(names)),
                "label2id": {name: index for index, name in enumerate(names)}, **scale}

    def build_model(self, tokenizer: WyckoffTokenizer, train_split: Dataset,
                    overrides: dict[str, Any]) -> WyckoffTransformerForPropertyPrediction:
        """A fresh predictor, or (``init_from``) one whose encoder starts from a saved model's, head fresh."""
        if self.init_from:
            return WyckoffTransformerForPropertyPrediction.from_pretrained(self.init_from,
                                                                           **self.label_config(train_split))
        config = WyckoffTransformerConfig.from_tokenizer(tokenizer, **self.label_config(train_split), **overrides)
        return WyckoffTransformerForPropertyPrediction(config)

    def labels(self, values: torch.Tensor) -> torch.Tensor:
        """``(batch, targets)`` values as the model's labels: themselves, or the class of the one target."""
        return values if self.threshold is None else (values[:, 0] > self.threshold).long()

    def collate(self, features: list[dict[str, Any]]) -> BatchEncoding:
        batch = self.tokenizer.pad(features, return_tensors="pt")
        batch["labels"] = self.labels(feature_values(features, self.columns))
        return batch

    def batch_statistics(self, output: Any, batch: BatchEncoding) -> tuple[torch.Tensor, torch.Tensor]:
        logits, labels = output.logits.detach().float(), batch["labels"]
        if self.threshold is None:
            metrics = (logits - labels).abs().mean(0)
        else:
            metrics = (logits.argmax(-1) == labels).float().mean()[None]
        means = torch.cat([output.loss.float()[None], metrics])
        return means, torch.full_like(means, len(labels))

    def finish(self, output_dir: Path, args: TrainArguments, train_split: Dataset,
               validation_split: Dataset) -> tuple[WyckoffTransformerForPropertyPrediction, dict[str, Any]]:
        """The best model, and the validation metrics of the trivial predictor to compare it with: the training
        split's mean of each target (regression) or its majority class (classification)."""
        model = WyckoffTransformerForPropertyPrediction.from_pretrained(output_dir)
        train, validation = (self.labels(torch.from_numpy(column_values(split, self.columns)))
                             for split in (train_split, validation_split))
        if self.threshold is None:
            errors = (validation - train.mean(0)).abs().mean(0).tolist()
            baseline = {f"validation/mae/{target}": error for target, error in zip(self.columns, errors, strict=True)}
        else:
            majority = train.bincount(minlength=2).argmax()
            baseline = {"validation/accuracy": (validation == majority).double().mean().item()}
        return model, {"targets": self.columns, "classification_threshold": self.threshold,
                       "baseline_validation": baseline}


def make_task(task_args: TaskArguments, model_args: ModelArguments, tokenizer: WyckoffTokenizer) -> Task:
    if task_args.task == "property":
        return PropertyTask(tokenizer, task_args.targets, task_args.classification_threshold, model_args.init_from)
    return GenerationTask(tokenizer, task_args.conditions)
