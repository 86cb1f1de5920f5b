"""Is a request inside what the model was trained on? One-line warnings for conditions and compositions outside it.

A generator samples whatever it is asked for: ``--condition band_gap=1000`` or ``csp He2O`` run and return crystals,
but the model never saw such a band gap or a noble gas, so the samples say nothing about the request. These checks
name the gap instead of letting it pass without a word. They read what the checkpoint records:

- conditions: the training range of each condition, ``condition_ranges`` of ``training_summary.json`` (min, max)
  where recorded, else the standardisation of ``config.json`` (``condition_mean`` ± ``SUPPORT_STDS`` ×
  ``condition_std``); and a property that cannot be negative (``NON_NEGATIVE_PROPERTIES``, which the property
  predictors also clamp at 0) asked below 0;
- compositions: the number of elements against ``generation_config.num_elements_range``, and each element against
  ``element_counts`` of ``training_summary.json`` (the training crystals holding it); a checkpoint without that
  record gets no element check.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

SUMMARY_FILE = "training_summary.json"
SUPPORT_STDS = 4.0  # without a recorded range, a condition this many standard deviations from the mean is outside
NON_NEGATIVE_PROPERTIES = frozenset({"band_gap", "e_above_hull"})  # zero or more by definition


def training_summary(model: Any) -> dict[str, Any]:
    """The ``training_summary.json`` beside a model loaded from a local folder; empty when there is none."""
    path = Path(str(getattr(model, "name_or_path", "") or "")) / SUMMARY_FILE
    if not path.is_file():
        return {}
    try:
        summary = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return summary if isinstance(summary, dict) else {}


def check_condition_support(model: Any, condition: Mapping[str, float]) -> list[str]:
    """One warning per condition value outside the model's training data (empty: all inside); see the module
    docstring for what the range is. Names the model does not condition on are ``generate``'s to refuse."""

    config = model.config
    names = list(getattr(config, "condition_names", None) or [])
    ranges = training_summary(model).get("condition_ranges", {})
    warnings = []
    for name, value in condition.items():
        if name not in names:
            continue
        value = float(value)
        if name in NON_NEGATIVE_PROPERTIES and value < 0:
            warnings.append(f"--condition {name}={value:g}: {name} cannot be negative; the model never saw such a "
                            "crystal")
        elif name in ranges:
            low, high = ranges[name]
            if not low <= value <= high:
                warnings.append(f"--condition {name}={value:g} is outside the training range [{low:g}, {high:g}] "
                                f"({SUMMARY_FILE}): the samples extrapolate")
        else:
            i = names.index(name)
            mean, std = config.condition_mean[i], config.condition_std[i]
            if not math.isfinite(value) or abs(value - mean) > SUPPORT_STDS * std:
                warnings.append(f"--condition {name}={value:g} is more than {SUPPORT_STDS:g} standard deviations from "
                                f"the training mean {mean:.3g} (std {std:.3g}, config.json; no training range "
                                "recorded): the samples extrapolate")
    return warnings


def check_composition_support(model: Any, composition: str | Mapping[str, float]) -> list[str]:
    """Warnings for a composition (a formula or element amounts) outside the training data: too few or too many
    elements for ``generation_config.num_elements_range``, elements no training crystal holds."""
    from pymatgen.core import Composition

    elements = [element.symbol for element in Composition(composition).elements]
    formula = composition if isinstance(composition, str) else Composition(composition).reduced_formula
    warnings = []
    span = getattr(model.generation_config, "num_elements_range", None)
    if span is not None and not span[0] <= len(elements) <= span[1]:
        trained = f"{span[0]}" if span[0] == span[1] else f"{span[0]}-{span[1]}"
        warnings.append(f"{formula} has {len(elements)} element(s); the model was trained on crystals of {trained} "
                        "(generation_config.num_elements_range)")
    counts = training_summary(model).get("element_counts")
    unseen = [element for element in elements if counts is not None and element not in counts]
    if unseen:
        warnings.append(f"{formula}: no training crystal of the model holds {', '.join(unseen)} "
                        f"({SUMMARY_FILE} element_counts)")
    return warnings
