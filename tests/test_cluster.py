"""Structure work on a Dask cluster (``utils.cluster``): the same results as the local pool, time limits in worker
threads, a killed worker's task run again, finished relaxations kept, and the CLI's ``--scheduler`` against a
scheduler and workers started the way docs/cluster.md starts them. Everything listens on loopback only."""

from __future__ import annotations

import io
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict
from pathlib import Path

import pandas as pd
import pytest
from pymatgen.core import Structure
from tqdm import tqdm

from wyckoff_hf.evaluation import relaxation
from wyckoff_hf.evaluation.relaxation import RelaxationFailure, RelaxationSettings, relax_samples
from wyckoff_hf.evaluation.report import evaluate
from wyckoff_hf.generation.output import write_samples
from wyckoff_hf.generation.realisation import RealisationSettings
from wyckoff_hf.tokenization import WyckoffRepresentation
from wyckoff_hf.tokenization import time_limit as time_limit_module
from wyckoff_hf.tokenization.time_limit import TimeLimitExceeded, time_limit
from wyckoff_hf.utils.cluster import ClusterTaskError, cluster_as_completed, connect
from wyckoff_hf.utils.parallel import parallel_as_completed, parallel_map

distributed = pytest.importorskip("distributed")

NACL = WyckoffRepresentation.from_sites(225, [("Na", "a"), ("Cl", "b")])
KCL = WyckoffRepresentation.from_sites(225, [("K", "a"), ("Cl", "b")])
ONE_TRIAL = RelaxationSettings(num_trials=1, screen_fmax=0.1, timeout=120)


@pytest.fixture(scope="module")
def cluster():
    """Two single-threaded worker processes on loopback, as ``dask worker --nworkers 2 --nthreads 1`` starts them."""
    with (distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                   dashboard_address=None) as local,
          distributed.Client(local, set_as_default=False) as client):  # the engine must not need a default client
        yield client


# ------------------------------------------------------------------------------------------ tasks run on workers


def spin_under_a_limit(seconds: float) -> tuple[bool, bool, float]:
    """Busy Python (as pyxtal's placement is) under ``time_limit``: struck?, in the main thread?, seconds."""
    start = time.perf_counter()
    try:
        with time_limit(seconds):
            while time.perf_counter() - start < 60:
                pass
        struck = False
    except TimeLimitExceeded:
        struck = True
    return struck, threading.current_thread() is threading.main_thread(), time.perf_counter() - start


def spin_past_a_swallowed_strike(seconds: float) -> tuple[int, bool, float]:
    """Busy Python whose first strike a bare ``except`` swallows (as pyxtal's lattice code can), then more busy
    Python: strikes swallowed, struck in the end?, seconds."""
    start, swallowed = time.perf_counter(), 0
    try:
        with time_limit(seconds):
            try:
                while time.perf_counter() - start < 20:
                    pass
            except:  # noqa: E722 -- the library's bare except under test
                swallowed += 1
            while time.perf_counter() - start < 20:
                pass
        struck = False
    except TimeLimitExceeded:
        struck = True
    return swallowed, struck, time.perf_counter() - start


def slow_square(x: int) -> int:
    time.sleep(0.4)
    return x * x


def square_but_not_three(x: int) -> int:
    if x == 3:
        raise ValueError("three")
    return x * x


# ------------------------------------------------------------------------------------------ engine


def test_a_time_limit_strikes_off_the_main_thread():
    result = []
    thread = threading.Thread(target=lambda: result.append(spin_under_a_limit(0.3)))
    thread.start()
    thread.join(30)
    (struck, main_thread, seconds), = result
    assert struck and not main_thread and seconds < 5


def test_a_time_limit_strikes_again_after_a_bare_except_swallowed_it(monkeypatch):
    monkeypatch.setattr(time_limit_module, "RESTRIKE", 0.2)
    swallowed, struck, seconds = spin_past_a_swallowed_strike(0.2)
    assert (swallowed, struck) == (1, True) and seconds < 5
    result = []
    thread = threading.Thread(target=lambda: result.append(spin_past_a_swallowed_strike(0.2)))
    thread.start()
    thread.join(30)
    (swallowed, struck, seconds), = result
    assert (swallowed, struck) == (1, True) and seconds < 5


def test_maps_give_the_local_results_on_the_cluster(cluster):
    items = list(range(-20, 20))
    with connect(cluster):
        assert parallel_map(abs, items, num_workers=1, chunksize=3) == [abs(x) for x in items]
        assert sorted(parallel_as_completed(abs, list(enumerate(items)))) == list(enumerate(map(abs, items)))
        assert parallel_map(abs, []) == []
    assert parallel_map(abs, items, num_workers=2) == [abs(x) for x in items]  # and the pool again outside


def test_the_time_limit_holds_in_a_cluster_worker(cluster):
    with connect(cluster):
        (struck, main_thread, seconds), = parallel_map(spin_under_a_limit, [0.5])
    assert struck and not main_thread and seconds < 10


def test_a_failing_task_is_reported_after_every_other_result(cluster):
    delivered = []
    with connect(cluster), pytest.raises(ClusterTaskError, match="1 of 6 task"):
        for index, result in parallel_as_completed(square_but_not_three, list(enumerate(range(6)))):
            delivered.append((index, result))
    assert sorted(delivered) == [(i, i * i) for i in range(6) if i != 3]


def test_the_bar_counts_done_failed_and_running(cluster):
    with tqdm(total=6, file=io.StringIO()) as bar, pytest.raises(ClusterTaskError):
        list(cluster_as_completed(cluster, square_but_not_three, list(enumerate(range(6))), bar))
    assert bar.n == 6 and bar.postfix == "failed=1, running=0"


def test_a_killed_workers_task_runs_again_and_nothing_finished_is_lost(cluster):
    """SIGKILL one of the two workers once results flow: its task goes to the other (or to the restarted one)."""
    delivered = []
    with connect(cluster):
        for index, result in parallel_as_completed(slow_square, list(enumerate(range(12)))):
            delivered.append((index, result))
            if len(delivered) == 2:
                pid = next(iter(cluster.run(os.getpid).values()))
                os.kill(pid, signal.SIGKILL)
    assert sorted(delivered) == [(i, i * i) for i in range(12)]
    cluster.wait_for_workers(2, timeout=60)  # the nanny restarts it, for the tests after this one


def test_relaxations_are_cached_as_they_arrive(tmp_path, monkeypatch):
    """An interrupt after the first result keeps it: the rerun relaxes only the other sample."""
    def first_then_interrupt(function, jobs, *args, **kwargs):
        position, job = jobs[0]
        yield position, RelaxationFailure(job[1], "pyxtal: stub")
        raise KeyboardInterrupt

    monkeypatch.setattr(relaxation, "parallel_as_completed", first_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        relax_samples([NACL, KCL], ONE_TRIAL, indices=[4, 9], cache_dir=tmp_path)
    assert [p.name[:6] for p in tmp_path.iterdir()] == ["000004"]
    relaxed = []

    def relax_the_rest(function, jobs, *args, **kwargs):
        relaxed.extend(job[1] for _, job in jobs)
        return [(position, RelaxationFailure(job[1], "x")) for position, job in jobs]

    monkeypatch.setattr(relaxation, "parallel_as_completed", relax_the_rest)
    assert [r.reason for r in relax_samples([NACL, KCL], ONE_TRIAL, indices=[4, 9], cache_dir=tmp_path)] == \
        ["pyxtal: stub", "x"]
    assert relaxed == [9]


def _samples(shared_data: Path, folder: Path, rows: slice) -> Path:
    """Representations of MP-20 validation crystals, written as ``generate`` writes them."""
    frame = pd.read_csv(shared_data / "mp_20_biternary" / "val.csv.gz", nrows=rows.stop)[rows]
    representations = [WyckoffRepresentation.from_structure(Structure.from_str(cif, fmt="cif"))
                       for cif in frame["cif"]]
    return write_samples(folder, representations, {"realisation": asdict(RealisationSettings())})


def _without_timings(metrics: dict) -> dict:
    return {key: value for key, value in metrics.items() if key != "seconds"}


def test_evaluate_on_the_cluster_equals_the_local_run(cluster, tmp_path, shared_data, tiny_dataset):
    """Realisation, reading and structure matching on the cluster; the metrics are the local run's."""
    samples = _samples(shared_data, tmp_path / "samples", slice(70, 78))
    local = evaluate(samples / "samples.jsonl", tiny_dataset, tmp_path / "local", num_workers=1, realise=True)
    with connect(cluster):
        remote = evaluate(samples / "samples.jsonl", tiny_dataset, tmp_path / "remote", realise=True)
    assert local["validity"]["realised"] == 1.0 and local["novelty"]["structure_novel"] is not None
    assert _without_timings(remote) == _without_timings(local)


@pytest.mark.slow
def test_stability_on_the_cluster_equals_the_local_run_and_fills_the_cache(cluster, tmp_path):
    """CHGNet on two cluster workers: the same energies as in this process, each sample cached as it finished."""
    pytest.importorskip("chgnet")
    local = relax_samples([NACL, KCL], ONE_TRIAL, num_workers=1)
    with connect(cluster):
        remote = relax_samples([NACL, KCL], ONE_TRIAL, cache_dir=tmp_path)
    assert [(r.index, r.energy, r.steps, r.space_group_relaxed) for r in remote] == \
        [(r.index, r.energy, r.steps, r.space_group_relaxed) for r in local]
    assert len(list(tmp_path.glob("*.json"))) == 2


# ------------------------------------------------------------------------------------------ CLI, docs/cluster.md


def _start(*args: str, log: Path) -> subprocess.Popen:
    return subprocess.Popen([shutil.which("dask") or "dask", *args], stdout=subprocess.DEVNULL,
                            stderr=log.open("w"), start_new_session=True)


@pytest.mark.slow
def test_realise_with_a_scheduler_writes_the_local_runs_files(tmp_path, shared_data):
    """``dask scheduler`` and ``dask worker --nworkers 2 --nthreads 1`` as subprocesses, reached through
    ``DASK_SCHEDULER_ADDRESS``: the structure files are byte for byte those of a local ``realise``."""
    local = _samples(shared_data, tmp_path / "local", slice(0, 10))
    remote = _samples(shared_data, tmp_path / "remote", slice(0, 10))
    scheduler_file = tmp_path / "scheduler.json"
    processes = [_start("scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard", "--scheduler-file",
                        str(scheduler_file), log=tmp_path / "scheduler.log")]
    try:
        processes.append(_start("worker", "--scheduler-file", str(scheduler_file), "--nworkers", "2", "--nthreads",
                                "1", "--host", "127.0.0.1", "--no-dashboard", log=tmp_path / "worker.log"))
        with distributed.Client(scheduler_file=str(scheduler_file), timeout=60) as client:
            client.wait_for_workers(2, timeout=60)
            address = client.scheduler.address
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "DASK_SCHEDULER_ADDRESS": address}
        for folder, environment in ((local, {**os.environ, "DASK_SCHEDULER_ADDRESS": ""}), (remote, env)):
            result = subprocess.run([sys.executable, "-m", "wyckoff_hf.cli", "realise", str(folder),
                                     "--num-workers", "1"], env=environment, capture_output=True, text=True,
                                    timeout=300)
            assert result.returncode == 0, result.stderr[-2000:]
        names = sorted(p.name for p in (local / "structures").iterdir())
        assert len(names) == 10
        for name in names:
            assert (remote / "structures" / name).read_bytes() == (local / "structures" / name).read_bytes()
    finally:
        for process in reversed(processes):
            os.killpg(process.pid, signal.SIGTERM)
        for process in processes:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(10)


def test_an_unreachable_scheduler_fails_in_one_line(tmp_path, capsys, monkeypatch):
    from wyckoff_hf import cli
    from wyckoff_hf.utils import cluster

    monkeypatch.setattr(cluster, "CONNECT_TIMEOUT", 2.0)
    folder = write_samples(tmp_path / "out", [NACL], {"realisation": asdict(RealisationSettings())})
    assert cli.main(["realise", str(folder), "--scheduler", "tcp://127.0.0.1:9"]) == 2
    assert "wyckoff-hf realise: error:" in capsys.readouterr().err
