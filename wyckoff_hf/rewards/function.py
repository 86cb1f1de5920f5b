"""A reward as a weighted sum of named terms, built from a one-line spec such as ``"stability=1,novelty=0.5"``."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from ..tokenization import WyckoffRepresentation
from .terms import RewardTerm

REWARD_TERMS = ("stability", "chgnet", "novelty", "new_template", "uniqueness")


def parse_reward_spec(spec: str) -> dict[str, float]:
    """``"stability=1,novelty=0.5"`` → ``{"stability": 1.0, "novelty": 0.5}``; a bare name weighs 1."""
    weights: dict[str, float] = {}
    for part in (piece.strip() for piece in spec.split(",")):
        name, _, weight = part.partition("=")
        name = name.strip()
        if name not in REWARD_TERMS:
            raise ValueError(f"--reward {spec!r}: unknown term {name!r} (terms: {', '.join(REWARD_TERMS)})")
        if name in weights:
            raise ValueError(f"--reward {spec!r}: {name} given twice")
        try:
            weights[name] = float(weight) if weight else 1.0
        except ValueError:
            raise ValueError(f"--reward {spec!r}: the weight of {name} must be a number, got {weight!r}") from None
    if not any(weights.values()):
        raise ValueError(f"--reward {spec!r}: give at least one term a non-zero weight")
    return weights


@dataclass
class RewardFunction:
    """``terms`` weighted by ``weights`` (same names). Calling it on a batch returns the total per crystal and each
    term's values, for logging what the policy is trading."""

    terms: dict[str, RewardTerm]
    weights: dict[str, float]

    @classmethod
    def from_spec(cls, spec: str, build: Callable[[str], RewardTerm]) -> RewardFunction:
        """The terms ``spec`` names, each made by ``build(name)`` (which holds the data a term needs)."""
        weights = parse_reward_spec(spec)
        return cls({name: build(name) for name in weights}, weights)

    def __call__(self, crystals: Sequence[WyckoffRepresentation]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        values = {name: term(crystals) for name, term in self.terms.items()}
        total = sum(self.weights[name] * value for name, value in values.items())
        return np.asarray(total, dtype=float), values
