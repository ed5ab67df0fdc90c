"""Ensemble vs one-by-one training speed (issue: training engine, benchmark).

Named config: L = 2, E = 32, T = 16, batch 256, intrinsic-dimension target (D = 2). Trains M runs
(a) one after another, each a lone model (M = 1), and (b) as one ensemble of M members, the same
number of steps on the same device; prints samples/s for both and their ratio, and appends one
JSON line to benchmarks/results.jsonl. On CUDA it also times torch.compile and bf16 autocast of the
ensemble step (reported, not used by default until they pass the equivalence tests).

    python benchmarks/bench_ensemble.py --members 8 --steps 30          # CPU
    python benchmarks/bench_ensemble.py --members 64 --steps 100         # GPU

On a CPU the ensemble gains through threading more than through fewer ops: ``--threads 1`` times
both layouts on one core (see the figures in the README).

``--grouping EXPERIMENT`` measures instead how an experiment's paper-profile runs are best cut into
ensembles: one ensemble per configuration (its seeds), as the runner does on a CPU, against
ensembles of up to ``--max-members`` runs that share parameter shapes (different heads or D), as it
does on a GPU; the same training steps for every run, one process, samples/s of both and their ratio:

    python benchmarks/bench_ensemble.py --grouping intrinsic-dimension --steps 20      # GPU
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from statistics import median_high

import torch

from infoflow.experiments import make_experiment
from infoflow.model import EnsembleTransformer, ModelConfig
from infoflow.runner import MAX_MEMBERS, build_model, group_runs
from infoflow.store import provenance
from infoflow.targets import IntrinsicDimension
from infoflow.train import AdamWEnsemble, MemberTargets, clip_per_member, draw, reuse_freed_memory

CFG = ModelConfig(d=4, T=16, heads=(2, 2), E=32, ffn=128)
BATCH = 256


def make_step(model, target, gens, autocast=False, fixed_batch=False):
    """One training step of ``model`` (as train_ensemble takes it): fresh data each step, or with
    ``fixed_batch`` one batch drawn once (the paper profile's fixed training sets cost a gather)."""
    opt = AdamWEnsemble(model.parameters())
    lr = torch.full((model.M,), 1e-3, device=next(model.parameters()).device)
    target = MemberTargets(target, model.M)  # as train_ensemble: grouped once
    batch = draw(target, gens, BATCH, model.cfg.T) if fixed_batch else None

    def step():
        X, y = batch or draw(target, gens, BATCH, model.cfg.T)
        with torch.autocast(X.device.type, dtype=torch.bfloat16, enabled=autocast):
            pred = model(X)
        per_member = ((pred.float() - y) ** 2).flatten(1).mean(1)
        model.zero_grad(set_to_none=True)
        per_member.sum().backward()
        clip_per_member(list(model.parameters()), 1.0)
        opt.step(lr)
        return per_member.detach()

    return step


def timed(step, steps, device, losses=False):
    """Seconds for ``steps`` steps after one warm-up step; with ``losses``, also the members' loss
    at the last step (to compare variants that made the same steps on the same data)."""
    step()  # warm-up
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        last = step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    return (elapsed, last) if losses else elapsed


def bench_grouping(args) -> dict:
    """Seconds for ``steps`` steps of every run of an experiment's paper profile, grouped per
    configuration and grouped by shared shapes (interleaved repeats, medians)."""
    runs = make_experiment(args.grouping, "paper").runs()
    layouts = {
        "per_config": group_runs(runs),
        "shared": group_runs(runs, share_shapes=True, max_members=args.max_members),
    }
    steps = {}
    for name, groups in layouts.items():
        steps[name] = []
        for group in groups:
            targets, model = build_model(group, args.device)
            gens = [torch.Generator(device=args.device).manual_seed(r["seed"]) for r in group]
            steps[name].append(make_step(model, targets, gens, fixed_batch=True))
    times = {name: [] for name in layouts}
    for _ in range(args.repeats):
        for name in layouts:
            times[name].append(sum(timed(step, args.steps, args.device) for step in steps[name]))
    med = {name: median_high(t) for name, t in times.items()}
    samples = len(runs) * BATCH * args.steps
    return {
        "benchmark": "shared-shapes",
        "experiment": args.grouping,
        "profile": "paper",
        "runs": len(runs),
        "config": {"batch": BATCH, "steps": args.steps, "repeats": args.repeats, "max_members": args.max_members},
        "ensembles": {name: [len(g) for g in groups] for name, groups in layouts.items()},
        **{f"{name}_samples_per_s": round(samples / med[name], 1) for name in layouts},
        "ratio": round(med["per_config"] / med["shared"], 2),
        "ratio_per_repeat": [round(a / b, 2) for a, b in zip(times["per_config"], times["shared"])],
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--members", type=int, default=8)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--repeats", type=int, default=3, help="interleaved repeats; medians are reported")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, help="CPU threads (torch.set_num_threads); default: torch's")
    ap.add_argument(
        "--variants",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also time torch.compile and bf16 autocast (default: on CUDA only)",
    )
    ap.add_argument(
        "--reuse-freed-memory",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="CPU: glibc keeps freed memory for reuse, as training does (infoflow.train.reuse_freed_memory)",
    )
    ap.add_argument("--grouping", metavar="EXPERIMENT", help="time per-configuration against shared-shape ensembles")
    ap.add_argument("--max-members", type=int, default=MAX_MEMBERS, help="with --grouping: the largest shared ensemble")
    ap.add_argument("--out", type=Path, default=Path(__file__).with_name("results.jsonl"))
    args = ap.parse_args()
    M, dev = args.members, args.device
    if args.threads:
        torch.set_num_threads(args.threads)
    reused = dev == "cpu" and args.reuse_freed_memory and reuse_freed_memory()  # as train_ensemble does on a CPU
    if args.grouping:
        write(
            {
                **bench_grouping(args),
                "threads": torch.get_num_threads(),
                "reuse_freed_memory": bool(reused),
                **provenance(dev),
            },
            args.out,
        )
        return
    target = IntrinsicDimension(D=2)

    def gens(seeds):
        return [torch.Generator(device=dev).manual_seed(s) for s in seeds]

    loops = [EnsembleTransformer(CFG, members=1, seeds=[s], device=dev) for s in range(M)]
    loop_steps = [make_step(model, target, gens([s])) for s, model in enumerate(loops)]
    ens = EnsembleTransformer(CFG, members=M, seeds=list(range(M)), device=dev)
    ens_step = make_step(ens, target, gens(range(M)))
    loop_times, ens_times = [], []
    for _ in range(args.repeats):  # interleaved, so load on the machine hits both alike
        loop_times.append(sum(timed(step, args.steps, dev) for step in loop_steps))
        ens_times.append(timed(ens_step, args.steps, dev))
    loop_time, ens_time = median_high(loop_times), median_high(ens_times)
    samples = M * BATCH * args.steps
    result = {
        "benchmark": "ensemble-vs-loop",
        "config": {
            "L": 2,
            "E": 32,
            "T": 16,
            "batch": BATCH,
            "members": M,
            "steps": args.steps,
            "repeats": args.repeats,
        },
        "threads": torch.get_num_threads(),
        "reuse_freed_memory": bool(reused),
        "loop_samples_per_s": round(samples / loop_time, 1),
        "ensemble_samples_per_s": round(samples / ens_time, 1),
        "ratio": float(f"{loop_time / ens_time:.3g}"),  # 3 significant digits: a slow host gives ratios < 0.1
        "ratio_per_repeat": [round(a / b, 2) for a, b in zip(loop_times, ens_times)],
        **provenance(dev),
    }
    if args.variants if args.variants is not None else dev.startswith("cuda"):
        # torch.compile and bf16 autocast of the ensemble: speed, and how far each member's loss is from
        # eager fp32 after the same 1 + steps steps on the same data (relative difference, max over members).
        def variant(compiled=False, autocast=False):
            model = EnsembleTransformer(CFG, members=M, seeds=list(range(M)), device=dev)
            if compiled:
                model.forward = torch.compile(model.forward)
            return timed(make_step(model, target, gens(range(M)), autocast=autocast), args.steps, dev, losses=True)

        _, ref = variant()
        for name, kw in (("bf16", {"autocast": True}), ("compiled", {"compiled": True})):
            seconds, loss = variant(**kw)
            result[f"ensemble_{name}_samples_per_s"] = round(samples / seconds, 1)
            result[f"ensemble_{name}_max_rel_loss_diff"] = float(((loss - ref).abs() / ref).max())
    write(result, args.out)


def write(result: dict, out: Path) -> None:
    """Print ``result`` and append it to ``out`` as one JSON line."""
    line = json.dumps(result)
    print(line)
    with open(out, "a") as fh:
        fh.write(line + "\n")


if __name__ == "__main__":
    main()
