"""How long a whole profile takes, measured from short runs of it (issue: Sec. 6 chapters, "the paper
profile must finish in under 10 minutes on one H100").

A sweep's wall time grows linearly with the training steps of its runs, t(N) = a + b·N: a is what
does not grow (starting processes and CUDA, building the models, drawing fixed training and
validation sets, writing records), b is one step of every run, as the sweep schedules them. This
script runs the named experiments from scratch, side by side as a one-piece run of them would
(`infoflow run EXPERIMENT --workers W`, one process each), once for each step count N given
(``--set train.steps=N``, fresh folders, removed afterwards), fits a and b by least squares, per
experiment and for all of them together (the time until the last one ends), and extrapolates to the
profile's own steps. The extrapolation assumes what the short runs share with the long ones: the
same runs, ensembles, workers and evaluation frequency; only the cosine schedule is shorter, which
does not change the cost of a step. ``--verify`` then runs the whole profile the same way and
records the measured times beside the extrapolated ones. One JSON line is appended to
benchmarks/results.jsonl.

    python benchmarks/time_profile.py --device cuda                     # the Sec. 6 paper profile
    python benchmarks/time_profile.py --profile quick --steps 50 100 --device cpu --verify \\
        --run triangle-center:1 --run intrinsic-dimension:1 --set 'seeds=[0]'
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from infoflow.experiments import ConfigError, make_experiment, parse_sets
from infoflow.runner import die_with_parent
from infoflow.store import provenance

DEFAULT_RUNS = ["intrinsic-dimension:3", "triangle-center:4"]  # as scripts/device_session.sh's SWEEPS


def parse_run(text: str) -> tuple[str, int]:
    """'EXPERIMENT:WORKERS' (workers default 1)."""
    name, _, workers = text.partition(":")
    try:
        n = int(workers or 1)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--run must be EXPERIMENT[:WORKERS] with WORKERS a positive integer, got {text!r}"
        )
    if n < 1:
        raise argparse.ArgumentTypeError(f"--run: WORKERS must be a positive integer, got {text!r}")
    return name, n


def fit_line(xs, ys) -> tuple[float, float]:
    """Least-squares a, b of y = a + b·x."""
    b, a = np.polyfit(np.asarray(xs, float), np.asarray(ys, float), 1)
    return float(a), float(b)


def sweep_side_by_side(
    runs, profile: str, steps: int, device: str, sets: list[str], flags: list[str], root: Path
) -> dict:
    """Start every experiment's sweep at once with train.steps = ``steps`` (None: the profile's own);
    seconds until each ends, and what its sweep reported (ensembles, runs trained)."""
    procs, start = {}, time.perf_counter()
    ended = {}
    try:
        for name, workers in runs:
            cmd = [
                sys.executable,
                "-m",
                "infoflow.cli",
                "run",
                name,
                "--profile",
                profile,
                "--out",
                str(root / name),
                "--device",
                device,
                "--workers",
                str(workers),
                "--quiet",
                *flags,
            ]
            if steps is not None:
                cmd += ["--set", f"train.steps={steps}"]
            for s in sets:
                cmd += ["--set", s]
            with open(root / f"{name}.log", "w") as log:  # the child keeps its own copy of the file
                # a sweep dies with this script (even by SIGKILL), and its workers with it
                procs[name] = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, preexec_fn=die_with_parent)
        while len(ended) < len(procs):
            for name, proc in procs.items():
                if name not in ended and proc.poll() is not None:
                    ended[name] = time.perf_counter() - start
                    if proc.returncode != 0:
                        tail = (root / f"{name}.log").read_text()[-2000:]
                        sys.exit(f"{name} (steps={steps}) exited {proc.returncode}:\n{tail}")
            time.sleep(0.2)
    finally:  # a failed sweep, or this script stopped (Ctrl-C, SIGTERM): stop the others
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    out = {}
    for name, _ in runs:
        sweep = json.loads((root / name / "sweeps.jsonl").read_text().splitlines()[-1])
        out[name] = {
            "wall_s": ended[name],
            "ensembles": sweep["ensembles"],
            "trained": sweep["trained"],
            "share_shapes": sweep.get("share_shapes"),
        }
    return out


def main():
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # `timeout` stops it: run the cleanup
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--run",
        type=parse_run,
        action="append",
        metavar="EXPERIMENT[:WORKERS]",
        help=f"an experiment and its workers, run side by side with the others (default: {' '.join(DEFAULT_RUNS)})",
    )
    ap.add_argument("--profile", default="paper")
    ap.add_argument(
        "--steps", type=int, nargs="+", default=[500, 1500], help="the short runs' train.steps (two or more)"
    )
    ap.add_argument("--device", default="cuda")
    ap.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="passed to every sweep (as `infoflow run --set`)",
    )
    ap.add_argument(
        "--share-shapes",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="passed to every sweep (default: the runner's, on a GPU)",
    )
    ap.add_argument("--cuda-graph", action="store_true", help="passed to every sweep (`infoflow run --cuda-graph`)")
    ap.add_argument(
        "--verify",
        action="store_true",
        help="then run the whole profile the same way and record its measured wall times beside the extrapolation",
    )
    ap.add_argument("--out", type=Path, default=Path(__file__).with_name("results.jsonl"))
    args = ap.parse_args()
    runs = args.run or [parse_run(r) for r in DEFAULT_RUNS]
    if len(set(args.steps)) < 2 or min(args.steps) < 1:
        ap.error(f"--steps needs two or more different positive step counts, got {args.steps}")
    if any(s.split("=", 1)[0].strip() == "train.steps" for s in args.sets):
        ap.error("--set train.steps is what --steps sets; the profile's own steps are the ones extrapolated to")
    full_steps = {}
    for name, _ in runs:
        try:
            exp = make_experiment(name, args.profile, parse_sets(args.sets))
        except ConfigError as err:
            ap.error(str(err))
        full_steps[name] = exp.train.steps + exp.train.tail_steps
    flags = [] if args.share_shapes is None else ["--share-shapes" if args.share_shapes else "--no-share-shapes"]
    flags += ["--cuda-graph"] if args.cuda_graph else []
    measured = {}
    for steps in args.steps:
        with tempfile.TemporaryDirectory(prefix=f"time-profile-{steps}-") as tmp:
            measured[steps] = sweep_side_by_side(runs, args.profile, steps, args.device, args.sets, flags, Path(tmp))
        print(
            f"steps={steps}: " + ", ".join(f"{n} {m['wall_s']:.1f} s" for n, m in measured[steps].items()), flush=True
        )
    experiments = {}
    for name, workers in runs:
        a, b = fit_line(args.steps, [measured[s][name]["wall_s"] for s in args.steps])
        first = measured[args.steps[0]][name]
        experiments[name] = {
            "workers": workers,
            "ensembles": first["ensembles"],
            "runs": first["trained"],
            "share_shapes": first["share_shapes"],
            "wall_s": {str(s): round(measured[s][name]["wall_s"], 2) for s in args.steps},
            "fixed_s": round(a, 2),
            "per_step_s": round(b, 5),
            "steps": full_steps[name],
            "extrapolated_s": round(a + b * full_steps[name], 1),
        }
    together = [max(m["wall_s"] for m in measured[s].values()) for s in args.steps]
    a, b = fit_line(args.steps, together)
    result = {
        "benchmark": "profile-time",
        "profile": args.profile,
        "short_steps": args.steps,
        "sets": args.sets,
        "mps": bool(os.environ.get("CUDA_MPS_PIPE_DIRECTORY")),  # as scripts/device_session.sh sets it
        "cuda_graph": args.cuda_graph,
        "experiments": experiments,
        "together": {
            "wall_s": {str(s): round(t, 2) for s, t in zip(args.steps, together)},
            "fixed_s": round(a, 2),
            "per_step_s": round(b, 5),
            "extrapolated_s": round(a + b * max(full_steps.values()), 1)
            if len(set(full_steps.values())) == 1
            else None,
        },
        **provenance(args.device),
    }
    if args.verify:
        with tempfile.TemporaryDirectory(prefix="time-profile-full-") as tmp:
            full = sweep_side_by_side(runs, args.profile, None, args.device, args.sets, flags, Path(tmp))
        for name, m in full.items():
            experiments[name]["measured_s"] = round(m["wall_s"], 1)
            experiments[name]["measured_runs"] = m["trained"]  # the profile's own sweep trained every run
        result["together"]["measured_s"] = round(max(m["wall_s"] for m in full.values()), 1)
    line = json.dumps(result)
    print(line)
    with open(args.out, "a") as fh:
        fh.write(line + "\n")


if __name__ == "__main__":
    main()
