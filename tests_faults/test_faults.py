"""Fault tests (make test-faults): no run is ever lost, duplicated or silently wrong.

Each test drives the real command line in subprocesses, single-threaded so runs are bitwise
reproducible on the CPU.
"""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from infoflow import __version__
from infoflow.store import ResultsStore, seal

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
TS = list(range(4, 28))  # 24 lengths x 4 configurations = 96 ensembles: 20 kills land mid-sweep
SWEEP = [
    "depth-separation",
    "--quiet",
    "--set",
    "train.steps=50",
    "--set",
    "train.eval_every=25",
    "--set",
    "train.batch=32",
    "--set",
    "train.n_val=64",
    "--set",
    "ffn=16",
    "--set",
    f"Ts={TS}",
]
N_RUNS = 4 * len(TS)


def cmd(out, *extra):
    return [sys.executable, "-m", "infoflow.cli", "run", *SWEEP, "--out", str(out), *extra]


def run(out, *extra, check=True):
    r = subprocess.run(cmd(out, *extra), capture_output=True, text=True, env=ENV)
    if check:
        assert r.returncode == 0, r.stderr
    return r


def by_hash(out):
    store = ResultsStore(Path(out))
    records = store.records()
    assert not store.problems, store.problems
    return {r["config_hash"]: r for r in records}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("reference")
    run(out)
    recs = by_hash(out)
    assert len(recs) == N_RUNS
    return recs


def assert_same(records, reference):
    assert set(records) == set(reference)
    for h, r in records.items():
        assert r["status"] == reference[h]["status"]
        assert r["metrics"] == pytest.approx(reference[h]["metrics"], rel=1e-6)


def test_sigkill_at_20_random_moments_then_resume(tmp_path, reference):
    rng = random.Random(2026)
    kills = 0
    while kills < 20:
        if len(list(tmp_path.glob("*.json"))) >= N_RUNS:
            break
        proc = subprocess.Popen(cmd(tmp_path), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV)
        time.sleep(rng.uniform(0.5, 2.5))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
        files = list(tmp_path.glob("*.json"))
        assert len(files) == len({f.stem for f in files}) <= N_RUNS
        by_hash(tmp_path)  # every record present is valid: never a partial one
    run(tmp_path)
    assert kills == 20
    assert_same(by_hash(tmp_path), reference)


def test_corrupt_foreign_and_mismatched_records_are_rerun(tmp_path, reference):
    run(tmp_path)
    files = sorted(tmp_path.glob("*.json"))
    files[0].write_text(files[0].read_text()[:50])  # truncated
    rec = json.loads(files[1].read_text())
    rec["config"]["seed"] = 99  # hash no longer matches
    files[1].write_text(json.dumps(rec))
    rec = json.loads(files[2].read_text())
    rec["provenance"]["version"] = "0.0.0"  # another package version (sealed as that version would have)
    files[2].write_text(json.dumps(seal({k: v for k, v in rec.items() if k != "content_sha256"})))
    r = run(tmp_path)
    assert "truncated" in r.stderr and "hash does not match" in r.stderr and "written by infoflow 0.0.0" in r.stderr
    assert "3 trained now" in r.stdout
    assert_same(by_hash(tmp_path), reference)


def test_full_disk_gives_a_clear_error_and_no_partial_record(tmp_path):
    small = tmp_path / "small"
    small.mkdir()
    mounted = (
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=12k", "tmpfs", str(small)], capture_output=True).returncode
        == 0
    )
    try:
        if mounted:
            r = run(small, check=False)
        else:  # no mount permission: cap the file size instead
            r = subprocess.run(
                ["bash", "-c", 'ulimit -f 2; exec "$@"', "_", *cmd(small)], capture_output=True, text=True, env=ENV
            )
        assert r.returncode == 2, r.stderr
        last = r.stderr.strip().splitlines()[-1]
        assert last.startswith("error: could not write results") and "Traceback" not in r.stderr
        assert "No space left" in last or "too large" in last
        assert not list(small.glob(".*.tmp"))
        by_hash(small)  # what was written is whole and valid
    finally:
        if mounted:
            subprocess.run(["umount", str(small)])


def test_unwritable_output_folder(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    r = run(blocker / "out", check=False)
    assert r.returncode == 2 and "not writable" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_two_sweeps_on_one_store_split_the_work(tmp_path, reference):
    """Two sweeps on one folder: every run is trained once (claims), by one sweep or the other, and
    the records equal an unshared sweep's; no claim or temporary file is left."""
    procs = [
        subprocess.Popen(cmd(tmp_path), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=ENV) for _ in range(2)
    ]
    for p in procs:
        assert p.wait() == 0
    files = list(tmp_path.glob("*.json"))
    assert len(files) == N_RUNS and not list(tmp_path.glob(".*.tmp")) and not list(tmp_path.glob(".*.claim"))
    trained = [json.loads(line)["trained"] for line in (tmp_path / "sweeps.jsonl").read_text().splitlines()]
    assert sum(trained) == N_RUNS, trained
    assert_same(by_hash(tmp_path), reference)


def test_a_killed_sweeps_claims_and_temporary_files_are_cleaned_and_its_runs_retrained(tmp_path, reference):
    """A claim left by a dead process is taken over; stale temporary files are removed on start."""
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    from infoflow.store import _owner

    owner = {**_owner(), "pid": int(dead.stdout), "start": "0"}
    first = next(iter(reference))
    tmp_path.joinpath(f".{first}.claim").write_text(json.dumps(owner))
    tmp_path.joinpath(".abc-123.tmp").write_text("half a record")
    r = run(tmp_path)
    assert "removed 2 leftover" in r.stderr
    assert not list(tmp_path.glob(".*.claim")) and not list(tmp_path.glob(".*.tmp"))
    assert_same(by_hash(tmp_path), reference)


def test_a_diverged_run_is_recorded_failed_and_the_sweep_finishes(tmp_path):
    r = run(tmp_path, "--set", "train.lr=1e30", "--set", "train.grad_clip=1e30")
    records = by_hash(tmp_path)
    assert len(records) == N_RUNS
    failed = [x for x in records.values() if x["status"] == "failed"]
    assert failed and all(x["error"] for x in failed) and "failed:" in r.stderr
    assert all(x["provenance"]["version"] == __version__ for x in records.values())


def _checkpoint_states(folder: Path) -> set:
    """(name, mtime) of every checkpoint saved in ``folder``: a new element is a new save."""
    out = set()
    for p in Path(folder).glob(".*.ckpt"):
        try:
            out.add((p.name, p.stat().st_mtime_ns))
        except FileNotFoundError:  # removed as its records were written
            pass
    return out


LONG = [
    "depth-separation",
    "--quiet",
    "--set",
    "train.steps=600",
    "--set",
    "train.eval_every=20",
    "--set",
    "train.batch=32",
    "--set",
    "train.n_val=64",
    "--set",
    "ffn=16",
    "--set",
    "Ts=[6, 10]",
]


def test_sigkill_inside_ensembles_resumes_from_checkpoints(tmp_path):
    """Ensembles of 600 steps saving at every evaluation (--checkpoint-every 0), killed at 12 random
    moments, many of them mid-ensemble or mid-save: the finished sweep equals an unbroken one run
    without checkpoints, and some records say which steps an earlier process trained."""

    def long_cmd(out, *extra):
        return [sys.executable, "-m", "infoflow.cli", "run", *LONG, "--out", str(out), *extra]

    ref_dir = tmp_path / "ref"
    assert subprocess.run(long_cmd(ref_dir), capture_output=True, env=ENV).returncode == 0
    reference = by_hash(ref_dir)
    out = tmp_path / "cut"
    rng = random.Random(7)
    for _ in range(12):
        before = _checkpoint_states(out)
        proc = subprocess.Popen(
            long_cmd(out, "--checkpoint-every", "0"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV
        )
        # wait for an event, not a guess at the machine's speed: this process has saved a state
        # (a checkpoint appeared or changed), then kill it at a random moment soon after
        while proc.poll() is None and _checkpoint_states(out) <= before:
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 0.3))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        by_hash(out)  # records present are whole
    r = subprocess.run(long_cmd(out, "--checkpoint-every", "0"), capture_output=True, text=True, env=ENV)
    assert r.returncode == 0 and "warning" not in r.stderr, r.stderr
    records = by_hash(out)
    assert_same(records, reference)
    for h, rec in records.items():
        assert rec["curve"] == reference[h]["curve"]
    assert any(rec["provenance"].get("resumed_from") for rec in records.values())
    assert not list(out.glob(".*.ckpt"))
