"""WyckoffTokenizer: exact ids for known crystals, round trips, padding, persistence and clear errors."""

import json
import os

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


def test_vocabularies(tokenizer):
    assert tokenizer.vocab_sizes == {"space_group": 233, "element": 121, "site_symmetry": 81, "enumeration": 11}
    assert len(tokenizer) == 233 + 121 + 81 + 11
    assert tokenizer.vocabularies["element"][3:5] == ["H", "He"] and tokenizer.vocabularies["element"][-1] == "Og"
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
    batch = tokenizer([NACL, WyckoffRepresentation.from_sites(227, [("Si", "a")]), RUTILE], return_tensors="pt")
    assert list(batch.keys()) == tokenizer.model_input_names
    assert all(isinstance(v, torch.Tensor) and v.shape == (3, 3) for v in batch.values())
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0], [1, 1, 1]]
    assert batch["element_ids"][1].tolist() == [3 + 13, 1, 0]
    assert tokenizer.decode(batch) == [NACL, WyckoffRepresentation.from_sites(227, [("Si", "a")]), RUTILE]
    as_numpy = tokenizer([NACL, RUTILE], padding="max_length", max_length=5, return_tensors="np")
    assert as_numpy["element_ids"].shape == (2, 5) and as_numpy["element_ids"].dtype == np.int64
    assert tokenizer.decode(as_numpy) == [NACL, RUTILE]


def test_batch_decode_like_hf_tokenizers(tokenizer):
    """``batch_decode``: a padded batch or a list of single sequences; ``decode`` of one row is still a list of one."""
    silicon = WyckoffRepresentation.from_sites(227, [("Si", "a")])
    batch = tokenizer([NACL, silicon, RUTILE], return_tensors="pt")
    assert tokenizer.batch_decode(batch) == tokenizer.decode(batch) == [NACL, silicon, RUTILE]
    assert tokenizer.batch_decode([tokenizer.encode(NACL), tokenizer.encode(silicon)]) == [NACL, silicon]
    assert tokenizer.decode(tokenizer.encode(RUTILE)) == [RUTILE] == tokenizer.batch_decode(tokenizer.encode(RUTILE))
    broken = tokenizer.encode(RUTILE)
    broken["site_symmetry_ids"][0] = tokenizer.token_id("site_symmetry", "m-3m")
    with pytest.raises(InvalidRepresentationError, match=r"row 1: token 0: space group 136"):
        tokenizer.batch_decode([tokenizer.encode(NACL), broken])


def test_lists_by_default_like_hf_tokenizers(tokenizer):
    """``return_tensors=None``: plain lists, padded in a batch; only a list or tuple is a batch."""
    assert tokenizer((NACL, RUTILE))["element_ids"] == [[13, 19, 1], [3 + 21, 3 + 7, 1]]  # Ti 2a, O 4f
    assert tokenizer(NACL)["element_ids"] == [[13, 19, 1]]
    assert tokenizer(NACL, padding=False)["element_ids"] == [13, 19, 1]
    silicon = WyckoffRepresentation.from_sites(227, [("Si", "a")])
    padded = tokenizer.pad([tokenizer.encode(NACL), tokenizer.encode(silicon)])
    assert padded["attention_mask"] == [[1, 1, 1], [1, 1, 0]] and padded["dof"] == [[0, 0, 0], [0, 0, 0]]
    assert isinstance(tokenizer.pad([tokenizer.encode(NACL)], return_tensors="pt")["element_ids"], torch.Tensor)


def test_structures_are_analysed(tokenizer):
    structure = RUTILE.to_structure(seed=1)
    assert tokenizer.decode(tokenizer(structure)) == [RUTILE]
    with pytest.raises(StructureParseError, match="item 1: unparseable CIF"):
        tokenizer([structure, "data_x\nbroken\n"])


def test_invalid_ids_decode_to_clear_errors(tokenizer):
    batch = tokenizer([NACL, RUTILE], return_tensors="pt")
    batch["site_symmetry_ids"][1, 0] = tokenizer.token_id("site_symmetry", "m-3m")
    with pytest.raises(InvalidRepresentationError, match=r"row 1: token 0: space group 136 .* no Wyckoff position"):
        tokenizer.decode(batch)
    batch = tokenizer([NACL], return_tensors="pt")
    batch["element_ids"][0, 1] = batch["element_ids"][0, 0]
    batch["enumeration_ids"][0, 1] = batch["enumeration_ids"][0, 0]  # Na twice on the fixed 4a
    with pytest.raises(InvalidRepresentationError, match=r"row 0: .*can hold one atom orbit only"):
        tokenizer.decode(batch)
    batch = tokenizer([NACL], return_tensors="np")
    batch["site_symmetry_ids"][0, 0] = tokenizer.mask_token_id
    with pytest.raises(InvalidRepresentationError, match="special id"):
        tokenizer.decode(batch)


def test_max_sites(tokenizer):
    limited = WyckoffTokenizer(max_sites=1)
    with pytest.raises(InvalidRepresentationError, match="more than max_sites=1"):
        limited([NACL])


def test_save_and_load(tmp_path, tokenizer):
    """``wyckoff_hf`` registers the tokenizer for ``AutoTokenizer``: its code and tables travel with it."""
    custom = WyckoffTokenizer(symprec=0.01, max_sites=30)
    assert custom.name_or_path == ""
    saved = custom.save_pretrained(tmp_path)
    assert sorted(os.path.basename(path) for path in saved) == sorted(os.listdir(tmp_path)) == [
        "data_files.py", "element_descriptors.py", "errors.py", "representation.py", "structure_libraries.py",
        "time_limit.py",
        "tokenization_wyckoff.py",
        "tokenizer_config.json", "wyckoff_tables.json", "wyckoff_tables.py", "wyckoff_vocab.json"]
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    assert config == {"tokenizer_class": "WyckoffTokenizer", "symprec": 0.01, "angle_tolerance": 5.0, "max_sites": 30,
                      "auto_map": {"AutoTokenizer": ["tokenization_wyckoff.WyckoffTokenizer", None]}}
    assert json.loads((tmp_path / "wyckoff_vocab.json").read_text())["element"][13] == "Na"
    loaded = WyckoffTokenizer.from_pretrained(tmp_path)
    assert loaded.vocabularies == tokenizer.vocabularies
    assert (loaded.symprec, loaded.max_sites, loaded.name_or_path, len(loaded)) == (0.01, 30, str(tmp_path), 446)
    assert loaded.encode(NACL) == tokenizer.encode(NACL)
    assert loaded.decode(loaded([NACL, RUTILE])) == [NACL, RUTILE]


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
