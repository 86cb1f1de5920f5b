"""Model and dataset cards rendered from Markdown templates in the repository's ``model_cards/`` folder.

Templates use ``string.Template`` placeholders (``$name`` / ``${name}``), which leave Markdown, YAML and
LaTeX braces alone. A placeholder without a value is an error naming it, never a card with a hole.
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
MODEL_CARDS_DIR = "model_cards"


def model_cards_dir() -> Path | None:
    """The repository's ``model_cards/`` folder, or None when the package runs outside a checkout."""
    folder = REPO_ROOT / MODEL_CARDS_DIR
    return folder if folder.is_dir() else None


def template_path(name: str) -> Path:
    """``model_cards/<name>`` of the checkout; a clear error when it is not there."""
    folder = model_cards_dir()
    if folder is None or not (folder / name).is_file():
        raise FileNotFoundError(f"card template {name!r} not found in {REPO_ROOT / MODEL_CARDS_DIR}")
    return folder / name


def render_card(template: str | Path, values: Mapping[str, Any]) -> str:
    """Fill a template file with ``values``; raises ``KeyError`` naming any placeholder left without one."""
    text = Path(template).read_text()
    parsed = string.Template(text)
    missing = sorted({name for name in parsed.get_identifiers() if name not in values})
    if missing:
        raise KeyError(f"card template {template} needs values for {missing}")
    return parsed.substitute({key: str(value) for key, value in values.items()})
