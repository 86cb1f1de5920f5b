"""The training loop: parse and check the options, build the task's model and loaders, then train epoch by epoch
with validation, best-model saving, checkpoints, early stopping and a wall-time limit; one loop for both tasks
(the package docstring has the usage)."""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from huggingface_hub.errors import StrictDataclassError
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import HfArgumentParser, get_cosine_schedule_with_warmup
from transformers.trainer_pt_utils import LengthGroupedSampler

from wyckoff_hf.data import load_wyckoff_dataset
from wyckoff_hf.tokenization import WyckoffTokenizer
from wyckoff_hf.utils.hub import HubRepoError, ensure_hub_repo

from .arguments import (
    DataArguments,
    ModelArguments,
    RewardArguments,
    TaskArguments,
    TrainArguments,
    check_arguments,
    check_columns,
    config_overrides,
)
from .augmentation import LabellingAugmentation, SitePermutation
from .checkpoints import (
    restart_metrics_log,
    run_to_resume,
    save_best_model,
    save_checkpoint,
)
from .launch import die_with_launcher, launched, make_accelerator
from .losses import Totals, evaluate, global_batch_loss
from .reward import reward_main
from .summary import finish
from .tasks import make_task


def out_of_time(start: float, max_minutes: float | None, accelerator: Accelerator) -> bool:
    """Whether any process is past ``max_minutes`` since ``start``: all processes stop after the same epoch."""
    if max_minutes is None:
        return False
    late = torch.tensor(float(time.perf_counter() - start > 60 * max_minutes), device=accelerator.device)
    return bool(accelerator.reduce(late, "sum") > 0)


def main(argv: list[str] | None = None) -> dict:
    """Train as the command line ``argv`` (default: ``sys.argv[1:]``) says, on every process of the launch; returns
    the training summary on the main process, ``{}`` on the others. A bad option exits with argparse's one-line
    error before any data is loaded or model built."""
    parser = HfArgumentParser((DataArguments, TaskArguments, ModelArguments, RewardArguments, TrainArguments))
    data_args, task_args, model_args, reward_args, args = parser.parse_args_into_dataclasses(argv)
    check_arguments(parser, data_args, task_args, args, model_args, reward_args)
    if task_args.task == "reward":
        return reward_main(data_args, task_args, model_args, reward_args, args)
    if model_args.init_from and task_args.task != "property":
        parser.error("--init-from is for --task property or reward (a generator trains from scratch)")
    overrides = config_overrides(parser, model_args)
    output_dir = Path(args.output_dir)
    resume = run_to_resume(args.resume_from_checkpoint, output_dir, task_args)
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
