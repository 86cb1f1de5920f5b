"""The prepared dataset on disk (or on the Hub): one parquet file per split, in the Hub's file layout."""

from __future__ import annotations

import re
from pathlib import Path

from datasets import DatasetDict, load_dataset

DATA_DIR = "data"
SPLIT_ORDER = {"train": 0, "validation": 1, "test": 2}
SHARD_PATTERN = re.compile(r"^(?P<split>[A-Za-z0-9_.]+)-\d{5}-of-\d{5}\.parquet$")


def shard_name(split: str, index: int = 0, count: int = 1) -> str:
    """The Hub's shard file name, ``{split}-00000-of-00001.parquet``, which ``load_dataset`` maps to splits."""
    return f"{split}-{index:05d}-of-{count:05d}.parquet"


def _shards(out: str | Path) -> list[Path]:
    return sorted(p for p in (Path(out) / DATA_DIR).glob("*.parquet") if SHARD_PATTERN.match(p.name))


def claim_output_folder(out: str | Path, overwrite: bool = False) -> None:
    """Check, before the work starts, the folder a prepared dataset goes to: one that holds an earlier run's shards
    is refused unless ``overwrite``."""
    shards = _shards(out)
    if shards and not overwrite:
        raise FileExistsError(f"{out} already holds a prepared dataset ({', '.join(p.name for p in shards)}): pass "
                              "--overwrite to replace it, or choose another folder")


def write_parquet_splits(dataset: DatasetDict, out: str | Path) -> dict[str, Path]:
    """Write each split as ``out/data/{split}-00000-of-00001.parquet``, in place of the shards already there (a split
    the new dataset lacks would otherwise load beside it; ``claim_output_folder`` asks first); returns the written
    path per split."""
    for shard in _shards(out):
        shard.unlink()
    data_dir = Path(out) / DATA_DIR
    data_dir.mkdir(parents=True, exist_ok=True)
    written = {}
    for split, part in dataset.items():
        path = data_dir / shard_name(split)
        part.to_parquet(path)
        written[split] = path
    return written


def local_data_files(folder: str | Path) -> dict[str, list[str]]:
    """The parquet shards of a prepared folder grouped by split, in the order train, validation, test, others."""
    files: dict[str, list[str]] = {}
    for path in sorted((Path(folder) / DATA_DIR).glob("*.parquet")):
        match = SHARD_PATTERN.match(path.name)
        if match:
            files.setdefault(match["split"], []).append(str(path))
    if not files:
        raw = " (it holds CSV files: a raw dataset)" if any(Path(folder).glob("*.csv*")) else ""
        raise FileNotFoundError(f"{folder} holds no {DATA_DIR}/{{split}}-NNNNN-of-NNNNN.parquet shards{raw}: prepare "
                                f"it first with python scripts/prepare_dataset.py --source {folder} --output-dir DIR")
    return dict(sorted(files.items(), key=lambda item: (SPLIT_ORDER.get(item[0], len(SPLIT_ORDER)), item[0])))


def load_wyckoff_dataset(path_or_hub_id: str | Path, **load_kwargs: object) -> DatasetDict:
    """A prepared dataset: a local folder written by ``scripts/prepare_dataset.py`` or a Hub dataset id.

    Extra keyword arguments go to ``datasets.load_dataset`` (``revision``, ``cache_dir``, ``token``...).
    """
    if Path(path_or_hub_id).is_dir():
        return load_dataset("parquet", data_files=local_data_files(path_or_hub_id), **load_kwargs)
    return load_dataset(str(path_or_hub_id), **load_kwargs)


def known_crystals(path_or_hub_id: str | Path) -> list:
    """The train and validation crystals of a prepared dataset (``WyckoffRepresentation``s): what novelty is
    measured against."""
    from .columns import representation_from_row

    splits = load_wyckoff_dataset(path_or_hub_id)
    return [representation_from_row(row) for name in ("train", "validation") if name in splits
            for row in splits[name].select_columns(["space_group", "site_elements", "letters"])]


EXTRA_FILES = ("README.md", "failures.csv", "statistics.json", "distributions.png")


def push_prepared_dataset(dataset: DatasetDict, folder: str | Path, repo_id: str, token: str | None = None,
                          private: bool | None = None) -> None:
    """Upload the splits (``DatasetDict.push_to_hub``, parquet shards) and then the folder's card and reports.

    The card goes second because ``push_to_hub`` writes a minimal README of its own.
    """
    from huggingface_hub import HfApi

    dataset.push_to_hub(repo_id, token=token, private=private)
    extras = [name for name in EXTRA_FILES if (Path(folder) / name).is_file()]
    HfApi(token=token).upload_folder(
        folder_path=str(folder), repo_id=repo_id, repo_type="dataset", allow_patterns=extras,
        commit_message="Dataset card, failures table and statistics",
    )
