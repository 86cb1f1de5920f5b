"""Shared fixtures: the shared data folder, the default tokenizer and the local Hub stand-in."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fake_hub import FakeHub, serve_fake_hub

from wyckoff_hf.tokenization import WyckoffTokenizer

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` next to the repository (present in CI too): missing data fails, never skips."""
    assert SHARED_DATA.is_dir(), f"{SHARED_DATA} is missing: the tests read the shared crystal datasets from there"
    return SHARED_DATA


@pytest.fixture(scope="session")
def tokenizer() -> WyckoffTokenizer:
    """The default tokenizer (all 230 groups, elements Z = 1..118); stateless, so one serves every test."""
    return WyckoffTokenizer()


@pytest.fixture
def fake_hub() -> Iterator[FakeHub]:
    """A local Hub stand-in: ``.endpoint``, ``.env`` (for subprocesses) and ``.files[repo_id][path]``."""
    yield from serve_fake_hub()
