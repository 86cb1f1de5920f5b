"""The sampler's constraints: each narrows what ``generate`` may choose next, the way transformers' logits
processors shape the logits of a language model's next token.

A constraint is a small object with one interface, called by the sampling loop at every token for the rows
still sampling (``rows``: indices into the batch it was built for):

- ``restrict_elements(allowed, rows, position)``: the element (or STOP) mask of token ``position``;
- ``restrict_positions(available, rows, position, element)``: the (site symmetry, enumeration) mask of the
  site just given its ``element``;
- ``place(rows, element, site_symmetry, enumeration)``: record the site that was sampled;
- ``resample(ancestors)``: row ``i`` continues as a copy of row ``ancestors[i]`` (sequential Monte Carlo).

They return narrowed masks and never touch logits: which probability the sampler then gives the surviving
choices (renormalised masking, or an exact method on top) is ``generate``'s business, and its docstring says
what each option samples. ``SiteConstraintList`` composes them in order.
"""

from dataclasses import dataclass

import torch
from torch.nn import functional as F

from .composition_moves import CompositionMoves
from .configuration_wyckoff_transformer import WyckoffTransformerConfig


class SiteConstraint:
    """The interface; a constraint overrides the steps it restricts (the defaults leave the masks alone)."""

    def restrict_elements(self, allowed: torch.Tensor, rows: torch.Tensor, position: int) -> torch.Tensor:
        return allowed

    def restrict_positions(self, available: torch.Tensor, rows: torch.Tensor, position: int,
                           element: torch.Tensor) -> torch.Tensor:
        return available

    def place(self, rows: torch.Tensor, element: torch.Tensor, site_symmetry: torch.Tensor,
              enumeration: torch.Tensor) -> None:
        """Nothing to record by default."""

    def resample(self, ancestors: torch.Tensor) -> None:
        """Nothing to copy by default (a constraint without per-row state)."""


class SiteConstraintList(list):
    """Constraints applied one after the other, as one (transformers' ``LogitsProcessorList`` for masks)."""

    def restrict_elements(self, allowed: torch.Tensor, rows: torch.Tensor, position: int) -> torch.Tensor:
        for constraint in self:
            allowed = constraint.restrict_elements(allowed, rows, position)
        return allowed

    def restrict_positions(self, available: torch.Tensor, rows: torch.Tensor, position: int,
                           element: torch.Tensor) -> torch.Tensor:
        for constraint in self:
            available = constraint.restrict_positions(available, rows, position, element)
        return available

    def place(self, rows: torch.Tensor, element: torch.Tensor, site_symmetry: torch.Tensor,
              enumeration: torch.Tensor) -> None:
        for constraint in self:
            constraint.place(rows, element, site_symmetry, enumeration)

    def resample(self, ancestors: torch.Tensor) -> None:
        for constraint in self:
            constraint.resample(ancestors)


@dataclass
class PromptedSites(SiteConstraint):
    """Prompts of a batch, one row per sample: the group, and the first ``length`` sites that the sampler takes as
    given. Their masks are one-hot, so the sampler makes no encoder pass for them and adds nothing to the score:
    ``sequences_scores`` is the log-probability of the completion given the prompt."""

    space_group: torch.Tensor
    element_ids: torch.Tensor
    site_symmetry_ids: torch.Tensor
    enumeration_ids: torch.Tensor
    length: torch.Tensor

    def take(self, slots: torch.Tensor) -> "PromptedSites":
        return PromptedSites(self.space_group[slots], self.element_ids[slots], self.site_symmetry_ids[slots],
                             self.enumeration_ids[slots], self.length[slots])

    def restrict_elements(self, allowed: torch.Tensor, rows: torch.Tensor, position: int) -> torch.Tensor:
        forced = self.length[rows] > position
        if forced.any():
            allowed[forced] &= F.one_hot(self.element_ids[rows[forced], position], allowed.shape[-1]).bool()
        return allowed

    def restrict_positions(self, available: torch.Tensor, rows: torch.Tensor, position: int,
                           element: torch.Tensor) -> torch.Tensor:
        forced = (self.length[rows] > position).nonzero().squeeze(1)
        if not len(forced):
            return available
        mask = torch.zeros_like(available[forced])
        mask[torch.arange(len(forced), device=mask.device), self.site_symmetry_ids[rows[forced], position],
             self.enumeration_ids[rows[forced], position]] = True
        available[forced] &= mask
        return available


class ElementCountSites(SiteConstraint):
    """Masks that keep the number of distinct elements of every sample within ``[low, high]``.

    A site adds an element when no earlier site holds it (``seen``, per row). A new element is allowed while fewer
    than ``high`` are placed, STOP once ``low`` are; and an element only if ``low`` stays reachable after it: enough
    sites left and enough allowed elements that may still follow. In canonical order those are the allowed
    elements ranked after it (``later``, per element id), since later sites take elements of higher rank; in any
    order (``later`` is ``None``), every allowed element not placed yet.
    """

    def __init__(self, low: int, high: int, elements: torch.Tensor, later: torch.Tensor | None, count: int,
                 max_sites: int, config: WyckoffTransformerConfig) -> None:
        self.low, self.high, self.elements, self.later, self.max_sites = low, high, elements, later, max_sites
        self.stop_token_id = config.stop_token_id
        self.seen = torch.zeros(count, len(elements), dtype=torch.bool, device=elements.device)

    def restrict_elements(self, allowed: torch.Tensor, rows: torch.Tensor, position: int) -> torch.Tensor:
        seen = self.seen[rows]
        new = (~seen).long()
        distinct = seen.sum(1)
        after = distinct[:, None] + new
        later = (self.later[None, :] if self.later is not None
                 else (self.elements & ~seen).sum(1, keepdim=True) - new * self.elements.long()[None, :])
        reachable = after + later.clamp(max=self.max_sites - position - 1) >= self.low
        stop = allowed[:, self.stop_token_id] & (distinct >= self.low)
        allowed = allowed & (after <= self.high) & reachable
        allowed[:, self.stop_token_id] = stop
        return allowed

    def place(self, rows: torch.Tensor, element: torch.Tensor, site_symmetry: torch.Tensor,
              enumeration: torch.Tensor) -> None:
        self.seen[rows, element] = True

    def resample(self, ancestors: torch.Tensor) -> None:
        self.seen = self.seen[ancestors]


class CompositionSites(SiteConstraint):
    """The composition masks of one batch: per row, the state of ``CompositionMoves`` and the moves it allows."""

    def __init__(self, moves: CompositionMoves, groups: torch.Tensor, config: WyckoffTransformerConfig) -> None:
        self.moves, self.groups, self.stop_token_id = moves, groups.tolist(), config.stop_token_id
        self.states: list[tuple | None] = [None] * len(self.groups)

    def restrict_elements(self, allowed: torch.Tensor, rows: torch.Tensor, position: int) -> torch.Tensor:
        where: tuple[list[int], list[int]] = ([], [])
        for k, row in enumerate(rows.tolist()):
            stop, options = self.moves.moves(self.groups[row], self.states[row])
            for element in (*options, *([self.stop_token_id] if stop else ())):
                where[0].append(k)
                where[1].append(element)
        mask = torch.zeros_like(allowed)
        mask[where] = True
        return allowed & mask

    def restrict_positions(self, available: torch.Tensor, rows: torch.Tensor, position: int,
                           element: torch.Tensor) -> torch.Tensor:
        where: tuple[list[int], list[int], list[int]] = ([], [], [])
        for k, (row, chosen) in enumerate(zip(rows.tolist(), element.tolist(), strict=True)):
            for site_symmetry, enumeration in self.moves.moves(self.groups[row], self.states[row])[1][chosen]:
                where[0].append(k)
                where[1].append(site_symmetry)
                where[2].append(enumeration)
        mask = torch.zeros_like(available)
        mask[where] = True
        return available & mask

    def place(self, rows: torch.Tensor, element: torch.Tensor, site_symmetry: torch.Tensor,
              enumeration: torch.Tensor) -> None:
        for row, *site in zip(rows.tolist(), element.tolist(), site_symmetry.tolist(), enumeration.tolist(),
                              strict=True):
            self.states[row] = self.moves.advance(self.groups[row], self.states[row], *site)

    def resample(self, ancestors: torch.Tensor) -> None:
        self.groups = [self.groups[row] for row in ancestors.tolist()]
        self.states = [self.states[row] for row in ancestors.tolist()]


__all__ = ["CompositionSites", "ElementCountSites", "PromptedSites", "SiteConstraint", "SiteConstraintList"]
