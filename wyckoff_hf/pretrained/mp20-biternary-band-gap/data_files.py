"""Where the crystallography's data files are read from: next to this code, or from the checkpoint that shipped it.

Installed, the JSON tables sit next to these modules in the package. For ``trust_remote_code``,
``WyckoffTokenizer.save_pretrained`` copies these modules *and* the data files into the checkpoint folder;
transformers then copies only the ``.py`` files into its module cache, so a copy that finds no data file next
to itself reads the checkpoint's, which ``WyckoffTokenizer.from_pretrained`` resolves (local folder or Hub)
and hands over with ``use_checkpoint_files``. The installed package and the remote copy run this same code.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

TABLES_FILE = "wyckoff_tables.json"
DATA_FILES = (TABLES_FILE,)

_CODE_DIRECTORY = Path(__file__).parent
_checkpoint_files: dict[str, Path] = {}


def data_file(name: str) -> Path:
    """The path of data file ``name``: the one next to the code, else the checkpoint's copy."""
    packaged = _CODE_DIRECTORY / name
    if packaged.is_file():
        return packaged
    if name in _checkpoint_files:
        return _checkpoint_files[name]
    raise FileNotFoundError(
        f"{name} is neither next to {_CODE_DIRECTORY} nor provided by a checkpoint: "
        "load the tokenizer with WyckoffTokenizer.from_pretrained(checkpoint)"
    )


def missing_data_files() -> list[str]:
    """The data files that are neither next to the code nor provided by a checkpoint yet."""
    return [name for name in DATA_FILES if not (_CODE_DIRECTORY / name).is_file() and name not in _checkpoint_files]


def use_checkpoint_files(files: Mapping[str, str | os.PathLike]) -> None:
    """Read the given data files (name → resolved path in a checkpoint) where the code has no copy of its own."""
    _checkpoint_files.update({name: Path(path) for name, path in files.items()})
