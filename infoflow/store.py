"""Results are data: one JSON record per run, keyed by the hash of its full config (seed included),
written atomically (temp file + fsync + rename), with provenance. Nothing is ever unpickled.

A record holds ``config``, ``config_hash``, ``status`` (``done`` / ``failed``), ``metrics``
(``best_val_nmse``, ``final_train_nmse``, ``steps``), ``provenance`` and, for failures, ``error``.
A file that does not parse, whose hash does not match its config, or that lacks a field is
reported and treated as missing, so the run is done again; it is never used.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import platform
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional

from . import __version__

__all__ = ["config_hash", "code_sha256", "provenance", "atomic_write", "ResultsStore", "RecordProblem", "REQUIRED"]

REQUIRED = ("config", "config_hash", "status", "metrics", "provenance")


def config_hash(config: dict) -> str:
    """sha256 of the canonical JSON of ``config`` (sorted keys), first 16 hex digits."""
    text = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _git(*args: str) -> Optional[str]:
    try:
        out = subprocess.run(["git", *args], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


# The code a process runs is the code it imported: read the commit (and whether tracked files
# differ from it) once, at import, not when a record is written hours later on a moved HEAD.
_GIT_COMMIT = _git("rev-parse", "HEAD") or None
_GIT_DIRTY = None if _GIT_COMMIT is None else bool(_git("status", "--porcelain", "--untracked-files=no"))


def code_sha256(package_dir: Path = Path(__file__).resolve().parent) -> str:
    """sha256 of the package's own source (every ``*.py`` file, by name and content), 16 hex digits:
    names the code that ran even where the checkout's git history is missing or stale (a copied tree)."""
    h = hashlib.sha256()
    for path in sorted(Path(package_dir).glob("*.py")):
        h.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:16]


_CODE_SHA256 = code_sha256()


def provenance(device: str = "cpu", **extra) -> dict:
    """Package version, git commit at import (and whether the tracked files differed from it), the
    hash of the package source imported (:func:`code_sha256`), torch version, device name, Python
    version, date."""
    try:
        import torch
        torch_version = torch.__version__
        device_name = torch.cuda.get_device_name(0) if str(device).startswith("cuda") else platform.processor() or "cpu"
    except ImportError:  # pragma: no cover - the engine alone has no torch
        torch_version, device_name = None, "cpu"
    return {"package": "infoflow", "version": __version__, "git_commit": _GIT_COMMIT, "git_dirty": _GIT_DIRTY,
            "code_sha256": _CODE_SHA256, "torch": torch_version, "device": str(device), "device_name": device_name,
            "python": platform.python_version(),
            "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), **extra}


def atomic_write(final: Path, data: bytes) -> Path:
    """Write ``data`` to ``final`` so that it holds either its old content or all of ``data``, even if
    the process is killed: temp file in the same folder, fsync, rename, fsync the folder."""
    final = Path(final)
    fd, tmp = tempfile.mkstemp(dir=final.parent, prefix=f".{final.stem}-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, final)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    dir_fd = os.open(final.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return final


@dataclass
class RecordProblem:
    path: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


@dataclass
class ResultsStore:
    """A folder of records ``<root>/<config_hash>.json``."""

    root: Path
    problems: list = field(default_factory=list)

    def __post_init__(self):
        self.root = Path(self.root)

    def path(self, h: str) -> Path:
        return self.root / f"{h}.json"

    def ensure_writable(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            probe = tempfile.NamedTemporaryFile(dir=self.root, prefix=".probe-", delete=True)
            probe.close()
        except OSError as err:
            raise PermissionError(f"output folder {self.root} is not writable: {err.strerror or err}") from None

    def write(self, record: dict) -> Path:
        """Atomically write ``record`` (temp file in the same folder, fsync, rename, fsync folder)."""
        missing = [k for k in REQUIRED if k not in record]
        if missing:
            raise ValueError(f"record lacks {missing}")
        if record["config_hash"] != config_hash(record["config"]):
            raise ValueError("record config_hash does not match its config")
        self.root.mkdir(parents=True, exist_ok=True)
        data = json.dumps(record, indent=1, sort_keys=True, allow_nan=False)
        return atomic_write(self.path(record["config_hash"]), data.encode())

    def read(self, path: Path) -> Optional[dict]:
        """A valid record, or None (the problem is appended to ``self.problems``)."""
        try:
            record = json.loads(Path(path).read_text())
        except (OSError, ValueError) as err:
            self.problems.append(RecordProblem(str(path), f"unreadable or truncated ({type(err).__name__}); will re-run"))
            return None
        if not isinstance(record, dict) or any(k not in record for k in REQUIRED):
            self.problems.append(RecordProblem(str(path), f"missing fields {[k for k in REQUIRED if k not in (record or {})]}; will re-run"))
            return None
        if record["config_hash"] != config_hash(record["config"]) or Path(path).stem != record["config_hash"]:
            self.problems.append(RecordProblem(str(path), "hash does not match its config; will re-run"))
            return None
        if record["status"] not in ("done", "failed"):
            self.problems.append(RecordProblem(str(path), f"unknown status {record['status']!r}; will re-run"))
            return None
        version = record["provenance"].get("version")
        if version != __version__:
            self.problems.append(RecordProblem(str(path), f"written by infoflow {version}, this is {__version__}; will re-run"))
            return None
        return record

    def get(self, h: str) -> Optional[dict]:
        p = self.path(h)
        return self.read(p) if p.exists() else None

    def records(self) -> list[dict]:
        """Every valid record in the folder (problems collected in ``self.problems``)."""
        if not self.root.exists():
            return []
        return [r for p in sorted(self.root.glob("*.json")) if (r := self.read(p)) is not None]

    def finished(self, hashes: Iterable[str]) -> set:
        return {h for h in hashes if self.get(h) is not None}
