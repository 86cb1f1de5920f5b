"""Train a WyckoffTransformer on a prepared crystal dataset with 🤗 Accelerate.

    accelerate launch scripts/train.py --dataset DIR_OR_HUB_ID --output-dir runs/NAME [--config model.json] ...
    python scripts/train.py ...                      # the same on one CPU / GPU

Every default reproduces the shipped model (``wyckoff_hf/pretrained/mp20-biternary``). The run writes

- ``OUTPUT_DIR/best/``: the best model by validation loss (``save_pretrained``: config.json with the
  training split's space-group prior and the calibrated sampling temperature, model.safetensors, the
  modeling code for ``trust_remote_code``), the tokenizer, and a model card ``README.md``;
- ``OUTPUT_DIR/checkpoints/epoch-NNNN/``: ``accelerator.save_state`` checkpoints plus ``trainer_state.json``,
  resumed with ``--resume-from-checkpoint latest`` (or a path);
- ``OUTPUT_DIR/metrics.jsonl`` (every logged value) and ``OUTPUT_DIR/training_summary.json``.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import HfArgumentParser, get_cosine_schedule_with_warmup
from transformers.trainer_pt_utils import LengthGroupedSampler

from wyckoff_hf.cards import write_model_card
from wyckoff_hf.data import load_wyckoff_dataset
from wyckoff_hf.generation.calibration import calibrate_checkpoint
from wyckoff_hf.modeling import WyckoffTransformerConfig, WyckoffTransformerForCrystalGeneration
from wyckoff_hf.tokenization import WyckoffTokenizer

LOSS_FIELDS = ("loss", "element_loss", "site_symmetry_loss", "enumeration_loss")


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
    output_dir: str = field(default="runs/mp20-biternary", metadata={"help": "where checkpoints and the model go"})
    num_epochs: int = field(default=80, metadata={"help": "maximum number of epochs"})
    batch_size: int = field(default=128, metadata={"help": "crystals per device per step"})
    learning_rate: float = field(default=1e-3, metadata={"help": "peak AdamW learning rate"})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay"})
    warmup_ratio: float = field(default=0.05, metadata={"help": "fraction of steps of linear warm-up before cosine"})
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "micro-batches per optimizer step"})
    max_grad_norm: float = field(default=1.0, metadata={"help": "gradient clipping"})
    mixed_precision: str | None = field(default=None, metadata={
        "help": "no / fp16 / bf16; default: the launcher's setting, else bf16 on a GPU and no on a CPU"})
    seed: int = field(default=0, metadata={"help": "seeds initialisation, shuffling, dropout and calibration"})
    checkpoint_every_epochs: int = field(default=1, metadata={"help": "save_state every N epochs (keeps the last 2)"})
    resume_from_checkpoint: str | None = field(default=None, metadata={
        "help": "a checkpoint folder, or 'latest' for the newest one in OUTPUT_DIR/checkpoints"})
    early_stopping_patience: int = field(default=10, metadata={
        "help": "stop after N epochs without a better validation loss"})
    calibration_temperatures: str = field(default="0.4,0.5,0.6,0.7,0.8,0.9,1.0,1.1,1.2", metadata={
        "help": "comma-separated candidate sampling temperatures ('' skips calibration)"})
    calibration_rows: int = field(default=2000, metadata={"help": "validation crystals used for calibration"})
    calibration_samples_per_row: int = field(default=4, metadata={
        "help": "crystals sampled per validation crystal (in its space group) for each temperature"})
    dataloader_workers: int = field(default=0, metadata={"help": "DataLoader worker processes"})
    push_to_hub: str | None = field(default=None, metadata={"help": "ORG/NAME: upload the best model and its card"})
    hub_private: bool = field(default=False, metadata={"help": "create the Hub repo as private"})
    run_name: str = field(default="wyckoff-transformer", metadata={"help": "tracker run name"})


def token_columns(dataset, tokenizer: WyckoffTokenizer):
    """Only the tokenizer's columns, so batches are padded by ``tokenizer.pad``."""
    return dataset.select_columns(tokenizer.model_input_names)


def evaluate(model, loader, accelerator: Accelerator) -> dict[str, float]:
    """Validation losses per field, averaged over crystals across all processes."""
    model.eval()
    totals = torch.zeros(len(LOSS_FIELDS) + 1, device=accelerator.device)
    with torch.no_grad():
        for batch in loader:
            output = model(**batch)
            size = batch["attention_mask"].shape[0]
            totals += torch.tensor([getattr(output, name).item() * size for name in LOSS_FIELDS] + [size],
                                   device=accelerator.device)
    totals = accelerator.reduce(totals, reduction="sum")
    return {f"validation/{name}": (totals[i] / totals[-1]).item() for i, name in enumerate(LOSS_FIELDS)}


def latest_checkpoint(output_dir: Path) -> Path | None:
    """The newest *complete* checkpoint: ``trainer_state.json`` is written last, so a run killed while
    saving leaves a folder without it, which is skipped."""
    complete = sorted((output_dir / "checkpoints").glob("epoch-*/trainer_state.json"))
    return complete[-1].parent if complete else None


def make_accelerator(args: TrainArguments) -> Accelerator:
    mixed_precision = args.mixed_precision
    if mixed_precision is None and torch.cuda.is_available():
        mixed_precision = "bf16"
    try:
        import tensorboard  # noqa: F401

        log_with = "tensorboard"
    except ImportError:
        log_with = None
    return Accelerator(mixed_precision=mixed_precision, gradient_accumulation_steps=args.gradient_accumulation_steps,
                       log_with=log_with, project_dir=args.output_dir)


def build_model(model_args: ModelArguments, tokenizer: WyckoffTokenizer,
                train_split) -> WyckoffTransformerForCrystalGeneration:
    """A fresh model whose config carries the tokenizer's tables and the training split's space-group prior."""
    overrides = json.loads(Path(model_args.config).read_text()) if model_args.config else {}
    counts = Counter(train_split["space_group"])
    prior = [counts.get(int(token), 0) if token.isdigit() else 0 for token in tokenizer.vocabularies["space_group"]]
    config = WyckoffTransformerConfig(**{**tokenizer.model_config_kwargs(), "space_group_counts": prior, **overrides})
    return WyckoffTransformerForCrystalGeneration(config)


def main(argv: list[str] | None = None) -> dict:
    parser = HfArgumentParser((DataArguments, ModelArguments, TrainArguments))
    data_args, model_args, args = parser.parse_args_into_dataclasses(argv)
    output_dir = Path(args.output_dir)
    accelerator = make_accelerator(args)
    set_seed(args.seed)

    dataset = load_wyckoff_dataset(data_args.dataset)
    train_split, validation_split = dataset["train"], dataset["validation"]
    if data_args.max_train_rows:
        train_split = train_split.select(range(min(data_args.max_train_rows, len(train_split))))
    if data_args.max_validation_rows:
        validation_split = validation_split.select(range(min(data_args.max_validation_rows, len(validation_split))))
    tokenizer = WyckoffTokenizer()
    model = build_model(model_args, tokenizer, train_split)

    collate = tokenizer.pad
    # Batches of similar lengths: the cascade loss costs (tokens per crystal)² per crystal, so padding a
    # batch of 4-site crystals to one 20-site crystal would waste most of an epoch. Reseeded every epoch.
    shuffling = torch.Generator()
    sampler = LengthGroupedSampler(args.batch_size, lengths=[len(m) for m in train_split["attention_mask"]],
                                   generator=shuffling)
    train_loader = DataLoader(token_columns(train_split, tokenizer).with_format(None), batch_size=args.batch_size,
                              sampler=sampler, collate_fn=collate, num_workers=args.dataloader_workers)
    validation_loader = DataLoader(token_columns(validation_split, tokenizer).with_format(None),
                                   batch_size=args.batch_size, collate_fn=collate, num_workers=args.dataloader_workers)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.learning_rate, weight_decay=args.weight_decay)
    steps_per_epoch = math.ceil(len(train_loader) / args.gradient_accumulation_steps)
    total_steps = steps_per_epoch * args.num_epochs
    scheduler = get_cosine_schedule_with_warmup(optimizer, int(args.warmup_ratio * total_steps), total_steps)
    model, optimizer, train_loader, validation_loader, scheduler = accelerator.prepare(
        model, optimizer, train_loader, validation_loader, scheduler)

    state = {"epoch": -1, "best_validation_loss": math.inf, "best_epoch": -1, "epochs_without_improvement": 0,
             "best_validation": {}}
    resume = latest_checkpoint(output_dir) if args.resume_from_checkpoint == "latest" else args.resume_from_checkpoint
    if resume:
        accelerator.load_state(str(resume))
        state = json.loads((Path(resume) / "trainer_state.json").read_text())
        accelerator.print(f"resumed from {resume} after epoch {state['epoch']}")

    accelerator.init_trackers(args.run_name, config={**asdict(data_args), **asdict(args)})
    metrics_log = output_dir / "metrics.jsonl"
    start = time.perf_counter()
    for epoch in range(state["epoch"] + 1, args.num_epochs):
        if state["epochs_without_improvement"] >= args.early_stopping_patience:
            break
        model.train()
        shuffling.manual_seed(args.seed + epoch)
        running = torch.zeros(len(LOSS_FIELDS), device=accelerator.device)
        progress = tqdm(train_loader, desc=f"epoch {epoch}", disable=not accelerator.is_local_main_process,
                        leave=False)
        for batch in progress:
            with accelerator.accumulate(model):
                output = model(**batch)
                accelerator.backward(output.loss)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
            running += torch.stack([getattr(output, name).detach().float() for name in LOSS_FIELDS])
            progress.set_postfix(loss=f"{output.loss.item():.3f}")
        train_losses = (accelerator.reduce(running, reduction="mean") / len(train_loader)).tolist()
        metrics = {f"train/{name}": value for name, value in zip(LOSS_FIELDS, train_losses, strict=True)}
        metrics.update(evaluate(model, validation_loader, accelerator))
        metrics.update({"epoch": epoch, "learning_rate": scheduler.get_last_lr()[0],
                        "elapsed_s": time.perf_counter() - start})
        accelerator.log(metrics, step=epoch)

        state["epoch"] = epoch
        if metrics["validation/loss"] < state["best_validation_loss"]:
            state.update(best_validation_loss=metrics["validation/loss"], best_epoch=epoch,
                         epochs_without_improvement=0,
                         best_validation={k: v for k, v in metrics.items() if k.startswith("validation/")})
            if accelerator.is_main_process:
                accelerator.unwrap_model(model).save_pretrained(output_dir / "best")
                tokenizer.save_pretrained(output_dir / "best")
        else:
            state["epochs_without_improvement"] += 1
        if accelerator.is_main_process:
            with open(metrics_log, "a") as f:
                f.write(json.dumps(metrics) + "\n")
            accelerator.print(f"epoch {epoch}: train {metrics['train/loss']:.4f} "
                              f"validation {metrics['validation/loss']:.4f} (best {state['best_validation_loss']:.4f})")
        if (epoch + 1) % args.checkpoint_every_epochs == 0:
            save_checkpoint(accelerator, output_dir, epoch, state)
    accelerator.wait_for_everyone()
    accelerator.end_training()

    summary = {}
    if accelerator.is_main_process:
        summary = finish(output_dir, args, data_args, model_args, state, validation_split, tokenizer,
                         wall_seconds=time.perf_counter() - start, device=str(accelerator.device),
                         num_processes=accelerator.num_processes, train_rows=len(train_split))
    return summary


def launch_command() -> str:
    """The command line of this run; ``accelerate launch`` exports ACCELERATE_* settings to its children."""
    launcher = "accelerate launch " if "ACCELERATE_MIXED_PRECISION" in os.environ else "python "
    return launcher + " ".join(sys.argv)


def save_checkpoint(accelerator: Accelerator, output_dir: Path, epoch: int, state: dict) -> None:
    """``save_state`` plus the loop's own state; older checkpoints beyond the last two are removed."""
    folder = output_dir / "checkpoints" / f"epoch-{epoch:04d}"
    accelerator.save_state(str(folder))
    if accelerator.is_main_process:
        (folder / "trainer_state.json").write_text(json.dumps(state, indent=2))
        for old in sorted((output_dir / "checkpoints").glob("epoch-*"))[:-2]:
            shutil.rmtree(old)


def finish(output_dir: Path, args: TrainArguments, data_args: DataArguments, model_args: ModelArguments,
           state: dict, validation_split, tokenizer: WyckoffTokenizer, **facts) -> dict:
    """Calibrate the temperature of the best model, write the summary and card, push if asked."""
    best_dir = output_dir / "best"
    model = WyckoffTransformerForCrystalGeneration.from_pretrained(best_dir).eval()
    temperatures = [float(t) for t in args.calibration_temperatures.split(",") if t.strip()]
    calibration = None
    if temperatures:
        calibration = calibrate_checkpoint(model, tokenizer, validation_split, temperatures, args.calibration_rows,
                                           args.calibration_samples_per_row, args.seed)
        model.save_pretrained(best_dir)
    summary = {
        "command": launch_command(), "dataset": data_args.dataset, **facts,
        "epochs_run": state["epoch"] + 1, "best_epoch": state["best_epoch"],
        "best_validation": state["best_validation"], "sampling_temperature": model.config.sampling_temperature,
        "calibration": calibration, "num_parameters": model.num_parameters(),
        "hyperparameters": {**asdict(args), "model_config": model_args.config},
        "model_config": {k: v for k, v in model.config.to_diff_dict().items()
                         if k not in ("wyckoff_positions", "element_vocabulary", "space_group_counts")},
    }
    (output_dir / "training_summary.json").write_text(json.dumps(summary, indent=2))
    write_model_card(best_dir, summary)
    if args.push_to_hub:
        from huggingface_hub import HfApi

        api = HfApi()
        repo = api.create_repo(args.push_to_hub, private=args.hub_private, exist_ok=True)
        api.upload_folder(repo_id=repo.repo_id, folder_path=str(best_dir), commit_message="Upload WyckoffTransformer")
    print(json.dumps({k: summary[k] for k in ("best_epoch", "best_validation", "sampling_temperature")}, indent=2))
    return summary


if __name__ == "__main__":
    main()
