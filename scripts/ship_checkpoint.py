"""Copy a trained checkpoint into the package as a shipped one: weights, config, tokenizer files, generation config,
model card and training summary, without the modeling code and ``auto_map`` that ``save_pretrained`` adds for
``trust_remote_code`` (the installed package loads its own checkpoints with its own classes).

    python scripts/ship_checkpoint.py runs/NAME wyckoff_hf/pretrained/NAME [--overwrite]
"""

import argparse
import json
import re
import shutil
import sys
from pathlib import Path

from wyckoff_hf.tokenization.data_files import DATA_FILES

SHIPPED_FILES = ("config.json", "model.safetensors", "generation_config.json", "tokenizer_config.json",
                 "wyckoff_vocab.json", "README.md", "training_summary.json")
REMOTE_CODE_FILES = ("*.py", *DATA_FILES)
# the top-level "auto_map" entry (its values hold no braces), with the comma that joins it to the next or last key
AUTO_MAP = re.compile(r'\n\s*"auto_map": \{[^{}]*\},(?=\n)|,\n\s*"auto_map": \{[^{}]*\}(?=\n)')


def ship(source: Path, target: Path) -> list[str]:
    """Write the shipped files of ``source`` into ``target`` (which may be ``source`` itself), drop the remote
    code and data files there and the ``auto_map`` of both configs; returns the files ``target`` holds."""
    target.mkdir(parents=True, exist_ok=True)
    for name in SHIPPED_FILES:
        if (source / name).is_file() and source.resolve() != target.resolve():
            shutil.copyfile(source / name, target / name)
    for pattern in REMOTE_CODE_FILES:
        for path in target.glob(pattern):
            path.unlink()
    for name in ("config.json", "tokenizer_config.json"):
        path = target / name
        text = AUTO_MAP.sub("", path.read_text())  # as text, so the file keeps its layout
        if "auto_map" in json.loads(text):
            raise ValueError(f"{path}: auto_map left after removing its block; edit the file by hand")
        path.write_text(text)
    return sorted(path.name for path in target.iterdir())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", type=Path, help="a checkpoint folder written by scripts/train.py")
    parser.add_argument("target", type=Path, help="the shipped folder, e.g. wyckoff_hf/pretrained/NAME")
    parser.add_argument("--overwrite", action="store_true", help="replace the shipped files of an existing target")
    args = parser.parse_args(argv)
    if not (args.source / "config.json").is_file():
        sys.exit(f"ship_checkpoint.py: {args.source} holds no config.json: not a checkpoint folder")
    if args.target.exists() and args.target.resolve() != args.source.resolve() and not args.overwrite:
        sys.exit(f"ship_checkpoint.py: {args.target} exists; pass --overwrite to replace its shipped files")
    print("\n".join(ship(args.source, args.target)))


if __name__ == "__main__":
    main()
