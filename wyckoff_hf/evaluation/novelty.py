"""Uniqueness and novelty, at the Wyckoff-representation level (exact) and the structure level (matcher).

Wyckoff level: two samples are the same crystal type when their canonical representations are equal
(``WyckoffRepresentation.from_sites(..., canonical=True)``, which picks one labelling among the
affine-normalizer alternatives), so it is a set lookup and costs microseconds per sample.

Structure level: pymatgen's ``StructureMatcher`` with CDVAE's tolerances (stol=0.5, angle_tol=10,
ltol=0.3; ``RecEval`` in CDVAE's ``scripts/compute_metrics.py``, reused by DiffCSP and FlowMM). Two
structures can only match if their reduced formulas are equal, so comparisons are bucketed by reduced
formula: the cost grows with the bucket sizes, not with the product of the set sizes, and buckets are
spread over a process pool. Reference CIFs are parsed only for formulas that occur among the samples.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Hashable, Iterable, Sequence

from pymatgen.analysis.structure_matcher import StructureMatcher
from pymatgen.core import Structure

from ..tokenization import WyckoffError, WyckoffRepresentation, load_structure
from ..utils.parallel import parallel_map
from .samples import GeneratedSamples
from .validity import fraction

MATCHER_TOLERANCES = {"stol": 0.5, "angle_tol": 10.0, "ltol": 0.3}
CHUNK = 32  # generated structures per novelty task: small enough to balance a pool, large enough to amortise


def wyckoff_uniqueness(representations: Sequence[WyckoffRepresentation]) -> float | None:
    """Distinct canonical representations / representations (a duplicate pair gives 1/2)."""
    return fraction(len({rep.canonical() for rep in representations}), len(representations))


class KnownKeys:
    """The ``key`` of every known crystal, gathered once, so that many batches are checked against them cheaply
    (a reward term checks every step's samples)."""

    def __init__(self, key: Callable[[WyckoffRepresentation], Hashable],
                 known: Iterable[WyckoffRepresentation]) -> None:
        self.key = key
        self.keys = {key(crystal) for crystal in known}

    def novel(self, crystals: Sequence[WyckoffRepresentation]) -> list[bool]:
        """Per crystal: its key is not among the known ones."""
        return [self.key(crystal) not in self.keys for crystal in crystals]


def novel_representations(representations: Sequence[WyckoffRepresentation],
                          train: Sequence[WyckoffRepresentation]) -> list[bool]:
    """Per sample: its canonical representation occurs nowhere in ``train``."""
    return KnownKeys(WyckoffRepresentation.canonical, train).novel(representations)


def novel_templates(representations: Sequence[WyckoffRepresentation],
                    train: Sequence[WyckoffRepresentation]) -> list[bool]:
    """Per sample: its template (space group and letters, elements abstracted away) is absent from ``train``.

    Canonical templates are compared (minimised over relabellings without the elements), so a relabelled
    copy of a known template is not novel.
    """
    return KnownKeys(WyckoffRepresentation.canonical_template, train).novel(representations)


def _matcher() -> StructureMatcher:
    return StructureMatcher(**MATCHER_TOLERANCES)


def _first_of_groups(structures: list[Structure]) -> list[bool]:
    """Per structure: it is the first (in input order) of its group of mutually matching structures."""
    position: dict[int, int] = {}
    for i, structure in enumerate(structures):  # one object listed twice: its first position counts
        position.setdefault(id(structure), i)
    flags = [False] * len(structures)
    for group in _matcher().group_structures(structures):
        flags[min(position[id(structure)] for structure in group)] = True
    return flags


def unique_structures(structures: Sequence[Structure], num_workers: int | None = 1) -> list[bool]:
    """Per structure: no earlier structure matches it (pymatgen's ``group_structures``, bucketed by formula),
    so a set of k mutual duplicates counts once."""
    buckets: dict[str, list[int]] = defaultdict(list)
    for i, structure in enumerate(structures):
        buckets[structure.composition.reduced_formula].append(i)
    groups = parallel_map(_first_of_groups, [[structures[i] for i in bucket] for bucket in buckets.values()],
                          num_workers, desc="structure uniqueness")
    flags = [False] * len(structures)
    for bucket, bucket_flags in zip(buckets.values(), groups, strict=True):
        for i, flag in zip(bucket, bucket_flags, strict=True):
            flags[i] = flag
    return flags


def structure_uniqueness(structures: Sequence[Structure], num_workers: int | None = 1) -> float | None:
    """Groups of mutually matching structures (pymatgen's ``group_structures``) / structures."""
    return fraction(sum(unique_structures(structures, num_workers)), len(structures))


def _novel_in_bucket(task: tuple[list[Structure], list[Structure | str]]) -> tuple[list[bool], list[str]]:
    """Novelty flags of one bucket's structures, and why any reference CIF of the bucket could not be read."""
    structures, candidates = task
    references, errors = [], []
    for candidate in candidates:
        try:
            references.append(load_structure(candidate))
        except WyckoffError as err:
            errors.append(str(err))
    matcher = _matcher()
    return [not any(matcher.fit(s, r) for r in references) for s in structures], errors


def novel_structures(structures: Sequence[Structure], reference: Sequence[Structure | str],
                     reference_formulas: Sequence[str] | None = None,
                     num_workers: int | None = 1) -> tuple[list[bool], list[str]]:
    """Per structure: no reference structure of the same reduced formula matches it.

    ``reference`` holds Structures or CIF texts. With ``reference_formulas`` (reduced formulas, aligned
    with ``reference``, e.g. from the reference's Wyckoff representations) only the CIFs of formulas
    that occur among ``structures`` are ever parsed. Returns the flags and a message per reference CIF
    that could not be parsed (skipped, so the caller can report them).
    """
    if reference_formulas is None:
        reference_formulas = [load_structure(r).composition.reduced_formula for r in reference]
    if len(reference_formulas) != len(reference):
        raise ValueError(f"{len(reference_formulas)} reference formulas for {len(reference)} references")
    by_formula: dict[str, list[Structure | str]] = defaultdict(list)
    for item, formula in zip(reference, reference_formulas, strict=True):
        by_formula[formula].append(item)

    flags = [True] * len(structures)
    tasks, owners = [], []
    buckets: dict[str, list[int]] = defaultdict(list)
    for i, structure in enumerate(structures):
        buckets[structure.composition.reduced_formula].append(i)
    for formula, indices in buckets.items():
        if formula not in by_formula:
            continue  # no reference of that formula: novel without a comparison
        for start in range(0, len(indices), CHUNK):
            chunk = indices[start:start + CHUNK]
            tasks.append(([structures[i] for i in chunk], by_formula[formula]))
            owners.append(chunk)
    errors: list[str] = []
    for chunk, (chunk_flags, chunk_errors) in zip(
            owners, parallel_map(_novel_in_bucket, tasks, num_workers, desc="structure novelty"), strict=True):
        for i, flag in zip(chunk, chunk_flags, strict=True):
            flags[i] = flag
        errors.extend(chunk_errors)
    return flags, sorted(set(errors))


def novelty_metrics(samples: GeneratedSamples, train: Sequence[WyckoffRepresentation],
                    train_structures: Sequence[Structure | str] | None = None,
                    train_formulas: Sequence[str] | None = None,
                    num_workers: int | None = 1) -> dict[str, float | list[str] | None]:
    """Uniqueness and novelty of the samples against ``train``.

    Wyckoff-level fractions are over Wyckoff-valid samples; structure-level ones over realised
    structures, and only computed when ``train_structures`` is given.
    """
    valid = samples.valid
    metrics: dict[str, float | list[str] | None] = {
        "wyckoff_unique": wyckoff_uniqueness(valid),
        "wyckoff_novel": fraction(sum(novel_representations(valid, train)), len(valid)),
        "template_novel": fraction(sum(novel_templates(valid, train)), len(valid)),
    }
    if train_structures is not None:
        structures = samples.realised
        novel, errors = novel_structures(structures, train_structures, train_formulas, num_workers)
        metrics["structure_unique"] = structure_uniqueness(structures, num_workers)
        metrics["structure_novel"] = fraction(sum(novel), len(structures))
        metrics["unreadable_reference_cifs"] = errors
    return metrics
