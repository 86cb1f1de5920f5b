"""Convert many structures at once, reporting and skipping the ones that fail (never silently)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from .errors import WyckoffError
from .representation import StructureLike, WyckoffRepresentation


@dataclass(frozen=True)
class ConversionFailure:
    """Why one input could not be converted: its identifier, the exception type and the message."""

    identifier: str
    error_type: str
    reason: str


def representations_from_structures(
    items: Iterable[tuple[str, StructureLike]], symprec: float = 0.1, angle_tolerance: float = 5.0
) -> tuple[list[tuple[str, WyckoffRepresentation]], list[ConversionFailure]]:
    """``(identifier, structure-or-CIF)`` pairs → the converted pairs and a failure per bad input."""
    converted, failures = [], []
    for identifier, item in items:
        try:
            converted.append((identifier, WyckoffRepresentation.from_structure(item, symprec, angle_tolerance)))
        except WyckoffError as err:
            failures.append(ConversionFailure(str(identifier), type(err).__name__, str(err)))
    return converted, failures
