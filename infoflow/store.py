"""Results are data: one JSON record per run, keyed by the hash of its full config (seed included),
written atomically (temp file + fsync + rename), with provenance. Nothing is ever unpickled.

A record holds ``config``, ``config_hash``, ``status`` (``done`` / ``failed``), ``metrics``
(``best_val_nmse``, ``final_train_nmse``, ``steps``), ``provenance`` and, for failures, ``error``.
Every record read is checked against one schema (:class:`RecordSchema`): a done run has a finite,
non-negative ``best_val_nmse``; a failed one names its error. Each record carries ``content_sha256``,
the hash of everything else in it, so an edit by hand is caught. A file that does not parse, whose
hash does not match its config, that breaks the schema or whose content hash does not match is
reported and treated as missing, so the run is done again; it is never used.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
import os
import platform
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from . import __version__

__all__ = [
    "config_hash",
    "code_sha256",
    "content_sha256",
    "seal",
    "provenance",
    "cpu_model",
    "atomic_write",
    "ResultsStore",
    "RecordProblem",
    "RecordSchema",
    "record_problem",
    "REQUIRED",
]

REQUIRED = ("config", "config_hash", "status", "metrics", "provenance", "content_sha256")


class _Metrics(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)
    best_val_nmse: Optional[float] = None
    final_train_nmse: Optional[float] = None
    steps: int


class _Provenance(BaseModel):
    model_config = ConfigDict(extra="allow")
    version: str
    device_name: str
    seed: int


class RecordSchema(BaseModel):
    """What every record must hold (more keys are allowed: curve, measurements, parameters, ...)."""

    model_config = ConfigDict(extra="allow")
    config: dict
    config_hash: str
    status: str
    metrics: _Metrics
    provenance: _Provenance
    content_sha256: str
    error: Optional[str] = None

    @model_validator(mode="after")
    def _consistent(self):
        m = self.metrics
        if self.status == "done":
            if m.best_val_nmse is None or not math.isfinite(m.best_val_nmse) or m.best_val_nmse < 0:
                raise ValueError(f"status done needs a finite best_val_nmse >= 0, got {m.best_val_nmse!r}")
            if m.final_train_nmse is not None and not math.isfinite(m.final_train_nmse):
                raise ValueError(f"final_train_nmse must be finite or null, got {m.final_train_nmse!r}")
        elif self.status == "failed":
            if not self.error:
                raise ValueError("status failed needs an error saying why")
        else:
            raise ValueError(f"unknown status {self.status!r} (done or failed)")
        if m.steps < 1:
            raise ValueError(f"steps must be a positive integer, got {m.steps}")
        return self


def config_hash(config: dict) -> str:
    """sha256 of the canonical JSON of ``config`` (sorted keys), first 16 hex digits."""
    text = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def content_sha256(record: dict) -> str:
    """sha256 (16 hex digits) of a record's canonical JSON without its ``content_sha256``."""
    body = {k: v for k, v in record.items() if k != "content_sha256"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def seal(record: dict) -> dict:
    """``record`` with its ``content_sha256`` set."""
    return {**record, "content_sha256": content_sha256(record)}


def record_problem(record, name: str = "") -> Optional[str]:
    """Why ``record`` (a parsed JSON value) is not a valid record, or None. ``name``: the file's stem,
    which must be the config hash."""
    if not isinstance(record, dict):
        return f"not a JSON object ({type(record).__name__})"
    missing = [k for k in REQUIRED if k not in record]
    if missing:
        return f"missing fields {missing}"
    if (
        not isinstance(record["config"], dict)
        or record["config_hash"] != config_hash(record["config"])
        or (name and name != record["config_hash"])
    ):
        return "hash does not match its config"
    try:
        RecordSchema.model_validate(record)
    except ValidationError as err:
        e = err.errors()[0]
        where = ".".join(str(p) for p in e["loc"]) or "record"
        return f"{where}: {e['msg']}"
    try:
        if record["content_sha256"] != content_sha256(record):
            return "content does not match its content_sha256 (edited after it was written?)"
    except ValueError:
        return "holds a non-finite number (NaN or inf)"
    return None


def _git(*args: str) -> Optional[str]:
    try:
        out = subprocess.run(
            ["git", *args], capture_output=True, text=True, timeout=5, cwd=Path(__file__).resolve().parent
        )
        return out.stdout.strip() if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


# The code a process runs is the code it imported: read the commit (and whether tracked files
# differ from it) once, at import, not when a record is written hours later on a moved HEAD.
_GIT_COMMIT = _git("rev-parse", "HEAD") or None
_GIT_DIRTY = None if _GIT_COMMIT is None else bool(_git("status", "--porcelain", "--untracked-files=no"))


def code_sha256(package_dir: Path = Path(__file__).resolve().parent) -> str:
    """sha256 of the package's own source (every ``*.py`` file of the package tree, subpackages included,
    by relative path and content), 16 hex digits: names the code that ran even where the checkout's git
    history is missing or stale (a copied tree)."""
    h = hashlib.sha256()
    root = Path(package_dir)
    for path in sorted(root.rglob("*.py")):
        h.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:16]


_CODE_SHA256 = code_sha256()


def cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The host CPU's model name (from ``cpuinfo`` where there is one, else the platform's word)."""
    try:
        for line in Path(cpuinfo).read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


_CPU_MODEL = cpu_model()  # read once: provenance() is called for every record and checkpoint


def provenance(device: str = "cpu", **extra) -> dict:
    """Package version, git commit at import (and whether the tracked files differed from it), the
    hash of the package source imported (:func:`code_sha256`), torch version, device name, and what
    decides a CPU run's floating-point sums: torch's threads, the host CPU's model and the instruction
    set torch dispatches to (``cpu_capability``); the same run on another thread count or another CPU
    sums in another order and drifts apart. Python version, date."""
    try:
        import torch

        torch_version, threads = torch.__version__, torch.get_num_threads()
        capability = torch.backends.cpu.get_cpu_capability()
        device_name = torch.cuda.get_device_name(0) if str(device).startswith("cuda") else platform.processor() or "cpu"
    except ImportError:  # pragma: no cover - the engine alone has no torch
        torch_version, threads, capability, device_name = None, None, None, "cpu"
    return {
        "package": "infoflow",
        "version": __version__,
        "git_commit": _GIT_COMMIT,
        "git_dirty": _GIT_DIRTY,
        "code_sha256": _CODE_SHA256,
        "torch": torch_version,
        "device": str(device),
        "device_name": device_name,
        "threads": threads,
        "cpu": _CPU_MODEL,
        "cpu_capability": capability,
        "python": platform.python_version(),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        **extra,
    }


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
        """Seal ``record`` (:func:`seal`), check it and write it atomically (temp file in the same
        folder, fsync, rename, fsync folder)."""
        record = seal(record)
        problem = record_problem(record)
        if problem:
            raise ValueError(f"record not written: {problem}")
        self.root.mkdir(parents=True, exist_ok=True)
        data = json.dumps(record, indent=1, sort_keys=True, allow_nan=False)
        return atomic_write(self.path(record["config_hash"]), data.encode())

    def read(self, path: Path) -> Optional[dict]:
        """A valid record, or None (the problem is appended to ``self.problems``)."""
        try:
            record = json.loads(Path(path).read_text())
        except (OSError, ValueError) as err:
            self.problems.append(
                RecordProblem(str(path), f"unreadable or truncated ({type(err).__name__}); will re-run")
            )
            return None
        problem = record_problem(record, Path(path).stem)
        if problem:
            self.problems.append(RecordProblem(str(path), f"{problem}; will re-run"))
            return None
        version = record["provenance"].get("version")
        if version != __version__:
            self.problems.append(
                RecordProblem(str(path), f"written by infoflow {version}, this is {__version__}; will re-run")
            )
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

    # Claims: a run being trained has a claim file ``.<hash>.claim`` naming its process, so two sweeps
    # on one folder split the work instead of training every run twice. A claim whose process is gone
    # (same machine) is taken over; one from another machine is honoured.

    def claim_path(self, h: str) -> Path:
        return self.root / f".{h}.claim"

    def claim(self, hashes: Iterable[str]) -> Optional[str]:
        """Claim every run of ``hashes`` for this process; None when done, else who holds one (and
        nothing is claimed)."""
        taken = []  # claimed by this call (a run this process held already stays held)
        for h in hashes:
            holder, new = self._claim_one(h)
            if holder is not None:
                self.release(taken)
                return holder
            if new:
                taken.append(h)
        return None

    def release(self, hashes: Iterable[str]) -> None:
        for h in hashes:
            path = self.claim_path(h)
            if _read_owner(path) == _owner():
                path.unlink(missing_ok=True)

    def live_claims(self) -> list[str]:
        """Claims in the folder held by other live processes (or other machines)."""
        return [str(p) for p in self.root.glob(".*.claim") if (o := _read_owner(p)) and o != _owner() and _alive(o)]

    def clean_debris(self) -> list[str]:
        """Remove temporary files a killed writer left (``.*.tmp``) and stale claims, unless another
        live process claims runs here (its temporary files may be in flight); returns what went."""
        if not self.root.exists() or self.live_claims():
            return []
        gone = []
        for p in list(self.root.glob(".*.tmp")) + list(self.root.glob(".*.claim")):
            if p.suffix == ".tmp" or not _alive(_read_owner(p) or {}):
                p.unlink(missing_ok=True)
                gone.append(p.name)
        return gone

    def _claim_one(self, h: str) -> tuple[Optional[str], bool]:
        """(who holds run ``h`` instead of us, or None; whether this call made the claim)."""
        path = self.claim_path(h)
        self.root.mkdir(parents=True, exist_ok=True)
        for _ in range(2):
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                owner = _read_owner(path)
                if owner == _owner():
                    return None, False
                if owner and _alive(owner):
                    return f"process {owner['pid']} on {owner['host']}", False
                path.unlink(missing_ok=True)  # its process is gone: take it over
                continue
            with os.fdopen(fd, "w") as fh:
                fh.write(json.dumps(_owner()))
            return None, True
        return f"a claim on {path.name} that keeps reappearing", False


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def _start_time(pid: int) -> Optional[str]:
    """The process's start time (clock ticks since boot; Linux), so a reused pid is not mistaken for it."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


_OWNERS: dict = {}


def _owner() -> dict:
    """This process as a claim's owner (computed per process: a forked child is another owner)."""
    pid = os.getpid()
    if pid not in _OWNERS:
        _OWNERS[pid] = {"pid": pid, "host": platform.node(), "boot": _boot_id(), "start": _start_time(pid)}
    return _OWNERS[pid]


def _read_owner(path: Path) -> Optional[dict]:
    try:
        owner = json.loads(Path(path).read_text())
        return owner if isinstance(owner, dict) and "pid" in owner else None
    except (OSError, ValueError):
        return None


def _alive(owner: dict) -> bool:
    """Whether a claim's process still runs: on another machine (or boot) we cannot tell, so yes."""
    if not owner:
        return False
    me = _owner()
    if owner.get("host") != me["host"] or owner.get("boot") != me["boot"]:
        return True
    try:
        os.kill(int(owner["pid"]), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError, TypeError):
        return True
    return _start_time(int(owner["pid"])) == owner.get("start")
