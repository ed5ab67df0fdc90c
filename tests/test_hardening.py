"""Records are checked against one schema on every read, results say what they show and skip, a
checkpoint that cannot be written does not stop a training, Slurm errors come in one line, and
sweeps claim their runs."""

import errno
import json
import subprocess
import sys

import pytest

from infoflow.runner import run_experiment
from infoflow.store import ResultsStore, config_hash, provenance, record_problem, seal

TINY = {"train": {"steps": 20, "batch": 32, "n_val": 64, "eval_every": 10}, "ffn": 16, "E": 12}


def cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "infoflow.cli", *args], capture_output=True, text=True, cwd=cwd)


def good(cfg=None):
    cfg = cfg or {"x": 1}
    return seal(
        {
            "config": cfg,
            "config_hash": config_hash(cfg),
            "status": "done",
            "metrics": {"best_val_nmse": 0.1, "final_train_nmse": 0.2, "steps": 3},
            "provenance": provenance(seed=0),
        }
    )


def edited(**metrics):
    r = good()
    r["metrics"] = metrics
    return r


@pytest.mark.parametrize(
    "record, why",
    [
        (edited(), "metrics.steps: Field required"),
        (edited(best_val_nmse="0.1", steps=3), "metrics.best_val_nmse: Input should be a valid number"),
        (edited(best_val_nmse=None, steps=3), "status done needs a finite best_val_nmse"),
        (edited(best_val_nmse=float("nan"), steps=3), "status done needs a finite best_val_nmse"),
        (edited(best_val_nmse=-1.0, steps=3), "status done needs a finite best_val_nmse >= 0"),
        ({**good(), "status": "failed"}, "status failed needs an error"),
        ({**good(), "status": "running"}, "unknown status 'running'"),
        (edited(best_val_nmse=1e-9, steps=3), "content does not match its content_sha256"),  # a hand edit
        ({k: v for k, v in good().items() if k != "content_sha256"}, "missing fields ['content_sha256']"),
        ([1, 2], "not a JSON object"),
    ],
)
def test_a_record_that_breaks_the_schema_is_named_and_never_used(tmp_path, record, why):
    assert why in record_problem(record)
    path = tmp_path / f"{config_hash({'x': 1})}.json"
    path.write_text(json.dumps(record))
    store = ResultsStore(tmp_path)
    assert store.records() == [] and why in str(store.problems[0]) and "will re-run" in str(store.problems[0])
    assert record_problem(good()) is None


def test_run_retrains_a_record_with_broken_metrics_and_says_so(tmp_path):
    kw = dict(out=tmp_path, progress=False)
    run_experiment("specific-position", "quick", TINY, log=lambda m: None, **kw)
    victim = sorted(tmp_path.glob("*.json"))[0]
    r = json.loads(victim.read_text())
    r["metrics"] = {}
    victim.write_text(json.dumps(r))
    logs = []
    s = run_experiment("specific-position", "quick", TINY, log=logs.append, **kw)
    assert s["trained"] == 1 and len(s["records"]) == 2
    assert any(victim.name in m and "metrics" in m and "will re-run" in m for m in logs)


def test_results_says_which_profile_it_shows_and_every_record_it_skips(tmp_path):
    import shutil

    from infoflow.results import DATA_DIR

    out = tmp_path / "data" / "specific-position" / "quick"
    shutil.copytree(DATA_DIR / "specific-position" / "quick", out)  # the committed quick records
    victim = sorted(out.glob("*.json"))[0]
    victim.write_text(victim.read_text().replace('"status": "done"', '"status": "running"'))
    r = cli("results", "specific-position", "--dir", str(tmp_path / "data"))
    assert r.returncode == 0
    assert f"skipped: {victim}" in r.stderr and "unknown status" in r.stderr
    assert "specific-position, profile quick: 1/2 runs recorded" in r.stderr
    r = cli("results", "specific-position", "--dir", str(out))  # the records folder itself (run --out)
    assert r.returncode == 0 and "profile quick: 1/2" in r.stderr and "pe=" in r.stdout
    r = cli("results", "specific-position", "--profile", "bogus")
    assert r.returncode == 2 and r.stderr.strip() == "error: unknown profile 'bogus'; allowed: quick, cpu, paper"


def test_a_checkpoint_that_cannot_be_written_is_a_warning_and_training_goes_on(monkeypatch):
    import infoflow.train as train
    from infoflow.model import EnsembleTransformer, ModelConfig
    from infoflow.targets import IntrinsicDimension

    def full(self, state):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(train.Checkpoint, "save", full)
    logs = []
    model = EnsembleTransformer(ModelConfig(d=4, T=5, heads=(2, 2), E=8, ffn=8), members=1)
    out = train.train_ensemble(
        model,
        IntrinsicDimension(D=2),
        [0],
        train.TrainConfig(steps=30, batch=8, n_val=16, eval_every=10),
        checkpoint=train.Checkpoint("/nonexistent/x.ckpt", "k", every_s=0),
        log=logs.append,
    )
    assert out[0]["status"] == "done" and out[0]["steps"] == 30
    assert len(logs) == 2 and all("not saved" in m and "No space left" in m and "goes on" in m for m in logs)


@pytest.mark.parametrize(
    "content, why",
    [("5", "must hold a JSON object of options, got 5"), ("null", "must hold a JSON object of options, got null")],
)
def test_a_slurm_config_that_is_not_an_object_is_one_line(tmp_path, content, why):
    cfg = tmp_path / "slurm.json"
    cfg.write_text(content)
    r = cli("run", "specific-position", "--executor", "slurm", "--slurm-config", str(cfg), "--out", str(tmp_path / "o"))
    assert r.returncode == 2 and why in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_slurm_without_its_commands_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch, squeue, srun here
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "infoflow.cli",
            "run",
            "specific-position",
            "--executor",
            "slurm",
            "--quiet",
            "--out",
            str(tmp_path / "o"),
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2 and "needs Slurm's commands on PATH" in r.stderr and "Traceback" not in r.stderr


def test_claims_keep_a_live_sweeps_runs_and_take_over_a_dead_ones(tmp_path):
    from infoflow.store import _owner

    store = ResultsStore(tmp_path)
    assert store.claim(["a", "b"]) is None and store.claim(["a"]) is None  # ours: claimed again freely
    other = {**_owner(), "pid": 1, "start": "1"}  # pid 1 lives, but not as this start
    (tmp_path / ".c.claim").write_text(json.dumps({**_owner(), "host": "elsewhere"}))
    assert "on elsewhere" in store.claim(["b", "c"]) and (tmp_path / ".b.claim").exists()  # b kept: ours
    (tmp_path / ".d.claim").write_text(json.dumps(other))
    assert store.claim(["d"]) is None  # a dead (or reused) pid: taken over
    store.release(["a", "b", "d"])
    assert sorted(p.name for p in tmp_path.glob(".*.claim")) == [".c.claim"]
    (tmp_path / ".x.tmp").write_text("")
    assert store.clean_debris() == [] and (tmp_path / ".x.tmp").exists()  # another machine's claim: hands off
    (tmp_path / ".c.claim").unlink()
    assert store.clean_debris() == [".x.tmp"]


def test_a_sweep_skips_a_group_another_live_sweep_claims(tmp_path):
    from infoflow.experiments import make_experiment
    from infoflow.store import _owner

    runs = make_experiment("specific-position", "quick", TINY).runs()
    held = config_hash(runs[0])
    (tmp_path / f".{held}.claim").write_text(json.dumps({**_owner(), "host": "another-machine"}))
    logs = []
    s = run_experiment("specific-position", "quick", TINY, out=tmp_path, progress=False, log=logs.append)
    assert s["trained"] == 1 and len(s["records"]) == 1
    assert any("being trained by process" in m and "another-machine" in m for m in logs)


def _archive(path, members):
    """A .tgz of (TarInfo, bytes or None) members."""
    import io
    import tarfile

    with tarfile.open(path, "w:gz") as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def test_ingest_refuses_archives_over_its_bounds_before_extracting(tmp_path, monkeypatch):
    import tarfile

    import infoflow.reproduce as reproduce

    sparse = tarfile.TarInfo("data/x.json")
    sparse.size = 3 << 30  # a header claiming 3 GiB: refused from the header
    big = tmp_path / "big.tgz"
    with open(big, "wb") as fh:
        import gzip

        fh.write(gzip.compress(sparse.tobuf()))
    with pytest.raises(ValueError, match="member 'data/x.json' is 3072 MiB, over the 256 MiB limit"):
        reproduce.ingest(big, tmp_path / "data")
    monkeypatch.setattr(reproduce, "MAX_MEMBERS", 5)
    many = _archive(tmp_path / "many.tgz", [(tarfile.TarInfo(f"f{i}"), b"") for i in range(6)])
    with pytest.raises(ValueError, match="more than 5 members"):
        reproduce.ingest(many, tmp_path / "data")
    monkeypatch.setattr(reproduce, "MAX_TOTAL_BYTES", 10)
    info = tarfile.TarInfo("a")
    info.size = 11
    with pytest.raises(ValueError, match="unpacked"):
        reproduce.ingest(_archive(tmp_path / "total.tgz", [(info, b"x" * 11)]), tmp_path / "data")
    assert not (tmp_path / "data").exists()


def test_ingest_checks_each_records_experiment_replaces_an_invalid_copy_and_names_what_it_drops(tmp_path):
    import tarfile

    from infoflow.experiments import make_experiment
    from infoflow.reproduce import ingest

    run, other = (
        make_experiment("triangle-center", "quick").runs()[0],
        make_experiment("pair-center", "quick").runs()[0],
    )
    members = []
    for r, folder in ((run, "triangle-center"), (other, "triangle-center")):  # the second is misfiled
        rec = seal(
            {
                "config": r,
                "config_hash": config_hash(r),
                "status": "done",
                "metrics": {"best_val_nmse": 0.1, "final_train_nmse": 0.2, "steps": 500},
                "provenance": provenance("cpu", seed=r["seed"]),
            }
        )
        data = json.dumps(rec).encode()
        info = tarfile.TarInfo(f"data/{folder}/quick/{config_hash(r)}.json")
        info.size = len(data)
        members.append((info, data))
    link = tarfile.TarInfo("data/triangle-center/quick/link.json")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    fifo = tarfile.TarInfo("data/fifo")
    fifo.type = tarfile.FIFOTYPE
    archive = _archive(tmp_path / "a.tgz", members + [(link, None), (fifo, None)])
    here = tmp_path / "data" / "triangle-center" / "quick"
    here.mkdir(parents=True)
    (here / f"{config_hash(run)}.json").write_text("{corrupt")  # an invalid copy already here
    logs = []
    s = ingest(archive, tmp_path / "data", log=logs.append)
    assert s["replaced"] == 1 and s["records"] == {"triangle-center/quick": 1}
    assert ResultsStore(here).get(config_hash(run)) is not None
    assert len(s["problems"]) == 1 and "a record of 'pair-center' filed under 'triangle-center'" in s["problems"][0]
    assert sorted(s["dropped"]) == ["data/fifo (FIFO)", "data/triangle-center/quick/link.json (symlink)"]
    assert any("not extracted: data/fifo (FIFO)" in m for m in logs)


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["--target", "triangle-center", "--T", "10000"],
            "T = 10000 is too large to check a construction for triangle-center",
        ),
        (["--target", "intrinsic-dimension", "--T", "2000"], "use T <= "),
        (["--target", "depth-separation", "--T", "8", "--heads", ",".join(["1"] * 200)], "at most 64 layers"),
    ],
)
def test_predict_refuses_sizes_it_cannot_check_in_bounded_time_and_memory(args, message):
    r = cli("predict", *args)
    assert r.returncode == 2 and message in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_predict_checks_the_papers_largest_triangle_center_in_slices():
    """T = 64 (Table 12's largest) is within the bound, its T³ object evaluated in slices: the whole
    prediction peaks well under 1 GB (it took 1.1 GB before the slicing)."""
    from infoflow.comparison import comparison_profile
    from infoflow.predict import CHECK_BUDGET, check_work

    assert check_work(comparison_profile("triangle-center"), 64, 2, [4, 4], 8) <= CHECK_BUDGET
    code = (
        "import resource; from infoflow.predict import predict; p = predict('triangle-center', 64, [4, 4], embed=24); "
        "print(p.step1_ok, p.efficient, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    step1, efficient, peak_kib = r.stdout.split()
    assert (step1, efficient) == ("False", "False") and int(peak_kib) < 600_000, r.stdout


def test_verify_retrains_a_sample_and_finds_a_stale_record(tmp_path):
    """A record whose number the code no longer gives (here: edited and resealed, as a record written
    by older code would look) is reported, the other reproduces to the last bit; with refresh it is
    replaced by what the code gives. (One ensemble of the study's quick profile: two seeds, 300 steps.)"""
    from infoflow.experiments import make_experiment
    from infoflow.reproduce import verify
    from infoflow.runner import Execution, group_runs, train_group

    name = "intrinsic-dimension-levers"
    folder = tmp_path / name / "quick"
    exp = make_experiment(name, "quick")
    group = group_runs(exp.runs())[0]
    train_group(exp, group, ResultsStore(folder), Execution(device="cpu"), log=lambda m: None)
    victim, other = sorted(folder.glob("*.json"))
    rec = json.loads(victim.read_text())
    true = rec["metrics"]["best_val_nmse"]
    rec["metrics"]["best_val_nmse"] = true * 1.1
    victim.write_text(json.dumps(seal({k: v for k, v in rec.items() if k != "content_sha256"})))
    before = other.read_bytes()
    rows = verify([name], root=tmp_path, sample=2, refresh=True, log=lambda m: None)
    by = {r["record"]: r for r in rows}
    assert (
        len(by) == 2 and not by[victim.stem]["ok"] and by[victim.stem]["rel_diff"] == pytest.approx(0.1 / 1.1, rel=1e-4)
    )
    assert by[other.stem]["ok"] and by[other.stem]["rel_diff"] == 0
    assert json.loads(victim.read_text())["metrics"]["best_val_nmse"] == true  # replaced
    assert other.read_bytes() == before  # a record that reproduces is kept
    assert (folder / "table.csv").exists() and (tmp_path / "MANIFEST.json").exists()
