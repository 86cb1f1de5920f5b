"""Which next sites keep a composition reachable: the exact decision behind ``generate(composition=...)`` and
crystal structure prediction (``CompositionSites`` applies it as a sampling constraint)."""

import functools
import itertools
import math
from collections import Counter
from collections.abc import Iterable, Sequence


class CompositionMoves:
    """Which next sites keep a composition reachable (``generate(composition=...)``, crystal structure prediction).

    Sites come in canonical order, so the elements of the composition come one after the other (in canonical order),
    each in one run of sites. A sample's state is ``(index, atoms, z, letter, used, sites)``: the element being placed
    (an index into ``elements``), its atoms so far, the number of formula units Z (``None`` until the first element is
    complete, then fixed), the letter index of its last site (its next site takes a letter at or after it), the used
    0-dof positions (a bit mask over the group's letters) and the number of sites. ``None`` is the empty start.

    A state is *reachable* when, for some allowed Z (Z × formula atoms ≤ ``max_atoms``), the current element's
    missing atoms fit on positions at or after its letter and every later element's Z × count atoms on any
    positions, each 0-dof position used once overall, within ``max_sites`` sites. Decided exactly: only the
    multiplicities of the free 0-dof positions matter, so a memoised search runs over how many of each
    multiplicity an element takes, and the rest of its atoms go on reusable (dof > 0) positions with the fewest
    sites (a coin-change table per group and letter floor). Masking the steps to reachable states means every
    sample ends with exactly the composition and none is rejected or cut short.
    """

    def __init__(self, wyckoff_positions: Sequence[Sequence[int]], elements: Sequence[int], counts: Sequence[int],
                 max_atoms: int, max_sites: int, name: str) -> None:
        self.elements, self.counts, self.name = list(elements), list(counts), name
        self.max_atoms, self.max_sites = max_atoms, max_sites
        self.max_z = max_atoms // sum(counts)
        self.limits = f"Z ≥ 1 formula units, at most max_atoms={max_atoms} atoms and max_sites={max_sites} sites"
        # group id → its positions in letter order as (site symmetry id, enumeration id, multiplicity, dof)
        self.positions: dict[int, list[tuple[int, int, int, int]]] = {}
        for group, site_symmetry, enumeration, multiplicity, dof in wyckoff_positions:
            self.positions.setdefault(group, []).append((site_symmetry, enumeration, multiplicity, dof))
        self.letter = {group: {(row[0], row[1]): index for index, row in enumerate(rows)}
                       for group, rows in self.positions.items()}
        self.moves = functools.cache(self._moves)
        self.reachable = functools.cache(self._reachable)
        self._rest = functools.cache(self._rest_uncached)
        self._fewest_sites = functools.cache(self._fewest_sites_uncached)
        self._free_fixed = functools.cache(self._free_fixed_uncached)

    def reachable_from_start(self, group: int) -> bool:
        """Whether space-group id ``group`` can hold the composition at all."""
        if group not in self.positions:
            return False
        free = self._free_fixed(group, 0, 0)
        return any(self._rest(group, 0, free, self.max_sites, z) for z in range(1, self.max_z + 1))

    def advance(self, group: int, state: tuple | None, element: int, site_symmetry: int, enumeration: int) -> tuple:
        """The state after placing ``element`` on the position (``site_symmetry``, ``enumeration``)."""
        index, atoms, z, _, used, sites = state or (-1, 0, None, 0, 0, 0)
        letter = self.letter[group][site_symmetry, enumeration]
        _, _, multiplicity, dof = self.positions[group][letter]
        used |= 0 if dof else 1 << letter
        if index >= 0 and element == self.elements[index]:
            return (index, atoms + multiplicity, z, letter, used, sites + 1)
        return (index + 1, multiplicity, self._whole(index, atoms, z) if index >= 0 else None, letter, used, sites + 1)

    def atoms(self, state: tuple | None) -> int:
        """The atoms placed in ``state``: Z × count of each complete element and the current element's atoms."""
        index, atoms, z, *_ = state or (-1, 0, None)
        return atoms + (z * sum(self.counts[:index]) if index > 0 else 0)

    def _moves(self, group: int, state: tuple | None) -> tuple[bool, dict[int, tuple[tuple[int, int], ...]]]:
        """Whether STOP keeps the composition (it is complete) and, per element id, the (site symmetry,
        enumeration) ids of the next sites after which it stays reachable."""
        index, atoms, z, floor, used, sites = state or (-1, 0, None, 0, 0, 0)
        whole = self._whole(index, atoms, z) if index >= 0 else None
        options: dict[int, list[tuple[int, int]]] = {}
        for letter, (site_symmetry, enumeration, multiplicity, dof) in enumerate(self.positions[group]):
            if used >> letter & 1:
                continue
            now_used = used | (0 if dof else 1 << letter)
            if index >= 0 and letter >= floor and self.reachable(
                    group, (index, atoms + multiplicity, z, letter, now_used, sites + 1)):
                options.setdefault(self.elements[index], []).append((site_symmetry, enumeration))
            if index + 1 < len(self.counts) and (index < 0 or whole is not None) and self.reachable(
                    group, (index + 1, multiplicity, whole, letter, now_used, sites + 1)):
                options.setdefault(self.elements[index + 1], []).append((site_symmetry, enumeration))
        stop = index == len(self.counts) - 1 and whole is not None
        return stop, {element: tuple(positions) for element, positions in options.items()}

    def _whole(self, index: int, atoms: int, z: int | None) -> int | None:
        """Z if element ``index`` is complete with ``atoms`` atoms (for the first element, any allowed Z), else None."""
        if z is not None:
            return z if z * self.counts[index] == atoms else None
        units, remainder = divmod(atoms, self.counts[index])
        return units if not remainder and 1 <= units <= self.max_z else None

    def _reachable(self, group: int, state: tuple) -> bool:
        index, atoms, z, floor, used, sites = state
        usable, free = self._free_fixed(group, used, floor), self._free_fixed(group, used, 0)
        fewest, budget = self._fewest_sites(group, floor), self.max_sites - sites
        first_z = max(1, -(-atoms // self.counts[index]))
        for units in [z] if z is not None else range(first_z, self.max_z + 1):
            for taken, extra in self._fills(usable, fewest, units * self.counts[index] - atoms, budget):
                if self._rest(group, index + 1, _without(free, taken), budget - extra, units):
                    return True
        return False

    def _rest_uncached(self, group: int, index: int, free: tuple[tuple[int, int], ...], budget: int, z: int) -> bool:
        """Whether elements ``index``... fit whole (Z × count atoms each) on the free 0-dof positions ``free``
        ((multiplicity, how many) pairs) and the reusable positions, within ``budget`` sites."""
        if index == len(self.counts):
            return True
        return any(self._rest(group, index + 1, _without(free, taken), budget - sites, z)
                   for taken, sites in self._fills(free, self._fewest_sites(group, 0), z * self.counts[index], budget))

    @staticmethod
    def _fills(usable: tuple[tuple[int, int], ...], fewest: list[float], atoms: int,
               budget: int) -> Iterable[tuple[dict[int, int], int]]:
        """The ways to hold ``atoms`` atoms within ``budget`` sites: some of the ``usable`` 0-dof positions (how many
        of each multiplicity) and the rest on the fewest reusable sites; each with its number of sites."""
        for taken in itertools.product(*(range(count + 1) for _, count in usable)):
            fixed_atoms = sum(number * multiplicity for number, (multiplicity, _) in zip(taken, usable, strict=True))
            if fixed_atoms <= atoms and sum(taken) + fewest[atoms - fixed_atoms] <= budget:
                yield (dict(zip((m for m, _ in usable), taken, strict=True)),
                       sum(taken) + int(fewest[atoms - fixed_atoms]))

    def _fewest_sites_uncached(self, group: int, floor: int) -> list[float]:
        """For 0..max_atoms atoms, the fewest sites on reusable positions at or after letter ``floor`` that hold
        them (``inf``: none can)."""
        sizes = {m for letter, (_, _, m, dof) in enumerate(self.positions[group]) if dof and letter >= floor}
        fewest = [0.0] + [math.inf] * self.max_atoms
        for atoms in range(1, self.max_atoms + 1):
            fewest[atoms] = min((fewest[atoms - m] + 1 for m in sizes if m <= atoms), default=math.inf)
        return fewest

    def _free_fixed_uncached(self, group: int, used: int, floor: int) -> tuple[tuple[int, int], ...]:
        """The unused 0-dof positions at or after letter ``floor``, as (multiplicity, how many) pairs."""
        counts = Counter(m for letter, (_, _, m, dof) in enumerate(self.positions[group])
                         if not dof and letter >= floor and not used >> letter & 1)
        return tuple(sorted(counts.items()))


def _without(free: tuple[tuple[int, int], ...], taken: dict[int, int]) -> tuple[tuple[int, int], ...]:
    """``free`` (multiplicity, how many) pairs less ``taken`` (how many per multiplicity)."""
    return tuple((m, count - taken.get(m, 0)) for m, count in free if count > taken.get(m, 0))
