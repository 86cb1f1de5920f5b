"""Where the shared crystal datasets lie: ``../shared/data`` beside the checkout (also present in CI)."""

from pathlib import Path

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
MP20_BITERNARY = SHARED_DATA / "mp_20_biternary"
