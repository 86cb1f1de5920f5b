"""The model card (README.md with the Hub's YAML metadata) of a trained checkpoint.

Filled from the training summary written by ``scripts/train.py`` and, when given, the ``metrics.json``
of ``wyckoff-hf evaluate``, rendered from ``model_cards/model_card.md``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from huggingface_hub import ModelCardData

from .cards import render_card, template_path

TEMPLATE = "model_card.md"


def _evaluation_section(metrics: dict[str, Any] | None) -> str:
    if not metrics:
        return "Not evaluated yet: run `wyckoff-hf evaluate` and re-render the card with its metrics.json."
    rows = [f"| {name} | {value:.4g} |" if isinstance(value, float) else f"| {name} | {value} |"
            for name, value in _flatten(metrics).items()]
    header = "Metrics of `wyckoff-hf evaluate` (see its report.md for definitions):\n\n| metric | value |\n|---|---|\n"
    return header + "\n".join(rows)


def _flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        elif isinstance(value, int | float | str | bool):
            flat[f"{prefix}{key}"] = value
    return flat


def render_model_card(summary: dict[str, Any], metrics: dict[str, Any] | None = None,
                      model_id: str = "path/to/checkpoint") -> str:
    """Markdown card from a training summary (and optional evaluation metrics)."""
    card_data = ModelCardData(
        library_name="transformers", license="mit", pipeline_tag="other",
        tags=["wyckoff-transformer", "crystal-generation", "materials-science", "chemistry", "custom_code"],
        datasets=[summary["dataset"]], metrics=["wasserstein_distance", "validity", "novelty", "uniqueness"],
    )
    validation = summary.get("best_validation", {})
    values = {
        "card_metadata": card_data.to_yaml(),
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
        "validation_table": "\n".join(f"| {k.removeprefix('validation/')} | {v:.4f} |" for k, v in validation.items()),
        "sampling_temperature": summary["sampling_temperature"],
        "temperature_table": "\n".join(
            f"| {p['temperature']} | {p['sites_distance']:.4f} | {p['elements_distance']:.4f} | {p['distance']:.4f} |"
            for p in summary.get("temperature_scan", [])) or "| (not calibrated) | | | |",
        "model_config": json.dumps(summary["model_config"]),
        "evaluation": _evaluation_section(metrics),
    }
    return render_card(template_path(TEMPLATE), values)


def write_model_card(folder: str | Path, summary: dict[str, Any], metrics: dict[str, Any] | None = None,
                     model_id: str = "path/to/checkpoint") -> Path:
    """Render the card into ``folder/README.md``."""
    path = Path(folder) / "README.md"
    path.write_text(render_model_card(summary, metrics, model_id))
    return path
