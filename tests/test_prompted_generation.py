"""Prompted generation: the model completes a given space group and first sites, and scores only the completion.

The score of a prompted sample must be the teacher-forced log-likelihood of the whole sequence less that of the
prompt's own cascade steps (a prompt step scored, or a completion step not, breaks the equality); prompts that the
model could not have produced (a position its group lacks, a 0-dof position twice, sites out of canonical order)
are refused with the prompt named, before anything is sampled.
"""

from __future__ import annotations

import pytest
import torch
from test_generation_exactness import TINY, generated_batch

from wyckoff_hf.cli import main
from wyckoff_hf.evaluation import load_samples
from wyckoff_hf.modeling import WyckoffTransformerConfig, WyckoffTransformerForCrystalGeneration
from wyckoff_hf.tokenization import STOP_ID, WyckoffRepresentation

NACL = WyckoffRepresentation.from_sites(225, [("Na", "a"), ("Cl", "b")])
PEROVSKITE = WyckoffRepresentation.from_sites(221, [("Sr", "a"), ("Ti", "b"), ("O", "c")])
PNMA = WyckoffRepresentation.from_sites(62, [("Na", "c"), ("Cl", "c"), ("O", "d")])
FIELDS = ("element", "site_symmetry", "enumeration")


@pytest.fixture(scope="module")
def model(tokenizer) -> WyckoffTransformerForCrystalGeneration:
    torch.manual_seed(0)
    model = WyckoffTransformerForCrystalGeneration(WyckoffTransformerConfig.from_tokenizer(tokenizer, **TINY)).eval()
    with torch.no_grad():  # sharp, so that a step scored wrongly changes the scores visibly
        for parameter in model.parameters():
            parameter.mul_(4.0)
        model.heads["element"].bias[STOP_ID] += 3.0
    return model


def prefix(representation: WyckoffRepresentation, sites: int) -> WyckoffRepresentation:
    return WyckoffRepresentation(representation.space_group, representation.sites[:sites])


def prompt_log_likelihood(model, batch: dict[str, torch.Tensor], lengths: torch.Tensor) -> torch.Tensor:
    """Teacher-forced log-probability of the first ``lengths[b]`` sites of each row (all three cascade steps)."""
    out = model(**batch)
    total = torch.zeros(len(lengths))
    for field in FIELDS:
        log_probs = getattr(out, f"{field}_logits").float().log_softmax(-1)
        picked = log_probs.gather(2, batch[f"{field}_ids"][:, :, None]).squeeze(2)
        in_prompt = torch.arange(picked.shape[1])[None, :] < lengths[:, None]
        total += (picked * in_prompt).sum(1)
    return total


@torch.no_grad()
def test_samples_complete_their_prompt(model, tokenizer):
    crystals = model.generate(40, prompt=prefix(PNMA, 2), seed=0, tokenizer=tokenizer)
    assert all(c.space_group == 62 and c.sites[:2] == PNMA.sites[:2] for c in crystals)
    assert len({c.sites[2:] for c in crystals}) > 5  # the completions are sampled, not fixed
    prompts = [prefix(NACL, 1), PEROVSKITE, prefix(PNMA, 1)] * 4
    crystals = model.generate(12, prompt=prompts, seed=1, tokenizer=tokenizer)
    for crystal, prompt in zip(crystals, prompts, strict=True):
        assert crystal.space_group == prompt.space_group and crystal.sites[:len(prompt.sites)] == prompt.sites


@torch.no_grad()
def test_scores_are_the_log_probability_of_the_completion(model, tokenizer):
    prompts = [prefix(PNMA, 2), prefix(NACL, 1), PEROVSKITE, prefix(PEROVSKITE, 1)] * 8
    ids = tokenizer(prompts, return_tensors="pt")
    ids["element_ids"][3::4] = torch.where(ids["element_ids"][3::4] > 2, STOP_ID, ids["element_ids"][3::4])
    lengths = torch.tensor([2, 1, 3, 0] * 8)  # every 4th row: the group alone (a prompt of STOP)
    out = model.generate(32, prompt=ids, seed=2)
    batch = generated_batch(out)
    expected = model(**batch).log_likelihood - prompt_log_likelihood(model, batch, lengths)
    assert torch.allclose(out.sequences_scores, expected, atol=1e-4), (out.sequences_scores, expected)
    assert (out.sequences_scores[2::4] < 0).all()  # a complete prompt still samples its STOP (or more sites)
    assert not torch.allclose(out.sequences_scores, model(**batch).log_likelihood, atol=1e-2)


@torch.no_grad()
def test_one_prompt_for_all_as_unbatched_ids(model, tokenizer):
    ids = tokenizer(prefix(NACL, 1))  # one crystal: lists, no batch axis
    crystals = model.generate(6, prompt=ids, seed=3, tokenizer=tokenizer)
    assert all(c.space_group == 225 and c.sites[0] == NACL.sites[0] for c in crystals)


def bad_ids(tokenizer, representation, **replace):
    ids = {key: list(value) for key, value in tokenizer.encode(representation).items()}
    for key, (token, value) in replace.items():
        ids[key][token] = value
    return ids


@pytest.mark.parametrize(("change", "message"), [
    # Cl (3.16) before Na (0.93): out of the canonical order
    (lambda t: WyckoffRepresentation.from_sites(225, [("Cl", "a"), ("Na", "b")], canonical=False),
     r"prompt 0, token 1: element id 13 is impossible there \(.*canonical order"),
    # 4a twice: a 0-dof position holds one orbit
    (lambda t: bad_ids(t, NACL, site_symmetry_ids=(1, t.token_id("site_symmetry", "m-3m")),
                       enumeration_ids=(1, t.token_id("enumeration", 0))),
     r"prompt 0, token 1: (site_symmetry|enumeration) id \d+ is impossible there \(.*0-dof"),
    # a site symmetry that Pnma lacks
    (lambda t: bad_ids(t, PNMA, site_symmetry_ids=(0, t.token_id("site_symmetry", "m-3m"))),
     r"prompt 0, token 0: site_symmetry id \d+ is impossible there \(a site symmetry the group lacks"),
    (lambda t: bad_ids(t, NACL, space_group_ids=(0, 0)), r"prompt 0: space-group ids \[0, 227, 227\] are not one"),
    (lambda t: bad_ids(t, NACL, element_ids=(0, 500)), r"prompt 0, token 0: element_ids 500 is not an id"),
    (lambda t: [NACL, NACL], r"prompt has 2 rows for 3 samples"),
    (lambda t: {"element_ids": [3]}, r"prompt lacks \['space_group_ids'"),
])
def test_impossible_prompts_are_refused_naming_the_prompt(model, tokenizer, change, message):
    with pytest.raises(ValueError, match=message):
        model.generate(3, prompt=change(tokenizer), tokenizer=tokenizer)


def test_prompt_conflicts_and_limits(model, tokenizer):
    with pytest.raises(ValueError, match="representations need tokenizer="):
        model.generate(2, prompt=NACL)
    with pytest.raises(ValueError, match="space_group disagrees with the prompt"):
        model.generate(2, prompt=NACL, space_group=221, tokenizer=tokenizer)
    with pytest.raises(ValueError, match=r"prompt 0, token 2: element id \d+ is impossible there \(.*max_sites"):
        model.generate(2, prompt=PEROVSKITE, max_sites=2, tokenizer=tokenizer)
    assert model.generate(2, prompt=PEROVSKITE, max_sites=3, tokenizer=tokenizer) == [PEROVSKITE] * 2


def test_generate_command_completes_prompt_sites(tmp_path, model, tokenizer, capsys):
    checkpoint = tmp_path / "model"
    model.save_pretrained(checkpoint)
    tokenizer.save_pretrained(checkpoint)
    out = tmp_path / "out"
    assert main(["generate", "-n", "6", "--space-group", "225", "--prompt-sites", "Na:a", "--model", str(checkpoint),
                 "--output-dir", str(out)]) == 0
    crystals = load_samples(out).valid
    assert len(crystals) == 6 and all(c.space_group == 225 and c.sites[0] == NACL.sites[0] for c in crystals)
    assert main(["generate", "--prompt-sites", "Na:a", "--output-dir", str(tmp_path / "bad")]) == 2
    assert "--prompt-sites needs exactly one --space-group" in capsys.readouterr().err
