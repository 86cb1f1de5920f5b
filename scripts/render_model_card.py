"""Re-render a checkpoint's model card from its training summary and, optionally, evaluation metrics.

    python scripts/render_model_card.py CHECKPOINT_DIR --summary runs/NAME/training_summary.json \
        [--metrics report/metrics.json] [--stability-metrics stability-report/metrics.json] [--model-id ORG/NAME]

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
    parser.add_argument("--stability-metrics", type=Path, default=None,
                        help="metrics.json of a `wyckoff-hf evaluate --stability` run (a generator's card)")
    parser.add_argument("--model-id", default="path/to/checkpoint")
    args = parser.parse_args()
    for option, path in (("--summary", args.summary), ("--metrics", args.metrics),
                         ("--stability-metrics", args.stability_metrics)):
        if path is not None and not path.is_file():
            parser.error(f"{option} {path}: no such file")
    summary = json.loads(args.summary.read_text())
    metrics, stability = (json.loads(path.read_text()) if path else None
                          for path in (args.metrics, args.stability_metrics))
    try:  # only the stability section raises ValueError; a malformed summary must not be blamed on it
        path = write_model_card(args.checkpoint, summary, metrics, args.model_id, stability)
    except ValueError as err:
        parser.error(f"--stability-metrics {args.stability_metrics}: {err}")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
