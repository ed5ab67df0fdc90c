"""One command for the whole book: run every experiment (finished records are skipped), write the
aggregated tables next to their records, regenerate the figures by re-executing the chapters, and
write ``data/MANIFEST.json`` (every data file's sha256, the records each table came from, provenance).
:func:`ingest` brings in the records a run elsewhere (a GPU machine) packed into an archive.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import tarfile
import tempfile
import zlib
from pathlib import Path
from typing import Callable, Optional, Sequence

from . import __version__
from .experiments import EXPERIMENTS, make_experiment
from .results import DATA_DIR, aggregate, format_rows, load_records
from .runner import Execution, group_runs, run_experiment, train_group
from .store import ResultsStore, atomic_write, config_hash, provenance

__all__ = ["reproduce", "write_manifest", "ingest", "verify"]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_manifest(root: Path = DATA_DIR) -> Path:
    """Hash every file under ``root`` and list, per table, the records it was aggregated from."""
    root = Path(root)
    files = {
        str(p.relative_to(root)): _sha256(p)
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != "MANIFEST.json" and not p.name.startswith(".")
    }
    tables = {}
    for table in sorted(root.glob("*/*/table.csv")):
        experiment, profile = table.parent.parent.name, table.parent.name
        records = load_records(experiment, profile, root)
        tables[str(table.relative_to(root))] = {
            "experiment": experiment,
            "profile": profile,
            "records": sorted(r["config_hash"] for r in records),
            "devices": sorted({r["provenance"]["device_name"] for r in records}),
            "versions": sorted({r["provenance"]["version"] for r in records}),
            "commits": sorted({r["provenance"].get("git_commit") or "?" for r in records}),
        }
    manifest = {"package_version": __version__, "written_by": provenance("n/a"), "files": files, "tables": tables}
    path = root / "MANIFEST.json"
    path.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return path


def write_table(folder: Path, records: list[dict]) -> None:
    """``folder/table.csv``: the records aggregated over seeds."""
    (Path(folder) / "table.csv").write_text(format_rows(aggregate(records), "csv"))


def _new_lines(source: Path, dest: Path) -> int:
    """Append to ``dest`` the lines of ``source`` it lacks; how many."""
    have = set(dest.read_text().splitlines()) if dest.exists() else set()
    new = [line for line in source.read_text().splitlines() if line.strip() and line not in have]
    if new:
        dest.parent.mkdir(parents=True, exist_ok=True)
        with open(dest, "a") as fh:
            fh.write("".join(line + "\n" for line in new))
    return len(new)


def _extract(archive: Path, into: str, dropped: list) -> list[Path]:
    """Extract the members of ``archive`` that pass the bounds (:func:`_bounded_members`) into
    ``into``; the files extracted. A file that is not a readable tar archive is a ValueError."""
    try:
        with tarfile.open(archive) as tar:
            members = _bounded_members(tar, archive, dropped)
            # Python >= 3.11.4 checks the same again (the "data" filter)
            tar.extractall(into, members=members, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
    except (OSError, tarfile.TarError, EOFError, zlib.error) as err:
        raise ValueError(f"archive {archive}: cannot be read as a tar archive ({err})") from None
    return [p for p in Path(into).rglob("*") if p.is_file()]


def _ingest_records(found: ResultsStore, dest: Path, experiment: str, profile: str, summary: dict, log) -> None:
    """Copy into ``dest`` the valid records of ``found`` it lacks or holds only an invalid copy of;
    a record of another experiment filed here is reported, not copied."""
    for record in found.records():
        if record["config"].get("experiment") != experiment:
            summary["problems"].append(
                f"{experiment}/{profile}/{record['config_hash']}.json: a record of "
                f"{record['config'].get('experiment')!r} filed under {experiment!r}"
            )
            continue
        target = dest / f"{record['config_hash']}.json"
        if target.exists():
            if ResultsStore(dest).get(record["config_hash"]) is not None:
                summary["kept"] += 1
                continue
            summary["replaced"] += 1  # the copy here is invalid: the valid incoming one replaces it
            log(f"replacing invalid {target} with the archive's valid copy")
        dest.mkdir(parents=True, exist_ok=True)
        atomic_write(target, found.path(record["config_hash"]).read_bytes())
        key = f"{experiment}/{profile}"
        summary["records"][key] = summary["records"].get(key, 0) + 1


def _keep_checkpoints(folder: Path, experiment: str, profile: str, checkpoints, summary: dict, log) -> None:
    """Keep the training states of ensembles the run cut short in ``checkpoints/EXPERIMENT/PROFILE``."""
    for ckpt in sorted(folder.glob(".*.ckpt")):
        if checkpoints is None:
            log(
                f"warning: {ckpt.name} ({experiment}/{profile}): a cut ensemble's state, "
                "not kept (no checkpoints folder)"
            )
            continue
        keep = Path(checkpoints) / experiment / profile
        keep.mkdir(parents=True, exist_ok=True)
        atomic_write(keep / ckpt.name, ckpt.read_bytes())
        summary["checkpoints"].append(str(keep / ckpt.name))


def ingest(
    archive: Path,
    root: Path = DATA_DIR,
    bench: Optional[Path] = None,
    checkpoints: Optional[Path] = None,
    log: Callable = print,
) -> dict:
    """Bring in an archive of results made elsewhere (``scripts/device_session.sh``'s tgz): from every
    folder ``.../EXPERIMENT/PROFILE/`` in it, the valid records ``root`` lacks (a record already there
    is kept; an invalid one is reported, not copied) and the sweep lines it lacks; the lines of a
    ``benchmarks/results.jsonl`` that ``bench`` lacks; the training checkpoints of ensembles the run
    cut short into ``checkpoints/EXPERIMENT/PROFILE/`` (carry them back and rerun there to resume).
    Rewrites the tables of the folders that gained records, and the manifest."""
    summary = {
        "records": {},
        "kept": 0,
        "replaced": 0,
        "problems": [],
        "dropped": [],
        "sweep_lines": 0,
        "benchmark_lines": 0,
        "checkpoints": [],
    }
    with tempfile.TemporaryDirectory(prefix="ingest-") as tmp:
        files = _extract(archive, tmp, summary["dropped"])
        for folder in sorted({p.parent for p in files}):
            experiment, profile = folder.parent.name, folder.name
            if experiment not in EXPERIMENTS or profile not in EXPERIMENTS[experiment].profiles:
                continue
            dest, found = Path(root) / experiment / profile, ResultsStore(folder)
            _ingest_records(found, dest, experiment, profile, summary, log)
            summary["problems"] += [
                f"{Path(p.path).relative_to(tmp)}: {p.reason.split(';')[0]}" for p in found.problems
            ]
            if (folder / "sweeps.jsonl").exists():
                summary["sweep_lines"] += _new_lines(folder / "sweeps.jsonl", dest / "sweeps.jsonl")
            _keep_checkpoints(folder, experiment, profile, checkpoints, summary, log)
        if bench is not None:
            for lines in (p for p in files if p.name == "results.jsonl" and p.parent.name == "benchmarks"):
                summary["benchmark_lines"] += _new_lines(lines, Path(bench))
    for key in summary["records"]:
        current = load_records(*key.split("/"), root)  # the records of the profile's present config
        if current:
            write_table(Path(root) / key, current)
    if summary["records"] or summary["sweep_lines"]:
        write_manifest(Path(root))
    for problem in summary["problems"]:
        log(f"warning: not ingested: {problem}")
    for dropped in summary["dropped"]:
        log(f"warning: not extracted: {dropped}")
    return summary


# Bounds on an archive, checked member by member before anything is extracted (a device session's
# archive holds a few thousand records, logs and checkpoints of up to 64 MiB).
MAX_MEMBERS, MAX_MEMBER_BYTES, MAX_TOTAL_BYTES = 20_000, 256 << 20, 2 << 30


def _bounded_members(tar, archive, dropped: list) -> list:
    """The archive's files and folders, read one header at a time (an archive of millions of members
    is refused at the limit, not listed whole); refuses a path outside the archive, a member or a
    total over the limits; links, devices and FIFOs are left out and named in ``dropped``."""
    members, total = [], 0
    while (m := tar.next()) is not None:
        if len(members) + len(dropped) >= MAX_MEMBERS:
            raise ValueError(f"archive {archive}: more than {MAX_MEMBERS} members (the limit)")
        if m.name.startswith("/") or ".." in Path(m.name).parts:
            raise ValueError(f"archive {archive}: a path outside the archive, {m.name!r}")
        if not (m.isfile() or m.isdir()):
            kind = "symlink" if m.issym() else "hard link" if m.islnk() else "FIFO" if m.isfifo() else "device or other"
            dropped.append(f"{m.name} ({kind})")
            continue
        if m.size > MAX_MEMBER_BYTES:
            raise ValueError(
                f"archive {archive}: member {m.name!r} is {m.size / 2**20:.0f} MiB, over the "
                f"{MAX_MEMBER_BYTES >> 20} MiB limit"
            )
        total += m.size
        if total > MAX_TOTAL_BYTES:
            raise ValueError(f"archive {archive}: more than {MAX_TOTAL_BYTES >> 30} GiB unpacked (the limit)")
        members.append(m)
    return members


def reproduce(
    profile: str = "quick",
    only: Optional[Sequence[str]] = None,
    root: Path = DATA_DIR,
    execution: Optional[Execution] = None,
    figures: bool = False,
    progress: bool = True,
    log: Callable = print,
) -> dict:
    """Run every experiment (or ``only`` these) under ``profile`` as ``execution`` says, write each
    folder's table and the manifest; with ``figures``, re-execute every chapter."""
    names = list(only) if only else list(EXPERIMENTS)
    unknown = [n for n in names if n not in EXPERIMENTS]
    if unknown:
        raise ValueError(f"unknown experiment {unknown[0]!r}; allowed: {', '.join(EXPERIMENTS)}")
    summaries = {}
    for name in names:
        if not make_experiment(name, profile).runs():  # e.g. intrinsic-dimension-wide at paper scale
            log(f"{name}: no runs under the {profile} profile; skipped")
            continue
        out = Path(root) / name / profile
        s = run_experiment(name, profile, out=out, execution=execution, progress=progress, log=log)
        if len(s["records"]) < s["runs"]:
            log(f"{name}: {s['runs'] - len(s['records'])} run(s) without a record; rerun to finish them")
        write_table(out, s["records"])
        summaries[name] = {k: s[k] for k in ("runs", "trained", "skipped", "wall_time_s")}
    if figures:
        book = Path(__file__).resolve().parent.parent / "book"
        chapters = sorted((book / "chapters").glob("*.md"))
        if not chapters:
            raise FileNotFoundError("no chapters found: --figures needs the book/ folder of a clone of the repository")
        for md in chapters:
            log(f"executing {md.name}")
            subprocess.run(["jupytext", "--sync", "--execute", str(md.relative_to(book))], cwd=book, check=True)
    manifest = write_manifest(Path(root))
    return {"profile": profile, "experiments": summaries, "manifest": str(manifest)}


def _compare(old: dict, new: Optional[dict], name: str, profile: str, rtol: float) -> dict:
    """One row of :func:`verify`: a committed record's best validation NMSE against the retrained one."""
    a, b = old["metrics"]["best_val_nmse"], new["metrics"]["best_val_nmse"] if new else None
    diff = None if a is None or b is None else abs(b - a) / max(abs(a), 1e-30)
    return {
        "experiment": name,
        "profile": profile,
        "record": old["config_hash"],
        "label": old["config"]["label"],
        "seed": old["config"]["seed"],
        "committed": a,
        "now": b,
        "rel_diff": diff,
        "ok": (a is None and b is None) or (diff is not None and diff <= rtol),
        "committed_at": (old["provenance"].get("git_commit") or "?")[:7],
    }


def verify(
    names: Optional[Sequence[str]] = None,
    profile: str = "quick",
    root: Path = DATA_DIR,
    sample: int = 2,
    rtol: float = 1e-3,
    refresh: bool = False,
    seed: int = 0,
    log: Callable = print,
) -> list[dict]:
    """Re-run a sample of committed records with the code at hand and compare: for each experiment,
    ``sample`` records drawn at random (``seed``) from ``root``/EXPERIMENT/``profile``, each retrained
    in the ensemble it was trained in (the profile's grouping on a CPU), into a temporary folder.
    Returns one row per record: its best validation NMSE, the new one, their relative difference and
    whether it is within ``rtol``. With ``refresh``, a record that differs is replaced by the new one
    and the folder's table and the manifest are rewritten."""
    import random

    rng = random.Random(seed)
    rows, refreshed = [], set()
    for name in names or list(EXPERIMENTS):
        if name not in EXPERIMENTS:
            raise ValueError(f"unknown experiment {name!r}; allowed: {', '.join(EXPERIMENTS)}")
        exp = make_experiment(name, profile)
        committed = load_records(name, profile, root)
        if not committed:
            continue
        chosen = rng.sample(committed, min(sample, len(committed)))
        wanted = {r["config_hash"] for r in chosen}
        groups = [g for g in group_runs(exp.runs()) if wanted & {config_hash(r) for r in g}]
        with tempfile.TemporaryDirectory(prefix="verify-") as tmp:
            fresh = ResultsStore(Path(tmp))
            for g in groups:
                train_group(exp, g, fresh, Execution(device="cpu").resolved(), log=lambda m: None)
            for old in chosen:
                new = fresh.get(old["config_hash"])
                row = _compare(old, new, name, profile, rtol)
                rows.append(row)
                log(
                    f"{'ok   ' if row['ok'] else 'STALE'} {name}/{profile}/{old['config_hash']} {row['label']} "
                    f"seed {row['seed']}: committed {row['committed']}, now {row['now']}"
                )
                if refresh and not row["ok"] and new is not None:
                    atomic_write(
                        Path(root) / name / profile / f"{old['config_hash']}.json",
                        fresh.path(old["config_hash"]).read_bytes(),
                    )
                    refreshed.add(name)
    for name in refreshed:
        write_table(Path(root) / name / profile, load_records(name, profile, root))
    if refreshed:
        write_manifest(Path(root))
    return rows
