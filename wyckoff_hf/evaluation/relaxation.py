"""CHGNet relaxation of sampled Wyckoff representations, the way the WyckoffTransformer authors evaluate stability.

A Wyckoff representation fixes the space group and the occupied orbits but not the free coordinates or
the lattice, so one pyxtal realisation is one random guess. Each representation therefore gets
``num_trials`` pyxtal realisations (``to_structure(seed=...)``, seeds derived from the sample index and
the trial, so the result is independent of worker count and order), each relaxed with CHGNet
(Deng et al., Nature Machine Intelligence 2023) under ASE's ``FixSymmetry`` constraint, first at fixed
cell and then with cell and positions (``FrechetCellFilter``), until the largest force is below ``fmax``
(0.02 eV/Å) or ``max_steps`` (500, both stages together) are spent; the lowest-energy trial is kept.
Fixing the symmetry keeps the sampled group (the thing the model chose) and lowers the degrees of freedom
FIRE has to explore; it can miss a lower-energy, lower-symmetry minimum, which is why the space group
after relaxation is measured anyway (spglib at the tokenizer's tolerance).

Each trial relaxes the primitive cell of the pyxtal structure (spglib's, ``primitive_cell``). With the
symmetry fixed this is the same minimisation: the centring translations are symmetry operations the constraint
keeps anyway. It has half or a quarter of the atoms of a centred conventional cell, and 58 % of the shipped
model's samples are centred: 6 centred samples relaxed 1.5x faster to energies within 0.3 meV/atom and to the
same space groups.

Speed shortcuts, each optional and measured by ``scripts/benchmarks/benchmark_stability.py`` and the
README's protocol comparison: ``screen_fmax`` relaxes every trial only loosely (``screen_fmax``,
``screen_steps``) and continues only the ``screen_refine`` lowest of them to ``fmax``; ``refine_below``
(eV/atom above the hull, needs the hull) skips the refinement of a loosely relaxed trial that is clearly
unstable. Screening is biased low: on 100 samples its S.U.N. was 3-6 points under the full protocol's (which
itself moved by 2 points with other pyxtal trials), because a trial relaxed loosely and then refined can end
in a higher minimum than the same trial relaxed directly; refining the two lowest trials recovered 1 point.
``device`` runs CHGNet on an accelerator; it changes where, not what, so it is not part of a cache key. Every
failure (pyxtal, CHGNet, time limit) is kept with its reason; a sample fails only when all its trials fail.

``rank_by_energy`` relaxes crystal structure predictions (``wyckoff-hf csp --relax``) and ranks them by energy per
atom: polymorphs of one composition compare without a hull.

A relaxation run takes hours on a few cores, so ``relax_samples`` can keep each finished sample in a cache
folder (one JSON file per sample, written as soon as the sample's result arrives, named by a hash of the
representation, its index and the protocol): a run that is interrupted, or split between machines, resumes
where it stopped and relaxes only what is missing. The file is written by the process that asked for the work,
not by the worker, so the workers of a Dask cluster (``utils.cluster``) need no access to the folder.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import multiprocessing
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from ..tokenization import WyckoffError, WyckoffRepresentation
from ..tokenization.time_limit import TimeLimitExceeded, time_limit
from ..utils.parallel import parallel_as_completed

if TYPE_CHECKING:
    from ase import Atoms
    from chgnet.model import CHGNet
    from pymatgen.core import Structure

    from ..generation.csp import StructurePrediction

SYMPREC = 0.1  # Å, the tokenizer's tolerance: the space group "after relaxation" is the one it would read
SCREEN_FMAX = 0.1  # eV/Å, the loose screening stage ``wyckoff-hf evaluate --stability-screen`` uses


@dataclass(frozen=True)
class RelaxationSettings:
    """One relaxation protocol. The defaults are the full protocol (the authors use ``num_trials=6``)."""

    num_trials: int = 3
    fmax: float = 0.02  # eV/Å
    max_steps: int = 500  # FIRE steps per trial, fixed-cell and variable-cell stages together
    fix_symmetry: bool = True
    relax_cell: bool = True
    primitive_cell: bool = True  # relax spglib's primitive cell of each pyxtal realisation
    screen_fmax: float | None = None  # relax all trials to this first, refine only the lowest screen_refine
    screen_steps: int = 100
    screen_refine: int = 1  # loosely relaxed trials (lowest energy first) continued to fmax
    refine_below: float | None = None  # eV/atom above hull: refine only a screened sample that could be this stable
    timeout: float = 600.0  # seconds per sample, a safety net (SIGALRM)
    seed: int = 0
    pyxtal_attempts: int = 10
    device: str = "cpu"  # where CHGNet runs (torch device name): not part of the protocol

    def __post_init__(self) -> None:
        if self.num_trials < 1 or self.max_steps < 1 or self.screen_steps < 1:
            raise ValueError(f"num_trials, max_steps and screen_steps must be at least 1, got {self}")
        if not 1 <= self.screen_refine <= self.num_trials:
            raise ValueError(f"screen_refine must be between 1 and num_trials={self.num_trials}, "
                             f"got {self.screen_refine}")
        if self.fmax <= 0 or (self.screen_fmax is not None and self.screen_fmax <= self.fmax):
            raise ValueError(f"need 0 < fmax < screen_fmax, got fmax={self.fmax}, screen_fmax={self.screen_fmax}")
        if self.refine_below is not None and self.screen_fmax is None:
            raise ValueError("refine_below decides after the screening stage: set screen_fmax as well")

    def trial_seed(self, index: int, trial: int) -> int:
        """pyxtal seed of one trial of sample ``index``: a function of (seed, index, trial) only."""
        return int(np.random.SeedSequence([self.seed, index, trial]).generate_state(1)[0])

    def protocol(self) -> dict[str, object]:
        """The settings that decide a result: all but ``device``, which only moves the arithmetic."""
        return {key: value for key, value in asdict(self).items() if key != "device"}


@dataclass
class Relaxed:
    """The kept (lowest-energy) trial of one sample."""

    index: int
    structure: Structure
    energy: float  # CHGNet total energy, eV
    trial: int
    steps: int  # FIRE steps of the kept trial
    converged: bool  # the kept trial reached fmax (a screened-out sample stops at screen_fmax)
    space_group_sampled: int
    space_group_relaxed: int | None  # None: spglib found none at SYMPREC
    seconds: float
    trial_failures: list[str] = field(default_factory=list)

    @property
    def energy_per_atom(self) -> float:
        return self.energy / len(self.structure)

    @property
    def space_group_kept(self) -> bool:
        return self.space_group_relaxed == self.space_group_sampled


@dataclass(frozen=True)
class RelaxationFailure:
    index: int
    reason: str


@cache
def load_chgnet() -> CHGNet:
    """The pretrained CHGNet shipped in chgnet's wheel (no download), loaded once per process.

    Inside a pool worker torch gets one thread: the pool is the parallelism, and oversubscribed threads
    only slow every worker down.
    """
    import torch
    from chgnet.model import CHGNet

    if multiprocessing.parent_process() is not None:
        torch.set_num_threads(1)
    return CHGNet.load(verbose=False)


def static_energies(structures: Sequence[Structure], batch_size: int = 32) -> list[float]:
    """CHGNet total energies (eV) of fixed structures, batched: the cheap single-point stage."""
    if not structures:
        return []
    predictions = load_chgnet().predict_structure(list(structures), task="e", batch_size=batch_size)
    if isinstance(predictions, dict):  # CHGNet unwraps a one-structure batch
        predictions = [predictions]
    return [float(p["e"]) * len(s) for p, s in zip(predictions, structures, strict=True)]


def _atoms(structure: Structure, fix_symmetry: bool, device: str) -> Atoms:
    from ase.constraints import FixSymmetry
    from chgnet.model.dynamics import CHGNetCalculator
    from pymatgen.io.ase import AseAtomsAdaptor

    atoms = AseAtomsAdaptor.get_atoms(structure)
    with contextlib.redirect_stdout(io.StringIO()):  # it prints the device on every construction
        atoms.calc = CHGNetCalculator(load_chgnet(), use_device=device, on_isolated_atoms="ignore")
    if fix_symmetry:
        atoms.set_constraint(FixSymmetry(atoms, symprec=1e-3))
    return atoms


def _run_fire(system: object, fmax: float, steps: int) -> tuple[int, bool]:
    """FIRE on ``system`` (atoms or a cell filter); the steps taken and whether ``fmax`` was reached."""
    from ase.optimize import FIRE

    if steps <= 0:
        return 0, False
    optimizer = FIRE(system, logfile=None)
    converged = bool(optimizer.run(fmax=fmax, steps=steps))
    return optimizer.nsteps, converged


def relax_atoms(atoms: Atoms, fmax: float, max_steps: int, relax_cell: bool) -> tuple[int, bool]:
    """Relax in place: positions at fixed cell, then cell and positions; ``max_steps`` for both together."""
    from ase.filters import FrechetCellFilter

    steps, converged = _run_fire(atoms, fmax, max_steps)
    if relax_cell:
        more, converged = _run_fire(FrechetCellFilter(atoms), fmax, max_steps - steps)
        steps += more
    return steps, converged


def relax_structure(structure: Structure, fmax: float = 0.02, max_steps: int = 500, fix_symmetry: bool = True,
                    relax_cell: bool = True, device: str = "cpu") -> tuple[Structure, float, int, bool]:
    """One CHGNet relaxation: the relaxed structure, its total energy (eV), steps taken, converged."""
    from pymatgen.io.ase import AseAtomsAdaptor

    atoms = _atoms(structure, fix_symmetry, device)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        steps, converged = relax_atoms(atoms, fmax, max_steps, relax_cell)
        energy = float(atoms.get_potential_energy())
    atoms.set_constraint()
    return AseAtomsAdaptor.get_structure(atoms), energy, steps, converged


def primitive_cell(structure: Structure) -> Structure:
    """spglib's primitive cell of a symmetric structure (pyxtal's are exact, hence the tight tolerance)."""
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    return SpacegroupAnalyzer(structure, symprec=1e-3).find_primitive()


def relaxed_space_group(structure: Structure) -> int | None:
    """The space group spglib finds at the tokenizer's tolerance, or ``None`` when it finds none."""
    try:
        return WyckoffRepresentation.from_structure(structure, symprec=SYMPREC).space_group
    except WyckoffError:
        return None


EnergyAboveHull = Callable[["Structure", float], float]


class _Trial(NamedTuple):
    structure: Structure
    energy: float
    steps: int
    converged: bool
    trial: int

    @property
    def energy_per_atom(self) -> float:
        return self.energy / len(self.structure)


def _refine_screened(trials: Sequence[_Trial], settings: RelaxationSettings,
                     e_above_hull: EnergyAboveHull | None) -> _Trial:
    """Continue the ``settings.screen_refine`` lowest loosely relaxed trials to ``fmax``; the lowest refined one.

    With ``refine_below`` and a hull, a trial whose loose energy above hull exceeds it is not refined; when no
    trial is left, the lowest loose one is kept, unconverged (screened out).
    """
    ranked = sorted(trials, key=lambda t: t.energy_per_atom)
    refined = []
    for loose in ranked[:settings.screen_refine]:
        if settings.refine_below is not None and e_above_hull is not None and \
                e_above_hull(loose.structure, loose.energy) > settings.refine_below:
            continue
        structure, energy, more, converged = relax_structure(
            loose.structure, settings.fmax, max(1, settings.max_steps - loose.steps), settings.fix_symmetry,
            settings.relax_cell, settings.device)
        refined.append(_Trial(structure, energy, loose.steps + more, converged, loose.trial))
    if not refined:
        return ranked[0]._replace(converged=False)
    return min(refined, key=lambda t: t.energy_per_atom)


def relax_representation(representation: WyckoffRepresentation, index: int, settings: RelaxationSettings,
                         e_above_hull: EnergyAboveHull | None = None) -> Relaxed | RelaxationFailure:
    """Sample ``index``: ``num_trials`` pyxtal realisations relaxed, the lowest-energy one kept.

    With ``settings.screen_fmax`` the trials are relaxed loosely and the lowest ones refined
    (``_refine_screened``). ``e_above_hull(structure, total_energy)`` is needed only for
    ``settings.refine_below``. When the time limit strikes, the best finished trial is kept (unconverged, with
    the reason among its trial failures). A sample with no finished trial is a failure, returned (never
    raised) so one bad sample never stops a pool.
    """
    start = time.perf_counter()
    screening = settings.screen_fmax is not None
    fmax = settings.screen_fmax if screening else settings.fmax
    steps = settings.screen_steps if screening else settings.max_steps
    trials: list[_Trial] = []
    failures: list[str] = []
    kept = None
    try:
        with time_limit(settings.timeout):
            for trial in range(settings.num_trials):
                try:
                    initial = representation.to_structure(seed=settings.trial_seed(index, trial),
                                                          max_attempts=settings.pyxtal_attempts, timeout=None)
                    if settings.primitive_cell:
                        initial = primitive_cell(initial)
                    trials.append(_Trial(*relax_structure(initial, fmax, steps, settings.fix_symmetry,
                                                          settings.relax_cell, settings.device), trial))
                except Exception as err:  # pyxtal and CHGNet raise assorted errors; record and go on
                    failures.append(f"trial {trial}: {type(err).__name__}: {err}")
            if trials and screening:
                kept = _refine_screened(trials, settings, e_above_hull)
            else:
                kept = min(trials, key=lambda t: t.energy_per_atom, default=None)
    except TimeLimitExceeded:
        failures.append(f"time: the {settings.timeout} s limit struck; kept the best finished trial")
        kept = min(trials, key=lambda t: t.energy_per_atom, default=None)
        kept = kept and kept._replace(converged=False)
    if kept is None:
        return RelaxationFailure(index, "; ".join(failures))
    return Relaxed(index, kept.structure, kept.energy, kept.trial, kept.steps, kept.converged,
                   representation.space_group, relaxed_space_group(kept.structure), time.perf_counter() - start,
                   failures)


class RelaxationCache:
    """Finished samples of one protocol as JSON files in ``folder``, so that an interrupted run resumes.

    A file's name hashes the representation, the sample index (it seeds the trials) and the protocol (every
    setting but the device), so a result is reused only for exactly the same job. Files are written whole
    (temporary name, then rename): a worker killed mid-write leaves no half file. A file that cannot be read is
    relaxed again, with a warning.
    """

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        if self.folder.exists() and not self.folder.is_dir():
            raise ValueError(f"relaxation cache {self.folder}: exists and is not a folder")
        self.folder.mkdir(parents=True, exist_ok=True)

    def path(self, representation: WyckoffRepresentation, index: int, settings: RelaxationSettings) -> Path:
        job = json.dumps([representation.to_dict(), index, settings.protocol()], sort_keys=True)
        return self.folder / f"{index:06d}-{hashlib.sha256(job.encode()).hexdigest()[:16]}.json"

    def load(self, representation: WyckoffRepresentation, index: int, settings: RelaxationSettings
             ) -> Relaxed | RelaxationFailure | None:
        path = self.path(representation, index, settings)
        if not path.exists():
            return None
        try:
            return _from_json(json.loads(path.read_text()))
        except (OSError, ValueError, KeyError, TypeError) as err:
            warnings.warn(f"relaxation cache {path}: unreadable ({type(err).__name__}: {err}); relaxing sample "
                          f"{index} again", stacklevel=2)
            return None

    def store(self, representation: WyckoffRepresentation, index: int, settings: RelaxationSettings,
              result: Relaxed | RelaxationFailure) -> None:
        from monty.json import MontyEncoder  # CHGNet leaves numpy scalars in the structure's site properties

        path = self.path(representation, index, settings)
        partial = path.with_suffix(".partial")
        partial.write_text(json.dumps(_to_json(result), cls=MontyEncoder))
        partial.replace(path)


def _to_json(result: Relaxed | RelaxationFailure) -> dict[str, object]:
    if isinstance(result, RelaxationFailure):
        return {"failure": asdict(result)}
    fields = {key: value for key, value in vars(result).items() if key != "structure"}
    return {"relaxed": fields, "structure": result.structure.as_dict()}


def _from_json(data: dict[str, object]) -> Relaxed | RelaxationFailure:
    from pymatgen.core import Structure

    if "failure" in data:
        return RelaxationFailure(**data["failure"])
    return Relaxed(structure=Structure.from_dict(data["structure"]), **data["relaxed"])


def _relax_job(job: tuple[WyckoffRepresentation, int, RelaxationSettings, EnergyAboveHull | None]
               ) -> Relaxed | RelaxationFailure:
    return relax_representation(*job)


def relax_samples(representations: Sequence[WyckoffRepresentation], settings: RelaxationSettings | None = None,
                  indices: Sequence[int] | None = None, num_workers: int | None = 1,
                  e_above_hull: EnergyAboveHull | None = None,
                  cache_dir: str | Path | None = None) -> list[Relaxed | RelaxationFailure]:
    """Relax every representation (``indices[k]``, default ``k``, names it and seeds it) over a process pool (or
    the Dask cluster of ``utils.cluster.connect``), one sample per task, with a progress bar. ``e_above_hull``
    must be picklable for a pool. With ``cache_dir`` (a ``RelaxationCache`` folder) finished samples are read
    from it and each new one is written to it as it completes, so an interrupt loses no finished sample."""
    settings = settings or RelaxationSettings()
    indices = list(range(len(representations))) if indices is None else list(indices)
    relaxation_cache = None if cache_dir is None else RelaxationCache(cache_dir)
    results: dict[int, Relaxed | RelaxationFailure] = {}
    jobs = []
    for position, (rep, index) in enumerate(zip(representations, indices, strict=True)):
        cached = relaxation_cache and relaxation_cache.load(rep, index, settings)
        if cached is not None:
            results[position] = cached
        else:
            jobs.append((position, (rep, index, settings, e_above_hull)))
    # CUDA cannot be used in a forked child of a process that has touched it (``check_device`` has): fresh workers
    start_method = None if settings.device == "cpu" else "spawn"
    for position, result in parallel_as_completed(_relax_job, jobs, num_workers, desc="CHGNet relaxation",
                                                  total=len(representations), start_method=start_method):
        results[position] = result
        if relaxation_cache is not None:
            relaxation_cache.store(representations[position], indices[position], settings, result)
    return [results[position] for position in range(len(representations))]


@dataclass(frozen=True)
class RelaxedPrediction:
    """A prediction after CHGNet relaxation: energy per atom (``None`` when every trial failed, ``failure`` says
    why) and the space group spglib finds in the relaxed cell (``None``: none at the tokenizer's symprec)."""

    prediction: StructurePrediction
    energy_per_atom: float | None
    space_group_relaxed: int | None
    failure: str | None = None


def rank_by_energy(predictions: Sequence[StructurePrediction], num_workers: int | None = None, seed: int = 0,
                   ) -> list[RelaxedPrediction]:
    """Relax every prediction with CHGNet under ``evaluate --stability-screen``'s protocol (three pyxtal trials
    relaxed loosely, the lowest refined to 0.02 eV/Å, symmetry kept) over ``num_workers`` processes and order them
    by energy per atom, lowest first; failures go last, in the model's order."""
    settings = RelaxationSettings(screen_fmax=SCREEN_FMAX, seed=seed)
    results = relax_samples([p.representation for p in predictions], settings, num_workers=num_workers)
    relaxed = [RelaxedPrediction(p, r.energy_per_atom, r.space_group_relaxed) if isinstance(r, Relaxed)
               else RelaxedPrediction(p, None, None, r.reason) for p, r in zip(predictions, results, strict=True)]
    return sorted(relaxed, key=lambda r: math.inf if r.energy_per_atom is None else r.energy_per_atom)
