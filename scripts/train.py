"""Train a WyckoffTransformer on a prepared crystal dataset with 🤗 Accelerate, on one or several processes.

    python scripts/train.py --dataset DIR_OR_HUB_ID --output-dir runs/NAME [--config model.json] ...
    accelerate launch --multi_gpu --num_processes 2 scripts/train.py ...   # 2 processes: GPUs (NCCL) or CPUs (gloo)
    torchrun --nproc_per_node 2 scripts/train.py ...                       # the same with torchrun

docs/training.md has the multi-GPU and multi-node commands. Options are named as in
``transformers.TrainingArguments`` where the meaning is the same, and every default reproduces the shipped
model (``wyckoff_hf/pretrained/mp20-biternary``). The run writes

- ``OUTPUT_DIR`` itself: the best model by validation loss (``save_pretrained``: config.json,
  generation_config.json with the training split's space-group prior and the calibrated sampling temperature,
  model.safetensors, the modeling code for ``trust_remote_code``), the tokenizer, the model card ``README.md``,
  ``metrics.jsonl`` (every logged value) and ``training_summary.json``;
- ``OUTPUT_DIR/checkpoint-N/`` (N = optimizer steps so far, as ``Trainer`` names them): ``accelerator.save_state``
  plus ``trainer_state.json``, resumed with ``--resume-from-checkpoint latest`` (or a path).

On several processes each global batch (``per_device_train_batch_size`` × processes crystals, drawn by one
length-grouped sampler over the whole split) is cut into one slice per process, and each process weights its
losses by its share of the global batch's predictions, so N processes follow the trajectory of one process
with the same global batch (up to float summation order). Only the main process writes files.
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
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path

import torch
from accelerate import Accelerator, DataLoaderConfiguration
from accelerate.utils import ProjectConfiguration, set_seed
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import HfArgumentParser, get_cosine_schedule_with_warmup
from transformers.trainer_pt_utils import LengthGroupedSampler

from wyckoff_hf.cards import write_model_card
from wyckoff_hf.cards.model_card import CONFIG_NOT_SHOWN
from wyckoff_hf.data import load_wyckoff_dataset
from wyckoff_hf.generation.calibration import calibrate_checkpoint
from wyckoff_hf.modeling import WyckoffTransformerConfig, WyckoffTransformerForCrystalGeneration
from wyckoff_hf.tokenization import WyckoffTokenizer
from wyckoff_hf.utils.hub import HubRepoError, ensure_hub_repo
from wyckoff_hf.utils.parallel import die_with_parent

FIELD_LOSSES = ("element_loss", "site_symmetry_loss", "enumeration_loss")
CHECKPOINT_PREFIX = "checkpoint-"
STAGING_DIR = ".best-model-staging"
PUSH_IGNORE = [f"{CHECKPOINT_PREFIX}*/*", "runs/*", f"{STAGING_DIR}/*"]


@dataclass
class DataArguments:
    dataset: str = field(default="data_prepared/mp20-biternary-dev",
                         metadata={"help": "prepared dataset folder (scripts/prepare_dataset.py) or Hub dataset id"})
    max_train_rows: int | None = field(default=None, metadata={"help": "use only the first N training rows"})
    max_validation_rows: int | None = field(default=None, metadata={"help": "use only the first N validation rows"})


@dataclass
class ModelArguments:
    config: str | None = field(default=None, metadata={
        "help": "JSON file of WyckoffTransformerConfig overrides (layers, heads, embedding sizes, dropout...)"})


@dataclass
class TrainArguments:
    output_dir: str = field(default="runs/mp20-biternary", metadata={
        "help": "where the final (best) model, its card, the metrics and the checkpoint-N folders go"})
    num_train_epochs: int = field(default=30, metadata={"help": "number of epochs (the length of the cosine schedule)"})
    per_device_train_batch_size: int = field(default=128, metadata={
        "help": "crystals per process per step; the global batch is this × processes × accumulation steps"})
    per_device_eval_batch_size: int = field(default=128, metadata={"help": "validation crystals per process per step"})
    learning_rate: float = field(default=1e-3, metadata={"help": "peak AdamW learning rate"})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay"})
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
    early_stopping_patience: int = field(default=10, metadata={
        "help": "stop after N epochs without a better validation loss"})
    calibration_temperatures: str = field(default="0.4,0.5,0.6,0.7,0.8,0.9,1.0,1.1,1.2", metadata={
        "help": "comma-separated candidate sampling temperatures ('' skips calibration)"})
    calibration_rows: int = field(default=2000, metadata={"help": "validation crystals used for calibration"})
    calibration_samples_per_row: int = field(default=4, metadata={
        "help": "crystals sampled per validation crystal (in its space group) for each temperature"})
    dataloader_num_workers: int = field(default=0, metadata={"help": "DataLoader worker processes per process"})
    push_to_hub: bool = field(default=False, metadata={"help": "upload the final model and its card at the end"})
    hub_model_id: str | None = field(default=None, metadata={"help": "ORG/NAME of the Hub model repo"})
    hub_private_repo: bool = field(default=False, metadata={"help": "create the Hub repo as private"})
    run_name: str = field(default="wyckoff-transformer", metadata={"help": "tracker run name"})


def check_arguments(parser: HfArgumentParser, data_args: DataArguments, args: TrainArguments) -> None:
    """Refuse values that would fail (or silently do nothing) hours later, with argparse's one-line error."""
    at_least = {"--num-train-epochs": (args.num_train_epochs, 1),
                "--per-device-train-batch-size": (args.per_device_train_batch_size, 1),
                "--per-device-eval-batch-size": (args.per_device_eval_batch_size, 1),
                "--gradient-accumulation-steps": (args.gradient_accumulation_steps, 1),
                "--checkpoint-every-epochs": (args.checkpoint_every_epochs, 1),
                "--save-total-limit": (args.save_total_limit, 1),
                "--dataloader-num-workers": (args.dataloader_num_workers, 0),
                "--max-train-rows": (data_args.max_train_rows, 1),
                "--max-validation-rows": (data_args.max_validation_rows, 1)}
    for option, (value, minimum) in at_least.items():
        if value is not None and value < minimum:
            parser.error(f"{option} must be at least {minimum}, got {value}")
    if args.learning_rate <= 0:
        parser.error(f"--learning-rate must be positive, got {args.learning_rate}")
    if args.push_to_hub and not args.hub_model_id:
        parser.error("--push-to-hub needs --hub-model-id ORG/NAME")


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


def build_model(model_args: ModelArguments, tokenizer: WyckoffTokenizer,
                train_split) -> WyckoffTransformerForCrystalGeneration:
    """A fresh model built for the tokenizer's tables, sampling space groups from the training split's prior."""
    overrides = json.loads(Path(model_args.config).read_text()) if model_args.config else {}
    model = WyckoffTransformerForCrystalGeneration(WyckoffTransformerConfig.from_tokenizer(tokenizer, **overrides))
    counts = Counter(train_split["space_group"])
    model.generation_config.space_group_counts = [counts.get(int(token), 0) if token.isdigit() else 0
                                                  for token in tokenizer.vocabularies["space_group"]]
    return model


def prediction_counts(batch, stop_token_id: int) -> torch.Tensor:
    """How many predictions each field loss of ``FIELD_LOSSES`` averages over: the element head predicts every
    token (STOP included), the site-symmetry and enumeration heads the site tokens."""
    mask = batch["attention_mask"].bool()
    sites = (mask & (batch["element_ids"] != stop_token_id)).sum()
    return torch.stack([mask.sum(), sites, sites]).float()


def field_losses(output) -> torch.Tensor:
    return torch.stack([getattr(output, name) for name in FIELD_LOSSES])


def global_batch_loss(output, counts: torch.Tensor, accelerator: Accelerator) -> torch.Tensor:
    """This process's share of the global batch's loss (the per-prediction mean of each field, summed).

    Each field mean is weighted by this slice's share of the global batch's predictions, times the number of
    processes because DDP averages the processes' gradients: the result is the gradient one process would
    get from the whole batch, however unevenly the predictions fall across the slices.
    """
    share = counts / accelerator.reduce(counts, reduction="sum")
    return (field_losses(output) * share).sum() * accelerator.num_processes


class LossTotals:
    """Per-field sums of losses × predictions, and prediction counts, on this process; ``means`` reduces over
    all processes, so the averages are exact whatever the batching and the sharding."""

    def __init__(self, device: torch.device):
        self.sums = torch.zeros(len(FIELD_LOSSES), device=device)
        self.counts = torch.zeros(len(FIELD_LOSSES), device=device)
        self.crystals = 0

    def add(self, output, counts: torch.Tensor, crystals: int) -> None:
        self.sums += field_losses(output).detach().float() * counts
        self.counts += counts
        self.crystals += crystals

    def means(self, accelerator: Accelerator, prefix: str) -> dict[str, float]:
        sums, counts = accelerator.reduce(torch.stack([self.sums, self.counts]), reduction="sum")
        fields = (sums / counts).tolist()
        named = {f"{prefix}/{name}": value for name, value in zip(FIELD_LOSSES, fields, strict=True)}
        return {f"{prefix}/loss": sum(fields), **named}


def evaluate(model, loader, accelerator: Accelerator, stop_token_id: int) -> dict[str, float]:
    """Validation losses: per-prediction means over the whole split (each process scores its own shard)."""
    model.eval()
    totals = LossTotals(accelerator.device)
    with torch.no_grad():
        for batch in loader:
            batch = batch.to(accelerator.device)
            totals.add(model(**batch), prediction_counts(batch, stop_token_id), len(batch["attention_mask"]))
    return totals.means(accelerator, "validation")


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
    parser = HfArgumentParser((DataArguments, ModelArguments, TrainArguments))
    data_args, model_args, args = parser.parse_args_into_dataclasses(argv)
    check_arguments(parser, data_args, args)
    output_dir = Path(args.output_dir)
    resume = checkpoint_to_resume(args.resume_from_checkpoint, output_dir)
    if launched():
        die_with_launcher()
    accelerator = make_accelerator(args)
    if args.push_to_hub and accelerator.is_main_process:
        try:
            ensure_hub_repo(args.hub_model_id, private=args.hub_private_repo)
        except HubRepoError as err:
            sys.exit(f"train.py: error: {err}")
    set_seed(args.seed)

    dataset = load_wyckoff_dataset(data_args.dataset)
    train_split, validation_split = dataset["train"], dataset["validation"]
    if data_args.max_train_rows:
        train_split = train_split.select(range(min(data_args.max_train_rows, len(train_split))))
    if data_args.max_validation_rows:
        validation_split = validation_split.select(range(min(data_args.max_validation_rows, len(validation_split))))
    tokenizer = WyckoffTokenizer()
    model = build_model(model_args, tokenizer, train_split)
    stop_token_id = model.config.stop_token_id

    collate = partial(tokenizer.pad, return_tensors="pt")
    workers = {"num_workers": args.dataloader_num_workers, "persistent_workers": args.dataloader_num_workers > 0,
               "worker_init_fn": die_with_launcher if args.dataloader_num_workers else None}
    # Batches of similar lengths: the cascade loss costs (tokens per crystal)² per crystal, so padding a
    # batch of 4-site crystals to one 20-site crystal would waste most of an epoch. The sampler draws global
    # batches, which the prepared loader slices across processes. Reseeded every epoch.
    global_batch = args.per_device_train_batch_size * accelerator.num_processes
    shuffling = torch.Generator()
    sampler = LengthGroupedSampler(global_batch, lengths=[len(m) for m in train_split["attention_mask"]],
                                   generator=shuffling)
    train_loader = DataLoader(train_split.select_columns(tokenizer.model_input_names).with_format(None),
                              batch_size=global_batch, sampler=sampler, collate_fn=collate, **workers)
    # Validation is sharded by hand (contiguous, uneven shards): accelerate would top up the last batch
    # with repeated crystals, and the losses are summed exactly in ``evaluate`` anyway.
    validation_shard = validation_split.shard(accelerator.num_processes, accelerator.process_index, contiguous=True)
    validation_loader = DataLoader(validation_shard.select_columns(tokenizer.model_input_names).with_format(None),
                                   batch_size=args.per_device_eval_batch_size, collate_fn=collate, **workers)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.learning_rate, weight_decay=args.weight_decay)
    steps_per_epoch = math.ceil(len(train_loader) / args.gradient_accumulation_steps)
    total_steps = steps_per_epoch * args.num_train_epochs
    scheduler = get_cosine_schedule_with_warmup(optimizer, int(args.warmup_ratio * total_steps), total_steps)
    model, optimizer, train_loader, scheduler = accelerator.prepare(model, optimizer, train_loader, scheduler)

    state = {"epoch": -1, "global_step": 0, "best_validation_loss": math.inf, "best_epoch": -1,
             "epochs_without_improvement": 0, "best_validation": {}, "train_crystals_per_process": []}
    if resume:
        accelerator.load_state(str(resume))
        state = json.loads((resume / "trainer_state.json").read_text())
        accelerator.print(f"resumed from {resume} after epoch {state['epoch']}")

    accelerator.init_trackers(args.run_name, config={**asdict(data_args), **asdict(args)})
    metrics_log = output_dir / "metrics.jsonl"
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        restart_metrics_log(metrics_log, state["epoch"])
    start = time.perf_counter()
    for epoch in range(state["epoch"] + 1, args.num_train_epochs):
        if state["epochs_without_improvement"] >= args.early_stopping_patience:
            break
        model.train()
        shuffling.manual_seed(args.seed + epoch)
        totals = LossTotals(accelerator.device)
        progress = tqdm(train_loader, desc=f"epoch {epoch}", disable=not accelerator.is_local_main_process,
                        leave=False)
        for batch in progress:
            with accelerator.accumulate(model):
                output = model(**batch)
                counts = prediction_counts(batch, stop_token_id)
                accelerator.backward(global_batch_loss(output, counts, accelerator))
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
            state["global_step"] += int(accelerator.sync_gradients)
            totals.add(output, counts, len(batch["attention_mask"]))
            progress.set_postfix(loss=f"{output.loss.item():.3f}")
        metrics = totals.means(accelerator, "train")
        metrics.update(evaluate(model, validation_loader, accelerator, stop_token_id))
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
            accelerator.print(f"epoch {epoch}: train {metrics['train/loss']:.4f} "
                              f"validation {metrics['validation/loss']:.4f} (best {state['best_validation_loss']:.4f})")
        if (epoch + 1) % args.checkpoint_every_epochs == 0:
            save_checkpoint(accelerator, output_dir, state, args.save_total_limit)
    accelerator.wait_for_everyone()
    accelerator.end_training()

    summary = {}
    if accelerator.is_main_process:
        summary = finish(output_dir, args, data_args, model_args, state, validation_split, tokenizer,
                         wall_seconds=time.perf_counter() - start, device=str(accelerator.device),
                         num_processes=accelerator.num_processes, train_rows=len(train_split))
    return summary


def launch_command() -> str:
    """The command line of this run (the launcher's own options are not visible to the script)."""
    if "ACCELERATE_MIXED_PRECISION" in os.environ:
        launcher = "accelerate launch "
    else:
        launcher = "torchrun " if "TORCHELASTIC_RUN_ID" in os.environ else "python "
    return launcher + " ".join(sys.argv)


def finish(output_dir: Path, args: TrainArguments, data_args: DataArguments, model_args: ModelArguments,
           state: dict, validation_split, tokenizer: WyckoffTokenizer, **facts) -> dict:
    """Calibrate the temperature of the best model, write the summary and card, push if asked."""
    model = WyckoffTransformerForCrystalGeneration.from_pretrained(output_dir).eval()
    temperatures = [float(t) for t in args.calibration_temperatures.split(",") if t.strip()]
    calibration = None
    if temperatures:
        calibration = calibrate_checkpoint(model, tokenizer, validation_split, temperatures, args.calibration_rows,
                                           args.calibration_samples_per_row, args.seed)
        model.save_pretrained(output_dir)
    summary = {
        "command": launch_command(), "dataset": data_args.dataset, **facts,
        "epochs_run": state["epoch"] + 1, "global_step": state["global_step"], "best_epoch": state["best_epoch"],
        "best_validation": state["best_validation"], "sampling_temperature": model.generation_config.temperature,
        "calibration": calibration, "num_parameters": model.num_parameters(),
        "train_crystals_per_process": state["train_crystals_per_process"],
        "hyperparameters": {**asdict(args), "model_config": model_args.config},
        "model_config": {k: v for k, v in model.config.to_diff_dict().items() if k not in CONFIG_NOT_SHOWN},
    }
    (output_dir / "training_summary.json").write_text(json.dumps(summary, indent=2))
    write_model_card(output_dir, summary, model_id=args.hub_model_id or str(output_dir))
    print(json.dumps({k: summary[k] for k in ("best_epoch", "best_validation", "sampling_temperature")}, indent=2))
    print(f"model saved to {output_dir} (from_pretrained, or `wyckoff-hf generate --model {output_dir}`)")
    if args.push_to_hub:
        from huggingface_hub import HfApi

        commit = HfApi().upload_folder(repo_id=args.hub_model_id, folder_path=str(output_dir),
                                       ignore_patterns=PUSH_IGNORE, commit_message="Upload WyckoffTransformer")
        print(f"pushed to {commit.repo_url}")
    return summary


if __name__ == "__main__":
    main()
