"""Does a band-gap-conditional generator obey its condition? Sample at target band gaps, score with a property model.

    python scripts/benchmarks/benchmark_conditional.py --model runs/cond-band-gap --predictor runs/band-gap \
        --dataset data_prepared/mp20-biternary-dev --targets 0,1,3 --num-samples 1000 \
        [--guidance-scale 1.0 2.0] [--condition band_gap] [--threshold 0.1] [--seed 0] [--temperature T]

One row per (guidance scale, target) with ``generate(condition={CONDITION: target}, guidance_scale=g)``, one
unconditional row (no condition), and two reference rows from the train split: its true values and the predictor's
values on it (what the predictor makes of real crystals of that distribution). Columns:

- the predictor's median band gap of the samples with its quartiles, and the fraction predicted above
  ``--threshold`` (non-metals). The threshold is 0.1 eV, not 0: a regression model trained with an L1 loss puts
  metals (band gap exactly 0) at about 0, on both sides, so "> 0" would count half the metals;
- Wyckoff-level uniqueness and novelty against the train split, SMACT compositional validity (the evaluation's
  functions);
- mean -log p of the samples under the distribution they were drawn from (``sequences_scores``: the guided one
  for g ≠ 1), the authors' novelty score;
- seconds of sampling plus prediction.

The predictor only sees Wyckoff representations, as the generator does: both are blind to coordinates, so this
measures agreement between two models of the same data, not DFT band gaps of relaxed structures.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from wyckoff_hf.data import load_wyckoff_dataset
from wyckoff_hf.evaluation import (
    GeneratedSamples,
    ReferenceSet,
    novel_representations,
    validity_metrics,
    wyckoff_uniqueness,
)
from wyckoff_hf.evaluation.validity import fraction
from wyckoff_hf.generation import load_generator
from wyckoff_hf.prediction import PropertyPredictor, predict_table

COLUMNS = ("samples", "median", "q25", "q75", "above_threshold", "wyckoff_unique", "wyckoff_novel",
           "compositional_valid", "mean_nll", "seconds")


def predicted_values(predictor: PropertyPredictor, representations: list, column: str) -> np.ndarray:
    """The predictor's ``column`` per crystal, NaN where its tokenizer cannot read the crystal (too many sites)."""
    return predict_table([predictor], representations)[0][column].to_numpy(dtype=float)


def distribution(values: np.ndarray, threshold: float) -> dict[str, float]:
    """Quartiles and the fraction above ``threshold`` of the finite values (``samples`` counts those)."""
    values = values[np.isfinite(values)]
    q25, median, q75 = np.quantile(values, [0.25, 0.5, 0.75])
    return {"samples": len(values), "median": float(median), "q25": float(q25), "q75": float(q75),
            "above_threshold": float(np.mean(values > threshold))}


def score_samples(samples, tokenizer, predictor: PropertyPredictor, column: str, threshold: float, train: list,
                  seconds: float) -> dict[str, float | None]:
    """The ``COLUMNS`` of one set of ``GeneratedCrystals`` (seconds so far: sampling; prediction is added)."""
    representations = tokenizer.decode(samples)
    start = time.perf_counter()
    predicted = predicted_values(predictor, representations, column)
    seconds += time.perf_counter() - start
    validity = validity_metrics(GeneratedSamples.from_representations(representations), structure_metrics=False)
    return {**distribution(predicted, threshold), "wyckoff_unique": wyckoff_uniqueness(representations),
            "wyckoff_novel": fraction(sum(novel_representations(representations, train)), len(representations)),
            "compositional_valid": validity["compositional_valid"],
            "mean_nll": float(-samples.sequences_scores.mean()), "seconds": seconds}


def sample(model, num_samples: int, seed: int, temperature: float | None, **options) -> tuple[object, float]:
    """``GeneratedCrystals`` (ids and scores, decoded later) and the seconds sampling took."""
    start = time.perf_counter()
    samples = model.generate(num_samples, seed=seed, temperature=temperature, **options)
    return samples, time.perf_counter() - start


def cell(value: float | int | None) -> str:
    if value is None:
        return "—"
    return str(value) if isinstance(value, int) else f"{value:.3f}"


def markdown(rows: dict[str, dict]) -> str:
    lines = ["| row | " + " | ".join(COLUMNS) + " |", "|" + "---|" * (len(COLUMNS) + 1)]
    lines += [f"| {name} | " + " | ".join(cell(values.get(c)) for c in COLUMNS) + " |" for name, values in rows.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="conditional generator folder (scripts/train.py --condition)")
    parser.add_argument("--predictor", required=True, help="property model folder predicting the condition")
    parser.add_argument("--dataset", required=True, help="prepared dataset folder: train split for novelty")
    parser.add_argument("--targets", default="0,1,3", help="comma-separated condition values (default: 0,1,3)")
    parser.add_argument("--num-samples", type=int, default=1000, help="samples per row (default: 1000)")
    parser.add_argument("--guidance-scale", type=float, nargs="+", default=[1.0],
                        help="classifier-free guidance scales (default: 1.0, the plain conditional)")
    parser.add_argument("--condition", default=None, help="condition name (default: the generator's only one)")
    parser.add_argument("--threshold", type=float, default=0.1,
                        help="predicted values above it count as non-metals (default: 0.1 eV, see above)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--temperature", type=float, default=None, help="default: the checkpoint's")
    args = parser.parse_args(argv)

    torch.set_num_threads(1)
    model, tokenizer = load_generator(args.model)
    names = model.config.condition_names or []
    condition = args.condition or (names[0] if len(names) == 1 else None)
    if condition not in names:
        parser.error(f"--condition must be one of the generator's conditions {names}, got {condition!r}")
    predictor = PropertyPredictor.from_pretrained(args.predictor)
    if predictor.problem_type != "regression":
        parser.error(f"--predictor must be a regression model, {args.predictor} is a {predictor.problem_type}")
    column = condition if condition in predictor.columns else predictor.columns[0]
    targets = [float(value) for value in args.targets.split(",")]
    dataset = load_wyckoff_dataset(args.dataset)
    train = ReferenceSet.from_dataset(dataset).train
    truth = np.array(dataset["train"][condition], dtype=float)

    rows: dict[str, dict] = {
        "train (true values)": distribution(truth, args.threshold),
        "train (predicted)": distribution(predicted_values(predictor, train, column), args.threshold),
    }
    settings = {"unconditional": {}}
    settings.update({f"{condition} = {target:g}, g = {scale:g}": {"condition": {condition: target},
                                                                  "guidance_scale": scale}
                     for scale in args.guidance_scale for target in targets})
    for name, options in settings.items():
        samples, seconds = sample(model, args.num_samples, args.seed, args.temperature, **options)
        rows[name] = score_samples(samples, tokenizer, predictor, column, args.threshold, train, seconds)
    print(f"generator {args.model}, predictor {args.predictor} ({column}); {args.num_samples} samples per row, seed "
          f"{args.seed}, temperature {args.temperature or model.generation_config.temperature}; median / quartiles / "
          f"fraction > {args.threshold:g} of the predicted {column}; novelty against {len(train)} train crystals\n")
    print(markdown(rows))
    return rows


if __name__ == "__main__":
    main()
