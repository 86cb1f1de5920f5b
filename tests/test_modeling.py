"""The WyckoffTransformer: cascade loss, persistence, auto classes and constrained, valid generation."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pandas as pd
import pytest
import torch
from huggingface_hub.errors import StrictDataclassClassValidationError
from safetensors import safe_open
from transformers import AutoConfig, AutoModel, AutoModelForPreTraining, AutoTokenizer, set_seed

from wyckoff_hf.modeling import (
    GeneratedCrystals,
    WyckoffTransformerConfig,
    WyckoffTransformerForCrystalGeneration,
    WyckoffTransformerModel,
)
from wyckoff_hf.registration import register_auto_classes
from wyckoff_hf.tokenization import STOP_ID, WyckoffRepresentation, WyckoffTokenizer
from wyckoff_hf.tokenization.element_descriptors import DESCRIPTOR_NAMES
from wyckoff_hf.tokenization.representation import electronegativity_key
from wyckoff_hf.tokenization.wyckoff_tables import space_group_table

TINY = {"space_group_embedding_size": 8, "element_embedding_size": 16, "site_symmetry_embedding_size": 8,
        "enumeration_embedding_size": 4, "derived_feature_size": 4, "num_hidden_layers": 2,
        "num_attention_heads": 2, "intermediate_size": 64, "hidden_dropout_prob": 0.0}


@pytest.fixture(scope="module")
def config(tokenizer: WyckoffTokenizer) -> WyckoffTransformerConfig:
    return WyckoffTransformerConfig.from_tokenizer(tokenizer, **TINY)


@pytest.fixture
def model(config: WyckoffTransformerConfig) -> WyckoffTransformerForCrystalGeneration:
    torch.manual_seed(0)
    return WyckoffTransformerForCrystalGeneration(config).eval()


@pytest.fixture(scope="module")
def reps(shared_data) -> list[WyckoffRepresentation]:
    cifs = pd.read_csv(shared_data / "mp_20_biternary" / "val.csv.gz", nrows=32)["cif"]
    return [WyckoffRepresentation.from_structure(cif) for cif in cifs]


def nacl() -> WyckoffRepresentation:
    return WyckoffRepresentation.from_sites(225, [("Na", "a"), ("Cl", "b")])


def batch_of(tokenizer, items, **kwargs):
    return dict(tokenizer(items, return_tensors="pt", **kwargs))


def test_forward_shapes_and_finite_losses(model, tokenizer, reps):
    batch = batch_of(tokenizer, reps[:4])
    out = model(**batch)
    length = batch["element_ids"].shape[1]
    assert out.element_logits.shape == (4, length, 121)
    assert out.site_symmetry_logits.shape == (4, length, 81)
    assert out.enumeration_logits.shape == (4, length, 11)
    parts = [out.element_loss, out.site_symmetry_loss, out.enumeration_loss]
    assert all(torch.isfinite(p) and p > 0 for p in parts)
    assert torch.allclose(out.loss, sum(parts))
    hidden = model.model(**batch, output_hidden_states=True)
    assert hidden.last_hidden_state.shape == (4, length, model.config.hidden_size)
    assert len(hidden.hidden_states) == model.config.num_hidden_layers + 1
    assert isinstance(model(**batch, return_dict=False), tuple)


def test_padding_does_not_change_losses_or_logits(model, tokenizer, reps):
    alone = model(**batch_of(tokenizer, [reps[0]]))
    padded = model(**batch_of(tokenizer, [reps[0]], padding="max_length", max_length=22))
    real = len(reps[0].sites) + 1
    for name in ("loss", "element_loss", "site_symmetry_loss", "enumeration_loss"):
        assert torch.allclose(alone[name], padded[name], atol=1e-5), name
    assert torch.allclose(alone.element_logits, padded.element_logits[:, :real], atol=1e-4)
    # and in a batch with longer neighbours, the row's logits are unchanged
    mixed = model(**batch_of(tokenizer, [reps[0], max(reps, key=lambda r: len(r.sites))]))
    assert torch.allclose(alone.site_symmetry_logits, mixed.site_symmetry_logits[:1, :real], atol=1e-4)


def test_prediction_sees_only_the_prefix(model, tokenizer):
    """Changing a later token must not change the logits that predict an earlier one."""
    first = model(**batch_of(tokenizer, [WyckoffRepresentation.from_sites(221, [("Ba", "a"), ("O", "c")])]))
    other = model(**batch_of(tokenizer, [WyckoffRepresentation.from_sites(221, [("Ba", "a"), ("F", "c")])]))
    assert torch.allclose(first.element_logits[0, :2], other.element_logits[0, :2], atol=1e-5)
    assert not torch.allclose(first.element_logits[0, 2], other.element_logits[0, 2], atol=1e-5)


def test_site_count_embedding_is_added_to_the_predicted_token_only(tokenizer, reps, tmp_path):
    """The token being predicted (MASK in a field) gets the embedding of its index, the number of sites before it;
    the sites before it get nothing. The flag saves and loads with the config, and the model samples."""
    torch.manual_seed(0)
    model = WyckoffTransformerForCrystalGeneration(
        WyckoffTransformerConfig.from_tokenizer(tokenizer, **TINY, site_count_embedding=True)).eval()
    crystal = next(r for r in reps if len(r.sites) >= 3)
    batch = batch_of(tokenizer, [crystal])
    hidden = {key: value.clone() for key, value in batch.items() if key != "attention_mask"}
    hidden["element_ids"][0, 2] = model.config.mask_token_id  # token 2 is predicted, after 2 sites
    embeddings = model.model.embeddings
    counted = embeddings(**hidden)
    weights = embeddings.site_count.weight.detach().clone()
    with torch.no_grad():
        embeddings.site_count.weight.zero_()
    plain = embeddings(**hidden)
    with torch.no_grad():
        embeddings.site_count.weight.copy_(weights)
    assert torch.equal(counted[0, :2], plain[0, :2]) and torch.equal(counted[0, 3:], plain[0, 3:])
    assert torch.allclose(counted[0, 2] - plain[0, 2], weights[2], atol=1e-6)
    model.save_pretrained(tmp_path)
    loaded = WyckoffTransformerForCrystalGeneration.from_pretrained(tmp_path).eval()
    assert loaded.config.site_count_embedding and loaded.config.hidden_size == model.config.hidden_size
    assert torch.equal(loaded(**batch).element_logits, model(**batch).element_logits)
    crystals = loaded.generate(num_samples=16, seed=0, tokenizer=tokenizer)
    assert len(crystals) == 16 and all(c.sites for c in crystals)


def test_site_count_embedding_keeps_the_prefix_a_set(tokenizer, reps):
    """Only the predicted token gets its count: permuting the sites before it does not change its prediction."""
    torch.manual_seed(0)
    model = WyckoffTransformerForCrystalGeneration(
        WyckoffTransformerConfig.from_tokenizer(tokenizer, **TINY, site_count_embedding=True)).eval()
    crystal = next(r for r in reps if len({(s.element, s.letter) for s in r.sites}) >= 3)
    batch = batch_of(tokenizer, [crystal])
    stop = len(crystal.sites)
    batch["element_ids"][0, stop] = model.config.mask_token_id  # the STOP token, about to be predicted
    swapped = {key: value.clone() for key, value in batch.items()}
    for key, value in swapped.items():
        value[0, [0, 1]] = batch[key][0, [1, 0]]
    states = [model.model(**inputs).last_hidden_state[0, stop] for inputs in (batch, swapped)]
    assert torch.allclose(*states, atol=1e-5)


def test_element_descriptor_table_holds_known_chemistry(tokenizer):
    """Rows follow the element vocabulary: O is a p-block non-metal with oxidation state -2, Fe a d-block metal
    with +2 and +3, the special tokens are zeros, and the continuous columns are standardised."""
    table = np.array(tokenizer.model_config_kwargs(element_descriptors=True)["element_descriptor_table"])
    column = {name: i for i, name in enumerate(DESCRIPTOR_NAMES)}
    oxygen, iron = table[tokenizer.token_id("element", "O")], table[tokenizer.token_id("element", "Fe")]
    assert oxygen[column["block_p"]] == 1 and oxygen[column["is_metal"]] == 0
    assert oxygen[column["oxidation_state_-2"]] == 1 and oxygen[column["oxidation_state_+2"]] == 0
    assert iron[column["block_d"]] == 1 and iron[column["is_metal"]] == 1
    assert iron[column["oxidation_state_+2"]] == iron[column["oxidation_state_+3"]] == 1
    assert oxygen[column["electronegativity"]] > iron[column["electronegativity"]]
    assert not table[:STOP_ID + 2].any()  # PAD, STOP, MASK
    assert np.allclose(table[3:, :4].mean(0), 0, atol=1e-9)


def test_element_descriptors_enter_the_element_embedding_and_save_with_the_weights(tokenizer, reps, tmp_path):
    """With ``element_descriptors`` the element vector is the learned one plus the projected descriptors; the table
    is a buffer saved with the weights (not in config.json), and the loaded model predicts the same."""
    torch.manual_seed(0)
    config = WyckoffTransformerConfig.from_tokenizer(tokenizer, **TINY, element_descriptors=True)
    model = WyckoffTransformerForCrystalGeneration(config).eval()
    embeddings = model.model.embeddings
    ids = torch.tensor([tokenizer.token_id("element", "O"), tokenizer.token_id("element", "S")])
    table = torch.tensor(config.element_descriptor_table)
    expected = embeddings.element(ids) + table[ids] @ embeddings.element_descriptor_projection.weight.T
    assert torch.allclose(embeddings.element_embedding(ids), expected, atol=1e-6)
    model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["element_descriptor_size"] == len(DESCRIPTOR_NAMES) and "element_descriptor_table" not in saved
    loaded = WyckoffTransformerForCrystalGeneration.from_pretrained(tmp_path).eval()
    assert torch.equal(loaded.model.embeddings.element_descriptor_table, table)
    batch = batch_of(tokenizer, reps[:4])
    assert torch.equal(loaded(**batch).element_logits, model(**batch).element_logits)
    assert len(loaded.generate(num_samples=8, seed=0, tokenizer=tokenizer)) == 8


def test_element_descriptors_need_the_table(tokenizer):
    assert "element_descriptor_table" not in tokenizer.model_config_kwargs()  # pymatgen only when asked
    with pytest.raises(StrictDataclassClassValidationError, match="element_descriptor_table"):
        WyckoffTransformerConfig(**tokenizer.model_config_kwargs(), element_descriptors=True)


def test_label_smoothing_changes_the_training_loss_only(tokenizer, reps):
    """In training mode the loss mixes in the cross-entropy to the uniform distribution over allowed values (so it
    stays finite beside masked logits); in evaluation mode the loss is the exact NLL, equal to a model without it."""
    batch = batch_of(tokenizer, reps[:8])
    losses = {}
    for smoothing in (0.0, 0.2):
        torch.manual_seed(0)
        model = WyckoffTransformerForCrystalGeneration(
            WyckoffTransformerConfig.from_tokenizer(tokenizer, **TINY, label_smoothing=smoothing))
        losses[smoothing] = (model.train()(**batch), model.eval()(**batch))
    (plain_train, plain_eval), (smooth_train, smooth_eval) = losses[0.0], losses[0.2]
    assert torch.allclose(plain_train.loss, plain_eval.loss, atol=1e-5)
    assert torch.allclose(smooth_eval.loss, plain_eval.loss, atol=1e-5)
    assert torch.isfinite(smooth_train.loss) and not torch.allclose(smooth_train.loss, plain_train.loss, atol=1e-3)
    # the mixed term by hand for the element field: allowed values are those above the masked minimum
    logits = smooth_eval.element_logits[batch["attention_mask"].bool()].float()
    allowed = logits > torch.finfo(smooth_eval.element_logits.dtype).min
    log_probs = logits.log_softmax(-1)
    uniform = -(log_probs.masked_fill(~allowed, 0).sum(-1) / allowed.sum(-1)).mean()
    assert torch.allclose(smooth_train.element_loss, 0.8 * smooth_eval.element_loss + 0.2 * uniform, atol=1e-4)
    with pytest.raises(StrictDataclassClassValidationError, match="label_smoothing"):
        WyckoffTransformerConfig.from_tokenizer(tokenizer, label_smoothing=1.0)


def test_impossible_positions_are_masked_in_the_loss(model, tokenizer):
    out = model(**batch_of(tokenizer, [nacl()]))
    minimum = torch.finfo(out.element_logits.dtype).min
    masked = out.site_symmetry_logits[0, 0] == minimum
    assert masked[tokenizer.token_id("site_symmetry", "-1")]  # Fm-3m has no site with symmetry -1
    assert not masked[tokenizer.token_id("site_symmetry", "m-3m")]
    # Na took 4a (m-3m, enumeration 0, no free parameter): Cl may only take the other m-3m position, 4b
    enumeration = out.enumeration_logits[0, 1]
    assert enumeration[tokenizer.token_id("enumeration", 0)] == minimum
    assert enumeration[tokenizer.token_id("enumeration", 1)] > minimum
    assert out.element_logits[0, 0, STOP_ID] == minimum  # STOP never first


@pytest.mark.filterwarnings("ignore")
def test_tiny_model_overfits_32_structures(config, tokenizer, reps):
    torch.manual_seed(0)
    model = WyckoffTransformerForCrystalGeneration(
        WyckoffTransformerConfig.from_tokenizer(tokenizer, **{**TINY, "element_embedding_size": 32,
                                                              "site_symmetry_embedding_size": 16,
                                                              "intermediate_size": 128})).train()
    batch = batch_of(tokenizer, reps)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    initial = model(**batch).loss.item()
    for _ in range(150):
        optimizer.zero_grad()
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
    final = model.eval()(**batch).loss.item()
    assert final <= 0.1 * initial, (initial, final)


def test_save_and_load_give_identical_outputs(model, tokenizer, reps, tmp_path):
    model.generation_config.temperature = 0.7
    model.save_pretrained(tmp_path)
    files = {p.name for p in tmp_path.iterdir()}
    assert "model.safetensors" in files and not any(f.endswith(".bin") for f in files)
    loaded = WyckoffTransformerForCrystalGeneration.from_pretrained(tmp_path).eval()
    batch = batch_of(tokenizer, reps[:3])
    expected, got = model(**batch), loaded(**batch)
    assert torch.equal(expected.loss, got.loss) and torch.equal(expected.element_logits, got.element_logits)
    assert torch.equal(model.generate(8, seed=3).element_ids, loaded.generate(8, seed=3).element_ids)
    for name, table in model.tables.named_buffers():  # the tables travel in the weights, not in config.json
        assert torch.equal(getattr(loaded.tables, name), table), name
    assert loaded.config.num_wyckoff_positions == len(model.config.wyckoff_positions) == 1731
    assert loaded.generation_config.temperature == 0.7 and loaded.generation_config.min_acceptance_rate == 0.01


def test_config_json_is_small_and_sampling_defaults_are_in_the_generation_config(model, tmp_path):
    model.generation_config.space_group_counts = [0, 0, 0] + [1] * 230
    model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert "wyckoff_positions" not in saved and "sampling_temperature" not in saved
    assert len((tmp_path / "config.json").read_text().splitlines()) < 40  # print(config) fits a screen
    generation = json.loads((tmp_path / "generation_config.json").read_text())
    assert generation["temperature"] == 1.0 and sum(generation["space_group_counts"]) == 230
    with safe_open(tmp_path / "model.safetensors", "pt") as weights:
        assert weights.get_tensor("tables.wyckoff_positions").shape == (1731, 5)
        rank = weights.get_tensor("tables.element_rank")
    symbols = model.config.element_vocabulary
    assert rank[symbols.index("Na")] < rank[symbols.index("Cl")] < rank[symbols.index("F")]  # electronegativity


def test_auto_classes_after_registration(model, tokenizer, reps, tmp_path):
    register_auto_classes()
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    assert isinstance(AutoConfig.from_pretrained(tmp_path), WyckoffTransformerConfig)
    assert isinstance(AutoTokenizer.from_pretrained(tmp_path), WyckoffTokenizer)
    encoder = AutoModel.from_pretrained(tmp_path)
    assert type(encoder) is WyckoffTransformerModel
    assert type(AutoModelForPreTraining.from_pretrained(tmp_path)) is WyckoffTransformerForCrystalGeneration
    batch = batch_of(tokenizer, reps[:2])
    assert torch.equal(encoder.eval()(**batch).last_hidden_state, model.model(**batch).last_hidden_state)


def test_generation_is_reproducible(model):
    first, again = model.generate(16, seed=7), model.generate(16, seed=7)
    assert isinstance(first, GeneratedCrystals)
    for key in first:
        assert torch.equal(first[key], again[key]), key
    assert not torch.equal(first.element_ids, model.generate(16, seed=8).element_ids)
    assert torch.equal(first.element_ids, model.generate(np.int64(16), seed=np.int64(7)).element_ids)


def test_sample_i_depends_on_the_seed_and_i_only(model, tokenizer):
    """Sample i is the same whatever num_samples, batch_size or the rejection rounds; sample_offset continues the
    seed's stream, so a job cut into calls draws what one call draws."""
    whole = model.generate(40, seed=11)
    for other in (model.generate(7, seed=11), model.generate(40, seed=11, batch_size=3)):
        length = other.element_ids.shape[1]
        assert torch.equal(other.element_ids, whole.element_ids[: len(other.element_ids), :length])
        torch.testing.assert_close(other.sequences_scores, whole.sequences_scores[: len(other.element_ids)])
    tail = model.generate(15, seed=11, sample_offset=25)
    assert tokenizer.decode(tail) == tokenizer.decode(whole)[25:]
    rare = {"required_elements": ["O"], "seed": 3}
    assert tokenizer.decode(model.generate(6, **rare, batch_size=5)) == tokenizer.decode(model.generate(12, **rare))[:6]


def test_decoded_samples_keep_their_scores_and_acceptance_rate(model, tokenizer):
    ids = model.generate(10, seed=2, required_elements=["O"])
    decoded = model.generate(10, seed=2, required_elements=["O"], tokenizer=tokenizer)
    assert decoded == tokenizer.decode(ids) and decoded.acceptance_rate == ids.acceptance_rate
    assert decoded.sequences_scores == ids.sequences_scores.tolist()


def test_unseeded_generation_follows_the_global_rng(model):
    set_seed(0)
    first = model.generate(16)
    set_seed(0)
    again = model.generate(16)
    assert torch.equal(first.element_ids, again.element_ids)
    first.element_ids[0, 0] = 5  # plain tensors (no_grad, not inference_mode): editable by the caller
    assert not model.generate(16).element_ids.is_inference()


def test_generated_crystals_are_valid(model, tokenizer):
    out = model.generate(300, seed=0, batch_size=128)
    crystals = tokenizer.decode(out)  # the representation checks positions exist and 0-dof ones are not reused
    assert len(crystals) == 300
    lengths = out.attention_mask.sum(1)
    assert (out.element_ids[:, 0] != STOP_ID).all()
    assert (out.element_ids[torch.arange(300), lengths - 1] == STOP_ID).all()
    assert [len(c.sites) for c in crystals] == (lengths - 1).tolist()
    assert max(len(c.sites) for c in crystals) <= model.config.max_sites
    assert all(in_canonical_order(crystal) for crystal in crystals)  # the canonical order of the training data
    # the untrained model stops late, so 0-dof positions of a high-symmetry group are often contested
    fixed = [c for c in model.generate(100, space_group=225, seed=1, tokenizer=tokenizer)]
    assert all(Counter(s.letter for s in c.sites if s.dof == 0).most_common(1)[0][1] == 1
               for c in fixed if any(s.dof == 0 for s in c.sites))
    # round trip: decoded crystals tokenize back to the generated ids
    again = tokenizer(crystals, return_tensors="pt")
    assert torch.equal(again["element_ids"], out.element_ids[:, : again["element_ids"].shape[1]])


def test_max_sites_and_temperature(model, tokenizer):
    crystals = model.generate(50, seed=0, max_sites=3, temperature=0.5, tokenizer=tokenizer)
    assert all(1 <= len(c.sites) <= 3 for c in crystals)
    with pytest.raises(ValueError, match="max_sites"):
        model.generate(2, max_sites=model.config.max_sites + 1)


def test_element_constraints(model, tokenizer):
    allowed = {"Li", "Fe", "O", "P"}
    crystals = model.generate(60, seed=0, allowed_elements=sorted(allowed), required_elements=["O", "Li"],
                              max_sites=4, tokenizer=tokenizer, constraint_sampling="masked")
    assert all(set(c.elements) <= allowed for c in crystals)
    assert all({"O", "Li"} <= set(c.elements) for c in crystals)
    oxygen_id = tokenizer.token_id("element", "O")
    only_oxygen = model.generate(10, seed=0, allowed_elements=[oxygen_id], tokenizer=tokenizer,
                                 constraint_sampling="masked")
    assert all(c.elements == ("O",) for c in only_oxygen)


def test_number_of_distinct_elements_stays_in_range(model, tokenizer):
    counts = Counter(len(c.elements) for c in model.generate(300, seed=0, tokenizer=tokenizer))
    assert set(counts) - {2, 3}  # an untrained model writes other counts too...
    ranged = model.generate(300, seed=0, num_elements_range=(2, 3), tokenizer=tokenizer, constraint_sampling="masked")
    assert {len(c.elements) for c in ranged} == {2, 3}  # ...but not within the range
    model.generation_config.num_elements_range = [3, 3]  # the default, as training writes it
    three = model.generate(100, seed=0, allowed_elements=["Li", "Fe", "O", "P"], max_sites=4, tokenizer=tokenizer,
                           constraint_sampling="masked")
    assert all(len(c.elements) == 3 for c in three)
    # the only three elements ranked after Fe: a sample that starts with Fe must take all of them
    tail = model.generate(50, seed=0, allowed_elements=["Fe", "P", "O"], tokenizer=tokenizer,
                          constraint_sampling="masked")
    assert all(c.elements == ("Fe", "P", "O") for c in tail)
    made = model.generate(20, seed=0, composition={"Na": 1, "Cl": 1}, tokenizer=tokenizer)  # the default yields
    assert all(set(c.elements) == {"Na", "Cl"} for c in made)


def test_exact_constraints_keep_the_unconstrained_draws_that_meet_them(model, tokenizer):
    """Exact conditioning is rejection from the unconstrained sampler: sample i's first draw is the unconstrained
    sample i, so wherever that meets the constraints it is kept as it is, score included (no renormalisation)."""
    plain = model.generate(200, seed=4, tokenizer=tokenizer)
    constraints = {"max_sites": 3, "num_elements_range": (2, 3)}
    exact = model.generate(200, seed=4, tokenizer=tokenizer, **constraints)
    assert all(len(c.sites) <= 3 and len(c.elements) in (2, 3) for c in exact)
    meets = [i for i, c in enumerate(plain) if len(c.sites) <= 3 and len(c.elements) in (2, 3)]
    assert 20 < len(meets) < 200 and 0 < exact.acceptance_rate < 1
    assert [exact[i] for i in meets] == [plain[i] for i in meets]
    assert [exact.sequences_scores[i] for i in meets] == [plain.sequences_scores[i] for i in meets]
    masked = model.generate(200, seed=4, tokenizer=tokenizer, constraint_sampling="masked", **constraints)
    assert masked.acceptance_rate is None and all(len(c.sites) <= 3 for c in masked)


def test_sequential_monte_carlo_weighs_masked_proposals_back_to_the_model(model, tokenizer, monkeypatch):
    """Each kept draw's score is log q + log(p/q) = the model's own log p(x): forward's log-likelihood at T = 1."""
    crystals = model.generate(24, seed=6, max_sites=3, allowed_elements=["Li", "Fe", "O", "P"], temperature=1.0,
                              constraint_sampling="smc", tokenizer=tokenizer)
    assert all(len(c.sites) <= 3 and set(c.elements) <= {"Li", "Fe", "O", "P"} for c in crystals)
    assert 1 <= crystals.effective_sample_size <= 32 and crystals.acceptance_rate is None
    with torch.no_grad():
        forward = model(**tokenizer(list(crystals), return_tensors="pt")).log_likelihood
    torch.testing.assert_close(torch.tensor(crystals.sequences_scores), forward, rtol=0, atol=1e-4)
    masked = model.generate(24, seed=6, max_sites=3, allowed_elements=["Li", "Fe", "O", "P"], temperature=1.0,
                            constraint_sampling="masked", tokenizer=tokenizer)
    with torch.no_grad():
        forward = model(**tokenizer(list(masked), return_tensors="pt")).log_likelihood
    assert all(score > full for score, full in zip(masked.sequences_scores, forward.tolist(), strict=True))
    # resampled particles carry their composition state along: every kept sample still has exactly the composition
    salts = model.generate(16, seed=2, composition={"Na": 1, "Cl": 3}, constraint_sampling="smc", temperature=1.0,
                           tokenizer=tokenizer)
    assert {c.composition.reduced_formula for c in salts} == {"NaCl3"}
    with torch.no_grad():
        forward = model(**tokenizer(list(salts), return_tensors="pt")).log_likelihood
    torch.testing.assert_close(torch.tensor(salts.sequences_scores), forward, rtol=0, atol=1e-4)
    # a budget of draws below 32 per sample (num_samples / min_acceptance_rate) leaves fewer particles per sample
    monkeypatch.setattr(model.generation_config, "min_acceptance_rate", 0.1)
    few = model.generate(24, seed=6, max_sites=3, allowed_elements=["Li", "Fe", "O", "P"], temperature=1.0,
                         constraint_sampling="smc", tokenizer=tokenizer)
    assert few.effective_sample_size <= 10 and all(len(c.sites) <= 3 for c in few)
    with torch.no_grad():
        forward = model(**tokenizer(list(few), return_tensors="pt")).log_likelihood
    torch.testing.assert_close(torch.tensor(few.sequences_scores), forward, rtol=0, atol=1e-4)
    with pytest.raises(ValueError, match="not combined with a prompt"):
        model.generate(2, constraint_sampling="smc", prompt=[WyckoffRepresentation.from_sites(
            225, [("Na", "a")])], tokenizer=tokenizer)


def test_atoms_per_primitive_cell_stay_in_the_range(model, tokenizer):
    with pytest.raises(ValueError, match="lattice_points"):
        model.generate(4, seed=0, num_atoms_range=(2, 6))
    model.generation_config.lattice_points = tokenizer.lattice_points()
    crystals = model.generate(100, seed=0, num_atoms_range=(2, 6), tokenizer=tokenizer)
    assert all(2 <= c.num_primitive_atoms <= 6 for c in crystals) and crystals.acceptance_rate < 1
    assert {c.num_primitive_atoms for c in crystals} >= {2, 6}
    model.generation_config.num_atoms_range = [2, 6]  # the default, as training writes it
    assert all(2 <= c.num_primitive_atoms <= 6 for c in model.generate(20, seed=1, tokenizer=tokenizer))


def test_too_rare_a_constraint_names_the_ways_out(model):
    with pytest.raises(ValueError, match=r"allowed_elements: only .* constraint_sampling='smc'"):
        model.generate(20, seed=0, allowed_elements=["O"])


def in_canonical_order(crystal: WyckoffRepresentation) -> bool:
    table = space_group_table(crystal.space_group)
    keys = [(*electronegativity_key(s.element), table.letter_index(s.letter)) for s in crystal.sites]
    return keys == sorted(keys)


def test_a_model_of_any_site_order_samples_every_order_within_the_other_masks(config, tokenizer):
    torch.manual_seed(0)
    model = WyckoffTransformerForCrystalGeneration(
        WyckoffTransformerConfig.from_tokenizer(tokenizer, **TINY, site_order="any")).eval()
    crystals = model.generate(300, seed=0, num_elements_range=(2, 3), tokenizer=tokenizer)  # valid, decoded
    assert sum(not in_canonical_order(c) for c in crystals) > 100
    assert {len(c.elements) for c in crystals} == {2, 3}
    # the element masks let every allowed element not placed yet come: a sample that starts with O takes Fe and P too
    exact = model.generate(100, seed=0, allowed_elements=["Fe", "P", "O"], num_elements_range=(3, 3),
                           constraint_sampling="masked", tokenizer=tokenizer)
    assert all(set(c.elements) == {"Fe", "P", "O"} for c in exact)
    assert len({c.elements for c in exact}) > 2
    # a site-by-site composition search walks the canonical order, which a model of any order also gives
    made = model.generate(20, seed=0, composition={"Na": 1, "Cl": 3}, tokenizer=tokenizer)
    assert all(in_canonical_order(c) and c.composition.reduced_formula == "NaCl3" for c in made)
    # a crystal out of canonical order has a probability under it, and none under a canonical model
    swapped = batch_of(tokenizer, [WyckoffRepresentation.from_sites(225, [("Cl", "b"), ("Na", "a")], canonical=False)])
    assert torch.isfinite(model(**swapped).log_likelihood).all()
    with pytest.raises(ValueError, match="token 1: element"):
        WyckoffTransformerForCrystalGeneration(config)(**swapped)
    with pytest.raises(StrictDataclassClassValidationError, match="site_order must be one of"):
        WyckoffTransformerConfig.from_tokenizer(tokenizer, **TINY, site_order="shuffled")


@pytest.mark.parametrize("kwargs, message", [
    ({"num_elements_range": (3, 2)}, r"needs 1 ≤ low ≤ high"),
    ({"num_elements_range": (3, 3), "allowed_elements": ["Na", "Cl"]}, "the 2 allowed elements"),
    ({"num_elements_range": (2, 2), "max_sites": 1}, "max_sites=1"),
    ({"num_elements_range": (1, 1), "required_elements": ["Na", "Cl"]}, "more than num_elements_range allows"),
    ({"num_elements_range": (2, 3), "composition": {"Na": 1, "Cl": 1}}, "not combined with composition"),
    ({"num_elements_range": (2,)}, r"must be \(low, high\)"),
])
def test_impossible_element_ranges_are_reported(model, kwargs, message):
    with pytest.raises(ValueError, match=message):
        model.generate(3, **kwargs)


@pytest.mark.parametrize("mode", ["exact", "masked"])
@pytest.mark.parametrize("limit, reason", [
    ({"num_elements_range": (1, 2)}, "more than num_elements_range's 2 elements"),
    ({"allowed_elements": ["Ba", "O"]}, "an element outside allowed_elements"),
    ({"num_atoms_range": (2, 4)}, "more than num_atoms_range's 4 atoms per primitive cell"),
])
def test_a_prompt_that_contradicts_a_limit_is_reported(model, tokenizer, mode, limit, reason, monkeypatch):
    monkeypatch.setattr(model.generation_config, "lattice_points", tokenizer.lattice_points(), raising=False)
    prompt = WyckoffRepresentation.from_sites(221, [("Ba", "a"), ("Ti", "b"), ("O", "c")])  # 3 elements, 5 atoms
    with pytest.raises(ValueError, match=f"^prompt 0 has {reason}: .* contradict each other"):  # before sampling
        model.generate(2, prompt=prompt, tokenizer=tokenizer, constraint_sampling=mode, **limit)


def test_space_group_choice(model, tokenizer):
    assert {c.space_group for c in model.generate(20, space_group=194, seed=0, tokenizer=tokenizer)} == {194}
    groups = [1, 2, 225, 230, 62] * 4
    assert [c.space_group for c in model.generate(20, space_group=groups, seed=0, tokenizer=tokenizer)] == groups
    assert [c.space_group for c in model.generate(20, space_group=np.array(groups), seed=0,
                                                  tokenizer=tokenizer)] == groups
    assert {c.space_group for c in model.generate(3, space_group=np.int32(194), tokenizer=tokenizer)} == {194}


def test_prior_space_groups(model, tokenizer):
    counts = [0] * 233
    counts[225 + 2], counts[12 + 2] = 3, 1
    model.generation_config.space_group_counts = counts
    seen = Counter(c.space_group for c in model.generate(200, seed=0, max_sites=2, tokenizer=tokenizer))
    assert set(seen) == {225, 12} and seen[225] > seen[12]
    model.generation_config.space_group_counts = [1] * 233  # ids 0-2 are special tokens, not groups
    with pytest.raises(ValueError, match="space_group_counts"):
        model.generate(2)


@pytest.mark.parametrize("kwargs, message", [
    ({"space_group": 231}, "space_group 231"),
    ({"space_group": [225, 225]}, "2 groups for 3 samples"),
    ({"allowed_elements": ["Xx"]}, "'Xx'"),
    ({"allowed_elements": ["O"], "required_elements": ["Fe"]}, "required_elements"),
    ({"temperature": 0.0}, "temperature"),
    ({"space_group": 2.5}, "space_group must be an integer"),
    ({"seed": "zero"}, "seed must be an integer"),
    ({"seed": -1}, "seed must be an integer from 0 to 2\\*\\*63 - 1"),
    ({"sample_offset": -1}, "sample_offset ≥ 0"),
])
def test_bad_generation_arguments_are_reported(model, kwargs, message):
    with pytest.raises(ValueError, match=message):
        model.generate(3, **kwargs)


@pytest.mark.parametrize("field, value, message", [
    ("num_hidden_layers", "3", "Field 'num_hidden_layers' expected int, got str"),
    ("site_count_embedding", "yes", "Field 'site_count_embedding' expected bool"),
    ("max_sites", 2.5, "Field 'max_sites' expected int, got float"),
    ("max_sites", 0, "max_sites must be at least 1"),
])
def test_a_wrong_type_or_value_in_config_json_is_refused_in_one_line(model, tmp_path, field, value, message):
    from transformers import AutoConfig

    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, field: value}))
    for load in (AutoConfig.from_pretrained, WyckoffTransformerConfig.from_pretrained,
                 WyckoffTransformerForCrystalGeneration.from_pretrained):
        with pytest.raises(ValueError, match=message) as error:
            load(tmp_path)
        assert str(error.value).startswith(f"{tmp_path}/config.json: ") and "\n" not in str(error.value)


def test_config_validation(tokenizer):
    with pytest.raises(StrictDataclassClassValidationError, match="multiple of num_attention_heads"):
        WyckoffTransformerConfig(num_attention_heads=3)
    with pytest.raises(ValueError, match="no wyckoff_positions"):
        WyckoffTransformerForCrystalGeneration(WyckoffTransformerConfig())
    with pytest.raises(StrictDataclassClassValidationError, match="element_canonical_order"):
        WyckoffTransformerConfig.from_tokenizer(tokenizer, element_canonical_order=[3, 4])


# ----------------------------------------------------------------------------------- the transformers contract


def test_eager_and_sdpa_agree_and_eager_returns_attention_weights(config, tokenizer, reps, tmp_path):
    torch.manual_seed(0)
    WyckoffTransformerModel(config).save_pretrained(tmp_path)
    sdpa = WyckoffTransformerModel.from_pretrained(tmp_path)
    eager = WyckoffTransformerModel.from_pretrained(tmp_path, attn_implementation="eager")
    assert (sdpa.config._attn_implementation, eager.config._attn_implementation) == ("sdpa", "eager")
    batch = batch_of(tokenizer, reps[:4])
    out = eager(**batch, output_attentions=True, output_hidden_states=True)
    assert torch.allclose(out.last_hidden_state, sdpa(**batch).last_hidden_state, atol=1e-5)
    assert len(out.attentions) == config.num_hidden_layers and len(out.hidden_states) == config.num_hidden_layers + 1
    weights, visible = out.attentions[0], batch["attention_mask"].bool()
    assert weights.shape == (4, config.num_attention_heads, *visible.shape[1:], visible.shape[1])
    assert torch.allclose(weights.sum(-1), torch.ones(()), atol=1e-5)
    assert (weights[~visible[:, None, None, :].expand_as(weights)] == 0).all()  # padding receives no attention


@pytest.mark.filterwarnings("ignore:`gradient_checkpointing_enable` is deprecated")
def test_gradient_checkpointing_gives_the_same_loss_and_gradients(config, tokenizer, reps):
    torch.manual_seed(0)
    plain = WyckoffTransformerForCrystalGeneration(config).train()
    checkpointed = WyckoffTransformerForCrystalGeneration(config).train()
    checkpointed.load_state_dict(plain.state_dict())
    checkpointed.gradient_checkpointing_enable()
    assert checkpointed.model.layers[0].gradient_checkpointing
    batch = batch_of(tokenizer, reps[:6])
    losses = []
    for model in (plain, checkpointed):
        loss = model(**batch).loss
        loss.backward()
        losses.append(loss.detach())
    assert torch.allclose(*losses)
    for (name, a), b in zip(plain.named_parameters(), checkpointed.parameters(), strict=True):
        assert torch.allclose(a.grad, b.grad, atol=1e-6), name


@pytest.mark.filterwarnings("ignore")
def test_trainer_trains_and_reports_an_eval_loss(config, tokenizer, reps, tmp_path):
    from transformers import Trainer, TrainingArguments

    rows = [tokenizer.encode(rep) for rep in reps[:8]]
    model = WyckoffTransformerForCrystalGeneration(config)
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=2, per_device_train_batch_size=4,
                             per_device_eval_batch_size=4, report_to=[], use_cpu=True, save_strategy="no",
                             remove_unused_columns=False)
    trainer = Trainer(model=model, args=args, train_dataset=rows, eval_dataset=rows,
                      data_collator=lambda batch: dict(tokenizer.pad(batch, return_tensors="pt")))
    assert trainer.train().training_loss > 0
    metrics = trainer.evaluate()
    expected = torch.stack([model(**batch_of(tokenizer, reps[i:i + 4])).loss for i in (0, 4)]).mean()
    assert metrics["eval_loss"] == pytest.approx(expected.item(), rel=1e-4)


def test_labels_are_the_element_ids(model, tokenizer, reps):
    batch = batch_of(tokenizer, reps[:2])
    labels = batch["element_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    assert torch.equal(model(**batch, labels=labels).loss, model(**batch).loss)
    with pytest.raises(ValueError, match="labels must equal element_ids"):
        model(**batch, labels=labels.roll(1, 1))
    assert model(**batch, return_loss=False).loss is None


@pytest.mark.parametrize("sites, message", [
    ([("Na", "a"), ("Cl", "b")], None),
    ([("Cl", "b"), ("Na", "a")], "token 1: element"),  # out of canonical order (Na is less electronegative)
    ([("Na", "b"), ("Na", "a")], "token 1: site_symmetry"),  # same element: letters in order (4b, then 4a: no)
])
def test_impossible_targets_raise(model, tokenizer, sites, message):
    batch = batch_of(tokenizer, [WyckoffRepresentation.from_sites(225, sites, canonical=False)])
    if message is None:
        assert torch.isfinite(model(**batch).loss)
        return
    with pytest.raises(ValueError, match=message):
        model(**batch)


def test_impossible_positions_stop_first_and_too_many_sites_raise(model, tokenizer):
    batch = batch_of(tokenizer, [nacl()])
    wrong = {key: value.clone() for key, value in batch.items()}
    wrong["site_symmetry_ids"][0, 0] = tokenizer.token_id("site_symmetry", "-1")  # Fm-3m has no -1 site
    with pytest.raises(ValueError, match="sequence 0, token 0: site_symmetry"):
        model(**wrong)
    reused = {key: value.clone() for key, value in batch.items()}
    reused["enumeration_ids"][0, 1] = reused["enumeration_ids"][0, 0]  # Cl on 4a, which Na holds (0 dof)
    with pytest.raises(ValueError, match="sequence 0, token 1: enumeration"):
        model(**reused)
    stop_first = {key: value[:, :1].clone() for key, value in batch.items()}
    for key in ("element_ids", "site_symmetry_ids", "enumeration_ids"):
        stop_first[key][:] = STOP_ID
    with pytest.raises(ValueError, match="token 0: element id 1"):
        model(**stop_first)
    long = WyckoffRepresentation.from_sites(1, [("O", "a")] * (model.config.max_sites + 1))
    with pytest.raises(ValueError, match=f"token {model.config.max_sites}: element"):
        model(**batch_of(tokenizer, [long]))
