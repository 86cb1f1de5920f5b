"""The ``wyckoff-hf predict`` subcommand and ``generate --predict``: arguments, tables, CSV files, for the main CLI.

Only argparse at import time: torch, transformers and pymatgen are imported when a command runs.

Files: ``predictions.csv`` of a generated folder has the columns ``index`` (the line of ``samples.jsonl``),
``representation`` and the models' columns, whether ``generate --predict`` or ``predict FOLDER`` wrote it; a table
of other inputs has ``input`` (the argument), ``name`` (file stem, ``material_id`` or sample index) and
``representation`` first. A file that exists already gets the new models' columns merged in, row by row (its other
columns are kept; a column of the same name is replaced), or is refused when it is not such a table; the manifest
of a generated folder records which models' columns its ``predictions.csv`` holds.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..generation.output import PREDICTIONS_FILE, read_manifest, record_files, write_manifest
from ..utils.arguments import positive_float, positive_int

PREDICTIONS_KEY = "predictions"  # the manifest's record of which models' columns predictions.csv holds


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


def write_sample_predictions(out: Path, representations: Sequence, predictors: Sequence, start: int = 0) -> Path:
    """``generate --predict``: the predictions of samples ``start``, ``start + 1``... into ``out/predictions.csv``,
    a new file for ``start`` 0 and appended to after, so that predictions stream with the samples."""
    from .predict import predict_table

    frame, problems = predict_table(predictors, representations)
    _report_unpredicted(problems, [f"sample {start + i}" for i in range(len(representations))])
    frame.insert(0, "index", range(start, start + len(representations)))
    frame.insert(1, "representation", [str(rep) for rep in representations])
    path = out / PREDICTIONS_FILE
    frame.to_csv(path, index=False, mode="w" if start == 0 else "a", header=start == 0)
    return path


def report_sample_predictions(out: Path, count: int, predictors: Sequence) -> None:
    """Print the medians of ``out/predictions.csv``."""
    import pandas as pd

    from .predict import summarise, table_columns

    path = out / PREDICTIONS_FILE
    columns = [name for names in table_columns(predictors) for name in names.values()]
    frame = pd.read_csv(path, usecols=columns)
    print(f"wrote the predictions of {len(predictors)} model(s) for {count} samples to {path}: "
          f"{summarise(frame, predictors)}")


def record_models(folder: Path, predictors: Sequence, kept: dict[str, list[str]] | None = None) -> None:
    """The manifest's ``predictions``: per model, the columns of its that ``predictions.csv`` holds (``kept``: the
    earlier models' columns still there)."""
    from .predict import table_columns

    manifest = read_manifest(folder)
    if manifest is None:
        return
    new = {predictor.name: list(names.values())
           for predictor, names in zip(predictors, table_columns(predictors), strict=True)}
    models = {**(kept or {}), **new}
    write_manifest(folder, {**manifest, PREDICTIONS_KEY: {"file": PREDICTIONS_FILE, "models": models}})
    record_files(folder, PREDICTIONS_FILE)


def _merge_into(output: Path, frame, keys: list[str]):  # -> pandas.DataFrame
    """``frame`` merged into the table at ``output``: its rows matched by ``keys``, its columns replacing those of the
    same name in place and added after the others; ``ValueError`` for a file that is not such a table of the same
    crystals."""
    import pandas as pd

    try:
        existing = pd.read_csv(output, dtype={key: str for key in keys if key != "index"})
    except (ValueError, OSError) as err:
        raise ValueError(f"{output} exists and is not readable as a CSV ({err}): pass another --output") from None
    if not {*keys, "representation"} <= set(existing.columns):
        raise ValueError(f"{output} exists and is not a predictions table with columns {[*keys, 'representation']}: "
                         "pass another --output")
    both = existing[[*keys, "representation"]].merge(frame[[*keys, "representation"]], on=keys)
    if (both["representation_x"] != both["representation_y"]).any():
        raise ValueError(f"{output} holds predictions of other crystals under the same {'/'.join(keys)}: pass "
                         "another --output")
    replaced = [column for column in frame.columns if column in existing.columns and column not in
                {*keys, "representation"}]
    merged = existing.drop(columns=replaced).merge(frame, on=[*keys, "representation"], how="outer")
    order = [*existing.columns, *(column for column in frame.columns if column not in existing.columns)]
    return merged[order].sort_values(keys, kind="stable").reset_index(drop=True)


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
    written = ""
    if output is not None:
        written = _write_table(output, frame, ["index"] if generated else ["input", "name"], predictors,
                               output == _default_output(args.inputs))
    print(f"predicted {len(crystals)} crystal(s) with {len(predictors)} model(s)"
          f"{f'; {len(failures)} input(s) skipped (listed above)' if failures else ''}{written}")
    return 0


def _write_table(output: Path, frame, keys: list[str], predictors: Sequence, in_folder: bool) -> str:
    """Write ``output``, or merge ``frame`` into it when it exists; what was done, for the summary line.
    ``in_folder``: the generated folder's own ``predictions.csv``, whose manifest records the models."""
    new_columns = set(frame.columns)
    kept: list[str] = []
    if output.exists():
        frame = _merge_into(output, frame, keys)
        kept = [column for column in frame.columns if column not in new_columns]
    output.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(output, index=False)
    if in_folder:
        earlier = (read_manifest(output.parent) or {}).get(PREDICTIONS_KEY, {}).get("models", {})
        record_models(output.parent, predictors, {model: [c for c in columns if c in kept]
                                                  for model, columns in earlier.items() if set(columns) & set(kept)})
    return f"; merged into {output}, keeping its other columns {kept}" if kept else f"; wrote {output}"

