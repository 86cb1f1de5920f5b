"""Diagnose a generator's number of Wyckoff sites: sampled distribution and teacher-forced STOP probabilities.

    python scripts/diagnostics/diagnose_site_counts.py --model MODEL [MODEL2 ...] \\
        --dataset data_prepared/mp20-biternary-dev

For each model: of ``--num-samples`` samples (seed 0, the model's generation config), the mean number of sites, the
share with exactly 3 sites and the share that ran to ``max_sites``, next to the test split; then, teacher-forced on
the validation split, the mean predicted probability of STOP after k sites against the observed share of crystals
with exactly k sites among those with at least k (the hazard). A model that over-predicts STOP there writes too
few sites; one that samples runs to ``max_sites`` far more often than the data cannot tell how long its prefix is.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from wyckoff_hf.data import load_wyckoff_dataset, representation_from_row
from wyckoff_hf.generation import load_generator
from wyckoff_hf.generation.jobs import sample_crystals

POSITIONS = range(1, 8)


def site_count_summary(counts: np.ndarray, max_sites: int) -> str:
    return (f"mean {counts.mean():.2f}, 3 sites {100 * (counts == 3).mean():.1f} %, "
            f"{max_sites} sites {100 * (counts == max_sites).mean():.2f} %")


def stop_probabilities(model, tokenizer, crystals: list) -> tuple[np.ndarray, np.ndarray]:
    """Mean teacher-forced P(STOP) after k sites and the observed hazard, for k in ``POSITIONS``."""
    predicted, observed, reached = (np.zeros(max(POSITIONS) + 1) for _ in range(3))
    with torch.no_grad():
        for start in range(0, len(crystals), 128):
            batch = crystals[start:start + 128]
            stop = model(**tokenizer(batch, return_tensors="pt")).element_logits.float().softmax(-1)
            stop = stop[..., model.config.stop_token_id]
            for row, crystal in enumerate(batch):
                last = min(len(crystal.sites), max(POSITIONS))
                predicted[:last + 1] += stop[row, :last + 1].numpy()
                reached[:last + 1] += 1
                observed[last] += last == len(crystal.sites)
    return predicted / np.maximum(reached, 1), observed / np.maximum(reached, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", nargs="+", required=True)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--num-samples", type=int, default=10000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--without-stop-shifts", action="store_true",
                        help="sample without the generation config's stop_logit_bias (the model's own STOP)")
    args = parser.parse_args()
    if args.num_samples < 1 or args.threads < 1:
        parser.error("--num-samples and --threads must be at least 1")
    torch.set_num_threads(args.threads)
    dataset = load_wyckoff_dataset(args.dataset)
    test = np.array([len(representation_from_row(row).sites) for row in dataset["test"]])
    validation = [representation_from_row(row) for row in dataset["validation"]]
    for path in args.model:
        model, tokenizer = load_generator(path)
        if args.without_stop_shifts:
            model.generation_config.stop_logit_bias = None
        samples = sample_crystals(model, tokenizer, args.num_samples, seed=0, progress=False)
        counts = np.array([len(crystal.sites) for crystal in samples])
        print(f"{path}: {args.num_samples} samples: {site_count_summary(counts, model.config.max_sites)}; "
              f"test split: {site_count_summary(test, model.config.max_sites)}")
        predicted, observed = stop_probabilities(model, tokenizer, validation)
        print("  teacher-forced P(STOP) after k sites / observed hazard (validation): "
              + ", ".join(f"{k}: {predicted[k]:.3f} / {observed[k]:.3f}" for k in POSITIONS))


if __name__ == "__main__":
    main()
