"""Reward fine-tuning of a saved generator (``scripts/train.py --task reward --init-from MODEL --reward SPEC``):
group-relative policy gradient (GRPO) with a KL penalty to the starting model.

Each step every process draws ``--num-groups`` space groups from the model's prior and ``--group-size`` crystals in
each, from the policy itself (temperature 1, no STOP shifts, the generator's element and atom ranges by rejection),
scores them with the reward, and takes one gradient step on

    loss = −mean_i(A_i · log π(x_i | S_i)) + β · mean_i KL_i,

with A_i the reward standardised within its group (GRPO's advantage: no value network) and KL_i the exact KL
divergence of the policy's cascade distributions from the starting model's, summed over the steps of x_i (an
unbiased estimate of the sequences' KL). Grouping by space group makes the rejection exact too: log π(x | S, ranges)
differs from log π(x | S) by the log acceptance rate of S, constant within a group, and a group's advantages sum to
zero, so that term cancels. The space-group prior itself is not trained: the reward moves p(sites | S).

One sampling batch, one update (on-policy; PPO's clipped ratio would only matter for several updates per batch).
TRL's ``GRPOTrainer`` assumes a text language model with a chat-style prompt and a ``generate`` of token strings;
this model samples a cascade of three fields per token under crystallographic masks, so the loss above is written
here, in a few lines, and accelerate carries devices, processes and checkpoints as for the other tasks.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import set_seed

from wyckoff_hf.cards import write_model_card
from wyckoff_hf.modeling import WyckoffTransformerForCrystalGeneration
from wyckoff_hf.modeling.configuration_wyckoff_transformer import FIELD_INPUTS
from wyckoff_hf.rewards import (
    ChgnetStability,
    NewTemplate,
    Novelty,
    RewardFunction,
    RewardTerm,
    SurrogateStability,
    Uniqueness,
)
from wyckoff_hf.tokenization import WyckoffRepresentation, WyckoffTokenizer

from .arguments import DataArguments, ModelArguments, RewardArguments, TaskArguments, TrainArguments
from .checkpoints import (
    restart_metrics_log,
    run_to_resume,
    save_best_model,
    save_checkpoint,
)
from .launch import die_with_launcher, launch_command, launched, make_accelerator
from .summary import push_output

CASCADE_LOGITS = ("element_logits", "site_symmetry_logits", "enumeration_logits")


def build_reward(reward_args: RewardArguments, data_args: DataArguments, seed: int) -> RewardFunction:
    """The reward ``--reward`` names, each term with the data it needs (the surrogate, the known crystals)."""
    known: list[WyckoffRepresentation] | None = None

    def build(name: str) -> RewardTerm:
        nonlocal known
        if name == "stability":
            from wyckoff_hf.prediction import PropertyPredictor

            if not reward_args.surrogate:
                raise ValueError("--reward stability needs --surrogate MODEL, a predictor of e_above_hull (or use "
                                 "the chgnet term)")
            return SurrogateStability(PropertyPredictor.from_pretrained(reward_args.surrogate))
        if name == "chgnet":
            return ChgnetStability(reward_args.reward_num_workers, reward_args.relaxation_cache, seed)
        if name == "uniqueness":
            return Uniqueness()
        if known is None:
            from wyckoff_hf.data import known_crystals

            known = known_crystals(data_args.dataset)
        return Novelty(known) if name == "novelty" else NewTemplate(known)

    return RewardFunction.from_spec(reward_args.reward, build)


def group_advantages(rewards: np.ndarray, group_size: int) -> np.ndarray:
    """Each reward standardised within its group of ``group_size`` (consecutive) crystals: (r − mean) / (std + ε).
    A group whose crystals all score the same teaches nothing and gets zeros."""
    grouped = rewards.reshape(-1, group_size)
    centred = grouped - grouped.mean(1, keepdims=True)
    return (centred / (grouped.std(1, keepdims=True) + 1e-6)).reshape(-1)


def sequence_kl(policy: Any, reference: Any) -> torch.Tensor:
    """Per sequence, Σ over its cascade steps of KL(π(·|prefix) ‖ π_ref(·|prefix)), from the two models' outputs on
    the same batch. Impossible values hold the dtype's minimum in both (probability 0, no contribution); padding and
    the STOP token's site fields hold zeros in both (KL 0)."""
    total = 0
    for name in CASCADE_LOGITS:
        log_p = getattr(policy, name).float().log_softmax(-1)
        log_q = getattr(reference, name).float().log_softmax(-1)
        total = total + (log_p.exp() * (log_p - log_q)).sum(-1).sum(-1)
    return total


def draw_crystals(model: WyckoffTransformerForCrystalGeneration, tokenizer: WyckoffTokenizer,
                  reward_args: RewardArguments, seed: int) -> tuple[dict[str, torch.Tensor], list[int]]:
    """``num_groups`` space groups from the model's prior, ``group_size`` crystals from the policy in each
    (consecutive), at temperature 1 without STOP shifts: the distribution the gradient is of."""
    counts = torch.tensor(model.generation_config.space_group_counts, dtype=torch.float)
    generator = torch.Generator().manual_seed(seed)
    ids = torch.multinomial(counts, reward_args.num_groups, replacement=True, generator=generator)
    groups = [int(tokenizer.vocabularies["space_group"][int(i)]) for i in ids]
    per_crystal = [group for group in groups for _ in range(reward_args.group_size)]
    with torch.no_grad():
        samples = model.generate(len(per_crystal), space_group=per_crystal, seed=seed, temperature=1.0,
                                 stop_logit_bias=[0.0])
    return samples, groups


def step_seed(seed: int, step: int, process: int) -> int:
    """The seed of one process's draws at one step: a function of the three only, so a resumed run draws the
    crystals the uninterrupted run would have."""
    return int(np.random.SeedSequence([seed, step, process]).generate_state(1)[0])


def reward_main(data_args: DataArguments, task_args: TaskArguments, model_args: ModelArguments,
                reward_args: RewardArguments, args: TrainArguments) -> dict:
    """The fine-tuning run (module docstring); returns the summary on the main process, ``{}`` on the others."""
    output_dir = Path(args.output_dir)
    resume = run_to_resume(args.resume_from_checkpoint, output_dir, task_args)
    if launched():
        die_with_launcher()
    accelerator = make_accelerator(args)
    set_seed(args.seed)
    policy = WyckoffTransformerForCrystalGeneration.from_pretrained(model_args.init_from)
    reference = WyckoffTransformerForCrystalGeneration.from_pretrained(model_args.init_from).requires_grad_(False)
    tokenizer = WyckoffTokenizer.from_pretrained(model_args.init_from)
    reward = build_reward(reward_args, data_args, args.seed)
    optimizer = torch.optim.AdamW(policy.parameters(), lr=reward_args.reward_learning_rate, weight_decay=0.0)
    policy, optimizer = accelerator.prepare(policy, optimizer)
    reference = reference.to(accelerator.device).eval()
    state: dict[str, Any] = {"global_step": 0, "task": asdict(task_args), "reward": asdict(reward_args),
                             "init_from": model_args.init_from}
    if resume:
        accelerator.load_state(str(resume))
        state = {**state, **json.loads((resume / "trainer_state.json").read_text())}
        accelerator.print(f"resumed from {resume} after step {state['global_step']}")
    metrics_log = output_dir / "metrics.jsonl"
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        restart_metrics_log(metrics_log, state["global_step"], key="step")
    start = time.perf_counter()
    history: list[dict[str, float]] = []
    for step in range(state["global_step"], reward_args.max_steps):
        if args.max_train_minutes is not None and time.perf_counter() - start > 60 * args.max_train_minutes:
            accelerator.print(f"stopping before step {step}: past --max-train-minutes {args.max_train_minutes}")
            state["stopped_by_time_limit"] = True
            break
        metrics = reward_step(policy, reference, tokenizer, reward, optimizer, accelerator, reward_args,
                              step_seed(args.seed, step, accelerator.process_index), args.max_grad_norm)
        metrics.update(step=step + 1, elapsed_s=time.perf_counter() - start)
        history.append(metrics)
        state["global_step"] = step + 1
        if accelerator.is_main_process:
            with open(metrics_log, "a") as f:
                f.write(json.dumps(metrics) + "\n")
            accelerator.print(f"step {step + 1}: reward {metrics['reward']:.3f} kl {metrics['kl']:.3f} "
                              + " ".join(f"{name} {metrics[name]:.3f}" for name in reward.terms))
        if (step + 1) % reward_args.save_steps == 0:
            save_checkpoint(accelerator, output_dir, state, args.save_total_limit)
    accelerator.wait_for_everyone()
    if not accelerator.is_main_process:
        return {}
    model = accelerator.unwrap_model(policy)
    settings = model.generation_config
    settings.temperature, settings.stop_logit_bias = 1.0, None  # the distribution the reward was optimised for
    save_best_model(model, tokenizer, output_dir)
    logged = [json.loads(line) for line in metrics_log.read_text().splitlines()]
    summary = {"command": launch_command(), "task": "reward", "init_from": model_args.init_from,
               "reward": reward_args.reward, "weights": reward.weights, "kl_coef": reward_args.kl_coef,
               "steps": state["global_step"], "crystals_per_step": reward_args.num_groups * reward_args.group_size
               * accelerator.num_processes, "num_processes": accelerator.num_processes,
               "stopped_by_time_limit": state.get("stopped_by_time_limit", False),
               "wall_seconds": time.perf_counter() - start, "first_steps": mean_metrics(logged[:10]),
               "last_steps": mean_metrics(logged[-10:]), "hyperparameters": {**asdict(reward_args), **asdict(args)}}
    (output_dir / "training_summary.json").write_text(json.dumps(summary, indent=2))
    write_model_card(output_dir, summary, model_id=args.hub_model_id or str(output_dir))
    print(f"model saved to {output_dir} (wyckoff-hf generate --model {output_dir})")
    if args.push_to_hub:
        push_output(output_dir, args)
    return summary


def mean_metrics(rows: Sequence[dict[str, float]]) -> dict[str, float]:
    """Each logged value's mean over ``rows`` (the card's start and end of the run)."""
    names = [name for name in rows[0] if name not in ("step", "elapsed_s")] if rows else []
    return {name: float(np.mean([row[name] for row in rows])) for name in names}


def reward_step(policy: Any, reference: Any, tokenizer: WyckoffTokenizer, reward: RewardFunction,
                optimizer: torch.optim.Optimizer, accelerator: Accelerator, reward_args: RewardArguments, seed: int,
                max_grad_norm: float) -> dict[str, float]:
    """Draw, score, one GRPO update; the step's means over all processes."""
    model = accelerator.unwrap_model(policy)
    model.eval()  # no dropout: the log-probabilities are those of the distribution sampled
    samples, _ = draw_crystals(model, tokenizer, reward_args, seed)
    crystals = tokenizer.decode(samples)
    rewards, terms = reward(crystals)
    advantages = torch.tensor(group_advantages(rewards, reward_args.group_size), dtype=torch.float,
                              device=accelerator.device)
    inputs = {name: samples[name] for name in (*FIELD_INPUTS, "attention_mask") if name in samples}
    output = policy(**inputs, return_loss=False)
    with torch.no_grad():
        anchor = reference(**inputs, return_loss=False)
    kl = sequence_kl(output, anchor)
    loss = -(advantages * output.log_likelihood).mean() + reward_args.kl_coef * kl.mean()
    accelerator.backward(loss)
    accelerator.clip_grad_norm_(policy.parameters(), max_grad_norm)
    optimizer.step()
    optimizer.zero_grad()
    keys = [crystal.canonical() for crystal in crystals]
    local = {"reward": float(rewards.mean()), "kl": kl.mean().item(), "log_likelihood":
             output.log_likelihood.mean().item(), "loss": loss.item(), "unique": len(set(keys)) / len(keys),
             "templates": len({crystal.canonical_template() for crystal in crystals}) / len(crystals),
             **{name: float(values.mean()) for name, values in terms.items()}}
    values = accelerator.reduce(torch.tensor(list(local.values()), device=accelerator.device), "mean")
    return dict(zip(local, (float(v) for v in values), strict=True))
