"""The model card (README.md with the Hub's YAML metadata) of a trained checkpoint.

Filled from the training summary written by ``scripts/train.py`` and, when given, the ``metrics.json``
of ``wyckoff-hf evaluate``, rendered from the packaged template ``templates/model_card.md``; a property
predictor's summary (``"task": "property"``) is rendered from ``templates/property_card.md`` instead.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from huggingface_hub import ModelCardData

from .rendering import render_card, template_path

TEMPLATE = "model_card.md"
PROPERTY_TEMPLATE = "property_card.md"
REWARD_TEMPLATE = "reward_card.md"
# config entries the card does not list: the element vocabulary and bookkeeping
CONFIG_NOT_SHOWN = ("element_vocabulary", "auto_map", "transformers_version", "architectures", "dtype")


def _evaluation_section(metrics: dict[str, Any] | None) -> str:
    if not metrics:
        return "Not evaluated yet: run `wyckoff-hf evaluate` and re-render the card with its metrics.json."
    from ..evaluation import metrics_table

    return ("Metrics of `wyckoff-hf evaluate` (definitions in `wyckoff_hf.evaluation`; the test split of the "
            "training dataset is the reference for distributions, its train split for novelty):\n\n"
            + metrics_table(metrics))


def _stability_section(metrics: dict[str, Any] | None) -> str:
    """The S.U.N. rows of a ``wyckoff-hf evaluate --stability`` run (often on fewer samples than the evaluation
    above: relaxation is the expensive part), with its protocol and intervals."""
    if not metrics:
        return ("Not measured yet: run `wyckoff-hf evaluate ... --stability` and re-render the card with "
                "`--stability-metrics` and its metrics.json.")
    if "stability" not in metrics or "skipped" in metrics["stability"]:
        raise ValueError("the stability metrics hold no relaxation results: they come from `wyckoff-hf evaluate "
                         "--stability` with the stability extra installed")
    from ..evaluation import metrics_table, stability_notes

    return ("CHGNet relaxation, energy above a convex hull of Materials Project points, S.U.N. and S.S.U.N. "
            "(`wyckoff-hf evaluate --stability`; definitions in `wyckoff_hf.evaluation.stability`):\n\n"
            + metrics_table(metrics, sections=("stability",)) + "\n\n"
            + "\n".join(stability_notes(metrics["stability"])))


def _calibration_section(calibration: dict[str, Any] | None) -> str:
    if not calibration:
        return "The sampling temperature was not calibrated (default 1.0)."
    rows = "\n".join(f"| {p['temperature']} | {p['sites_distance']:.4f} | {p['elements_distance']:.4f} "
                     f"| {p['distance']:.4f} |" for p in calibration["scan"])
    command = f" (`{calibration['command']}`)" if "command" in calibration else ""
    return (f"Sampling temperature **{calibration['temperature']}**, calibrated on {calibration['rows']} validation "
            f"crystals{command}: {calibration['samples_per_row']} samples per validation crystal in that "
            "crystal's space group; the temperature minimising the sum of the Wasserstein distances of the numbers "
            "of Wyckoff sites and of elements to the validation set wins.\n\n"
            "| temperature | W1 #sites | W1 #elements | sum |\n|---|---|---|---|\n" + rows + _stop_section(calibration))


def _stop_section(calibration: dict[str, Any]) -> str:
    stop = calibration.get("stop")
    if not stop:
        return ""
    history = ", ".join(f"{entry['sites_distance']:.3f}" for entry in stop["rounds"])
    return ("\n\nAt that temperature, STOP-logit shifts per number of sites placed (`stop_logit_bias` in "
            f"`generation_config.json`) make the sampled number of sites follow the validation split: "
            f"{stop['samples_per_row']} samples per validation crystal, W1 #sites per round {history} (round 0 "
            f"without shifts; the best round is kept). Shifts: `{stop['stop_logit_bias']}`.")


def _training_values(summary: dict[str, Any], model_id: str) -> dict[str, Any]:
    """The placeholders both cards share: the run's data, command, hardware, epochs and configuration."""
    return {
        "model_name": Path(summary["dataset"]).name,
        "model_id": model_id,
        "dataset": summary["dataset"],
        "train_rows": summary["train_rows"],
        "command": summary["command"],
        "device": summary["device"],
        "num_processes": summary["num_processes"],
        "wall_time": f"{summary['wall_seconds'] / 60:.1f} min",
        "epochs_run": summary["epochs_run"],
        "best_epoch": summary["best_epoch"],
        "num_parameters": f"{summary['num_parameters']:,}",
        "model_config": json.dumps({k: v for k, v in summary["model_config"].items() if k not in CONFIG_NOT_SHOWN}),
    }


def _test_section(metrics: dict[str, Any] | None) -> str:
    """A property predictor's results of ``scripts/benchmarks/benchmark_property.py --output-json`` (or how to get
    them)."""
    if not metrics:
        return ("Not evaluated yet: run `scripts/benchmarks/benchmark_property.py --output-json FILE` and re-render "
                "the card with `scripts/render_model_card.py --metrics FILE`.")
    authors = metrics.get("authors_mae_mev", {})
    rows = []
    for result in metrics["results"]:
        if "mae" in result:
            reference = authors.get(result["property"])
            rows.append(f"| {result['property']} | {result['rows']} | MAE {1000 * result['mae']:.1f} meV | "
                        f"{1000 * result['baseline_mae']:.1f} meV | "
                        f"{'–' if reference is None else f'{reference:.0f} meV'} |")
        else:
            rows.append(f"| {result['property']} > {result['threshold']:g} | {result['rows']} | accuracy "
                        f"{result['accuracy']:.3f} | {result['baseline_accuracy']:.3f} | – |")
    return (f"On the `{metrics['split']}` split of `{metrics['dataset']}` (`{metrics['command']}`), next to the "
            "composition-family baseline (the mean training value of the same reduced formula, else chemical "
            "system, else all) and the WyckoffTransformer authors' figure on the full MP-20 (a larger training "
            "split, so a reference point rather than a like-for-like comparison):\n\n"
            "| property | rows | model | baseline | authors (full MP-20) |\n|---|---|---|---|---|\n" + "\n".join(rows))


def _property_values(summary: dict[str, Any], metrics: dict[str, Any] | None) -> dict[str, Any]:
    """A property predictor's placeholders: what it predicts, its validation metrics beside the trivial
    predictor's (the training split's mean of each target, or its majority class) and its test results."""
    targets, threshold = summary["targets"], summary["classification_threshold"]
    if threshold is None:
        task = ", ".join(f"`{target}`" for target in targets) + " (regression, in the labels' own units)"
        loss = {"l1": "mean absolute", "mse": "mean squared"}[summary["model_config"].get("regression_loss", "l1")]
        loss = f"the loss is the {loss} error of the targets standardised by the training split"
        baseline = "the training split's mean of each target"
    else:
        task = f"whether `{targets[0]}` > {threshold} (label 1) or not (label 0)"
        loss, baseline = "the loss is the cross-entropy", "the training split's majority class"
    trivial = summary.get("baseline_validation", {})
    rows = "\n".join(f"| {name.removeprefix('validation/')} | {value:.4f} | "
                     f"{f'{trivial[name]:.4f}' if name in trivial else '–'} |"
                     for name, value in summary.get("best_validation", {}).items())
    card_data = ModelCardData(
        library_name="transformers", license="mit", pipeline_tag="other",
        tags=["wyckoff-transformer", "property-prediction", "materials-science", "chemistry", "custom_code"],
        datasets=[summary["dataset"]], metrics=["mae"] if threshold is None else ["accuracy"],
    )
    return {"card_metadata": card_data.to_yaml(), "task_description": task, "loss_description": loss,
            "baseline_description": baseline, "validation_table": rows, "test_section": _test_section(metrics)}


def _reward_values(summary: dict[str, Any], model_id: str) -> dict[str, Any]:
    """The values of a reward fine-tuning's card (``wyckoff_hf.training.reward``'s summary)."""
    card_data = ModelCardData(
        library_name="transformers", license="mit", pipeline_tag="other", base_model=summary["init_from"],
        tags=["wyckoff-transformer", "crystal-generation", "materials-science", "reinforcement-learning", "grpo"])
    first, last = summary["first_steps"], summary["last_steps"]
    return {
        "card_metadata": card_data.to_yaml(), "model_name": Path(model_id).name, "model_id": model_id,
        **{key: summary[key] for key in ("init_from", "reward", "kl_coef", "crystals_per_step", "command", "steps",
                                         "num_processes")},
        "weights": ", ".join(f"{name} {weight:g}" for name, weight in summary["weights"].items()),
        "wall_time": f"{summary['wall_seconds'] / 60:.1f} min",
        "stopped": " (stopped by --max-train-minutes)" if summary["stopped_by_time_limit"] else "",
        "trajectory": "\n".join(f"| {name} | {first[name]:.4f} | {last.get(name, float('nan')):.4f} |"
                                for name in first),
    }


def render_model_card(summary: dict[str, Any], metrics: dict[str, Any] | None = None,
                      model_id: str = "path/to/checkpoint", stability: dict[str, Any] | None = None) -> str:
    """Markdown card from a training summary and optional metrics: ``wyckoff-hf evaluate``'s of a generator (and
    ``stability``, the metrics of an ``evaluate --stability`` run), ``scripts/benchmarks/benchmark_property.py
    --output-json``'s of a property predictor."""
    if summary.get("task") == "property":
        values = {**_training_values(summary, model_id), **_property_values(summary, metrics)}
        return render_card(template_path(PROPERTY_TEMPLATE), values)
    if summary.get("task") == "reward":
        return render_card(template_path(REWARD_TEMPLATE), _reward_values(summary, model_id))
    card_data = ModelCardData(
        library_name="transformers", license="mit", pipeline_tag="other",
        tags=["wyckoff-transformer", "crystal-generation", "materials-science", "chemistry", "custom_code"],
        datasets=[summary["dataset"]], metrics=["wasserstein_distance", "validity", "novelty", "uniqueness"],
    )
    validation = summary.get("best_validation", {})
    values = {
        **_training_values(summary, model_id),
        "card_metadata": card_data.to_yaml(),
        "validation_table": "\n".join(f"| {k.removeprefix('validation/')} | {v:.4f} |" for k, v in validation.items()),
        "calibration": _calibration_section(summary.get("calibration")),
        "evaluation": _evaluation_section(metrics),
        "stability": _stability_section(stability),
    }
    return render_card(template_path(TEMPLATE), values)


def write_model_card(folder: str | Path, summary: dict[str, Any], metrics: dict[str, Any] | None = None,
                     model_id: str = "path/to/checkpoint", stability: dict[str, Any] | None = None) -> Path:
    """Render the card into ``folder/README.md``."""
    path = Path(folder) / "README.md"
    path.write_text(render_model_card(summary, metrics, model_id, stability))
    return path
