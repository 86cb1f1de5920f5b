"""Prompted generation, the seed paper's protocol: each test crystal's space group and first site are given, the model
completes the rest; how good are the completions?

    python scripts/benchmarks/benchmark_prompted.py --dataset data_prepared/mp20-biternary-dev --split test [--num 1000]
        [--model DIR] [--realise 100] [--num-workers 2] [--seed 0] [--temperature T]

Prints one column for the prompted samples and, for comparison, one for as many unprompted samples (groups from the
prior): Wyckoff validity (1 by construction), realisation in 3D by pyxtal, CDVAE's structural validity (on the first
``--realise`` samples: pyxtal is the slow part), compositional validity (SMACT) and CDVAE's "valid" (both, on the
realised ones), Wyckoff-level uniqueness and novelty against
the train split, the Wasserstein distances of #elements / #sites / #atoms to the prompted test crystals, and the
sampling time.
"""

from __future__ import annotations

import argparse
import time

import torch

from wyckoff_hf.data import load_wyckoff_dataset, representation_from_row
from wyckoff_hf.evaluation import GeneratedSamples, ReferenceSet, novelty_metrics, wasserstein_distances
from wyckoff_hf.evaluation.validity import composition_validity, fraction, structure_validity
from wyckoff_hf.generation import RealisationSettings, load_generator, realise_structures
from wyckoff_hf.tokenization import WyckoffRepresentation

COLUMNS = ("samples", "wyckoff_valid", "realised", "structural_valid", "compositional_valid", "valid", "wyckoff_unique",
           "wyckoff_novel", "wasserstein_num_elements", "wasserstein_num_sites", "wasserstein_num_atoms", "seconds")


def first_site_prompts(crystals: list[WyckoffRepresentation]) -> list[WyckoffRepresentation]:
    """Each crystal's space group and first site (in canonical order): the seed paper's prompt."""
    return [WyckoffRepresentation(crystal.space_group, crystal.sites[:1]) for crystal in crystals]


def score(samples: list[WyckoffRepresentation], seconds: float, reference: ReferenceSet,
          test: list[WyckoffRepresentation], realise: int, num_workers: int) -> dict[str, float | None]:
    """The metrics of ``COLUMNS``; pyxtal's on the first ``realise`` samples. Samples come from ``generate``, so
    they are Wyckoff-valid by construction."""
    structures, _ = realise_structures(samples[:realise], num_workers, RealisationSettings(timeout=10.0))
    structural = [structure_validity(structure) for structure in structures.values()]
    compositional = {i: composition_validity(crystal.composition) for i, crystal in enumerate(samples)}
    decided = [flag for flag in compositional.values() if flag is not None]
    both = [flag and compositional[i] for i, flag in zip(structures, structural, strict=True)
            if compositional[i] is not None]
    return {"samples": len(samples), "wyckoff_valid": 1.0,
            "realised": fraction(len(structures), len(samples[:realise])),
            "structural_valid": fraction(sum(structural), len(structural)),
            "compositional_valid": fraction(sum(decided), len(decided)), "valid": fraction(sum(both), len(both)),
            **novelty_metrics(GeneratedSamples.from_representations(samples), reference.train),
            **wasserstein_distances(samples, test), "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True, help="prepared dataset folder (scripts/prepare_dataset.py)")
    parser.add_argument("--split", default="test", help="split whose crystals give the prompts (default: test)")
    parser.add_argument("--num", type=int, default=1000, help="prompts: the split's first NUM crystals")
    parser.add_argument("--model", default=None, help="saved model folder (default: the shipped checkpoint)")
    parser.add_argument("--realise", type=int, default=100, help="samples realised with pyxtal per row")
    parser.add_argument("--num-workers", type=int, default=1, help="pyxtal processes")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--temperature", type=float, default=None, help="default: the checkpoint's")
    args = parser.parse_args()

    torch.set_num_threads(1)
    dataset = load_wyckoff_dataset(args.dataset)
    reference = ReferenceSet.from_dataset(dataset)
    split = dataset[args.split]
    test = [representation_from_row(row) for row in split.select(range(min(args.num, len(split))))]
    model, tokenizer = load_generator(args.model)
    rows = {}
    for name, options in (("prompted", {"prompt": first_site_prompts(test)}), ("unprompted", {})):
        start = time.perf_counter()
        samples = model.generate(len(test), seed=args.seed, temperature=args.temperature, tokenizer=tokenizer,
                                 **options)
        rows[name] = score(samples, time.perf_counter() - start, reference, test, args.realise, args.num_workers)
    print(f"model: {args.model or 'shipped'}; {len(test)} prompts from {args.dataset} {args.split} (space group + "
          f"first site); temperature {args.temperature or model.generation_config.temperature}; structure metrics "
          f"on the first {args.realise}; torch {torch.__version__}, 1 thread")
    print("| metric | " + " | ".join(rows) + " |")
    print("|---|" + "---|" * len(rows))
    for column in COLUMNS:
        values = [rows[name].get(column) for name in rows]
        print(f"| {column} | " + " | ".join("—" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v)
                                           for v in values) + " |")


if __name__ == "__main__":
    main()
