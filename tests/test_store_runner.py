"""Results store and runner: atomic records, corrupt/foreign records re-run, resume after SIGKILL with
every record present once, ensemble member == lone run, failures recorded, CLI errors."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from infoflow import __version__
from infoflow.experiments import EXPERIMENTS
from infoflow.model import EnsembleTransformer, ModelConfig
from infoflow.runner import Execution, group_runs, run_experiment
from infoflow.store import ResultsStore, config_hash, cpu_model, provenance, seal
from infoflow.targets import IntrinsicDimension
from infoflow.train import TrainConfig, train_ensemble

TINY = ["train.steps=20", "train.batch=32", "train.n_val=64", "train.eval_every=10", "ffn=16", "E=12"]


def tiny(**extra):
    from infoflow.experiments import parse_sets

    return parse_sets(TINY + [f"{k}={v}" for k, v in extra.items()])


def record(cfg):
    return {
        "config": cfg,
        "config_hash": config_hash(cfg),
        "status": "done",
        "metrics": {"best_val_nmse": 0.1, "final_train_nmse": 0.2, "steps": 3},
        "provenance": provenance(seed=0),
    }


def test_config_hash_is_canonical():
    assert config_hash({"a": 1, "b": [1, 2]}) == config_hash({"b": [1, 2], "a": 1})
    assert config_hash({"a": 1, "seed": 0}) != config_hash({"a": 1, "seed": 1})


def test_write_read_and_problems(tmp_path):
    store = ResultsStore(tmp_path)
    r = record({"x": 1})
    path = store.write(r)
    assert store.get(r["config_hash"]) == json.loads(path.read_text())
    assert not list(tmp_path.glob(".*.tmp"))
    # truncated
    path.write_text(path.read_text()[:40])
    assert store.get(r["config_hash"]) is None and "truncated" in str(store.problems[-1])
    # wrong hash
    bad = record({"x": 2})
    bad["config"]["x"] = 3
    (tmp_path / f"{bad['config_hash']}.json").write_text(json.dumps(seal(bad)))
    assert store.get(bad["config_hash"]) is None and "hash does not match" in str(store.problems[-1])
    # another package version
    old = record({"x": 4})
    old["provenance"]["version"] = "0.0.1"
    (tmp_path / f"{old['config_hash']}.json").write_text(json.dumps(seal(old)))
    assert store.get(old["config_hash"]) is None and "written by infoflow 0.0.1" in str(store.problems[-1])
    with pytest.raises(ValueError, match="does not match"):
        store.write({**record({"x": 5}), "config_hash": "0" * 16})
    with pytest.raises(ValueError, match="missing fields"):
        store.write({"config": {}})


def test_cpu_model_reads_the_model_name_or_falls_back(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nvendor_id\t: X\nmodel name\t: Some CPU 9000 @ 3.0GHz\nflags\t: fpu\n")
    assert cpu_model(info) == "Some CPU 9000 @ 3.0GHz"
    fallback = cpu_model(tmp_path / "missing")
    assert fallback and fallback != "Some CPU 9000 @ 3.0GHz"


def test_nan_is_never_written(tmp_path):
    r = record({"x": 1})
    r["metrics"]["best_val_nmse"] = float("nan")
    with pytest.raises(ValueError):
        ResultsStore(tmp_path).write(r)


def test_runner_skips_finished_and_reruns_corrupt(tmp_path):
    s1 = run_experiment("specific-position", "quick", tiny(), out=tmp_path, progress=False, log=lambda m: None)
    assert s1["trained"] == 2 and len(s1["records"]) == 2
    assert all(r["provenance"]["version"] == __version__ and r["provenance"]["torch"] for r in s1["records"])
    assert all(r["provenance"]["threads"] == torch.get_num_threads() for r in s1["records"])
    capability = torch.backends.cpu.get_cpu_capability()
    assert all(r["provenance"]["cpu_capability"] == capability and r["provenance"]["cpu"] for r in s1["records"])
    s2 = run_experiment("specific-position", "quick", tiny(), out=tmp_path, progress=False, log=lambda m: None)
    assert s2["trained"] == 0 and s2["skipped"] == 2
    victim = sorted(tmp_path.glob("*.json"))[0]
    victim.write_text('{"config": ')
    logs = []
    s3 = run_experiment("specific-position", "quick", tiny(), out=tmp_path, progress=False, log=logs.append)
    assert s3["trained"] == 1 and len(s3["records"]) == 2
    assert any("truncated" in m for m in logs)


def test_workers_train_the_same_records_as_one_process(tmp_path):
    """--workers N: ensembles in spawned processes, the same records as a serial sweep, none twice."""
    kw = dict(progress=False, log=lambda m: None)
    serial = run_experiment("intrinsic-dimension", "quick", tiny(), out=tmp_path / "serial", **kw)
    parallel = run_experiment(
        "intrinsic-dimension", "quick", tiny(), out=tmp_path / "parallel", execution=Execution(workers=2), **kw
    )
    assert parallel["trained"] == serial["trained"] == 12 and len(list((tmp_path / "parallel").glob("*.json"))) == 12
    by_hash = {r["config_hash"]: r for r in serial["records"]}
    for r in parallel["records"]:
        assert r["status"] == by_hash[r["config_hash"]]["status"] == "done"
        assert r["metrics"]["best_val_nmse"] == pytest.approx(
            by_hash[r["config_hash"]]["metrics"]["best_val_nmse"], rel=1e-3
        )
    again = run_experiment(
        "intrinsic-dimension", "quick", tiny(), out=tmp_path / "parallel", execution=Execution(workers=2), **kw
    )
    assert again["trained"] == 0 and again["skipped"] == 12
    sweeps = [json.loads(line) for line in (tmp_path / "parallel" / "sweeps.jsonl").read_text().splitlines()]
    assert len(sweeps) == 1 and sweeps[0]["workers"] == 2 and sweeps[0]["trained"] == 12
    assert 0 < sweeps[0]["wall_time_s"] == parallel["wall_time_s"]


@pytest.mark.parametrize("name", list(EXPERIMENTS))
def test_paper_profile_runs_at_its_shapes(name, tmp_path, monkeypatch):
    """The paper profile (the paper's shapes: T up to 64, E = 60, ...) builds and trains every one of its
    ensembles, grouped as on a GPU, here for one step on a few samples (and probes on 32 inputs, not
    2048), so the one GPU command cannot fail on a shape."""
    import infoflow.experiments as experiments
    from infoflow.experiments import make_experiment, parse_sets

    probe_inputs = experiments._probe_inputs
    monkeypatch.setattr(experiments, "_probe_inputs", lambda model, target, T, n: probe_inputs(model, target, T, 32))
    few = parse_sets(
        [
            "train.steps=1",
            "train.batch=4",
            "train.n_train=8",
            "train.n_val=8",
            "train.eval_every=1",
            "train.tail_steps=0",
        ]
    )
    if issubclass(EXPERIMENTS[name], experiments.LeverStudy) or name == "encoding-cost":  # fresh samples
        few["train"]["n_train"] = None
    exp = make_experiment(name, "paper", few)
    if name == "intrinsic-dimension-wide":  # no runs at paper scale (see test_every_profile_is_valid)
        assert exp.runs() == []
        return
    # as on the GPU: runs of the same parameter shapes share ensembles
    s = run_experiment(
        name,
        "paper",
        few,
        out=tmp_path,
        progress=False,
        log=lambda m: None,
        execution=Execution(device="cpu", share_shapes=True),
    )
    assert s["trained"] == len(exp.runs()) == len(s["records"]) > 0
    assert {r["status"] for r in s["records"]} <= {"done", "failed"}
    assert max(r["config"]["T"] for r in s["records"]) == max(run["T"] for run in exp.runs())


def test_an_experiment_that_fits_its_own_models_writes_records_and_resumes(tmp_path):
    """encoding-cost trains encoder/decoder pairs through Experiment.fit, not the Transformer: its runs
    become records like every other (metrics, curve, parameters, provenance, measurements.rms), never
    share ensembles across shapes, and a rerun skips them."""
    from infoflow.constructions import autoencoder_rows
    from infoflow.experiments import ConfigError, make_experiment, parse_sets

    few = parse_sets(["sizes=[2]", "widths=[4,32]", "train.steps=300", "train.eval_every=100", "train.n_val=512"])
    kw = dict(out=tmp_path, progress=False, log=lambda m: None, execution=Execution(device="cpu", share_shapes=True))
    s = run_experiment("encoding-cost", "quick", few, **kw)
    assert s["trained"] == 8 == len(s["records"])  # |I| = 2: m = 1 and 2, two widths, two seeds
    rec = s["records"][0]
    assert rec["status"] == "done" and [step for step, _ in rec["curve"]] == [100, 200, 300]
    assert rec["metrics"]["best_val_nmse"] == min(v for _, v in rec["curve"])
    assert set(rec["parameters"]) == {"encoder", "decoder"} and rec["measurements"]["rms"] > 0
    rows = {(r["m"], r["width"]): r for r in autoencoder_rows(s["records"])}
    assert rows[(2, 32)]["rms_best"] < 0.1 < rows[(1, 32)]["rms_best"]  # two numbers through one: lossy
    assert rows[(1, 4)]["parameters"] == (2 * 4 + 4) + (4 * 1 + 1) + (1 * 4 + 4) + (4 * 2 + 2)
    assert run_experiment("encoding-cost", "quick", few, **kw)["trained"] == 0
    with pytest.raises(ConfigError, match="fresh samples only"):
        make_experiment("encoding-cost", "quick", parse_sets(["train.n_train=1000"]))


def test_groups_are_runs_equal_but_for_seed():
    from infoflow.experiments import make_experiment

    runs = make_experiment("intrinsic-dimension", "quick", tiny()).runs()
    groups = group_runs(runs)
    assert len(groups) == len(runs) // 2 and all(len({r["seed"] for r in g}) == 2 for g in groups)


def test_shared_shape_groups():
    """Runs whose models differ only in heads (and targets only in D) share an ensemble, cut at
    max_members into nearly equal parts, every run once, configs kept together in order."""
    from infoflow.experiments import make_experiment, parse_sets

    runs = make_experiment("intrinsic-dimension", "quick", tiny()).runs()  # D = 2, 3: 6 configs x 2 seeds
    assert [len(g) for g in group_runs(runs, share_shapes=True)] == [12]
    groups = group_runs(runs, share_shapes=True, max_members=5)
    assert [len(g) for g in groups] == [4, 4, 4] and [r for g in groups for r in g] == runs
    assert len(group_runs(runs, max_members=1)) == 12
    tri = make_experiment("triangle-center", "quick", parse_sets(TINY[:-1])).runs()  # 3 T x 3 sizes x 2 seeds
    shared = group_runs(tri, share_shapes=True)  # per T: (2,2) and (4,4) at E = 24 together, E = 48 alone
    assert [len(g) for g in shared] == [4, 2] * 3
    assert all(len({(r["T"], r["model"]["E"]) for r in g}) == 1 for g in shared)
    with pytest.raises(ValueError, match="max_members must be a positive integer"):
        group_runs(runs, max_members=0)


def test_shared_shapes_train_the_same_records(tmp_path):
    kw = dict(progress=False, log=lambda m: None)
    alone = run_experiment(
        "intrinsic-dimension", "quick", tiny(), out=tmp_path / "a", execution=Execution(share_shapes=False), **kw
    )
    shared = run_experiment(
        "intrinsic-dimension",
        "quick",
        tiny(),
        out=tmp_path / "b",
        execution=Execution(share_shapes=True, max_members=8),
        **kw,
    )
    assert shared["trained"] == alone["trained"] == 12
    sweep = json.loads((tmp_path / "b" / "sweeps.jsonl").read_text())
    assert sweep["ensembles"] == 2 and sweep["share_shapes"] is True
    assert sorted(r["provenance"]["ensemble_members"] for r in shared["records"]) == [6] * 12
    by_hash = {r["config_hash"]: r for r in alone["records"]}
    for r in shared["records"]:
        ref = by_hash[r["config_hash"]]
        assert r["config"] == ref["config"] and r["status"] == ref["status"] == "done"
        assert r["metrics"]["best_val_nmse"] == pytest.approx(ref["metrics"]["best_val_nmse"], rel=1e-3)
        assert r["parameters"] == ref["parameters"]


def test_ensemble_member_trains_like_the_run_alone():
    cfg = ModelConfig(d=4, T=6, heads=(2, 2), E=8, ffn=16)
    tc = TrainConfig(steps=30, batch=32, n_val=64, eval_every=10, n_train=64)
    target = IntrinsicDimension(D=2)
    ens = train_ensemble(EnsembleTransformer(cfg, members=2, seeds=[3, 4]), target, [3, 4], tc)
    alone = train_ensemble(EnsembleTransformer(cfg, members=1, seeds=[4]), target, [4], tc)
    assert ens[1]["best_val_nmse"] == pytest.approx(alone[0]["best_val_nmse"], rel=1e-4)
    for (s1, v1), (s2, v2) in zip(ens[1]["curve"], alone[0]["curve"]):
        assert s1 == s2 and v1 == pytest.approx(v2, rel=1e-4)


def test_diverged_runs_are_recorded_failed_and_the_sweep_goes_on(tmp_path):
    s = run_experiment(
        "specific-position",
        "quick",
        tiny(**{"train.lr": 1e30, "train.grad_clip": 1e30}),
        out=tmp_path,
        progress=False,
        log=lambda m: None,
    )
    assert len(s["records"]) == 2
    failed = [r for r in s["records"] if r["status"] == "failed"]
    assert failed and all(r["error"] for r in failed)


def cli(*args, **kw):
    return subprocess.run([sys.executable, "-m", "infoflow.cli", *args], capture_output=True, text=True, **kw)


def test_resume_after_sigkill(tmp_path):
    args = [
        sys.executable,
        "-m",
        "infoflow.cli",
        "run",
        "depth-separation",
        "--out",
        str(tmp_path),
        "--quiet",
        "--set",
        "train.steps=40",
        "--set",
        "train.eval_every=20",
        "--set",
        "train.batch=64",
        "--set",
        "train.n_val=128",
    ]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and len(list(tmp_path.glob("*.json"))) < 3:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    n_before = len(list(tmp_path.glob("*.json")))
    assert 0 < n_before < 12, "the sweep should be killed midway"
    r = subprocess.run(args, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    files = list(tmp_path.glob("*.json"))
    assert len(files) == 12
    store = ResultsStore(tmp_path)
    records = store.records()
    assert len(records) == 12 and not store.problems
    assert len({r["config_hash"] for r in records}) == 12
    assert f"{12 - n_before} trained now" in r.stdout


@pytest.mark.parametrize(
    "args,field",
    [
        (["run", "nope"], "unknown experiment"),
        (["run", "intrinsic-dimension", "--profile", "fast"], "unknown profile"),
        (["run", "intrinsic-dimension", "--set", "foo=1"], "unknown key 'foo'"),
        (["run", "intrinsic-dimension", "--set", "E=-4"], "E: Input should be greater than 0"),
        (["run", "intrinsic-dimension", "--set", "E=25"], "must be divisible"),
        (["run", "intrinsic-dimension", "--set", "train.steps=0"], "train.steps"),
        (["run", "intrinsic-dimension", "--device", "tpu"], "device must be"),
        (["run"], "EXPERIMENT is required"),
        (["run", "intrinsic-dimension", "--workers", "0"], "workers must be a positive integer"),
        (["run", "intrinsic-dimension", "--max-members", "0"], "max_members must be a positive integer"),
        (
            ["run", "intrinsic-dimension", "--checkpoint-every", "-5"],
            "checkpoint_every must be a finite number >= 0 seconds",
        ),
        (
            ["run", "intrinsic-dimension", "--checkpoint-every", "inf"],
            "checkpoint_every must be a finite number >= 0 seconds",
        ),
        (["run", "intrinsic-dimension", "--out", ""], "out must name a folder"),
        (["run", "intrinsic-dimension", "--set", "Ds=[]"], "no runs under profile quick"),
        (
            ["run", "intrinsic-dimension", "--set", "train.grad_clip=-1"],
            "train.grad_clip: Input should be greater than 0",
        ),
        (
            ["run", "intrinsic-dimension", "--set", "train.weight_decay=-100"],
            "train.weight_decay: Input should be greater than or equal to 0",
        ),
        (["run", "intrinsic-dimension", "--set", "train.lr=inf"], "train.lr: Input should be a finite number"),
        (["run", "intrinsic-dimension", "--set", "train.lr=NaN"], "train.lr: Input should be a finite number"),
        (["run", "intrinsic-dimension", "--set", "train.steps.x=5"], "train.steps: Input should be a valid integer"),
        (
            ["run", "intrinsic-dimension", "--set", "seeds=[100000000000000000000]"],
            "seeds.0: Input should be less than",
        ),
        (["run", "intrinsic-dimension", "--set", "seeds=[1e20]"], "seeds.0"),
        (["run", "intrinsic-dimension", "--device", "cpu", "--cuda-graph"], "cuda_graph needs a CUDA device"),
    ],
)
def test_run_bad_config_one_line_exit_2(args, field):
    r = cli(*args)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and field in lines[0] and "Traceback" not in r.stderr


def test_unwritable_output(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    os.chmod(ro, 0o500)
    try:
        if os.access(ro, os.W_OK):  # root ignores permissions: use a path under a file instead
            ro = tmp_path / "file"
            ro.write_text("x")
            ro = ro / "sub"
        r = cli("run", "specific-position", "--out", str(ro), "--quiet")
        assert r.returncode == 2 and "not writable" in r.stderr
        assert not list(Path(tmp_path).rglob("*.json"))
    finally:
        os.chmod(tmp_path / "ro", 0o700)


def test_code_hash_names_the_package_source(tmp_path):
    """Records carry a hash of the package source: the same for the same files, different when any
    file's content (or name) changes, and what provenance() reports for the imported package."""
    from infoflow.store import code_sha256
    import infoflow

    pkg = Path(infoflow.__file__).parent
    assert provenance()["code_sha256"] == code_sha256(pkg)
    copy = tmp_path / "pkg"
    copy.mkdir()
    for f in pkg.glob("*.py"):
        (copy / f.name).write_bytes(f.read_bytes())
    assert code_sha256(copy) == code_sha256(pkg)
    (copy / "train.py").write_text((copy / "train.py").read_text() + "\n# changed\n")
    assert code_sha256(copy) != code_sha256(pkg)
    changed = code_sha256(copy)
    (copy / "sub").mkdir()  # a subpackage is part of the source too
    (copy / "sub" / "mod.py").write_text("x = 1\n")
    assert code_sha256(copy) != changed


def test_a_sweep_killed_inside_an_ensemble_resumes_from_its_checkpoint(tmp_path, monkeypatch):
    """Killed mid-training (here: at step 15 of 20 of the second ensemble), the rerun starts that
    ensemble from its last saved state, not from step 0, and writes the records an unbroken sweep
    writes; the checkpoint is gone once its records are written; the records name the earlier part."""
    import infoflow.train as train

    kw = dict(progress=False, log=lambda m: None)
    reference = run_experiment("specific-position", "quick", tiny(), out=tmp_path / "ref", **kw)
    real_lr_at, calls = train.lr_at, []

    def killed(step, cfg):
        calls.append(step)
        if len(calls) > 20 and step == 15:  # the first ensemble finishes, the second dies
            raise KeyboardInterrupt
        return real_lr_at(step, cfg)

    monkeypatch.setattr(train, "lr_at", killed)
    with pytest.raises(KeyboardInterrupt):
        run_experiment(
            "specific-position", "quick", tiny(), out=tmp_path / "cut", execution=Execution(checkpoint_every_s=0), **kw
        )
    assert len(list((tmp_path / "cut").glob("*.json"))) == 1 and len(list((tmp_path / "cut").glob(".*.ckpt"))) == 1
    monkeypatch.setattr(train, "lr_at", real_lr_at)
    calls.clear()
    monkeypatch.setattr(train, "lr_at", lambda step, cfg: calls.append(step) or real_lr_at(step, cfg))
    resumed = run_experiment(
        "specific-position", "quick", tiny(), out=tmp_path / "cut", execution=Execution(checkpoint_every_s=0), **kw
    )
    assert resumed["trained"] == 1 and calls == list(range(10, 20))  # from the save at step 10
    assert not list((tmp_path / "cut").glob(".*.ckpt"))
    ref = {r["config_hash"]: r for r in reference["records"]}
    for r in resumed["records"]:
        assert (r["metrics"], r["curve"]) == (ref[r["config_hash"]]["metrics"], ref[r["config_hash"]]["curve"])
    parts = [r["provenance"].get("resumed_from") for r in resumed["records"]]
    assert sorted(map(bool, parts)) == [False, True]
    part = next(p for p in parts if p)
    assert [(s["from_step"], s["to_step"]) for s in part] == [(0, 10)] and part[0]["code_sha256"]
    # a segment says what decided its sums, so a run resumed elsewhere shows where it changed machine
    assert part[0]["threads"] == str(torch.get_num_threads()) and part[0]["cpu"] == cpu_model()
    # and how long it took, so a resumed run's training time is the sum of its segments' and its own
    assert isinstance(part[0]["wall_time_s"], float) and 0 <= part[0]["wall_time_s"] < float("inf")


def test_a_checkpoint_of_another_grouping_is_reported_not_used(tmp_path):
    logs = []
    (tmp_path / ".0123456789abcdef.ckpt").write_bytes(b"x")
    run_experiment("specific-position", "quick", tiny(), out=tmp_path, progress=False, log=logs.append)
    assert any("belongs to no ensemble of this sweep" in m for m in logs)
    assert (tmp_path / ".0123456789abcdef.ckpt").exists()
    with pytest.raises(ValueError, match="checkpoint_every must be a finite number >= 0 seconds"):
        run_experiment("specific-position", "quick", tiny(), out=tmp_path, execution=Execution(checkpoint_every_s=-1))


def test_a_group_trained_with_cuda_graphs_writes_the_same_records(tmp_path, simulated_cuda_graphs):
    """``cuda_graph`` reaches the training (here simulated on the CPU, tests/conftest.py) and is named in
    the provenance; the records are otherwise those of the eager training."""
    from infoflow.experiments import make_experiment
    from infoflow.runner import train_group

    exp = make_experiment("intrinsic-dimension", "quick", tiny())
    group = exp.runs()[:2]
    stores = {}
    for name, graph in (("eager", False), ("graph", True)):
        if graph:
            sim = simulated_cuda_graphs()
        stores[name] = ResultsStore(tmp_path / name)
        train_group(exp, group, stores[name], Execution(device="cpu", cuda_graph=graph), log=lambda m: None)
    assert sim.captures == 1
    for run in group:
        eager, graph = (stores[n].get(config_hash(run)) for n in ("eager", "graph"))
        assert graph["provenance"].pop("cuda_graph") is True and "cuda_graph" not in eager["provenance"]
        assert {k: v for k, v in graph.items() if k not in ("provenance", "content_sha256")} == {
            k: v for k, v in eager.items() if k not in ("provenance", "content_sha256")
        }
