"""Property models on a prepared split: test MAE (or accuracy) next to the composition-family baseline and the
WyckoffTransformer authors' figures.

    python scripts/benchmarks/benchmark_property.py --model runs/formation --model runs/band_gap \
        --dataset data_prepared/mp20-biternary-dev --split test [--max-rows N] [--batch-size 512] [--device cpu] \
        [--output-json results.json]

For every output of every model, on the split's rows the model can read and that have a value:

- regression: MAE in the property's unit and in meV, and the MAE of ``CompositionFamilyBaseline`` fitted on the
  train split (the mean train value of the same reduced formula, else chemical system, else all), on the same
  rows, with how many rows each baseline level served;
- classification (``scripts/train.py --classification-threshold``, classes ``"TARGET <= T"`` / ``"TARGET > T"``):
  accuracy, and the baseline's (its mean value against the same threshold);
- the authors' MAE where they report one (formation energy 25 meV/atom, band gap 247 meV, on the full MP-20: a
  bigger train split than mp20-biternary-dev's, so a reference point, not a like-for-like comparison);
- the rows skipped and why, and the prediction time.

``--output-json`` also writes the results with the command; ``scripts/render_model_card.py MODEL --metrics FILE``
puts a model's test results into its card.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import sys
import time
from collections import Counter

import numpy as np
import torch

from wyckoff_hf.data import load_wyckoff_dataset, representation_from_row
from wyckoff_hf.prediction import CompositionFamilyBaseline, PropertyPredictor
from wyckoff_hf.prediction.baseline import LEVELS
from wyckoff_hf.prediction.predict import DEFAULT_BATCH_SIZE, UNITS, property_names
from wyckoff_hf.tokenization import WyckoffError

AUTHORS_MAE_MEV = {"formation_energy_per_atom": 25.0, "band_gap": 247.0}  # WyckoffTransformer paper, full MP-20
_CLASS = re.compile(r"^(?P<column>.+) (?P<op><=|>) (?P<threshold>[-+0-9.eE]+)$")


def split_rows(dataset, split: str, max_rows: int | None) -> tuple[list, list, list[str]]:
    """The split's readable rows, their representations and why the other rows were skipped."""
    rows = dataset[split] if max_rows is None else dataset[split].select(range(min(max_rows, len(dataset[split]))))
    kept, representations, skipped = [], [], []
    for index, row in enumerate(rows):
        try:
            representations.append(representation_from_row(row))
            kept.append(row)
        except WyckoffError as err:
            skipped.append(f"row {index} ({row.get('material_id', '?')}): {err}")
    return kept, representations, skipped


def class_rule(names: list[str]) -> tuple[str, float]:
    """``(column, threshold)`` of a classifier trained by ``scripts/train.py --classification-threshold``."""
    matches = [_CLASS.match(name) for name in names]
    if len(names) != 2 or not all(matches) or len({(m["column"], m["threshold"]) for m in matches}) != 1 or \
            [m["op"] for m in matches] != ["<=", ">"]:
        raise ValueError(f"cannot tell the true classes from the dataset for id2label {names}: expected "
                         "['COLUMN <= T', 'COLUMN > T']")
    return matches[0]["column"], float(matches[0]["threshold"])


def values_of(rows: list, column: str) -> np.ndarray:
    if rows and column not in rows[0]:
        raise ValueError(f"the dataset has no {column!r} column to score the model against")
    return np.array([np.nan if row[column] is None else row[column] for row in rows], dtype=float)


def score_model(predictor: PropertyPredictor, rows: list, representations: list, train_rows: list,
                train_representations: list, batch_size: int) -> list[dict]:
    """One result per output: the metric, the baseline's on the same rows, rows used and skipped (why), time."""
    readable, skipped = [], {}
    for index, representation in enumerate(representations):
        try:
            predictor.check(representation)
            readable.append(index)
        except WyckoffError as err:  # counted by kind, with the first message as the example
            count, example = skipped.get(type(err).__name__, (0, str(err)))
            skipped[type(err).__name__] = (count + 1, example)
    start = time.perf_counter()
    predictions = predictor.predict([representations[i] for i in readable], batch_size)
    seconds = time.perf_counter() - start
    compositions = [representations[i].composition for i in readable]
    train_compositions = [rep.composition for rep in train_representations]
    names = property_names(predictor.model.config)
    rule = class_rule(names) if predictor.problem_type != "regression" else None
    results = []
    for column in [rule[0]] if rule else names:
        truth = values_of([rows[i] for i in readable], column)
        baseline = CompositionFamilyBaseline.fit(train_compositions, values_of(train_rows, column))
        guess, levels = baseline.predict(compositions)
        used = np.isfinite(truth)
        result = {"model": predictor.name, "property": column, "rows": int(used.sum()), "seconds": seconds,
                  "skipped": {**skipped, f"no {column} value": (int((~used).sum()), "")} if (~used).any() else skipped,
                  "levels": Counter(level for level, ok in zip(levels, used, strict=True) if ok)}
        if rule:
            threshold = rule[1]
            predicted = np.array([prediction["label"] == names[1] for prediction in predictions], dtype=bool)
            result.update(threshold=threshold,
                          accuracy=float(np.mean(predicted[used] == (truth[used] > threshold))),
                          baseline_accuracy=float(np.mean((guess[used] > threshold) == (truth[used] > threshold))))
        else:
            predicted = np.array([prediction[column] for prediction in predictions], dtype=float)
            result.update(mae=float(np.mean(np.abs(predicted[used] - truth[used]))),
                          baseline_mae=float(np.mean(np.abs(guess[used] - truth[used]))))
        results.append(result)
    return results


def level_text(levels: Counter) -> str:
    return " / ".join(str(levels.get(level, 0)) for level in LEVELS)


def markdown(results: list[dict]) -> str:
    regression = [r for r in results if "mae" in r]
    classification = [r for r in results if "accuracy" in r]
    lines = []
    if regression:
        lines += ["| model | property | rows | MAE | MAE (meV) | baseline MAE (meV) | authors' MAE (meV, full MP-20) "
                  f"| baseline levels ({' / '.join(LEVELS)}) | seconds |", "|" + "---|" * 9]
        for r in regression:
            unit = UNITS.get(r["property"], "")
            authors = AUTHORS_MAE_MEV.get(r["property"])
            lines.append(f"| {r['model']} | {r['property']} | {r['rows']} | {r['mae']:.4f} {unit} | "
                         f"{1000 * r['mae']:.1f} | {1000 * r['baseline_mae']:.1f} | "
                         f"{'—' if authors is None else f'{authors:.0f}'} | {level_text(r['levels'])} | "
                         f"{r['seconds']:.2f} |")
    if classification:
        lines += ["", "| model | classes | rows | accuracy | baseline accuracy | seconds |", "|" + "---|" * 6]
        lines += [f"| {r['model']} | {r['property']} > {r['threshold']:g} | {r['rows']} | {r['accuracy']:.4f} | "
                  f"{r['baseline_accuracy']:.4f} | {r['seconds']:.2f} |" for r in classification]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", required=True, help="property model folder (repeatable)")
    parser.add_argument("--dataset", required=True, help="prepared dataset folder (scripts/prepare_dataset.py)")
    parser.add_argument("--split", default="test", help="split scored (default: test); the baseline fits train")
    parser.add_argument("--max-rows", type=int, default=None, help="score only the split's first N rows")
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE, help="crystals per forward pass")
    parser.add_argument("--device", default=None, help="torch device (default: cpu)")
    parser.add_argument("--output-json", default=None, help="also write the results (and this command) as JSON")
    args = parser.parse_args(argv)

    torch.set_num_threads(1)
    dataset = load_wyckoff_dataset(args.dataset)
    rows, representations, skipped = split_rows(dataset, args.split, args.max_rows)
    train_rows, train_representations, _ = split_rows(dataset, "train", None)
    results = []
    for model in args.model:
        predictor = PropertyPredictor.from_pretrained(model, args.device)
        results += score_model(predictor, rows, representations, train_rows, train_representations, args.batch_size)
    print(f"{args.dataset} {args.split}: {len(rows)} rows scored ({len(skipped)} unreadable); baseline fitted on "
          f"{len(train_rows)} train rows; {torch.get_num_threads()} torch thread(s), device "
          f"{args.device or 'cpu'}\n")
    print(markdown(results))
    for line in skipped[:10]:
        print(f"skipped {line}")
    for result in results:
        for reason, (count, example) in result["skipped"].items():
            print(f"{result['model']} {result['property']}: skipped {count} rows, {reason}"
                  f"{f' (e.g. {example})' if example else ''}")
    if args.output_json:
        command = shlex.join(["python", "scripts/benchmarks/benchmark_property.py",
                              *(sys.argv[1:] if argv is None else argv)])
        with open(args.output_json, "w") as f:
            json.dump({"command": command, "dataset": args.dataset, "split": args.split,
                       "authors_mae_mev": AUTHORS_MAE_MEV, "results": results}, f, indent=2, default=dict)
    return results


if __name__ == "__main__":
    main()
