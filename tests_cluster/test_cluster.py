"""Slurm executor against a real single-node cluster (make test-cluster starts it: scripts/slurm_cluster.sh)."""

import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from infoflow.store import ResultsStore

pytestmark = pytest.mark.skipif(
    shutil.which("sbatch") is None or subprocess.run(["sinfo", "-h"], capture_output=True).returncode != 0,
    reason="no Slurm cluster (run make test-cluster)",
)

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
SWEEP = [
    "depth-separation",
    "--quiet",
    "--set",
    "train.eval_every=10",
    "--set",
    "train.batch=32",
    "--set",
    "train.n_val=64",
    "--set",
    "ffn=16",
    "--set",
    "Ts=[4,6]",
]


def cli(out, *extra, executor="local", steps=30):
    args = [
        sys.executable,
        "-m",
        "infoflow.cli",
        "run",
        *SWEEP,
        "--set",
        f"train.steps={steps}",
        "--out",
        str(out),
        "--executor",
        executor,
        *extra,
    ]
    if executor == "slurm":
        args += ["--cpus", "1", "--time-min", "10"]
    return args


def records(out):
    store = ResultsStore(out)
    recs = store.records()
    assert not store.problems
    return {r["config_hash"]: r for r in recs}


def wait_for_running(timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        out = subprocess.run(
            ["squeue", "-h", "-t", "RUNNING", "-o", "%i"], capture_output=True, text=True
        ).stdout.split()
        if out:
            return out
        time.sleep(0.5)
    raise AssertionError("no job started running")


def test_slurm_records_equal_local_records(tmp_path):
    local, slurm = tmp_path / "local", tmp_path / "slurm"
    assert subprocess.run(cli(local), env=ENV, capture_output=True).returncode == 0
    r = subprocess.run(cli(slurm, executor="slurm"), env=ENV, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert "array job" in r.stderr
    a, b = records(local), records(slurm)
    assert set(a) == set(b) and len(a) == 8
    for h in a:
        assert a[h]["status"] == b[h]["status"] == "done"
        assert b[h]["metrics"] == pytest.approx(a[h]["metrics"], rel=1e-4)


def test_scancel_mid_run_is_reported_and_rerun_completes(tmp_path):
    out = tmp_path / "cancel"
    driver = subprocess.Popen(
        cli(out, executor="slurm", steps=3000), env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    victim = wait_for_running()[0]  # each job trains 3000 steps (>10 s): the cancel lands mid-run
    # submitit's worker ignores SIGTERM; Slurm sends SIGKILL after KillWait (1 s on the test cluster)
    subprocess.run(["scancel", victim], check=True)
    _, err = driver.communicate(timeout=600)
    assert f"job {victim} ended without writing" in err
    assert len(records(out)) < 8
    r = subprocess.run(cli(out, executor="slurm", steps=3000), env=ENV, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert len(records(out)) == 8


def test_interrupted_driver_reattaches_instead_of_resubmitting(tmp_path):
    out = tmp_path / "reattach"
    driver = subprocess.Popen(
        cli(out, executor="slurm", steps=3000), env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    wait_for_running()
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    queued = set(subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True).stdout.split())
    assert queued
    r = subprocess.run(cli(out, executor="slurm", steps=3000), env=ENV, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert "not submitted again" in r.stderr
    assert len(records(out)) == 8
