"""Run an experiment: expand its config into runs, skip those with a valid record, train the rest
in ensembles (runs equal but for the seed share one model with a member per seed; with
``share_shapes``, so do runs whose models differ only in head counts or whose targets differ only
in parameters such as D), write one record per run. A sweep killed at any moment resumes without
losing or duplicating a run: records are written atomically and keyed by config hash, so a run
either has its complete record or none. An ensemble in training saves its state about once a
minute (``checkpoint_every_s``; a hidden ``.<group key>.ckpt`` beside the records, removed once its
records are written), so a killed sweep also resumes inside an ensemble, not from its step 0.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from collections import defaultdict
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Optional

import torch
from tqdm import tqdm

from .checks import nonnegative, positive_int
from .experiments import Experiment, make_experiment
from .model import EnsembleTransformer, ModelConfig, shape_key
from .store import ResultsStore, config_hash, provenance
from .targets import make_target
from .train import CHECKPOINT_EVERY_S, Checkpoint, TrainConfig, train_ensemble

__all__ = [
    "run_experiment",
    "live_quick",
    "Execution",
    "default_device",
    "build_model",
    "group_runs",
    "group_key",
    "train_group_job",
    "die_with_parent",
    "DEFAULT_ROOT",
]

DEFAULT_ROOT = Path("runs")
MAX_MEMBERS = 16  # DEFAULT: the largest ensemble (our choice, not yet timed against others on a GPU)


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def check_device(device: str, local: bool = True) -> str:
    if device == "cpu":
        return device
    if device.startswith("cuda"):
        if local and not torch.cuda.is_available():
            raise ValueError(f"device {device!r} asked for, but no CUDA device is available; use --device cpu")
        return device
    raise ValueError(f"device must be cpu or cuda[:N], got {device!r}")


def model_config(run: dict, target) -> ModelConfig:
    m = run["model"]
    return ModelConfig(
        d=target.d,
        T=run["T"],
        heads=tuple(m["heads"]),
        E=m["E"],
        ffn=m["ffn"],
        out_dim=target.out_dim,
        pe=m["pe"],
        activation=m["activation"],
        layernorm=m["layernorm"],
        head_dim=m["head_dim"],
        qk_init=m.get("qk_init", 1.0),
    )


def build_model(group: list[dict], device) -> tuple:
    """The targets (one per run) and the ensemble (one member per run, seeded by its seed) of a group."""
    targets = [make_target(r["target"], **r["target_params"]) for r in group]
    cfgs = [model_config(r, t) for r, t in zip(group, targets)]
    return targets, EnsembleTransformer(cfgs, seeds=[r["seed"] for r in group], device=device)


def group_key(group: list[dict]) -> str:
    """The hash of a group's runs in member order: names its checkpoint (and its Slurm job)."""
    return config_hash({"runs": [config_hash(r) for r in group]})


def checkpoint_path(store: ResultsStore, group: list[dict]) -> Path:
    return store.root / f".{group_key(group)}.ckpt"


def finite_or_none(obj):
    """Replace NaN/inf anywhere in nested lists/dicts by None (records are strict JSON)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite_or_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_or_none(v) for v in obj]
    return obj


def group_runs(runs: list[dict], share_shapes: bool = False, max_members: Optional[int] = None) -> list[list[dict]]:
    """Runs equal but for the seed form one ensemble. With ``share_shapes``, so do runs that differ
    only in their models' head counts (parameters of the same shapes, :func:`~infoflow.model.shape_key`),
    their targets' parameters (same d) or their labels. An ensemble of more than ``max_members``
    runs is cut into nearly equal consecutive parts. Runs keep their order within a group."""
    if max_members is not None:
        positive_int("max_members", max_members)
    groups = defaultdict(list)
    for run in runs:
        drop = ("seed", "label", "target_params", "model") if share_shapes else ("seed",)
        key = json.dumps({k: v for k, v in run.items() if k not in drop}, sort_keys=True)
        if share_shapes:
            key += repr(shape_key(model_config(run, make_target(run["target"], **run["target_params"]))))
        groups[key].append(run)
    out = []
    for group in groups.values():
        parts = math.ceil(len(group) / max_members) if max_members else 1
        size, extra = divmod(len(group), parts)
        start = 0
        for i in range(parts):
            end = start + size + (i < extra)
            out.append(group[start:end])
            start = end
    return out


@dataclass(frozen=True)
class Execution:
    """How a sweep runs, as one object passed whole (never part of a run's config or record hash):

    - ``device``: cpu or cuda[:N] (None: cuda when present; cpu for Slurm's driver);
    - ``executor``: local or slurm, with ``slurm`` its options (:func:`~infoflow.slurm.load_slurm_options`);
    - ``workers``: local ensembles trained at once, each in its own process;
    - ``share_shapes``: runs whose parameters have the same shapes share an ensemble (None: on a GPU);
    - ``max_members``: the most runs in one ensemble;
    - ``checkpoint_every_s``: seconds between saves of an ensemble's training state (0: every evaluation);
    - ``cuda_graph``: replay each training step as a CUDA graph (CUDA only)."""

    device: Optional[str] = None
    executor: str = "local"
    workers: int = 1
    share_shapes: Optional[bool] = None
    max_members: int = MAX_MEMBERS
    checkpoint_every_s: float = CHECKPOINT_EVERY_S
    cuda_graph: bool = False
    slurm: Optional[dict] = None

    def __post_init__(self):
        if self.executor not in ("local", "slurm"):
            raise ValueError(f"executor must be local or slurm, got {self.executor!r}")
        positive_int("workers", self.workers)
        positive_int("max_members", self.max_members)
        nonnegative("checkpoint_every", self.checkpoint_every_s, "seconds")

    def resolved(self) -> "Execution":
        """With the device checked and filled in (a ValueError names a bad one)."""
        device = check_device(
            self.device or ("cpu" if self.executor == "slurm" else default_device()), local=self.executor == "local"
        )
        if self.cuda_graph and not device.startswith("cuda"):
            raise ValueError(f"cuda_graph needs a CUDA device (--device cuda), got {device!r}")
        return replace(self, device=device)


def train_group(
    exp,
    group: list[dict],
    store: ResultsStore,
    execution: Execution,
    progress: bool = False,
    log: Callable = print,
) -> int:
    """Train one ensemble (see :func:`group_runs`) on ``execution.device``, resuming from its checkpoint
    if one was saved, and write one record per run (``execution.cuda_graph``: see
    :func:`~infoflow.train.train_ensemble`). The number of runs trained is returned. The group's runs
    are claimed first (:meth:`~infoflow.store.ResultsStore.claim`): a group another live sweep holds,
    or whose records appeared meanwhile, is left alone. Under Slurm the ledger of submitted jobs keeps
    a group from running twice, and a claim could not be checked across nodes, so jobs there do not
    claim."""
    hashes = [config_hash(r) for r in group]
    if "SLURM_JOB_ID" in os.environ:
        _train_group(exp, group, store, execution, progress, log)
        return len(group)
    holder = store.claim(hashes)
    if holder is not None:
        log(f"skipped: ensemble {group[0]['label']} T={group[0]['T']} ({len(group)} runs) is being trained by {holder}")
        return 0
    try:
        if any(store.get(h) is not None for h in hashes):
            log(f"skipped: ensemble {group[0]['label']} T={group[0]['T']}: recorded by another sweep meanwhile")
            return 0
        _train_group(exp, group, store, execution, progress, log)
    finally:
        store.release(hashes)
    return len(group)


def _train_transformers(exp, group, store, execution: Execution, progress, log):
    """The Sec. 3 Transformers of a group as one ensemble, resumed from and saved to its checkpoint:
    (results, parameter counts of one member, extra measurements per run, the checkpoint)."""
    targets, model = build_model(group, execution.device)
    T = group[0]["T"]
    before = exp.measure(model, targets[0], T, "init")
    ckpt = Checkpoint(checkpoint_path(store, group), group_key(group), execution.checkpoint_every_s)
    monitor = exp.monitor(model, targets, T)
    results = train_ensemble(
        model,
        targets,
        [r["seed"] for r in group],
        TrainConfig(**group[0]["train"]),
        progress=progress,
        checkpoint=ckpt,
        log=log,
        cuda_graph=execution.cuda_graph,
        monitor=monitor and monitor[1],
    )
    after = exp.measure(model, targets[0], T, "trained")
    extras = [{} for _ in group]
    for j, res in enumerate(results):
        for measured in (before, after):
            if measured is not None:
                extras[j].update(measured[j])
        if monitor:
            extras[j][monitor[0]] = res["monitored"]
    return results, model.parameter_counts(), extras, ckpt


def _train_group(exp, group, store, execution: Execution, progress, log) -> None:
    start = time.perf_counter()
    ckpt = None
    if type(exp).fit is not Experiment.fit:  # a model of the experiment's own
        results, counts = exp.fit(group, execution.device)
        extras = [res.pop("measurements", {}) for res in results]
    else:
        results, counts, extras, ckpt = _train_transformers(exp, group, store, execution, progress, log)
    wall = time.perf_counter() - start
    cuda_graph = execution.cuda_graph and ckpt is not None
    prov = provenance(
        execution.device,
        ensemble_members=len(group),
        wall_time_s=round(wall, 3),
        **({"cuda_graph": True} if cuda_graph else {}),
    )
    for run, res, extra in zip(group, results, extras):
        record = {
            "config": run,
            "config_hash": config_hash(run),
            "status": res["status"],
            "metrics": {
                "best_val_nmse": res["best_val_nmse"],
                "final_train_nmse": res["final_train_nmse"],
                "steps": res["steps"],
            },
            "curve": res["curve"],
            "parameters": counts,
            "provenance": {**prov, "seed": run["seed"], "steps": res["steps"]},
        }
        if res["resumed"]:  # steps trained by earlier processes, each with its wall_time_s; ours counts this one's
            record["provenance"]["resumed_from"] = res["resumed"]
        if extra:
            record["measurements"] = finite_or_none(extra)
        if res["status"] != "done":
            record["error"] = res["error"]
            log(f"failed: {run['label']} T={run['T']} seed={run['seed']}: {res['error']}")
        store.write(record)
    if ckpt is not None:
        ckpt.path.unlink(missing_ok=True)


def train_group_job(
    name: str,
    profile: str,
    overrides: dict,
    group: list,
    root: str,
    execution: Execution,
    threads: Optional[int] = None,
) -> list:
    """One ensemble group in a process of its own (a Slurm job or a local worker): rebuild the
    experiment from its name, profile and overrides, train the group, write its records; returns the
    hashes of the runs it trained."""
    if threads:
        torch.set_num_threads(threads)
    exp = make_experiment(name, profile, overrides)
    trained = train_group(exp, group, ResultsStore(Path(root)), execution, progress=False, log=print)
    return [config_hash(r) for r in group] if trained else []


def group_cost(group: list[dict]) -> float:
    """A rough cost (steps x tokens x width x members) to start the longest groups first."""
    run = group[0]
    steps = run["train"]["steps"] + run["train"].get("tail_steps", 0)
    return steps * (run["T"] + 1) * run["model"]["E"] * len(run["model"]["heads"]) * len(group)


def die_with_parent() -> None:
    """Worker initializer (or a child's ``preexec_fn``): on Linux, ask the kernel to kill this process
    when its parent dies (even by SIGKILL), so a stopped sweep leaves no orphan training; a rerun
    trains its unfinished groups."""
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _train_in_workers(
    exp,
    profile: str,
    overrides: dict,
    groups: list,
    store: ResultsStore,
    execution: Execution,
    progress: bool,
    log: Callable,
) -> int:
    """Train groups concurrently in ``execution.workers`` processes (spawned: safe with CUDA). Tiny
    models leave a GPU launch-bound and idle, so several ensembles in flight keep it busy; on a CPU
    each worker gets its share of the cores. A group that fails is reported; the others go on, a
    rerun resumes. Returns the number of runs trained."""
    trained, workers = 0, execution.workers
    threads = max(1, (os.cpu_count() or 1) // workers) if execution.device == "cpu" else 1
    ctx = multiprocessing.get_context("spawn")
    order = sorted(groups, key=group_cost, reverse=True)
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=die_with_parent) as pool:
        futures = {
            pool.submit(train_group_job, exp.name, profile, overrides, g, str(store.root), execution, threads): g
            for g in order
        }
        for fut in tqdm(as_completed(futures), total=len(futures), disable=not progress, desc=exp.name):
            if fut.exception() is not None:
                g = futures[fut]
                log(
                    f"failed: ensemble {g[0]['label']} T={g[0]['T']} ({len(g)} runs): {fut.exception()!r}; "
                    "rerun to train it"
                )
            else:
                trained += len(fut.result())
    return trained


def _todo(runs: list[dict], store: ResultsStore, retry_failed: bool, log: Callable) -> tuple[list, int]:
    """The runs without a usable record (and, with ``retry_failed``, the failed ones), and how many are skipped."""
    todo, skipped = [], 0
    for run in runs:
        rec = store.get(config_hash(run))
        if rec is not None and (rec["status"] == "done" or not retry_failed):
            skipped += 1
        else:
            todo.append(run)
    for problem in store.problems:
        log(f"warning: {problem}")
    return todo, skipped


def _log_sweep(
    store: ResultsStore,
    name: str,
    profile: str,
    execution: Execution,
    trained: int,
    groups: list,
    share_shapes: bool,
    wall: float,
    recorded: int,
) -> None:
    """One line in the folder's sweeps.jsonl: the sweep's own wall time (with workers, less than the
    sum of the records' wall times)."""
    sweep = {
        "experiment": name,
        "profile": profile,
        "trained": trained,
        "ensembles": len(groups),
        "workers": execution.workers,
        "share_shapes": share_shapes,
        "cuda_graph": execution.cuda_graph,
        "wall_time_s": wall,
        "recorded_after": recorded,
        **provenance(execution.device),
    }
    with open(store.root / "sweeps.jsonl", "a") as fh:
        fh.write(json.dumps(sweep) + "\n")


def _open_store(name: str, profile: str, out: Optional[Path], log: Callable) -> ResultsStore:
    """The sweep's folder (default ``data/NAME/PROFILE``), checked writable, with the debris of an
    interrupted sweep (temporary files, stale claims) removed."""
    if out is not None and not str(out).strip():
        raise ValueError("out must name a folder, got an empty string")
    store = ResultsStore(Path(out) if out is not None else DEFAULT_ROOT / name / profile)
    store.ensure_writable()
    debris = store.clean_debris()
    if debris:
        log(f"removed {len(debris)} leftover temporary file(s) or stale claim(s) from an interrupted sweep")
    return store


def _plan(exp: Experiment, store: ResultsStore, execution: Execution, retry_failed: bool, log: Callable):
    """The runs still to train, grouped into ensembles: (runs, todo, skipped, share_shapes, groups).
    Warns of checkpoints that belong to no ensemble of this plan (left in place, not used)."""
    runs = exp.runs()
    todo, skipped = _todo(runs, store, retry_failed, log)
    share_shapes = execution.share_shapes if execution.share_shapes is not None else execution.device.startswith("cuda")
    share_shapes = share_shapes and all(
        getattr(type(exp), hook) is getattr(Experiment, hook) for hook in ("measure", "monitor", "fit")
    )
    groups = group_runs(todo, share_shapes, execution.max_members)
    expected = {checkpoint_path(store, g).name for g in groups}
    for orphan in sorted(p.name for p in store.root.glob(".*.ckpt") if p.name not in expected):
        log(
            f"warning: checkpoint {store.root / orphan} belongs to no ensemble of this sweep (other grouping "
            "options?); left in place, not used"
        )
    return runs, todo, skipped, share_shapes, groups


def _dispatch(exp, profile, overrides, groups, store, execution, progress, log) -> int:
    """Train the groups where ``execution`` says (Slurm, local workers, or this process); how many
    runs were trained."""
    if execution.executor == "slurm":
        from .slurm import run_on_slurm

        run_on_slurm(
            exp, profile, overrides, groups, store, execution, progress, log, job_fn=train_group_job, key_fn=group_key
        )
        return sum(len(g) for g in groups)
    if execution.workers > 1 and len(groups) > 1:
        return _train_in_workers(exp, profile, overrides, groups, store, execution, progress, log)
    return sum(
        train_group(exp, group, store, execution, progress, log)
        for group in tqdm(groups, disable=not progress, desc=exp.name)
    )


def run_experiment(
    name: str,
    profile: str = "quick",
    overrides: Optional[dict] = None,
    out: Optional[Path] = None,
    execution: Optional[Execution] = None,
    progress: bool = True,
    retry_failed: bool = False,
    log: Callable = print,
) -> dict:
    """Run (or resume) an experiment as ``execution`` says (default :class:`Execution`: locally, one
    ensemble at a time, on CUDA when present); returns a summary with its records. Runs whose
    parameters have the same shapes share an ensemble when ``execution.share_shapes`` (default: on a
    GPU, which is launch-bound on these small models, so fewer, larger ensembles finish sooner; a CPU
    is compute-bound, and smaller ensembles spread better over its workers); an experiment that
    measures or probes its models never shares. Each ensemble saves its training state every
    ``execution.checkpoint_every_s`` seconds and a rerun resumes it."""
    execution = (execution or Execution()).resolved()
    exp = make_experiment(name, profile, overrides)
    if not exp.runs():
        raise ValueError(f"{name}: no runs under profile {profile} with these settings (an empty list?)")
    store = _open_store(name, profile, out, log)
    runs, todo, skipped, share_shapes, groups = _plan(exp, store, execution, retry_failed, log)
    start = time.perf_counter()
    log(
        f"{name} [{profile}] on {execution.device}: {len(runs)} runs, {skipped} already recorded, "
        f"{len(todo)} to train in {len(groups)} ensemble(s){' (shared shapes)' if share_shapes else ''} -> {store.root}"
    )
    trained = _dispatch(exp, profile, overrides or {}, groups, store, execution, progress, log)
    wall = round(time.perf_counter() - start, 1)
    hashes = {config_hash(r) for r in runs}
    records = [r for r in store.records() if r["config_hash"] in hashes]
    if todo and execution.executor == "local":
        _log_sweep(store, name, profile, execution, trained, groups, share_shapes, wall, len(records))
    return {
        "experiment": name,
        "profile": profile,
        "device": execution.device,
        "executor": execution.executor,
        "store": str(store.root),
        "runs": len(runs),
        "skipped": skipped,
        "trained": trained,
        "records": records,
        "wall_time_s": wall,
    }


def live_quick(experiment: str, root: Optional[Path] = None) -> list[dict]:
    """Run (or load, when recorded) the quick profile of ``experiment`` into root/experiment/quick:
    what a chapter's live cell calls (the presentation side only reads, in :mod:`infoflow.results`)."""
    from .results import DATA_DIR

    out = Path(root or DATA_DIR) / experiment / "quick"
    return run_experiment(experiment, "quick", out=out, progress=False, log=lambda m: None)["records"]
