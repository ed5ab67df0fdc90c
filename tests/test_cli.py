"""`infoflow predict`: the readable report, --json, --list and one-line errors with exit code 2."""

import json
import subprocess
import sys

import pytest


def cli(*args):
    return subprocess.run([sys.executable, "-m", "infoflow.cli", *args], capture_output=True, text=True)


def test_report_and_json():
    r = cli("predict", "--target", "intrinsic-dimension", "--D", "4", "--T", "64", "--heads", "4,4")
    assert r.returncode == 0 and "EFFICIENT" in r.stdout and "step 1" in r.stdout
    r = cli("predict", "--target", "intrinsic-dimension", "--D", "4", "--T", "64", "--heads", "3,4", "--json")
    d = json.loads(r.stdout)
    assert d["efficient"] is False and d["step1_ok"] is False and d["min_heads"] == 4
    assert {"target", "T", "heads", "target_noc", "model_noc", "cost_exponent", "reason"} <= set(d)


def test_list():
    r = cli("predict", "--list")
    assert r.returncode == 0 and "triangle-center" in r.stdout.split()


@pytest.mark.parametrize(
    "args,field",
    [
        (["--target", "nope"], "--target"),
        (["--target", "triangle-center", "--T", "0"], "--T"),
        (["--target", "intrinsic-dimension", "--D", "100", "--T", "64"], "--D"),
        (["--target", "intrinsic-dimension", "--layers", "3", "--heads", "4,4"], "--heads"),
        (["--target", "intrinsic-dimension", "--heads", "4,x"], "--heads"),
        (["--target", "intrinsic-dimension", "--heads", "0,4"], "--heads"),
        (["--target", "triangle-center", "--embed", "1,2,3", "--heads", "2,2"], "--embed"),
        (["--target", "triangle-center", "--D", "3"], "--D"),
        ([], "--target"),
    ],
)
def test_bad_input_one_line_exit_2(args, field):
    r = cli("predict", *args)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and field in lines[0]
    assert "Traceback" not in r.stderr


def test_run_help_states_the_engines_defaults():
    """`run --help` writes the defaults in words (the CLI imports no torch at start-up); they must be
    the engine's: runner.MAX_MEMBERS and train.CHECKPOINT_EVERY_S."""
    from infoflow.cli import CHECKPOINT_EVERY, MAX_MEMBERS
    from infoflow.runner import MAX_MEMBERS as max_members
    from infoflow.train import CHECKPOINT_EVERY_S

    assert f"(default {max_members})" in MAX_MEMBERS.help
    assert f"(default {CHECKPOINT_EVERY_S:g};" in CHECKPOINT_EVERY.help
