"""Held-out cross-entropy of each field's head as a function of that field's sampling temperature.

    python scripts/diagnostics/diagnose_field_temperatures.py --model MODEL \\
        --dataset data_prepared/mp20-biternary-dev [--split validation] [--temperatures 0.6,0.8,1,1.2,1.5,2,3] \\
        [--field-temperature FIELD=T ...]

Teacher-forced on the split's crystals (canonical labellings), with each head's logits divided by T: the mean
cross-entropy per prediction (element head: sites and STOP; site-symmetry and enumeration heads: sites; a prediction
with one allowed value costs 0 at any T, as in ``forward``'s per-field losses, which T = 1 reproduces). The
temperature that minimises a field's cross-entropy is where held-out likelihood puts it (the authors' package
calibrates per field by likelihood); the cross-entropy at a sampling temperature says how much held-out likelihood
that choice gives up, e.g. the structural fields run hot for template novelty (``generate(field_temperatures=...)``,
``model_cards/experiments.md``). The last line scores the temperatures ``generate`` samples at by default, or with
the ``--field-temperature`` options given.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import numpy as np
import torch

from wyckoff_hf.data import load_wyckoff_dataset, representation_from_row
from wyckoff_hf.generation import load_generator
from wyckoff_hf.modeling import SAMPLED_FIELDS
from wyckoff_hf.utils.arguments import add_field_temperature_option

BATCH = 64


@torch.no_grad()
def field_cross_entropies(model, tokenizer, crystals: Sequence, temperatures: Sequence[float]
                          ) -> dict[str, np.ndarray]:
    """``{field: mean cross-entropy per prediction at each of temperatures}`` (nats), teacher-forced on crystals."""
    if not crystals:
        raise ValueError("the field cross-entropies need at least one crystal")
    scale = torch.tensor([float(t) for t in temperatures], device=model.device)
    totals = {field: torch.zeros(len(scale), dtype=torch.float64) for field in SAMPLED_FIELDS}
    counts = dict.fromkeys(SAMPLED_FIELDS, 0)
    for start in range(0, len(crystals), BATCH):
        batch = tokenizer(list(crystals[start:start + BATCH]), return_tensors="pt").to(model.device)
        output = model(**batch)
        for field in SAMPLED_FIELDS:
            logits = output[f"{field}_logits"]
            impossible = logits == torch.finfo(logits.dtype).min  # the masks; a predicted token always has some
            predicted = impossible.any(-1)
            targets = batch[f"{field}_ids"][predicted]
            tempered = logits[predicted].float()[None] / scale[:, None, None]
            log_probs = tempered.masked_fill(impossible[predicted][None], -torch.inf).log_softmax(-1)
            picked = log_probs.gather(2, targets[None, :, None].expand(len(scale), -1, 1))
            totals[field] -= picked.sum((1, 2)).double().cpu()
            counts[field] += len(targets)
    return {field: (totals[field] / counts[field]).numpy() for field in SAMPLED_FIELDS}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="a generator folder saved with save_pretrained, or a Hub id")
    parser.add_argument("--dataset", required=True, help="a prepared dataset")
    parser.add_argument("--split", default="validation")
    parser.add_argument("--temperatures", default="0.6,0.8,0.9,1,1.2,1.5,2,2.5,3",
                        help="comma-separated temperatures to score (default: %(default)s)")
    add_field_temperature_option(parser)  # the sampling temperatures the last line scores (default: the model's)
    args = parser.parse_args(argv)
    try:
        args.temperatures = [float(t) for t in args.temperatures.split(",")]
    except ValueError:
        parser.error(f"--temperatures takes comma-separated numbers, got {args.temperatures!r}")
    if not all(0 < t < float("inf") for t in args.temperatures):
        parser.error(f"--temperatures must be positive and finite, got {args.temperatures}")
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    args = parse_args(argv)
    model, tokenizer = load_generator(args.model)
    sampling = model.sampling_temperatures(None, args.field_temperatures)
    dataset = load_wyckoff_dataset(args.dataset)
    if args.split not in dataset:
        raise ValueError(f"{args.dataset} has no {args.split!r} split; it has {sorted(dataset)}")
    split = dataset[args.split]
    crystals = [representation_from_row(row) for row in split]
    scores = field_cross_entropies(model, tokenizer, crystals, [*args.temperatures, *sampling.values()])
    grid = len(args.temperatures)
    print(f"model {args.model}: cross-entropy per prediction (nats) on {len(crystals)} {args.split} crystals")
    print("| field | " + " | ".join(f"T = {t:g}" for t in args.temperatures) + " | lowest at |")
    print("|---|" + "---:|" * (grid + 1))
    for field, values in scores.items():
        best = args.temperatures[int(np.argmin(values[:grid]))]
        print(f"| {field} | " + " | ".join(f"{v:.4f}" for v in values[:grid]) + f" | T = {best:g} |")
    print("at the sampling temperatures: " + ", ".join(
        f"{field} {scores[field][grid + i]:.4f} (T = {t:g})" for i, (field, t) in enumerate(sampling.items())))
    return scores


if __name__ == "__main__":
    try:
        main()
    except (ValueError, OSError) as err:  # a bad model, dataset, split or temperature: one line, no traceback
        sys.exit(f"diagnose_field_temperatures.py: error: {err}")
