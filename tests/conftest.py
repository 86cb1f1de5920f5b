"""Shared fixtures: the shared data folder, a tiny prepared dataset, the default tokenizer, the local Hub stand-in, a
pyxtal and a SMACT that stall; ``load_script``, a script of ``scripts/`` as a module."""

from __future__ import annotations

import importlib.util
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
from fake_hub import FakeHub, serve_fake_hub

from wyckoff_hf.tokenization import WyckoffTokenizer

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"
TINY_DATASET_MAX_SITES = 8
# a model of a few thousand parameters: trains an epoch of the tiny datasets in a second
TINY_MODEL = {"num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 32,
              "space_group_embedding_size": 8, "element_embedding_size": 8, "site_symmetry_embedding_size": 8,
              "enumeration_embedding_size": 4, "derived_feature_size": 4}


def load_script(path: str) -> ModuleType:
    """``scripts/PATH.py`` imported as a module named after the file (registered in ``sys.modules``, as its
    dataclasses need): ``load_script("prepare_dataset")`` for a job, ``load_script("benchmarks/benchmark_quality")``
    for a script of a subfolder."""
    name = Path(path).name
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{path}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` next to the repository (present in CI too): missing data fails, never skips."""
    assert SHARED_DATA.is_dir(), f"{SHARED_DATA} is missing: the tests read the shared crystal datasets from there"
    return SHARED_DATA


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Path:
    """40 train / 10 validation / 20 test crystals of MP-20 binaries/ternaries with at most 8 sites, prepared."""
    import pandas as pd

    from wyckoff_hf.data import add_wyckoff_columns, load_crystal_csv_splits, write_parquet_splits

    source = tmp_path_factory.mktemp("source")
    frame = pd.read_csv(shared_data / "mp_20_biternary" / "val.csv.gz", nrows=70)
    for name, rows in (("train", frame[:40]), ("val", frame[40:50]), ("test", frame[50:])):
        rows.to_csv(source / f"{name}.csv.gz", index=False)
    dataset, failures = add_wyckoff_columns(load_crystal_csv_splits(source, layout="cdvae"))
    assert failures.empty
    dataset = dataset.filter(lambda row: len(row["letters"]) <= TINY_DATASET_MAX_SITES)
    out = tmp_path_factory.mktemp("prepared")
    write_parquet_splits(dataset, out)
    return out


@pytest.fixture(scope="session")
def tokenizer() -> WyckoffTokenizer:
    """The default tokenizer (all 230 groups, elements Z = 1..118); stateless, so one serves every test."""
    return WyckoffTokenizer()


@pytest.fixture
def fake_hub() -> Iterator[FakeHub]:
    """A local Hub stand-in: ``.endpoint``, ``.env`` (for subprocesses) and ``.files[repo_id][path]``."""
    yield from serve_fake_hub()


STALLING_GROUP = 160  # R3m: pyxtal's placement stalls for this group under ``stalling_pyxtal``


@pytest.fixture
def stalling_pyxtal(monkeypatch: pytest.MonkeyPatch) -> float:
    """pyxtal whose placement in R3m sleeps far past any limit under test (other groups place normally).

    Whether real pyxtal gives up on a crowded R3m sample within a time limit depends on the CPU (5 s on one
    machine, under 1 s on another), so tests of the limit itself stall deterministically instead. Pool
    workers are forked, so they inherit the patch. Returns the stall in seconds.
    """
    import pyxtal

    stall = 120.0
    place = pyxtal.pyxtal.from_random

    def from_random(self, dim, group, *args, **kwargs):
        if group == STALLING_GROUP:
            time.sleep(stall)
        return place(self, dim, group, *args, **kwargs)

    monkeypatch.setattr(pyxtal.pyxtal, "from_random", from_random)
    return stall


STALLING_SMACT_ELEMENTS = 10  # SMACT stalls for compositions of this many elements under ``stalling_smact``


@pytest.fixture
def stalling_smact(monkeypatch: pytest.MonkeyPatch) -> float:
    """SMACT whose validity search sleeps far past any limit under test for 10-element compositions (others are
    decided normally), with an empty result cache. A real 10-element search takes 55 s on one machine and under
    1 ms with warm caches on another, so a test of the time limit stalls deterministically instead. Returns the
    stall in seconds."""
    from wyckoff_hf.evaluation import validity

    stall = 120.0
    decide = validity.smact_validity

    def smact_validity(composition, *args, **kwargs):
        if len(composition) >= STALLING_SMACT_ELEMENTS:
            time.sleep(stall)
        return decide(composition, *args, **kwargs)

    monkeypatch.setattr(validity, "smact_validity", smact_validity)
    monkeypatch.setattr(validity, "_smact_cache", {})
    return stall
