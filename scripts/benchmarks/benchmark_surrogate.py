"""Benchmark: how far a fast stability surrogate agrees with CHGNet on generated crystals.

    python scripts/benchmarks/benchmark_surrogate.py --samples out/ --relaxation-cache CACHE/ \
        --surrogate wyckoff_hf/pretrained/mp20-biternary-formation-energy [--trials 3]
    python scripts/benchmarks/benchmark_surrogate.py --dataset data_prepared/chgnet-labels --surrogate MODEL

With ``--dataset`` (``scripts/prepare_chgnet_labels.py``), the labels are its held-out test split instead. With
``--known DATASET`` the precision is also given apart for structure types new to DATASET's train split and known ones.

Reads the samples of a generated folder and the CHGNet relaxations ``wyckoff-hf evaluate OUT --stability
--stability-screen --relaxation-cache CACHE`` has finished so far (an unfinished run is fine: only the labelled
samples count), places each on the proxy hull, and prints one table: the surrogate's mean absolute error on the
energy above hull, its agreement with CHGNet on the 0.08 eV/atom label, the stable share by each, and the
precision of the surrogate's "stable" call (the share of the samples it keeps that CHGNet calls stable: what
``generate --stability-filter`` buys) with 95 % Wilson intervals.
"""

from __future__ import annotations

import argparse

import numpy as np

from wyckoff_hf.data import load_wyckoff_dataset, representation_from_row
from wyckoff_hf.evaluation import load_samples
from wyckoff_hf.evaluation.hull import packaged_hull
from wyckoff_hf.evaluation.novelty import novel_templates
from wyckoff_hf.evaluation.relaxation import SCREEN_FMAX, RelaxationCache, RelaxationSettings, Relaxed
from wyckoff_hf.evaluation.stability import place_on_hull
from wyckoff_hf.evaluation.sun import wilson_interval
from wyckoff_hf.prediction import PropertyPredictor
from wyckoff_hf.rewards import SurrogateStability
from wyckoff_hf.rewards.terms import STABILITY_THRESHOLD


def chgnet_labels(samples: str, cache: str, trials: int, seed: int) -> tuple[list, np.ndarray, int]:
    """The samples with a finished relaxation in ``cache`` (screened protocol) placed on the hull, their CHGNet
    E_hull, and how many relaxations collapsed (``place_on_hull``'s failures, left out)."""
    settings = RelaxationSettings(num_trials=trials, screen_fmax=SCREEN_FMAX, seed=seed)
    relaxations = RelaxationCache(cache)
    crystals = load_samples(samples).representations
    relaxed = [result for index, crystal in enumerate(crystals) if crystal is not None
               and isinstance(result := relaxations.load(crystal, index, settings), Relaxed)]
    placed, failures = place_on_hull(relaxed, packaged_hull())
    collapsed = sum(failure.reason.startswith("collapsed") for failure in failures)
    return ([crystals[p.relaxed.index] for p in placed], np.array([p.e_above_hull for p in placed]), collapsed)


def share(hits: int, total: int) -> str:
    if not total:  # e.g. the surrogate's unstable among samples its own filter kept
        return "n/a"
    low, high = wilson_interval(hits, total)
    return f"{hits / total:.1%} [{low:.1%}, {high:.1%}] ({hits}/{total})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", help="folder written by wyckoff-hf generate")
    parser.add_argument("--relaxation-cache", help="the --relaxation-cache of its evaluate run")
    parser.add_argument("--dataset", help="CHGNet-labelled prepared dataset: its test split instead of the two above")
    parser.add_argument("--surrogate", required=True, help="property model: e_above_hull or formation energy")
    parser.add_argument("--known", help="prepared dataset: precision apart for templates new to its train split")
    parser.add_argument("--trials", type=int, default=3, help="the evaluate run's --stability-trials")
    parser.add_argument("--seed", type=int, default=0, help="the evaluate run's --seed")
    args = parser.parse_args()
    if args.dataset:
        test = load_wyckoff_dataset(args.dataset)["test"]
        crystals, chgnet, collapsed = [representation_from_row(row) for row in test], np.array(test["e_above_hull"]), 0
    elif args.samples and args.relaxation_cache:
        crystals, chgnet, collapsed = chgnet_labels(args.samples, args.relaxation_cache, args.trials, args.seed)
    else:
        parser.error("pass --dataset, or --samples and --relaxation-cache")
    if not crystals:
        raise SystemExit(f"no CHGNet label in {args.dataset or args.relaxation_cache}")
    surrogate = SurrogateStability(PropertyPredictor.from_pretrained(args.surrogate))
    predicted = surrogate.e_above_hull(crystals)
    stable, called = chgnet <= STABILITY_THRESHOLD, predicted <= STABILITY_THRESHOLD
    errors = np.abs(predicted - chgnet)
    rank = np.corrcoef(np.argsort(np.argsort(predicted)), np.argsort(np.argsort(chgnet)))[0, 1]
    rows = {
        "surrogate": f"{args.surrogate} ({surrogate.column})",
        "CHGNet-labelled samples": len(crystals),
        "MAE of E_hull (median AE)": f"{errors.mean():.3f} ({np.median(errors):.3f}) eV/atom",
        "collapsed relaxations (left out)": collapsed,
        "Spearman ρ": f"{rank:.2f}",
        "agreement on ≤ 0.08": share(int((stable == called).sum()), len(crystals)),
        "stable by CHGNet": share(int(stable.sum()), len(crystals)),
        "stable by the surrogate": share(int(called.sum()), len(crystals)),
        "CHGNet-stable among the surrogate's stable (precision)": share(int((stable & called).sum()),
                                                                         int(called.sum())),
        "CHGNet-stable among the surrogate's unstable": share(int((stable & ~called).sum()), int((~called).sum())),
    }
    if args.known:
        new = np.array(novel_templates(crystals, [representation_from_row(row) for row in
                                                  load_wyckoff_dataset(args.known)["train"]]))
        for name, part in (("known", ~new), ("new", new)):
            rows[f"precision on {name} templates (CHGNet's rate among them)"] = (
                f"{share(int((stable & called & part).sum()), int((called & part).sum()))} "
                f"({share(int((stable & part).sum()), int(part.sum()))})")
    print("| value | |\n|---|---|\n" + "\n".join(f"| {name} | {value} |" for name, value in rows.items()))

if __name__ == "__main__":
    main()
