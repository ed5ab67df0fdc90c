"""Does a training step replayed as a CUDA graph train as the eager one, and how much faster is it?
(issue: Sec. 6 chapters, "the paper profile must finish in under 10 minutes on one H100".)

Takes the first ensemble a GPU sweep of EXPERIMENT's profile would train (runs sharing parameter
shapes, up to --max-members), and trains it for --steps steps three times on the same device: eagerly
twice (is the device itself deterministic here?) and with ``cuda_graph=True`` once. Reports each
wall time, whether the graph's results (curves, best and final NMSE, parameters) equal the eager ones
bit for bit, and else the largest relative difference; appends one JSON line to
benchmarks/results.jsonl. Exit status 0 when the graph agrees (bit for bit, or within --rtol: the
same kernels may round differently when cuBLAS picks another algorithm under capture; a graph that
read stale buffers would differ in the first digit), 1 otherwise: scripts/device_session.sh trains
with ``--cuda-graph`` only after a 0.

    python benchmarks/check_cuda_graph.py                       # intrinsic-dimension, paper, 1000 steps
    python benchmarks/check_cuda_graph.py --experiment triangle-center --steps 2000
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

from infoflow.experiments import ConfigError, make_experiment, parse_sets
from infoflow.runner import MAX_MEMBERS, build_model, group_runs
from infoflow.store import provenance
from infoflow.train import TrainConfig, train_ensemble


def train_once(group, cfg: TrainConfig, device: str, cuda_graph: bool) -> tuple[list, list, float]:
    """(results, parameters, wall seconds) of one training of ``group``."""
    targets, model = build_model(group, device)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    results = train_ensemble(model, targets, [r["seed"] for r in group], cfg, cuda_graph=cuda_graph)
    wall = time.perf_counter() - start  # the results are on the host: the device has finished
    return results, [p.detach().cpu() for p in model.parameters()], wall


def largest_relative_difference(a, b) -> float:
    """Over the members' curves, best and final NMSE, and every parameter."""
    worst = 0.0
    for ra, rb in zip(a[0], b[0]):
        xs = [v for _, v in ra["curve"]] + [ra["best_val_nmse"], ra["final_train_nmse"]]
        ys = [v for _, v in rb["curve"]] + [rb["best_val_nmse"], rb["final_train_nmse"]]
        for x, y in zip(xs, ys):
            if x is None or y is None:
                if x is not y:
                    return math.inf
                continue
            worst = max(worst, abs(x - y) / max(abs(x), 1e-12))
    for pa, pb in zip(a[1], b[1]):  # per parameter tensor, in norm
        worst = max(worst, float(torch.linalg.vector_norm(pa - pb) / torch.linalg.vector_norm(pa).clamp_min(1e-12)))
    return worst


def check(experiment: str, profile: str, steps: int, device: str, sets: list, max_members: int, rtol: float) -> dict:
    exp = make_experiment(experiment, profile, parse_sets(sets))
    group = group_runs(exp.runs(), share_shapes=True, max_members=max_members)[0]
    base = TrainConfig(**group[0]["train"])
    cfg = replace(base, steps=steps, tail_steps=0, eval_every=max(1, steps // 4))
    eager = train_once(group, cfg, device, False)
    eager_again = train_once(group, cfg, device, False)
    graph = train_once(group, cfg, device, True)

    def equal(a, b):
        return a[0] == b[0] and all(torch.equal(x, y) for x, y in zip(a[1], b[1]))

    bitwise, eager_bitwise = equal(eager, graph), equal(eager, eager_again)
    diff = 0.0 if bitwise else largest_relative_difference(eager, graph)
    statuses = [r["status"] for r in eager[0]] == [r["status"] for r in graph[0]]
    agrees = bitwise or (statuses and diff <= rtol)
    return {
        "benchmark": "cuda-graph",
        "experiment": experiment,
        "profile": profile,
        "sets": sets,
        "members": len(group),
        "steps": steps,
        "eval_every": cfg.eval_every,
        "labels": sorted({r["label"] for r in group}),
        "eager_wall_s": [round(eager[2], 3), round(eager_again[2], 3)],
        "graph_wall_s": round(graph[2], 3),
        "speedup": round(min(eager[2], eager_again[2]) / graph[2], 2),
        "bitwise_equal": bitwise,
        "eager_runs_bitwise_equal": eager_bitwise,
        "max_relative_difference": diff,
        "rtol": rtol,
        "agrees": agrees,
        **provenance(device),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--experiment", default="intrinsic-dimension")
    ap.add_argument("--profile", default="paper")
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--max-members", type=int, default=MAX_MEMBERS)
    ap.add_argument(
        "--rtol",
        type=float,
        default=1e-2,
        help="accepted relative difference of any NMSE value or parameter tensor (norm) (default 1e-2)",
    )
    ap.add_argument("--out", type=Path, default=Path(__file__).with_name("results.jsonl"))
    args = ap.parse_args()
    if args.steps < 1 or args.max_members < 1:
        ap.error("--steps and --max-members must be positive integers")
    try:
        result = check(args.experiment, args.profile, args.steps, args.device, args.sets, args.max_members, args.rtol)
    except (ConfigError, ValueError) as err:
        ap.error(str(err))
    line = json.dumps(result)
    print(line)
    with open(args.out, "a") as fh:
        fh.write(line + "\n")
    print(
        f"{result['members']} members, {args.steps} steps: eager {min(result['eager_wall_s']):.2f} s, graph "
        f"{result['graph_wall_s']:.2f} s ({result['speedup']}x); "
        + (
            "bit for bit equal"
            if result["bitwise_equal"]
            else f"largest relative difference {result['max_relative_difference']:.2g}"
        )
        + ("" if result["agrees"] else " -- DISAGREES")
    )
    sys.exit(0 if result["agrees"] else 1)


if __name__ == "__main__":
    main()
