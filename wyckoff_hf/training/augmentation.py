"""Collate functions that draw afresh every epoch: a random equivalent Wyckoff labelling of each crystal, and a
random order of its sites. They wrap a task's collator, so either task can use them, and draw in the main
process from generators reseeded per epoch, so that every process and a resumed run draw alike."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from transformers import BatchEncoding

from wyckoff_hf.data import representation_from_row
from wyckoff_hf.tokenization import WyckoffTokenizer


class LabellingAugmentation:
    """A collate function that first puts each training crystal in a random one of its equivalent Wyckoff
    labellings (``WyckoffRepresentation.relabelled``: the relabellings of its group's affine normalizer, sites in
    canonical order), as the WyckoffTransformer authors train. The model then learns every labelling of a crystal
    rather than the canonical one only; evaluation canonicalises samples anyway.

    The draws come from a generator reseeded at every epoch (``start_epoch``) in the main process, so every process
    of a multi-process run relabels the global batch alike and a resumed run draws what the uninterrupted one would.
    """

    columns = ("space_group", "site_elements", "letters")

    def __init__(self, tokenizer: WyckoffTokenizer, collate: Any) -> None:
        self.tokenizer, self.collate = tokenizer, collate
        self.rng = np.random.default_rng(0)

    def start_epoch(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)

    def __call__(self, features: list[dict[str, Any]]) -> BatchEncoding:
        relabelled = []
        for row in features:
            crystal = representation_from_row(row)
            crystal = crystal.relabelled(int(self.rng.integers(crystal.num_labellings)))
            rest = {key: value for key, value in row.items() if key not in self.columns}
            relabelled.append({**rest, **self.tokenizer.encode(crystal)})
        return self.collate(relabelled)


class SitePermutation:
    """A collate function that shuffles the sites of every crystal of the batch ``collate`` builds, for a generator
    with ``config.site_order = "any"``: it learns every order of a crystal's sites, not the canonical one only, as
    the WyckoffTransformer authors train. STOP and padding stay at the end; validation stays in canonical order.

    Reseeded at every epoch (``start_epoch``) in the main process, as ``LabellingAugmentation``, and applied after
    it when both are on."""

    def __init__(self, tokenizer: WyckoffTokenizer, collate: Any) -> None:
        self.collate, self.token_columns = collate, tokenizer.model_input_names
        self.mask_token_id = tokenizer.mask_token_id
        self.generator = torch.Generator().manual_seed(0)

    def start_epoch(self, seed: int) -> None:
        self.generator.manual_seed(seed)

    def __call__(self, features: list[dict[str, Any]]) -> BatchEncoding:
        batch = self.collate(features)
        element_ids = batch["element_ids"]
        keys = torch.rand(element_ids.shape, generator=self.generator)
        after_sites = 1 + torch.arange(element_ids.shape[1], dtype=keys.dtype)  # STOP and PAD keep their order
        order = torch.where(element_ids > self.mask_token_id, keys, after_sites).argsort(1)
        for key in self.token_columns:
            batch[key] = batch[key].gather(1, order)
        return batch
