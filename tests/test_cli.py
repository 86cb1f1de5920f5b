"""The `wyckoff-hf` console script: quick start, one-line errors, output folders that lose nothing and hold
nothing stale, symmetrised structure files, interrupts and kills."""

import argparse
import csv
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import ase.io
import pytest
import spglib
import torch
from huggingface_hub import constants
from pymatgen.core import Lattice, Structure

from wyckoff_hf.cli import INTERRUPTED, build_parser, main
from wyckoff_hf.evaluation import load_samples
from wyckoff_hf.generation.output import (
    FAILURES_FILE,
    ManifestError,
    line_sha256,
    read_manifest,
    read_structure,
    sample_line,
    write_samples,
    write_structure,
)
from wyckoff_hf.generation.realisation import RealisationSettings, realise_folder, realise_one
from wyckoff_hf.tokenization import WyckoffRepresentation

NACL = WyckoffRepresentation.from_sites(225, [("Na", "a"), ("Cl", "b")])
PNMA = WyckoffRepresentation.from_sites(62, [("Na", "c"), ("Cl", "c"), ("O", "d")])
# 13 orbits on the 1-dof position 3a of R3m: seconds to minutes of pyxtal, by seed and CPU (tests of the time
# limit make R3m stall through the stalling_pyxtal fixture instead)
CROWDED = WyckoffRepresentation.from_sites(160, [("Nb", "a")] * 4 + [("Ag", "a")] + [("S", "a")] * 8)
HEAVY_MODULES = ("torch", "transformers", "pymatgen", "pyxtal", "datasets")


def cli(*args: str, env: dict | None = None, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "wyckoff_hf.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})},
                            **kwargs)


def generated_folder(path: Path, representations, settings: RealisationSettings | None = None) -> Path:
    from dataclasses import asdict

    return write_samples(path, representations, {"realisation": asdict(settings or RealisationSettings())})


# ------------------------------------------------------------------------------------------ start-up, arguments


def test_help_version_and_argument_errors_import_nothing_heavy():
    code = ("import sys\nfrom wyckoff_hf.cli import main\n"
            "for argv in (['--version'], ['generate', '--help'], ['evaluate', '-h'], ['generate', '-n', '0']):\n"
            "    try:\n        main(argv)\n    except SystemExit:\n        pass\n"
            f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY_MODULES!r})))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.stdout.strip().splitlines()[-1] == "[]"
    assert result.stdout.startswith("wyckoff-hf 0.1.0")
    assert "--num-samples: must be at least 1, got 0" in result.stderr


def test_every_option_has_help_text():
    parser = build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, subparser in subparsers.choices.items():
        for action in subparser._actions:
            if action.help != argparse.SUPPRESS:
                assert action.help, f"{name} {action.option_strings or action.dest} has no help text"


def test_tokenize_prints_representation_and_tokens(tmp_path, capsys):
    nacl = Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    good, bad = tmp_path / "nacl.cif", tmp_path / "bad.cif"
    nacl.to(filename=str(good))
    bad.write_text("data_bad\nnot a cif\n")
    assert main(["tokenize", str(good), str(bad)]) == 1
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert lines[0] == f"{good}: Fm-3m (225): Na 4a, Cl 4b"
    assert json.loads(lines[1])["element_ids"] == [13, 19, 1]
    assert f"{bad}: ERROR StructureParseError" in err


def test_out_of_range_arguments_are_refused_before_any_work(tmp_path, capsys):
    for argv, message in ((["--space-group", "999"], "argument --space-group: '999' is not a space group number"),
                          (["--num-workers", "0"], "argument --num-workers: must be at least 1, got 0"),
                          (["--temperature", "-1"], "argument --temperature: must be greater than 0")):
        with pytest.raises(SystemExit):
            main(["generate", "--output-dir", str(tmp_path), *argv])
        assert message in capsys.readouterr().err


@pytest.mark.parametrize(("argv", "message"), [
    (["--model", "missing/folder/"], "no model folder at missing/folder/"),
    (["--model", "./missing"], "no model folder at ./missing"),
    (["--device", "cuda"], "--device cuda: no CUDA GPU is visible"),
    (["--device", "gpu0"], "--device 'gpu0' is not a torch device"),
    (["--field-temperature", "wyckoff=2"], "field_temperatures names unknown field(s) ['wyckoff']"),
    (["--field-temperature", "site_symmetry=0"], "the temperature of field 'site_symmetry' must be a positive"),
])
def test_bad_generate_arguments_give_one_line(tmp_path, capsys, argv, message):
    if argv[:2] == ["--device", "cuda"]:
        pytest.importorskip("torch").cuda.is_available() and pytest.skip("a GPU is present")
    assert main(["generate", "-n", "2", "--output-dir", str(tmp_path / "out"), *argv]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"wyckoff-hf generate: error: {message}")


def test_field_temperatures_are_sampled_at_and_recorded_per_field(tmp_path):
    """``--field-temperature`` reaches ``generate``: the manifest records each field's temperature, the other fields
    keep the checkpoint's, and the samples differ from the checkpoint's default ones."""
    out = tmp_path / "hot"
    argv = ["generate", "-n", "40", "--seed", "3", "--field-temperature", "site_symmetry=2.5",
            "--field-temperature", "enumeration=2.5", "--output-dir"]
    assert main([*argv, str(out)]) == 0 and main(["generate", "-n", "40", "--seed", "3", "--output-dir",
                                                  str(tmp_path / "default")]) == 0
    generation = json.loads((out / "manifest.json").read_text())["generation"]
    default = json.loads((tmp_path / "default" / "manifest.json").read_text())["generation"]
    calibrated = default["temperature"]["element"]
    assert default["temperature"] == dict.fromkeys(("element", "site_symmetry", "enumeration"), calibrated)
    assert generation["temperature"] == {"element": calibrated, "site_symmetry": 2.5, "enumeration": 2.5}
    assert (out / "samples.jsonl").read_text() != (tmp_path / "default" / "samples.jsonl").read_text()


def test_training_folders_are_named_with_what_to_pass_instead(tmp_path, capsys):
    run = tmp_path / "run"  # scripts/train.py's layout: checkpoint-N folders, the best model in the run folder
    (run / "checkpoint-51").mkdir(parents=True)
    (run / "checkpoint-51" / "trainer_state.json").write_text("{}")
    assert main(["generate", "--output-dir", str(tmp_path / "a"), "--model", str(run)]) == 2
    assert f"{run} is a training output folder without a saved model yet" in capsys.readouterr().err
    checkpoint = run / "checkpoint-51"
    assert main(["generate", "--output-dir", str(tmp_path / "a"), "--model", str(checkpoint)]) == 2
    assert f"is a training checkpoint (optimizer state for --resume-from-checkpoint), not a model: pass the run's " \
           f"output folder, which holds its best model, --model {run}" in capsys.readouterr().err


@pytest.mark.parametrize("offline", [True, False])
def test_unknown_hub_id_fails_fast_without_the_hub(tmp_path, capsys, monkeypatch, offline):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", offline)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # nothing listens on the discard port
    start = time.perf_counter()
    assert main(["generate", "--output-dir", str(tmp_path / "a"), "--model", "nobody/no-such-model"]) == 2
    assert time.perf_counter() - start < 10
    err = capsys.readouterr().err
    assert "model 'nobody/no-such-model' is not a local folder and not in the Hub cache" in err
    assert ("HF_HUB_OFFLINE is set" if offline else "http://127.0.0.1:9 cannot be reached") in err


# ------------------------------------------------------------------------------------------ output folders


def test_generate_refuses_a_non_empty_folder_and_overwrite_clears_it(tmp_path, capsys):
    out = generated_folder(tmp_path / "out", [NACL])
    (out / "structures").mkdir()
    (out / "structures" / "000000.cif").write_text("stale")
    from wyckoff_hf.generation.output import record_files

    record_files(out, "structures")  # as `wyckoff-hf realise` records what it wrote
    assert main(["generate", "-n", "2", "--output-dir", str(out)]) == 2
    assert f"output folder {out} is not empty: pass --overwrite" in capsys.readouterr().err
    assert main(["generate", "-n", "3", "--output-dir", str(out), "--overwrite", "--seed", "1"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["log_probabilities.txt", "manifest.json", "samples.jsonl"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["samples"]["count"] == 3 and manifest["generation"]["seed"] == 1
    assert manifest["realisation"] is None


def test_structures_must_belong_to_their_sample_lines(tmp_path):
    out = generated_folder(tmp_path / "out", [NACL, PNMA])
    realise_folder(out, num_workers=1)
    assert sorted(load_samples(out).structures) == [0, 1]
    other = generated_folder(tmp_path / "other", [PNMA, NACL])
    (other / "structures").mkdir()
    (other / "structures" / "000000.cif").write_text((out / "structures" / "000000.cif").read_text())
    with pytest.raises(ManifestError, match=r"000000\.cif does not belong to line 1"):
        load_samples(other)
    (out / "samples.jsonl").write_text(sample_line(PNMA) + "\n" + sample_line(NACL) + "\n")
    with pytest.raises(ManifestError, match=r"changed after manifest\.json was written"):
        load_samples(out)


@pytest.mark.parametrize(("representation", "group", "letters"), [(NACL, 225, ["a", "b"]),
                                                                   (PNMA, 62, ["c", "c", "d"])])
def test_cif_and_extxyz_are_symmetrised_and_read_back_by_pymatgen_and_ase(tmp_path, representation, group, letters):
    (tmp_path / "structures").mkdir()
    structure = representation.to_structure(seed=0)
    sample_hash = line_sha256(sample_line(representation))
    cif = write_structure(tmp_path, 0, structure, sample_hash, "cif")
    text = cif.read_text()
    assert f"_symmetry_Int_Tables_number   {group}" in text and "_atom_site_Wyckoff_symbol" in text
    atom_lines = text.split("_atom_site_occupancy\n")[1].strip().splitlines()
    assert [line.split()[3] for line in atom_lines] == letters  # one line per orbit, with its letter
    assert all(0 <= float(x) < 1 for line in atom_lines for x in line.split()[4:7])
    parsed, tag = read_structure(cif)
    assert tag == sample_hash and parsed.get_space_group_info(symprec=0.01)[1] == group
    assert WyckoffRepresentation.from_structure(parsed) == representation
    atoms = ase.io.read(cif)
    assert spglib.get_symmetry_dataset((atoms.cell[:], atoms.get_scaled_positions(), atoms.numbers),
                                       symprec=0.01).number == group
    assert len(atoms) == representation.num_atoms
    extxyz = write_structure(tmp_path, 1, structure, sample_hash, "extxyz")
    atoms = ase.io.read(io.StringIO(extxyz.read_text()), format="extxyz")
    assert atoms.info["spacegroup_number"] == group and read_structure(extxyz)[1] == sample_hash


def test_failures_record_which_limit_ended_them(tmp_path, stalling_pyxtal):
    assert isinstance(realise_one(NACL, 0, RealisationSettings()), Structure)
    failure = realise_one(CROWDED, 0, RealisationSettings(timeout=0.5))
    assert failure.limit == "time" and "within 0.5 s" in failure.reason
    # 3 s: NaCl must realise within the limit on a loaded machine too (0.5 s did not, beside two CHGNet jobs)
    out = generated_folder(tmp_path / "out", [CROWDED, NACL], RealisationSettings(timeout=3.0))
    summary = realise_folder(out, num_workers=1)
    assert (summary.realised, summary.failed) == (1, 1)
    with open(out / FAILURES_FILE, newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["index", "representation", "limit", "reason"] and len(rows) == 2
    assert rows[1][:3] == ["0", str(CROWDED), "time"] and "within 3.0 s" in rows[1][3]


# ------------------------------------------------------------------------------------------ interrupts, kills


def _sigint_as_from_a_terminal() -> None:
    """In the child, before exec: SIGINT's default action, which Python turns into KeyboardInterrupt. A test run
    started with SIGINT ignored (a background job of a non-interactive shell, e.g. ``nohup pytest &``) would pass the
    ignored SIGINT on, and the Ctrl-C below would never reach the job."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_keeps_finished_structures_and_realise_resumes(tmp_path):
    out = tmp_path / "out"
    job = cli("generate", "-n", "24", "--output-dir", str(out), "--structures", "--num-workers", "2", "--seed", "0",
              preexec_fn=_sigint_as_from_a_terminal)
    deadline = time.monotonic() + 120
    while len(list((out / "structures").glob("*.cif"))) < 3:
        assert job.poll() is None and time.monotonic() < deadline, job.stderr.read() if job.poll() else "timeout"
        time.sleep(0.05)
    job.send_signal(signal.SIGINT)
    _, err = job.communicate(timeout=60)
    assert job.returncode == INTERRUPTED, err[-2000:]
    assert f"resume with: wyckoff-hf realise {out}" in err and "Traceback" not in err
    assert len((out / "samples.jsonl").read_text().splitlines()) == 24
    kept = len(list((out / "structures").glob("*.cif")))
    assert 3 <= kept < 24
    resumed = cli("realise", str(out), "--num-workers", "2")
    stdout, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err[-2000:]
    samples = load_samples(out)  # verifies every structure against its line
    assert len(samples.structures) + len(samples.structure_errors) == 24
    assert "/24 structures" in stdout


def _children(pid: int) -> list[int]:
    children = []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(line.split(":\t", 1) for line in status.read_text().splitlines() if ":\t" in line)
        except OSError:
            continue
        if int(fields.get("PPid", "0").strip()) == pid:
            children.append(int(status.parent.name))
    return children


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/status").read_text().split("State:\t")[1][0] != "Z"
    except (OSError, IndexError):
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_workers_die_with_a_killed_parent(tmp_path):
    out = generated_folder(tmp_path / "out", [CROWDED, CROWDED], RealisationSettings(timeout=120))
    job = cli("realise", str(out), "--num-workers", "2")
    deadline = time.monotonic() + 60
    while len(workers := _children(job.pid)) < 2:
        assert job.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    time.sleep(1.0)  # the workers are inside pyxtal now
    job.kill()
    job.wait(timeout=10)
    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_alive(pid) for pid in workers)


def test_a_structure_that_cannot_be_written_is_a_recorded_failure(tmp_path, monkeypatch):
    import wyckoff_hf.generation.realisation as realisation

    def refuse(out_dir, index, structure, sample_hash, fmt):
        raise ValueError("symmetrisation failed")

    monkeypatch.setattr(realisation, "write_structure", refuse)
    out = generated_folder(tmp_path / "out", [NACL])
    summary = realise_folder(out, num_workers=1)
    assert (summary.realised, summary.failed) == (0, 1)
    with open(out / FAILURES_FILE, newline="") as f:
        rows = list(csv.reader(f))
    assert rows[1][:3] == ["0", str(NACL), "write"] and rows[1][3] == "ValueError: symmetrisation failed"


def test_a_relaxation_cache_without_stability_is_refused_in_one_line(tmp_path, capsys):
    samples = tmp_path / "samples.jsonl"
    samples.write_text(json.dumps({"space_group": 225, "sites": [["Na", "a"], ["Cl", "b"]]}) + "\n")
    argv = ["evaluate", str(samples), "--reference", "unused", "--relaxation-cache", str(tmp_path / "cache")]
    assert main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == ["wyckoff-hf evaluate: error: --relaxation-cache keeps CHGNet relaxations: it needs --stability"]
    assert not (tmp_path / "cache").exists()
    from wyckoff_hf.evaluation.stability import chgnet_available

    if not chgnet_available():  # --stability stops earlier without it, with its own message
        return
    (tmp_path / "a_file").write_text("not a folder")
    argv[-1] = str(tmp_path / "a_file")
    assert main([*argv, "--stability"]) == 2
    message = capsys.readouterr().err.strip().splitlines()[-1]
    assert message == f"wyckoff-hf evaluate: error: relaxation cache {tmp_path / 'a_file'}: exists and is not a folder"


def test_relax_only_fills_the_cache_with_its_share_in_order_and_stops(tmp_path, capsys, monkeypatch):
    """One machine's share of a split run: FIRST..LAST (downward here) into the cache, the invalid sample skipped."""
    pytest.importorskip("chgnet")
    from wyckoff_hf.evaluation import relaxation

    samples = tmp_path / "samples.jsonl"
    rows = [NACL.to_dict(), {"space_group": 225, "sites": [["Na", "a"], ["Cl", "a"]]}, PNMA.to_dict(), NACL.to_dict()]
    samples.write_text("".join(json.dumps(row) + "\n" for row in rows))
    calls = []
    monkeypatch.setattr(relaxation, "relax_representation",
                        lambda rep, index, settings, e: calls.append(index) or relaxation.RelaxationFailure(index, "x"))
    argv = ["evaluate", str(samples), "--reference", "unused", "--stability", "--stability-screen", "--num-workers",
            "1", "--relaxation-cache", str(tmp_path / "cache"), "--relax-only", "2", "0"]
    assert main(argv) == 0
    assert calls == [2, 0] and capsys.readouterr().out.strip().endswith(f"relaxed 2 valid samples of 2-0 into "
                                                                         f"{tmp_path / 'cache'}")
    assert sorted(path.name[:6] for path in (tmp_path / "cache").iterdir()) == ["000000", "000002"]
    assert main([*argv[:-3], "--relax-only", "0", "3"]) == 0 and calls == [2, 0, 3]  # the cached ones are kept
    assert main([*argv[:-5], "--relax-only", "0", "3"]) == 2
    assert capsys.readouterr().err.strip().endswith("--relax-only fills --relaxation-cache: it needs one")
    assert main([*argv[:-3], "--relax-only", "3", str(10**15)]) == 0 and calls == [2, 0, 3]  # clipped to the file
    assert main([*argv[:-3], "--relax-only", "4", "9"]) == 2
    assert capsys.readouterr().err.strip().endswith(f"--relax-only 4 9: no valid sample there ({samples} holds 4)")


def test_realise_keeps_a_folders_format_and_refuses_an_option_that_changes_it(tmp_path, capsys):
    out = generated_folder(tmp_path / "out", [NACL, PNMA], RealisationSettings(format="extxyz"))
    assert main(["realise", str(out), "--format", "cif", "--num-workers", "1"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"wyckoff-hf realise: error: {out} keeps the realisation settings it was started with; drop the options that "
        "change them: format cif (the folder's: extxyz)"]
    assert not (out / "structures").exists()
    assert main(["realise", str(out), "--format", "extxyz", "--num-workers", "1"]) == 0  # agrees: continues
    assert sorted(path.name for path in (out / "structures").iterdir()) == ["000000.extxyz", "000001.extxyz"]


def test_a_new_folder_is_realised_with_the_options_given(tmp_path):
    out = write_samples(tmp_path / "out", [NACL], {"generation": {"seed": 5}})
    assert main(["realise", str(out), "--format", "extxyz", "--max-attempts", "3", "--num-workers", "1"]) == 0
    assert read_manifest(out)["realisation"] == {"seed": 5, "max_attempts": 3, "timeout": 60.0, "format": "extxyz"}


def test_a_stability_screen_without_stability_is_refused_in_one_line(tmp_path, capsys):
    samples = tmp_path / "samples.jsonl"
    samples.write_text(json.dumps(NACL.to_dict()) + "\n")
    assert main(["evaluate", str(samples), "--reference", "unused", "--stability-screen",
                 "--output-dir", str(tmp_path / "report")]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "wyckoff-hf evaluate: error: --stability-screen screens CHGNet relaxations: it needs --stability"]
    assert not (tmp_path / "report").exists()


@pytest.mark.parametrize(("extra", "message"), [
    (["--stability-screen-refine", "2"],
     "--stability-screen-refine decides after the loose stage: it needs --stability-screen"),
    (["--stability-screen", "--stability-screen-refine", "4"],
     "--stability-screen-refine 4 is more than the 3 trial(s) of --stability-trials"),
    (["--stability-device", "gpu0"], "--stability-device 'gpu0' is not a torch device (Invalid device string: 'gpu0')"),
])
def test_stability_protocol_mistakes_are_refused_in_one_line(tmp_path, capsys, extra, message):
    samples = tmp_path / "samples.jsonl"
    samples.write_text(json.dumps({"space_group": 225, "sites": [["Na", "a"], ["Cl", "b"]]}) + "\n")
    argv = ["evaluate", str(samples), "--reference", "unused", "--stability", "--output-dir", str(tmp_path / "out"),
            *extra]
    assert main(argv) == 2
    assert capsys.readouterr().err.strip().splitlines() == [f"wyckoff-hf evaluate: error: {message}"]
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a machine without a GPU")
def test_stability_on_a_missing_gpu_says_what_to_pass(tmp_path, capsys):
    samples = tmp_path / "samples.jsonl"
    samples.write_text(json.dumps({"space_group": 225, "sites": [["Na", "a"], ["Cl", "b"]]}) + "\n")
    assert main(["evaluate", str(samples), "--reference", "unused", "--stability", "--stability-device", "cuda"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("wyckoff-hf evaluate: error: --stability-device cuda: no CUDA GPU is visible")
    assert line.endswith("use --stability-device cpu")
