"""Command line: ``infoflow predict`` (the two-step estimate of Sec. 5.3).

Bad input gets one line naming the field and what is allowed, exit code 2, no traceback.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer

from .predict import predict as _predict, predict_targets

app = typer.Typer(
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    help="InfoFlow: predict, before training, whether a Transformer approximates a target efficiently.",
)


# Options that `run` and `reproduce` share (None: the runner's default, so it is written down once)
SHARE_SHAPES = typer.Option(
    None,
    "--share-shapes/--no-share-shapes",
    help="train runs whose parameters have the same shapes (heads or target D differ) as one "
    "ensemble (default: on a GPU)",
)
MAX_MEMBERS = typer.Option(None, help="the most runs in one ensemble (default 16)")
CHECKPOINT_EVERY = typer.Option(
    None,
    help="seconds between saves of an ensemble's training state, from which a killed "
    "sweep resumes (default 60; 0: at every evaluation)",
)
CUDA_GRAPH = typer.Option(
    False,
    "--cuda-graph",
    help="replay each ensemble's training step as a CUDA graph (--device "
    "cuda only; far fewer kernel launches; recorded in the provenance)",
)


def fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code=2)


def _execution(device, executor, slurm, workers, share_shapes, max_members, checkpoint_every, cuda_graph):
    """The command line's execution options as one :class:`~infoflow.runner.Execution` (None: its default)."""
    from .runner import Execution

    given = {
        "device": device,
        "executor": executor,
        "slurm": slurm,
        "workers": workers,
        "share_shapes": share_shapes,
        "max_members": max_members,
        "checkpoint_every_s": checkpoint_every,
        "cuda_graph": cuda_graph,
    }
    return Execution(**{k: v for k, v in given.items() if v is not None})


def parse_int_list(text: str, field: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip() != ""]
    except ValueError:
        fail(f"--{field} must be comma-separated positive integers like 4,4, got {text!r}")
    if not values:
        fail(f"--{field} must list at least one positive integer, got {text!r}")
    return values


@app.command()
def predict(
    target: Optional[str] = typer.Option(None, help="a registered target (infoflow predict --list)"),
    T: int = typer.Option(64, "--T", help="sequence length"),
    heads: str = typer.Option("4,4", help="heads per layer, e.g. 4,4"),
    layers: Optional[int] = typer.Option(None, help="number of layers (default: length of --heads)"),
    D: Optional[int] = typer.Option(None, "--D", help="D of intrinsic-dimension / d-retrieval"),
    embed: Optional[str] = typer.Option(
        None, help="embedding dim E per layer (one value or one per layer; default 60)"
    ),
    pe: bool = typer.Option(False, "--pe", help="the model has positional encoding"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object"),
    list_targets: bool = typer.Option(False, "--list", help="list the targets and exit"),
):
    """Two-step estimate (Sec. 5.3) for a target and a Transformer architecture."""
    if list_targets:
        for name in predict_targets():
            typer.echo(name)
        return
    if target is None:
        fail(f"--target is required; allowed: {', '.join(predict_targets())}")
    if target not in predict_targets():
        fail(f"--target {target!r} is unknown; allowed: {', '.join(predict_targets())}")
    if T < 1:
        fail(f"--T must be a positive integer, got {T}")
    h = parse_int_list(heads, "heads")
    if any(x < 1 for x in h):
        fail(f"--heads must be positive integers, got {heads!r}")
    if layers is not None:
        if layers < 1:
            fail(f"--layers must be a positive integer, got {layers}")
        if len(h) != layers:
            fail(f"--heads lists {len(h)} layer(s) but --layers is {layers}; give one head count per layer")
    e = None
    if embed is not None:
        e = parse_int_list(embed, "embed")
        if any(x < 1 for x in e):
            fail(f"--embed must be positive integers, got {embed!r}")
        if len(e) == 1:
            e = e * len(h)
        elif len(e) != len(h):
            fail(f"--embed gives {len(e)} values for {len(h)} layers; give one value or one per layer")
    params = {}
    if target in ("intrinsic-dimension", "d-retrieval"):
        params["D"] = D if D is not None else (2 if target == "intrinsic-dimension" else 4)
        if params["D"] < 1:
            fail(f"--D must be a positive integer, got {params['D']}")
        if params["D"] > T:
            fail(f"--D must be at most --T ({T}), got {params['D']}")
    elif D is not None:
        fail(f"--D applies only to intrinsic-dimension and d-retrieval, not {target}")
    try:
        result = _predict(target, T, h, embed=e, pe=pe, **params)
    except ValueError as err:
        fail(str(err))
    typer.echo(json.dumps(result.to_dict()) if as_json else result.report())


@app.command()
def run(
    experiment: Optional[str] = typer.Argument(None, help="experiment name (see --list)"),
    profile: str = typer.Option(
        "quick",
        help="quick (CPU, minutes), cpu (largest scale for a 2-core CPU) or paper (the paper's settings, one GPU)",
    ),
    device: Optional[str] = typer.Option(None, help="cpu or cuda[:N] (default: cuda when present)"),
    out: Optional[str] = typer.Option(None, help="results folder (default runs/EXPERIMENT/PROFILE)"),
    sets: list[str] = typer.Option([], "--set", help="override a config key: key=value (e.g. train.steps=200)"),
    retry_failed: bool = typer.Option(False, "--retry-failed", help="re-run records whose status is failed"),
    quiet: bool = typer.Option(False, "--quiet", help="no progress bars"),
    list_experiments: bool = typer.Option(False, "--list", help="list the experiments and exit"),
    executor: str = typer.Option("local", help="local or slurm"),
    workers: int = typer.Option(
        1, help="local: ensembles trained at once, each in its own process (GPU: 4-8 keep it busy)"
    ),
    share_shapes: Optional[bool] = SHARE_SHAPES,
    max_members: Optional[int] = MAX_MEMBERS,
    checkpoint_every: Optional[float] = CHECKPOINT_EVERY,
    cuda_graph: bool = CUDA_GRAPH,
    slurm_config: Optional[str] = typer.Option(
        None, help="JSON file of slurm options (partition, time_min, cpus, gpus, mem_gb, account)"
    ),
    partition: Optional[str] = typer.Option(None, help="slurm partition"),
    time_min: Optional[int] = typer.Option(None, help="slurm time limit per job, minutes (default 60)"),
    cpus: Optional[int] = typer.Option(None, help="slurm CPUs per job (default 2)"),
    gpus: Optional[int] = typer.Option(None, help="slurm GPUs per job (default 0)"),
    mem_gb: Optional[float] = typer.Option(None, help="slurm memory per job, GB (default 8)"),
    account: Optional[str] = typer.Option(None, help="slurm account"),
):
    """Train an experiment's runs (skipping finished records) and write one JSON record per run."""
    from .experiments import EXPERIMENTS, ConfigError, parse_sets

    if list_experiments:
        for name, cls in EXPERIMENTS.items():
            typer.echo(f"{name:20s} {cls.description}")
        return
    if experiment is None:
        fail(f"EXPERIMENT is required; allowed: {', '.join(EXPERIMENTS)}")
    if executor not in ("local", "slurm"):
        fail(f"--executor must be local or slurm, got {executor!r}")
    try:
        from .runner import run_experiment

        slurm = None
        if executor == "slurm":
            from .slurm import load_slurm_options

            slurm = load_slurm_options(
                slurm_config,
                partition=partition,
                time_min=time_min,
                cpus=cpus,
                gpus=gpus,
                mem_gb=mem_gb,
                account=account,
            )
        execution = _execution(
            device, executor, slurm, workers, share_shapes, max_members, checkpoint_every, cuda_graph
        )
        summary = run_experiment(
            experiment,
            profile,
            parse_sets(sets),
            out=out,
            execution=execution,
            progress=not quiet,
            retry_failed=retry_failed,
            log=lambda m: typer.echo(m, err=True),
        )
    except (ConfigError, ValueError, PermissionError) as err:
        fail(str(err))
    except OSError as err:
        fail(f"could not write results: {err.strerror or err}")
    done = sum(r["status"] == "done" for r in summary["records"])
    if len(summary["records"]) < summary["runs"]:
        typer.echo(
            f"{experiment} [{profile}]: {summary['runs'] - len(summary['records'])} run(s) have no record yet; "
            "rerun the same command to finish them",
            err=True,
        )
    typer.echo(
        f"{experiment} [{profile}]: {len(summary['records'])}/{summary['runs']} records "
        f"({done} done, {len(summary['records']) - done} failed), {summary['trained']} trained now "
        f"in {summary['wall_time_s']:.0f} s, "
        f"{summary['skipped']} skipped -> {summary['store']}"
    )


@app.command()
def reproduce(
    profile: str = typer.Option("quick", help="quick, cpu or paper"),
    executor: str = typer.Option("local", help="local or slurm"),
    only: list[str] = typer.Option([], "--only", help="run only these experiments (repeatable)"),
    slurm_config: Optional[str] = typer.Option(None, help="JSON file of slurm options"),
    device: Optional[str] = typer.Option(None, help="cpu or cuda[:N]"),
    workers: int = typer.Option(1, help="local: ensembles trained at once, each in its own process"),
    share_shapes: Optional[bool] = SHARE_SHAPES,
    max_members: Optional[int] = MAX_MEMBERS,
    checkpoint_every: Optional[float] = CHECKPOINT_EVERY,
    cuda_graph: bool = CUDA_GRAPH,
    figures: bool = typer.Option(False, "--figures", help="also re-execute every chapter (regenerates the figures)"),
    quiet: bool = typer.Option(False, "--quiet"),
    verify: bool = typer.Option(
        False,
        "--verify",
        help="instead: retrain a sample of the profile's committed records "
        "with this code and report any that differ (exit 1 if one does)",
    ),
    sample: int = typer.Option(2, help="--verify: records per experiment"),
    refresh: bool = typer.Option(False, "--refresh", help="--verify: replace the records that differ by the new ones"),
):
    """Run every experiment of the book, then write its tables and data/MANIFEST.json."""
    from .experiments import ConfigError
    from .reproduce import reproduce as _reproduce

    if executor not in ("local", "slurm"):
        fail(f"--executor must be local or slurm, got {executor!r}")
    if verify:
        from .reproduce import verify as _verify

        if sample < 1:
            fail(f"--sample must be a positive integer, got {sample}")
        try:
            rows = _verify(only or None, profile, sample=sample, refresh=refresh, log=lambda m: typer.echo(m, err=True))
        except (ConfigError, ValueError) as err:
            fail(str(err))
        stale = [r for r in rows if not r["ok"]]
        typer.echo(
            f"verified {len(rows)} record(s): {len(rows) - len(stale)} reproduce, {len(stale)} differ"
            + (" (replaced)" if refresh and stale else "")
        )
        raise typer.Exit(code=1 if stale and not refresh else 0)
    try:
        slurm = None
        if executor == "slurm":
            from .slurm import load_slurm_options

            slurm = load_slurm_options(slurm_config)
        execution = _execution(
            device, executor, slurm, workers, share_shapes, max_members, checkpoint_every, cuda_graph
        )
        out = _reproduce(
            profile,
            only or None,
            execution=execution,
            figures=figures,
            progress=not quiet,
            log=lambda m: typer.echo(m, err=True),
        )
    except (ConfigError, ValueError, PermissionError, FileNotFoundError) as err:
        fail(str(err))
    for name, s in out["experiments"].items():
        typer.echo(
            f"{name:20s} {s['runs']} runs ({s['trained']} trained now in {s['wall_time_s']:.0f} s, "
            f"{s['skipped']} recorded)"
        )
    typer.echo(f"manifest: {out['manifest']}")


@app.command()
def ingest(
    archive: str = typer.Argument(..., help="a .tgz of results made elsewhere (scripts/device_session.sh packs one)"),
    root: str = typer.Option("data", "--dir", help="results root the records go to"),
    bench: str = typer.Option("benchmarks/results.jsonl", help="benchmark lines file the archive's new lines go to"),
    checkpoints: str = typer.Option("runs/device", help="where checkpoints of ensembles cut short go (to resume)"),
):
    """Bring in an archive's new records, sweep and benchmark lines and checkpoints; rewrite tables and manifest."""
    from .reproduce import ingest as _ingest

    try:
        s = _ingest(Path(archive), Path(root), Path(bench), Path(checkpoints), log=lambda m: typer.echo(m, err=True))
    except (ValueError, OSError) as err:  # a bad archive, or a folder we cannot write
        fail(str(err))
    added = ", ".join(f"{k} {n}" for k, n in s["records"].items()) or "none"
    typer.echo(
        f"new records: {added}; {s['kept']} already here (kept); {s['replaced']} invalid here (replaced); "
        f"{len(s['problems'])} invalid (not ingested); {len(s['dropped'])} links or special files (not extracted); "
        f"{s['sweep_lines']} sweep and {s['benchmark_lines']} benchmark lines; "
        f"{len(s['checkpoints'])} checkpoint(s) -> {checkpoints}"
    )


@app.command()
def results(
    experiment: str = typer.Argument(..., help="experiment name"),
    profile: Optional[str] = typer.Option(None, help="profile (default: the largest with records)"),
    root: Optional[str] = typer.Option(None, "--dir", help="results root (default data/)"),
    fmt: str = typer.Option("table", "--format", help="table, csv or json"),
):
    """Aggregate an experiment's records over seeds (mean, std, best). Says on stderr which profile
    it shows and every record it leaves out."""
    from .experiments import EXPERIMENTS, PROFILES, make_experiment
    from .results import DATA_DIR, aggregate, best_profile, format_rows, load_records

    if experiment not in EXPERIMENTS:
        fail(f"unknown experiment {experiment!r}; allowed: {', '.join(EXPERIMENTS)}")
    if profile is not None and profile not in PROFILES:
        fail(f"unknown profile {profile!r}; allowed: {', '.join(PROFILES)}")
    if fmt not in ("table", "csv", "json"):
        fail(f"--format must be table, csv or json; got {fmt!r}")
    base = Path(root) if root else DATA_DIR
    # --dir may be a results root (ROOT/EXPERIMENT/PROFILE/) or a records folder itself (run --out)
    folder = base if not (base / experiment).is_dir() and any(base.glob("*.json")) else None
    passed: list = []
    # default: the largest complete profile, else the largest with any record (said so below)
    profile = (
        profile or best_profile(experiment, base, folder=folder, passed=passed) or (passed[0][0] if passed else None)
    )
    passed = [p for p in passed if p[0] != profile]
    problems: list = []
    for p in [profile] if profile else PROFILES:
        records = load_records(experiment, p, base, problems=problems, folder=folder)
    for p in sorted(set(map(str, problems))):
        typer.echo(f"skipped: {p}", err=True)
    if not records:
        fail(f"no records for {experiment} (profile {profile}) in {folder or base}; run: infoflow run {experiment}")
    runs = len(make_experiment(experiment, profile).runs())
    where = folder or base / experiment / profile
    note = "".join(f"; profile {p} passed over: {n}/{m} runs recorded" for p, n, m in passed)
    typer.echo(f"{experiment}, profile {profile}: {len(records)}/{runs} runs recorded in {where}{note}", err=True)
    typer.echo(format_rows(aggregate(records), fmt))


@app.command()
def scorecard(
    root: Optional[str] = typer.Option(None, "--dir", help="results root (default data/)"),
    fmt: str = typer.Option("table", "--format", help="table, csv or json"),
):
    """The reproduction scorecard: every claim of the paper, its value beside ours (from data/ or the
    engine) and a verdict by the rule it prints first."""
    from .scorecard import format_scorecard, scorecard as _scorecard

    if fmt not in ("table", "csv", "json"):
        fail(f"--format must be table, csv or json; got {fmt!r}")
    if root is not None and not Path(root).is_dir():
        fail(f"--dir {root!r} is not a folder")
    typer.echo(format_scorecard(_scorecard(Path(root) if root else None), fmt))


@app.callback()
def _root():
    """InfoFlow book tools."""


def main() -> None:
    from . import PLUGIN_ERROR

    if PLUGIN_ERROR:
        typer.echo(f"error: {PLUGIN_ERROR}", err=True)
        sys.exit(2)
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
