"""Which kind of WyckoffTransformer a checkpoint is, read from its ``config.json`` before any weight is loaded.

A property predictor and a generator share the encoder, so transformers loads either as the other: a predictor
given to ``generate`` printed a 17-line report of missing and unexpected weights and then failed on a missing
buffer ("older format: retrain it"), which names neither the mistake nor the fix. ``check_model_kind`` names both
in one line, from the config's ``architectures``, before the weights are read.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

GENERATOR = "WyckoffTransformerForCrystalGeneration"
PREDICTOR = "WyckoffTransformerForPropertyPrediction"
# architecture → (what it is called, the command that uses it)
KINDS = {GENERATOR: ("generator", "generate"), PREDICTOR: ("property predictor", "predict")}


def config_architectures(source: str | os.PathLike) -> list[str] | None:
    """``architectures`` of the ``config.json`` of a local model folder or of a Hub id already in the local cache;
    ``None`` when there is no config to read without the network (loading will say what is wrong then)."""
    config = Path(source) / "config.json"
    if not config.is_file():
        from huggingface_hub import try_to_load_from_cache

        try:
            cached = try_to_load_from_cache(str(source), "config.json")
        except ValueError:  # not a valid Hub id: the loader's own error names it
            return None
        if not isinstance(cached, str):
            return None
        config = Path(cached)
    try:
        architectures = json.loads(config.read_text()).get("architectures")
    except (OSError, ValueError, AttributeError):  # unreadable or not a JSON object: the loader reports it
        return None
    return list(architectures) if isinstance(architectures, list) else None


def check_model_kind(source: str | os.PathLike, expected: str, name: str | os.PathLike | None = None) -> None:
    """``ValueError`` in one line when the checkpoint at ``source`` is a WyckoffTransformer of another kind than
    ``expected`` (``GENERATOR`` or ``PREDICTOR``), saying what it is and which command takes it; ``name`` is how
    the user gave it (default ``source``). A checkpoint whose kind cannot be read is let through."""
    if expected not in KINDS:
        raise ValueError(f"expected must be one of {sorted(KINDS)}, got {expected!r}")
    architectures = config_architectures(source)
    if not architectures or expected in architectures:
        return
    name = source if name is None else name
    wanted = KINDS[expected][0]
    actual = next((arch for arch in architectures if arch in KINDS), None)
    if actual is None:
        raise ValueError(f"{name} is not a {wanted} ({expected}): its config.json names {', '.join(architectures)}")
    kind, command = KINDS[actual]
    raise ValueError(f"{name} is a {kind} ({actual}), not a {wanted}: use `wyckoff-hf {command} --model {name}`")
