"""One command for the whole book: run every experiment (finished records are skipped), write the
aggregated tables next to their records, regenerate the figures by re-executing the chapters, and
write ``data/MANIFEST.json`` (every data file's sha256, the records each table came from, provenance).
"""
from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path
from typing import Callable, Optional, Sequence

from . import __version__
from .experiments import EXPERIMENTS, make_experiment
from .results import DATA_DIR, aggregate, format_rows, load_records
from .runner import run_experiment
from .store import provenance

__all__ = ["reproduce", "write_manifest"]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_manifest(root: Path = DATA_DIR) -> Path:
    """Hash every file under ``root`` and list, per table, the records it was aggregated from."""
    root = Path(root)
    files = {str(p.relative_to(root)): _sha256(p) for p in sorted(root.rglob("*"))
             if p.is_file() and p.name != "MANIFEST.json" and not p.name.startswith(".")}
    tables = {}
    for table in sorted(root.glob("*/*/table.csv")):
        experiment, profile = table.parent.parent.name, table.parent.name
        records = load_records(experiment, profile, root)
        tables[str(table.relative_to(root))] = {
            "experiment": experiment, "profile": profile, "records": sorted(r["config_hash"] for r in records),
            "devices": sorted({r["provenance"]["device_name"] for r in records}),
            "versions": sorted({r["provenance"]["version"] for r in records}),
            "commits": sorted({r["provenance"].get("git_commit") or "?" for r in records})}
    manifest = {"package_version": __version__, "written_by": provenance("n/a"), "files": files, "tables": tables}
    path = root / "MANIFEST.json"
    path.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return path


def reproduce(profile: str = "quick", only: Optional[Sequence[str]] = None, root: Path = DATA_DIR,
              device: Optional[str] = None, figures: bool = False, progress: bool = True,
              log: Callable = print, executor: str = "local", slurm: Optional[dict] = None,
              workers: int = 1, share_shapes: Optional[bool] = None, max_members: Optional[int] = None,
              checkpoint_every_s: Optional[float] = None) -> dict:
    names = list(only) if only else list(EXPERIMENTS)
    unknown = [n for n in names if n not in EXPERIMENTS]
    if unknown:
        raise ValueError(f"unknown experiment {unknown[0]!r}; allowed: {', '.join(EXPERIMENTS)}")
    summaries = {}
    for name in names:
        if not make_experiment(name, profile).runs():   # e.g. intrinsic-dimension-wide at paper scale
            log(f"{name}: no runs under the {profile} profile; skipped")
            continue
        out = Path(root) / name / profile
        s = run_experiment(name, profile, out=out, device=device, progress=progress, log=log,
                           executor=executor, slurm=slurm, workers=workers, share_shapes=share_shapes,
                           max_members=max_members, checkpoint_every_s=checkpoint_every_s)
        if len(s["records"]) < s["runs"]:
            log(f"{name}: {s['runs'] - len(s['records'])} run(s) without a record; rerun to finish them")
        (out / "table.csv").write_text(format_rows(aggregate(s["records"]), "csv"))
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
