"""wyckoff_hf.training.augmentation on its own: the per-epoch draws of a crystal's labelling and of its sites'
order, reseeded alike every epoch."""

import torch

from wyckoff_hf import WyckoffRepresentation
from wyckoff_hf.training.augmentation import LabellingAugmentation, SitePermutation


def test_labelling_augmentation_draws_equivalent_labellings_afresh_each_epoch(tokenizer):
    from wyckoff_hf.data import representation_columns

    crystals = [WyckoffRepresentation.from_sites(2, [("Li", "a"), ("Li", "c"), ("O", "i")]),
                WyckoffRepresentation.from_sites(225, [("Na", "a"), ("Cl", "b")])]
    rows = [{**tokenizer.encode(rep), "band_gap": 1.0,
             **{key: representation_columns(rep)[key] for key in LabellingAugmentation.columns}}
            for rep in crystals]
    seen = []
    augmentation = LabellingAugmentation(tokenizer, lambda features: features)
    for epoch in range(12):
        augmentation.start_epoch(epoch)
        features = augmentation(rows)
        assert all(set(row) == set(tokenizer.model_input_names) | {"band_gap"} for row in features)
        decoded = tokenizer.decode(tokenizer.pad(features, return_tensors="pt"))
        assert [rep.canonical() for rep in decoded] == [rep.canonical() for rep in crystals]  # the same crystals
        seen.append(decoded)
    assert len({epoch[0] for epoch in seen}) > 3  # P-1: Li on 2 of 8 inversion centres, 28 labellings
    assert {epoch[1] for epoch in seen} == {crystals[1], crystals[1].relabelled(1)}  # Na on 4a or on 4b
    augmentation.start_epoch(5)
    assert tokenizer.decode(tokenizer.pad(augmentation(rows), return_tensors="pt")) == seen[5]  # reseeded alike


def test_site_permutation_shuffles_each_crystals_sites_afresh_each_epoch(tokenizer):
    crystals = [WyckoffRepresentation.from_sites(62, [("Li", "c"), ("Fe", "c"), ("P", "c"), ("O", "c"), ("O", "c"),
                                                      ("O", "d")]),
                WyckoffRepresentation.from_sites(225, [("Na", "a"), ("Cl", "b")])]
    features = [tokenizer.encode(rep) for rep in crystals]
    unshuffled = tokenizer.pad(features, return_tensors="pt")
    permutation = SitePermutation(tokenizer, lambda rows: tokenizer.pad(rows, return_tensors="pt"))
    orders = []
    for epoch in range(8):
        permutation.start_epoch(epoch)
        batch = permutation(features)
        assert torch.equal(batch["attention_mask"], unshuffled["attention_mask"])
        for row, crystal in enumerate(crystals):
            tokens = {key: batch[key][row].tolist() for key in tokenizer.model_input_names}
            sites = list(zip(*(tokens[key] for key in tokenizer.model_input_names if key != "attention_mask"),
                             strict=True))
            expected = list(zip(*(unshuffled[key][row].tolist() for key in tokenizer.model_input_names
                                  if key != "attention_mask"), strict=True))
            count = len(crystal.sites)
            assert sorted(sites[:count]) == sorted(expected[:count])  # each site keeps its fields together
            assert sites[count:] == expected[count:]  # STOP, then padding, where they were
        orders.append(tuple(batch["element_ids"][0].tolist()))
    assert len(set(orders)) > 4  # 6 sites: 360 distinct orders
    permutation.start_epoch(3)
    assert tuple(permutation(features)["element_ids"][0].tolist()) == orders[3]  # reseeded alike
