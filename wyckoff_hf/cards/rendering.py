"""Render Markdown card templates shipped as package data (``wyckoff_hf/cards/templates/``).

The templates travel inside the wheel, so a non-editable install (``pip install wyckoff-hf``) renders
cards at the end of training just as a checkout does. Templates use ``string.Template`` placeholders
(``$name`` / ``${name}``), which leave Markdown, YAML and LaTeX braces alone. A placeholder without a value
is an error naming it, never a card with a hole.
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from pathlib import Path
from typing import Any

TEMPLATES_DIR = Path(__file__).resolve().parent / "templates"


def template_path(name: str) -> Path:
    """The packaged template ``name``; a clear error when there is no such template."""
    path = TEMPLATES_DIR / name
    if not path.is_file():
        raise FileNotFoundError(f"card template {name!r} not found in {TEMPLATES_DIR}")
    return path


def render_card(template: str | Path, values: Mapping[str, Any]) -> str:
    """Fill a template file with ``values``; raises ``KeyError`` naming any placeholder left without one."""
    text = Path(template).read_text()
    parsed = string.Template(text)
    missing = sorted({name for name in parsed.get_identifiers() if name not in values})
    if missing:
        raise KeyError(f"card template {template} needs values for {missing}")
    return parsed.substitute({key: str(value) for key, value in values.items()})
