"""The property predictor (AutoModelForSequenceClassification) and the conditional generator (classifier-free
guidance): pooling, standardised losses, persistence, exact scores, and that a condition steers the samples."""

from __future__ import annotations

import math

import pytest
import torch
from huggingface_hub.errors import StrictDataclassClassValidationError
from transformers import AutoModel, AutoModelForSequenceClassification
from transformers.modeling_outputs import SequenceClassifierOutput

from wyckoff_hf.modeling import (
    WyckoffTransformerConfig,
    WyckoffTransformerForCrystalGeneration,
    WyckoffTransformerForPropertyPrediction,
    WyckoffTransformerModel,
)
from wyckoff_hf.registration import register_auto_classes
from wyckoff_hf.tokenization import WyckoffRepresentation, WyckoffTokenizer

TINY = {"space_group_embedding_size": 8, "element_embedding_size": 16, "site_symmetry_embedding_size": 8,
        "enumeration_embedding_size": 4, "derived_feature_size": 4, "num_hidden_layers": 1,
        "num_attention_heads": 2, "intermediate_size": 64, "hidden_dropout_prob": 0.0}
NACL = WyckoffRepresentation.from_sites(225, [("Na", "a"), ("Cl", "b")])
CSCL = WyckoffRepresentation.from_sites(221, [("Cs", "a"), ("Cl", "b")])
RUTILE = WyckoffRepresentation.from_sites(136, [("Ti", "a"), ("O", "f")])
COPPER = WyckoffRepresentation.from_sites(225, [("Cu", "a")])
BAND_GAP = {"num_labels": 1, "problem_type": "regression", "id2label": {0: "band_gap"},
            "label2id": {"band_gap": 0}}


def predictor(tokenizer: WyckoffTokenizer, **kwargs) -> WyckoffTransformerForPropertyPrediction:
    torch.manual_seed(0)
    config = WyckoffTransformerConfig.from_tokenizer(tokenizer, **{**TINY, **BAND_GAP, **kwargs})
    return WyckoffTransformerForPropertyPrediction(config).eval()


def conditional_generator(tokenizer: WyckoffTokenizer, **kwargs) -> WyckoffTransformerForCrystalGeneration:
    torch.manual_seed(0)
    config = WyckoffTransformerConfig.from_tokenizer(
        tokenizer, **{**TINY, "condition_names": ["band_gap"], "condition_mean": [1.0], "condition_std": [2.0],
                      **kwargs})
    return WyckoffTransformerForCrystalGeneration(config).eval()


def batch(tokenizer: WyckoffTokenizer, reps: list[WyckoffRepresentation]) -> dict[str, torch.Tensor]:
    return dict(tokenizer(reps, return_tensors="pt"))


# ------------------------------------------------------------------------------------------ property prediction


def test_pooling_weights_sites_by_multiplicity_and_skips_stop_and_padding(tokenizer):
    model = predictor(tokenizer)
    hidden = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [5.0, 5.0], [7.0, 7.0]]])
    element_ids = torch.tensor([[11, 17, 1, 0]])  # two sites, STOP, PAD
    multiplicity = torch.tensor([[4, 1, 0, 0]])
    pooled = model.pool(hidden, element_ids, multiplicity, torch.tensor([[1, 1, 1, 0]]))
    assert torch.allclose(pooled, torch.tensor([[0.8, 0.2]]))


def test_prediction_ignores_site_order_and_padding(tokenizer):
    model = predictor(tokenizer)
    ids = tokenizer.encode(RUTILE)
    swapped = {key: [value[1], value[0], *value[2:]] for key, value in ids.items()}  # O before Ti: not canonical
    padded = tokenizer.pad([ids, tokenizer.encode(WyckoffRepresentation.from_sites(62, [("Na", "c")] * 5))],
                           return_tensors="pt")
    logits = [model(**tokenizer.pad([item], return_tensors="pt")).logits for item in (ids, swapped)]
    assert torch.allclose(logits[0], logits[1], atol=1e-5)
    assert torch.allclose(model(**padded).logits[0], logits[0][0], atol=1e-5)


def test_regression_is_standardised_and_returned_in_label_units(tokenizer):
    model = predictor(tokenizer, label_mean=[1.5], label_std=[2.0])
    last = model.classifier[-1]
    torch.nn.init.zeros_(last.weight)
    torch.nn.init.zeros_(last.bias)
    out = model(**batch(tokenizer, [NACL, COPPER]), labels=torch.tensor([5.5, 0.5]))
    assert isinstance(out, SequenceClassifierOutput)
    assert torch.allclose(out.logits, torch.tensor([[1.5], [1.5]]))  # a zero head predicts the mean
    assert out.loss.item() == pytest.approx((4.0 / 2.0 + 1.0 / 2.0) / 2)  # L1 on the standardised scale
    model.config.regression_loss = "mse"
    mse = model(**batch(tokenizer, [NACL, COPPER]), labels=torch.tensor([5.5, 0.5])).loss
    assert mse.item() == pytest.approx((2.0**2 + 0.5**2) / 2)


def test_classification_uses_cross_entropy_on_raw_logits(tokenizer):
    model = predictor(tokenizer, num_labels=2, problem_type="single_label_classification",
                      id2label={0: "metal", 1: "non-metal"}, label2id={"metal": 0, "non-metal": 1})
    labels = torch.tensor([1, 0])
    out = model(**batch(tokenizer, [NACL, COPPER]), labels=labels)
    assert out.logits.shape == (2, 2)
    assert out.loss.item() == pytest.approx(torch.nn.functional.cross_entropy(out.logits, labels).item())


def test_a_small_predictor_fits_distinct_targets(tokenizer):
    model = predictor(tokenizer, label_mean=[1.0], label_std=[2.0]).train()
    inputs, labels = batch(tokenizer, [NACL, CSCL, RUTILE, COPPER]), torch.tensor([5.0, 4.0, 3.0, 0.0])
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(150):
        loss = model(**inputs, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.1 * losses[0]
    predicted = model.eval()(**inputs).logits.squeeze(1)
    assert (predicted - labels).abs().max() < 0.5


def test_predictor_persists_and_loads_through_the_auto_classes(tokenizer, tmp_path):
    register_auto_classes()
    model = predictor(tokenizer, label_mean=[1.5], label_std=[2.0])
    model.save_pretrained(tmp_path)
    loaded = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    assert isinstance(loaded, WyckoffTransformerForPropertyPrediction)
    assert loaded.config.id2label == {0: "band_gap"} and loaded.config.label_mean == [1.5]
    inputs = batch(tokenizer, [NACL, RUTILE])
    assert torch.equal(loaded(**inputs).logits, model(**inputs).logits)
    encoder = AutoModel.from_pretrained(tmp_path)  # the encoder alone, its head ignored
    assert isinstance(encoder, WyckoffTransformerModel)
    assert torch.equal(encoder(**inputs).last_hidden_state, model.model(**inputs).last_hidden_state)


def test_a_generator_checkpoint_initialises_a_predictor(tokenizer, tmp_path):
    generator = WyckoffTransformerForCrystalGeneration(WyckoffTransformerConfig.from_tokenizer(tokenizer, **TINY))
    generator.save_pretrained(tmp_path)
    model = WyckoffTransformerForPropertyPrediction.from_pretrained(tmp_path, **BAND_GAP).eval()
    inputs = batch(tokenizer, [NACL])
    assert torch.equal(model.model(**inputs).last_hidden_state, generator.eval().model(**inputs).last_hidden_state)


@pytest.mark.parametrize("kwargs, message", [
    ({"label_mean": [0.0, 1.0]}, "label_mean has 2 values"),
    ({"label_std": [0.0]}, "must be positive"),
    ({"regression_loss": "huber"}, "regression_loss"),
    ({"condition_names": ["band_gap", "band_gap"]}, "repeat"),
    ({"condition_names": ["band_gap"], "condition_mean": [0.0, 1.0]}, "condition_mean has 2 values"),
    ({"condition_dropout_prob": 1.0}, "condition_dropout_prob"),
])
def test_bad_property_and_condition_configs_are_refused(tokenizer, kwargs, message):
    with pytest.raises((ValueError, StrictDataclassClassValidationError), match=message):
        WyckoffTransformerConfig.from_tokenizer(tokenizer, **{**BAND_GAP, **kwargs})


# ------------------------------------------------------------------------------------------ conditional generation


def test_condition_widens_every_token_and_unknown_is_the_default(tokenizer):
    model = conditional_generator(tokenizer)
    assert model.config.hidden_size == 40 + 16
    inputs = batch(tokenizer, [NACL])
    unknown = model(**inputs, conditions=torch.tensor([[math.nan]])).log_likelihood
    assert torch.equal(model(**inputs).log_likelihood, unknown)
    assert not torch.equal(model(**inputs, conditions=torch.tensor([[3.0]])).log_likelihood, unknown)


def test_conditional_scores_are_the_forward_log_likelihood(tokenizer):
    model = conditional_generator(tokenizer)
    values = torch.tensor([0.0, 1.0, 2.0, 3.0, 4.0, 0.5])
    out = model.generate(6, seed=0, condition={"band_gap": values.tolist()}, temperature=1.0)
    inputs = {key: getattr(out, key) for key in tokenizer.model_input_names}
    expected = model(**inputs, conditions=values[:, None]).log_likelihood
    assert torch.allclose(out.sequences_scores, expected, atol=1e-4)


def test_guidance_scale_zero_is_the_unconditional_model(tokenizer):
    model = conditional_generator(tokenizer)
    guided = model.generate(16, seed=3, condition={"band_gap": 3.0}, guidance_scale=0.0)
    plain = model.generate(16, seed=3)
    assert torch.equal(guided.element_ids, plain.element_ids)
    assert torch.allclose(guided.sequences_scores, plain.sequences_scores)


def test_a_condition_steers_what_is_generated(tokenizer):
    """Two crystals, each seen with its own band gap: conditioned on one gap, the model samples that crystal."""
    model = conditional_generator(tokenizer, condition_dropout_prob=0.3).train()
    inputs = batch(tokenizer, [NACL, COPPER] * 8)
    conditions = torch.tensor([[5.0], [0.0]] * 8)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(120):
        loss = model(**inputs, conditions=conditions).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    for gap, crystal in ((5.0, NACL), (0.0, COPPER)):
        samples = model.generate(64, space_group=225, seed=0, condition={"band_gap": gap}, guidance_scale=2.0,
                                 tokenizer=tokenizer)
        assert sum(sample == crystal for sample in samples) >= 56, (gap, samples[:4])


def test_conditional_generator_round_trips(tokenizer, tmp_path):
    model = conditional_generator(tokenizer)
    model.save_pretrained(tmp_path)
    loaded = WyckoffTransformerForCrystalGeneration.from_pretrained(tmp_path).eval()
    assert loaded.config.condition_names == ["band_gap"] and loaded.config.condition_std == [2.0]
    first = model.generate(8, seed=1, condition={"band_gap": 2.0}, guidance_scale=1.5)
    second = loaded.generate(8, seed=1, condition={"band_gap": 2.0}, guidance_scale=1.5)
    assert torch.equal(first.element_ids, second.element_ids)


@pytest.mark.parametrize("kwargs, message", [
    ({"condition": {"formation_energy": 1.0}}, "'formation_energy' is not one this model was trained on"),
    ({"condition": {"band_gap": math.inf}}, "one finite value"),
    ({"condition": {"band_gap": [1.0, 2.0, 3.0]}}, r"one per sample \(2\)"),
    ({"condition": {}}, "non-empty mapping"),
    ({"condition": {"band_gap": 1.0}, "guidance_scale": -1.0}, "guidance_scale must be ≥ 0"),
    ({"guidance_scale": 2.0}, "without a condition"),
])
def test_bad_conditions_are_reported(tokenizer, kwargs, message):
    with pytest.raises(ValueError, match=message):
        conditional_generator(tokenizer).generate(2, **kwargs)


def test_unconditional_models_refuse_conditions(tokenizer):
    model = WyckoffTransformerForCrystalGeneration(WyckoffTransformerConfig.from_tokenizer(tokenizer, **TINY))
    with pytest.raises(ValueError, match="not a conditional generator"):
        model.generate(2, condition={"band_gap": 1.0})
    with pytest.raises(ValueError, match=r"without config\.condition_names"):
        model(**batch(tokenizer, [NACL]), conditions=torch.tensor([[1.0]]))


def test_generate_command_takes_a_condition_guidance_and_element_range(tokenizer, tmp_path, capsys):
    import json

    from wyckoff_hf.cli import main
    from wyckoff_hf.evaluation import load_samples

    folder = tmp_path / "conditional"
    conditional_generator(tokenizer).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    out = tmp_path / "out"
    assert main(["generate", "-n", "40", "--model", str(folder), "--condition", "band_gap=3", "--guidance-scale", "2",
                 "--num-elements-range", "2", "3", "--output-dir", str(out)]) == 0
    samples = load_samples(out).valid
    assert len(samples) == 40 and {len(rep.elements) for rep in samples} <= {2, 3}
    generation = json.loads((out / "manifest.json").read_text())["generation"]
    assert generation["condition"] == {"band_gap": 3.0} and generation["guidance_scale"] == 2.0
    assert generation["num_elements_range"] == [2, 3]
    scores = [float(line) for line in (out / "log_probabilities.txt").read_text().splitlines()]
    assert len(scores) == 40 and all(score < 0 for score in scores)
    assert "mean -log p" in capsys.readouterr().out
    capsys.readouterr()
    assert main(["generate", "-n", "2", "--model", str(folder), "--guidance-scale", "2", "--output-dir",
                 str(tmp_path / "b")]) == 2
    assert "--guidance-scale needs --condition" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["generate", "--condition", "band_gap", "--output-dir", str(tmp_path / "c")])
    assert "is not NAME=VALUE" in capsys.readouterr().err


def test_generation_pipeline_passes_the_condition(tokenizer, tmp_path):
    from transformers import pipeline

    import wyckoff_hf  # noqa: F401  (registers the pipeline task)

    model = conditional_generator(tokenizer)
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    generator = pipeline("crystal-generation", model=str(tmp_path))
    guided = generator(6, condition={"band_gap": 3.0}, guidance_scale=2.0, seed=4, num_elements_range=(2, 3))
    expected = model.generate(6, condition={"band_gap": 3.0}, guidance_scale=2.0, seed=4, num_elements_range=(2, 3),
                              tokenizer=tokenizer)
    assert [crystal["representation"] for crystal in guided] == expected
