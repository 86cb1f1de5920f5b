"""Where a generator's stable samples are: the share within 0.08 eV/atom of the hull by size, template novelty and
SMACT validity.

Read from ``wyckoff-hf evaluate --stability`` reports: the samples are split by their number of Wyckoff sites, by
whether their template is new and by whether their composition passes SMACT's charge-neutrality and
electronegativity screen (``wyckoff_hf.evaluation.validity.composition_validity``, CDVAE's compositional validity).

    python scripts/diagnostics/diagnose_stability.py --dataset data_prepared/mp20-biternary-dev \\
        --run shipped model_cards/mp20-biternary/stability-shipped-sampler shipped1000.jsonl [--run NAME REPORT SAMPLES]

``REPORT`` is an ``evaluate --stability`` output folder, ``SAMPLES`` the samples it scored (a ``samples.jsonl`` or
its folder), matched by sample index. A template is the space group and the Wyckoff letters with the elements
abstracted away; it is new when no training crystal has it (``wyckoff_hf.evaluation.novelty.novel_templates``).
The questions it answers: does sampling more new templates (issue 13) cost stability (issue 10)? Does a sampler
that passes SMACT more often write more stable crystals?
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from wyckoff_hf.data import load_wyckoff_dataset, representation_from_row
from wyckoff_hf.evaluation.novelty import novel_templates
from wyckoff_hf.evaluation.samples import parse_sample_line
from wyckoff_hf.evaluation.stability import RELAXATIONS_FILE, STABILITY_DIR
from wyckoff_hf.evaluation.sun import METASTABLE, wilson_interval
from wyckoff_hf.evaluation.validity import composition_validity

SMALL_SITES = 3  # at most this many Wyckoff sites: "small"


def read_run(report: Path, samples: Path) -> pd.DataFrame:
    """One row per relaxed sample: its number of sites, its representation, whether SMACT passes its composition
    (an undecided SMACT counts as not passing) and whether it is within METASTABLE."""
    relaxations_path = report / STABILITY_DIR / RELAXATIONS_FILE
    if not relaxations_path.is_file():
        raise SystemExit(f"{report}: no {STABILITY_DIR}/{RELAXATIONS_FILE}; pass the --output-dir of an evaluate "
                         "--stability run")
    samples_path = samples / "samples.jsonl" if samples.is_dir() else samples
    if not samples_path.is_file():
        raise SystemExit(f"{samples}: no samples file; pass the samples.jsonl (or its folder) that {report} scored")
    lines = samples_path.read_text().splitlines()
    relaxed = pd.read_csv(relaxations_path)
    if relaxed["index"].max() >= len(lines):
        raise SystemExit(f"{report}: sample index {relaxed['index'].max()} is past the {len(lines)} lines of "
                         f"{samples_path}: are these the samples it scored?")
    representations = [parse_sample_line(lines[index]) for index in relaxed["index"]]
    return pd.DataFrame({"representation": representations,
                         "sites": [len(rep.sites) for rep in representations],
                         "smact_valid": [composition_validity(rep.composition) is True for rep in representations],
                         "within": (relaxed["e_above_hull"] <= METASTABLE).to_numpy()})


def share(mask: np.ndarray, within: np.ndarray) -> str:
    """``n (share of samples): within % [95 % interval]`` of the samples in ``mask``."""
    count, hits = int(mask.sum()), int(within[mask].sum())
    if count == 0:
        return "0"
    low, high = wilson_interval(hits, count)
    return (f"{count} ({100 * count / len(mask):.0f} %): {100 * hits / count:.1f} % "
            f"[{100 * low:.1f}, {100 * high:.1f}]")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", required=True, help="prepared dataset whose train split defines known templates")
    parser.add_argument("--run", nargs=3, action="append", required=True, metavar=("NAME", "REPORT", "SAMPLES"),
                        help="a column: its name, an evaluate --stability report folder and the samples it scored")
    args = parser.parse_args(argv)
    train = [representation_from_row(row) for row in load_wyckoff_dataset(args.dataset)["train"]]
    runs = {name: read_run(Path(report), Path(samples)) for name, report, samples in args.run}
    for frame in runs.values():
        frame["new_template"] = novel_templates(list(frame["representation"]), train)

    groups = {
        "all": lambda f: np.ones(len(f), bool),
        f"at most {SMALL_SITES} sites": lambda f: (f.sites <= SMALL_SITES).to_numpy(),
        f"more than {SMALL_SITES} sites": lambda f: (f.sites > SMALL_SITES).to_numpy(),
        "known template": lambda f: ~f.new_template.to_numpy(),
        "new template": lambda f: f.new_template.to_numpy(),
        f"new template, at most {SMALL_SITES} sites": lambda f: (f.new_template & (f.sites <= SMALL_SITES)).to_numpy(),
        f"new template, more than {SMALL_SITES} sites": lambda f: (f.new_template & (f.sites > SMALL_SITES)).to_numpy(),
        "SMACT-valid composition": lambda f: f.smact_valid.to_numpy(),
        "SMACT-invalid composition": lambda f: ~f.smact_valid.to_numpy(),
    }
    print(f"Samples (share of the run): within {METASTABLE} eV/atom of the hull [95 % interval]\n")
    print("| group | " + " | ".join(runs) + " |\n|---|" + "---:|" * len(runs))
    for label, select in groups.items():
        print(f"| {label} | " + " | ".join(share(select(f), f.within.to_numpy()) for f in runs.values()) + " |")


if __name__ == "__main__":
    main()
