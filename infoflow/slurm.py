"""Slurm executor, through submitit: the ensemble groups of a sweep become one job array; each job
trains its group and writes its records into the same JSON store as a local run would.

* Interrupt and rerun: finished records are skipped; a ledger (``<store>/.slurm/submitted.json``)
  remembers the job of every group submitted, so a group whose job is still queued or running is
  waited for, not submitted twice.
* Progress: a bar over the groups while waiting. A job that ends without writing its records
  (failed, cancelled, timed out) is reported with its job id and the tail of its log; the other
  jobs go on.

submitit ships the job function to the worker with cloudpickle (its own mechanism for code);
results never travel that way: the driver reads the JSON records the jobs wrote.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Callable

from tqdm import tqdm

from .store import ResultsStore, config_hash

__all__ = ["run_on_slurm", "SLURM_DEFAULTS", "load_slurm_options"]

SLURM_DEFAULTS = {
    "partition": None,
    "time_min": 60,
    "cpus": 2,
    "gpus": 0,
    "mem_gb": 8,
    "account": None,
    "poll_s": 2.0,
    "array_parallelism": 64,
}


def load_slurm_options(path: str | None, **flags) -> dict:
    """Defaults, then a JSON config file, then command-line flags (None = not given)."""
    opts = dict(SLURM_DEFAULTS)
    if path:
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, ValueError) as err:
            raise ValueError(f"--slurm-config {path}: cannot read a JSON object ({err})") from None
        if not isinstance(data, dict):
            raise ValueError(f"--slurm-config {path}: must hold a JSON object of options, got {json.dumps(data)}")
        unknown = set(data) - set(SLURM_DEFAULTS)
        if unknown:
            raise ValueError(
                f"--slurm-config: unknown key {sorted(unknown)[0]!r}; allowed: {', '.join(SLURM_DEFAULTS)}"
            )
        opts.update(data)
    opts.update({k: v for k, v in flags.items() if v is not None})
    for key in ("time_min", "cpus", "mem_gb", "array_parallelism"):
        if not isinstance(opts[key], (int, float)) or opts[key] <= 0:
            raise ValueError(f"slurm {key} must be positive, got {opts[key]!r}")
    if not isinstance(opts["gpus"], int) or opts["gpus"] < 0:
        raise ValueError(f"slurm gpus must be a non-negative integer, got {opts['gpus']!r}")
    return opts


def _active(job_id: str) -> bool:
    """Queued or running (squeue lists it)."""
    out = subprocess.run(["squeue", "-h", "-j", str(job_id), "-o", "%T"], capture_output=True, text=True)
    return out.returncode == 0 and bool(out.stdout.strip())


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
    os.replace(tmp, path)


def _tail(path: Path, n: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


def run_on_slurm(
    exp,
    profile: str,
    overrides: dict,
    groups: list,
    store: ResultsStore,
    execution,
    progress: bool,
    log: Callable,
    job_fn: Callable,
    key_fn: Callable,
) -> list:
    """Submit (or re-attach to) one array job per sweep and wait; returns the failed job ids.
    ``execution`` (a :class:`~infoflow.runner.Execution`) goes to every job whole, its ``slurm`` holding
    the job options (:func:`load_slurm_options`). ``job_fn`` trains
    one group in a Slurm task and ``key_fn`` names a group (the runner passes its own, so this module does not
    import the runner, which imports it)."""
    import shutil

    import submitit

    missing = [tool for tool in ("sbatch", "squeue", "srun") if shutil.which(tool) is None]
    if missing:
        raise ValueError(
            f"--executor slurm needs Slurm's commands on PATH; not found: {', '.join(missing)} "
            "(use --executor local here)"
        )

    opts = {**SLURM_DEFAULTS, **(execution.slurm or {})}
    folder = store.root / ".slurm"
    folder.mkdir(parents=True, exist_ok=True)
    ledger_path = folder / "submitted.json"
    ledger = json.loads(ledger_path.read_text()) if ledger_path.exists() else {}
    waiting, to_submit = {}, []
    for g in groups:
        key = key_fn(g)
        if key in ledger and _active(ledger[key]):
            waiting[key] = (ledger[key], g)
        else:
            to_submit.append((key, g))
    if waiting:
        log(
            f"slurm: {len(waiting)} group(s) already queued or running, not submitted again: "
            f"{', '.join(sorted(j for j, _ in waiting.values()))}"
        )
    if to_submit:
        executor = submitit.AutoExecutor(folder=folder / "%j", cluster="slurm")
        params = {
            "timeout_min": int(opts["time_min"]),
            "cpus_per_task": int(opts["cpus"]),
            "mem_gb": opts["mem_gb"],
            "slurm_array_parallelism": int(opts["array_parallelism"]),
            "name": f"infoflow-{exp.name}",
            "slurm_setup": [f"export OMP_NUM_THREADS={int(opts['cpus'])}"],
        }
        if opts["gpus"]:
            params["gpus_per_node"] = int(opts["gpus"])
        if opts["partition"]:
            params["slurm_partition"] = opts["partition"]
        if opts["account"]:
            params["slurm_additional_parameters"] = {"account": opts["account"]}
        executor.update_parameters(**params)
        n = len(to_submit)
        jobs = executor.map_array(
            job_fn,
            [exp.name] * n,
            [profile] * n,
            [overrides] * n,
            [g for _, g in to_submit],
            [str(store.root)] * n,
            [execution] * n,
        )
        for (key, g), job in zip(to_submit, jobs):
            ledger[key] = str(job.job_id)
            waiting[key] = (str(job.job_id), g)
        _write_json(ledger_path, ledger)
        log(f"slurm: submitted {n} group(s) as array job {str(jobs[0].job_id).split('_')[0]}")
    failed = []
    bar = tqdm(total=len(waiting), disable=not progress, desc=f"{exp.name} (slurm)")
    while waiting:
        for key, (job_id, g) in list(waiting.items()):
            if _active(job_id):
                continue
            missing = [r for r in g if store.get(config_hash(r)) is None]
            if missing:
                log_path = next(iter(sorted(folder.glob(f"{job_id}/*_log.err"))), folder / job_id / "log.err")
                log(
                    f"slurm: job {job_id} ended without writing {len(missing)} record(s); tail of its log:\n"
                    f"{_tail(log_path)}"
                )
                failed.append(job_id)
            ledger.pop(key, None)
            del waiting[key]
            bar.update(1)
        _write_json(ledger_path, ledger)
        if waiting:
            time.sleep(opts["poll_s"])
    bar.close()
    return failed
