"""The cascade is what it claims to be: log-probabilities, hiding of the predicted fields, temperature, conditioning.

A reference cascade written out step by step here (one encoder pass per predicted field, the token's unknown fields
set to MASK by hand) must give the log-likelihood ``forward`` computes in three batched passes, and the scores
``generate`` reports for the samples it draws. Each of these breaks one of the two: a predicted field left visible,
PAD fed instead of MASK, the temperature ignored.
"""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from scipy.stats import chi2_contingency

from wyckoff_hf.modeling import WyckoffTransformerConfig, WyckoffTransformerForCrystalGeneration
from wyckoff_hf.tokenization import MASK_ID, STOP_ID, WyckoffRepresentation

TINY = {"space_group_embedding_size": 8, "element_embedding_size": 16, "site_symmetry_embedding_size": 8,
        "enumeration_embedding_size": 4, "derived_feature_size": 4, "num_hidden_layers": 2,
        "num_attention_heads": 2, "intermediate_size": 64, "hidden_dropout_prob": 0.0, "max_sites": 6}
# what the reference hides of the predicted token, per field (written out, not imported from the model)
UNKNOWN = {"element": ("element_ids", "site_symmetry_ids", "enumeration_ids", "multiplicity", "dof"),
           "site_symmetry": ("site_symmetry_ids", "enumeration_ids", "multiplicity", "dof"),
           "enumeration": ("enumeration_ids", "multiplicity", "dof")}


@pytest.fixture(scope="module")
def model(tokenizer) -> WyckoffTransformerForCrystalGeneration:
    torch.manual_seed(0)
    model = WyckoffTransformerForCrystalGeneration(WyckoffTransformerConfig.from_tokenizer(tokenizer, **TINY)).eval()
    with torch.no_grad():  # sharper than the initialisation, so that wrong inputs change the probabilities visibly
        for parameter in model.parameters():
            parameter.mul_(4.0)
        model.heads["element"].bias[STOP_ID] += 3.0  # and stopping early enough for a spread of lengths
    return model


@pytest.fixture(scope="module")
def validation(shared_data, tokenizer) -> dict[str, torch.Tensor]:
    cifs = pd.read_csv(shared_data / "mp_20_biternary" / "val.csv.gz", nrows=40)["cif"]
    crystals = [WyckoffRepresentation.from_structure(cif) for cif in cifs]
    return dict(tokenizer([c for c in crystals if len(c.sites) <= TINY["max_sites"]][:12], return_tensors="pt"))


def reference_log_likelihood(model, batch: dict[str, torch.Tensor],
                             temperature: float | dict[str, float] = 1.0) -> torch.Tensor:
    """log p of each row, one cascade step at a time, at one temperature or one per field; the masks of impossible
    values are read from ``forward``."""
    temperatures = temperature if isinstance(temperature, dict) else dict.fromkeys(UNKNOWN, temperature)
    masks = model(**batch)
    minimum = torch.finfo(masks.element_logits.dtype).min
    totals = []
    for row in range(len(batch["element_ids"])):
        length = int(batch["attention_mask"][row].sum())
        ids = {key: value[row, :length] for key, value in batch.items() if key != "attention_mask"}
        total = 0.0
        for i in range(length):
            for field in UNKNOWN:
                if field != "element" and ids["element_ids"][i] == STOP_ID:
                    break
                inputs = {key: value[None, : i + 1].clone() for key, value in ids.items()}
                for key in UNKNOWN[field]:
                    inputs[key][0, i] = 0 if key in ("multiplicity", "dof") else MASK_ID
                logits = model.heads[field](model.model(**inputs).last_hidden_state[0, i]) / temperatures[field]
                impossible = masks[f"{field}_logits"][row, i] == minimum
                log_probs = logits.masked_fill(impossible, -torch.inf).log_softmax(-1)
                total += float(log_probs[ids[f"{field}_ids"][i]])
        totals.append(total)
    return torch.tensor(totals)


def generated_batch(out) -> dict[str, torch.Tensor]:
    return {key: out[key] for key in ("space_group_ids", "element_ids", "site_symmetry_ids", "enumeration_ids",
                                      "multiplicity", "dof", "attention_mask")}


@torch.no_grad()
def test_forward_log_likelihood_is_the_sum_of_the_cascade_steps(model, validation):
    expected = reference_log_likelihood(model, validation)
    got = model(**validation).log_likelihood
    assert torch.allclose(got, expected, atol=1e-4), (got, expected)
    # and the loss is the mean per-prediction cross-entropy of the same steps
    sites = int((validation["element_ids"] > MASK_ID).sum())
    assert got.sum().neg() / (sites + len(got)) <= model(**validation).loss


@torch.no_grad()
def test_generate_scores_are_the_forward_log_likelihood_of_the_samples(model):
    out = model.generate(64, seed=0)
    assert out.sequences_scores.shape == (64,) and (out.sequences_scores < 0).all()
    assert torch.allclose(out.sequences_scores, model(**generated_batch(out)).log_likelihood, atol=1e-4)


@torch.no_grad()
def test_a_model_of_any_site_order_scores_its_samples_by_the_cascade(model, tokenizer):
    """Without order masks the same three identities hold: the samples' scores are the reference cascade's and
    ``forward``'s log-likelihood of the order drawn."""
    config = WyckoffTransformerConfig.from_tokenizer(tokenizer, **TINY, site_order="any")
    any_order = WyckoffTransformerForCrystalGeneration(config).eval()
    any_order.load_state_dict(model.state_dict())
    out = any_order.generate(8, seed=3)
    assert torch.allclose(out.sequences_scores, reference_log_likelihood(any_order, generated_batch(out)), atol=1e-4)
    assert torch.allclose(out.sequences_scores, any_order(**generated_batch(out)).log_likelihood, atol=1e-4)


@torch.no_grad()
def test_generate_scores_follow_the_temperature(model):
    out = model.generate(6, seed=1, temperature=0.5)
    expected = reference_log_likelihood(model, generated_batch(out), temperature=0.5)
    assert torch.allclose(out.sequences_scores, expected, atol=1e-4), (out.sequences_scores, expected)
    # a colder sampler concentrates on likelier crystals (under the untempered model)
    cold, hot = (model(**generated_batch(model.generate(300, seed=2, temperature=t))).log_likelihood
                 for t in (0.5, 2.0))
    assert cold.mean() > hot.mean() + 1.0


@torch.no_grad()
def test_each_field_samples_at_its_own_temperature(model):
    """``field_temperatures`` tempers each head by its own temperature: the scores are the reference cascade's with
    each field's logits divided by its temperature (one temperature for all three would not give them), and equal
    temperatures per field draw the very samples of the common temperature."""
    temperatures = {"element": 0.7, "site_symmetry": 3.0, "enumeration": 0.4}
    out = model.generate(6, seed=1, field_temperatures=temperatures)
    expected = reference_log_likelihood(model, generated_batch(out), temperature=temperatures)
    assert torch.allclose(out.sequences_scores, expected, atol=1e-4), (out.sequences_scores, expected)
    assert not torch.allclose(out.sequences_scores, reference_log_likelihood(model, generated_batch(out), 0.7),
                              atol=1e-2)
    per_field = model.generate(32, seed=4, field_temperatures=dict.fromkeys(UNKNOWN, 0.5))
    common = model.generate(32, seed=4, temperature=0.5)
    for key in ("element_ids", "site_symmetry_ids", "enumeration_ids", "sequences_scores"):
        assert torch.equal(per_field[key], common[key]), key


def test_sampling_temperatures_take_arguments_before_the_checkpoint_defaults(model, monkeypatch):
    monkeypatch.setattr(model.generation_config, "temperature", 0.9)
    monkeypatch.setattr(model.generation_config, "field_temperatures", {"site_symmetry": 2.0})
    assert model.sampling_temperatures() == {"element": 0.9, "site_symmetry": 2.0, "enumeration": 0.9}
    assert model.sampling_temperatures(None, {"enumeration": 3}) == {"element": 0.9, "site_symmetry": 2.0,
                                                                     "enumeration": 3.0}
    assert model.sampling_temperatures(1.0) == {"element": 1.0, "site_symmetry": 1.0, "enumeration": 1.0}
    assert model.sampling_temperatures(1.2, {"element": 0.5}) == {"element": 0.5, "site_symmetry": 1.2,
                                                                  "enumeration": 1.2}
    # generate samples at them: the checkpoint's per-field default draws what the same values passed draw
    default = model.generate(16, seed=5)
    explicit = model.generate(16, seed=5, field_temperatures=model.sampling_temperatures())
    assert torch.equal(default.sequences_scores, explicit.sequences_scores)
    assert not torch.equal(default.sequences_scores, model.generate(16, seed=5, temperature=0.9).sequences_scores)


@pytest.mark.parametrize(("temperature", "field_temperatures", "message"), [
    (None, {"elements": 1.0}, "field_temperatures names unknown field(s) ['elements']; the fields are ['element', "),
    (None, {"site_symmetry": 0}, "the temperature of field 'site_symmetry' must be a positive finite number, got 0"),
    (None, {"enumeration": float("inf")}, "the temperature of field 'enumeration' must be a positive finite number"),
    (None, {"element": "hot"}, "the temperature of field 'element' must be a positive finite number, got 'hot'"),
    (-1.0, None, "the temperature of field 'element' must be a positive finite number, got -1.0"),
])
def test_bad_temperatures_are_refused_naming_the_field(model, temperature, field_temperatures, message):
    with pytest.raises(ValueError) as error:
        model.generate(2, temperature=temperature, field_temperatures=field_temperatures)
    assert message in str(error.value)


def test_a_bad_checkpoint_field_temperature_names_the_generation_config(model, monkeypatch):
    monkeypatch.setattr(model.generation_config, "field_temperatures", {"stop": 2.0})
    with pytest.raises(ValueError, match=r"generation_config.field_temperatures names unknown field\(s\) \['stop'\]"):
        model.generate(2)


def test_required_elements_sample_the_conditional(model, tokenizer):
    """Constrained samples vs the unconstrained samples that happen to satisfy the constraint: one distribution.

    The element masks (``masked``) make a cheap base sampler; required elements are then rejection on top of it."""
    options = {"space_group": 62, "allowed_elements": ["Na", "K", "Cl", "O", "F"], "constraint_sampling": "masked"}
    constrained = model.generate(400, seed=0, required_elements=["F"], **options)
    assert 0.05 < constrained.acceptance_rate < 0.95
    free = model.generate(1500, seed=1, **options)
    with_fluorine = (free.element_ids == tokenizer.token_id("element", "F")).any(1)
    assert constrained.acceptance_rate == pytest.approx(float(with_fluorine.float().mean()), abs=0.06)
    sites = [out.attention_mask.sum(1)[mask] - 1 for out, mask in ((constrained, slice(None)), (free, with_fluorine))]
    table = [[int((s == n).sum()) for n in range(1, 7)] for s in sites]
    table = [[a, b] for a, b in zip(*table, strict=True) if a + b]
    assert chi2_contingency(table).pvalue > 0.01, table
    decoded = tokenizer.decode(constrained)
    assert all("F" in crystal.elements for crystal in decoded)


def site_counts(out) -> list[int]:
    sites = out.attention_mask.sum(1) - 1
    return [int((sites == n).sum()) for n in range(1, TINY["max_sites"] + 1)]


def same_distribution(first: list[int], second: list[int]) -> float:
    return chi2_contingency([[a, b] for a, b in zip(first, second, strict=True) if a + b]).pvalue


@pytest.mark.parametrize(("constraint", "resamples"), [
    ({"max_sites": 3}, False),  # the masks remove mass only at the cap's forced STOP: no weights spread before it
    ({"num_elements_range": (1, 1)}, True),
])
def test_sequential_monte_carlo_samples_the_conditional_where_masking_does_not(model, constraint, resamples,
                                                                               monkeypatch):
    """Rejection (``exact``) is the reference; renormalised masks pile samples up at the cap, SMC does not."""
    from wyckoff_hf.modeling.site_constraints import SiteConstraintList

    copied, original = [], SiteConstraintList.resample

    def spy(self, ancestors):
        copied.append(not torch.equal(ancestors, torch.arange(len(ancestors))))
        original(self, ancestors)

    monkeypatch.setattr(SiteConstraintList, "resample", spy)
    options = {"space_group": 62, **constraint}
    exact = model.generate(600, seed=0, **options)
    smc = model.generate(600, seed=1, constraint_sampling="smc", **options)
    masked = model.generate(600, seed=2, constraint_sampling="masked", **options)
    assert any(copied) == resamples and 1 < smc.effective_sample_size < 32 and 0.1 < exact.acceptance_rate < 0.9
    assert same_distribution(site_counts(exact), site_counts(smc)) > 0.01
    assert same_distribution(site_counts(exact), site_counts(masked)) < 1e-6


def test_constraint_benchmark_compares_each_mode_with_rejection(model, tokenizer, tmp_path, monkeypatch, capsys):
    from conftest import load_script

    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    monkeypatch.setattr("sys.argv", ["benchmark_constraints.py", "--model", str(tmp_path), "--num-samples", "300",
                                     "--allowed-elements", "Na", "K", "Cl", "O", "F", "Li", "Mg", "Ca", "S", "N"])
    load_script("benchmarks/benchmark_constraints").main()
    rows = {line.split(" | ")[0].strip("| "): line.split(" | ") for line in capsys.readouterr().out.splitlines()
            if line.startswith(("| exact", "| smc", "| masked"))}
    assert set(rows) == {"exact", "smc", "masked"} and rows["exact"][4] == "-"
    assert float(rows["smc"][4]) > 0.01 > 1e-6 > float(rows["masked"][4])  # site counts: SMC agrees, masking not


def test_too_rare_a_constraint_is_an_error(model):
    model.generation_config.min_acceptance_rate = 0.9
    try:
        with pytest.raises(ValueError, match=r"min_acceptance_rate=0\.9 draws \(acceptance rate"):
            model.generate(20, seed=0, space_group=225, required_elements=["O", "Na", "K", "Cl"])
    finally:
        model.generation_config.min_acceptance_rate = 0.01
