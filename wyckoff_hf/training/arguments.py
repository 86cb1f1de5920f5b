"""The command line of ``wyckoff_hf.training``: the ``HfArgumentParser`` dataclasses, named as in
``transformers.TrainingArguments`` where the meaning is the same, and the checks that refuse a bad value at once,
with argparse's one-line error, rather than hours into a run. ``RECIPE_CONFIG`` is the shipped generator's
architecture, the default when no ``--config`` is given."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from datasets import Dataset
from transformers import HfArgumentParser

from wyckoff_hf.rewards import parse_reward_spec
from wyckoff_hf.training.calibration import SAMPLES_PER_ROW, STOP_BIAS_ROUNDS

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
    task: Literal["generation", "property", "reward"] = field(default="generation", metadata={
        "help": "generation: a crystal generator (conditioned on --condition, if given); property: a predictor of "
                "--target from the Wyckoff representation (AutoModelForSequenceClassification); reward: fine-tune "
                "the generator --init-from toward --reward (group-relative policy gradient, KL to the start)"})
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
                "trained on the same crystals), with a fresh head; its architecture, so no --config. reward task: "
                "the saved generator to fine-tune, also the reference of the KL penalty"})


@dataclass
class RewardArguments:
    reward: str = field(default="stability=1,uniqueness=0.5,new_template=0.25", metadata={
        "help": "reward task: weighted terms, comma-separated NAME=WEIGHT: stability (the --surrogate's energy above "
                "hull, a smooth step at 0.08 eV/atom), chgnet (the same from CHGNet relaxation: seconds a crystal), "
                "novelty and new_template (vs the --dataset's train + validation crystals), uniqueness (within a "
                "step: the guard against collapse)"})
    surrogate: str | None = field(default=None, metadata={
        "help": "reward task: a property predictor of e_above_hull (scripts/train.py --task property --target "
                "e_above_hull) for the stability term"})
    kl_coef: float = field(default=0.05, metadata={"help": "reward task: β, the weight of the KL penalty"})
    num_groups: int = field(default=8, metadata={"help": "reward task: space groups drawn per step and process"})
    group_size: int = field(default=32, metadata={
        "help": "reward task: crystals sampled in each space group; the advantage is the reward standardised "
                "within its group"})
    max_steps: int = field(default=200, metadata={"help": "reward task: policy updates"})
    save_steps: int = field(default=20, metadata={"help": "reward task: save a checkpoint-N folder every N steps"})
    reward_learning_rate: float = field(default=1e-5, metadata={
        "help": "reward task: AdamW learning rate (no weight decay: the KL keeps the policy near its start)"})
    reward_num_workers: int = field(default=1, metadata={"help": "reward task: processes for the chgnet term"})
    relaxation_cache: str | None = field(default=None, metadata={
        "help": "reward task: folder keeping every CHGNet relaxation of the chgnet term (resumable)"})


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
    ddp_timeout: int = field(default=1800, metadata={
        "help": "seconds a process waits for the others at a collective before the run fails with an error (as in "
                "transformers.TrainingArguments): a rank that died then ends the run instead of leaving the other "
                "waiting"})
    push_to_hub: bool = field(default=False, metadata={"help": "upload the final model and its card at the end"})
    hub_model_id: str | None = field(default=None, metadata={"help": "ORG/NAME of the Hub model repo"})
    hub_private_repo: bool = field(default=False, metadata={"help": "create the Hub repo as private"})
    run_name: str = field(default="wyckoff-transformer", metadata={"help": "tracker run name"})


def check_arguments(parser: HfArgumentParser, data_args: DataArguments, task_args: TaskArguments,
                    args: TrainArguments, model_args: ModelArguments | None = None,
                    reward_args: RewardArguments | None = None) -> None:
    """Refuse values that would fail (or silently do nothing) hours later, with argparse's one-line error."""
    at_least = {"--num-train-epochs": (args.num_train_epochs, 1),
                "--per-device-train-batch-size": (args.per_device_train_batch_size, 1),
                "--per-device-eval-batch-size": (args.per_device_eval_batch_size, 1),
                "--gradient-accumulation-steps": (args.gradient_accumulation_steps, 1),
                "--checkpoint-every-epochs": (args.checkpoint_every_epochs, 1),
                "--save-total-limit": (args.save_total_limit, 1),
                "--dataloader-num-workers": (args.dataloader_num_workers, 0),
                "--ddp-timeout": (args.ddp_timeout, 1),
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
    if task_args.task == "reward":
        model_args, reward_args = model_args or ModelArguments(), reward_args or RewardArguments()
        if not model_args.init_from:
            parser.error("--task reward needs --init-from MODEL, the generator to fine-tune")
        if task_args.target is not None or task_args.condition is not None or task_args.augment_labellings:
            parser.error("--target, --condition and --augment-labellings are not options of --task reward")
        at_least = {"--num-groups": (reward_args.num_groups, 1), "--group-size": (reward_args.group_size, 2),
                    "--max-steps": (reward_args.max_steps, 1), "--save-steps": (reward_args.save_steps, 1),
                    "--reward-num-workers": (reward_args.reward_num_workers, 1)}
        for option, (value, minimum) in at_least.items():
            if value < minimum:
                parser.error(f"{option} must be at least {minimum}, got {value}")
        if reward_args.kl_coef < 0 or reward_args.reward_learning_rate <= 0:
            parser.error("--kl-coef must be ≥ 0 and --reward-learning-rate positive")
        try:
            parse_reward_spec(reward_args.reward)
        except ValueError as err:
            parser.error(str(err))
        return
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
