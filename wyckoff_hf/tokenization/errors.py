"""Exception types of the crystallography layer, so callers can skip bad rows and report why."""


class WyckoffError(ValueError):
    """Base class: a structure or a representation that cannot be converted."""


class StructureParseError(WyckoffError):
    """The input (CIF text, CIF path, object) could not be read as a crystal structure."""


class DisorderedStructureError(WyckoffError):
    """The structure has partial occupancies; a Wyckoff representation needs one element per site."""


class SymmetryAnalysisError(WyckoffError):
    """spglib found no space group, or its answer does not fit the Wyckoff tables."""


class InvalidRepresentationError(WyckoffError):
    """A representation (or token ids) names a Wyckoff position that does not exist, or reuses a fixed one."""


class RealizationError(WyckoffError):
    """pyxtal could not place atoms for a representation within the allowed attempts."""


class RealizationTimeoutError(RealizationError):
    """pyxtal did not finish within the wall-time safety net (load-dependent, unlike the attempts bound)."""


class RealizationSymmetryError(RealizationError):
    """pyxtal placed the atoms, but the structure analyses as another crystal than the sample (a supergroup, or
    other sites): scoring it would credit the sample with a structure it does not describe."""
