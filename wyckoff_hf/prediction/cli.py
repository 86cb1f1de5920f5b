"""The ``wyckoff-hf predict`` subcommand and ``generate --predict``: arguments, tables, CSV files, for the main CLI.

Only argparse at import time: torch, transformers and pymatgen are imported when a command runs.

Files: ``predictions.csv`` of a generated folder has the columns ``index`` (the line of ``samples.jsonl``),
``representation`` and the models' columns, whether ``generate --predict`` or ``predict FOLDER`` wrote it; a table
of other inputs has ``input`` (the argument), ``name`` (file stem, ``material_id`` or sample index) and
``representation`` first.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..utils.arguments import positive_float, positive_int

PREDICTIONS_FILE = "predictions.csv"


def add_predict_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``INPUT... --model DIR [--model DIR2] [--output FILE] [--batch-size] [--device] [--symprec]``."""
    parser.add_argument("inputs", nargs="+", metavar="INPUT",
                        help="CIF files, folders of CIFs, folders written by `wyckoff-hf generate` (or their "
                             "samples.jsonl), or CSV files with a 'cif' column (CDVAE format)")
    parser.add_argument("--model", action="append", required=True, metavar="DIR",
                        help="property model folder or Hub id (repeatable: one set of columns per model)")
    parser.add_argument("--output", default=None, metavar="FILE.csv",
                        help=f"CSV file to write (default: {PREDICTIONS_FILE} inside a single generated folder, "
                             "else only the printed table)")
    parser.add_argument("--batch-size", type=positive_int, default=None,
                        help="crystals per forward pass (default: 512)")
    parser.add_argument("--device", default=None, help="torch device, e.g. cuda (default: cpu)")
    parser.add_argument("--symprec", type=positive_float, default=0.1,
                        help="spglib symmetry tolerance in Å for structures (default: %(default)s)")


def load_predictors(models: Sequence[str], device: str | None = None) -> list:
    """``PropertyPredictor`` per model argument (one-line errors for a missing or wrong folder)."""
    from transformers.utils.logging import disable_progress_bar

    from .predict import PropertyPredictor

    disable_progress_bar()  # transformers' bar for loading a few tensors is noise
    return [PropertyPredictor.from_pretrained(model, device) for model in models]


def _report_unpredicted(problems: Sequence[Any], labels: Sequence[str]) -> None:
    for problem in problems:
        print(f"{labels[problem.row]}: model {problem.model} cannot read it: {problem.reason}", file=sys.stderr)


def write_sample_predictions(out: Path, representations: Sequence, predictors: Sequence) -> Path:
    """``generate --predict``: every sample's predictions into ``out/predictions.csv``; prints the medians."""
    from .predict import predict_table, summarise

    frame, problems = predict_table(predictors, representations)
    _report_unpredicted(problems, [f"sample {i}" for i in range(len(representations))])
    frame.insert(0, "index", range(len(representations)))
    frame.insert(1, "representation", [str(rep) for rep in representations])
    path = out / PREDICTIONS_FILE
    frame.to_csv(path, index=False)
    print(f"wrote the predictions of {len(predictors)} model(s) for {len(representations)} samples to {path}: "
          f"{summarise(frame, predictors)}")
    return path


def _table_text(frame) -> str:
    """The table as aligned text: text left-aligned, numbers right-aligned to 4 significant digits, blanks empty."""
    import pandas as pd

    columns = []
    for name in frame.columns:
        numeric = frame[name].dtype.kind in "fi"
        cells = ["" if pd.isna(value) else f"{value:.4g}" if numeric else str(value) for value in frame[name]]
        width = max(len(str(name)), *map(len, cells))
        columns.append([(cell.rjust if numeric else cell.ljust)(width) for cell in [str(name), *cells]])
    return "\n".join("  ".join(row).rstrip() for row in zip(*columns, strict=True))


def _default_output(inputs: Sequence[str]) -> Path | None:
    """``predictions.csv`` inside the folder of a single generated input, else none."""
    from .inputs import is_generated

    if len(inputs) != 1 or not is_generated(Path(inputs[0])):
        return None
    path = Path(inputs[0])
    return (path if path.is_dir() else path.parent) / PREDICTIONS_FILE


def run_predict(args: argparse.Namespace) -> int:
    """Run ``predict``: report and skip what cannot be read, print the table, write the CSV. Exit status 0 when
    at least one crystal was predicted, else 1."""
    from .inputs import is_generated, read_inputs
    from .predict import DEFAULT_BATCH_SIZE, predict_table

    predictors = load_predictors(args.model, args.device)  # a bad --model fails before any structure is read
    crystals, failures = read_inputs(args.inputs, args.symprec)
    for failure in failures:
        print(f"{failure.identifier}: ERROR {failure.error_type}: {failure.reason}", file=sys.stderr)
    if not crystals:
        print("wyckoff-hf predict: no crystal could be read", file=sys.stderr)
        return 1
    representations = [crystal.representation for crystal in crystals]
    frame, problems = predict_table(predictors, representations, args.batch_size or DEFAULT_BATCH_SIZE)
    _report_unpredicted(problems, [f"{crystal.input}: {crystal.name}" for crystal in crystals])
    generated = len(args.inputs) == 1 and is_generated(Path(args.inputs[0]))
    first: dict[str, list] = ({"index": [int(c.name) for c in crystals]} if generated else
                              {"input": [c.input for c in crystals], "name": [c.name for c in crystals]})
    first["representation"] = [str(representation) for representation in representations]
    for position, (column, values) in enumerate(first.items()):
        frame.insert(position, column, values)
    shown = frame.drop(columns="input") if "input" in frame and frame["input"].nunique() == 1 else frame
    print(_table_text(shown))
    output = Path(args.output) if args.output else _default_output(args.inputs)
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        frame.to_csv(output, index=False)
    print(f"predicted {len(crystals)} crystal(s) with {len(predictors)} model(s)"
          f"{f'; {len(failures)} input(s) skipped (listed above)' if failures else ''}"
          f"{f'; wrote {output}' if output is not None else ''}")
    return 0
