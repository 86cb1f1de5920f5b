"""Benchmark: how canonical is the canonical form, with the packaged relabelling tables and with older ones.

    git show HEAD:wyckoff_hf/tokenization/wyckoff_tables.json > /tmp/old_tables.json
    python scripts/benchmarks/benchmark_canonical_form.py --old-tables /tmp/old_tables.json \\
        [--rows 2000] [--crystals 500]

1. The first ROWS rows of ``val.csv.gz``: how many canonical representations differ between the two tables.
2. Random representations of groups 2-15 with 2-4 special positions: realised by pyxtal, read back by
   spglib; the fraction whose canonical form is unchanged (a true invariant gives 1). Realisations that
   pyxtal cannot place, or that spglib finds more symmetric (special positions only: another group, or
   the same group with a smaller cell, e.g. P-1 Na 1a, Na 1b is P-1 Na 1a), are counted apart.
Prints a table.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd

from wyckoff_hf.tokenization import RealizationError, WyckoffError, WyckoffRepresentation, space_group_table
from wyckoff_hf.tokenization.representation import canonical_labelling, spglib_sites
from wyckoff_hf.tokenization.wyckoff_tables import SpaceGroupTable, tables_from_json

DATA = Path("/work/shared/data/mp_20_biternary")
ELEMENTS = ("Li", "Na", "Mg", "O", "S")


def dataset_changes(old: dict[int, SpaceGroupTable], rows: int) -> tuple[int, int]:
    """(rows converted, rows whose canonical form differs between the old and the packaged tables)."""
    frame = pd.read_csv(DATA / "val.csv.gz", nrows=rows)
    converted = changed = 0
    for cif in frame["cif"]:
        try:
            number, sites = spglib_sites(cif)
        except WyckoffError:
            continue
        converted += 1
        new = canonical_labelling(space_group_table(number), sites)
        changed += canonical_labelling(old[number], sites) != new
    return converted, changed


def random_special_sites(rng: np.random.Generator) -> WyckoffRepresentation:
    special: list = []
    while len(special) < 2:  # P2_1, Pc, Cc have fewer than two special positions
        number = int(rng.integers(2, 16))
        special = [p for p in space_group_table(number).positions if p.dof < 3]
    chosen = rng.choice(len(special), size=min(len(special), int(rng.integers(2, 5))), replace=False)
    sites = [(str(rng.choice(ELEMENTS)), special[i].letter) for i in chosen]
    return WyckoffRepresentation.from_sites(number, sites, canonical=False)


def round_trip_invariance(old: dict[int, SpaceGroupTable], crystals: int, seed: int) -> dict[str, int]:
    """Counts over random crystals: realised, other group, failed, invariant with old / packaged tables."""
    rng = np.random.default_rng(seed)
    counts = {"drawn": 0, "realised": 0, "other_group": 0, "smaller_cell": 0, "unrealisable": 0,
              "invariant_old": 0, "invariant_new": 0}
    while counts["realised"] < crystals:
        counts["drawn"] += 1
        rep = random_special_sites(rng)
        try:
            number, found = spglib_sites(rep.to_structure(seed=int(rng.integers(1 << 31)), timeout=5.0))
        except (RealizationError, WyckoffError):
            counts["unrealisable"] += 1
            continue
        if number != rep.space_group:
            counts["other_group"] += 1
            continue
        if WyckoffRepresentation.from_sites(number, found).num_atoms != rep.num_atoms:
            counts["smaller_cell"] += 1
            continue
        counts["realised"] += 1
        given = [(site.element, site.letter) for site in rep.sites]
        for name, table in (("old", old[number]), ("new", space_group_table(number))):
            counts[f"invariant_{name}"] += canonical_labelling(table, given) == canonical_labelling(table, found)
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--old-tables", type=Path, required=True, help="an older wyckoff_tables.json")
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--crystals", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    old = tables_from_json(json.loads(args.old_tables.read_text()))

    converted, changed = dataset_changes(old, args.rows)
    counts = round_trip_invariance(old, args.crystals, args.seed)
    realised = counts["realised"]
    print(f"{'measure':<62} {'value':>12}")
    print(f"{'val.csv.gz rows converted':<62} {converted:>12}")
    print(f"{'  canonical form changed, old → packaged tables':<62} {changed:>12} ({changed / converted:.1%})")
    print(f"{'groups 2-15, >= 2 special positions: drawn':<62} {counts['drawn']:>12}")
    print(f"{'  pyxtal could not realise':<62} {counts['unrealisable']:>12}")
    print(f"{'  spglib found another group (skipped)':<62} {counts['other_group']:>12}")
    print(f"{'  spglib found the group in a smaller cell (skipped)':<62} {counts['smaller_cell']:>12}")
    print(f"{'  realised in the drawn group':<62} {realised:>12}")
    for name in ("old", "new"):
        label = f"  canonical form invariant, {'old' if name == 'old' else 'packaged'} tables"
        print(f"{label:<62} {counts[f'invariant_{name}'] / realised:>12.1%}")


if __name__ == "__main__":
    main()
