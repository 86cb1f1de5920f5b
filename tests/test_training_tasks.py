"""wyckoff_hf.training.tasks and .losses on their own: collators, row selection, each task's loss terms and
metrics on a tiny batch of a tiny model, and the exact weighting of a global batch's loss across processes."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import TINY_MODEL
from datasets import Dataset

from wyckoff_hf import WyckoffRepresentation
from wyckoff_hf.data.columns import representation_columns
from wyckoff_hf.training.arguments import ModelArguments, TaskArguments
from wyckoff_hf.training.losses import Totals, global_batch_loss
from wyckoff_hf.training.tasks import FIELD_LOSSES, GenerationTask, PropertyTask, column_values, make_task

TINY = {**TINY_MODEL, "hidden_dropout_prob": 0.0}
CRYSTALS = [WyckoffRepresentation.from_sites(62, [("Li", "c"), ("Fe", "c"), ("P", "c"), ("O", "c"), ("O", "c"),
                                                  ("O", "d")]),
            WyckoffRepresentation.from_sites(225, [("Na", "a"), ("Cl", "b")]),
            WyckoffRepresentation.from_sites(221, [("Cs", "a"), ("Cl", "b")])]


def single_process(num_processes: int = 1, reduced: torch.Tensor | None = None) -> SimpleNamespace:
    """An ``Accelerator`` stand-in: ``reduce`` returns ``reduced`` (the other processes' sum) or its input."""
    return SimpleNamespace(num_processes=num_processes,
                           reduce=lambda tensor, reduction: tensor if reduced is None else reduced)


@pytest.fixture
def rows(tokenizer) -> list[dict]:
    values = [(1.2, -2.1), (5.2, -1.8), (0.0, -0.9)]
    return [{**tokenizer.encode(crystal), **representation_columns(crystal), "band_gap": gap,
             "formation_energy_per_atom": energy}
            for crystal, (gap, energy) in zip(CRYSTALS, values, strict=True)]


def test_make_task_builds_the_task_the_options_name(tokenizer):
    generator = make_task(TaskArguments(condition="band_gap"), ModelArguments(), tokenizer)
    assert isinstance(generator, GenerationTask) and generator.columns == ["band_gap"]
    assert generator.loss_terms == FIELD_LOSSES and generator.metric_names == ()
    predictor = make_task(TaskArguments(task="property", target="band_gap,e_above_hull"),
                          ModelArguments(init_from="runs/x"), tokenizer)
    assert isinstance(predictor, PropertyTask) and predictor.init_from == "runs/x"
    assert predictor.metric_names == ("mae/band_gap", "mae/e_above_hull")
    classifier = make_task(TaskArguments(task="property", target="band_gap", classification_threshold=0.0),
                           ModelArguments(), tokenizer)
    assert classifier.threshold == 0.0 and classifier.metric_names == ("accuracy",)


def test_generation_loss_terms_are_the_cascades_field_losses_over_their_predictions(tokenizer, rows):
    task = GenerationTask(tokenizer)
    torch.manual_seed(0)
    model = task.build_model(tokenizer, Dataset.from_list(rows), TINY).eval()
    assert sum(model.generation_config.space_group_counts) == 3
    assert model.generation_config.num_elements_range == [2, 4]  # NaCl and CsCl, then LiFePO4
    assert model.generation_config.num_atoms_range == [2, 28]  # primitive cells: NaCl (F centring) to LiFePO4
    batch = task.collate(rows)
    with torch.no_grad():
        output = model(**batch)
    means, counts = task.batch_statistics(output, batch)
    assert means.tolist() == [getattr(output, name).item() for name in FIELD_LOSSES]
    assert means.sum().item() == pytest.approx(output.loss.item())
    sites = 6 + 2 + 2
    assert counts.tolist() == [sites + 3, sites, sites]  # the element head also predicts each crystal's STOP
    totals = Totals(task, torch.device("cpu"))
    totals.add(means, counts, 3)
    logged = totals.means(single_process(), "validation")
    assert logged["validation/loss"] == pytest.approx(output.loss.item())
    assert logged["validation/element_loss"] == pytest.approx(output.element_loss.item())
    assert totals.crystals == 3


def test_property_loss_and_metrics_on_a_tiny_batch(tokenizer, rows):
    targets = ["band_gap", "formation_energy_per_atom"]
    task = PropertyTask(tokenizer, targets)
    torch.manual_seed(0)
    model = task.build_model(tokenizer, Dataset.from_list(rows), TINY).eval()
    assert model.config.label_mean == pytest.approx([6.4 / 3, -4.8 / 3])
    batch = task.collate(rows)
    with torch.no_grad():
        output = model(**batch)
    means, counts = task.batch_statistics(output, batch)
    assert means[0].item() == pytest.approx(output.loss.item())
    errors = (output.logits - torch.tensor([[1.2, -2.1], [5.2, -1.8], [0.0, -0.9]])).abs().mean(0)
    assert means[1:].tolist() == pytest.approx(errors.tolist())  # each target's MAE in its own units
    assert counts.tolist() == [3, 3, 3]  # one prediction per crystal

    classifier = PropertyTask(tokenizer, ["band_gap"], threshold=0.0)
    model = classifier.build_model(tokenizer, Dataset.from_list(rows), TINY).eval()
    batch = classifier.collate(rows)
    with torch.no_grad():
        output = model(**batch)
    means, counts = classifier.batch_statistics(output, batch)
    assert batch["labels"].tolist() == [1, 1, 0]
    accuracy = (output.logits.argmax(-1) == batch["labels"]).float().mean().item()
    assert means.tolist() == pytest.approx([output.loss.item(), accuracy]) and counts.tolist() == [3, 3]


def test_global_batch_loss_weights_each_slice_by_its_share_of_the_predictions():
    """Two processes' slices of one global batch: the average of their losses (as DDP averages gradients) is the
    loss of the whole batch, each term a mean over all of its predictions, however unevenly they fall."""
    losses = [torch.tensor([2.0, 1.0]), torch.tensor([4.0, 3.0])]  # per-slice means of two loss terms
    counts = [torch.tensor([10.0, 1.0]), torch.tensor([30.0, 3.0])]
    whole = sum(counts)
    expected = ((losses[0] * counts[0] + losses[1] * counts[1]) / whole).sum()
    shares = [global_batch_loss(loss, count, single_process(2, whole)) for loss, count in zip(losses, counts,
                                                                                              strict=True)]
    assert (sum(shares) / 2).item() == pytest.approx(expected.item())
    assert global_batch_loss(losses[0], counts[0], single_process()).item() == pytest.approx(3.0)


def test_collators_add_conditions_with_nan_for_unknown_and_labels(tokenizer):
    nacl = WyckoffRepresentation.from_sites(225, [("Na", "a"), ("Cl", "b")])
    cscl = WyckoffRepresentation.from_sites(221, [("Cs", "a"), ("Cl", "b")])
    rows = [{**tokenizer.encode(nacl), "band_gap": 5.2, "e_above_hull": 0.0},
            {**tokenizer.encode(cscl), "band_gap": None, "e_above_hull": 0.01}]
    batch = GenerationTask(tokenizer, ["band_gap", "e_above_hull"]).collate(rows)
    assert batch["conditions"].dtype == torch.float32 and batch["conditions"].shape == (2, 2)
    assert batch["conditions"][0].tolist() == pytest.approx([5.2, 0.0])
    assert batch["conditions"][1, 0].isnan() and batch["conditions"][1, 1].item() == pytest.approx(0.01)
    assert torch.equal(batch["element_ids"], tokenizer.pad(rows, return_tensors="pt")["element_ids"])
    assert "conditions" not in GenerationTask(tokenizer).collate(rows)

    regression = PropertyTask(tokenizer, ["e_above_hull", "band_gap"]).collate(rows[:1])
    assert regression["labels"].tolist() == [pytest.approx([0.0, 5.2])]
    classes = PropertyTask(tokenizer, ["e_above_hull"], threshold=0.005).collate(rows)
    assert classes["labels"].dtype == torch.long and classes["labels"].tolist() == [0, 1]
    band_gap_classifier = PropertyTask(tokenizer, ["band_gap"], threshold=0.0)
    band_gap_classes = band_gap_classifier.label_config(Dataset.from_list(rows))
    assert band_gap_classifier.labels(torch.tensor([[0.0], [1e-3], [-0.0]])).tolist() == [0, 1, 0]  # 0 eV: a metal
    assert band_gap_classes == {"num_labels": 2, "problem_type": "single_label_classification",
                                "id2label": {0: "band_gap <= 0.0", 1: "band_gap > 0.0"},
                                "label2id": {"band_gap <= 0.0": 0, "band_gap > 0.0": 1}}


def test_rows_without_a_target_are_skipped_and_reported(tokenizer):
    split = Dataset.from_dict({"material_id": [f"mp-{i}" for i in range(8)],
                               "band_gap": [0.1, None, 2.0, float("nan"), 0.0, None, 1.0, 3.0],
                               "e_above_hull": [0.0] * 8})
    kept, note = PropertyTask(tokenizer, ["e_above_hull", "band_gap"]).select_rows(split, "train")
    assert kept["material_id"] == ["mp-0", "mp-2", "mp-4", "mp-6", "mp-7"]
    assert note == ("train: 3 of 8 rows have no value of e_above_hull, band_gap, skipped (first: mp-1, mp-3, mp-5)")
    assert PropertyTask(tokenizer, ["e_above_hull"]).select_rows(split, "train") == (split, None)
    kept, note = GenerationTask(tokenizer, ["band_gap"]).select_rows(split, "validation")
    assert len(kept) == 8 and note.startswith("validation: 3 of 8 rows have no value of band_gap, kept with that")
    assert np.isnan(column_values(kept, ["band_gap"])[[1, 3, 5], 0]).all()
