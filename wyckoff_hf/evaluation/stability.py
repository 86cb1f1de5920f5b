"""Optional stability proxy: CHGNet energies of the generated structures against the reference.

CHGNet (Deng et al., Nature Machine Intelligence 2023) is a universal interatomic potential trained on
Materials Project relaxations; its energy per atom of an *unrelaxed* structure is a cheap proxy for
how physical the structure is (pyxtal's random free parameters and lattices are far from minima, so
absolute values are high; compare models, not against DFT). Install with ``pip install
wyckoff-hf[stability]``. Without it, the metrics carry a ``skipped`` message instead of numbers.
"""

from __future__ import annotations

import importlib.util
from collections import defaultdict
from collections.abc import Callable, Sequence

import numpy as np
from pymatgen.core import Structure
from scipy.stats import wasserstein_distance

from ..tokenization import load_structure

EnergyFunction = Callable[[Sequence[Structure]], list[float]]

SKIP_MESSAGE = ("skipped: the optional package chgnet is not installed "
                "(pip install 'wyckoff-hf[stability]' to compute CHGNet energies)")


def chgnet_available() -> bool:
    return importlib.util.find_spec("chgnet") is not None


def chgnet_energies(structures: Sequence[Structure]) -> list[float]:
    """CHGNet's static energy per atom (eV/atom) of each structure, batched, no relaxation."""
    from chgnet.model import CHGNet

    model = CHGNet.load(verbose=False)
    predictions = model.predict_structure(list(structures), task="e", batch_size=64)
    if isinstance(predictions, dict):  # CHGNet unwraps a one-structure batch
        predictions = [predictions]
    return [float(p["e"]) for p in predictions]


def stability_metrics(structures: Sequence[Structure], reference: Sequence[Structure | str],
                      energy_fn: EnergyFunction | None = None) -> dict[str, object]:
    """Energy per atom of generated and reference structures and two proxies comparing them.

    - ``energy_per_atom_mean`` / ``energy_per_atom_reference_mean`` (eV/atom);
    - ``energy_wasserstein``: Wasserstein-1 distance between the two energy distributions;
    - ``energy_above_reference_mean``: over generated structures whose reduced formula occurs in the
      reference, the mean of (own energy − lowest reference energy of that formula), with
      ``energy_above_reference_count`` such structures.

    ``reference`` holds Structures or CIF texts (parsed only when energies are computed). ``energy_fn``
    maps structures to energies per atom (CHGNet by default); when it is the default and chgnet is not
    importable, the result is ``{"skipped": SKIP_MESSAGE}``.
    """
    if energy_fn is None:
        if not chgnet_available():
            return {"skipped": SKIP_MESSAGE}
        energy_fn = chgnet_energies
    if not structures or not reference:
        return {"skipped": "skipped: no generated or no reference structures to compare"}
    reference = [load_structure(item) for item in reference]
    generated, known = energy_fn(structures), energy_fn(reference)
    lowest: dict[str, float] = defaultdict(lambda: np.inf)
    for structure, energy in zip(reference, known, strict=True):
        formula = structure.composition.reduced_formula
        lowest[formula] = min(lowest[formula], energy)
    above = [energy - lowest[s.composition.reduced_formula]
             for s, energy in zip(structures, generated, strict=True) if s.composition.reduced_formula in lowest]
    return {
        "energy_per_atom_mean": float(np.mean(generated)),
        "energy_per_atom_reference_mean": float(np.mean(known)),
        "energy_wasserstein": float(wasserstein_distance(generated, known)),
        "energy_above_reference_mean": float(np.mean(above)) if above else None,
        "energy_above_reference_count": len(above),
    }
