"""Crystal structure prediction as search: the likeliest crystals of a composition under the model, found rather
than sampled.

    results = search_structures("SrTiO3", model, tokenizer, k=10)  # optionally space_group=221
    results[0].representation, results[0].log_probability, results.complete

Sampling (``csp.predict_structures``) finds a crystal only if a draw happens to hit it, and its composition masks
renormalise every step, so the draws do not even follow the model's p(crystal | composition): likely crystals are
missed. Here the cascade itself is searched. A node is a prefix of the cascade: the space group S, whole sites
(element, site symmetry, enumeration) and the fields of the next token chosen so far; its score is the model's
log-probability of that prefix, log p(S) plus the sum of the per-step log-softmaxes, each under the masks
``forward`` scores with (``model.tables.element_allowed`` / ``position_allowed``) and at temperature 1. The
children of a node are the next field's values that ``CompositionMoves`` allows (the composition stays reachable),
each scored with the model's own probability of that value: the composition masks select children, they do not
renormalise, so a complete sequence's score is exactly ``forward``'s ``log_likelihood`` plus log p(S) (the STOP
logit bias of ``generation_config`` is a sampling device and is not applied).

Exactness. A step multiplies by a probability ≤ 1, so scores only decrease along a path. Best-first search pops
the open node of highest score; when a complete sequence (closed by STOP) reaches the top of the queue, no open
node, and so no descendant of one, scores higher: complete sequences leave the queue in order of decreasing
probability, exactly the most probable sequences first, with nothing missed. Expanding the best ``batch_size``
open nodes together (one encoder pass for all of them) only expands some nodes earlier than needed; a complete
sequence is still taken only when it heads the queue, so the order stays exact. Every node is reachable to STOP
(``CompositionMoves`` decides reachability exactly), so no path dead-ends.

One crystal is several sequences (its labellings by the group's affine normalizer), and the model's probability of
a crystal is the sum over them. The search takes sequences in order until it has seen ``k`` distinct crystals
(canonical forms), then scores each crystal as ``csp.crystal_log_probabilities`` does (log-sum-exp over all its
labellings, teacher-forced) and ranks by that. The sequences are exact; the crystal order is exact up to crystals
whose best labelling ranks below the ``k`` found but whose labellings sum above one of them (possible only within
log(number of labellings) of the k-th). ``complete`` says the search reached ``k`` crystals (or exhausted every
sequence) within its budget of node expansions and time; otherwise it keeps what it found, flagged as cut.

Large cells of many sites defeat any exact budget: the number of prefixes likelier than a long crystal grows
exponentially with its length, and a cut search may not have closed a single sequence. A cut search therefore
fills its list from a beam search over the same cascade (``SequenceSearch.beam``: the ``beam_width`` likeliest
prefixes of each step, bounded by 3 × ``max_sites`` + 1 steps), flagged as such and not guaranteed the likeliest.
"""

from __future__ import annotations

import heapq
import itertools
import math
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from ..tokenization import WyckoffRepresentation
from .csp import StructurePrediction, crystal_log_probabilities, formula_unit

DEFAULT_BATCH_SIZE = 256  # open nodes expanded per encoder pass: more cost few extra expansions
DEFAULT_BUDGET = 20_000  # node expansions of the exact search (about 15 s on one core) before a beam fills in
DEFAULT_BEAM_WIDTH = 64  # open prefixes per step of the beam search that fills a cut search's list
ELEMENT, SITE_SYMMETRY, ENUMERATION, DONE = range(4)  # the field a node predicts next (DONE: closed by STOP)
FIELD_NAMES = ("element", "site_symmetry", "enumeration")
MOVES_CACHE_SIZE = 16  # compositions whose CompositionMoves (and its memoised reachability) are kept
_MOVES: dict[tuple, Any] = {}


@dataclass(frozen=True)
class Node:
    """A prefix of the cascade: the group id, the whole sites as (element, site symmetry, enumeration) ids, the
    ``CompositionMoves`` state after them, the field predicted next and the fields of the next token chosen so
    far (``pending``: its element id, then its site-symmetry id)."""

    group: int
    sites: tuple[tuple[int, int, int], ...]
    state: tuple | None
    stage: int
    pending: tuple[int, ...] = ()


class SearchResults(list[StructurePrediction]):
    """The predictions, likeliest first (a list), with how the search ended: ``complete`` (it found ``k``
    crystals, or every sequence there is, within its budget: the sequences behind them are exactly the most
    probable ones) or cut by the budget, how many node expansions of the exact search and complete sequences it
    took, and how many of the predictions only the beam search of a cut search found (``from_beam``)."""

    def __init__(self, predictions: list[StructurePrediction], complete: bool, expansions: int, sequences: int,
                 seconds: float, from_beam: int = 0) -> None:
        super().__init__(predictions)
        self.complete, self.expansions, self.sequences, self.seconds = complete, expansions, sequences, seconds
        self.from_beam = from_beam


class SequenceSearch:
    """Best-first search over the cascade of one composition: iterate to get ``(sequence, log-probability)``
    pairs, most probable first (see the module docstring for why the order is exact).

    The log-probability is log p(S) + log p(sites | S) with ``with_prior``, else log p(sites | S) of the given
    group. ``budget`` (node expansions) and ``time_limit`` (seconds) stop the iteration early; ``complete`` then
    stays ``False``. ``expansions`` counts the nodes expanded.
    """

    def __init__(self, model: Any, tokenizer: Any, composition: str | Mapping[str, float] | Any,
                 space_group: int | None = None, max_atoms: int | None = None,
                 batch_size: int = DEFAULT_BATCH_SIZE, budget: int = DEFAULT_BUDGET,
                 time_limit: float | None = None) -> None:
        from ..modeling.sampling_arguments import composition_moves

        config = model.config
        self.model, self.tokenizer, self.config = model, tokenizer, config
        self.batch_size, self.budget, self.time_limit = batch_size, budget, time_limit
        formula = formula_unit(composition)
        key = (model.tables.wyckoff_positions.cpu().numpy().tobytes(), tuple(sorted(formula.items())), max_atoms,
               config.max_sites)
        if key not in _MOVES:  # its memoised reachability is most of the search's own work: keep it for reuse
            while len(_MOVES) >= MOVES_CACHE_SIZE:
                _MOVES.pop(next(iter(_MOVES)))
            _MOVES[key] = composition_moves(model, formula, max_atoms, config.max_sites)
        self.moves = _MOVES[key]
        self.with_prior = space_group is None
        self.roots = self._roots(space_group)
        self.expansions, self.complete = 0, False

    def _roots(self, space_group: int | None) -> list[tuple[float, Node]]:
        """The space groups that can hold the composition, each with its score: log p(S) under the model's prior
        (normalised over all groups, as ``crystal_log_probabilities`` adds it), or 0 for the given group."""
        offset, moves = self.config.mask_token_id, self.moves
        if space_group is not None:
            group = int(space_group) + offset
            if not moves.reachable_from_start(group):
                raise ValueError(f"composition {moves.name}: space group {space_group} cannot hold it "
                                 f"({moves.limits})")
            return [(0.0, Node(group, (), None, ELEMENT))]
        prior = self.model.space_group_prior().tolist()
        total = sum(prior)
        roots = [(math.log(weight / total), Node(group, (), None, ELEMENT)) for group, weight in enumerate(prior)
                 if weight > 0 and moves.reachable_from_start(group)]
        if not roots:
            raise ValueError(f"composition {moves.name}: no space group of the prior can hold it ({moves.limits})")
        return roots

    def __iter__(self) -> Iterator[tuple[WyckoffRepresentation, float]]:
        start = time.perf_counter()
        counter = itertools.count()
        queue = [(-score, next(counter), node) for score, node in self.roots]
        heapq.heapify(queue)
        while queue:
            while queue and queue[0][2].stage == DONE:
                score, _, node = heapq.heappop(queue)
                yield self.representation(node), -score
            if not queue:
                break
            if self.expansions >= self.budget or (
                    self.time_limit is not None and time.perf_counter() - start > self.time_limit):
                return
            batch = []
            while queue and len(batch) < self.batch_size and queue[0][2].stage != DONE:
                score, _, node = heapq.heappop(queue)
                batch.append((-score, node))
            self.expansions += len(batch)
            for score, child in self._expand(batch):
                heapq.heappush(queue, (-score, next(counter), child))
        self.complete = True

    def beam(self, width: int) -> Iterator[tuple[WyckoffRepresentation, float]]:
        """Beam search over the same cascade, for when the best-first search is cut: every step expands the
        ``width`` open prefixes of that step (the same number of fields chosen) with the highest log-probability per
        atom placed, and yields the sequences that close, as they close. Every crystal of the composition at one Z
        has the same atoms, so the score per atom estimates where a prefix ends; by score alone the beam fills with
        long sequences of small sites, whose every step is likely. It ends within 3 × ``max_sites`` + 1 steps
        whatever the composition, but it is not exact: a prefix that falls out is never revisited."""
        def per_atom(item: tuple[float, Node]) -> float:
            return item[0] / max(self.moves.atoms(item[1].state), 1)

        frontier = heapq.nlargest(width, self.roots, key=lambda item: item[0])
        while frontier:
            children = [child for start in range(0, len(frontier), self.batch_size)
                        for child in self._expand(frontier[start:start + self.batch_size])]
            for score, node in children:
                if node.stage == DONE:
                    yield self.representation(node), score
            frontier = heapq.nlargest(width, (child for child in children if child[1].stage != DONE), key=per_atom)

    def representation(self, node: Node) -> WyckoffRepresentation:
        """The sequence of a node as a representation (its sites as the search placed them, not re-labelled)."""
        width = len(node.sites)
        return self.tokenizer.decode_sequence({
            "space_group_ids": [node.group] * (width + 1),
            "element_ids": [site[0] for site in node.sites] + [self.config.stop_token_id],
            "site_symmetry_ids": [site[1] for site in node.sites] + [self.config.stop_token_id],
            "enumeration_ids": [site[2] for site in node.sites] + [self.config.stop_token_id]})

    def _expand(self, batch: list[tuple[float, Node]]) -> list[tuple[float, Node]]:
        """The children of a batch of open nodes with their scores: one encoder pass for the nodes whose next
        field has more than one value the model allows (a single allowed value has probability 1)."""
        import torch

        model, config, tables = self.model, self.config, self.model.tables
        device = model.device
        count, width = len(batch), max(len(node.sites) for _, node in batch) + 1
        mask_id = config.mask_token_id
        columns: list[list[list[int]]] = [[], [], []]  # per field, per row: the sites' ids, the next token's, padding
        for _, node in batch:
            token = (*node.pending, mask_id, mask_id, mask_id)
            padding = [0] * (width - len(node.sites) - 1)
            for field in range(3):
                columns[field].append([site[field] for site in node.sites] + [token[field]] + padding)
        ids = {key: torch.tensor(column, dtype=torch.long, device=device) for key, column in
               zip(("element_ids", "site_symmetry_ids", "enumeration_ids"), columns, strict=True)}
        position = torch.tensor([len(node.sites) for _, node in batch], device=device)
        group = torch.tensor([node.group for _, node in batch], device=device)
        ids["space_group_ids"] = group[:, None].expand(-1, width)
        rows = torch.arange(count, device=device)
        before = torch.arange(width, device=device)[None, :] < position[:, None]
        grid = (ids["space_group_ids"], ids["site_symmetry_ids"], ids["enumeration_ids"])
        ids["multiplicity"] = tables.multiplicity[grid] * before
        ids["dof"] = tables.dof[grid] * before
        previous = (position - 1).clamp(min=0)
        previous_element = ids["element_ids"][rows, previous].masked_fill(position == 0, config.pad_token_id)
        previous_letter = tables.letter_index[group, ids["site_symmetry_ids"][rows, previous],
                                              ids["enumeration_ids"][rows, previous]].masked_fill(position == 0, -1)
        stage = torch.tensor([node.stage for _, node in batch], device=device)
        allowed = torch.zeros(count, max(config.element_vocab_size, config.site_symmetry_vocab_size,
                                          config.enumeration_vocab_size), dtype=torch.bool, device=device)
        element_rows = (stage == ELEMENT).nonzero().squeeze(1)
        if len(element_rows):
            mask = tables.element_allowed(position[element_rows], previous_element[element_rows], config.max_sites,
                                          config)
            allowed[element_rows, : mask.shape[1]] = mask
        site_rows = (stage != ELEMENT).nonzero().squeeze(1)
        if len(site_rows):
            used = tables.mark_used(torch.zeros(count, tables.exists[0].numel(), dtype=torch.long, device=device),
                                    *grid, before)
            available = tables.position_allowed(group[site_rows], used[site_rows],
                                                ids["element_ids"][site_rows, position[site_rows]],
                                                previous_element[site_rows], previous_letter[site_rows])
            symmetry = stage[site_rows] == SITE_SYMMETRY
            allowed[site_rows[symmetry], : available.shape[1]] = available[symmetry].any(-1)
            chosen = ids["site_symmetry_ids"][site_rows, position[site_rows]]
            numbering = (~symmetry).nonzero().squeeze(1)
            allowed[site_rows[numbering], : available.shape[2]] = available[numbering, chosen[numbering]]
        choices = allowed.sum(-1)
        log_probs = torch.zeros(allowed.shape, device=device).masked_fill(~allowed, -math.inf)  # one choice: log 1
        for length in (position[choices > 1] + 1).unique().tolist():
            # one pass per prefix length: no padding, every token visible (as forward's key mask has it)
            open_rows = ((choices > 1) & (position == length - 1)).nonzero().squeeze(1)
            inputs = {key: value[open_rows, :length] for key, value in ids.items()}
            with torch.no_grad():
                hidden = model.model(**inputs).last_hidden_state[:, length - 1]
                for field, head in enumerate(FIELD_NAMES):
                    subset = (stage[open_rows] == field).nonzero().squeeze(1)
                    if len(subset):
                        logits = model.heads[head](hidden[subset]).float()
                        where, size = open_rows[subset], logits.shape[1]
                        log_probs[where, :size] = logits.masked_fill(~allowed[where, :size], -math.inf).log_softmax(-1)
        return self._children(batch, log_probs.cpu().tolist())

    def _children(self, batch: list[tuple[float, Node]], log_probs: list[list[float]]) -> list[tuple[float, Node]]:
        """The children that the composition allows, scored with the model's log-probabilities of their values."""
        children = []
        for (score, node), values in zip(batch, log_probs, strict=True):
            stop, options = self.moves.moves(node.group, node.state)
            if node.stage == ELEMENT:
                if stop and values[self.config.stop_token_id] > -math.inf:
                    children.append((score + values[self.config.stop_token_id],
                                     Node(node.group, node.sites, node.state, DONE)))
                for element in options:
                    if values[element] > -math.inf:
                        children.append((score + values[element],
                                         Node(node.group, node.sites, node.state, SITE_SYMMETRY, (element,))))
            elif node.stage == SITE_SYMMETRY:
                element = node.pending[0]
                for site_symmetry in dict.fromkeys(position[0] for position in options[element]):
                    if values[site_symmetry] > -math.inf:
                        children.append((score + values[site_symmetry], Node(
                            node.group, node.sites, node.state, ENUMERATION, (element, site_symmetry))))
            else:
                element, site_symmetry = node.pending
                for chosen, enumeration in options[element]:
                    if chosen == site_symmetry and values[enumeration] > -math.inf:
                        site = (element, site_symmetry, enumeration)
                        state = self.moves.advance(node.group, node.state, *site)
                        children.append((score + values[enumeration],
                                         Node(node.group, (*node.sites, site), state, ELEMENT)))
        return children


def search_structures(composition: str | Mapping[str, float] | Any, model: Any, tokenizer: Any, k: int = 10,
                      space_group: int | None = None, max_atoms: int | None = None,
                      budget: int = DEFAULT_BUDGET, time_limit: float | None = None,
                      batch_size: int = DEFAULT_BATCH_SIZE, beam_width: int = DEFAULT_BEAM_WIDTH) -> SearchResults:
    """The ``k`` likeliest crystals of ``composition`` (a formula, pymatgen ``Composition`` or mapping; reduced to
    its formula unit; Z ≥ 1 formula units within ``max_atoms`` atoms per conventional cell), likeliest first.

    ``space_group`` fixes the group (its log p(S) is then left out of the scores, as ``predict_structures`` does);
    else the groups come from the model's prior, restricted to those that can hold the composition. ``budget``
    bounds the node expansions and ``time_limit`` the seconds of the exact best-first search;
    ``results.complete`` says whether it finished within them (see the module docstring for what it then
    guarantees). A cut search keeps the crystals it found (they are still the likeliest, in order) and, with
    ``beam_width`` > 0, fills the rest of the ``k`` with the likeliest others of a beam search of that width
    (``results.from_beam`` of them; not guaranteed the likeliest): large cells of many sites can exhaust any
    budget before their first sequence closes. ``count`` of a prediction is the number of its labellings the
    searches reached. An impossible request raises a ``ValueError`` before searching.
    """
    if k < 1 or beam_width < 0:
        raise ValueError(f"k must be at least 1 and beam_width at least 0, got {k} and {beam_width}")
    start = time.perf_counter()
    search = SequenceSearch(model, tokenizer, composition, space_group, max_atoms, batch_size, budget, time_limit)
    sequences: set[WyckoffRepresentation] = set()
    found: dict[WyckoffRepresentation, int] = {}  # crystal: labellings reached
    best: dict[WyckoffRepresentation, float] = {}  # crystal: score of its likeliest sequence found

    def reach(sequence: WyckoffRepresentation, score: float) -> None:
        if sequence not in sequences:
            sequences.add(sequence)
            crystal = sequence.canonical()
            found[crystal] = found.get(crystal, 0) + 1
            best[crystal] = max(best.get(crystal, -math.inf), score)

    was_training = model.training
    model.eval()
    try:
        for sequence, score in search:
            reach(sequence, score)
            if len(found) == k:
                search.complete = True
                break
        crystals = list(found)
        exact = len(crystals)
        if not search.complete and beam_width:
            for sequence, score in search.beam(beam_width):
                reach(sequence, score)
            others = sorted(list(found)[exact:], key=lambda crystal: (-best[crystal], str(crystal)))
            crystals += others[:k - exact]
        scores = crystal_log_probabilities(model, tokenizer, crystals, with_prior=space_group is None)
    finally:
        model.train(was_training)
    ranked = sorted(zip(crystals, scores, strict=True), key=lambda item: (-item[1], str(item[0])))
    return SearchResults([StructurePrediction(crystal, score, found[crystal]) for crystal, score in ranked],
                         search.complete, search.expansions, len(sequences), time.perf_counter() - start,
                         len(crystals) - exact)
