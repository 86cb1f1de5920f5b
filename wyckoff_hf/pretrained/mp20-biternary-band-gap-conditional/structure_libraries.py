"""pymatgen, spglib and pyxtal: imported only where crystal structures are read, analysed or built.

The tokenizer's modules are copied into checkpoints for ``trust_remote_code``, and transformers' loader
imports every library that a copied file names in an ``import`` statement, function bodies included, and
refuses the checkpoint where one is missing (only ``try`` blocks are exempt). Importing these libraries
through ``structure_library`` keeps them out of that check: a checkpoint's tokenizer loads and decodes ids
with torch and transformers alone, and reading a CIF where pymatgen is missing says what to install.
"""

from __future__ import annotations

import importlib
from types import ModuleType


def structure_library(module: str) -> ModuleType:
    """``importlib.import_module(module)``, failing with a one-line message that names the package to install."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ImportError(
            f"{module} is needed to read, analyse or build crystal structures: pip install {module.split('.')[0]}"
        ) from err
