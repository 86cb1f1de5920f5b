"""Sampling from the cascade: ``WyckoffGenerationMixin.generate``, the sampler of
``WyckoffTransformerForCrystalGeneration`` (the way transformers' ``GenerationMixin`` serves its language models).

The loop samples token by token and field by field (element or STOP, site symmetry, enumeration), each from the
network's masked softmax: the masks of ``WyckoffPositionTables`` (the ones ``forward`` scores with), narrowed by
the constraints of ``site_constraints`` that the arguments ask for.

What each option samples. ``space_group`` conditions exactly (the model is p(sites | S)). ``required_elements``,
``num_atoms_range`` and, by default (``constraint_sampling="exact"``), ``allowed_elements``, ``max_sites`` below the
model's and ``num_elements_range`` are sampled by *rejection*: draws without them are kept when they meet them, so
the samples follow the exact conditional; the acceptance rate is reported, and too low a rate is an error. With
``constraint_sampling="masked"`` the last three are *renormalised masking* instead: disallowed choices are removed
at every step and the rest renormalised, which is not the model's conditional p(x | x uses only these elements) (a
prefix that would likely have continued with a forbidden element is not down-weighted).
``prompt`` conditions exactly as well: the given group and first sites are taken as they are (after checking that
the model could have produced them), the model samples the rest from p(rest | prompt, S), and the score is the
log-probability of that completion. ``composition`` (crystal structure prediction) is renormalised masking: every
step allows only the sites after which the composition (Z formula units for some Z ≥ 1, within ``max_atoms``) stays
reachable (``CompositionMoves`` decides it exactly), so every sample has exactly the composition, but the samples
follow the model's distribution restricted step by step, not its conditional p(x | composition): rank them by the
model's own log-likelihood (``wyckoff_hf.generation.csp``). ``condition``
(a conditional generator, ``config.condition_names``) is exact at ``guidance_scale`` 1: the network was trained on
p(sites | S, condition); other scales apply classifier-free guidance per step.

Randomness is counter-based (``SampleStreams``): every draw of sample ``i`` comes from a hash of (seed, i, attempt,
step), so a sample depends on the seed and its index only, not on the batch it shared or on how many samples were
asked for.
"""

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.nn import functional as F
from transformers.utils import ModelOutput, logging

from .configuration_wyckoff_transformer import CASCADE_HIDDEN, FIELD_INPUTS, SAMPLED_FIELDS, hidden_value
from .sampling_arguments import (
    acceptance_test,
    atom_range,
    check_prompt_within_limits,
    composition_moves,
    condition_values,
    element_count_limits,
    element_ids,
    element_range,
    group_prior,
    integer,
    prompted_sites,
    sampling_mode,
    space_group_ids,
    stop_shifts,
)
from .site_constraints import CompositionSites, ElementCountSites, SiteConstraint, SiteConstraintList

logger = logging.get_logger(__name__)

DEFAULT_GENERATION_BATCH_SIZE = 2048
SMC_PARTICLES = 32  # particles per sample under constraint_sampling="smc"
# generation_config.json defaults: temperature (calibrated after training), the space-group prior p(S) as counts
# per space-group id (None: uniform over the groups with Wyckoff positions), the lowest acceptance rate that
# rejection sampling of required_elements accepts before giving up, and the most atoms per conventional cell of
# composition-constrained samples (None: 4 × config.max_sites, see ``generate``).
DEFAULT_GENERATION_CONFIG = {"do_sample": True, "temperature": 1.0, "field_temperatures": None,
                             "space_group_counts": None, "min_acceptance_rate": 0.01, "max_atoms": None,
                             "num_elements_range": None}


@dataclass
class GeneratedCrystals(ModelOutput):
    r"""
    Sampled crystals as id tensors of shape ``(num_samples, length)`` in the tokenizer's layout: one token per
    site (in canonical order, unless ``config.site_order`` is ``"any"``), then a STOP token
    (element/site-symmetry/enumeration id = STOP), then padding (0).
    Decode with ``WyckoffTokenizer.decode``.

    sequences_scores: ``(num_samples,)``, the log-probability of each sample under the per-step distributions it
        was drawn from: the model's masked softmax at the sampling temperature T, shifted by the STOP logit bias,
        and renormalised over the masks of ``composition`` and of ``constraint_sampling="masked"``. Rejection (the
        default for the other constraints) does not change it: the normalising constant of the conditional is the
        acceptance rate. So at T = 1 without STOP shifts and without masks it is the model's log p(sites | space
        group), equal to ``forward(...).log_likelihood`` of the sequence. A checkpoint's ``generation_config`` may
        set a temperature and STOP shifts (the shipped one does): pass ``temperature=1.0, stop_logit_bias=[0.0]``
        to score with the model itself. At other T it is the log-probability under the tempered per-step
        distributions (softmax(logits / T)), not a tempered joint. With a ``prompt`` it is the log-probability of
        the completion given the prompt (the prompt's own steps count 0): at T = 1, the sequence's ``forward``
        log-likelihood less that of its prompt's steps. With a ``condition`` it is the log-probability under the
        conditional (guided, for ``guidance_scale`` ≠ 1) per-step distributions the sample was drawn from.
    acceptance_rate: accepted / drawn samples of the rejection sampler when a constraint is checked on complete
        samples (``required_elements``, the atom range, and the exact element constraints); else ``None``.
    effective_sample_size: with ``constraint_sampling="smc"``, the mean over samples of the effective sample size
        (Σw)² / Σw² of the final weights of the ``SMC_PARTICLES`` particles each was chosen from (their spread since
        the last resampling); else ``None``.
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
    effective_sample_size: float | None = None


class DecodedCrystals(list):
    """``generate(..., tokenizer=...)``: the decoded representations, a plain list that also keeps the
    ``sequences_scores`` (one float per sample) and ``acceptance_rate`` of ``GeneratedCrystals``."""

    def __init__(self, representations: Sequence[Any], sequences_scores: Sequence[float],
                 acceptance_rate: float | None, effective_sample_size: float | None = None) -> None:
        super().__init__(representations)
        self.sequences_scores = list(sequences_scores)
        self.acceptance_rate = acceptance_rate
        self.effective_sample_size = effective_sample_size


_GOLDEN = 0x9E3779B97F4A7C15 - (1 << 64)  # the 64-bit constants of splitmix64, as signed int64
_MIX_1 = 0xBF58476D1CE4E5B9 - (1 << 64)
_MIX_2 = 0x94D049BB133111EB - (1 << 64)


def _shift_right(value: torch.Tensor, bits: int) -> torch.Tensor:
    """Logical right shift of int64 values (torch's ``>>`` is arithmetic)."""
    return (value >> bits) & ((1 << (64 - bits)) - 1)


def _mix(value: torch.Tensor) -> torch.Tensor:
    """The splitmix64 finaliser (wrapping int64 arithmetic): a bijection that scrambles every bit."""
    value = (value ^ _shift_right(value, 30)) * _MIX_1
    value = (value ^ _shift_right(value, 27)) * _MIX_2
    return value ^ _shift_right(value, 31)


class SampleStreams:
    """Counter-based random numbers: one stream per draw (a sample index and the attempt at it), each a hash of
    (seed, index, attempt) advanced by the step number. Unlike one shared ``torch.Generator``, what sample ``i``
    draws does not depend on the other rows of its batch, on ``batch_size`` or on ``num_samples``."""

    def __init__(self, seed: int, device: torch.device) -> None:
        self.seed, self.device = seed, device

    def keys(self, samples: torch.Tensor, attempts: torch.Tensor) -> torch.Tensor:
        """One stream key per draw."""
        base = _mix(torch.tensor(self.seed, dtype=torch.long, device=self.device) + _GOLDEN)
        return _mix(_mix(base + samples * _GOLDEN) + attempts * _MIX_1)

    @staticmethod
    def choose(keys: torch.Tensor, step: int, weights: torch.Tensor) -> torch.Tensor:
        """For each row, an index drawn with probability proportional to ``weights`` (non-negative, some positive
        per row) by inverting the cumulative sum at the row's uniform number of step ``step``: the first index whose
        cumulative weight exceeds it, which always has a positive weight."""
        uniform = _shift_right(_mix(keys + torch.full_like(keys, step + 1) * _GOLDEN), 11).double() * 2.0 ** -53
        cumulative = weights.double().cumsum(-1).expand(len(keys), -1).contiguous()  # a row of weights serves all
        target = uniform * cumulative[:, -1]
        return torch.searchsorted(cumulative, target[:, None], right=True).squeeze(1).clamp(max=weights.shape[-1] - 1)


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


class WyckoffGenerationMixin:
    """``generate`` for a cascade generator: a model with ``model`` (the encoder), ``heads`` (one linear head per
    sampled field), ``tables`` (``WyckoffPositionTables``), ``cascade_steps`` (to check prompts), ``config`` and
    ``generation_config``."""

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
                 field_temperatures: Mapping[str, float] | None = None,
                 sample_offset: int = 0, num_atoms_range: Sequence[int] | None = None,
                 constraint_sampling: str = "exact") -> "GeneratedCrystals | DecodedCrystals":
        """Sample ``num_samples`` crystals, valid by construction, sites in canonical order (in any order for a
        model with ``config.site_order = "any"``).

        Args:
            space_group: a group number (1-230) for every sample, or one number per sample; ``None`` samples
                each group from the prior ``generation_config.space_group_counts`` (uniform if unset).
            temperature: softmax temperature of every field (default ``generation_config.temperature``, for the
                fields ``generation_config.field_temperatures`` does not name).
            seed: sample ``i`` is drawn from random numbers that depend on ``seed`` and ``i`` alone (a counter-based
                generator, ``SampleStreams``), so equal seeds give equal samples whatever ``num_samples``,
                ``batch_size`` or the rejection rounds; ``None`` draws the seed from torch's global RNG
                (``transformers.set_seed``).
            allowed_elements: element symbols (or element token ids) that sites may hold (see
                ``constraint_sampling``).
            required_elements: symbols/ids every sample must contain, by rejection of unconstrained draws: the
                samples follow the model's conditional given the constraint. At most
                ``num_samples / generation_config.min_acceptance_rate`` draws are made; fewer acceptances raise.
            max_sites: most sites per sample, at most (and by default) ``config.max_sites`` (see
                ``constraint_sampling``).
            batch_size: samples per batch (default 2048: on a 2-core CPU larger batches are no faster,
                and memory stays bounded); the samples do not depend on it.
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
            num_elements_range: ``(low, high)``, the numbers of distinct elements a sample may have (see
                ``constraint_sampling``; masked: a new element only while fewer than ``high``, STOP only once
                ``low`` are placed). Default ``generation_config.num_elements_range`` (the training split's range,
                written by training: a model of binary and ternary crystals then never writes a unary or a
                quaternary one), or none. Not used with ``composition``, which fixes the elements.
            stop_logit_bias: added to the (tempered) STOP logit of the token after ``k`` sites, entry ``k``; the
                last entry also serves every later position. Default ``generation_config.stop_logit_bias``, fitted
                on the validation split so that the sampled number of sites follows it
                (``wyckoff_hf.training.calibration.calibrate_stop_bias``), or none.
            field_temperatures: ``{field: temperature}`` for some of ``"element"`` (STOP included),
                ``"site_symmetry"`` and ``"enumeration"``, as the authors' per-field temperatures. The structural
                fields choose the template (which of the group's positions are occupied), the element field its
                chemistry, so each can be tempered on its own. Per field the temperature is the first given of:
                this argument, ``temperature``, ``generation_config.field_temperatures``,
                ``generation_config.temperature``, 1. Arguments come before the checkpoint's defaults, so
                ``temperature=1.0`` alone samples every field at 1.

            sample_offset: the index of the first sample in the seed's stream: sample ``i`` of this call is sample
                ``sample_offset + i`` of ``seed``, so a job cut into calls draws what one call would.
            num_atoms_range: ``(low, high)`` atoms per primitive cell (the conventional cell's over its lattice
                points), always by rejection (exact). Default ``generation_config.num_atoms_range``: the training
                split's range, written by training (with ``generation_config.lattice_points``), so the sampler keeps
                to the data's support (MP-20: at most 20 atoms).
            constraint_sampling: how ``allowed_elements``, ``max_sites`` and ``num_elements_range`` are met.
                ``"exact"`` (default): complete samples drawn without them are kept when they meet them
                (rejection), so the samples follow the model's conditional p(x | constraint) and
                ``acceptance_rate`` reports the cost; too rare a constraint (below
                ``generation_config.min_acceptance_rate``) raises. ``"masked"``: every step drops the choices that
                break them and renormalises the rest: fast at any rarity, but it samples
                q(x) = Π p(x_t | x_<t, allowed) / Z_t, not the conditional (a prefix that would likely have
                continued with a forbidden choice is not down-weighted, so long samples pile up at the caps).
                ``"smc"``: sequential Monte Carlo, ``SMC_PARTICLES`` masked proposals per sample, each weighted
                by the mass Z_t the masks removed at every step (p(x) / q(x) = Π Z_t) and resampled within the
                sample's particles whenever their weights spread (effective sample size below half), so that
                prefixes the constraint makes unlikely are dropped early instead of carried to the end; one
                particle is kept with probability ∝ weight. Consistent (the kept draws approach
                p(x | constraint) as the particles grow) at any rarity, at 32 times the cost;
                ``effective_sample_size`` says how well the final weights are spread, and ``sequences_scores`` is
                log p(x). Also reweights ``composition``'s masks. Not with a ``prompt``.

        Integers may be Python, numpy or 0-d torch integers. Returns ``GeneratedCrystals`` (with
        ``sequences_scores`` and ``acceptance_rate``), or with ``tokenizer`` the decoded representations as a
        ``DecodedCrystals`` list that keeps both.
        """
        config, settings = self.config, self.generation_config
        num_samples = integer(num_samples, "num_samples")
        max_sites = config.max_sites if max_sites is None else integer(max_sites, "max_sites")
        batch_size = (DEFAULT_GENERATION_BATCH_SIZE if batch_size is None
                      else integer(batch_size, "batch_size"))
        sample_offset = integer(sample_offset, "sample_offset")
        temperatures = self.sampling_temperatures(temperature, field_temperatures)
        if num_samples < 1 or batch_size < 1 or sample_offset < 0 or not 1 <= max_sites <= config.max_sites:
            raise ValueError(f"need num_samples, batch_size ≥ 1, sample_offset ≥ 0 and 1 ≤ max_sites ≤ "
                             f"config.max_sites={config.max_sites}, got {num_samples}, {batch_size}, {sample_offset}, "
                             f"{max_sites}")
        if seed is None:
            seed = int(torch.randint(0, 2**62, (1,)))
        elif not 0 <= integer(seed, "seed") < 2**63:
            raise ValueError(f"seed must be an integer from 0 to 2**63 - 1, got {seed}")
        streams = SampleStreams(int(seed), self.device)
        mode = sampling_mode(constraint_sampling, prompt)
        exact = mode == "exact"
        element_allowed = torch.zeros(config.element_vocab_size, dtype=torch.bool, device=self.device)
        allowed = element_ids(self, allowed_elements, "allowed_elements")
        element_allowed[config.mask_token_id + 1:] = allowed is None
        if allowed is not None:
            element_allowed[allowed] = True
        element_allowed[config.stop_token_id] = True
        required = element_ids(self, required_elements, "required_elements")
        if required is not None and (not element_allowed[required].all() or len(required) > max_sites):
            raise ValueError(f"required_elements {list(required_elements)} must be among the allowed elements and "
                             f"number at most max_sites={max_sites}")
        slot_groups = space_group_ids(self, space_group, num_samples)
        prompted = (None if prompt is None
                    else prompted_sites(self, prompt, num_samples, max_sites, tokenizer))
        if prompted is not None:
            if slot_groups is not None and not torch.equal(slot_groups, prompted.space_group):
                raise ValueError("space_group disagrees with the prompt's space group; give the group once")
            slot_groups = prompted.space_group
        moves = None
        if composition is not None:
            if prompt is not None or allowed is not None or required is not None:
                raise ValueError("composition fixes the elements and the sites: it is not combined with prompt, "
                                 "allowed_elements or required_elements")
            moves = composition_moves(self, composition, max_atoms, max_sites)
        prior = group_prior(self, slot_groups, moves)
        conditions = condition_values(self, condition, num_samples)
        guidance_scale = float(guidance_scale)
        if not guidance_scale >= 0 or (guidance_scale != 1 and conditions is None):
            raise ValueError(f"guidance_scale must be ≥ 0 and is used with a condition only, got {guidance_scale}"
                             f"{'' if conditions is not None else ' without a condition'}")
        guidance = None if conditions is None else Guidance(conditions, guidance_scale)
        elements = element_range(self, num_elements_range, composition is not None, element_allowed,
                                           required, max_sites)
        atoms = atom_range(self, num_atoms_range)
        # exact: allowed elements, fewer sites and the element range are checked on complete samples drawn
        # without them (rejection); masked: they narrow every step (renormalised), only the rest is checked
        accepts, checked = acceptance_test(
            self, required, element_allowed.clone() if exact and allowed is not None else None,
            max_sites if exact and max_sites < config.max_sites else None, elements if exact else None, atoms)
        if prompted is not None:
            check_prompt_within_limits(self, prompted, element_allowed, elements, atoms)
        element_counts = (None if exact or elements is None
                          else element_count_limits(self, *elements, element_allowed))
        if exact:
            element_allowed[config.mask_token_id + 1:] = True
            max_sites = config.max_sites
        stop_bias = stop_shifts(self, getattr(settings, "stop_logit_bias", None) if stop_logit_bias is None
                                        else stop_logit_bias, max_sites)

        def sample(slots: torch.Tensor, keys: torch.Tensor, particles: int | None) -> dict[str, torch.Tensor]:
            groups = (streams.choose(keys, -1, prior[None, :]) if slot_groups is None else slot_groups[slots])
            constraints = SiteConstraintList([] if prompted is None else [prompted.take(slots)])
            if moves is not None:
                constraints.append(CompositionSites(moves, groups, self.config))
            if element_counts is not None:
                constraints.append(ElementCountSites(*element_counts, len(slots), max_sites, self.config))
            return self._sample_batch(groups, keys, element_allowed, max_sites, temperatures, constraints,
                                      None if guidance is None else guidance.take(slots), stop_bias,
                                      particles=particles)

        was_training = self.training
        self.eval()
        try:
            output, acceptance_rate, effective_sample_size = self._fill_slots(
                num_samples, accepts, checked, float(getattr(settings, "min_acceptance_rate", 0.01)), sample,
                batch_size, streams, sample_offset, SMC_PARTICLES if mode == "smc" else None)
        finally:
            self.train(was_training)
        if accepts is not None:
            logger.info(f"{', '.join(checked)}: acceptance rate {acceptance_rate:.3f}")
        result = GeneratedCrystals(**output, acceptance_rate=acceptance_rate,
                                   effective_sample_size=effective_sample_size)
        if tokenizer is None:
            return result
        return DecodedCrystals(tokenizer.decode(result), result.sequences_scores.tolist(), acceptance_rate,
                               effective_sample_size)

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

    def _fill_slots(self, num_samples: int, accepts: Callable[[dict], torch.Tensor] | None, checked: Sequence[str],
                    min_acceptance_rate: float,
                    sample: Callable[[torch.Tensor, torch.Tensor, int | None], dict[str, torch.Tensor]],
                    batch_size: int, streams: SampleStreams, sample_offset: int,
                    particles: int | None) -> tuple[dict[str, torch.Tensor], float | None, float | None]:
        """Fill ``num_samples`` slots with draws of ``sample(slots, keys, particles)`` (one crystal per slot index
        given, from p(S) p(sites | S) or p(sites | S = the slot's group), with the random stream of each key).

        Rejection (``particles`` ``None``): each slot takes the first of its draws that ``accepts`` (the constraints
        ``checked``), so it follows the conditional given them. Draw ``a`` of slot ``i`` uses the stream of (sample
        ``sample_offset + i``, attempt ``a``), so which draw a slot keeps does not depend on the other slots. Later
        rounds draw several candidates per open slot, as many as the acceptance rate so far suggests.

        Sequential Monte Carlo (``particles`` K): each slot's K particles (consecutive rows of one batch, which
        ``sample`` resamples as it goes; fewer than K when the budget of draws runs low) come back with their
        ``log_weights``; the slot keeps one with probability ∝ weight among those that ``accepts``: as K grows the
        kept draw follows p(x | constraints). The mean effective sample size of a slot's final weights says how far
        from that limit it is.

        At most ``num_samples / min_acceptance_rate`` draws in all. Returns the samples, the acceptance rate (``None``
        without a test) and the mean effective sample size (``None`` without particles).
        """
        width = self.config.max_sites + 1
        chosen: dict[str, torch.Tensor] = {}
        filled = torch.zeros(num_samples, dtype=torch.bool, device=self.device)
        attempts = torch.zeros(num_samples, dtype=torch.long, device=self.device)
        drawn = accepted = 0
        sizes: list[torch.Tensor] = []
        budget = math.ceil(num_samples / min_acceptance_rate)

        def place(batch: dict[str, torch.Tensor], slots: torch.Tensor, rows: torch.Tensor) -> None:
            for key, value in batch.items():
                if value.dim() == 2:
                    value = F.pad(value, (0, width - value.shape[1]))
                chosen.setdefault(key, value.new_zeros(num_samples, *value.shape[1:]))[slots] = value[rows]
            filled[slots] = True

        while not filled.all():
            open_slots = (~filled).nonzero().squeeze(1)
            rate = max(accepted / drawn, min_acceptance_rate) if drawn else 1.0
            wanted = particles or (math.ceil(1.2 / rate) if drawn else 1)
            copies = min(wanted, (budget - drawn) // len(open_slots))
            if copies < 1:
                raise ValueError(
                    f"{', '.join(checked)}: only {accepted} of {drawn} draws meet them, and {len(open_slots)} of "
                    f"{num_samples} samples are still open after the budget of num_samples / "
                    f"generation_config.min_acceptance_rate={min_acceptance_rate} draws (acceptance rate "
                    f"{accepted / drawn:.4f} overall; rarer for the samples left, e.g. their space groups): too "
                    f"rare to sample their conditional by rejection; lower min_acceptance_rate, or pass "
                    f"constraint_sampling='smc' (masked proposals reweighted) or 'masked' (not the "
                    f"conditional)")
            candidates = open_slots.repeat_interleave(copies)  # sorted by slot, so a slot's first draw comes first
            first = attempts[open_slots]
            attempt = attempts[candidates] + torch.arange(len(candidates), device=self.device) % copies
            attempts[open_slots] += copies
            keys = streams.keys(candidates + sample_offset, attempt)
            drawn_now: list[tuple[dict[str, torch.Tensor], torch.Tensor]] = []
            chunk = batch_size if not particles else max(1, batch_size // copies) * copies  # whole slots
            for start in range(0, len(candidates), chunk):
                slots = candidates[start:start + chunk]
                batch = sample(slots, keys[start:start + chunk], copies if particles else None)
                keep = accepts(batch) if accepts is not None else torch.ones_like(slots, dtype=torch.bool)
                drawn, accepted = drawn + len(slots), accepted + int(keep.sum())
                if particles:
                    drawn_now.append(({key: F.pad(value, (0, width - value.shape[1])) if value.dim() == 2 else value
                                       for key, value in batch.items()}, keep))
                    continue
                take = (keep & ~filled[slots]).nonzero().squeeze(1)
                take = take[torch.cat([take.new_ones(min(len(take), 1), dtype=torch.bool),
                                       slots[take[1:]] != slots[take[:-1]]])]
                place(batch, slots[take], take)
            if particles:
                batch = {key: torch.cat([part[key] for part, _ in drawn_now]) for key in drawn_now[0][0]}
                log_weights = batch["log_weights"].masked_fill(~torch.cat([keep for _, keep in drawn_now]), -math.inf)
                log_weights = log_weights.view(len(open_slots), copies)
                alive = log_weights.isfinite().any(1)
                weights = (log_weights[alive] - log_weights[alive].amax(1, keepdim=True)).exp()
                sizes.append(weights.sum(1) ** 2 / (weights**2).sum(1))
                pick = SampleStreams.choose(streams.keys(open_slots[alive] + sample_offset, first[alive]), -2, weights)
                rows = alive.nonzero().squeeze(1) * copies + pick
                place(batch, open_slots[alive], rows)
        length = int(chosen["attention_mask"].sum(1).max())
        output = {key: value[:, :length] if value.dim() == 2 else value for key, value in chosen.items()
                  if key != "log_weights"}
        size = float(torch.cat(sizes).mean()) if sizes else None
        return output, (accepted / drawn if accepts is not None else None), size

    def _sample_field(self, field: str, state: dict[str, torch.Tensor], position: int, allowed: torch.Tensor,
                      temperature: float, keys: torch.Tensor, guidance: Guidance | None = None,
                      logit_bias: torch.Tensor | None = None,
                      base: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Sample ``field`` of token ``position`` for every row under the mask ``allowed``, with each row's random
        stream (``keys``); also its log-probability (of the distribution sampled: tempered, and shifted by
        ``logit_bias`` over the field's vocabulary) and the log of the probability mass that ``allowed`` keeps of
        the model's own mask ``base`` (0 without ``base``): the importance weight of the step.

        Rows with a single possible value take it (log-probability 0) without an encoder pass: the masked softmax
        is one-hot there, so this is exact, and it skips most enumeration passes (most site symmetries occur
        once per group) and every forced element or STOP.
        """
        if not allowed.any(-1).all():
            raise ValueError(f"the sampling constraints leave no possible {field} for a sample: the prompt, "
                             "composition, elements and num_elements_range asked for contradict each other")
        choice = allowed.to(torch.uint8).argmax(-1)
        log_prob = torch.zeros(len(choice), device=choice.device)
        log_mass = torch.zeros(len(choice), device=choice.device)
        open_rows = ((allowed if base is None else base).sum(-1) > 1).nonzero().squeeze(1)
        if len(open_rows):
            inputs = {key: value[open_rows, : position + 1] for key, value in state.items()}

            def logits_of(conditions: torch.Tensor | None) -> torch.Tensor:
                hidden = self.model(**inputs, conditions=conditions).last_hidden_state[:, position]
                return self.heads[field](hidden).float()

            logits = logits_of(None) if guidance is None else guidance.logits(logits_of, open_rows)
            logits = logits / temperature
            if logit_bias is not None:
                logits = logits + logit_bias
            kept = logits.masked_fill(~allowed[open_rows], -torch.inf)
            log_probs = kept.log_softmax(-1)
            if base is not None:
                whole = logits.masked_fill(~base[open_rows], -torch.inf).logsumexp(-1)
                log_mass[open_rows] = kept.logsumexp(-1) - whole
            picked = SampleStreams.choose(keys[open_rows], 3 * position + SAMPLED_FIELDS.index(field),
                                          log_probs.exp())
            choice[open_rows] = picked
            log_prob[open_rows] = log_probs.gather(1, picked[:, None]).squeeze(1)
        return choice, log_prob, log_mass

    @staticmethod
    def _resample(particles: int, step: int, keys: torch.Tensor, output: dict[str, torch.Tensor],
                  rows: torch.Tensor, weights: torch.Tensor,
                  constraints: SiteConstraint) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The resampling step of sequential Monte Carlo. In every group of ``particles`` consecutive rows (one
        sample's particles) whose weights have spread (effective sample size below half the group), each particle
        draws an ancestor with probability ∝ weight (from its own stream, ``keys``, at ``step``) and continues as a
        copy of it, and the group's weights become their mean, so the group's total stays. Finished particles
        (``output``) take part as they are: the copy of one is finished too. ``output["log_weights"]`` then holds
        every particle's weight; returns the rows still sampling and, for each, the index of its ancestor among
        the ``rows`` given (to copy the loop's state), or ``None`` when no group has spread (nothing changes)."""
        total = output["log_weights"].clone()
        total[rows] = weights
        grouped = total.view(-1, particles)
        relative = (grouped - grouped.amax(1, keepdim=True)).exp()
        spread = relative.sum(1) ** 2 / (relative**2).sum(1) < particles / 2
        if not spread.any():
            return None
        ancestors = torch.arange(len(total), device=total.device)
        members = spread.repeat_interleave(particles)
        drawn = SampleStreams.choose(keys[members], step, relative[spread].repeat_interleave(particles, 0))
        ancestors[members] = members.nonzero().squeeze(1) // particles * particles + drawn
        grouped[spread] = grouped[spread].logsumexp(1, keepdim=True) - math.log(particles)
        for key, value in output.items():
            output[key] = total if key == "log_weights" else value[ancestors]
        constraints.resample(ancestors)
        compact = torch.full_like(ancestors, -1)
        compact[rows] = torch.arange(len(rows), device=rows.device)
        source = compact[ancestors]
        alive = (source >= 0).nonzero().squeeze(1)
        return alive, source[alive]

    def _sample_batch(self, space_groups: torch.Tensor, keys: torch.Tensor, element_allowed: torch.Tensor,
                      max_sites: int, temperatures: Mapping[str, float],
                      constraints: SiteConstraint,
                      guidance: Guidance | None = None,
                      stop_bias: torch.Tensor | None = None,
                      particles: int | None = None) -> dict[str, torch.Tensor]:
        """One batch of samples, token by token and field by field; finished rows leave the batch.

        ``keys`` are the rows' random streams (``SampleStreams``). ``constraints`` narrow the masks further
        (prompts, compositions, element counts): they restrict the element and position masks of the rows still
        sampling (``rows``, indices into the batch) and record the sites placed.
        ``guidance`` holds the batch's conditions (one row per sample); ``stop_bias[k]`` shifts the element logits
        (the STOP one) after ``k`` sites. With ``particles`` K (sequential Monte Carlo), the rows come in groups of
        K particles of one sample; ``log_weights`` adds up, per particle, the log of the mass the masks kept at each
        step of the model's own (``config.max_sites``, every element), the ratio p / q of the model to the masked
        proposal, and ``_resample`` resamples a group whose weights spread; ``sequences_scores`` is then log p(x)
        (each step's log q plus the log of its kept mass), unchanged by resampling."""
        config, tables, device = self.config, self.tables, space_groups.device
        count, width, weigh, row_keys = len(space_groups), max_sites + 1, particles is not None, keys
        state = {key: torch.zeros(count, width, dtype=torch.long, device=device) for key in FIELD_INPUTS}
        state["space_group_ids"][:] = space_groups[:, None]
        output = {key: value.clone() for key, value in state.items()}
        output["sequences_scores"] = torch.zeros(count, device=device)
        output["log_weights"] = torch.zeros(count, device=device)
        rows = torch.arange(count, device=device)
        scores, weights = torch.zeros(count, device=device), torch.zeros(count, device=device)
        elements = torch.zeros_like(element_allowed)  # the model's own choices: every element, and STOP
        elements[config.mask_token_id + 1:] = elements[config.stop_token_id] = True
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
            positions = torch.full_like(group, position)
            allowed = element_allowed & tables.element_allowed(positions, previous_element, max_sites, config)
            allowed = constraints.restrict_elements(allowed, rows, position)
            base = (elements & tables.element_allowed(positions, previous_element, config.max_sites, config)
                    if weigh else None)
            guide = None if guidance is None else guidance.take(rows)
            element, log_prob, log_mass = self._sample_field(
                "element", state, position, allowed, temperatures["element"], keys, guide,
                None if stop_bias is None else stop_bias[position], base)
            scores += log_prob + log_mass
            weights += log_mass
            stop = element == config.stop_token_id
            if stop.any():
                for key in ("element_ids", "site_symmetry_ids", "enumeration_ids"):
                    state[key][stop, position] = config.stop_token_id
                for key, value in state.items():
                    output[key][rows[stop]] = value[stop]
                output["sequences_scores"][rows[stop]] = scores[stop]
                output["log_weights"][rows[stop]] = weights[stop]
                keep = ~stop
                rows, element, used, scores, keys = rows[keep], element[keep], used[keep], scores[keep], keys[keep]
                weights = weights[keep]
                group, previous_element, previous_letter = group[keep], previous_element[keep], previous_letter[keep]
                state = {key: value[keep] for key, value in state.items()}
                if not len(rows):
                    break
                guide = None if guidance is None else guidance.take(rows)
            state["element_ids"][:, position] = element
            possible = tables.position_allowed(group, used, element, previous_element, previous_letter)
            available = constraints.restrict_positions(possible.clone() if weigh else possible, rows, position,
                                                        element)
            site_symmetry, log_prob, log_mass = self._sample_field(
                "site_symmetry", state, position, available.any(-1), temperatures["site_symmetry"], keys, guide,
                base=possible.any(-1) if weigh else None)
            scores += log_prob + log_mass
            weights += log_mass
            state["site_symmetry_ids"][:, position] = site_symmetry
            chosen = torch.arange(len(rows), device=device), site_symmetry
            enumeration, log_prob, log_mass = self._sample_field(
                "enumeration", state, position, available[chosen], temperatures["enumeration"], keys, guide,
                base=possible[chosen] if weigh else None)
            scores += log_prob + log_mass
            weights += log_mass
            state["enumeration_ids"][:, position] = enumeration
            state["multiplicity"][:, position] = tables.multiplicity[group, site_symmetry, enumeration]
            state["dof"][:, position] = tables.dof[group, site_symmetry, enumeration]
            used = tables.mark_used(used, group, site_symmetry, enumeration, torch.ones_like(element).bool())
            constraints.place(rows, element, site_symmetry, enumeration)
            resampled = (self._resample(particles, 3 * width + position, row_keys, output, rows, weights, constraints)
                         if particles else None)
            if resampled is not None:
                rows, source = resampled
                state = {key: value[source] for key, value in state.items()}
                used, scores, keys, weights = used[source], scores[source], row_keys[rows], output["log_weights"][rows]
        output["attention_mask"] = (output["element_ids"] != config.pad_token_id).long()
        output["space_group_ids"] *= output["attention_mask"]
        return output

