"""MP-20 as a ``datasets`` dataset: CSV layouts, Wyckoff columns, failures, parquet round trip, the script."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from conftest import load_script
from datasets import Dataset, DatasetDict
from huggingface_hub import DatasetCard, constants
from pymatgen.core import Lattice, Structure

from wyckoff_hf.cards import render_card
from wyckoff_hf.data import (
    FAILURE_COLUMNS,
    add_wyckoff_columns,
    load_crystal_csv_splits,
    load_wyckoff_dataset,
    representation_from_row,
    write_parquet_splits,
)
from wyckoff_hf.tokenization import WyckoffRepresentation, WyckoffTokenizer
from wyckoff_hf.utils.hub import HubRepoError, ensure_hub_repo

ROOT = Path(__file__).resolve().parents[1]
ROWS = 40
BROKEN_ID, DISORDERED_ID = "broken-cif", "disordered-1"


def _write(frame: pd.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path)  # with the pandas index column, like the CDVAE files


def _disordered_cif() -> str:
    structure = Structure(Lattice.cubic(5.6), [{"Na": 0.5, "K": 0.5}, "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    return structure.to(fmt="cif")


@pytest.fixture(scope="module")
def source_frames(shared_data: Path) -> dict[str, pd.DataFrame]:
    folder = shared_data / "mp_20_biternary"
    return {stem: pd.read_csv(folder / f"{stem}.csv.gz", index_col=0).head(ROWS) for stem in ("val", "test")}


@pytest.fixture(scope="module")
def two_split_folder(tmp_path_factory: pytest.TempPathFactory, source_frames: dict[str, pd.DataFrame]) -> Path:
    """val/test only, as on the development machines; the test file carries a broken and a disordered CIF."""
    folder = tmp_path_factory.mktemp("two_split")
    bad = pd.DataFrame([{"material_id": BROKEN_ID, "cif": "data_broken\n_cell_length_a 3\nnot a cif\n"},
                        {"material_id": DISORDERED_ID, "cif": _disordered_cif()}])
    test = pd.concat([source_frames["test"].iloc[:5], bad, source_frames["test"].iloc[5:]], ignore_index=True)
    _write(source_frames["val"], folder / "val.csv.gz")
    _write(test, folder / "test.csv.gz")
    return folder


@pytest.fixture(scope="module")
def converted(two_split_folder: Path) -> tuple[DatasetDict, pd.DataFrame]:
    return add_wyckoff_columns(load_crystal_csv_splits(two_split_folder, "val-test"))


def test_cdvae_layout_keeps_every_source_column(tmp_path: Path, source_frames: dict[str, pd.DataFrame]) -> None:
    frames = {"train": source_frames["val"].iloc[:20], "val": source_frames["val"].iloc[20:],
              "test": source_frames["test"]}
    for stem, frame in frames.items():
        _write(frame, tmp_path / f"{stem}.csv")  # plain .csv works as well as .csv.gz
    dataset = load_crystal_csv_splits(tmp_path)
    assert list(dataset) == ["train", "validation", "test"]
    assert [dataset[s].num_rows for s in dataset] == [20, ROWS - 20, ROWS]
    assert dataset["train"].column_names == ["source_index", *source_frames["val"].columns]
    assert list(dataset["validation"]["material_id"]) == list(frames["val"]["material_id"])
    assert list(dataset["test"]["source_index"]) == list(frames["test"].index)


def test_cdvae_layout_names_the_missing_train_file(two_split_folder: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"train\.csv\.gz.*val-test"):
        load_crystal_csv_splits(two_split_folder, "cdvae")
    with pytest.raises(ValueError, match="unknown layout"):
        load_crystal_csv_splits(two_split_folder, "nope")


def test_dev_layout_splits_val_90_10_reproducibly(two_split_folder: Path,
                                                   source_frames: dict[str, pd.DataFrame]) -> None:
    dataset = load_crystal_csv_splits(two_split_folder, "mp20-biternary-dev")
    train, validation = list(dataset["train"]["material_id"]), list(dataset["validation"]["material_id"])
    assert (len(train), len(validation)) == (round(0.9 * ROWS), ROWS - round(0.9 * ROWS))
    assert sorted(train + validation) == sorted(source_frames["val"]["material_id"])
    assert dataset["test"].num_rows == ROWS + 2
    again = load_crystal_csv_splits(two_split_folder, "mp20-biternary-dev")
    assert list(again["validation"]["material_id"]) == validation
    assert validation != list(source_frames["val"]["material_id"].iloc[-len(validation):])  # shuffled, not a tail


def test_val_test_layout(two_split_folder: Path) -> None:
    dataset = load_crystal_csv_splits(two_split_folder, "val-test")
    assert {s: d.num_rows for s, d in dataset.items()} == {"validation": ROWS, "test": ROWS + 2}


def test_numeric_and_text_ids_in_one_dataset(tmp_path: Path, source_frames: dict[str, pd.DataFrame]) -> None:
    """perov_5 and carbon_24 number their crystals: ids are read as text, so the splits share one schema."""
    numeric = source_frames["val"].head(3).assign(material_id=[3961, 11922, 6694])
    _write(numeric, tmp_path / "source" / "val.csv")
    _write(source_frames["test"].head(2), tmp_path / "source" / "test.csv")
    dataset, failures = add_wyckoff_columns(load_crystal_csv_splits(tmp_path / "source", "val-test"))
    assert failures.empty
    assert dataset["validation"]["material_id"] == ["3961", "11922", "6694"]
    assert dataset["test"]["material_id"] == list(source_frames["test"]["material_id"].head(2))
    write_parquet_splits(dataset, tmp_path / "prepared")
    assert load_wyckoff_dataset(tmp_path / "prepared")["validation"]["material_id"] == ["3961", "11922", "6694"]


def test_max_rows_keeps_the_first_rows_of_every_split(two_split_folder: Path) -> None:
    full = load_crystal_csv_splits(two_split_folder, "mp20-biternary-dev")
    dataset = load_crystal_csv_splits(two_split_folder, "mp20-biternary-dev", max_rows=3)
    assert {split: part["material_id"] for split, part in dataset.items()} == {
        split: part["material_id"][:3] for split, part in full.items()}
    with pytest.raises(ValueError, match="max_rows must be at least 1, got 0"):
        load_crystal_csv_splits(two_split_folder, "val-test", max_rows=0)


def test_bad_structures_are_reported_and_excluded(converted: tuple[DatasetDict, pd.DataFrame],
                                                  source_frames: dict[str, pd.DataFrame]) -> None:
    dataset, failures = converted
    assert list(failures.columns) == FAILURE_COLUMNS
    reported = {row.material_id: row for row in failures.itertuples()}
    assert set(reported) == {BROKEN_ID, DISORDERED_ID}
    assert reported[BROKEN_ID].error_type == "StructureParseError"
    assert reported[DISORDERED_ID].error_type == "DisorderedStructureError"
    assert "partial occupancies" in reported[DISORDERED_ID].reason
    assert set(failures["split"]) == {"test"}
    assert list(dataset["test"]["material_id"]) == list(source_frames["test"]["material_id"])
    assert list(dataset["validation"]["material_id"]) == list(source_frames["val"]["material_id"])
    assert "wyckoff_error" not in dataset["test"].column_names


def test_columns_match_the_tokenization_layer(converted: tuple[DatasetDict, pd.DataFrame]) -> None:
    tokenizer = WyckoffTokenizer()
    for row in converted[0]["validation"]:
        rep = WyckoffRepresentation.from_structure(row["cif"], symprec=0.1)
        assert representation_from_row(row) == rep
        assert row["space_group"] == rep.space_group == row["spacegroup.number"]
        assert row["site_symmetries"] == [s.site_symmetry for s in rep.sites]
        assert row["multiplicities"] == [s.multiplicity for s in rep.sites]
        assert {k: row[k] for k in tokenizer.model_input_names} == tokenizer.encode(rep)


def test_single_dataset_input(source_frames: dict[str, pd.DataFrame]) -> None:
    frame = source_frames["val"].head(3).reset_index(drop=True)
    dataset, failures = add_wyckoff_columns(Dataset.from_pandas(frame, split="validation"))
    assert isinstance(dataset, Dataset) and dataset.num_rows == 3 and failures.empty
    with pytest.raises(KeyError, match="structure"):
        add_wyckoff_columns(Dataset.from_pandas(frame), cif_column="structure")


def test_conversion_and_parquet_are_deterministic(tmp_path: Path, two_split_folder: Path,
                                                  converted: tuple[DatasetDict, pd.DataFrame]) -> None:
    parallel, failures = add_wyckoff_columns(load_crystal_csv_splits(two_split_folder, "val-test"), num_proc=2)
    pd.testing.assert_frame_equal(failures, converted[1])
    first = write_parquet_splits(converted[0], tmp_path / "a")
    second = write_parquet_splits(parallel, tmp_path / "b")
    for split in first:
        pd.testing.assert_frame_equal(pd.read_parquet(first[split]), pd.read_parquet(second[split]))


def test_load_wyckoff_dataset_round_trip(tmp_path: Path, converted: tuple[DatasetDict, pd.DataFrame]) -> None:
    dataset = converted[0]
    write_parquet_splits(dataset, tmp_path)
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == [
        "test-00000-of-00001.parquet", "validation-00000-of-00001.parquet"]
    loaded = load_wyckoff_dataset(tmp_path)
    assert list(loaded) == ["validation", "test"]
    for split in dataset:
        assert loaded[split].features == dataset[split].features
        pd.testing.assert_frame_equal(loaded[split].to_pandas(), dataset[split].to_pandas())
    with pytest.raises(FileNotFoundError, match="parquet"):
        load_wyckoff_dataset(tmp_path / "data")


def test_render_card_names_missing_values(tmp_path: Path) -> None:
    template = tmp_path / "card.md"
    template.write_text("# $title\n${count} rows, price 5 $$\n")
    assert render_card(template, {"title": "T", "count": 3}) == "# T\n3 rows, price 5 $\n"
    with pytest.raises(KeyError, match="count"):
        render_card(template, {"title": "T"})


def test_prepare_script_end_to_end_and_push(tmp_path: Path, two_split_folder: Path, fake_hub) -> None:
    out = tmp_path / "prepared"
    command = [sys.executable, str(ROOT / "scripts" / "prepare_dataset.py"), "--source", str(two_split_folder),
               "--layout", "mp20-biternary-dev", "--out", str(out), "--push-to-hub", "wyckoff/mp20-test"]
    result = subprocess.run(command, env={**os.environ, **fake_hub.env}, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"failed: test {BROKEN_ID} StructureParseError" in result.stdout

    failures = pd.read_csv(out / "failures.csv")
    assert sorted(failures["material_id"]) == sorted([BROKEN_ID, DISORDERED_ID])
    stats = json.loads((out / "statistics.json").read_text())
    assert stats["rows"] == {"train": 36, "validation": 4, "test": ROWS}
    assert stats["failures"] == {"train": 0, "validation": 0, "test": 2}
    assert stats["splits"]["test"]["num_structures"] == ROWS
    assert (out / "distributions.png").read_bytes()[:4] == b"\x89PNG"

    card = DatasetCard((out / "README.md").read_text())
    meta = card.data.to_dict()
    assert meta["license"] == "cc-by-4.0"
    assert {c["split"] for c in meta["configs"][0]["data_files"]} == {"train", "validation", "test"}
    assert {s["name"]: s["num_examples"] for s in meta["dataset_info"]["splits"]} == stats["rows"]
    assert "space_group_ids" in [f["name"] for f in meta["dataset_info"]["features"]]
    assert "arXiv:2110.06197" in card.text and "APL Materials" in card.text
    assert f"| test | {ROWS} | 2 |" in card.text

    pushed = fake_hub.files["wyckoff/mp20-test"]
    assert pushed["README.md"] == (out / "README.md").read_bytes()
    assert pushed["failures.csv"] == (out / "failures.csv").read_bytes()
    local = load_wyckoff_dataset(out)
    for split in ("train", "validation", "test"):
        shard = tmp_path / f"{split}.parquet"
        shard.write_bytes(pushed[f"data/{split}-00000-of-00001.parquet"])
        pd.testing.assert_frame_equal(pd.read_parquet(shard), local[split].to_pandas())


@pytest.fixture(scope="module")
def prepare_script():
    """scripts/prepare_dataset.py as a module, for the checks that run before any conversion."""
    return load_script("prepare_dataset")


def test_prepare_script_options(tmp_path: Path, prepare_script) -> None:
    base = ["--source", str(tmp_path), "--out", str(tmp_path / "out")]
    assert prepare_script.parse_args([*base, "--num-workers", "3"]).num_workers == 3
    assert prepare_script.parse_args([*base, "--num-proc", "2"]).num_workers == 2  # the earlier name still works
    with pytest.raises(SystemExit):
        prepare_script.parse_args([*base, "--max-rows", "0"])


def test_prepare_script_refuses_an_earlier_dataset_before_converting(tmp_path: Path, two_split_folder: Path,
                                                                     prepare_script) -> None:
    shard = tmp_path / "out" / "data" / "test-00000-of-00001.parquet"
    shard.parent.mkdir(parents=True)
    shard.write_bytes(b"an earlier run")
    with pytest.raises(SystemExit, match=r"^prepare_dataset.py: error: .*out already holds a prepared dataset "
                                         r"\(test-00000-of-00001.parquet\): pass --overwrite"):
        prepare_script.main(["--source", str(two_split_folder), "--out", str(tmp_path / "out")])
    assert shard.read_bytes() == b"an earlier run" and sorted(shard.parent.parent.iterdir()) == [shard.parent]


def test_hub_repo_is_created_or_refused_in_one_line(tmp_path: Path, fake_hub, monkeypatch) -> None:
    """The check ``--push-to-hub`` runs before the long job, against the Hub stand-in at the HTTP boundary."""
    monkeypatch.setattr(constants, "ENDPOINT", fake_hub.endpoint)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    monkeypatch.setenv("HF_TOKEN", "fake")
    assert ensure_hub_repo("wyckoff/data", repo_type="dataset") == "wyckoff/data"
    assert ensure_hub_repo("wyckoff/data", repo_type="dataset") == "wyckoff/data"  # exists: fine
    assert fake_hub.repo_types == {"wyckoff/data": "dataset"}
    refusals = [("data", "'data' must be ORG/NAME"), ("a/b/c", "must be ORG/NAME"),
                ("wyckoff/bad name", "'wyckoff/bad name' is invalid")]
    monkeypatch.setenv("HF_TOKEN", "")
    refusals.append(("wyckoff/model", "cannot create or access the Hub model repo 'wyckoff/model' at "
                                      f"{fake_hub.endpoint} .HfHubHTTPError: Client error '401 Unauthorized'"))
    for repo_id, message in refusals:
        with pytest.raises(HubRepoError, match=message) as error:
            ensure_hub_repo(repo_id)
        assert "\n" not in str(error.value)
    monkeypatch.setenv("HF_TOKEN", "fake")
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # nothing listens on the discard port
    with pytest.raises(HubRepoError, match="ConnectError"):
        ensure_hub_repo("wyckoff/model")
    assert "wyckoff/model" not in fake_hub.files


def test_prepare_script_checks_the_hub_before_converting(tmp_path: Path, two_split_folder: Path, fake_hub,
                                                         prepare_script, monkeypatch) -> None:
    monkeypatch.setattr(constants, "ENDPOINT", fake_hub.endpoint)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    monkeypatch.setenv("HF_TOKEN", "")
    out = tmp_path / "prepared"
    with pytest.raises(SystemExit, match=r"^prepare_dataset.py: error: cannot create or access the Hub dataset "
                                         r"repo 'wyckoff/mp20-test' at http.*401 Unauthorized"):
        prepare_script.main(["--source", str(two_split_folder), "--layout", "val-test", "--out", str(out),
                             "--push-to-hub", "wyckoff/mp20-test"])
    assert not out.exists() and fake_hub.files == {}


HUB_CLIENT = """
import sys
from pathlib import Path
from huggingface_hub import HfApi, hf_hub_download

folder = Path(sys.argv[1])
api = HfApi()
api.create_repo("wyckoff/model", exist_ok=True)
api.upload_folder(folder_path=str(folder), repo_id="wyckoff/model")
print(sorted(f.rfilename for f in api.model_info("wyckoff/model").siblings))
print(Path(hf_hub_download("wyckoff/model", "config.json", cache_dir=sys.argv[2])).read_text())
"""


def test_fake_hub_serves_model_repos(tmp_path: Path, fake_hub) -> None:
    """The stand-in is reused for model uploads: a text file goes inline, a binary one through LFS."""
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "wyckoff"}')
    (folder / "model.safetensors").write_bytes(bytes(range(256)) * 64)
    result = subprocess.run([sys.executable, "-c", HUB_CLIENT, str(folder), str(tmp_path / "cache")],
                            env={**os.environ, **fake_hub.env}, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert fake_hub.files["wyckoff/model"] == {"config.json": b'{"model_type": "wyckoff"}',
                                               "model.safetensors": bytes(range(256)) * 64}
    assert len(fake_hub.lfs_objects) == 1
    assert result.stdout.splitlines() == ["['config.json', 'model.safetensors']", '{"model_type": "wyckoff"}']
