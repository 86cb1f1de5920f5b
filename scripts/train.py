"""Train a WyckoffTransformer on a prepared crystal dataset with 🤗 Accelerate, on one or several processes.

    python scripts/train.py --dataset DIR_OR_HUB_ID --output-dir runs/NAME [--config model.json] ...
    python scripts/train.py --condition band_gap ...                           # a band-gap-conditional generator
    python scripts/train.py --task property --target formation_energy_per_atom ...        # a property predictor
    python scripts/train.py --task property --target band_gap --classification-threshold 0.0 ...  # a classifier
    accelerate launch --multi_gpu --num_processes 2 scripts/train.py ...   # 2 processes: GPUs (NCCL) or CPUs (gloo)
    torchrun --nproc_per_node 2 scripts/train.py ...                       # the same with torchrun

docs/training.md has the multi-GPU and multi-node commands. Options are named as in
``transformers.TrainingArguments`` where the meaning is the same, and every default reproduces the shipped
model (``wyckoff_hf/pretrained/mp20-biternary``). One loop serves both tasks; what differs (the model, the
batch's extra columns, the loss terms and metrics, the end of the run) is a task object, ``GenerationTask`` or
``PropertyTask``. The run writes

- ``OUTPUT_DIR`` itself: the best model by validation loss (``save_pretrained``: config.json, model.safetensors,
  the modeling code for ``trust_remote_code``; for a generator also generation_config.json with the training
  split's space-group prior and the calibrated sampling temperature), the tokenizer, the model card
  ``README.md``, ``metrics.jsonl`` (every logged value) and ``training_summary.json``;
- ``OUTPUT_DIR/checkpoint-N/`` (N = optimizer steps so far, as ``Trainer`` names them): ``accelerator.save_state``
  plus ``trainer_state.json``, resumed with ``--resume-from-checkpoint latest`` (or a path).

On several processes each global batch (``per_device_train_batch_size`` × processes crystals, drawn by one
length-grouped sampler over the whole split) is cut into one slice per process, and each process weights each
loss term by its share of the global batch's predictions (a property loss predicts once per crystal), so N
processes follow the trajectory of one process with the same global batch (up to float summation order). Only
the main process writes files.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import torch
from accelerate import Accelerator, DataLoaderConfiguration
from accelerate.utils import ProjectConfiguration, set_seed
from datasets import Dataset
from huggingface_hub.errors import StrictDataclassError
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import BatchEncoding, HfArgumentParser, PreTrainedModel, get_cosine_schedule_with_warmup
from transformers.trainer_pt_utils import LengthGroupedSampler

from wyckoff_hf.cards import write_model_card
from wyckoff_hf.cards.model_card import CONFIG_NOT_SHOWN
from wyckoff_hf.data import load_wyckoff_dataset, representation_from_row
from wyckoff_hf.generation.calibration import SAMPLES_PER_ROW, STOP_BIAS_ROUNDS, calibrate_checkpoint
from wyckoff_hf.modeling import (
    WyckoffTransformerConfig,
    WyckoffTransformerForCrystalGeneration,
    WyckoffTransformerForPropertyPrediction,
)
from wyckoff_hf.tokenization import WyckoffTokenizer
from wyckoff_hf.utils.hub import HubRepoError, ensure_hub_repo
from wyckoff_hf.utils.parallel import die_with_parent

FIELD_LOSSES = ("element_loss", "site_symmetry_loss", "enumeration_loss")
# config fields that --task / --target / --condition and the training split set, which --config must leave alone
TASK_CONFIG_FIELDS = ("num_labels", "problem_type", "id2label", "label2id", "label_mean", "label_std",
                      "condition_names", "condition_mean", "condition_std")
# The architecture of the shipped generator, the best of the issue-13 sweep (model_cards/experiments.md): wider
# embeddings and a fourth layer learn the 6,426 MP-20 binaries and ternaries better (validation NLL 2.814 against
# 2.903 nats per site) once dropout 0.3 and weight decay 0.05 hold back the memorising that the default shape
# showed past 30 epochs. The site-count embedding of the predicted token lowers it further (2.801; the validation
# loss per prediction 2.772 against 2.859 for the same recipe without it, at the same epoch and the same time
# limit), and the W1 distance of #sites from 0.360 to 0.246. ``--config FILE`` replaces the recipe as a whole.
# A 36-epoch schedule run to the end fits validation less closely (2.839 against 2.766 per prediction for the shipped
# run, stopped at 40 of 60 epochs) and samples more novel and unique crystals, but fewer stable ones (within
# 0.08 eV/atom of the hull 52.2 % against 59.6 %, S.U.N. 47.8 % against 51.6 %), so the schedule stays at 60.
# Element descriptors (``--config`` with "element_descriptors": true) lower the validation loss on the 36-epoch
# schedule (2.811 against 2.839) but leave the sample metrics where they were, so the recipe leaves them out until a
# full-length run says otherwise (model_cards/experiments.md).
RECIPE_CONFIG = {"space_group_embedding_size": 48, "element_embedding_size": 64, "site_symmetry_embedding_size": 48,
                 "enumeration_embedding_size": 16, "derived_feature_size": 16, "num_hidden_layers": 4,
                 "num_attention_heads": 8, "intermediate_size": 512, "hidden_dropout_prob": 0.3,
                 "attention_dropout": 0.1, "site_count_embedding": True}
CHECKPOINT_PREFIX = "checkpoint-"
STAGING_DIR = ".best-model-staging"
PUSH_IGNORE = [f"{CHECKPOINT_PREFIX}*/*", "runs/*", f"{STAGING_DIR}/*"]
FIRST_IDS_SHOWN = 5


@dataclass
class DataArguments:
    dataset: str = field(default="data_prepared/mp20-biternary-dev",
                         metadata={"help": "prepared dataset folder (scripts/prepare_dataset.py) or Hub dataset id"})
    max_train_rows: int | None = field(default=None, metadata={"help": "use only the first N training rows"})
    max_validation_rows: int | None = field(default=None, metadata={"help": "use only the first N validation rows"})


def column_list(text: str | None) -> list[str]:
    """``"a,b"`` → ``["a", "b"]``; ``None`` → ``[]``."""
    return [name.strip() for name in text.split(",")] if text is not None else []


@dataclass
class TaskArguments:
    task: Literal["generation", "property"] = field(default="generation", metadata={
        "help": "generation: a crystal generator (conditioned on --condition, if given); property: a predictor of "
                "--target from the Wyckoff representation (AutoModelForSequenceClassification)"})
    target: str | None = field(default=None, metadata={
        "help": "property task: the dataset column(s) to predict, comma-separated (one regression output each); "
                "rows without a value are reported and skipped"})
    classification_threshold: float | None = field(default=None, metadata={
        "help": "property task: classify instead of regressing, label 1 when TARGET > THRESHOLD, else 0 "
                "(one --target)"})
    condition: str | None = field(default=None, metadata={
        "help": "generation task: the dataset column(s) to condition on, comma-separated; a row without a value "
                "is kept, its condition unknown to the model"})
    augment_labellings: bool = field(default=False, metadata={
        "help": "train on a random one of each crystal's equivalent Wyckoff labellings (affine normalizer), drawn "
                "afresh every epoch, instead of its canonical labelling; validation stays canonical"})

    @property
    def targets(self) -> list[str]:
        return column_list(self.target)

    @property
    def conditions(self) -> list[str]:
        return column_list(self.condition)


@dataclass
class ModelArguments:
    config: str | None = field(default=None, metadata={
        "help": "JSON file of WyckoffTransformerConfig overrides (layers, heads, embedding sizes, dropout, "
                "regression_loss, condition_embedding_size...), applied to the config's defaults; without it, the "
                "shipped generator's architecture (RECIPE_CONFIG). \"site_order\": \"any\" trains a generator on "
                "every crystal's sites in a random order, drawn afresh every epoch (validation stays canonical)"})
    init_from: str | None = field(default=None, metadata={
        "help": "property task: start from the encoder of this saved WyckoffTransformer (e.g. the generator "
                "trained on the same crystals), with a fresh head; its architecture, so no --config"})


@dataclass
class TrainArguments:
    output_dir: str = field(default="runs/mp20-biternary", metadata={
        "help": "where the final (best) model, its card, the metrics and the checkpoint-N folders go"})
    num_train_epochs: int = field(default=60, metadata={"help": "number of epochs (the length of the cosine schedule)"})
    per_device_train_batch_size: int = field(default=128, metadata={
        "help": "crystals per process per step; the global batch is this × processes × accumulation steps"})
    per_device_eval_batch_size: int = field(default=128, metadata={"help": "validation crystals per process per step"})
    learning_rate: float = field(default=1e-3, metadata={"help": "peak AdamW learning rate"})
    weight_decay: float = field(default=0.05, metadata={"help": "AdamW weight decay"})
    warmup_ratio: float = field(default=0.05, metadata={"help": "fraction of steps of linear warm-up before cosine"})
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "micro-batches per optimizer step"})
    max_grad_norm: float = field(default=1.0, metadata={"help": "gradient clipping"})
    mixed_precision: str | None = field(default=None, metadata={
        "help": "no / fp16 / bf16; default: the launcher's setting, else bf16 on a GPU and no on a CPU"})
    seed: int = field(default=0, metadata={"help": "seeds initialisation, shuffling, dropout and calibration"})
    checkpoint_every_epochs: int = field(default=1, metadata={"help": "save a checkpoint-N folder every N epochs"})
    save_total_limit: int | None = field(default=2, metadata={"help": "keep only the newest N checkpoint folders"})
    resume_from_checkpoint: str | None = field(default=None, metadata={
        "help": "a checkpoint-N folder, or 'latest' for the newest complete one in OUTPUT_DIR"})
    early_stopping_patience: int = field(default=20, metadata={
        "help": "stop after N epochs without a better validation loss"})
    max_train_minutes: float | None = field(default=None, metadata={
        "help": "stop at the end of the first epoch that ends past this wall time (a job's time limit); the best "
                "model so far is kept, though the cosine schedule has not decayed"})
    calibration_temperatures: str = field(default="0.4,0.5,0.6,0.7,0.8,0.9,1.0,1.1,1.2", metadata={
        "help": "generation task: comma-separated candidate sampling temperatures ('' skips calibration)"})
    calibration_rows: int = field(default=2000, metadata={"help": "validation crystals used for calibration"})
    calibration_samples_per_row: int = field(default=SAMPLES_PER_ROW, metadata={
        "help": "crystals sampled per validation crystal (in its space group) for each temperature"})
    calibration_stop_rounds: int = field(default=STOP_BIAS_ROUNDS, metadata={
        "help": "generation task: rounds fitting the STOP-logit shifts that make the sampled number of sites follow "
                "the validation split, at the calibrated temperature (0 skips them)"})
    dataloader_num_workers: int = field(default=0, metadata={"help": "DataLoader worker processes per process"})
    push_to_hub: bool = field(default=False, metadata={"help": "upload the final model and its card at the end"})
    hub_model_id: str | None = field(default=None, metadata={"help": "ORG/NAME of the Hub model repo"})
    hub_private_repo: bool = field(default=False, metadata={"help": "create the Hub repo as private"})
    run_name: str = field(default="wyckoff-transformer", metadata={"help": "tracker run name"})


def check_arguments(parser: HfArgumentParser, data_args: DataArguments, task_args: TaskArguments,
                    args: TrainArguments) -> None:
    """Refuse values that would fail (or silently do nothing) hours later, with argparse's one-line error."""
    at_least = {"--num-train-epochs": (args.num_train_epochs, 1),
                "--per-device-train-batch-size": (args.per_device_train_batch_size, 1),
                "--per-device-eval-batch-size": (args.per_device_eval_batch_size, 1),
                "--gradient-accumulation-steps": (args.gradient_accumulation_steps, 1),
                "--checkpoint-every-epochs": (args.checkpoint_every_epochs, 1),
                "--save-total-limit": (args.save_total_limit, 1),
                "--dataloader-num-workers": (args.dataloader_num_workers, 0),
                "--calibration-stop-rounds": (args.calibration_stop_rounds, 0),
                "--max-train-rows": (data_args.max_train_rows, 1),
                "--max-validation-rows": (data_args.max_validation_rows, 1)}
    for option, (value, minimum) in at_least.items():
        if value is not None and value < minimum:
            parser.error(f"{option} must be at least {minimum}, got {value}")
    if args.max_train_minutes is not None and args.max_train_minutes <= 0:
        parser.error(f"--max-train-minutes must be positive, got {args.max_train_minutes}")
    if args.learning_rate <= 0:
        parser.error(f"--learning-rate must be positive, got {args.learning_rate}")
    if args.push_to_hub and not args.hub_model_id:
        parser.error("--push-to-hub needs --hub-model-id ORG/NAME")
    if task_args.task == "property":
        if task_args.target is None:
            parser.error("--task property needs --target COLUMN[,COLUMN...]")
        if task_args.condition is not None:
            parser.error("--condition is for --task generation: a property predictor takes no conditions")
        if task_args.classification_threshold is not None and len(task_args.targets) > 1:
            parser.error(f"--classification-threshold classifies one --target, got {task_args.target!r}")
    else:
        if task_args.target is not None:
            parser.error("--target is for --task property (a generator is conditioned with --condition)")
        if task_args.classification_threshold is not None:
            parser.error("--classification-threshold is for --task property")
    if task_args.augment_labellings and args.dataloader_num_workers:
        parser.error("--augment-labellings needs --dataloader-num-workers 0 (it draws in the main process)")
    for option, text, names in (("--target", task_args.target, task_args.targets),
                                ("--condition", task_args.condition, task_args.conditions)):
        if "" in names or len(set(names)) != len(names):
            parser.error(f"{option} {text!r}: give comma-separated column names, each once")


def check_columns(parser: HfArgumentParser, option: str, names: Sequence[str], split: Dataset) -> None:
    """Each column that ``option`` names must hold numbers in the dataset; else argparse's one-line error, before
    any training is set up."""
    numeric = [name for name, feature in split.features.items()
               if getattr(feature, "dtype", "").startswith(("float", "int", "bool"))]
    for name in names:
        if name not in numeric:
            problem = "is not a numeric column" if name in split.features else "no such column"
            parser.error(f"{option} {name}: {problem} in the dataset (numeric columns: {', '.join(numeric)})")


def config_overrides(parser: HfArgumentParser, model_args: ModelArguments) -> dict[str, Any]:
    """The ``--config`` JSON, else ``RECIPE_CONFIG`` (none with ``--init-from``); it may not set what the task
    derives (labels, their scale, the conditions)."""
    if not model_args.config:
        return {} if model_args.init_from else dict(RECIPE_CONFIG)
    overrides = json.loads(Path(model_args.config).read_text())
    if model_args.init_from and overrides:
        parser.error("--init-from takes the architecture of the model it starts from: drop --config")
    derived = sorted(set(overrides) & set(TASK_CONFIG_FIELDS))
    if derived:
        parser.error(f"--config {model_args.config}: {', '.join(derived)} come from --task, --target or "
                     "--condition and the training split, not from the config")
    return overrides


# ------------------------------------------------------------------------------------------------ columns

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


# -------------------------------------------------------------------------------------------------- tasks

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


def prediction_counts(batch, stop_token_id: int) -> torch.Tensor:
    """How many predictions each field loss of ``FIELD_LOSSES`` averages over: the element head predicts every
    token (STOP included), the site-symmetry and enumeration heads the site tokens."""
    mask = batch["attention_mask"].bool()
    sites = (mask & (batch["element_ids"] != stop_token_id)).sum()
    return torch.stack([mask.sum(), sites, sites]).float()


def field_losses(output) -> torch.Tensor:
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
        and keeping its samples' number of distinct elements within the split's range (a binary/ternary split
        gives (2, 3): ``generate`` then never writes a unary or a quaternary crystal)."""
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
        return model

    def collate(self, features: list[dict[str, Any]]) -> BatchEncoding:
        batch = self.tokenizer.pad(features, return_tensors="pt")
        if self.columns:
            batch["conditions"] = feature_values(features, self.columns)
        return batch

    def batch_statistics(self, output, batch: BatchEncoding) -> tuple[torch.Tensor, torch.Tensor]:
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
        return model, {"sampling_temperature": model.generation_config.temperature, "calibration": calibration}


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

    def batch_statistics(self, output, batch: BatchEncoding) -> tuple[torch.Tensor, torch.Tensor]:
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


class LabellingAugmentation:
    """A collate function that first puts each training crystal in a random one of its equivalent Wyckoff
    labellings (``WyckoffRepresentation.relabelled``: the relabellings of its group's affine normalizer, sites in
    canonical order), as the WyckoffTransformer authors train. The model then learns every labelling of a crystal
    rather than the canonical one only; evaluation canonicalises samples anyway.

    The draws come from a generator reseeded at every epoch (``start_epoch``) in the main process, so every process
    of a multi-process run relabels the global batch alike and a resumed run draws what the uninterrupted one would.
    """

    columns = ("space_group", "site_elements", "letters")

    def __init__(self, tokenizer: WyckoffTokenizer, collate: Any) -> None:
        self.tokenizer, self.collate = tokenizer, collate
        self.rng = np.random.default_rng(0)

    def start_epoch(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)

    def __call__(self, features: list[dict[str, Any]]) -> BatchEncoding:
        relabelled = []
        for row in features:
            crystal = representation_from_row(row)
            crystal = crystal.relabelled(int(self.rng.integers(crystal.num_labellings)))
            rest = {key: value for key, value in row.items() if key not in self.columns}
            relabelled.append({**rest, **self.tokenizer.encode(crystal)})
        return self.collate(relabelled)


class SitePermutation:
    """A collate function that shuffles the sites of every crystal of the batch ``collate`` builds, for a generator
    with ``config.site_order = "any"``: it learns every order of a crystal's sites, not the canonical one only, as
    the WyckoffTransformer authors train. STOP and padding stay at the end; validation stays in canonical order.

    Reseeded at every epoch (``start_epoch``) in the main process, as ``LabellingAugmentation``, and applied after
    it when both are on."""

    def __init__(self, tokenizer: WyckoffTokenizer, collate: Any) -> None:
        self.collate, self.token_columns = collate, tokenizer.model_input_names
        self.mask_token_id = tokenizer.mask_token_id
        self.generator = torch.Generator().manual_seed(0)

    def start_epoch(self, seed: int) -> None:
        self.generator.manual_seed(seed)

    def __call__(self, features: list[dict[str, Any]]) -> BatchEncoding:
        batch = self.collate(features)
        element_ids = batch["element_ids"]
        keys = torch.rand(element_ids.shape, generator=self.generator)
        after_sites = 1 + torch.arange(element_ids.shape[1], dtype=keys.dtype)  # STOP and PAD keep their order
        order = torch.where(element_ids > self.mask_token_id, keys, after_sites).argsort(1)
        for key in self.token_columns:
            batch[key] = batch[key].gather(1, order)
        return batch


def make_task(task_args: TaskArguments, model_args: ModelArguments, tokenizer: WyckoffTokenizer) -> Task:
    if task_args.task == "property":
        return PropertyTask(tokenizer, task_args.targets, task_args.classification_threshold, model_args.init_from)
    return GenerationTask(tokenizer, task_args.conditions)


# ------------------------------------------------------------------------------------------ checkpoints

def checkpoints(output_dir: Path) -> list[Path]:
    """The *complete* ``checkpoint-N`` folders, oldest first: ``trainer_state.json`` is written last, so a run
    killed while saving leaves a folder without it, which is skipped."""
    complete = [state.parent for state in output_dir.glob(f"{CHECKPOINT_PREFIX}*/trainer_state.json")
                if state.parent.name.removeprefix(CHECKPOINT_PREFIX).isdigit()]
    return sorted(complete, key=lambda folder: int(folder.name.removeprefix(CHECKPOINT_PREFIX)))


def checkpoint_to_resume(resume_from_checkpoint: str | None, output_dir: Path) -> Path | None:
    """The folder ``--resume-from-checkpoint`` names; exits with one line when there is nothing to resume,
    and refuses to start afresh over an earlier run's checkpoints."""
    found = checkpoints(output_dir)
    if resume_from_checkpoint is None:
        if found:
            sys.exit(f"train.py: error: {output_dir} holds checkpoints of an earlier run ({found[-1].name}); "
                     "continue it with --resume-from-checkpoint latest or choose another --output-dir")
        return None
    if resume_from_checkpoint == "latest":
        if not found:
            sys.exit(f"train.py: error: --resume-from-checkpoint latest: {output_dir} holds no complete "
                     f"{CHECKPOINT_PREFIX}N folder to resume from")
        return found[-1]
    folder = Path(resume_from_checkpoint)
    if not (folder / "trainer_state.json").is_file():
        sys.exit(f"train.py: error: --resume-from-checkpoint {folder}: not a complete checkpoint "
                 "(no trainer_state.json)")
    return folder


def check_resumed_task(checkpoint: Path, task_args: TaskArguments) -> None:
    """Resume only with the task options the checkpoint was trained with: other labels or conditions would give
    a model of another shape (a checkpoint from before the task options is a plain generator's)."""
    defaults = asdict(TaskArguments())  # also for options a checkpoint predates
    trained = {**defaults, **json.loads((checkpoint / "trainer_state.json").read_text()).get("task", {})}
    given = asdict(task_args)
    if trained != given:
        trained, given = ({key: value for key, value in options.items() if key == "task" or value != defaults[key]}
                          for options in (trained, given))
        sys.exit(f"train.py: error: --resume-from-checkpoint {checkpoint}: trained with the task options {trained}, "
                 f"not {given}")


def die_with_launcher(*_: object) -> None:
    """SIGTERM this process when its parent exits. A launcher killed with SIGKILL (``accelerate launch``,
    ``torchrun``) cannot stop its workers, which would train on as orphans; DataLoader workers (this is their
    ``worker_init_fn``) would notice only seconds later."""
    die_with_parent(os.getppid(), signal.SIGTERM)


def launched() -> bool:
    """Started by ``accelerate launch`` (which exports ACCELERATE_* settings) or ``torchrun`` (LOCAL_RANK)."""
    return "ACCELERATE_MIXED_PRECISION" in os.environ or "LOCAL_RANK" in os.environ


def make_accelerator(args: TrainArguments) -> Accelerator:
    """The run's ``Accelerator``: global batches split across processes, trackers logging to OUTPUT_DIR/runs.

    ``cpu=True`` without a GPU (or other accelerator): accelerate sets up a (gloo) process group for CPU
    workers only when told so, else each worker of ``torchrun`` / ``accelerate launch --multi_gpu`` trains alone.
    """
    mixed_precision = args.mixed_precision
    if mixed_precision is None and torch.cuda.is_available():
        mixed_precision = "bf16"
    try:
        import tensorboard  # noqa: F401

        log_with = "tensorboard"
    except ImportError:
        log_with = None
    project = ProjectConfiguration(project_dir=args.output_dir, logging_dir=str(Path(args.output_dir) / "runs"))
    return Accelerator(cpu=not torch.accelerator.is_available(), mixed_precision=mixed_precision,
                       gradient_accumulation_steps=args.gradient_accumulation_steps,
                       dataloader_config=DataLoaderConfiguration(split_batches=True), log_with=log_with,
                       project_config=project)


def global_batch_loss(losses: torch.Tensor, counts: torch.Tensor, accelerator: Accelerator) -> torch.Tensor:
    """This process's share of the global batch's loss (the mean of each loss term over its predictions, summed).

    Each term's mean is weighted by this slice's share of the global batch's predictions of that term (crystals,
    for a property), times the number of processes because DDP averages the processes' gradients: the result is
    the gradient one process would get from the whole batch, however unevenly the predictions fall across the
    slices.
    """
    share = counts / accelerator.reduce(counts, reduction="sum")
    return (losses * share).sum() * accelerator.num_processes


class Totals:
    """Per loss term and metric of a task, sums of batch means × predictions and the prediction counts, on this
    process; ``means`` reduces over all processes, so the averages are exact whatever the batching and sharding."""

    def __init__(self, task: Task, device: torch.device):
        self.task = task
        self.sums = torch.zeros(len(task.loss_terms) + len(task.metric_names), device=device)
        self.counts = torch.zeros_like(self.sums)
        self.crystals = 0

    def add(self, means: torch.Tensor, counts: torch.Tensor, crystals: int) -> None:
        self.sums += means.detach().float() * counts
        self.counts += counts
        self.crystals += crystals

    def means(self, accelerator: Accelerator, prefix: str) -> dict[str, float]:
        """``prefix/loss`` (the terms' sum), each term when there are several, then each metric."""
        sums, counts = accelerator.reduce(torch.stack([self.sums, self.counts]), reduction="sum")
        values = (sums / counts).tolist()
        losses, metrics = values[:len(self.task.loss_terms)], values[len(self.task.loss_terms):]
        named = {f"{prefix}/loss": sum(losses)}
        if len(losses) > 1:  # a single term is the loss itself
            named.update({f"{prefix}/{name}": value for name, value in zip(self.task.loss_terms, losses, strict=True)})
        named.update({f"{prefix}/{name}": value for name, value in zip(self.task.metric_names, metrics, strict=True)})
        return named


def evaluate(model, loader, accelerator: Accelerator, task: Task) -> dict[str, float]:
    """Validation loss terms and metrics: exact means over the whole split (each process scores its own shard)."""
    model.eval()
    totals = Totals(task, accelerator.device)
    with torch.no_grad():
        for batch in loader:
            batch = batch.to(accelerator.device)
            totals.add(*task.batch_statistics(model(**batch), batch), len(batch["attention_mask"]))
    return totals.means(accelerator, "validation")


def out_of_time(start: float, max_minutes: float | None, accelerator: Accelerator) -> bool:
    """Whether any process is past ``max_minutes`` since ``start``: all processes stop after the same epoch."""
    if max_minutes is None:
        return False
    late = torch.tensor(float(time.perf_counter() - start > 60 * max_minutes), device=accelerator.device)
    return bool(accelerator.reduce(late, "sum") > 0)


def save_best_model(model, tokenizer: WyckoffTokenizer, output_dir: Path) -> None:
    """``save_pretrained`` into a staging folder, then move each file into OUTPUT_DIR: a run killed while
    saving never leaves a half-written file where the last good model was."""
    staging = output_dir / STAGING_DIR
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    for path in staging.iterdir():
        os.replace(path, output_dir / path.name)
    staging.rmdir()


def save_checkpoint(accelerator: Accelerator, output_dir: Path, state: dict, save_total_limit: int | None) -> None:
    """``save_state`` on every process, then (main process) the loop's own state, marking the folder complete;
    the oldest checkpoints beyond ``save_total_limit`` are removed."""
    folder = output_dir / f"{CHECKPOINT_PREFIX}{state['global_step']}"
    accelerator.save_state(str(folder))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (folder / "trainer_state.json").write_text(json.dumps(state, indent=2))
        for old in checkpoints(output_dir)[:-save_total_limit] if save_total_limit else []:
            shutil.rmtree(old)


def restart_metrics_log(path: Path, last_epoch: int) -> None:
    """Keep the logged epochs up to the resumed checkpoint's (a killed run's later ones are run again)."""
    lines = path.read_text().splitlines(keepends=True) if path.is_file() else []
    path.write_text("".join(line for line in lines if json.loads(line)["epoch"] <= last_epoch))


def main(argv: list[str] | None = None) -> dict:
    parser = HfArgumentParser((DataArguments, TaskArguments, ModelArguments, TrainArguments))
    data_args, task_args, model_args, args = parser.parse_args_into_dataclasses(argv)
    check_arguments(parser, data_args, task_args, args)
    if model_args.init_from and task_args.task != "property":
        parser.error("--init-from is for --task property (a generator trains from scratch)")
    overrides = config_overrides(parser, model_args)
    output_dir = Path(args.output_dir)
    resume = checkpoint_to_resume(args.resume_from_checkpoint, output_dir)
    if resume:
        check_resumed_task(resume, task_args)
    if launched():
        die_with_launcher()
    dataset = load_wyckoff_dataset(data_args.dataset)
    check_columns(parser, "--target", task_args.targets, dataset["train"])
    check_columns(parser, "--condition", task_args.conditions, dataset["train"])
    accelerator = make_accelerator(args)
    if args.push_to_hub and accelerator.is_main_process:
        try:
            ensure_hub_repo(args.hub_model_id, private=args.hub_private_repo)
        except HubRepoError as err:
            sys.exit(f"train.py: error: {err}")
    set_seed(args.seed)

    train_split, validation_split = dataset["train"], dataset["validation"]
    if data_args.max_train_rows:
        train_split = train_split.select(range(min(data_args.max_train_rows, len(train_split))))
    if data_args.max_validation_rows:
        validation_split = validation_split.select(range(min(data_args.max_validation_rows, len(validation_split))))
    tokenizer = WyckoffTokenizer()
    task = make_task(task_args, model_args, tokenizer)
    train_split, train_note = task.select_rows(train_split, "train")
    validation_split, validation_note = task.select_rows(validation_split, "validation")
    data_notes = [note for note in (train_note, validation_note) if note]
    for note in data_notes:
        accelerator.print(note)
    try:
        model = task.build_model(tokenizer, train_split, overrides)
    except StrictDataclassError as err:  # the config refused a value: one line naming the field, before any work
        parser.error(f"--config {model_args.config or '(the recipe)'}: {err.__cause__ or err}")

    columns = [*tokenizer.model_input_names, *task.columns]
    augmentation = LabellingAugmentation(tokenizer, task.collate) if task_args.augment_labellings else None
    permutation = None
    if task_args.task == "generation" and model.config.site_order == "any":
        if args.dataloader_num_workers:
            parser.error('a model with "site_order": "any" needs --dataloader-num-workers 0 (the site orders are '
                         "drawn in the main process)")
        permutation = SitePermutation(tokenizer, augmentation or task.collate)
    epoch_draws = [draw for draw in (augmentation, permutation) if draw]
    workers = {"num_workers": args.dataloader_num_workers, "persistent_workers": args.dataloader_num_workers > 0,
               "worker_init_fn": die_with_launcher if args.dataloader_num_workers else None}
    # Batches of similar lengths: the cascade loss costs (tokens per crystal)² per crystal, so padding a
    # batch of 4-site crystals to one 20-site crystal would waste most of an epoch. The sampler draws global
    # batches, which the prepared loader slices across processes. Reseeded every epoch.
    global_batch = args.per_device_train_batch_size * accelerator.num_processes
    shuffling = torch.Generator()
    sampler = LengthGroupedSampler(global_batch, lengths=[len(m) for m in train_split["attention_mask"]],
                                   generator=shuffling)
    train_columns = [*columns, *(augmentation.columns if augmentation else ())]
    train_loader = DataLoader(train_split.select_columns(train_columns).with_format(None), batch_size=global_batch,
                              sampler=sampler, collate_fn=permutation or augmentation or task.collate, **workers)
    # Validation is sharded by hand (contiguous, uneven shards): accelerate would top up the last batch
    # with repeated crystals, and the losses are summed exactly in ``evaluate`` anyway.
    validation_shard = validation_split.shard(accelerator.num_processes, accelerator.process_index, contiguous=True)
    validation_loader = DataLoader(validation_shard.select_columns(columns).with_format(None),
                                   batch_size=args.per_device_eval_batch_size, collate_fn=task.collate, **workers)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.learning_rate, weight_decay=args.weight_decay)
    steps_per_epoch = math.ceil(len(train_loader) / args.gradient_accumulation_steps)
    total_steps = steps_per_epoch * args.num_train_epochs
    scheduler = get_cosine_schedule_with_warmup(optimizer, int(args.warmup_ratio * total_steps), total_steps)
    model, optimizer, train_loader, scheduler = accelerator.prepare(model, optimizer, train_loader, scheduler)

    state = {"epoch": -1, "global_step": 0, "best_validation_loss": math.inf, "best_epoch": -1,
             "epochs_without_improvement": 0, "best_validation": {}, "train_crystals_per_process": [],
             "task": asdict(task_args)}
    if resume:
        accelerator.load_state(str(resume))
        state = {**state, **json.loads((resume / "trainer_state.json").read_text())}
        accelerator.print(f"resumed from {resume} after epoch {state['epoch']}")

    accelerator.init_trackers(args.run_name, config={**asdict(data_args), **asdict(task_args), **asdict(args)})
    metrics_log = output_dir / "metrics.jsonl"
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        restart_metrics_log(metrics_log, state["epoch"])
    loss_terms = len(task.loss_terms)
    start = time.perf_counter()
    for epoch in range(state["epoch"] + 1, args.num_train_epochs):
        if state["epochs_without_improvement"] >= args.early_stopping_patience:
            break
        if out_of_time(start, args.max_train_minutes, accelerator):
            accelerator.print(f"stopping before epoch {epoch}: past --max-train-minutes {args.max_train_minutes}")
            state["stopped_by_time_limit"] = True
            break
        model.train()
        shuffling.manual_seed(args.seed + epoch)
        for draw in epoch_draws:
            draw.start_epoch(args.seed + epoch)
        totals = Totals(task, accelerator.device)
        progress = tqdm(train_loader, desc=f"epoch {epoch}", disable=not accelerator.is_local_main_process,
                        leave=False)
        for batch in progress:
            with accelerator.accumulate(model):
                output = model(**batch)
                means, counts = task.batch_statistics(output, batch)
                accelerator.backward(global_batch_loss(means[:loss_terms], counts[:loss_terms], accelerator))
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
            state["global_step"] += int(accelerator.sync_gradients)
            totals.add(means, counts, len(batch["attention_mask"]))
            progress.set_postfix(loss=f"{output.loss.item():.3f}")
        metrics = totals.means(accelerator, "train")
        metrics.update(evaluate(model, validation_loader, accelerator, task))
        metrics.update({"epoch": epoch, "step": state["global_step"], "learning_rate": scheduler.get_last_lr()[0],
                        "elapsed_s": time.perf_counter() - start})
        accelerator.log(metrics, step=epoch)

        state["epoch"] = epoch
        state["train_crystals_per_process"] = accelerator.gather(
            torch.tensor([totals.crystals], device=accelerator.device)).tolist()
        if metrics["validation/loss"] < state["best_validation_loss"]:
            state.update(best_validation_loss=metrics["validation/loss"], best_epoch=epoch,
                         epochs_without_improvement=0,
                         best_validation={k: v for k, v in metrics.items() if k.startswith("validation/")})
            if accelerator.is_main_process:
                save_best_model(accelerator.unwrap_model(model), tokenizer, output_dir)
        else:
            state["epochs_without_improvement"] += 1
        if accelerator.is_main_process:
            with open(metrics_log, "a") as f:
                f.write(json.dumps(metrics) + "\n")
            shown = "".join(f" {name} {metrics[f'validation/{name}']:.4f}" for name in task.metric_names)
            accelerator.print(f"epoch {epoch}: train {metrics['train/loss']:.4f} validation "
                              f"{metrics['validation/loss']:.4f}{shown} (best {state['best_validation_loss']:.4f})")
        if (epoch + 1) % args.checkpoint_every_epochs == 0:
            save_checkpoint(accelerator, output_dir, state, args.save_total_limit)
    accelerator.wait_for_everyone()
    accelerator.end_training()

    summary = {}
    if accelerator.is_main_process:
        hyperparameters = {**asdict(task_args), **asdict(args), "model_config": model_args.config}
        summary = finish(output_dir, task, state, train_split, validation_split, args, hyperparameters,
                         dataset=data_args.dataset, wall_seconds=time.perf_counter() - start,
                         device=str(accelerator.device), num_processes=accelerator.num_processes,
                         train_rows=len(train_split), validation_rows=len(validation_split), data_notes=data_notes)
    return summary


def launch_command() -> str:
    """The command line of this run (the launcher's own options are not visible to the script)."""
    if "ACCELERATE_MIXED_PRECISION" in os.environ:
        launcher = "accelerate launch "
    else:
        launcher = "torchrun " if "TORCHELASTIC_RUN_ID" in os.environ else "python "
    return launcher + " ".join(sys.argv)


def finish(output_dir: Path, task: Task, state: dict, train_split: Dataset, validation_split: Dataset,
           args: TrainArguments, hyperparameters: dict[str, Any], **facts: Any) -> dict:
    """The task's last step on the best model (a generator's temperature calibration), then the summary and
    card; push if asked."""
    model, task_summary = task.finish(output_dir, args, train_split, validation_split)
    summary = {
        "command": launch_command(), "task": hyperparameters["task"], **facts,
        "epochs_run": state["epoch"] + 1, "stopped_by_time_limit": state.get("stopped_by_time_limit", False),
        "global_step": state["global_step"], "best_epoch": state["best_epoch"],
        "best_validation": state["best_validation"], **task_summary, "num_parameters": model.num_parameters(),
        "train_crystals_per_process": state["train_crystals_per_process"], "hyperparameters": hyperparameters,
        "model_config": {k: v for k, v in model.config.to_diff_dict().items() if k not in CONFIG_NOT_SHOWN},
    }
    (output_dir / "training_summary.json").write_text(json.dumps(summary, indent=2))
    write_model_card(output_dir, summary, model_id=args.hub_model_id or str(output_dir))
    shown = ("best_epoch", "best_validation", "baseline_validation", "sampling_temperature")
    print(json.dumps({key: summary[key] for key in shown if key in summary}, indent=2))
    print(f"model saved to {output_dir} ({task.usage.format(output_dir=str(output_dir))})")
    if args.push_to_hub:
        from huggingface_hub import HfApi

        commit = HfApi().upload_folder(repo_id=args.hub_model_id, folder_path=str(output_dir),
                                       ignore_patterns=PUSH_IGNORE, commit_message="Upload WyckoffTransformer")
        print(f"pushed to {commit.repo_url}")
    return summary


if __name__ == "__main__":
    main()
