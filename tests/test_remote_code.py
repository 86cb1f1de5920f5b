"""Checkpoints load with ``trust_remote_code=True`` where ``wyckoff_hf`` cannot be imported.

The checkpoints shipped inside the package carry no code (the installed package loads them); a folder saved
for the Hub does. One subprocess, with ``wyckoff_hf`` and the structure libraries (pymatgen, spglib, pyxtal)
blocked, loads the shipped checkpoint as ``save_pretrained`` writes it for the Hub, a freshly saved one, and the
fresh one again from a Hub repo (the local stand-in ``fake_hub``) through all four Auto classes, runs the encoder
and the generator, and decodes the generated ids with the remote tokenizer; the results must equal what the
installed package computes from the same weights and ids. Only reading a structure needs the structure libraries.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from fake_hub import serve_fake_hub

from wyckoff_hf.generation.jobs import DEFAULT_MODEL, PRETRAINED
from wyckoff_hf.modeling import WyckoffTransformerConfig, WyckoffTransformerForCrystalGeneration
from wyckoff_hf.registration import register_auto_classes
from wyckoff_hf.tokenization import WyckoffRepresentation, WyckoffTokenizer

REMOTE_SCRIPT = textwrap.dedent("""
    import json
    import sys

    class Block:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("wyckoff_hf", "pymatgen", "spglib", "pyxtal"):
                raise ImportError(f"No module named {name!r} (blocked: the checkpoint must not need it)")

    sys.meta_path.insert(0, Block())
    import torch
    from transformers import AutoConfig, AutoModel, AutoModelForPreTraining, AutoTokenizer

    work, checkpoints = sys.argv[1], json.loads(sys.argv[2])
    inputs = torch.load(f"{work}/inputs.pt")
    results = {}
    for name, checkpoint in checkpoints.items():
        loaded = {auto.__name__: auto.from_pretrained(checkpoint, trust_remote_code=True)
                  for auto in (AutoConfig, AutoModel, AutoModelForPreTraining, AutoTokenizer)}
        encoder, generator = loaded["AutoModel"].eval(), loaded["AutoModelForPreTraining"].eval()
        tokenizer = loaded["AutoTokenizer"]
        with torch.no_grad():
            generated = dict(generator.generate(12, seed=5, space_group=[225, 62, 1] * 4))
            results[name] = {
                "classes": {auto: [type(obj).__module__, type(obj).__name__] for auto, obj in loaded.items()},
                "hidden": encoder(**inputs).last_hidden_state,
                "loss": generator(**inputs).loss,
                "generated": generated,
                "decoded": [[str(rep), rep.to_dict()] for rep in tokenizer.decode(generated)],
                "tokenizer": [len(tokenizer), tokenizer.name_or_path, tokenizer.vocabularies],
            }
        try:
            tokenizer("NaCl.cif")
        except ImportError as err:
            results[name]["reading_a_cif"] = str(err)
    torch.save(results, f"{work}/remote.pt")
""")
CODE_FILES = {"configuration_wyckoff_transformer.py", "modeling_wyckoff_transformer.py",
              "sampling_wyckoff_transformer.py", "sampling_arguments.py", "site_constraints.py",
              "composition_moves.py", "tokenization_wyckoff.py", "representation.py", "wyckoff_tables.py", "errors.py",
              "data_files.py", "structure_libraries.py", "time_limit.py"}
HUB_REPO = "wyckoff/tiny-remote-code"
REPRESENTATIONS = [WyckoffRepresentation.from_sites(225, [("Na", "a"), ("Cl", "b")]),
                   WyckoffRepresentation.from_sites(221, [("Ba", "a"), ("Ti", "b"), ("O", "c")])]


@pytest.fixture(scope="module")
def fresh_checkpoint(tmp_path_factory):
    """A tiny untrained generator and its tokenizer, saved as training saves them."""
    register_auto_classes()
    torch.manual_seed(0)
    model = WyckoffTransformerForCrystalGeneration(WyckoffTransformerConfig.from_tokenizer(
        WyckoffTokenizer(), num_hidden_layers=1, hidden_dropout_prob=0.0)).eval()
    folder = tmp_path_factory.mktemp("fresh") / "checkpoint"
    model.save_pretrained(folder)
    WyckoffTokenizer().save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def saved_shipped(tmp_path_factory):
    """The shipped generator as ``save_pretrained`` writes it for the Hub: weights and config with the code."""
    register_auto_classes()
    folder = tmp_path_factory.mktemp("saved") / "shipped"
    WyckoffTransformerForCrystalGeneration.from_pretrained(DEFAULT_MODEL).save_pretrained(folder)
    WyckoffTokenizer.from_pretrained(DEFAULT_MODEL).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def remote(fresh_checkpoint, saved_shipped, tmp_path_factory):
    """What the subprocess without ``wyckoff_hf`` computed for each checkpoint."""
    work = tmp_path_factory.mktemp("remote")
    torch.save(dict(WyckoffTokenizer()(REPRESENTATIONS, return_tensors="pt")), work / "inputs.pt")
    checkpoints = {"fresh": str(fresh_checkpoint), "shipped": str(saved_shipped), "hub": HUB_REPO}
    server = serve_fake_hub()
    hub = next(server)
    try:
        hub.files[HUB_REPO] = {path.name: path.read_bytes() for path in fresh_checkpoint.iterdir()}
        env = {**os.environ, **hub.env, "HF_HOME": str(work / "hf_home"), "HF_MODULES_CACHE": str(work / "hf_modules")}
        result = subprocess.run([sys.executable, "-c", REMOTE_SCRIPT, str(work), json.dumps(checkpoints)], env=env,
                                cwd=work, capture_output=True, text=True, timeout=300)
    finally:
        server.close()
    assert result.returncode == 0, result.stderr[-3000:]
    return torch.load(work / "remote.pt")


@pytest.mark.parametrize("name", ["fresh", "shipped"])
def test_saved_checkpoint_folder_carries_its_code(name, fresh_checkpoint, saved_shipped):
    folder = fresh_checkpoint if name == "fresh" else saved_shipped
    assert CODE_FILES | {"wyckoff_tables.json", "wyckoff_vocab.json"} <= set(os.listdir(folder))
    config = json.loads((folder / "config.json").read_text())
    assert config["auto_map"] == {
        "AutoConfig": "configuration_wyckoff_transformer.WyckoffTransformerConfig",
        "AutoModel": "modeling_wyckoff_transformer.WyckoffTransformerModel",
        "AutoModelForPreTraining": "modeling_wyckoff_transformer.WyckoffTransformerForCrystalGeneration",
    }
    tokenizer_config = json.loads((folder / "tokenizer_config.json").read_text())
    assert tokenizer_config["tokenizer_class"] == "WyckoffTokenizer"
    assert tokenizer_config["auto_map"] == {"AutoTokenizer": ["tokenization_wyckoff.WyckoffTokenizer", None]}


@pytest.mark.parametrize("checkpoint", sorted(path.name for path in PRETRAINED.iterdir() if path.is_dir()))
def test_shipped_checkpoints_carry_no_code_and_load_with_the_package(checkpoint):
    """A shipped folder holds weights, configs and tokenizer files only: one copy of the code, the package's."""
    from transformers import AutoConfig, AutoTokenizer

    folder = PRETRAINED / checkpoint
    assert not list(folder.glob("*.py")) and not (folder / "wyckoff_tables.json").exists()
    for name in ("config.json", "tokenizer_config.json"):
        assert "auto_map" not in json.loads((folder / name).read_text()), name
    register_auto_classes()
    assert type(AutoConfig.from_pretrained(folder)) is WyckoffTransformerConfig
    assert type(AutoTokenizer.from_pretrained(folder)) is WyckoffTokenizer


@pytest.mark.parametrize("name", ["fresh", "shipped", "hub"])
def test_remote_code_matches_the_installed_package(name, remote, fresh_checkpoint, saved_shipped):
    folder = saved_shipped if name == "shipped" else fresh_checkpoint
    result = remote[name]
    assert {auto: cls for auto, (_, cls) in result["classes"].items()} == {
        "AutoConfig": "WyckoffTransformerConfig", "AutoModel": "WyckoffTransformerModel",
        "AutoModelForPreTraining": "WyckoffTransformerForCrystalGeneration", "AutoTokenizer": "WyckoffTokenizer"}
    assert all(module.startswith("transformers_modules.") for module, _ in result["classes"].values())

    model = WyckoffTransformerForCrystalGeneration.from_pretrained(folder).eval()
    tokenizer = WyckoffTokenizer.from_pretrained(folder)
    inputs = dict(tokenizer(REPRESENTATIONS, return_tensors="pt"))
    with torch.no_grad():
        assert torch.allclose(result["hidden"], model.model(**inputs).last_hidden_state, atol=1e-6)
        assert torch.allclose(result["loss"], model(**inputs).loss, atol=1e-6)
        local = model.generate(12, seed=5, space_group=[225, 62, 1] * 4)
    for key, value in local.items():  # ids exactly; scores to float tolerance (thread counts may differ)
        if not torch.is_tensor(value):  # acceptance rate of the shipped model's default constraints
            assert result["generated"][key] == value, key
        elif value.is_floating_point():
            torch.testing.assert_close(result["generated"][key], value, rtol=0, atol=1e-5)
        else:
            assert torch.equal(result["generated"][key], value), key

    installed = tokenizer.decode(result["generated"])
    assert [rep.space_group for rep in installed] == [225, 62, 1] * 4
    assert result["decoded"] == [[str(rep), rep.to_dict()] for rep in installed]
    name_or_path = HUB_REPO if name == "hub" else str(folder)
    assert result["tokenizer"] == [len(tokenizer), name_or_path, tokenizer.vocabularies]
    assert result["reading_a_cif"].endswith("needed to read, analyse or build crystal structures: pip install spglib")


HEADS_SCRIPT = textwrap.dedent("""
    import json
    import sys

    class Block:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("wyckoff_hf", "pymatgen", "spglib", "pyxtal"):
                raise ImportError(f"No module named {name!r} (blocked: the checkpoint must not need it)")

    sys.meta_path.insert(0, Block())
    import torch
    from transformers import AutoModelForPreTraining, AutoModelForSequenceClassification

    work, predictor, generator = sys.argv[1:]
    inputs = torch.load(f"{work}/inputs.pt")
    predictor = AutoModelForSequenceClassification.from_pretrained(predictor, trust_remote_code=True).eval()
    generator = AutoModelForPreTraining.from_pretrained(generator, trust_remote_code=True).eval()
    with torch.no_grad():
        results = {"predictor": [type(predictor).__name__, predictor(**inputs).logits],
                   "generator": [type(generator).__name__,
                                 dict(generator.generate(6, seed=2, condition={"band_gap": 2.0}, guidance_scale=2.0))]}
    torch.save(results, f"{work}/remote.pt")
""")


def test_property_predictor_and_conditional_generator_load_as_remote_code(tmp_path):
    """The property head (AutoModelForSequenceClassification) and a conditional generator travel as remote code
    too, and compute what the installed package computes."""
    from transformers import AutoModelForSequenceClassification

    from wyckoff_hf.modeling import WyckoffTransformerForPropertyPrediction

    register_auto_classes()
    tokenizer, small = WyckoffTokenizer(), {"num_hidden_layers": 1, "hidden_dropout_prob": 0.0}
    torch.manual_seed(0)
    predictor = WyckoffTransformerForPropertyPrediction(WyckoffTransformerConfig.from_tokenizer(
        tokenizer, num_labels=1, problem_type="regression", id2label={0: "band_gap"}, label2id={"band_gap": 0},
        label_mean=[1.0], label_std=[1.5], **small)).eval()
    generator = WyckoffTransformerForCrystalGeneration(WyckoffTransformerConfig.from_tokenizer(
        tokenizer, condition_names=["band_gap"], condition_mean=[1.0], condition_std=[1.5], **small)).eval()
    predictor.save_pretrained(tmp_path / "predictor")
    generator.save_pretrained(tmp_path / "generator")
    config = json.loads((tmp_path / "predictor" / "config.json").read_text())
    assert config["auto_map"]["AutoModelForSequenceClassification"] == (
        "modeling_wyckoff_transformer.WyckoffTransformerForPropertyPrediction")
    assert type(AutoModelForSequenceClassification.from_pretrained(tmp_path / "predictor")) is type(predictor)
    inputs = dict(tokenizer(REPRESENTATIONS, return_tensors="pt"))
    torch.save(inputs, tmp_path / "inputs.pt")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "hf_modules")}
    result = subprocess.run([sys.executable, "-c", HEADS_SCRIPT, str(tmp_path), str(tmp_path / "predictor"),
                             str(tmp_path / "generator")], env=env, cwd=tmp_path, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    remote = torch.load(tmp_path / "remote.pt")
    with torch.no_grad():
        assert remote["predictor"][0] == "WyckoffTransformerForPropertyPrediction"
        torch.testing.assert_close(remote["predictor"][1], predictor(**inputs).logits, rtol=0, atol=1e-5)
        local = generator.generate(6, seed=2, condition={"band_gap": 2.0}, guidance_scale=2.0)
    assert torch.equal(remote["generator"][1]["element_ids"], local.element_ids)
