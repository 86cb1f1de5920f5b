"""Re-render a checkpoint's model card from its training summary and, optionally, evaluation metrics.

    python scripts/render_model_card.py CHECKPOINT_DIR --summary runs/NAME/training_summary.json \
        [--metrics report/metrics.json] [--model-id ORG/NAME]

``scripts/train.py`` writes the card once (without evaluation); run this after ``wyckoff-hf evaluate``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from wyckoff_hf.cards import write_model_card


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--summary", type=Path, required=True)
    parser.add_argument("--metrics", type=Path, default=None)
    parser.add_argument("--model-id", default="path/to/checkpoint")
    args = parser.parse_args()
    metrics = json.loads(args.metrics.read_text()) if args.metrics else None
    path = write_model_card(args.checkpoint, json.loads(args.summary.read_text()), metrics, args.model_id)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
