"""argparse helpers shared by the subcommands: checked number types and hidden old option names."""

from __future__ import annotations

import argparse


def positive_int(text: str) -> int:
    """An ``int`` ≥ 1 (``--max-reference -3`` is an error, not "all rows")."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def positive_float(text: str) -> float:
    """A ``float`` > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be greater than 0, got {value}")
    return value


def space_group_number(text: str) -> int:
    """An international space-group number, 1-230."""
    value = int(text) if text.lstrip("-").isdigit() else 0
    if not 1 <= value <= 230:
        raise argparse.ArgumentTypeError(f"{text!r} is not a space group number (1-230)")
    return value


def name_value(text: str) -> tuple[str, float]:
    """``NAME=VALUE`` with a finite number, e.g. ``band_gap=1.5``."""
    name, _, value = text.partition("=")
    try:
        number = float(value)
    except ValueError:
        number = float("nan")
    if not name or not abs(number) < float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} is not NAME=VALUE with a finite number, e.g. band_gap=1.5")
    return name, number


def non_negative_float(text: str) -> float:
    """A ``float`` ≥ 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be at least 0, got {value}")
    return value


def add_hidden_alias(parser: argparse.ArgumentParser, alias: str, dest: str, **kwargs) -> None:
    """Accept an older spelling of an option (e.g. ``--out`` for ``--output-dir``) without listing it."""
    parser.add_argument(alias, dest=dest, help=argparse.SUPPRESS, default=argparse.SUPPRESS, **kwargs)
