"""Losses and metrics summed exactly across processes: each process's share of the global batch's loss, so that
N processes follow the trajectory of one, and means over a whole split whatever the batching and sharding."""

from __future__ import annotations

import torch
from accelerate import Accelerator
from torch.utils.data import DataLoader

from .tasks import Task


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

    def __init__(self, task: Task, device: torch.device) -> None:
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


def evaluate(model: torch.nn.Module, loader: DataLoader, accelerator: Accelerator,
             task: Task) -> dict[str, float]:
    """Validation loss terms and metrics: exact means over the whole split (each process scores its own shard)."""
    model.eval()
    totals = Totals(task, accelerator.device)
    with torch.no_grad():
        for batch in loader:
            batch = batch.to(accelerator.device)
            totals.add(*task.batch_statistics(model(**batch), batch), len(batch["attention_mask"]))
    return totals.means(accelerator, "validation")
