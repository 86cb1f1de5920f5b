"""Crystallography: Wyckoff tables, the Wyckoff representation of a crystal, and the multi-field tokenizer."""

from .batch import ConversionFailure, representations_from_structures
from .errors import (
    DisorderedStructureError,
    InvalidRepresentationError,
    RealizationError,
    RealizationSymmetryError,
    StructureParseError,
    SymmetryAnalysisError,
    WyckoffError,
)
from .representation import WyckoffRepresentation, WyckoffSite, load_structure
from .tokenization_wyckoff import FIELDS, MASK_ID, PAD_ID, STOP_ID, WyckoffTokenizer
from .wyckoff_tables import WyckoffPosition, space_group_table

__all__ = [
    "FIELDS",
    "MASK_ID",
    "PAD_ID",
    "STOP_ID",
    "ConversionFailure",
    "DisorderedStructureError",
    "InvalidRepresentationError",
    "RealizationError",
    "RealizationSymmetryError",
    "StructureParseError",
    "SymmetryAnalysisError",
    "WyckoffError",
    "WyckoffPosition",
    "WyckoffRepresentation",
    "WyckoffSite",
    "WyckoffTokenizer",
    "load_structure",
    "representations_from_structures",
    "space_group_table",
]
