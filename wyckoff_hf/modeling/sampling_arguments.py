"""``generate``'s arguments, checked and turned into what the sampling loop consumes: group ids, element ids,
prompts, the composition search, conditions, the element-count range, the STOP shifts.

Each function takes the generator (``model``: its config, tables and generation config) and one argument, and
raises a ``ValueError`` naming the argument for anything the model cannot sample.
"""

import math
import operator
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch

from .composition_moves import CompositionMoves
from .configuration_wyckoff_transformer import DERIVED_INPUTS
from .site_constraints import PromptedSites


def integer(value: Any, argument: str) -> int:
    """A Python, numpy or 0-d torch integer as ``int``; a ValueError naming ``argument`` otherwise."""
    try:
        return operator.index(value)
    except TypeError:
        raise ValueError(f"{argument} must be an integer, got {value!r}") from None


def prompted_sites(model: Any, prompt: Any, num_samples: int, max_sites: int, tokenizer: Any) -> PromptedSites:
    """The prompts as one row of ids per sample, checked against the masks the model samples with."""
    config, tables = model.config, model.tables
    if not isinstance(prompt, Mapping):
        if tokenizer is None:
            raise ValueError("prompt: representations need tokenizer= to become ids (or pass the tokenizer's ids)")
        prompt = tokenizer(list(prompt) if isinstance(prompt, list | tuple) else [prompt])
    fields = ("space_group_ids", "element_ids", "site_symmetry_ids", "enumeration_ids")
    missing = [key for key in fields if key not in prompt]
    if missing:
        raise ValueError(f"prompt lacks {missing}: pass a WyckoffTokenizer's ids or WyckoffRepresentations")
    ids = {key: torch.as_tensor(prompt[key], dtype=torch.long, device=model.device)
           for key in (*fields, *(("attention_mask",) if "attention_mask" in prompt else ()))}
    ids = {key: value[None] if value.dim() == 1 else value for key, value in ids.items()}
    shapes = sorted({tuple(value.shape) for value in ids.values()})
    if len(shapes) != 1 or len(shapes[0]) != 2 or not shapes[0][1]:
        raise ValueError(f"prompt ids must be 1-D or 2-D, of one shape with at least one token, got {shapes}")
    if len(ids["element_ids"]) not in (1, num_samples):
        raise ValueError(f"prompt has {len(ids['element_ids'])} rows for {num_samples} samples: give one prompt "
                         "for all or one per sample")
    sizes = (config.space_group_vocab_size, config.element_vocab_size, config.site_symmetry_vocab_size,
             config.enumeration_vocab_size)
    for key, size in zip(fields, sizes, strict=True):
        outside = ((ids[key] < 0) | (ids[key] >= size)).nonzero()
        if len(outside):
            row, token = outside[0].tolist()
            raise ValueError(f"prompt {row}, token {token}: {key} {int(ids[key][row, token])} is not an id of "
                             f"the vocabulary (0-{size - 1})")
    group = ids["space_group_ids"][:, 0]
    prefix = (ids["element_ids"] > config.mask_token_id).long().cumprod(1)
    if "attention_mask" in ids:
        prefix *= ids["attention_mask"].ne(0).long().cumprod(1)
    not_group = (~tables.exists.flatten(1).any(1)[group]).nonzero()
    mixed = ((ids["space_group_ids"] != group[:, None]) & prefix.bool()).any(1).nonzero()
    if len(not_group) or len(mixed):
        row = int(torch.cat([not_group, mixed]).min())
        raise ValueError(f"prompt {row}: space-group ids {ids['space_group_ids'][row].tolist()} are not one space "
                         "group (id = number + 2) on every site")
    site_symmetry, enumeration = ids["site_symmetry_ids"], ids["enumeration_ids"]
    groups = group[:, None].expand_as(site_symmetry)
    inputs = {"space_group_ids": groups, "element_ids": ids["element_ids"], "site_symmetry_ids": site_symmetry,
              "enumeration_ids": enumeration,
              **{key: getattr(tables, key)[groups, site_symmetry, enumeration] for key in DERIVED_INPUTS}}
    model.cascade_steps(inputs, prefix, max_sites, name="prompt")
    return PromptedSites(*(value.expand(num_samples, *value.shape[1:]) for value in (
        group, ids["element_ids"], site_symmetry, enumeration, prefix.sum(1))))


def check_prompt_within_limits(model: Any, prompted: PromptedSites, element_allowed: torch.Tensor,
                               elements: tuple[int, int] | None, atoms: tuple[int, int, torch.Tensor] | None) -> None:
    """Refuse prompts that already break a limit checked on complete samples (allowed elements, the most distinct
    elements, the most atoms per primitive cell): sampling only adds sites, so rejection would never accept one."""
    config = model.config
    placed = torch.arange(prompted.element_ids.shape[1], device=model.device) < prompted.length[:, None]
    ids = prompted.element_ids.where(placed, config.stop_token_id)
    problems = [(~element_allowed[ids]).any(1), torch.zeros_like(placed[:, 0]), torch.zeros_like(placed[:, 0])]
    if elements is not None:
        present = torch.zeros(len(ids), config.element_vocab_size, dtype=torch.long, device=ids.device)
        problems[1] = present.scatter_add(1, ids, placed.long()).gt(0).sum(1) > elements[1]
    if atoms is not None:
        group = prompted.space_group[:, None].expand_as(ids)
        multiplicity = model.tables.multiplicity[group, prompted.site_symmetry_ids, prompted.enumeration_ids]
        problems[2] = (multiplicity * placed).sum(1) // atoms[2][prompted.space_group] > atoms[1]
    reasons = ("an element outside allowed_elements", f"more than num_elements_range's {elements and elements[1]} "
               "elements", f"more than num_atoms_range's {atoms and atoms[1]} atoms per primitive cell")
    for problem, reason in zip(problems, reasons, strict=True):
        if problem.any():
            raise ValueError(f"prompt {int(problem.nonzero()[0])} has {reason}: the prompt and the limits asked for "
                             "contradict each other")


def composition_moves(model: Any, composition: Mapping[str | int, int], max_atoms: int | None,
                       max_sites: int) -> CompositionMoves:
    """The reachability search of ``composition`` (elements in canonical order) within ``max_atoms`` atoms."""
    if not isinstance(composition, Mapping) or not composition:
        raise ValueError(f"composition must be a non-empty mapping {{element: count}}, got {composition!r}")
    counts: dict[int, int] = {}
    for element, count in composition.items():
        index = int(element_ids(model, [element], "composition")[0])
        if index in counts or integer(count, f"composition count of {element!r}") < 1:
            raise ValueError(f"composition: {element!r} needs one count of at least 1, got {count!r}")
        counts[index] = int(count)
    rank = model.tables.element_rank.tolist()
    elements = sorted(counts, key=rank.__getitem__)
    vocabulary = model.config.element_vocabulary
    name = "".join(f"{vocabulary[e] if vocabulary else e}{counts[e]}" for e in elements)
    if max_atoms is None:
        max_atoms = getattr(model.generation_config, "max_atoms", None) or 4 * model.config.max_sites
    max_atoms = integer(max_atoms, "max_atoms")
    if sum(counts.values()) > max_atoms:
        raise ValueError(f"composition {name} has {sum(counts.values())} atoms per formula unit, more than "
                         f"max_atoms={max_atoms}")
    return CompositionMoves(model.tables.wyckoff_positions.tolist(), elements, [counts[e] for e in elements],
                            max_atoms, max_sites, name)


def group_prior(model: Any, slot_groups: torch.Tensor | None, moves: CompositionMoves | None) -> torch.Tensor | None:
    """p(S) for slots without a group: the prior, under a composition restricted to the groups that can hold it
    (renormalised). With a group per slot, ``None``, after checking that each group can hold the composition."""
    offset = model.config.mask_token_id
    if slot_groups is not None:
        for group in slot_groups.unique().tolist() if moves is not None else ():
            if not moves.reachable_from_start(group):
                raise ValueError(f"composition {moves.name}: space group {group - offset} cannot hold it "
                                 f"({moves.limits})")
        return None
    prior = model.space_group_prior()
    if moves is not None:
        possible = [weight > 0 and moves.reachable_from_start(group) for group, weight in enumerate(prior.tolist())]
        prior = prior * torch.tensor(possible, dtype=prior.dtype, device=prior.device)
        if not prior.sum() > 0:
            raise ValueError(f"composition {moves.name}: no space group of the prior can hold it ({moves.limits})")
    return prior


def element_ids(model: Any, elements: Sequence[str | int] | None, argument: str) -> torch.Tensor | None:
    """Element symbols or element token ids → sorted unique ids; a ValueError names any unknown one."""
    if elements is None:
        return None
    first, vocabulary = model.config.mask_token_id + 1, model.config.element_vocabulary or []
    ids = set()
    for element in elements:
        index = vocabulary.index(element) if isinstance(element, str) and element in vocabulary else element
        if isinstance(index, str) or not first <= integer(index, argument) < model.config.element_vocab_size:
            raise ValueError(f"{argument}: {element!r} is not an element symbol or element id of the vocabulary")
        ids.add(int(index))
    if not ids:
        raise ValueError(f"{argument} is empty")
    return torch.tensor(sorted(ids), dtype=torch.long, device=model.device)


CONSTRAINT_SAMPLING = ("exact", "smc", "masked")


def sampling_mode(value: str, prompt: Any) -> str:
    """``generate``'s ``constraint_sampling``, checked: one of ``CONSTRAINT_SAMPLING``, and not sequential Monte
    Carlo with a prompt (a prompt's forced steps would enter the weights and the scores)."""
    if value not in CONSTRAINT_SAMPLING:
        raise ValueError(f"constraint_sampling must be one of {CONSTRAINT_SAMPLING}, got {value!r}")
    if value == "smc" and prompt is not None:
        raise ValueError("constraint_sampling='smc' is not combined with a prompt")
    return value


def element_range(model: Any, num_elements_range: Sequence[int] | None, composition: bool,
                  element_allowed: torch.Tensor, required: torch.Tensor | None,
                  max_sites: int) -> tuple[int, int] | None:
    """``(low, high)`` distinct elements per sample (default ``generation_config.num_elements_range``), or
    ``None`` when no range applies; a ``ValueError`` for a range no sample can meet."""
    if num_elements_range is None:
        if composition:
            return None
        num_elements_range = getattr(model.generation_config, "num_elements_range", None)
        if num_elements_range is None:
            return None
    elif composition:
        raise ValueError("num_elements_range is not combined with composition, which fixes the elements")
    if len(num_elements_range) != 2:
        raise ValueError(f"num_elements_range must be (low, high), got {num_elements_range!r}")
    low, high = (integer(value, "num_elements_range") for value in num_elements_range)
    elements = element_allowed.clone()
    elements[: model.config.mask_token_id + 1] = False
    if not 1 <= low <= high or low > min(max_sites, int(elements.sum())):
        raise ValueError(f"num_elements_range ({low}, {high}) needs 1 ≤ low ≤ high and low ≤ max_sites={max_sites} "
                         f"and ≤ the {int(elements.sum())} allowed elements")
    if required is not None and len(required) > high:
        raise ValueError(f"required_elements name {len(required)} elements, more than num_elements_range allows "
                         f"({high})")
    return low, high


def element_count_limits(model: Any, low: int, high: int,
                         element_allowed: torch.Tensor) -> tuple[int, int, torch.Tensor, torch.Tensor | None]:
    """``(low, high, elements, later)`` for the masks of ``ElementCountSites`` (``elements``: the allowed element
    ids as a mask; ``later``: in canonical order, per element id, how many allowed elements rank after it)."""
    elements = element_allowed.clone()
    elements[: model.config.mask_token_id + 1] = False
    if not model.tables.ordered:
        return low, high, elements, None
    rank = torch.where(elements, model.tables.element_rank.long(), -1)
    return low, high, elements, (rank[None, :] > rank[:, None]).sum(1)


def atom_range(model: Any, num_atoms_range: Sequence[int] | None) -> tuple[int, int, torch.Tensor] | None:
    """``(low, high, lattice_points)``: atoms per primitive cell (default ``generation_config.num_atoms_range``,
    the training split's range) and the lattice points per conventional cell of each space-group id
    (``generation_config.lattice_points``, written by training from the tokenizer); ``None`` without a range."""
    settings = model.generation_config
    if num_atoms_range is None:
        num_atoms_range = getattr(settings, "num_atoms_range", None)
        if num_atoms_range is None:
            return None
    if len(num_atoms_range) != 2:
        raise ValueError(f"num_atoms_range must be (low, high), got {num_atoms_range!r}")
    low, high = (integer(value, "num_atoms_range") for value in num_atoms_range)
    if not 1 <= low <= high:
        raise ValueError(f"num_atoms_range ({low}, {high}) needs 1 ≤ low ≤ high")
    lattice_points = getattr(settings, "lattice_points", None)
    if lattice_points is None or len(lattice_points) != model.config.space_group_vocab_size:
        raise ValueError("num_atoms_range needs generation_config.lattice_points, one per space-group id "
                         "(WyckoffTokenizer.lattice_points())")
    return low, high, torch.tensor(lattice_points, dtype=torch.long, device=model.device).clamp(min=1)


def acceptance_test(model: Any, required: torch.Tensor | None, allowed: torch.Tensor | None, max_sites: int | None,
                    elements: tuple[int, int] | None,
                    atoms: tuple[int, int, torch.Tensor] | None) -> tuple[Callable | None, list[str]]:
    """The test a complete sample must pass to be kept (exact conditioning by rejection), and the names of what it
    checks: every ``required`` element present, only ``allowed`` elements (a mask over element ids), at most
    ``max_sites`` sites, ``elements`` = (low, high) distinct elements, ``atoms`` = (low, high, lattice points)
    atoms per primitive cell. ``None`` when nothing is checked."""
    checks: list[Callable[[dict[str, torch.Tensor], torch.Tensor], torch.Tensor]] = []
    names = []
    if required is not None:
        names.append("required_elements")
        checks.append(lambda batch, site: (batch["element_ids"][:, :, None] == required).any(1).all(1))
    if allowed is not None:
        names.append("allowed_elements")
        checks.append(lambda batch, site: (allowed[batch["element_ids"]] | ~site).all(1))
    if max_sites is not None:
        names.append("max_sites")
        checks.append(lambda batch, site: site.sum(1) <= max_sites)
    if elements is not None:
        names.append("num_elements_range")

        def distinct_elements(batch: dict[str, torch.Tensor], site: torch.Tensor) -> torch.Tensor:
            present = torch.zeros(len(site), model.config.element_vocab_size, dtype=torch.long, device=site.device)
            count = present.scatter_add(1, batch["element_ids"], site.long()).gt(0).sum(1)
            return (elements[0] <= count) & (count <= elements[1])

        checks.append(distinct_elements)
    if atoms is not None:
        names.append("num_atoms_range")

        def primitive_atoms(batch: dict[str, torch.Tensor], site: torch.Tensor) -> torch.Tensor:
            count = (batch["multiplicity"] * site).sum(1) // atoms[2][batch["space_group_ids"][:, 0]]
            return (atoms[0] <= count) & (count <= atoms[1])

        checks.append(primitive_atoms)
    if not checks:
        return None, names
    mask_token_id = model.config.mask_token_id

    def accepts(batch: dict[str, torch.Tensor]) -> torch.Tensor:
        site = batch["element_ids"] > mask_token_id
        keep = checks[0](batch, site)
        for check in checks[1:]:
            keep &= check(batch, site)
        return keep

    return accepts, names


def condition_values(model: Any, condition: Mapping[str, float | Sequence[float]] | None,
                num_samples: int) -> torch.Tensor | None:
    """``generate``'s ``condition`` as ``(num_samples, len(config.condition_names))`` values, NaN for the
    names left out; ``None`` without a condition."""
    if condition is None:
        return None
    names = model.config.condition_names or []
    if not names:
        raise ValueError("condition given, but this model is not a conditional generator (no "
                         "config.condition_names)")
    if not isinstance(condition, Mapping) or not condition:
        raise ValueError(f"condition must be a non-empty mapping {{name: value}}, got {condition!r}")
    values = torch.full((num_samples, len(names)), math.nan, device=model.device)
    for name, value in condition.items():
        if name not in names:
            raise ValueError(f"condition {name!r} is not one this model was trained on: {names}")
        column = torch.as_tensor(value, dtype=torch.float32, device=model.device).flatten()
        if len(column) not in (1, num_samples) or not column.isfinite().all():
            raise ValueError(f"condition {name!r}: give one finite value, or one per sample ({num_samples}), "
                             f"got {value!r}")
        values[:, names.index(name)] = column
    return values


def space_group_ids(model: Any, space_group: int | Sequence[int] | None, num_samples: int) -> torch.Tensor | None:
    """Group numbers → ids (the three specials come first, so id = number + 2); ``None`` stays ``None``
    (each draw samples its group from the prior)."""
    if space_group is None:
        return None
    if isinstance(space_group, Iterable) and not isinstance(space_group, str):
        numbers = [integer(number, "space_group") for number in space_group]
    else:
        numbers = [integer(space_group, "space_group")] * num_samples
    if len(numbers) != num_samples:
        raise ValueError(f"space_group lists {len(numbers)} groups for {num_samples} samples")
    real = model.tables.exists.flatten(1).any(1)
    for number in numbers:
        index = number + model.config.mask_token_id
        if not 0 < index < len(real) or not real[index]:
            raise ValueError(f"space_group {number} is not a space group of this model's tables (1-230)")
    return torch.tensor(numbers, dtype=torch.long, device=model.device) + model.config.mask_token_id


def stop_shifts(model: Any, stop_logit_bias: Sequence[float] | None, max_sites: int) -> torch.Tensor | None:
    """``stop_logit_bias``, checked, as the element-logit shift of each token position (row ``k``: the STOP
    column holds entry ``k``, the last entry repeated, every other column 0), built once per ``generate``."""
    if stop_logit_bias is None:
        return None
    values = [float(value) for value in stop_logit_bias]
    if not values or not all(math.isfinite(value) for value in values):
        raise ValueError(f"stop_logit_bias must be a non-empty list of finite numbers, got {stop_logit_bias!r}")
    values = (values + values[-1:] * (max_sites + 1))[: max_sites + 1]
    shifts = torch.zeros(max_sites + 1, model.config.element_vocab_size, device=model.device)
    shifts[:, model.config.stop_token_id] = torch.tensor(values, device=model.device)
    return shifts
