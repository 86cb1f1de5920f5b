"""A saved checkpoint loads with ``trust_remote_code=True`` where ``wyckoff_hf`` cannot be imported."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import torch

from wyckoff_hf.modeling import WyckoffTransformerConfig, WyckoffTransformerForCrystalGeneration
from wyckoff_hf.registration import register_auto_classes
from wyckoff_hf.tokenization import WyckoffRepresentation, WyckoffTokenizer

REMOTE_SCRIPT = textwrap.dedent("""
    import sys

    class BlockWyckoffHF:
        def find_spec(self, name, path=None, target=None):
            if name == "wyckoff_hf" or name.startswith("wyckoff_hf."):
                raise ImportError(f"{name} is blocked: the checkpoint must not need it")

    sys.meta_path.insert(0, BlockWyckoffHF())
    import torch
    from transformers import AutoModel, AutoModelForPreTraining

    checkpoint, work = sys.argv[1], sys.argv[2]
    inputs = torch.load(f"{work}/inputs.pt")
    encoder = AutoModel.from_pretrained(checkpoint, trust_remote_code=True).eval()
    generator = AutoModelForPreTraining.from_pretrained(checkpoint, trust_remote_code=True).eval()
    assert not any(name.startswith("wyckoff_hf") for name in sys.modules), "wyckoff_hf was imported"
    with torch.no_grad():
        torch.save({
            "hidden": encoder(**inputs).last_hidden_state,
            "loss": generator(**inputs).loss,
            "generated": dict(generator.generate(12, seed=5, space_group=[225, 62, 1] * 4)),
            "classes": [type(encoder).__module__, type(encoder).__name__, type(generator).__name__],
        }, f"{work}/remote.pt")
""")


def test_checkpoint_runs_without_wyckoff_hf(tmp_path):
    register_auto_classes()
    tokenizer = WyckoffTokenizer()
    torch.manual_seed(0)
    model = WyckoffTransformerForCrystalGeneration(WyckoffTransformerConfig.from_tokenizer(
        tokenizer, num_hidden_layers=1, hidden_dropout_prob=0.0)).eval()
    checkpoint = tmp_path / "checkpoint"
    model.save_pretrained(checkpoint)
    assert {"modeling_wyckoff_transformer.py", "configuration_wyckoff_transformer.py"} <= set(os.listdir(checkpoint))
    reps = [WyckoffRepresentation.from_sites(225, [("Na", "a"), ("Cl", "b")]),
            WyckoffRepresentation.from_sites(221, [("Ba", "a"), ("Ti", "b"), ("O", "c")])]
    inputs = dict(tokenizer(reps))
    torch.save(inputs, tmp_path / "inputs.pt")

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf_home"),
           "HF_MODULES_CACHE": str(tmp_path / "hf_modules")}
    result = subprocess.run([sys.executable, "-c", REMOTE_SCRIPT, str(checkpoint), str(tmp_path)], env=env,
                            cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    remote = torch.load(tmp_path / "remote.pt")

    module, encoder_class, generator_class = remote["classes"]
    assert module.startswith("transformers_modules")
    assert (encoder_class, generator_class) == ("WyckoffTransformerModel", "WyckoffTransformerForCrystalGeneration")
    with torch.no_grad():
        assert torch.allclose(remote["hidden"], model.model(**inputs).last_hidden_state, atol=1e-6)
        assert torch.allclose(remote["loss"], model(**inputs).loss, atol=1e-6)
    local = model.generate(12, seed=5, space_group=[225, 62, 1] * 4)
    for key, value in local.items():
        assert torch.equal(remote["generated"][key], value), key
    assert [c.space_group for c in tokenizer.decode(remote["generated"])] == [225, 62, 1] * 4
