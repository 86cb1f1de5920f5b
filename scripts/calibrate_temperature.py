"""Recalibrate the default sampling temperature and STOP shifts of a checkpoint on a validation split.

    python scripts/calibrate_temperature.py CHECKPOINT_DIR --dataset DIR_OR_HUB_ID \
        [--temperatures 0.4,0.5,...] [--rows 2000] [--samples-per-row 16] [--stop-rounds 6] \
        [--summary training_summary.json]

The same procedure ``scripts/train.py`` runs after training (``wyckoff_hf.training.calibration``); it rewrites
the checkpoint's ``generation_config.json`` and, with ``--summary``, the ``calibration`` and
``sampling_temperature`` of a training summary.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from wyckoff_hf.data import load_wyckoff_dataset
from wyckoff_hf.modeling import WyckoffTransformerForCrystalGeneration
from wyckoff_hf.tokenization import WyckoffTokenizer
from wyckoff_hf.training.calibration import SAMPLES_PER_ROW, STOP_BIAS_ROUNDS, calibrate_checkpoint


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--split", default="validation")
    parser.add_argument("--temperatures", default="0.4,0.5,0.6,0.7,0.8,0.9,1.0,1.1,1.2")
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--samples-per-row", type=int, default=SAMPLES_PER_ROW)
    parser.add_argument("--stop-rounds", type=int, default=STOP_BIAS_ROUNDS,
                        help="rounds fitting the STOP-logit shifts at the chosen temperature (0: none)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--summary", type=Path, default=None)
    args = parser.parse_args()
    if args.stop_rounds < 0:
        parser.error(f"--stop-rounds must be 0 (no STOP shifts) or more, got {args.stop_rounds}")

    model = WyckoffTransformerForCrystalGeneration.from_pretrained(args.checkpoint).eval()
    tokenizer = WyckoffTokenizer.from_pretrained(args.checkpoint)
    split = load_wyckoff_dataset(args.dataset)[args.split]
    temperatures = [float(t) for t in args.temperatures.split(",")]
    calibration = calibrate_checkpoint(model, tokenizer, split, temperatures, args.rows, args.samples_per_row,
                                       args.seed, args.stop_rounds)
    model.save_pretrained(args.checkpoint)
    print("| temperature | W1 #sites | W1 #elements | sum |\n|---|---|---|---|")
    for point in calibration["scan"]:
        print(f"| {point['temperature']} | {point['sites_distance']:.4f} | {point['elements_distance']:.4f} "
              f"| {point['distance']:.4f} |")
    print(f"sampling_temperature = {model.generation_config.temperature}")
    if "stop" in calibration:
        print("W1 #sites per round of STOP shifts: " + ", ".join(f"{entry['sites_distance']:.4f}"
                                                             for entry in calibration["stop"]["rounds"]))
        print(f"stop_logit_bias = {model.generation_config.stop_logit_bias}")
    if args.summary:
        summary = json.loads(args.summary.read_text())
        calibration["command"] = "python " + " ".join(sys.argv)
        summary.update(calibration=calibration, sampling_temperature=model.generation_config.temperature)
        args.summary.write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
