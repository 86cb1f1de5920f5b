"""Model and dataset cards (README.md with the Hub's YAML metadata), rendered from the packaged templates."""

from .dataset_card import render_dataset_card
from .model_card import render_model_card, write_model_card
from .rendering import TEMPLATES_DIR, render_card, template_path

__all__ = ["TEMPLATES_DIR", "render_card", "render_dataset_card", "render_model_card", "template_path",
           "write_model_card"]
