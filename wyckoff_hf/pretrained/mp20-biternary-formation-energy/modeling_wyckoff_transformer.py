"""WyckoffTransformer: a permutation-aware encoder over Wyckoff sites, its cascade generator and its property head.

Self-contained on purpose (torch, transformers and the sibling configuration file only): the file is
copied next to the weights so that ``trust_remote_code=True`` works where ``wyckoff_hf`` is not installed.

The autoregressive factorisation ("cascade"). A crystal is a sequence of sites (element, site symmetry,
enumeration) closed by STOP. To predict token i, tokens before i are given in full, token i has its
not-yet-predicted fields replaced by MASK and tokens after i are invisible (a key mask). The heads predict,
in order, the element (or STOP), then the site symmetry given the element, then the enumeration given
both, each from the encoder state of token i in its own encoder pass. There is no positional encoding
and attention is bidirectional, so the prefix is seen as a set of sites.

One mask builder (``WyckoffPositionTables.element_allowed`` / ``position_allowed``) restricts every prediction,
in the loss and in ``generate`` alike, so the probability ``forward`` assigns a sequence is exactly the one
``generate`` samples it with (at temperature 1):

- site symmetries and enumerations of the sample's group only, each 0-dof position held by at most one site;
- STOP never first, and the only choice once ``config.max_sites`` sites are placed;
- canonical order. The training data list sites in canonical order (Pauling electronegativity of the element,
  then Z, then the Wyckoff letter), so the data distribution puts no mass on any other order. Sampling enforces
  that order (an element ranks at or after the previous site's; a site of the same element takes a letter at or
  after the previous one) rather than re-sorting decoded samples: re-sorting would leave the model conditioning
  on prefixes it never saw in training, and the log-probability of a sample would not be the one ``forward``
  gives its decoded (canonical) sequence. For a model that fits the data the order masks remove no mass; for
  an imperfect one they renormalise the mass it leaks to out-of-order continuations. Not enforced: the choice
  among the equivalent labellings of the affine normalizer (``WyckoffRepresentation.from_sites(...,
  canonical=True)``), which is global, not a property of a prefix. A model with ``config.site_order = "any"``
  (trained on the sites in random orders) has no order masks: it samples the sites in any order, and the
  probability ``forward`` gives a sequence is that of this one order.

A target outside these masks makes ``forward`` raise (it would otherwise get a huge loss, or silently none).

Conditioning in ``generate``. ``space_group`` conditions exactly (the model is p(sites | S)). ``allowed_elements``
and ``max_sites`` below the model's are *renormalised masking*: disallowed choices are removed at every step and
the rest renormalised, which is not the model's conditional p(x | x uses only these elements) (a prefix that would
likely have continued with a forbidden element is not down-weighted). ``required_elements`` is sampled by
*rejection*: unconstrained draws (under the other options) are kept when they contain every required element, so
the samples follow the exact conditional; the acceptance rate is reported, and too low a rate is an error.
``prompt`` conditions exactly as well: the given group and first sites are taken as they are (after checking that
the model could have produced them), the model samples the rest from p(rest | prompt, S), and the score is the
log-probability of that completion. ``composition`` (crystal structure prediction) is renormalised masking: every
step allows only the sites after which the composition (Z formula units for some Z ≥ 1, within ``max_atoms``) stays
reachable (``CompositionMoves`` decides it exactly), so every sample has exactly the composition, but the samples
follow the model's distribution restricted step by step, not its conditional p(x | composition): rank them by the
model's own log-likelihood (``wyckoff_hf.generation.csp``). ``num_elements_range`` is renormalised masking too (the
number of distinct elements stays in range, with a look-ahead so that the low end stays reachable). ``condition``
(a conditional generator, ``config.condition_names``) is exact at ``guidance_scale`` 1: the network was trained on
p(sites | S, condition); other scales apply classifier-free guidance per step.

Property prediction (``WyckoffTransformerForPropertyPrediction``) uses the same encoder on the whole crystal, every
field visible, and pools the site states weighted by multiplicity.
"""

import functools
import itertools
import math
import operator
import os
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn
from torch.nn import functional as F
from transformers import GenerationConfig, GenerationMixin, PreTrainedModel
from transformers import initialization as init
from transformers.masking_utils import create_bidirectional_mask
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutput, SequenceClassifierOutput
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.utils import ModelOutput, logging
from transformers.utils.generic import can_return_tuple, merge_with_config_defaults
from transformers.utils.output_capturing import capture_outputs

from .configuration_wyckoff_transformer import WyckoffTransformerConfig

logger = logging.get_logger(__name__)

FIELD_INPUTS = ("space_group_ids", "element_ids", "site_symmetry_ids", "enumeration_ids", "multiplicity", "dof")
DERIVED_INPUTS = ("multiplicity", "dof")
# Cascade order: the fields of token i hidden when predicting each of them (the derived integers follow
# from the full position, so they stay hidden until the enumeration is known).
CASCADE_HIDDEN = {
    "element": ("element_ids", "site_symmetry_ids", "enumeration_ids", "multiplicity", "dof"),
    "site_symmetry": ("site_symmetry_ids", "enumeration_ids", "multiplicity", "dof"),
    "enumeration": ("enumeration_ids", "multiplicity", "dof"),
}
DEFAULT_GENERATION_BATCH_SIZE = 2048
# generation_config.json defaults: temperature (calibrated after training), the space-group prior p(S) as counts
# per space-group id (None: uniform over the groups with Wyckoff positions), the lowest acceptance rate that
# rejection sampling of required_elements accepts before giving up, and the most atoms per conventional cell of
# composition-constrained samples (None: 4 × config.max_sites, see ``generate``).
DEFAULT_GENERATION_CONFIG = {"do_sample": True, "temperature": 1.0, "field_temperatures": None,
                             "space_group_counts": None, "min_acceptance_rate": 0.01, "max_atoms": None,
                             "num_elements_range": None}
SAMPLED_FIELDS = tuple(CASCADE_HIDDEN)  # the cascade's heads, in the order a token samples them


def hidden_value(key: str, config: WyckoffTransformerConfig) -> int:
    """What a not-yet-predicted field of the predicted token holds: MASK, or 0 for the derived integers."""
    return 0 if key in DERIVED_INPUTS else config.mask_token_id


@dataclass
class CrystalGenerationModelOutput(ModelOutput):
    r"""
    loss: sum of the three per-field losses (≈ negative log-likelihood per site); ``None`` with ``return_loss=False``.
    element_loss, site_symmetry_loss, enumeration_loss: mean cross-entropy over the predictions of each
        field (the element head is also scored on the STOP token; the other two on real sites only).
    log_likelihood: ``(batch,)``, log p(sites, STOP | space group) of each sequence under the model (temperature 1):
        the sum over the cascade of the log-softmax at the targets, under the masks ``generate`` samples with.
    element_logits, site_symmetry_logits, enumeration_logits: ``(batch, length, vocab)``; at ``[b, i]`` the
        logits that predict token i of row b from the visible prefix, with impossible values at the dtype's
        minimum. Padding (and, for the last two, the STOP position) holds zeros.
    """

    loss: torch.FloatTensor | None = None
    element_loss: torch.FloatTensor | None = None
    site_symmetry_loss: torch.FloatTensor | None = None
    enumeration_loss: torch.FloatTensor | None = None
    log_likelihood: torch.FloatTensor | None = None
    element_logits: torch.FloatTensor | None = None
    site_symmetry_logits: torch.FloatTensor | None = None
    enumeration_logits: torch.FloatTensor | None = None


@dataclass
class GeneratedCrystals(ModelOutput):
    r"""
    Sampled crystals as id tensors of shape ``(num_samples, length)`` in the tokenizer's layout: one token per
    site (in canonical order, unless ``config.site_order`` is ``"any"``), then a STOP token
    (element/site-symmetry/enumeration id = STOP), then padding (0).
    Decode with ``WyckoffTokenizer.decode``.

    sequences_scores: ``(num_samples,)``, the log-probability of each sample under the distribution it was drawn
        from: the model's masked softmax at the sampling temperature T, renormalised over ``allowed_elements``,
        ``max_sites`` and ``composition``. At T = 1 without those options it is the model's log p(sites | space
        group), equal to ``forward(...).log_likelihood`` of the sequence; at other T it is the log-probability under
        the tempered per-step distributions (softmax(logits / T)), not a tempered joint. Rejection
        (``required_elements``) does not change it: the normalising constant of the conditional is the acceptance
        rate. With a ``prompt`` it is the log-probability of the completion given the prompt (the prompt's own
        steps count 0): at T = 1, the sequence's ``forward`` log-likelihood less that of its prompt's steps. With
        a ``condition`` it is the log-probability under the conditional (guided, for ``guidance_scale`` ≠ 1)
        per-step distributions the sample was drawn from.
    acceptance_rate: with ``required_elements``, accepted / drawn samples of the rejection sampler; else ``None``.
    """

    space_group_ids: torch.LongTensor | None = None
    element_ids: torch.LongTensor | None = None
    site_symmetry_ids: torch.LongTensor | None = None
    enumeration_ids: torch.LongTensor | None = None
    multiplicity: torch.LongTensor | None = None
    dof: torch.LongTensor | None = None
    attention_mask: torch.LongTensor | None = None
    sequences_scores: torch.FloatTensor | None = None
    acceptance_rate: float | None = None


@dataclass
class CascadeSteps:
    """The cascade steps of a batch, one row per real token (``WyckoffTransformerForCrystalGeneration._cascade_steps``):
    its sequence and position, the sequence's ids repeated per row (``inputs``), which tokens the row sees
    (``key_mask``), the targets per field, which rows are sites (not STOP, ``site``), and the masks of the element
    prediction (all rows) and of the site-symmetry and enumeration predictions (site rows)."""

    sequence: torch.Tensor
    position: torch.Tensor
    inputs: dict[str, torch.Tensor]
    key_mask: torch.Tensor
    targets: dict[str, torch.Tensor]
    site: torch.Tensor
    element_allowed: torch.Tensor
    site_symmetry_allowed: torch.Tensor
    enumeration_allowed: torch.Tensor


class WyckoffPositionTables(nn.Module):
    """The crystallographic tables of the model and the mask builder that both ``forward`` and ``generate`` use.

    Persistent buffers (saved in ``model.safetensors``, filled from the config's construction inputs):
    ``wyckoff_positions``, ``(num_positions, 5)`` rows [space group, site symmetry, enumeration, multiplicity, dof]
    with the rows of one group in ITA letter order, and ``element_rank``, the canonical rank of every element id
    (-1 for the special tokens). Dense lookups over (space group, site symmetry, enumeration) are derived from them
    (non-persistent, rebuilt by ``_init_weights`` after loading).
    """

    def __init__(self, config: WyckoffTransformerConfig) -> None:
        super().__init__()
        if not config.num_wyckoff_positions:
            raise ValueError("the config has no wyckoff_positions; build it with "
                             "WyckoffTransformerConfig.from_tokenizer(WyckoffTokenizer())")
        self.ordered = config.site_order == "canonical"
        self.register_buffer("wyckoff_positions", torch.zeros(config.num_wyckoff_positions, 5, dtype=torch.int32))
        self.register_buffer("element_rank", torch.zeros(config.element_vocab_size, dtype=torch.int32))
        shape = (config.space_group_vocab_size, config.site_symmetry_vocab_size, config.enumeration_vocab_size)
        self.register_buffer("exists", torch.zeros(shape, dtype=torch.bool), persistent=False)
        for name in ("multiplicity", "dof", "letter_index"):
            self.register_buffer(name, torch.zeros(shape, dtype=torch.long), persistent=False)

    @staticmethod
    def source_tables(config: WyckoffTransformerConfig) -> dict[str, torch.Tensor]:
        """The persistent buffers from the config's construction inputs (a fresh model)."""
        if config.wyckoff_positions is None or config.element_canonical_order is None:
            raise ValueError("no Wyckoff tables: the weights hold no tables.wyckoff_positions / tables.element_rank "
                             "(a checkpoint of an older format: retrain it) and the config no wyckoff_positions / "
                             "element_canonical_order (build it with WyckoffTransformerConfig.from_tokenizer)")
        rank = torch.full((config.element_vocab_size,), -1, dtype=torch.int32)
        rank[config.element_canonical_order] = torch.arange(len(config.element_canonical_order), dtype=torch.int32)
        return {"wyckoff_positions": torch.tensor(config.wyckoff_positions, dtype=torch.int32), "element_rank": rank}

    def dense_tables(self) -> dict[str, torch.Tensor]:
        """The dense lookups, from ``wyckoff_positions`` (tensor operations only, so meta tensors pass through)."""
        space_group, site_symmetry, enumeration, multiplicity, dof = self.wyckoff_positions.long().unbind(1)
        tables = {"exists": torch.zeros_like(self.exists)}
        tables["exists"][space_group, site_symmetry, enumeration] = True
        row = torch.arange(len(space_group), device=space_group.device)
        first_row = torch.full((self.exists.shape[0],), len(row), device=row.device).scatter_reduce(
            0, space_group, row, "amin")
        letter_index = row - first_row[space_group]
        for name, value in (("multiplicity", multiplicity), ("dof", dof), ("letter_index", letter_index)):
            tables[name] = torch.zeros_like(self.multiplicity)
            tables[name][space_group, site_symmetry, enumeration] = value
        return tables

    def element_allowed(self, position: torch.Tensor, previous_element: torch.Tensor, max_sites: int,
                        config: WyckoffTransformerConfig) -> torch.Tensor:
        """``(N, element vocabulary)``: elements (in canonical order, those ranked at or after the previous site's),
        STOP after the first site, only STOP once ``max_sites`` sites are placed. ``previous_element`` is PAD for
        the first token."""
        rank = self.element_rank
        allowed = (rank >= 0)[None, :].expand(len(position), -1).clone()
        if self.ordered:
            allowed &= rank[None, :] >= rank[previous_element][:, None]
        allowed[:, config.stop_token_id] = position > 0
        full = position >= max_sites
        allowed[full] = False
        allowed[full, config.stop_token_id] = True
        return allowed

    def position_allowed(self, space_group: torch.Tensor, used: torch.Tensor, element: torch.Tensor,
                         previous_element: torch.Tensor, previous_letter: torch.Tensor) -> torch.Tensor:
        """``(N, site_symmetry, enumeration)``: positions of each row's group that are not a 0-dof position already
        taken (``used``, ``(N, site_symmetry * enumeration)``) and, in canonical order after a site of the same
        element, at or after its letter (``previous_letter``)."""
        floor = torch.where((element == previous_element) & self.ordered, previous_letter, -1)
        return (self.exists[space_group] & (used.view(-1, *self.exists.shape[1:]) == 0)
                & (self.letter_index[space_group] >= floor[:, None, None]))

    def mark_used(self, used: torch.Tensor, space_group: torch.Tensor, site_symmetry: torch.Tensor,
                  enumeration: torch.Tensor, is_site: torch.Tensor) -> torch.Tensor:
        """``used`` plus the 0-dof positions among the given sites (ids of shape ``(N, ...)``; ``is_site``
        says which entries are real sites)."""
        fixed = is_site & (self.dof[space_group, site_symmetry, enumeration] == 0)
        flat = site_symmetry * self.exists.shape[2] + enumeration
        return used.scatter_add(1, flat.view(len(used), -1), fixed.view(len(used), -1).to(used.dtype))


@dataclass
class PromptedSites:
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

    def place(self, rows: torch.Tensor, element: torch.Tensor, site_symmetry: torch.Tensor,
              enumeration: torch.Tensor) -> None:
        """Nothing to record: the prompt does not depend on what was sampled."""


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


class ElementCountSites:
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

    def restrict_positions(self, available: torch.Tensor, rows: torch.Tensor, position: int,
                           element: torch.Tensor) -> torch.Tensor:
        return available

    def place(self, rows: torch.Tensor, element: torch.Tensor, site_symmetry: torch.Tensor,
              enumeration: torch.Tensor) -> None:
        self.seen[rows, element] = True


class CompositionSites:
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


class ConditionEmbedding(nn.Module):
    """One vector per crystal from its scalar conditions (``config.condition_names``), standardised.

    A NaN condition is unknown: the network sees (0, known = 0) for it, so a crystal with every condition unknown
    gets one learned vector, the unconditional embedding of classifier-free guidance.
    """

    def __init__(self, config: WyckoffTransformerConfig) -> None:
        super().__init__()
        self.config = config
        count, width = len(config.condition_names), config.condition_embedding_size
        self.project = nn.Sequential(nn.Linear(2 * count, width), nn.GELU(), nn.Linear(width, width))

    def forward(self, conditions: torch.Tensor) -> torch.Tensor:
        config, count = self.config, len(self.config.condition_names)
        mean = torch.tensor(config.condition_mean or [0.0] * count, device=conditions.device)
        std = torch.tensor(config.condition_std or [1.0] * count, device=conditions.device)
        known = ~conditions.isnan()
        scaled = ((conditions.float() - mean) / std).nan_to_num(0.0)
        features = torch.cat([scaled, known.float()], dim=-1)
        return self.project(features.to(self.project[0].weight.dtype))


@dataclass
class Guidance:
    """The conditions of the samples of a batch (one row each) and the classifier-free guidance scale."""

    conditions: torch.Tensor
    scale: float

    def take(self, rows: torch.Tensor) -> "Guidance":
        return Guidance(self.conditions[rows], self.scale)

    def logits(self, logits_of: Callable[[torch.Tensor | None], torch.Tensor], rows: torch.Tensor) -> torch.Tensor:
        """Guided logits of ``rows`` (indices into this batch); ``logits_of(conditions)`` runs the network, with
        ``None`` meaning every condition unknown. At scale 1 the conditional logits alone (one pass)."""
        conditional = logits_of(self.conditions[rows])
        if self.scale == 1:
            return conditional
        unconditional = logits_of(None)
        return unconditional + self.scale * (conditional - unconditional)


class WyckoffEmbeddings(nn.Module):
    """Concatenated per-field embeddings plus a projection of the derived integers (and, for a conditional
    generator, the crystal's condition embedding, the same in every token, like the space group).

    Multiplicity enters as log(1 + m): it spans 1..192, and the log keeps a linear layer well scaled.
    With ``config.site_count_embedding`` the token being predicted (a MASK in any field) also gets the embedding
    of its index, which is the number of sites before it: the model's inputs are always a crystal's first sites in
    order, followed by that token (and, in training, later tokens that the attention mask hides).
    With ``config.element_descriptors`` an element's embedding is its learned vector plus a linear projection of its
    chemical descriptors (the persistent buffer ``element_descriptor_table``, filled from the config at
    construction and saved with the weights).
    """

    def __init__(self, config: WyckoffTransformerConfig) -> None:
        super().__init__()
        self.space_group = nn.Embedding(config.space_group_vocab_size, config.space_group_embedding_size)
        self.element = nn.Embedding(config.element_vocab_size, config.element_embedding_size)
        self.element_descriptor_projection = None
        if config.element_descriptors:
            self.register_buffer("element_descriptor_table",
                                 torch.zeros(config.element_vocab_size, config.element_descriptor_size))
            self.element_descriptor_projection = nn.Linear(config.element_descriptor_size,
                                                           config.element_embedding_size, bias=False)
        self.site_symmetry = nn.Embedding(config.site_symmetry_vocab_size, config.site_symmetry_embedding_size)
        self.enumeration = nn.Embedding(config.enumeration_vocab_size, config.enumeration_embedding_size)
        self.derived = nn.Linear(2, config.derived_feature_size)
        self.condition = ConditionEmbedding(config) if config.condition_names else None
        self.site_count = (nn.Embedding(config.max_sites + 1, config.hidden_size) if config.site_count_embedding
                           else None)
        self.mask_token_id, self.max_sites = config.mask_token_id, config.max_sites
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, space_group_ids: torch.Tensor, element_ids: torch.Tensor, site_symmetry_ids: torch.Tensor,
                enumeration_ids: torch.Tensor, multiplicity: torch.Tensor, dof: torch.Tensor,
                conditions: torch.Tensor | None = None) -> torch.Tensor:
        derived = torch.stack([torch.log1p(multiplicity.float()), dof.float()], dim=-1)
        fields = [self.space_group(space_group_ids), self.element_embedding(element_ids),
                  self.site_symmetry(site_symmetry_ids), self.enumeration(enumeration_ids),
                  self.derived(derived.to(self.derived.weight.dtype))]
        if self.condition is not None:
            if conditions is None:  # unconditional: every condition unknown
                conditions = torch.full((len(element_ids), len(self.condition.config.condition_names)), math.nan,
                                        device=element_ids.device)
            fields.append(self.condition(conditions)[:, None, :].expand(*element_ids.shape, -1))
        elif conditions is not None:
            raise ValueError("conditions given to a model without config.condition_names (not a conditional model)")
        tokens = torch.cat(fields, dim=-1)
        if self.site_count is not None:
            predicted = ((element_ids == self.mask_token_id) | (site_symmetry_ids == self.mask_token_id)
                         | (enumeration_ids == self.mask_token_id))
            count = torch.arange(element_ids.shape[1], device=element_ids.device).clamp(max=self.max_sites)
            tokens = tokens + predicted[..., None] * self.site_count(count)
        return self.dropout(tokens)

    def element_embedding(self, element_ids: torch.Tensor) -> torch.Tensor:
        """The learned element vectors, plus the projected descriptors with ``config.element_descriptors``."""
        embedded = self.element(element_ids)
        if self.element_descriptor_projection is None:
            return embedded
        descriptors = self.element_descriptor_table[element_ids].to(self.element_descriptor_projection.weight.dtype)
        return embedded + self.element_descriptor_projection(descriptors)


def eager_attention_forward(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                            attention_mask: torch.Tensor | None, scaling: float, dropout: float = 0.0,
                            **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain softmax attention (as transformers' encoders): the one that can return its weights."""
    weights = torch.matmul(query, key.transpose(2, 3)) * scaling
    if attention_mask is not None:
        weights = weights + attention_mask
    weights = F.dropout(weights.softmax(-1), p=dropout, training=module.training)
    return torch.matmul(weights, value).transpose(1, 2).contiguous(), weights


class WyckoffSelfAttention(nn.Module):
    """Multi-head bidirectional self-attention, dispatched on ``config._attn_implementation`` (eager, sdpa, ...)."""

    is_causal = False

    def __init__(self, config: WyckoffTransformerConfig) -> None:
        super().__init__()
        self.config = config
        self.num_heads = config.num_attention_heads
        self.scaling = (config.hidden_size // config.num_attention_heads) ** -0.5
        self.qkv = nn.Linear(config.hidden_size, 3 * config.hidden_size)
        self.out = nn.Linear(config.hidden_size, config.hidden_size)
        self.dropout = config.attention_dropout

    def forward(self, hidden: torch.Tensor, attention_mask: torch.Tensor | None,
                **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
        batch, length, width = hidden.shape
        query, key, value = self.qkv(hidden).view(batch, length, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        attention: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(self.config._attn_implementation,
                                                                    eager_attention_forward)
        attended, weights = attention(self, query, key, value, attention_mask, scaling=self.scaling,
                                      dropout=self.dropout if self.training else 0.0, **kwargs)
        return self.out(attended.reshape(batch, length, width)), weights


class WyckoffTransformerLayer(GradientCheckpointingLayer):
    """Pre-LN encoder block: pre-LN trains stably without a learning-rate warm-up at this small scale."""

    def __init__(self, config: WyckoffTransformerConfig) -> None:
        super().__init__()
        self.attention_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.attention = WyckoffSelfAttention(config)
        self.mlp_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = nn.Sequential(nn.Linear(config.hidden_size, config.intermediate_size), nn.GELU(),
                                 nn.Linear(config.intermediate_size, config.hidden_size))
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden: torch.Tensor, attention_mask: torch.Tensor | None, **kwargs: Any) -> torch.Tensor:
        attended, _ = self.attention(self.attention_norm(hidden), attention_mask, **kwargs)
        hidden = hidden + self.dropout(attended)
        return hidden + self.dropout(self.mlp(self.mlp_norm(hidden)))


class WyckoffTransformerPreTrainedModel(PreTrainedModel):
    """Shared loading/initialisation conventions of the WyckoffTransformer models."""

    config_class = WyckoffTransformerConfig
    base_model_prefix = "model"
    main_input_name = "element_ids"
    supports_gradient_checkpointing = True
    _no_split_modules: ClassVar[list[str]] = ["WyckoffTransformerLayer"]
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    _supports_attention_backend = True
    _can_record_outputs: ClassVar[dict[str, type[nn.Module]]] = {
        "hidden_states": WyckoffTransformerLayer, "attentions": WyckoffSelfAttention}

    def save_pretrained(self, save_directory: str | os.PathLike, *args: Any, **kwargs: Any) -> Any:
        """As ``PreTrainedModel.save_pretrained``; with remote code, a model with heads also maps ``AutoModel`` to
        the bare encoder (transformers writes only the class's own Auto entry)."""
        if self._auto_class is not None:
            module = type(self).__module__.rsplit(".", 1)[-1]
            self.config.auto_map = {**(getattr(self.config, "auto_map", None) or {}),
                                    "AutoModel": f"{module}.WyckoffTransformerModel"}
        return super().save_pretrained(save_directory, *args, **kwargs)

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, WyckoffPositionTables):
            # a loaded checkpoint already holds the persistent tables (init.copy_ skips initialised tensors)
            if not getattr(module.wyckoff_positions, "_is_hf_initialized", False):
                for name, value in module.source_tables(self.config).items():
                    init.copy_(getattr(module, name), value)
            for name, value in module.dense_tables().items():
                init.copy_(getattr(module, name), value)
        if isinstance(module, WyckoffEmbeddings) and module.element_descriptor_projection is not None:
            table = module.element_descriptor_table
            if not getattr(table, "_is_hf_initialized", False):
                if self.config.element_descriptor_table is None:
                    raise ValueError("no element descriptors: the weights hold no embeddings.element_descriptor_table "
                                     "and the config no element_descriptor_table (build it with "
                                     "WyckoffTransformerConfig.from_tokenizer)")
                init.copy_(table, torch.tensor(self.config.element_descriptor_table, dtype=table.dtype))


class WyckoffTransformerModel(WyckoffTransformerPreTrainedModel):
    """The encoder: field embeddings → pre-LN bidirectional layers (no positional encoding) → LayerNorm.

    ``attention_mask`` is a key mask, ``(batch, length)`` with 1 for visible tokens; ``None`` = all visible.
    ``conditions`` (conditional models only), ``(batch, len(config.condition_names))``: each crystal's conditions,
    NaN where unknown; ``None`` = all unknown.
    ``output_hidden_states`` / ``output_attentions`` (the latter with ``attn_implementation="eager"``) add
    the per-layer states and attention weights to the output.
    """

    _keys_to_ignore_on_load_unexpected: ClassVar[list[str]] = [r"^(tables|heads|classifier)\."]  # the heads' own

    def __init__(self, config: WyckoffTransformerConfig) -> None:
        super().__init__(config)
        self.embeddings = WyckoffEmbeddings(config)
        self.layers = nn.ModuleList(WyckoffTransformerLayer(config) for _ in range(config.num_hidden_layers))
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.gradient_checkpointing = False
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.embeddings.element

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.embeddings.element = value

    @merge_with_config_defaults
    @capture_outputs
    def forward(self, space_group_ids: torch.Tensor, element_ids: torch.Tensor, site_symmetry_ids: torch.Tensor,
                enumeration_ids: torch.Tensor, multiplicity: torch.Tensor, dof: torch.Tensor,
                attention_mask: torch.Tensor | None = None, conditions: torch.Tensor | None = None,
                **kwargs: Any) -> BaseModelOutput:
        hidden = self.embeddings(space_group_ids, element_ids, site_symmetry_ids, enumeration_ids, multiplicity, dof,
                                 conditions)
        mask = create_bidirectional_mask(config=self.config, inputs_embeds=hidden, attention_mask=attention_mask)
        for layer in self.layers:
            hidden = layer(hidden, mask, **kwargs)
        return BaseModelOutput(last_hidden_state=self.norm(hidden))


class WyckoffTransformerForCrystalGeneration(WyckoffTransformerPreTrainedModel, GenerationMixin):
    """The encoder with the three cascade heads: training loss in ``forward``, sampling in ``generate``.

    Saved checkpoints map ``AutoModel`` to the bare encoder and ``AutoModelForPreTraining`` to this class
    (the model with its training heads), for in-process registration and for ``trust_remote_code`` alike.
    Sampling defaults live in ``generation_config.json`` (``model.generation_config``): ``temperature`` (and
    ``field_temperatures``, per field), ``space_group_counts`` (the prior p(S), counts per space-group id) and
    ``min_acceptance_rate``.
    """

    accepts_loss_kwargs = False  # the loss is a per-prediction mean; Trainer need not pass num_items_in_batch

    def __init__(self, config: WyckoffTransformerConfig) -> None:
        super().__init__(config)
        self.model = WyckoffTransformerModel(config)
        self.tables = WyckoffPositionTables(config)
        self.heads = nn.ModuleDict({
            "element": nn.Linear(config.hidden_size, config.element_vocab_size),
            "site_symmetry": nn.Linear(config.hidden_size, config.site_symmetry_vocab_size),
            "enumeration": nn.Linear(config.hidden_size, config.enumeration_vocab_size),
        })
        self.generation_config = GenerationConfig(**DEFAULT_GENERATION_CONFIG)
        self.post_init()

    # ------------------------------------------------------------------------------------------- training

    def _predict(self, field: str, inputs: dict[str, torch.Tensor], position: torch.Tensor,
                 key_mask: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        """Logits of ``field`` of token ``position`` (one per row), impossible values at the dtype minimum.

        ``inputs`` already hold MASK / 0 in the hidden fields of that token.
        """
        hidden = self.model(**inputs, attention_mask=key_mask).last_hidden_state
        logits = self.heads[field](hidden[torch.arange(len(position), device=position.device), position])
        return logits.masked_fill(~allowed, torch.finfo(logits.dtype).min)

    def _hide(self, inputs: dict[str, torch.Tensor], position: torch.Tensor, field: str) -> dict[str, torch.Tensor]:
        """A copy of ``inputs`` with the fields not yet known when predicting ``field`` of token ``position``
        replaced by their hidden value (MASK, 0 for the derived integers)."""
        rows = torch.arange(len(position), device=position.device)
        hidden = dict(inputs)
        for key in CASCADE_HIDDEN[field]:
            hidden[key] = inputs[key].clone()
            hidden[key][rows, position] = hidden_value(key, self.config)
        return hidden

    @staticmethod
    def _check_targets(field: str, allowed: torch.Tensor, target: torch.Tensor, sequence: torch.Tensor,
                       position: torch.Tensor, name: str) -> None:
        """Raise on the first target outside the masks: it has probability zero under the model."""
        bad = (~allowed.gather(1, target[:, None]).squeeze(1)).nonzero()
        if len(bad):
            row = int(bad[0])
            raise ValueError(
                f"{name} {int(sequence[row])}, token {int(position[row])}: {field} id {int(target[row])} is "
                f"impossible there ({IMPOSSIBLE_REASONS[field]}); the model gives it probability 0")

    def _cascade_steps(self, inputs: dict[str, torch.Tensor], attention_mask: torch.Tensor, max_sites: int,
                       name: str = "sequence") -> CascadeSteps:
        """Every real token of every sequence as one row, with its targets and the masks that restrict them.

        The masks are the ones ``generate`` samples with (``max_sites`` sites at most); a target outside them raises
        a ``ValueError`` naming ``name`` ("sequence", or "prompt" when ``generate`` validates its prompts) and the
        token. Rows see the tokens up to their own (``key_mask``)."""
        config, tables = self.config, self.tables
        element_ids = inputs["element_ids"]
        length = element_ids.shape[1]
        sequence, position = attention_mask.nonzero(as_tuple=True)
        expanded = {key: value[sequence] for key, value in inputs.items()}
        rows = torch.arange(len(sequence), device=element_ids.device)
        before = torch.arange(length, device=element_ids.device)[None, :]
        group = expanded["space_group_ids"][rows, position]
        targets = {field: expanded[f"{field}_ids"][rows, position] for field in CASCADE_HIDDEN}
        previous = (position - 1).clamp(min=0)
        previous_element = expanded["element_ids"][rows, previous].masked_fill(position == 0, config.pad_token_id)
        previous_letter = tables.letter_index[group, expanded["site_symmetry_ids"][rows, previous],
                                              expanded["enumeration_ids"][rows, previous]]
        is_site = expanded["element_ids"] > config.mask_token_id
        used = tables.mark_used(
            torch.zeros(len(sequence), tables.exists[0].numel(), dtype=torch.long, device=element_ids.device),
            expanded["space_group_ids"], expanded["site_symmetry_ids"], expanded["enumeration_ids"],
            is_site & (before < position[:, None]))

        element_allowed = tables.element_allowed(position, previous_element, max_sites, config)
        self._check_targets("element", element_allowed, targets["element"], sequence, position, name)
        site = targets["element"] != config.stop_token_id
        available = tables.position_allowed(group[site], used[site], targets["element"][site],
                                            previous_element[site], previous_letter[site])
        site_symmetry_allowed = available.any(-1)
        self._check_targets("site_symmetry", site_symmetry_allowed, targets["site_symmetry"][site], sequence[site],
                            position[site], name)
        enumeration_allowed = available[torch.arange(int(site.sum()), device=element_ids.device),
                                        targets["site_symmetry"][site]]
        self._check_targets("enumeration", enumeration_allowed, targets["enumeration"][site], sequence[site],
                            position[site], name)
        return CascadeSteps(sequence, position, expanded, before <= position[:, None], targets, site,
                            element_allowed, site_symmetry_allowed, enumeration_allowed)

    @can_return_tuple
    def forward(self, space_group_ids: torch.Tensor, element_ids: torch.Tensor, site_symmetry_ids: torch.Tensor,
                enumeration_ids: torch.Tensor, multiplicity: torch.Tensor, dof: torch.Tensor,
                attention_mask: torch.Tensor | None = None, conditions: torch.Tensor | None = None,
                return_loss: bool = True, **kwargs: Any) -> CrystalGenerationModelOutput:
        """Loss and log-likelihood of every cascade step of every token, in three encoder passes.

        The batch is expanded to one row per (sequence, target token i); row (b, i) sees tokens ≤ i only.
        Pass 1 hides all of token i and predicts its element (or STOP); passes 2 and 3 run on the rows whose
        token is a site, revealing the element, then the site symmetry. Every prediction is restricted by the
        masks of ``WyckoffPositionTables``; a target outside them raises a ``ValueError``.

        The targets are the inputs themselves, so no labels are needed and, as with ``return_loss`` in
        transformers' contrastive models, ``return_loss=True`` (the default) lets ``Trainer`` compute training and
        evaluation losses from unlabelled batches. ``labels``, if a collator adds them, must equal ``element_ids``
        on the real tokens; they are taken through ``**kwargs`` so that ``Trainer`` does not wait for a label
        column that the model does not need.

        ``conditions`` (a conditional generator), ``(batch, len(config.condition_names))``, NaN where unknown: the
        loss is then of p(sites | S, conditions). In training each condition of each crystal is dropped (made
        unknown) with probability ``config.condition_dropout_prob``, so the same network also learns p(sites | S),
        the unconditional half of classifier-free guidance.
        """
        labels = kwargs.pop("labels", None)
        if kwargs:
            raise TypeError(f"unexpected arguments {sorted(kwargs)}")
        if attention_mask is None:
            attention_mask = torch.ones_like(element_ids)
        if labels is not None and not torch.equal(labels[attention_mask.bool()], element_ids[attention_mask.bool()]):
            raise ValueError("labels must equal element_ids on the real tokens: the cascade's targets are its inputs")
        inputs = dict(zip(FIELD_INPUTS, (space_group_ids, element_ids, site_symmetry_ids, enumeration_ids,
                                          multiplicity, dof), strict=True))
        if conditions is not None:
            if self.training and self.config.condition_dropout_prob > 0:
                dropped = torch.rand(conditions.shape, device=conditions.device) < self.config.condition_dropout_prob
                conditions = conditions.masked_fill(dropped, math.nan)
            inputs["conditions"] = conditions
        steps = self._cascade_steps(inputs, attention_mask, self.config.max_sites)
        sequence, position, site, targets = steps.sequence, steps.position, steps.site, steps.targets
        batch, length = element_ids.shape
        element_logits = self._predict("element", self._hide(steps.inputs, position, "element"), position,
                                       steps.key_mask, steps.element_allowed)
        site_inputs = {key: value[site] for key, value in steps.inputs.items()}
        site_position = position[site]
        site_symmetry_logits = self._predict("site_symmetry", self._hide(site_inputs, site_position, "site_symmetry"),
                                             site_position, steps.key_mask[site], steps.site_symmetry_allowed)
        enumeration_logits = self._predict("enumeration", self._hide(site_inputs, site_position, "enumeration"),
                                           site_position, steps.key_mask[site], steps.enumeration_allowed)

        predictions = (("element", element_logits, slice(None), steps.element_allowed),
                       ("site_symmetry", site_symmetry_logits, site, steps.site_symmetry_allowed),
                       ("enumeration", enumeration_logits, site, steps.enumeration_allowed))
        log_likelihood = element_logits.new_zeros(batch, dtype=torch.float32)
        losses, per_token = {}, {}
        for field, logits, where, allowed in predictions:
            all_log_probs = logits.float().log_softmax(-1)
            log_probs = all_log_probs.gather(1, targets[field][where][:, None]).squeeze(1)
            log_likelihood = log_likelihood.index_add(0, sequence[where], log_probs)
            if return_loss:
                losses[field] = self._cross_entropy(all_log_probs, log_probs, allowed)
            per_token[field] = logits.new_zeros(batch, length, logits.shape[-1])
            per_token[field][sequence[where], position[where]] = logits
        return CrystalGenerationModelOutput(
            loss=sum(losses.values()) if return_loss else None, element_loss=losses.get("element"),
            site_symmetry_loss=losses.get("site_symmetry"), enumeration_loss=losses.get("enumeration"),
            log_likelihood=log_likelihood, element_logits=per_token["element"],
            site_symmetry_logits=per_token["site_symmetry"], enumeration_logits=per_token["enumeration"])

    def _cross_entropy(self, all_log_probs: torch.Tensor, log_probs: torch.Tensor,
                       allowed: torch.Tensor) -> torch.Tensor:
        """Mean negative log-likelihood of the targets; in training with ``config.label_smoothing`` ε,
        (1 - ε) times that plus ε times the mean cross-entropy to the uniform distribution over the allowed values
        (smoothing toward impossible values would only teach the network what the masks already enforce)."""
        loss = -log_probs.mean()
        smoothing = self.config.label_smoothing if self.training else 0.0
        if not smoothing:
            return loss
        uniform = -(all_log_probs.masked_fill(~allowed, 0.0).sum(-1) / allowed.sum(-1)).mean()
        return (1 - smoothing) * loss + smoothing * uniform

    # ------------------------------------------------------------------------------------------- sampling

    @torch.no_grad()
    def generate(self, num_samples: int = 1, space_group: int | Sequence[int] | None = None,
                 temperature: float | None = None, seed: int | None = None,
                 allowed_elements: Sequence[str | int] | None = None,
                 required_elements: Sequence[str | int] | None = None, max_sites: int | None = None,
                 batch_size: int | None = None, tokenizer: Any = None, prompt: Any = None,
                 composition: Mapping[str | int, int] | None = None, max_atoms: int | None = None,
                 condition: Mapping[str, float | Sequence[float]] | None = None, guidance_scale: float = 1.0,
                 num_elements_range: Sequence[int] | None = None,
                 stop_logit_bias: Sequence[float] | None = None,
                 field_temperatures: Mapping[str, float] | None = None) -> GeneratedCrystals | list[Any]:
        """Sample ``num_samples`` crystals, valid by construction, sites in canonical order (in any order for a
        model with ``config.site_order = "any"``).

        Args:
            space_group: a group number (1-230) for every sample, or one number per sample; ``None`` samples
                each group from the prior ``generation_config.space_group_counts`` (uniform if unset).
            temperature: softmax temperature of every field (default ``generation_config.temperature``, for the
                fields ``generation_config.field_temperatures`` does not name).
            seed: seeds a ``torch.Generator`` on the model's device, so equal seeds give equal samples (for the
                same ``batch_size`` and device); ``None`` draws from torch's global RNG (``transformers.set_seed``).
            allowed_elements: element symbols (or element token ids) that sites may hold (renormalised masking).
            required_elements: symbols/ids every sample must contain, by rejection of unconstrained draws: the
                samples follow the model's conditional given the constraint. At most
                ``num_samples / generation_config.min_acceptance_rate`` draws are made; fewer acceptances raise.
            max_sites: most sites per sample, at most (and by default) ``config.max_sites`` (renormalised masking).
            batch_size: samples per batch (default 2048: on a 2-core CPU larger batches are no faster,
                and memory stays bounded; results depend on it, as the random stream is shared).
            tokenizer: a ``WyckoffTokenizer``; given, the samples come back decoded as representations.
            prompt: the space group and first sites of the samples, which the model completes (exact conditioning).
                One prompt for all samples or one per sample: ids as a ``WyckoffTokenizer`` returns them (batched
                or not; a row's prefix is its sites before the first STOP or PAD, so the STOP closing an encoded
                crystal ends it, and a row of STOP alone prompts with the group only), or ``WyckoffRepresentation``
                objects whose sites are the prefix (encoded with ``tokenizer``, which is then required). A prefix
                the model cannot produce (a position its group lacks, a 0-dof position twice, sites out of
                canonical order for a canonical-order model, more than ``max_sites`` sites) raises a
                ``ValueError`` naming the prompt and token.
                ``space_group``, if also given, must agree with the prompts' groups.
            composition: ``{element: count}`` of a formula unit (symbols or element ids): every sample holds exactly
                Z times these counts for some Z ≥ 1, within ``max_atoms`` atoms (crystal structure prediction).
                Renormalised masking, decided exactly (``CompositionMoves``): each step allows only the sites after
                which the composition stays reachable, so no sample is rejected or cut short. The sites come in
                canonical order, also from a model of any order. Without
                ``space_group`` the groups come from the prior restricted to those that can hold the composition;
                a composition that no allowed group can hold raises a ``ValueError`` before sampling. Not combined
                with ``prompt``, ``allowed_elements`` or ``required_elements``.
            max_atoms: most atoms per conventional cell under ``composition`` (default
                ``generation_config.max_atoms``, else 4 × ``config.max_sites``: MP-20's limit of 20 atoms per
                primitive cell is 80 in an F-centred conventional cell, the largest cell of its training data).
            condition: for a conditional generator (``config.condition_names``), ``{name: value}`` (one value for
                all samples, or one per sample); names left out are unknown. Exact conditioning on what the model
                learned, p(sites | S, condition), at ``guidance_scale`` 1.
            guidance_scale: classifier-free guidance with ``condition``: per step, logits = unconditional +
                ``guidance_scale`` × (conditional − unconditional), both from the same network (conditions
                unknown for the first). 1 samples the conditional, 0 ignores the condition, above 1 pushes samples
                further toward it at some cost in diversity.
            num_elements_range: ``(low, high)``, the numbers of distinct elements a sample may have (renormalised
                masking: a new element only while fewer than ``high``, STOP only once ``low`` are placed). Default
                ``generation_config.num_elements_range`` (the training split's range, written by training: a model
                of binary and ternary crystals then never writes a unary or a quaternary one), or none. Not used
                with ``composition``, which fixes the elements.
            stop_logit_bias: added to the (tempered) STOP logit of the token after ``k`` sites, entry ``k``; the
                last entry also serves every later position. Default ``generation_config.stop_logit_bias``, fitted
                on the validation split so that the sampled number of sites follows it
                (``wyckoff_hf.generation.calibration.calibrate_stop_bias``), or none.
            field_temperatures: ``{field: temperature}`` for some of ``"element"`` (STOP included),
                ``"site_symmetry"`` and ``"enumeration"``, as the authors' per-field temperatures. The structural
                fields choose the template (which of the group's positions are occupied), the element field its
                chemistry, so each can be tempered on its own. Per field the temperature is the first given of:
                this argument, ``temperature``, ``generation_config.field_temperatures``,
                ``generation_config.temperature``, 1. Arguments come before the checkpoint's defaults, so
                ``temperature=1.0`` alone samples every field at 1.

        Integers may be Python, numpy or 0-d torch integers. Returns ``GeneratedCrystals`` (with
        ``sequences_scores`` and ``acceptance_rate``), or the decoded representations with ``tokenizer``.
        """
        config, settings = self.config, self.generation_config
        num_samples = _integer(num_samples, "num_samples")
        max_sites = config.max_sites if max_sites is None else _integer(max_sites, "max_sites")
        batch_size = DEFAULT_GENERATION_BATCH_SIZE if batch_size is None else _integer(batch_size, "batch_size")
        temperatures = self.sampling_temperatures(temperature, field_temperatures)
        if num_samples < 1 or batch_size < 1 or not 1 <= max_sites <= config.max_sites:
            raise ValueError(f"need num_samples, batch_size ≥ 1 and 1 ≤ max_sites ≤ config.max_sites="
                             f"{config.max_sites}, got {num_samples}, {batch_size}, {max_sites}")
        generator = None
        if seed is not None:
            generator = torch.Generator(device=self.device).manual_seed(_integer(seed, "seed"))
        element_allowed = torch.zeros(config.element_vocab_size, dtype=torch.bool, device=self.device)
        allowed = self._element_ids(allowed_elements, "allowed_elements")
        element_allowed[config.mask_token_id + 1:] = allowed is None
        if allowed is not None:
            element_allowed[allowed] = True
        element_allowed[config.stop_token_id] = True
        required = self._element_ids(required_elements, "required_elements")
        if required is not None and (not element_allowed[required].all() or len(required) > max_sites):
            raise ValueError(f"required_elements {list(required_elements)} must be among the allowed elements and "
                             f"number at most max_sites={max_sites}")
        slot_groups = self._space_group_ids(space_group, num_samples)
        prompted = None if prompt is None else self._prompted_sites(prompt, num_samples, max_sites, tokenizer)
        if prompted is not None:
            if slot_groups is not None and not torch.equal(slot_groups, prompted.space_group):
                raise ValueError("space_group disagrees with the prompt's space group; give the group once")
            slot_groups = prompted.space_group
        moves = None
        if composition is not None:
            if prompt is not None or allowed is not None or required is not None:
                raise ValueError("composition fixes the elements and the sites: it is not combined with prompt, "
                                 "allowed_elements or required_elements")
            moves = self._composition_moves(composition, max_atoms, max_sites)
        prior = self._group_prior(slot_groups, moves)
        conditions = self._conditions(condition, num_samples)
        guidance_scale = float(guidance_scale)
        if not guidance_scale >= 0 or (guidance_scale != 1 and conditions is None):
            raise ValueError(f"guidance_scale must be ≥ 0 and is used with a condition only, got {guidance_scale}"
                             f"{'' if conditions is not None else ' without a condition'}")
        guidance = None if conditions is None else Guidance(conditions, guidance_scale)
        element_counts = self._element_count_limits(num_elements_range, composition is not None, element_allowed,
                                                    required, max_sites)
        stop_bias = self._stop_bias(getattr(settings, "stop_logit_bias", None) if stop_logit_bias is None
                                    else stop_logit_bias, max_sites)

        def sample(slots: torch.Tensor) -> dict[str, torch.Tensor]:
            groups = (torch.multinomial(prior, len(slots), replacement=True, generator=generator)
                      if slot_groups is None else slot_groups[slots])
            constraints = [] if prompted is None else [prompted.take(slots)]
            if moves is not None:
                constraints.append(CompositionSites(moves, groups, self.config))
            if element_counts is not None:
                constraints.append(ElementCountSites(*element_counts, len(slots), max_sites, self.config))
            return self._sample_batch(groups, element_allowed, max_sites, temperatures, generator, constraints,
                                      None if guidance is None else guidance.take(slots), stop_bias)

        was_training = self.training
        self.eval()
        try:
            output, acceptance_rate = self._sample_by_rejection(
                num_samples, required, float(getattr(settings, "min_acceptance_rate", 0.01)), sample, batch_size)
        finally:
            self.train(was_training)
        if required is not None:
            logger.info(f"required_elements {list(required_elements)}: acceptance rate {acceptance_rate:.3f}")
        result = GeneratedCrystals(**output, acceptance_rate=acceptance_rate)
        return result if tokenizer is None else tokenizer.decode(result)

    def _sample_by_rejection(self, num_samples: int, required: torch.Tensor | None, min_acceptance_rate: float,
                             sample: Callable[[torch.Tensor], dict[str, torch.Tensor]],
                             batch_size: int) -> tuple[dict[str, torch.Tensor], float | None]:
        """Fill ``num_samples`` slots, each with the first of its draws that contains every ``required`` element.

        ``sample(slots)`` draws one crystal per slot index given, from p(S) p(sites | S) or p(sites | S = the slot's
        group), so the accepted draw follows the conditional given the constraint. Later rounds draw several
        candidates per open slot, as many as the acceptance rate so far suggests, within
        ``num_samples / min_acceptance_rate`` draws in all. Without ``required`` one round accepts everything
        (acceptance rate ``None``).
        """
        width = self.config.max_sites + 1
        chosen: dict[str, torch.Tensor] = {}
        filled = torch.zeros(num_samples, dtype=torch.bool, device=self.device)
        drawn = accepted = 0
        budget = math.ceil(num_samples / min_acceptance_rate)
        while not filled.all():
            open_slots = (~filled).nonzero().squeeze(1)
            rate = max(accepted / drawn, min_acceptance_rate) if drawn else 1.0
            copies = min(math.ceil(1.2 / rate) if drawn else 1, (budget - drawn) // len(open_slots))
            if copies < 1:
                raise ValueError(
                    f"required_elements: only {accepted} of {drawn} draws contain them (acceptance rate "
                    f"{accepted / drawn:.4f} < generation_config.min_acceptance_rate={min_acceptance_rate}); the "
                    f"constraint is too rare to sample its conditional by rejection")
            candidates = open_slots.repeat_interleave(copies)  # sorted by slot, so a slot's first draw comes first
            for start in range(0, len(candidates), batch_size):
                slots = candidates[start:start + batch_size]
                batch = sample(slots)
                keep = torch.ones(len(slots), dtype=torch.bool, device=self.device)
                if required is not None:
                    keep = (batch["element_ids"][:, :, None] == required).any(1).all(1)
                drawn, accepted = drawn + len(slots), accepted + int(keep.sum())
                take = (keep & ~filled[slots]).nonzero().squeeze(1)
                take = take[torch.cat([take.new_ones(min(len(take), 1), dtype=torch.bool),
                                       slots[take[1:]] != slots[take[:-1]]])]
                for key, value in batch.items():
                    if value.dim() == 2:
                        value = F.pad(value, (0, width - value.shape[1]))
                    chosen.setdefault(key, value.new_zeros(num_samples, *value.shape[1:]))[slots[take]] = value[take]
                filled[slots[take]] = True
        length = int(chosen["attention_mask"].sum(1).max())
        output = {key: value[:, :length] if value.dim() == 2 else value for key, value in chosen.items()}
        return output, (accepted / drawn if required is not None else None)

    def _prompted_sites(self, prompt: Any, num_samples: int, max_sites: int, tokenizer: Any) -> PromptedSites:
        """The prompts as one row of ids per sample, checked against the masks the model samples with."""
        config, tables = self.config, self.tables
        if not isinstance(prompt, Mapping):
            if tokenizer is None:
                raise ValueError("prompt: representations need tokenizer= to become ids (or pass the tokenizer's ids)")
            prompt = tokenizer(list(prompt) if isinstance(prompt, list | tuple) else [prompt])
        fields = ("space_group_ids", "element_ids", "site_symmetry_ids", "enumeration_ids")
        missing = [key for key in fields if key not in prompt]
        if missing:
            raise ValueError(f"prompt lacks {missing}: pass a WyckoffTokenizer's ids or WyckoffRepresentations")
        ids = {key: torch.as_tensor(prompt[key], dtype=torch.long, device=self.device)
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
        self._cascade_steps(inputs, prefix, max_sites, name="prompt")
        return PromptedSites(*(value.expand(num_samples, *value.shape[1:]) for value in (
            group, ids["element_ids"], site_symmetry, enumeration, prefix.sum(1))))

    def _composition_moves(self, composition: Mapping[str | int, int], max_atoms: int | None,
                           max_sites: int) -> CompositionMoves:
        """The reachability search of ``composition`` (elements in canonical order) within ``max_atoms`` atoms."""
        if not isinstance(composition, Mapping) or not composition:
            raise ValueError(f"composition must be a non-empty mapping {{element: count}}, got {composition!r}")
        counts: dict[int, int] = {}
        for element, count in composition.items():
            index = int(self._element_ids([element], "composition")[0])
            if index in counts or _integer(count, f"composition count of {element!r}") < 1:
                raise ValueError(f"composition: {element!r} needs one count of at least 1, got {count!r}")
            counts[index] = int(count)
        rank = self.tables.element_rank.tolist()
        elements = sorted(counts, key=rank.__getitem__)
        vocabulary = self.config.element_vocabulary
        name = "".join(f"{vocabulary[e] if vocabulary else e}{counts[e]}" for e in elements)
        if max_atoms is None:
            max_atoms = getattr(self.generation_config, "max_atoms", None) or 4 * self.config.max_sites
        max_atoms = _integer(max_atoms, "max_atoms")
        if sum(counts.values()) > max_atoms:
            raise ValueError(f"composition {name} has {sum(counts.values())} atoms per formula unit, more than "
                             f"max_atoms={max_atoms}")
        return CompositionMoves(self.tables.wyckoff_positions.tolist(), elements, [counts[e] for e in elements],
                                max_atoms, max_sites, name)

    def _group_prior(self, slot_groups: torch.Tensor | None, moves: CompositionMoves | None) -> torch.Tensor | None:
        """p(S) for slots without a group: the prior, under a composition restricted to the groups that can hold it
        (renormalised). With a group per slot, ``None``, after checking that each group can hold the composition."""
        offset = self.config.mask_token_id
        if slot_groups is not None:
            for group in slot_groups.unique().tolist() if moves is not None else ():
                if not moves.reachable_from_start(group):
                    raise ValueError(f"composition {moves.name}: space group {group - offset} cannot hold it "
                                     f"({moves.limits})")
            return None
        prior = self.space_group_prior()
        if moves is not None:
            possible = [weight > 0 and moves.reachable_from_start(group) for group, weight in enumerate(prior.tolist())]
            prior = prior * torch.tensor(possible, dtype=prior.dtype, device=prior.device)
            if not prior.sum() > 0:
                raise ValueError(f"composition {moves.name}: no space group of the prior can hold it ({moves.limits})")
        return prior

    def _element_ids(self, elements: Sequence[str | int] | None, argument: str) -> torch.Tensor | None:
        """Element symbols or element token ids → sorted unique ids; a ValueError names any unknown one."""
        if elements is None:
            return None
        first, vocabulary = self.config.mask_token_id + 1, self.config.element_vocabulary or []
        ids = set()
        for element in elements:
            index = vocabulary.index(element) if isinstance(element, str) and element in vocabulary else element
            if isinstance(index, str) or not first <= _integer(index, argument) < self.config.element_vocab_size:
                raise ValueError(f"{argument}: {element!r} is not an element symbol or element id of the vocabulary")
            ids.add(int(index))
        if not ids:
            raise ValueError(f"{argument} is empty")
        return torch.tensor(sorted(ids), dtype=torch.long, device=self.device)

    def _element_count_limits(self, num_elements_range: Sequence[int] | None, composition: bool,
                              element_allowed: torch.Tensor, required: torch.Tensor | None,
                              max_sites: int) -> tuple[int, int, torch.Tensor, torch.Tensor | None] | None:
        """``(low, high, elements, later)`` for ``ElementCountSites`` (``elements``: the allowed element ids as a
        mask; ``later``: in canonical order, per element id, how many allowed elements rank after it), or ``None``
        when no range applies; a ``ValueError`` for a range no sample can meet."""
        if num_elements_range is None:
            if composition:
                return None
            num_elements_range = getattr(self.generation_config, "num_elements_range", None)
            if num_elements_range is None:
                return None
        elif composition:
            raise ValueError("num_elements_range is not combined with composition, which fixes the elements")
        if len(num_elements_range) != 2:
            raise ValueError(f"num_elements_range must be (low, high), got {num_elements_range!r}")
        low, high = (_integer(value, "num_elements_range") for value in num_elements_range)
        elements = element_allowed.clone()
        elements[: self.config.mask_token_id + 1] = False
        if not 1 <= low <= high or low > min(max_sites, int(elements.sum())):
            raise ValueError(f"num_elements_range ({low}, {high}) needs 1 ≤ low ≤ high and low ≤ max_sites={max_sites} "
                             f"and ≤ the {int(elements.sum())} allowed elements")
        if required is not None and len(required) > high:
            raise ValueError(f"required_elements name {len(required)} elements, more than num_elements_range allows "
                             f"({high})")
        if not self.tables.ordered:
            return low, high, elements, None
        rank = torch.where(elements, self.tables.element_rank.long(), -1)
        return low, high, elements, (rank[None, :] > rank[:, None]).sum(1)

    def _conditions(self, condition: Mapping[str, float | Sequence[float]] | None,
                    num_samples: int) -> torch.Tensor | None:
        """``generate``'s ``condition`` as ``(num_samples, len(config.condition_names))`` values, NaN for the
        names left out; ``None`` without a condition."""
        if condition is None:
            return None
        names = self.config.condition_names or []
        if not names:
            raise ValueError("condition given, but this model is not a conditional generator (no "
                             "config.condition_names)")
        if not isinstance(condition, Mapping) or not condition:
            raise ValueError(f"condition must be a non-empty mapping {{name: value}}, got {condition!r}")
        values = torch.full((num_samples, len(names)), math.nan, device=self.device)
        for name, value in condition.items():
            if name not in names:
                raise ValueError(f"condition {name!r} is not one this model was trained on: {names}")
            column = torch.as_tensor(value, dtype=torch.float32, device=self.device).flatten()
            if len(column) not in (1, num_samples) or not column.isfinite().all():
                raise ValueError(f"condition {name!r}: give one finite value, or one per sample ({num_samples}), "
                                 f"got {value!r}")
            values[:, names.index(name)] = column
        return values

    def space_group_prior(self) -> torch.Tensor:
        """The prior p(S) over space-group ids, unnormalised: ``generation_config.space_group_counts`` (the training
        split's counts), or 1 for every group with Wyckoff positions if unset."""
        real = self.tables.exists.flatten(1).any(1)
        counts = getattr(self.generation_config, "space_group_counts", None)
        if counts is None:
            return real.double()
        prior = torch.tensor(counts, dtype=torch.float64, device=self.device)
        if prior.shape != real.shape or (prior < 0).any() or prior.sum() <= 0 or (prior[~real] > 0).any():
            raise ValueError(f"generation_config.space_group_counts must hold {len(real)} non-negative counts, not all "
                             "zero, and zero for ids that are not space groups with Wyckoff positions")
        return prior

    def _space_group_ids(self, space_group: int | Sequence[int] | None, num_samples: int) -> torch.Tensor | None:
        """Group numbers → ids (the three specials come first, so id = number + 2); ``None`` stays ``None``
        (each draw samples its group from the prior)."""
        if space_group is None:
            return None
        if isinstance(space_group, Iterable) and not isinstance(space_group, str):
            numbers = [_integer(number, "space_group") for number in space_group]
        else:
            numbers = [_integer(space_group, "space_group")] * num_samples
        if len(numbers) != num_samples:
            raise ValueError(f"space_group lists {len(numbers)} groups for {num_samples} samples")
        real = self.tables.exists.flatten(1).any(1)
        for number in numbers:
            index = number + self.config.mask_token_id
            if not 0 < index < len(real) or not real[index]:
                raise ValueError(f"space_group {number} is not a space group of this model's tables (1-230)")
        return torch.tensor(numbers, dtype=torch.long, device=self.device) + self.config.mask_token_id

    def sampling_temperatures(self, temperature: float | None = None,
                              field_temperatures: Mapping[str, float] | None = None) -> dict[str, float]:
        """``{field: temperature}`` that ``generate`` samples with for these arguments: its precedence (arguments
        before the checkpoint's ``generation_config``, a field's own before the common one), checked (known fields,
        finite and positive), so jobs can record what they sampled at."""
        settings = self.generation_config
        defaults = getattr(settings, "field_temperatures", None) or {}
        given = {} if field_temperatures is None else dict(field_temperatures)
        for source, values in (("field_temperatures", given), ("generation_config.field_temperatures", defaults)):
            unknown = sorted(set(values) - set(SAMPLED_FIELDS))
            if unknown:
                raise ValueError(f"{source} names unknown field(s) {unknown}; the fields are {list(SAMPLED_FIELDS)}")
        fallback = getattr(settings, "temperature", None) or 1.0
        temperatures = {}
        for field in SAMPLED_FIELDS:
            chosen = next(value for value in (given.get(field), temperature, defaults.get(field), fallback)
                          if value is not None)
            try:
                temperatures[field] = float(chosen)
            except (TypeError, ValueError):
                temperatures[field] = math.nan
            if not 0 < temperatures[field] < math.inf:
                raise ValueError(f"the temperature of field {field!r} must be a positive finite number, got {chosen!r}")
        return temperatures

    def _stop_bias(self, stop_logit_bias: Sequence[float] | None, max_sites: int) -> torch.Tensor | None:
        """``stop_logit_bias``, checked, as the element-logit shift of each token position (row ``k``: the STOP
        column holds entry ``k``, the last entry repeated, every other column 0), built once per ``generate``."""
        if stop_logit_bias is None:
            return None
        values = [float(value) for value in stop_logit_bias]
        if not values or not all(math.isfinite(value) for value in values):
            raise ValueError(f"stop_logit_bias must be a non-empty list of finite numbers, got {stop_logit_bias!r}")
        values = (values + values[-1:] * (max_sites + 1))[: max_sites + 1]
        shifts = torch.zeros(max_sites + 1, self.config.element_vocab_size, device=self.device)
        shifts[:, self.config.stop_token_id] = torch.tensor(values, device=self.device)
        return shifts

    def _sample_field(self, field: str, state: dict[str, torch.Tensor], position: int, allowed: torch.Tensor,
                      temperature: float, generator: torch.Generator | None,
                      guidance: Guidance | None = None,
                      logit_bias: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Sample ``field`` of token ``position`` for every row under the mask ``allowed``; also its log-probability
        (of the distribution sampled: tempered, and shifted by ``logit_bias`` over the field's vocabulary).

        Rows with a single allowed value take it (log-probability 0) without an encoder pass: the masked softmax
        is one-hot there, so this is exact, and it skips most enumeration passes (most site symmetries occur
        once per group) and every forced element or STOP.
        """
        if not allowed.any(-1).all():
            raise ValueError(f"the sampling constraints leave no possible {field} for a sample: the prompt, "
                             "composition, elements and num_elements_range asked for contradict each other")
        choice = allowed.to(torch.uint8).argmax(-1)
        log_prob = torch.zeros(len(choice), device=choice.device)
        open_rows = (allowed.sum(-1) > 1).nonzero().squeeze(1)
        if len(open_rows):
            inputs = {key: value[open_rows, : position + 1] for key, value in state.items()}

            def logits_of(conditions: torch.Tensor | None) -> torch.Tensor:
                hidden = self.model(**inputs, conditions=conditions).last_hidden_state[:, position]
                return self.heads[field](hidden).float()

            logits = logits_of(None) if guidance is None else guidance.logits(logits_of, open_rows)
            logits = logits / temperature
            if logit_bias is not None:
                logits = logits + logit_bias
            log_probs = logits.masked_fill(~allowed[open_rows], -torch.inf).log_softmax(-1)
            picked = torch.multinomial(log_probs.exp(), 1, generator=generator)
            choice[open_rows] = picked.squeeze(1)
            log_prob[open_rows] = log_probs.gather(1, picked).squeeze(1)
        return choice, log_prob

    def _sample_batch(self, space_groups: torch.Tensor, element_allowed: torch.Tensor, max_sites: int,
                      temperatures: Mapping[str, float], generator: torch.Generator | None,
                      constraints: Sequence[PromptedSites | CompositionSites] = (),
                      guidance: Guidance | None = None,
                      stop_bias: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """One batch of samples, token by token and field by field; finished rows leave the batch.

        ``constraints`` narrow the masks further (prompts, compositions): each restricts the element and position
        masks of the rows still sampling (``rows``, indices into the batch) and records the sites placed.
        ``guidance`` holds the batch's conditions (one row per sample); ``stop_bias[k]`` shifts the element logits
        (the STOP one) after ``k`` sites."""
        config, tables, device = self.config, self.tables, space_groups.device
        count, width = len(space_groups), max_sites + 1
        state = {key: torch.zeros(count, width, dtype=torch.long, device=device) for key in FIELD_INPUTS}
        state["space_group_ids"][:] = space_groups[:, None]
        output = {key: value.clone() for key, value in state.items()}
        output["sequences_scores"] = torch.zeros(count, device=device)
        rows = torch.arange(count, device=device)
        scores = torch.zeros(count, device=device)
        used = torch.zeros(count, tables.exists[0].numel(), dtype=torch.long, device=device)
        for position in range(width):
            for key in CASCADE_HIDDEN["element"]:
                state[key][:, position] = hidden_value(key, config)
            group = state["space_group_ids"][:, 0]
            previous_element = torch.full_like(group, config.pad_token_id)
            previous_letter = torch.full_like(group, -1)
            if position:
                previous_element = state["element_ids"][:, position - 1]
                previous_letter = tables.letter_index[group, state["site_symmetry_ids"][:, position - 1],
                                                      state["enumeration_ids"][:, position - 1]]
            allowed = element_allowed & tables.element_allowed(torch.full_like(group, position), previous_element,
                                                               max_sites, config)
            for constraint in constraints:
                allowed = constraint.restrict_elements(allowed, rows, position)
            guide = None if guidance is None else guidance.take(rows)
            element, log_prob = self._sample_field("element", state, position, allowed, temperatures["element"],
                                                   generator, guide,
                                                   None if stop_bias is None else stop_bias[position])
            scores += log_prob
            stop = element == config.stop_token_id
            if stop.any():
                for key in ("element_ids", "site_symmetry_ids", "enumeration_ids"):
                    state[key][stop, position] = config.stop_token_id
                for key, value in state.items():
                    output[key][rows[stop]] = value[stop]
                output["sequences_scores"][rows[stop]] = scores[stop]
                keep = ~stop
                rows, element, used, scores = rows[keep], element[keep], used[keep], scores[keep]
                group, previous_element, previous_letter = group[keep], previous_element[keep], previous_letter[keep]
                state = {key: value[keep] for key, value in state.items()}
                if not len(rows):
                    break
                guide = None if guidance is None else guidance.take(rows)
            state["element_ids"][:, position] = element
            available = tables.position_allowed(group, used, element, previous_element, previous_letter)
            for constraint in constraints:
                available = constraint.restrict_positions(available, rows, position, element)
            site_symmetry, log_prob = self._sample_field("site_symmetry", state, position, available.any(-1),
                                                         temperatures["site_symmetry"], generator, guide)
            scores += log_prob
            state["site_symmetry_ids"][:, position] = site_symmetry
            enumeration, log_prob = self._sample_field(
                "enumeration", state, position, available[torch.arange(len(rows), device=device), site_symmetry],
                temperatures["enumeration"], generator, guide)
            scores += log_prob
            state["enumeration_ids"][:, position] = enumeration
            state["multiplicity"][:, position] = tables.multiplicity[group, site_symmetry, enumeration]
            state["dof"][:, position] = tables.dof[group, site_symmetry, enumeration]
            used = tables.mark_used(used, group, site_symmetry, enumeration, torch.ones_like(element).bool())
            for constraint in constraints:
                constraint.place(rows, element, site_symmetry, enumeration)
        output["attention_mask"] = (output["element_ids"] != config.pad_token_id).long()
        output["space_group_ids"] *= output["attention_mask"]
        return output


class WyckoffTransformerForPropertyPrediction(WyckoffTransformerPreTrainedModel):
    """The encoder with a property head: scalar properties (regression) or classes of a crystal from its Wyckoff
    representation alone, no coordinates (``AutoModelForSequenceClassification``, the transformers way:
    ``config.problem_type``, ``config.num_labels``, ``labels`` → ``loss``).

    The input is the encoded crystal, all fields visible (no cascade masking). The site states are pooled with
    weights equal to their multiplicities: a crystal is its atoms, not its list of sites, so a 16-atom site counts
    16 times a 1-atom one, and the prediction does not change when a site is split into equivalent ones. The
    pooled vector goes through a two-layer head.

    Regression targets are standardised with ``config.label_mean`` / ``label_std``: the head fits standardised
    values (the loss is on that scale, L1 or MSE by ``config.regression_loss``) and ``logits`` come back in the
    labels' units. ``problem_type`` ``None`` is inferred as transformers does: regression for one label, else
    single-label classification for integer labels, multi-label for float ones.
    """

    _keys_to_ignore_on_load_unexpected: ClassVar[list[str]] = [r"^(tables|heads)\."]  # a generator's heads

    def __init__(self, config: WyckoffTransformerConfig) -> None:
        super().__init__(config)
        self.model = WyckoffTransformerModel(config)
        self.classifier = nn.Sequential(nn.Dropout(config.hidden_dropout_prob),
                                        nn.Linear(config.hidden_size, config.hidden_size), nn.GELU(),
                                        nn.Linear(config.hidden_size, config.num_labels))
        self.post_init()

    def pool(self, hidden: torch.Tensor, element_ids: torch.Tensor, multiplicity: torch.Tensor,
             attention_mask: torch.Tensor) -> torch.Tensor:
        """``(batch, hidden)``: the multiplicity-weighted mean of the site states (STOP and padding excluded)."""
        weight = multiplicity.to(hidden.dtype) * (attention_mask.bool() & (element_ids > self.config.mask_token_id))
        return (hidden * weight[..., None]).sum(1) / weight.sum(1, keepdim=True).clamp(min=1)

    def _standardisation(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        count = self.config.num_labels
        mean = torch.tensor(self.config.label_mean or [0.0] * count, device=device)
        return mean, torch.tensor(self.config.label_std or [1.0] * count, device=device)

    @can_return_tuple
    def forward(self, space_group_ids: torch.Tensor, element_ids: torch.Tensor, site_symmetry_ids: torch.Tensor,
                enumeration_ids: torch.Tensor, multiplicity: torch.Tensor, dof: torch.Tensor,
                attention_mask: torch.Tensor | None = None, labels: torch.Tensor | None = None,
                **kwargs: Any) -> SequenceClassifierOutput:
        """``logits`` ``(batch, num_labels)`` (label units for regression) and, given ``labels`` (``(batch,)`` or
        ``(batch, num_labels)``), the loss. ``output_hidden_states`` / ``output_attentions`` pass to the encoder."""
        if attention_mask is None:
            attention_mask = torch.ones_like(element_ids)
        encoded = self.model(space_group_ids, element_ids, site_symmetry_ids, enumeration_ids, multiplicity, dof,
                             attention_mask=attention_mask, **kwargs)
        raw = self.classifier(self.pool(encoded.last_hidden_state, element_ids, multiplicity, attention_mask))
        config = self.config
        if config.problem_type is None and labels is not None:
            config.problem_type = ("regression" if config.num_labels == 1 else "single_label_classification"
                                   if not labels.is_floating_point() else "multi_label_classification")
        regression = config.problem_type == "regression" or (config.problem_type is None and config.num_labels == 1)
        mean, std = self._standardisation(raw.device)
        logits = raw.float() * std + mean if regression else raw
        loss = None
        if labels is not None:
            if regression:
                target = (labels.float().view(len(raw), -1) - mean) / std
                loss = (F.l1_loss if config.regression_loss == "l1" else F.mse_loss)(raw.float(), target)
            elif config.problem_type == "single_label_classification":
                loss = F.cross_entropy(raw.float().view(-1, config.num_labels), labels.view(-1))
            else:
                loss = F.binary_cross_entropy_with_logits(raw.float(), labels.float())
        return SequenceClassifierOutput(loss=loss, logits=logits, hidden_states=encoded.hidden_states,
                                        attentions=encoded.attentions)


IMPOSSIBLE_REASONS = {
    "element": "STOP as the first token, a site after config.max_sites sites, a special token, or an element out "
               "of the canonical order (Pauling electronegativity, then Z)",
    "site_symmetry": "a site symmetry the group lacks, only 0-dof positions already taken, or only letters before "
                     "the previous site's of the same element",
    "enumeration": "not a position of the group, a 0-dof position already taken, or a letter before the previous "
                   "site's of the same element",
}


def _integer(value: Any, argument: str) -> int:
    """A Python, numpy or 0-d torch integer as ``int``; a ValueError naming ``argument`` otherwise."""
    try:
        return operator.index(value)
    except TypeError:
        raise ValueError(f"{argument} must be an integer, got {value!r}") from None
