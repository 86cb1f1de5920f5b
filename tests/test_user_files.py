"""A user's files are sacred, and what the output says is true (issue 26): --overwrite removes only a job's own
files, sampling streams to disk and stops on Ctrl-C keeping what was made, manifests record the values used,
every --seed is checked alike, and failures offer the way out."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import wyckoff_hf.generation.jobs as jobs
from wyckoff_hf.cli import INTERRUPTED, main
from wyckoff_hf.evaluation import load_samples
from wyckoff_hf.generation.output import FAILURES_FILE, write_samples
from wyckoff_hf.tokenization import WyckoffRepresentation

MAX_SEED = 2**63 - 1  # what torch.Generator.manual_seed and numpy's SeedSequence both take
NACL = WyckoffRepresentation.from_sites(225, [("Na", "a"), ("Cl", "b")])


def one_line_error(capsys, command: str) -> str:
    """The one error line (after any progress bar), and no traceback."""
    err = capsys.readouterr().err
    lines = [line for line in err.strip().splitlines() if line.startswith("wyckoff-hf ")]
    assert len(lines) == 1 and lines[0].startswith(f"wyckoff-hf {command}: error: ") and "Traceback" not in err, err
    return lines[0]


# ------------------------------------------------------------------------------------------ 1. --overwrite


def test_overwrite_refuses_a_folder_with_a_users_files_and_names_them(tmp_path, capsys):
    out = tmp_path / "d"
    (out / "chapter").mkdir(parents=True)
    (out / "thesis.tex").write_text("years of work")
    assert main(["generate", "-n", "2", "--output-dir", str(out), "--overwrite"]) == 2
    line = one_line_error(capsys, "generate")
    assert "holds entries no wyckoff-hf job wrote (chapter, thesis.tex)" in line
    assert (out / "thesis.tex").read_text() == "years of work" and (out / "chapter").is_dir()


def test_overwrite_of_the_current_folder_deletes_nothing_of_the_users(tmp_path, capsys, monkeypatch):
    (tmp_path / "notes.txt").write_text("mine")
    monkeypatch.chdir(tmp_path)
    assert main(["csp", "NaCl", "-n", "2", "--output-dir", ".", "--overwrite"]) == 2
    assert "holds entries no wyckoff-hf job wrote (notes.txt)" in one_line_error(capsys, "csp")
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_overwrite_replaces_exactly_what_earlier_jobs_wrote(tmp_path, capsys):
    out = write_samples(tmp_path / "d", [NACL])
    assert main(["realise", str(out), "--num-workers", "1"]) == 0  # realise adds structures/ to the manifest
    assert "structures" in json.loads((out / "manifest.json").read_text())["files"]
    assert main(["generate", "-n", "3", "--output-dir", str(out), "--overwrite", "--seed", "1"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["log_probabilities.txt", "manifest.json", "samples.jsonl"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["files"] == ["samples.jsonl", "log_probabilities.txt", "manifest.json"]
    assert manifest["samples"]["count"] == 3 and len((out / "log_probabilities.txt").read_text().split()) == 3


# ------------------------------------------------------------------------------------------ 3. streaming, Ctrl-C


def test_sample_counts_beyond_the_maximum_are_one_line(capsys, tmp_path):
    for command in (["generate"], ["csp", "NaCl"]):
        with pytest.raises(SystemExit):
            main([*command, "-n", "100000000000", "--output-dir", str(tmp_path / "d")])
        assert "argument -n/--num-samples: must be at most 1000000000, got 100000000000; split" in \
               capsys.readouterr().err
    assert not (tmp_path / "d").exists()


def test_generate_writes_chunks_as_made_and_ctrl_c_keeps_them(tmp_path, capsys, monkeypatch):
    from wyckoff_hf.generation.output import SampleWriter

    monkeypatch.setattr(jobs, "SAMPLING_CHUNK", 4)
    out = tmp_path / "d"
    on_disk = []
    write = SampleWriter.write

    def write_then_interrupt(self, representations, scores=None):
        on_disk.append(len((out / "samples.jsonl").read_text().splitlines()))
        if len(on_disk) == 3:
            raise KeyboardInterrupt
        write(self, representations, scores)

    monkeypatch.setattr(SampleWriter, "write", write_then_interrupt)
    assert main(["generate", "-n", "40", "--output-dir", str(out), "--no-stability-filter"]) == INTERRUPTED
    assert on_disk == [0, 4, 8]  # each chunk was on disk before the next one was made
    assert "kept the 8 of 40 samples made before Ctrl-C" in capsys.readouterr().err
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["stopped"] == "interrupted" and manifest["samples"]["count"] == 8
    assert len(load_samples(out).valid) == 8  # the manifest's sha256 is that of the kept lines
    assert len((out / "log_probabilities.txt").read_text().split()) == 8


def test_csp_ctrl_c_keeps_the_crystals_found(tmp_path, capsys, monkeypatch):
    import wyckoff_hf.generation.csp as csp

    monkeypatch.setattr("wyckoff_hf.cli.CSP_CHUNK", 8)
    score = csp.crystal_log_probabilities
    calls = []

    def score_then_interrupt(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return score(*args, **kwargs)

    monkeypatch.setattr(csp, "crystal_log_probabilities", score_then_interrupt)
    out = tmp_path / "d"
    assert main(["csp", "NaCl", "--sample", "-n", "1000", "--output-dir", str(out)]) == INTERRUPTED
    manifest = json.loads((out / "manifest.json").read_text())
    # the chunk being scored at Ctrl-C is not counted: the first chunk's 8 samples are what the record holds
    assert manifest["stopped"] == "interrupted" and manifest["csp"]["num_samples"] == 8
    assert sum(manifest["csp"]["counts"]) == 8 and manifest["samples"]["count"] == len(manifest["csp"]["counts"]) > 0
    assert "kept the 8 of 1000 samples made before Ctrl-C" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------ 6. true records


def test_manifest_records_the_checkpoint_defaults_that_were_used(tmp_path):
    assert main(["generate", "-n", "2", "--output-dir", str(tmp_path / "g")]) == 0
    assert json.loads((tmp_path / "g" / "manifest.json").read_text())["generation"]["num_elements_range"] == [2, 3]
    assert main(["csp", "NaCl", "-n", "2", "--space-group", "225", "--output-dir", str(tmp_path / "c")]) == 0
    assert json.loads((tmp_path / "c" / "manifest.json").read_text())["csp"]["max_atoms"] == 80


def test_realise_mentions_a_failures_file_only_when_there_is_one(tmp_path, capsys):
    out = write_samples(tmp_path / "d", [NACL])
    assert main(["realise", str(out), "--num-workers", "1"]) == 0
    printed = capsys.readouterr().out
    assert "realised 1/1 structures" in printed and "no failures" in printed
    assert FAILURES_FILE not in printed and not (out / FAILURES_FILE).exists()


# ------------------------------------------------------------------------------------------ 10. --seed


@pytest.mark.parametrize("command", [["generate"], ["csp", "NaCl"], ["evaluate", "samples.jsonl", "--reference", "r"]])
@pytest.mark.parametrize("value", ["-1", "99999999999999999999"])
def test_every_seed_is_checked_alike(tmp_path, capsys, command, value):
    with pytest.raises(SystemExit):
        main([*command, "--output-dir", str(tmp_path / "d"), "--seed", value])
    assert f"argument --seed: must be an integer from 0 to {MAX_SEED}, got {value}" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------ 11. ways out


def test_a_too_rare_constraint_suggests_min_acceptance_rate_which_is_used(tmp_path, capsys):
    argv = ["generate", "-n", "5", "--required-elements", "Li", "O", "--space-group", "225", "221", "194",
            "--output-dir", str(tmp_path / "rare")]
    assert main([*argv, "--min-acceptance-rate", "0.9"]) == 2
    line = one_line_error(capsys, "generate")
    assert "min_acceptance_rate=0.9" in line and "pass a lower --min-acceptance-rate (now 0.9)" in line
    assert not (tmp_path / "rare").exists()  # the failure touched no folder
    assert main(["generate", "-n", "2", "--required-elements", "O", "--min-acceptance-rate", "0.05",
                 "--output-dir", str(tmp_path / "ok")]) == 0
    assert json.loads((tmp_path / "ok" / "manifest.json").read_text())["generation"]["min_acceptance_rate"] == 0.05


def test_rare_allowed_elements_name_the_other_samplers_which_are_recorded(tmp_path, capsys):
    argv = ["generate", "-n", "4", "--allowed-elements", "Na", "Cl", "--seed", "1"]
    assert main([*argv, "--output-dir", str(tmp_path / "exact")]) == 2
    assert "--constraint-sampling smc (reweighted proposals) or masked" in one_line_error(capsys, "generate")
    assert main([*argv, "--output-dir", str(tmp_path / "masked"), "--constraint-sampling", "masked"]) == 0
    manifest = json.loads((tmp_path / "masked" / "manifest.json").read_text())
    assert manifest["generation"]["constraint_sampling"] == "masked"
    assert manifest["generation"]["num_atoms_range"] == [2, 20]
    assert all(set(rep.elements) <= {"Na", "Cl"} for rep in load_samples(tmp_path / "masked").representations)


def test_a_raw_reference_points_at_prepare_dataset_and_leaves_no_folder(tmp_path, capsys, shared_data):
    samples = write_samples(tmp_path / "s", [NACL])
    report = tmp_path / "report"
    assert main(["evaluate", str(samples), "--reference", str(shared_data / "mp_20_biternary"),
                 "--output-dir", str(report)]) == 2
    assert "python scripts/prepare_dataset.py --source" in one_line_error(capsys, "evaluate")
    assert not report.exists()


def test_an_empty_samples_file_is_an_error_naming_it(tmp_path, capsys):
    empty = tmp_path / "samples.jsonl"
    empty.write_text("")
    assert main(["evaluate", str(empty), "--reference", "unused", "--output-dir", str(tmp_path / "r")]) == 1
    assert one_line_error(capsys, "evaluate").endswith(f"{empty} holds no samples")
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("command", [["generate", "-n", "2"], ["evaluate", "x.jsonl", "--reference", "unused"]])
def test_an_unwritable_output_folder_fails_before_any_work(tmp_path, capsys, monkeypatch, command):
    def no_work(*args, **kwargs):
        raise AssertionError("the work started")

    monkeypatch.setattr(jobs, "load_generator", no_work)
    monkeypatch.setattr("wyckoff_hf.evaluation.cli._evaluate", no_work)
    unwritable = Path("/proc/wyckoff-hf-test")  # not even root can create files in /proc
    assert main([*command, "--output-dir", str(unwritable)]) == 2
    assert "output folder /proc/wyckoff-hf-test is not writable: cannot create a file in /proc" in \
           one_line_error(capsys, command[0])
