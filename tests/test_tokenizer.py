"""WyckoffTokenizer: exact ids for known crystals, round trips, padding, persistence and clear errors."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from wyckoff_hf.tokenization import (
    InvalidRepresentationError,
    StructureParseError,
    WyckoffRepresentation,
    WyckoffTokenizer,
)

NACL = WyckoffRepresentation.from_sites(225, [("Na", "a"), ("Cl", "b")])
RUTILE = WyckoffRepresentation.from_sites(136, [("Ti", "a"), ("O", "f")])


@pytest.fixture(scope="module")
def tokenizer():
    return WyckoffTokenizer()


def test_vocabularies(tokenizer):
    assert tokenizer.vocab_sizes == {"space_group": 233, "element": 121, "site_symmetry": 81, "enumeration": 11}
    for vocab in tokenizer.vocabularies.values():
        assert vocab[:3] == ["[PAD]", "[STOP]", "[MASK]"]
    assert len(tokenizer.wyckoff_position_ids()) == 1731


def test_nacl_ids_exact(tokenizer):
    ids = tokenizer.encode(NACL)
    m3m = tokenizer.token_id("site_symmetry", "m-3m")
    assert ids == {
        "space_group_ids": [3 + 224] * 3,
        "element_ids": [3 + 10, 3 + 16, 1],  # Na (Z=11), Cl (Z=17), STOP
        "site_symmetry_ids": [m3m, m3m, 1],
        "enumeration_ids": [3 + 0, 3 + 1, 1],  # 4a is the first m-3m position, 4b the second
        "multiplicity": [4, 4, 0],
        "dof": [0, 0, 0],
        "attention_mask": [1, 1, 1],
    }


def test_batch_padding_and_decode(tokenizer):
    batch = tokenizer([NACL, WyckoffRepresentation.from_sites(227, [("Si", "a")]), RUTILE])
    assert list(batch.keys()) == tokenizer.model_input_names
    assert all(isinstance(v, torch.Tensor) and v.shape == (3, 3) for v in batch.values())
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0], [1, 1, 1]]
    assert batch["element_ids"][1].tolist() == [3 + 13, 1, 0]
    assert tokenizer.decode(batch) == [NACL, WyckoffRepresentation.from_sites(227, [("Si", "a")]), RUTILE]
    as_lists = tokenizer([NACL], return_tensors=None)
    assert as_lists["element_ids"] == [[13, 19, 1]]
    as_numpy = tokenizer([NACL, RUTILE], padding="max_length", max_length=5, return_tensors="np")
    assert as_numpy["element_ids"].shape == (2, 5) and as_numpy["element_ids"].dtype == np.int64
    assert tokenizer.decode(as_numpy) == [NACL, RUTILE]


def test_structures_are_analysed(tokenizer):
    structure = RUTILE.to_structure(seed=1)
    assert tokenizer.decode(tokenizer(structure)) == [RUTILE]
    with pytest.raises(StructureParseError, match="item 1: unparseable CIF"):
        tokenizer([structure, "data_x\nbroken\n"])


def test_invalid_ids_decode_to_clear_errors(tokenizer):
    batch = tokenizer([NACL, RUTILE])
    batch["site_symmetry_ids"][1, 0] = tokenizer.token_id("site_symmetry", "m-3m")
    with pytest.raises(InvalidRepresentationError, match=r"row 1: token 0: space group 136 .* no Wyckoff position"):
        tokenizer.decode(batch)
    batch = tokenizer([NACL])
    batch["element_ids"][0, 1] = batch["element_ids"][0, 0]
    batch["enumeration_ids"][0, 1] = batch["enumeration_ids"][0, 0]  # Na twice on the fixed 4a
    with pytest.raises(InvalidRepresentationError, match=r"row 0: .*can hold one atom orbit only"):
        tokenizer.decode(batch)
    batch = tokenizer([NACL])
    batch["site_symmetry_ids"][0, 0] = tokenizer.mask_token_id
    with pytest.raises(InvalidRepresentationError, match="special id"):
        tokenizer.decode(batch)


def test_max_sites(tokenizer):
    limited = WyckoffTokenizer(max_sites=1)
    with pytest.raises(InvalidRepresentationError, match="more than max_sites=1"):
        limited([NACL])


def test_save_and_load(tmp_path, tokenizer):
    custom = WyckoffTokenizer(symprec=0.01, max_sites=30)
    custom.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    assert config == {"tokenizer_class": "WyckoffTokenizer", "symprec": 0.01, "angle_tolerance": 5.0, "max_sites": 30}
    assert json.loads((tmp_path / "wyckoff_vocab.json").read_text())["element"][13] == "Na"
    loaded = WyckoffTokenizer.from_pretrained(tmp_path)
    assert loaded.vocabularies == tokenizer.vocabularies
    assert (loaded.symprec, loaded.max_sites) == (0.01, 30)
    assert loaded.encode(NACL) == tokenizer.encode(NACL)


def _round_trip(tokenizer, cifs):
    reps = [WyckoffRepresentation.from_structure(cif) for cif in cifs]
    assert tokenizer.decode(tokenizer(reps)) == reps
    for rep in reps:
        assert tokenizer.decode_sequence(tokenizer.encode(rep)) == rep


def test_round_trip_on_mp20_slice(tokenizer, shared_data):
    frame = pd.read_csv(shared_data / "mp_20_biternary" / "val.csv.gz", nrows=150)
    _round_trip(tokenizer, frame.cif)


@pytest.mark.slow
@pytest.mark.parametrize("split", ["val", "test"])
def test_round_trip_on_all_mp20_biternary_rows(tokenizer, split, shared_data):
    _round_trip(tokenizer, pd.read_csv(shared_data / "mp_20_biternary" / f"{split}.csv.gz").cif)
