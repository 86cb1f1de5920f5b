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


MAX_SEED = 2**63 - 1  # torch.Generator.manual_seed takes up to 2**64 - 1, numpy's SeedSequence any int ≥ 0: a
# non-negative int64 is valid for both and for the realisation seeds SEED + i
MAX_SAMPLES = 10**9  # samples one job may draw: about 60 GB of samples.jsonl and days of sampling


def bounded_int(text: str, low: int, high: int) -> int:
    """An ``int`` in ``low..high``; the error names the range (argparse prefixes the option's name)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if not low <= value <= high:
        raise argparse.ArgumentTypeError(f"must be an integer from {low} to {high}, got {value}")
    return value


def seed(text: str) -> int:
    """A random seed, 0 .. 2**63 - 1 (``MAX_SEED``): the same range for every command."""
    return bounded_int(text, 0, MAX_SEED)


def num_samples(text: str) -> int:
    """A number of samples, 1 .. ``MAX_SAMPLES``: a larger job is refused before it fills a disk."""
    value = positive_int(text)
    if value > MAX_SAMPLES:
        raise argparse.ArgumentTypeError(f"must be at most {MAX_SAMPLES}, got {value}; split a larger job into "
                                         "several with different --seed")
    return value


def add_seed_option(parser: argparse.ArgumentParser, help: str) -> None:
    """``--seed`` (default 0), checked by ``seed``: one definition for every command."""
    parser.add_argument("--seed", type=seed, default=0, help=f"{help} (0 to {MAX_SEED}; default: 0)")


def positive_float(text: str) -> float:
    """A ``float`` > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be greater than 0, got {value}")
    return value


def rate(text: str) -> float:
    """A ``float`` in (0, 1]: a fraction such as an acceptance rate."""
    value = positive_float(text)
    if value > 1:
        raise argparse.ArgumentTypeError(f"must be at most 1, got {value}")
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


class NameValues(argparse.Action):
    """A repeatable ``NAME=VALUE`` option (``type=name_value``) gathered into one dict, ``None`` when not given;
    a name given twice keeps its last value."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: tuple[str, float],
                 option_string: str | None = None) -> None:
        name, value = values
        setattr(namespace, self.dest, {**(getattr(namespace, self.dest) or {}), name: value})


def add_field_temperature_option(parser: argparse.ArgumentParser) -> None:
    """``--field-temperature FIELD=T`` (repeatable) into ``args.field_temperatures``, ``generate``'s argument."""
    parser.add_argument("--field-temperature", dest="field_temperatures", type=name_value, action=NameValues,
                        default=None, metavar="FIELD=T",
                        help="temperature of one field: element, site_symmetry or enumeration, e.g. site_symmetry=1.5 "
                             "(repeatable; a field's own temperature comes before the common one)")


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
