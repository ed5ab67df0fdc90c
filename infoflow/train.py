"""Training many small models at once (appendix: experiments recipe): AdamW, cosine schedule with an optional
constant-lr tail, MSE loss, NMSE on a fixed validation set per seed, best validation NMSE tracked.

All members of an :class:`~infoflow.model.EnsembleTransformer` train in one step: the loss is the
sum of the members' mean losses (so each member's gradient is its own), gradients are clipped per
member, and one batched AdamW update (per-member learning rate) moves every member. Each member
draws its data from its own ``torch.Generator`` on the model's device, seeded by its seed. A member
whose loss turns NaN/inf is frozen and reported failed; the others go on. With a
:class:`Checkpoint`, the whole training state is saved every so often, so a training killed midway
resumes where it was saved and ends exactly as it would have without the kill.
"""

from __future__ import annotations

import ctypes
import io
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch
from tqdm import tqdm

from .checks import nonnegative, positive_int
from .model import equal_runs
from .store import atomic_write, provenance

__all__ = [
    "TrainConfig",
    "nmse",
    "lr_at",
    "AdamWEnsemble",
    "train_ensemble",
    "draw",
    "MemberTargets",
    "clip_per_member",
    "train_autoencoders",
    "reuse_freed_memory",
    "predict_in_chunks",
    "Checkpoint",
]


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 1000
    batch: int = 256
    lr: float = 1e-3  # THIRD-PARTY (appendix: experiments)
    weight_decay: float = 1e-2  # THIRD-PARTY
    grad_clip: float = 1.0  # DEFAULT
    tail_steps: int = 0  # constant-lr tail after the cosine (App. C.3)
    tail_lr: float = 1e-4
    n_val: int = 2048
    eval_every: int = 100
    n_train: Optional[int] = None  # a fixed training set, passed over in epochs; None: fresh samples every step
    # Levers of the Sec. 6.1 optimisation study (all DEFAULT, ours; the values below leave the paper's recipe as it was)
    warmup_steps: int = 0  # linear warm-up from 0 to lr, then the cosine over the remaining steps
    beta2: float = 0.999  # Adam's second-moment decay
    curriculum: tuple = ()  # ((T_1, steps_1), (T_2, steps_2), ...): the first steps_1 steps at length T_1, ...

    def __post_init__(self):
        for name in ("steps", "batch", "n_val", "eval_every"):
            positive_int(name, getattr(self, name))
        if self.n_train is not None and (not isinstance(self.n_train, int) or self.n_train < self.batch):
            raise ValueError(f"n_train must be an integer >= batch ({self.batch}), got {self.n_train!r}")
        if self.tail_steps < 0:
            raise ValueError(f"tail_steps must be >= 0, got {self.tail_steps}")
        for name, low in (("lr", "positive"), ("grad_clip", "positive"), ("weight_decay", ">= 0"), ("tail_lr", ">= 0")):
            value = getattr(self, name)
            if not math.isfinite(value) or (value <= 0 if low == "positive" else value < 0):
                raise ValueError(f"{name} must be a finite number {low}, got {value!r}")
        if not isinstance(self.warmup_steps, int) or not 0 <= self.warmup_steps < self.steps:
            raise ValueError(f"warmup_steps must be an integer in [0, steps = {self.steps}), got {self.warmup_steps!r}")
        if not 0 < self.beta2 < 1:
            raise ValueError(f"beta2 must be in (0, 1), got {self.beta2!r}")
        object.__setattr__(self, "curriculum", tuple(tuple(stage) for stage in self.curriculum))
        for stage in self.curriculum:
            if len(stage) != 2:
                raise ValueError(f"curriculum: each stage must be (T, steps), got {stage!r}")
            positive_int("curriculum T", stage[0])
            positive_int("curriculum steps", stage[1])
        if self.curriculum and self.n_train:
            raise ValueError("curriculum needs fresh samples (n_train unset): a fixed set has one length")
        if sum(s for _, s in self.curriculum) >= self.steps:
            raise ValueError(f"curriculum: its stages must end before steps = {self.steps}")

    def length_at(self, step: int, T: int) -> int:
        """The sequence length trained at ``step``: the curriculum's stage, then the run's own ``T``."""
        for stage_T, stage_steps in self.curriculum:
            if step < stage_steps:
                return stage_T
            step -= stage_steps
        return T


def nmse(pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Σ(ŷ − y)² / Σ(y − ȳ)² over the batch dimension (dim 1), per member; 1 for the best constant."""
    err = ((pred - y) ** 2).flatten(1).sum(1)
    var = ((y - y.mean(dim=1, keepdim=True)) ** 2).flatten(1).sum(1)
    return err / var


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Cosine annealing from lr to 0 over ``steps``, then ``tail_lr`` for ``tail_steps``; with
    ``warmup_steps`` w, a linear rise to lr over the first w steps and the cosine over the rest."""
    if step >= cfg.steps:
        return cfg.tail_lr
    w = cfg.warmup_steps
    if step < w:
        return cfg.lr * (step + 1) / w
    return 0.5 * cfg.lr * (1 + math.cos(math.pi * (step - w) / (cfg.steps - w)))


class AdamWEnsemble:
    """AdamW (decoupled weight decay) over parameters with a leading member dimension; one update
    for all members, learning rate per member (a tensor of shape (M,)). The bias corrections live in
    a device tensor set by :meth:`advance`, so :meth:`update` reads no host value and can be captured
    in a CUDA graph."""

    def __init__(self, params, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2):
        self.params = [p for p in params if p.requires_grad]
        self.betas, self.eps, self.wd = betas, eps, weight_decay
        self.m = [torch.zeros_like(p) for p in self.params]
        self.v = [torch.zeros_like(p) for p in self.params]
        self.t = 0
        self.corrections = torch.zeros(2, device=self.params[0].device)  # 1 − β₁ᵗ, 1 − β₂ᵗ

    @torch.no_grad()
    def step(self, lr: torch.Tensor, active: Optional[torch.Tensor] = None):
        """One update of every member: :meth:`advance`, then :meth:`update`."""
        self.advance()
        self.update(lr, active)

    @torch.no_grad()
    def advance(self) -> None:
        """Count one step and set its bias corrections (computed on the host in double precision, as
        a Python scalar would be, then stored in float32)."""
        self.t += 1
        b1, b2 = self.betas
        self.corrections[0].fill_(1 - b1**self.t)
        self.corrections[1].fill_(1 - b2**self.t)

    @torch.no_grad()
    def update(self, lr: torch.Tensor, active: Optional[torch.Tensor] = None):
        """The update of the step set by :meth:`advance`, as multi-tensor (``_foreach``) ops: a dozen
        kernels per step instead of a dozen per parameter, which is what a GPU pays for with models
        this small."""
        b1, b2 = self.betas
        c1, c2 = self.corrections[0], self.corrections[1]
        ps, ms, vs = self.params, self.m, self.v
        gs = [p.grad if p.grad is not None else torch.zeros_like(p) for p in ps]
        lr = lr if active is None else lr * active
        lr_p = [lr.view((-1,) + (1,) * (p.dim() - 1)) for p in ps]
        torch._foreach_mul_(ms, b1)
        torch._foreach_add_(ms, gs, alpha=1 - b1)
        torch._foreach_mul_(vs, b2)
        torch._foreach_addcmul_(vs, gs, gs, value=1 - b2)
        decay = torch._foreach_mul(lr_p, -self.wd)  # p ← p·(1 − lr·wd)
        torch._foreach_add_(decay, 1.0)
        torch._foreach_mul_(ps, decay)
        denom = torch._foreach_div(vs, c2)  # p ← p − lr·m̂ / (√v̂ + ε)
        torch._foreach_sqrt_(denom)
        torch._foreach_add_(denom, self.eps)
        update = torch._foreach_div(ms, c1)
        torch._foreach_mul_(update, lr_p)
        torch._foreach_div_(update, denom)
        torch._foreach_sub_(ps, update)


_REUSE: Optional[bool] = None
EVAL_TOKENS = 1 << 20  # tokens (over all members) per slice of a validation forward pass


def reuse_freed_memory() -> bool:
    """On glibc (Linux), keep freed host memory in the heap for reuse. A CPU training step allocates
    its activations afresh; with glibc's defaults a large block is a fresh ``mmap`` whose pages fault
    in on first touch, which cost 2 to 15 ms of system time per step (about 10% of a step) at the
    benchmark's and the cpu profile's shapes. Process-wide, set once; returns whether it took."""
    global _REUSE
    if _REUSE is None:
        try:
            libc = ctypes.CDLL("libc.so.6")
            # M_MMAP_THRESHOLD (-3): blocks up to 32 MiB (glibc's ceiling) come from the heap;
            # M_TRIM_THRESHOLD (-1): give heap memory back to the kernel only above 1 GiB free
            _REUSE = bool(libc.mallopt(-3, 32 << 20)) and bool(libc.mallopt(-1, 1 << 30))
        except (OSError, AttributeError):  # not glibc: nothing to do
            _REUSE = False
    return _REUSE


def clip_per_member(params, max_norm: float, active: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Scale each member's gradient so its global norm is at most ``max_norm``; returns the norms.

    Non-finite gradient entries, and every gradient of a member with ``active == 0``, are zeroed
    first. All parameters go through one flat (M, P) copy, so a step costs a handful of kernels
    whatever the number of parameter tensors (on a GPU these models are bound by kernel launches)."""
    grads = [p.grad for p in params if p.grad is not None]
    M = grads[0].shape[0]
    flat = torch.cat([g.reshape(M, -1) for g in grads], dim=1)
    keep = torch.isfinite(flat)
    if active is not None:
        keep &= (active > 0)[:, None]
    flat = torch.where(keep, flat, torch.zeros((), dtype=flat.dtype, device=flat.device))
    norms = torch.linalg.vector_norm(flat, dim=1)
    flat = flat * torch.clamp(max_norm / (norms + 1e-12), max=1.0)[:, None]
    pieces = flat.split([g[0].numel() for g in grads], dim=1)
    torch._foreach_copy_(grads, [piece.view(g.shape) for piece, g in zip(pieces, grads)])
    return norms


class MemberTargets:
    """The target of each member of an ensemble: one for all, or a list of one per member (members
    may train on different targets, e.g. the D of Sec. 6.1). Grouped once into runs of consecutive
    equal targets, each evaluated once on the stack of its members."""

    def __init__(self, target, members: int):
        self.targets = list(target) if isinstance(target, (list, tuple)) else [target] * members
        if len(self.targets) != members:
            raise ValueError(f"target must be one target or one per member ({members}), got {len(self.targets)}")
        self.runs = equal_runs(self.targets)

    def __call__(self, X):
        if len(self.runs) == 1:
            return self.targets[0](X)
        return torch.cat([t(X[a:b]) for a, b, t in self.runs])


def draw(target, generators, n, T):
    """Each member's inputs from its own generator and its own target's sampler; the targets evaluated
    on the stack (``target``: a :class:`MemberTargets`, one target, or a list of one per member).
    Returns X (M, n, T, d) and y (M, n, out_dim)."""
    if not isinstance(target, MemberTargets):
        target = MemberTargets(target, len(generators))
    X = torch.stack([t.sample_inputs(g, n, T) for t, g in zip(target.targets, generators)])
    y = target(X)
    return X, (y if y.dim() == 3 else y[..., None])


def predict_in_chunks(model, X: torch.Tensor, tokens: int = EVAL_TOKENS) -> torch.Tensor:
    """``model(X)`` for X (M, n, T, d), in slices of the n sequences of about ``tokens`` tokens over all
    members, so that evaluating a large ensemble on a large validation set stays within memory."""
    M, n, T, _ = X.shape
    chunk = max(1, tokens // (M * (T + 1)))
    if chunk >= n:
        return model(X)
    return torch.cat([model(X[:, i : i + chunk]) for i in range(0, n, chunk)], dim=1)


class _Batches:
    """Per-member minibatches: fresh draws, or epochs over a fixed training set (per-member shuffles,
    drawn from generator states kept in ``epoch_states``, so a checkpoint stores those, not the order)."""

    def __init__(self, target, gens, cfg: TrainConfig, T: int):
        self.target, self.gens, self.cfg, self.T = target, gens, cfg, T
        self.perm, self.pos, self.epoch_states = None, None, None
        if cfg.n_train:
            self.X, self.y = draw(target, gens, cfg.n_train, T)
            self.pos = cfg.n_train

    def next(self, step: int = 0):
        cfg = self.cfg
        if not cfg.n_train:
            return draw(self.target, self.gens, cfg.batch, cfg.length_at(step, self.T))
        if self.pos + cfg.batch > cfg.n_train:
            self.epoch_states = [g.get_state() for g in self.gens]
            self.shuffle()
            self.pos = 0
        idx = self.perm[:, self.pos : self.pos + cfg.batch]
        self.pos += cfg.batch
        rows = torch.arange(len(self.gens), device=idx.device)[:, None]
        return self.X[rows, idx], self.y[rows, idx]

    def shuffle(self):
        self.perm = torch.stack([torch.randperm(self.cfg.n_train, generator=g, device=g.device) for g in self.gens])

    def state(self) -> dict:
        """Where the data stream is: the generators' states (bytes), and for a fixed set the position
        in the epoch under way and the states its order was drawn from."""
        return {"generators": [g.get_state() for g in self.gens], "epoch_states": self.epoch_states, "pos": self.pos}

    def restore(self, state: dict) -> None:
        """Back to ``state``: the epoch's order redrawn from its states, then the generators' states now."""
        if state["epoch_states"] is not None:
            self._set_states(state["epoch_states"])
            self.shuffle()
        self._set_states(state["generators"])
        self.epoch_states, self.pos = state["epoch_states"], state["pos"]

    def _set_states(self, states) -> None:
        for g, s in zip(self.gens, states):
            g.set_state(s)


CHECKPOINT_EVERY_S = 60.0  # DEFAULT: seconds between saves of a training's state


@dataclass(frozen=True)
class Checkpoint:
    """Where a training saves its state (at an evaluation step, once ``every_s`` seconds have passed
    since the last save; 0: at every evaluation) and what it belongs to: a state saved under another
    ``key`` is not used. Loaded with ``torch.load(weights_only=True)``: tensors, numbers, strings."""

    path: Path
    key: str
    every_s: float = CHECKPOINT_EVERY_S

    def __post_init__(self):
        nonnegative("checkpoint_every", self.every_s, "seconds")

    def save(self, state: dict) -> None:
        buf = io.BytesIO()
        torch.save({"format": 1, "key": self.key, **state}, buf)
        atomic_write(Path(self.path), buf.getvalue())

    def load(self) -> tuple[Optional[dict], Optional[str]]:
        """(state, None), or (None, why not) when there is a file that cannot be used; (None, None): none."""
        path = Path(self.path)
        if not path.exists():
            return None, None
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # truncated, corrupt, or not ours
            return None, f"checkpoint {path} is unreadable ({type(err).__name__})"
        if not isinstance(state, dict) or state.get("format") != 1 or state.get("key") != self.key:
            return None, f"checkpoint {path} belongs to another training"
        return state, None


def _segment(start: int, end: int, device, cuda_graph: bool, wall_s: float) -> dict:
    """Steps start..end trained by this process in ``wall_s`` seconds, with which code, torch, device,
    threads and CPU (plain strings), and whether as a CUDA graph."""
    prov = provenance(str(device))
    keys = ("code_sha256", "git_commit", "version", "torch", "device_name", "threads", "cpu", "cpu_capability", "date")
    return {
        "from_step": start,
        "to_step": end,
        "wall_time_s": round(wall_s, 3),
        **{k: None if prov[k] is None else str(prov[k]) for k in keys},
        "cuda_graph": cuda_graph,
    }


@dataclass
class _Progress:
    """What a training has found so far, per member, as device tensors read once at the end (no
    host-device sync inside the loop): whether its loss is still finite (``active``, updated in place by
    the step), the step of its first non-finite loss (-1: none), its best validation NMSE, the
    evaluation curve and the monitor's rows at each evaluation."""

    active: torch.Tensor
    first_bad: torch.Tensor
    best: torch.Tensor
    curve_steps: list = field(default_factory=list)
    curve_vals: list = field(default_factory=list)
    monitored: list = field(default_factory=list)

    @classmethod
    def fresh(cls, M: int, device) -> "_Progress":
        return cls(
            torch.ones(M, device=device),
            torch.full((M,), -1, dtype=torch.long, device=device),
            torch.full((M,), float("inf"), device=device),
        )

    @classmethod
    def restored(cls, state: dict, device) -> "_Progress":
        vals = state["curve_vals"]
        return cls(
            *(state[k].to(device) for k in ("active", "first_bad", "best")),
            curve_steps=list(state["curve_steps"]),
            curve_vals=[] if vals is None else list(vals.to(device)),
            monitored=[t.to(device) for t in state.get("monitored", [])],
        )

    def evaluated(self, step: int, val_nmse: torch.Tensor, monitored=None) -> None:
        """Record an evaluation after ``step`` steps (a non-finite NMSE counts as +inf)."""
        v = torch.where(torch.isfinite(val_nmse), val_nmse, torch.full_like(val_nmse, float("inf")))
        self.best = torch.minimum(self.best, v)
        self.curve_steps.append(step)
        self.curve_vals.append(v)
        if monitored is not None:
            self.monitored.append(monitored)

    def state(self) -> dict:
        """Host copies, for a checkpoint."""
        return {
            "active": self.active.cpu(),
            "first_bad": self.first_bad.cpu(),
            "best": self.best.cpu(),
            "curve_steps": list(self.curve_steps),
            "curve_vals": torch.stack(self.curve_vals).cpu() if self.curve_vals else None,
            "monitored": [t.cpu() for t in self.monitored],
        }

    def results(self, seeds, train_nmse, total: int, resumed: list, with_monitor: bool) -> list[dict]:
        """One dict per member: status, best and final NMSE, curve, error, and the earlier segments."""
        curve = list(zip(self.curve_steps, torch.stack(self.curve_vals).tolist()))  # the last step evaluates
        errors = [f"non-finite loss at step {s}" if s >= 0 else None for s in self.first_bad.tolist()]

        def finite(x):
            return float(x) if math.isfinite(float(x)) else None

        out = []
        for j, seed in enumerate(seeds):
            ok = errors[j] is None and bool(torch.isfinite(self.best[j]))
            out.append(
                {
                    "status": "done" if ok else "failed",
                    "seed": int(seed),
                    "best_val_nmse": float(self.best[j]) if ok else None,
                    "final_train_nmse": finite(train_nmse[j]) if ok else None,
                    "steps": total,
                    "curve": [(s, finite(vals[j])) for s, vals in curve],
                    "error": errors[j] or (None if ok else "diverged"),
                    "resumed": resumed,
                    **(
                        {"monitored": [(s, m[j].tolist()) for s, m in zip(self.curve_steps, self.monitored)]}
                        if with_monitor
                        else {}
                    ),
                }
            )
        return out


def _training_state(model, opt, batches, step: int, progress: _Progress, segments: list) -> dict:
    """Everything that determines the rest of a training, on the host (generator states as bytes)."""
    return {
        "step": step,
        "params": [t.detach().cpu() for t in model.parameters()],
        "m": [t.cpu() for t in opt.m],
        "v": [t.cpu() for t in opt.v],
        "t": opt.t,
        "batches": batches.state(),
        **progress.state(),
        "segments": segments,
    }


def _check_options(model, seeds, cfg: "TrainConfig", cuda_graph: bool, device) -> None:
    if len(seeds) != model.M:
        raise ValueError(f"seeds must give one seed per member ({model.M}), got {len(seeds)}")
    if cuda_graph and not _graphs_available(device):
        raise ValueError(f"cuda_graph needs a CUDA device; this model is on {device}")
    if cuda_graph and cfg.curriculum:
        raise ValueError("cuda_graph replays one batch shape; a curriculum changes it (train eagerly)")


def _resume(checkpoint, model, opt, batches, log) -> tuple:
    """(step, earlier segments, saved state or None) from ``checkpoint``; (0, [], None) when there is no
    usable state (a state that does not fit is reported and ignored)."""
    if checkpoint is None:
        return 0, [], None
    state, problem = checkpoint.load()
    if state is not None:
        problem = _restore(state, model, opt, batches)
        problem = problem and f"checkpoint {checkpoint.path}: {problem}"
    if problem:
        log(f"warning: {problem}; training from step 0")
        return 0, [], None
    if state is None:
        return 0, [], None
    return state["step"], state["segments"], state


def _save(checkpoint, state: dict, step: int, log) -> None:
    """Save a checkpoint; a failed write (a full disk, say) is reported and training goes on."""
    try:
        checkpoint.save(state)
    except OSError as err:
        log(f"warning: checkpoint {checkpoint.path} not saved at step {step} ({err.strerror or err}); training goes on")


def _restore(state: dict, model, opt, batches) -> Optional[str]:
    """Put a saved state back (parameters, optimizer moments, generators, data order); returns why
    it does not fit this training, or None."""
    params = list(model.parameters())
    if [tuple(p.shape) for p in state["params"]] != [tuple(p.shape) for p in params]:  # M is the leading dim
        return "its parameter shapes differ from this model's"
    with torch.no_grad():
        for dst, src in zip(params + opt.m + opt.v, state["params"] + state["m"] + state["v"]):
            dst.copy_(src)
    opt.t = state["t"]
    batches.restore(state["batches"])
    return None


def _graphs_available(device: torch.device) -> bool:
    return device.type == "cuda"


class _TrainStep:
    """One training step of every member, reading only device tensors: the batch, the step number and
    the learning rates sit in fixed buffers that the host fills before each step, and the members'
    ``active`` flags and first non-finite steps are updated in place. So on CUDA the whole step
    (forward, loss, backward, clipping, AdamW) can be captured once as a CUDA graph and replayed: one
    launch instead of a few hundred, the same kernels on the same memory, so the same numbers.
    Eagerly, ``run`` is the same code called directly."""

    WARMUP = 3  # eager steps before the capture, on a side stream (as PyTorch advises for CUDA graphs)

    def __init__(self, model, opt, cfg: TrainConfig, base_lr, active, first_bad, cuda_graph: bool):
        device = base_lr.device
        self.model, self.opt, self.cfg, self.base_lr = model, opt, cfg, base_lr
        self.params = list(model.parameters())
        self.active, self.first_bad = active, first_bad
        self.step = torch.zeros((), dtype=torch.long, device=device)
        self.lr = torch.zeros_like(base_lr)
        self.X = self.y = self.pred = None
        self.graph, self.to_warm = None, self.WARMUP if cuda_graph else 0
        self.side = torch.cuda.Stream(device) if cuda_graph else None

    def __call__(self, step: int, X: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Train step ``step`` on the batch (X, y); returns the members' predictions on it."""
        cfg = self.cfg
        scale = lr_at(step, cfg) / cfg.lr if step < cfg.steps else cfg.tail_lr / cfg.lr
        if self.graph is None and not self.to_warm and self.side is not None:
            self._capture(X, y)
        if self.graph is None:
            self.X, self.y = X, y
        else:
            self.X.copy_(X)
            self.y.copy_(y)
        self.step.fill_(step)
        torch.mul(self.base_lr, scale, out=self.lr)
        self.opt.advance()
        if self.graph is not None:
            self.graph.replay()
        elif self.side is not None:  # a warm-up step
            self.side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(self.side):
                self.run()
            torch.cuda.current_stream().wait_stream(self.side)
            self.to_warm -= 1
        else:
            self.run()
        return self.pred

    def run(self) -> None:
        """The step itself: no host value read, no host-device synchronisation."""
        pred = self.model(self.X)
        per_member = ((pred - self.y) ** 2).flatten(1).mean(1)
        bad = ~torch.isfinite(per_member) & (self.active > 0)
        self.first_bad.copy_(torch.where(bad, self.step, self.first_bad))
        self.active.masked_fill_(bad, 0.0)
        self.model.zero_grad(set_to_none=True)
        torch.where(self.active > 0, per_member, torch.zeros_like(per_member)).sum().backward()
        with torch.no_grad():
            clip_per_member(self.params, self.cfg.grad_clip, self.active)  # zeroes frozen members too
            self.opt.update(self.lr, self.active)
        self.pred = pred.detach()

    def _capture(self, X, y) -> None:
        self.X, self.y = X.clone(), y.clone()  # the graph's input buffers
        graph = torch.cuda.CUDAGraph()
        # on the warm-up's stream: what the library set up lazily for that stream (BLAS handles and
        # workspaces) is there already, and nothing of the kind runs inside the capture
        with torch.cuda.graph(graph, stream=self.side):
            self.run()
        self.graph = graph


def train_ensemble(
    model,
    target,
    seeds: Sequence[int],
    cfg: TrainConfig,
    lrs: Optional[Sequence[float]] = None,
    progress: bool = False,
    checkpoint: Optional[Checkpoint] = None,
    log: Callable = print,
    cuda_graph: bool = False,
    monitor: Optional[Callable] = None,
) -> list[dict]:
    """Train every member of ``model`` on ``target`` (member j uses ``seeds[j]``; ``target`` may be a
    list of one target per member). Returns one dict per member: status, best_val_nmse,
    final_train_nmse, steps, curve [(step, val_nmse)], error, and ``resumed``: the parts of the
    training done by earlier processes (steps and provenance), when it resumed from ``checkpoint``.
    ``cuda_graph``: after a few eager steps, capture the training step as a CUDA graph and replay it
    (a CUDA device only; the same computation, far fewer kernel launches). ``monitor(model)``, if
    given, is called at every evaluation and returns a tensor with one row per member (a probe of
    the model as it trains); each member's rows come back as ``monitored`` [(step, row as lists)]."""
    M, T = model.M, model.cfg.T
    device = next(model.parameters()).device
    _check_options(model, seeds, cfg, cuda_graph, device)
    if device.type == "cpu":
        reuse_freed_memory()
    target = MemberTargets(target, M)  # grouped once, not at every step's draw
    gens = [torch.Generator(device=device).manual_seed(int(s)) for s in seeds]
    val_gens = [torch.Generator(device=device).manual_seed(10_000_019 + int(s)) for s in seeds]
    Xv, yv = draw(target, val_gens, cfg.n_val, T)
    batches = _Batches(target, gens, cfg, T)
    base_lr = torch.tensor([cfg.lr] * M if lrs is None else list(lrs), device=device)
    opt = AdamWEnsemble(list(model.parameters()), betas=(0.9, cfg.beta2), weight_decay=cfg.weight_decay)
    start, resumed, state = _resume(checkpoint, model, opt, batches, log)
    so_far = _Progress.restored(state, device) if state is not None else _Progress.fresh(M, device)
    total = cfg.steps + cfg.tail_steps
    train_nmse = torch.full((M,), float("nan"), device=device)
    began = saved_at = time.monotonic()
    train_step = _TrainStep(model, opt, cfg, base_lr, so_far.active, so_far.first_bad, cuda_graph)
    for step in tqdm(range(start, total), initial=start, total=total, disable=not progress, desc="train", leave=False):
        X, y = batches.next(step)
        pred = train_step(step, X, y)
        done = step + 1
        with torch.no_grad():
            if done == total:
                train_nmse = nmse(pred, y)
            if done % cfg.eval_every == 0 or done == total:
                so_far.evaluated(done, nmse(predict_in_chunks(model, Xv), yv), monitor(model) if monitor else None)
                if checkpoint is not None and done < total and time.monotonic() - saved_at >= checkpoint.every_s:
                    segments = resumed + [_segment(start, done, device, cuda_graph, time.monotonic() - began)]
                    _save(checkpoint, _training_state(model, opt, batches, done, so_far, segments), done, log)
                    saved_at = time.monotonic()
    return so_far.results(seeds, train_nmse, total, resumed, monitor is not None)


def train_autoencoders(
    n: int, m: int, width: int, seeds: Sequence[int], cfg: TrainConfig, device: str = "cpu"
) -> tuple[list[dict], dict]:
    """Thm 3(b), trained: a two-layer tanh encoder ℝ^n → ℝ^m and decoder ℝ^m → ℝ^n (hidden width
    ``width``) trained together on fresh x ~ U[0,1]^n (MSE, AdamW, cosine schedule, gradients clipped
    per member), one member per seed in one ensemble. Returns one result per seed in the form of
    :func:`train_ensemble`'s (NMSE: the held-out MSE over the variance of x, evaluated every
    ``cfg.eval_every`` steps; ``measurements["rms"]``: the held-out RMS error at the end) and the
    parameter counts of one member."""
    M = len(seeds)
    gens = [torch.Generator().manual_seed(int(s)) for s in seeds]

    def param(shape, fan_in):
        init = torch.stack([torch.randn(*shape, generator=g) for g in gens]) / math.sqrt(fan_in)
        return torch.nn.Parameter(init.to(device))

    shapes = [((n, width), n), ((width,), 1), ((width, m), width), ((m,), 1)]  # encoder
    shapes += [((m, width), m), ((width,), 1), ((width, n), width), ((n,), 1)]  # decoder
    P = [param(s, f) for s, f in shapes]

    def forward(x):
        h = torch.tanh(torch.einsum("mbi,mio->mbo", x, P[0]) + P[1][:, None])
        z = torch.einsum("mbi,mio->mbo", h, P[2]) + P[3][:, None]
        h = torch.tanh(torch.einsum("mbi,mio->mbo", z, P[4]) + P[5][:, None])
        return torch.einsum("mbi,mio->mbo", h, P[6]) + P[7][:, None]

    opt = AdamWEnsemble(P, betas=(0.9, cfg.beta2), weight_decay=cfg.weight_decay)
    data = [torch.Generator(device=device).manual_seed(int(s) + 1) for s in seeds]
    xv = torch.rand(M, cfg.n_val, n, generator=torch.Generator(device=device).manual_seed(12345), device=device)
    curve, train_nmse = [], [None] * M
    for step in range(cfg.steps):
        x = torch.stack([torch.rand(cfg.batch, n, generator=g, device=device) for g in data])
        for p in P:
            p.grad = None
        loss = nmse(forward(x), x)
        loss.sum().backward()
        clip_per_member(P, cfg.grad_clip)
        opt.step(torch.full((M,), lr_at(step, cfg), device=device))
        if (step + 1) % cfg.eval_every == 0 or step + 1 == cfg.steps:
            with torch.no_grad():
                curve.append((step + 1, nmse(forward(xv), xv).tolist()))
            train_nmse = loss.detach().tolist()
    with torch.no_grad():
        rms = ((forward(xv) - xv) ** 2).mean((1, 2)).sqrt().tolist()
    out = []
    for j, seed in enumerate(seeds):
        vals = [v[j] for _, v in curve]
        ok = all(math.isfinite(v) for v in vals) and math.isfinite(rms[j])
        out.append(
            {
                "status": "done" if ok else "failed",
                "seed": int(seed),
                "best_val_nmse": min(vals) if ok else None,
                "final_train_nmse": train_nmse[j] if ok else None,
                "steps": cfg.steps,
                "curve": [(s, v[j] if math.isfinite(v[j]) else None) for s, v in curve],
                "error": None if ok else "non-finite loss",
                "resumed": [],
                "measurements": {"rms": rms[j] if ok else None},
            }
        )
    return out, {"encoder": sum(p[0].numel() for p in P[:4]), "decoder": sum(p[0].numel() for p in P[4:])}
