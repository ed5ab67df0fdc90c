"""Extending the package: a target of one's own registered in one file (tests/toy_plugin.py) is known
to every part (make_target, predict, the CLI, run, results); a half-registered target or experiment is
refused by name; the built-in registries agree with each other."""

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pytest

import infoflow
from infoflow.comparison import PROFILES, comparison_profile, profile_of
from infoflow.experiments import EXPERIMENTS, Experiment, make_experiment, register_experiment
from infoflow.predict import BUILTIN_CONSTRUCTIONS, predict, predict_targets
from infoflow.results import aggregate, load_records
from infoflow.runner import Execution, run_experiment
from infoflow.targets import TARGETS, Target, make_target, register_target

HERE = Path(__file__).resolve().parent


@pytest.fixture
def toy():
    """tests/toy_plugin.py imported as a plugin; its registrations removed afterwards."""
    sys.path.insert(0, str(HERE))
    try:
        assert infoflow.load_plugins("toy_plugin") == ["toy_plugin"]
        yield sys.modules["toy_plugin"]
    finally:
        sys.path.remove(str(HERE))
        TARGETS.pop("toy-max", None)
        EXPERIMENTS.pop("toy-max", None)
        sys.modules.pop("toy_plugin", None)


def test_the_built_in_registries_agree():
    assert set(PROFILES) <= set(TARGETS) and set(BUILTIN_CONSTRUCTIONS) <= set(PROFILES)
    assert set(predict_targets()) == set(PROFILES)
    assert all(cls.target in TARGETS for cls in EXPERIMENTS.values())
    for name, cls in TARGETS.items():
        assert cls.name == name and (profile_of(cls) is None) == (name not in PROFILES)


def test_a_target_registered_in_one_file_is_known_everywhere(toy, tmp_path):
    assert "toy-max" in predict_targets() and make_target("toy-max").d == 1
    assert comparison_profile("toy-max").upper(16) == 15
    p = predict("toy-max", 16, [1], embed=8)
    assert p.efficient and p.construction == "the CLS retrieves the largest token"
    exp = make_experiment("toy-max", "quick")
    out = tmp_path / "runs"
    run_experiment("toy-max", "quick", {}, out, Execution(device="cpu"), progress=False)
    rows = aggregate(load_records("toy-max", "quick", folder=out))
    assert len(rows) == 2 and all(r["n_seeds"] == 2 and r["n_failed"] == 0 and r["mean"] >= 0 for r in rows)
    assert len(list(out.glob("*.json"))) == len(exp.runs())


def test_the_cli_imports_plugins_named_in_the_environment(tmp_path):
    env = {**os.environ, "INFOFLOW_PLUGINS": "toy_plugin", "PYTHONPATH": str(HERE)}
    cli = [sys.executable, "-m", "infoflow.cli"]
    listed = subprocess.run(cli + ["predict", "--list"], env=env, capture_output=True, text=True)
    assert listed.returncode == 0 and "toy-max" in listed.stdout.split()
    out = subprocess.run(
        cli + ["predict", "--target", "toy-max", "--T", "16", "--heads", "1", "--embed", "8", "--json"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0 and json.loads(out.stdout)["efficient"] is True
    run = subprocess.run(cli + ["run", "toy-max", "--out", str(tmp_path)], env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    table = subprocess.run(
        cli + ["results", "toy-max", "--dir", str(tmp_path)], env=env, capture_output=True, text=True
    )
    assert table.returncode == 0 and "1 layer, h=1" in table.stdout
    bad = subprocess.run(
        cli + ["predict", "--list"], env={**env, "INFOFLOW_PLUGINS": "no_such_plugin"}, capture_output=True, text=True
    )
    assert bad.returncode == 2 and "INFOFLOW_PLUGINS names 'no_such_plugin'" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_half_registered_targets_and_experiments_are_refused_by_name():
    @dataclass(frozen=True)
    class Unregistered(Target):
        name: ClassVar[str] = "unregistered"

        def __call__(self, X):
            return X.sum((-1, -2))

    class Orphan(Experiment):
        name: ClassVar[str] = "orphan"
        target: ClassVar[str] = "unregistered"

    with pytest.raises(ValueError, match="'unregistered' is not a registered target"):
        register_experiment(Orphan)
    with pytest.raises(ValueError, match="unknown target 'unregistered'"):
        predict("unregistered", 8, [1])
    with pytest.raises(ValueError, match="no comparison profile for target 'kth-largest'"):
        comparison_profile("kth-largest")

    @dataclass(frozen=True)
    class Impostor(Target):
        name: ClassVar[str] = "intrinsic-dimension"

    with pytest.raises(ValueError, match="taken by infoflow.targets.IntrinsicDimension"):
        register_target(Impostor)

    class NotADataclass(Target):
        name: ClassVar[str] = "plain"

    with pytest.raises(TypeError, match="must be a dataclass"):
        register_target(NotADataclass)
    assert "unregistered" not in TARGETS and "orphan" not in EXPERIMENTS and "plain" not in TARGETS


def test_contributing_names_what_exists():
    """The guide's recipes name functions that exist (a renamed hook would leave the guide wrong)."""
    import importlib

    text = (HERE.parent / "CONTRIBUTING.md").read_text()
    named = {
        "register_target": "infoflow.targets",
        "register_experiment": "infoflow.experiments",
        "layers_with": "infoflow.predict",
        "Construction": "infoflow.predict",
        "ComparisonProfile": "infoflow.comparison",
        "show_figure": "infoflow.figures",
        "table": "infoflow.figures",
        "array_namespace": "infoflow.backend",
    }
    for name, module in named.items():
        assert name in text and hasattr(importlib.import_module(module), name), name
    assert (HERE / "toy_plugin.py").exists() and "tests/toy_plugin.py" in text
