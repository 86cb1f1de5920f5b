"""Benchmark: what reward fine-tuning (or the stability filter) changed in a generator's samples.

    wyckoff-hf generate -n 1000 --model wyckoff_hf/pretrained/mp20-biternary --output-dir runs/base --seed 7
    wyckoff-hf generate -n 1000 --model runs/mp20-biternary-reward --output-dir runs/tuned --seed 7
    python scripts/benchmarks/benchmark_reward.py --dataset data_prepared/mp20-biternary-dev \
        --surrogate wyckoff_hf/pretrained/mp20-biternary-formation-energy base=runs/base tuned=runs/tuned

Prints one table, a column per samples folder: the share the surrogate places within 0.08 eV/atom of the proxy
hull (95 % Wilson interval), the shares of distinct crystals, of crystals and of structure types absent from the
dataset's train and validation splits, the surrogate's S.U.N. on Wyckoff representations (stable by the
surrogate, first of its canonical form among the samples, novel) and the mean numbers of sites and elements.
Every figure is from representations and the surrogate, which a reward can exploit: confirm a gain with
``wyckoff-hf evaluate --stability`` (CHGNet) on the same folders.
"""

from __future__ import annotations

import argparse

import numpy as np

from wyckoff_hf.data import known_crystals
from wyckoff_hf.evaluation import load_samples
from wyckoff_hf.evaluation.novelty import KnownKeys
from wyckoff_hf.evaluation.sun import METASTABLE, sun_flags, wilson_interval
from wyckoff_hf.prediction import PropertyPredictor
from wyckoff_hf.rewards import SurrogateStability
from wyckoff_hf.tokenization import WyckoffRepresentation


def share(flags: np.ndarray) -> str:
    hits, total = int(flags.sum()), len(flags)
    low, high = wilson_interval(hits, total)
    return f"{hits / total:.1%} [{low:.1%}, {high:.1%}]"


def first_copies(crystals: list[WyckoffRepresentation]) -> np.ndarray:
    """Per crystal: it is the first of its canonical form among ``crystals``."""
    seen: set = set()
    flags = []
    for crystal in crystals:
        key = crystal.canonical()
        flags.append(key not in seen)
        seen.add(key)
    return np.array(flags)


def column(crystals: list[WyckoffRepresentation], surrogate: SurrogateStability, novel: KnownKeys,
           new_template: KnownKeys) -> dict[str, str]:
    e_above_hull = surrogate.e_above_hull(crystals)
    first, is_novel = first_copies(crystals), np.array(novel.novel(crystals))
    return {
        "samples": str(len(crystals)),
        "stable by the surrogate": share(e_above_hull <= METASTABLE),
        "distinct": f"{first.mean():.1%}",
        "novel": f"{is_novel.mean():.1%}",
        "new structure type": f"{np.mean(new_template.novel(crystals)):.1%}",
        "surrogate S.U.N. (Wyckoff level)": share(np.array(sun_flags(e_above_hull, first, is_novel))),
        "mean sites": f"{np.mean([len(crystal.sites) for crystal in crystals]):.2f}",
        "mean elements": f"{np.mean([len(set(crystal.elements)) for crystal in crystals]):.2f}",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("samples", nargs="+", metavar="NAME=FOLDER", help="samples folders of wyckoff-hf generate")
    parser.add_argument("--dataset", required=True, help="prepared dataset: novelty is against train + validation")
    parser.add_argument("--surrogate", required=True, help="property model: e_above_hull or formation energy")
    args = parser.parse_args()
    if bad := [item for item in args.samples if "=" not in item]:
        parser.error(f"give each samples folder as NAME=FOLDER, got {bad}")
    folders = dict(item.split("=", 1) for item in args.samples)
    known = known_crystals(args.dataset)
    novel = KnownKeys(WyckoffRepresentation.canonical, known)
    new_template = KnownKeys(WyckoffRepresentation.canonical_template, known)
    surrogate = SurrogateStability(PropertyPredictor.from_pretrained(args.surrogate))
    columns = {}
    for name, folder in folders.items():
        crystals = [c for c in load_samples(folder, read_structures=False).representations if c is not None]
        columns[name] = column(crystals, surrogate, novel, new_template)
    print(f"protocol: surrogate {args.surrogate} ({surrogate.column}) on the proxy hull; novelty against "
          f"{args.dataset} train + validation")
    print("| | " + " | ".join(columns) + " |\n|---|" + "---|" * len(columns))
    for row in next(iter(columns.values())):
        print(f"| {row} | " + " | ".join(values[row] for values in columns.values()) + " |")


if __name__ == "__main__":
    main()
