"""The paper's targets (appendix: targets): pure functions of a batch of sequences, and their samplers.

Every target maps ``X`` of shape ``(..., T, d)`` to ``y`` of shape ``(...,)`` (or ``(..., out_dim)``)
and works on numpy arrays and torch tensors alike (``infoflow.backend``). Samplers take a numpy
``Generator`` or a ``torch.Generator`` and draw on the generator's device, deterministically per seed.
Positions are 1-based in the paper; arrays here are 0-based (token ``x_t`` is ``X[..., t-1, :]``).

Labels follow the book's appendix (Restoring the paper): the formula of each target is
RECONSTRUCTED, THIRD-PARTY or PRIOR as stated in its docstring; constants marked DEFAULT are our choice.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from .backend import array_namespace, as_array, normal, uniform
from .checks import enter, positive_int

__all__ = [
    "Target",
    "VectorTarget",
    "DepthSeparation",
    "KthLargest",
    "DRetrieval",
    "IntrinsicDimension",
    "TriangleCenter",
    "PairCenter",
    "SingleCenter",
    "FirstThreeSum",
    "UnitCube",
    "TARGETS",
    "make_target",
    "register_target",
]


def _pair_scores(xp, X, A):
    """``S[..., i, s, t] = x_s^T A_i x_t`` for ``A`` of shape ``(D, d, d)``."""
    XA = xp.matmul(X[..., None, :, :], A)  # (..., D, T, d)
    return xp.matmul(XA, xp.matrix_transpose(X)[..., None, :, :])  # (..., D, T, T)


def _in_chunks(xp, X, per_sequence, chunk: int):
    """``per_sequence`` applied to batch chunks of ``chunk`` sequences of ``X`` (..., T, d), each giving
    one number per sequence; the results in ``X``'s batch shape. Keeps a target whose intermediate is
    T² or T³ numbers per sequence within memory on the paper's training sets (300k sequences at T = 64)."""
    batch_shape = X.shape[:-2]
    Xf = xp.reshape(X, (-1,) + tuple(X.shape[-2:]))
    out = [per_sequence(Xf[start : start + chunk]) for start in range(0, Xf.shape[0], chunk)]
    return xp.reshape(xp.concat(out), batch_shape)


def _pair_sq_norms(xp, X):
    """Gram matrix G and ``P[..., a, b] = ‖x_a + x_b‖² = G_aa + G_bb + 2 G_ab``."""
    G = xp.matmul(X, xp.matrix_transpose(X))
    diag = xp.linalg.diagonal(G)
    return G, diag, diag[..., :, None] + diag[..., None, :] + 2 * G


@dataclass(frozen=True)
class Target:
    """A target F: R^{T×d} → R^{out_dim}. Subclasses set ``name``, ``d`` and implement ``__call__``."""

    name: ClassVar[str] = "target"
    label: ClassVar[str] = ""  # label of the formula (book appendix)
    d: int = 1
    out_dim: ClassVar[int] = 1

    def __call__(self, X):  # pragma: no cover - abstract
        raise NotImplementedError

    @classmethod
    def comparison_profile(cls):
        """Step 1 of the engine (Sec. 5.3): the target's Trees of Comparison and Number of Comparison
        bounds, a :class:`~infoflow.comparison.ComparisonProfile`; None when the engine cannot predict
        for this target. A target of your own overrides this method; the built-in targets' profiles
        are in ``comparison.PROFILES``, which the engine reads when a class does not override it
        (:func:`infoflow.comparison.profile_of`), so this module imports nothing of the engine."""
        return None

    def constructions(self, heads, pe: bool = False) -> list:
        """Step 2 of the engine: explicit InfoFlow models (:class:`~infoflow.predict.Construction`) of
        this target on an architecture with ``heads`` per layer, best first. ``predict`` appends the
        global-aggregation readout, which learns every target. A target of your own overrides this
        method; the built-in targets' constructions are in ``predict.BUILTIN_CONSTRUCTIONS``, which
        the engine reads when a class does not override it."""
        return []

    def sample_inputs(self, rng, n: int, T: int):
        """``n`` i.i.d. input sequences of length ``T``: N(0, I_d) tokens unless a subclass says otherwise."""
        return normal(rng, (n, T, self.d))

    def constant(self, name: str, like):
        """The numpy array attribute ``name`` (a fixed random matrix) as an array like ``like``,
        converted once per kind, device and dtype: a training step then copies nothing from the
        host (on a GPU, a copy from pageable host memory waits for all queued work)."""
        cache = self.__dict__.setdefault("_constants", {})  # frozen dataclass: not a field
        key = (name, type(like).__module__, str(getattr(like, "device", "cpu")), str(like.dtype))
        if key not in cache:
            cache[key] = as_array(getattr(self, name), like)
        return cache[key]

    def sample(self, rng, n: int, T: int):
        X = self.sample_inputs(rng, n, T)
        return X, self(X)

    def describe(self) -> str:
        return f"{self.name} (d={self.d})"


@dataclass(frozen=True)
class DepthSeparation(Target):
    """Thm 1 / eq. 8: F(X) = min_{s,t} x_s^T x_t, tokens on the unit circle S^{d-1}.

    RECONSTRUCTED (appendix: targets). DEFAULT d = 2.
    """

    name: ClassVar[str] = "depth-separation"
    label: ClassVar[str] = "RECONSTRUCTED"
    d: int = 2

    def __call__(self, X):
        xp = array_namespace(X)
        G = xp.matmul(X, xp.matrix_transpose(X))
        return xp.min(xp.min(G, axis=-1), axis=-1)

    def sample_inputs(self, rng, n, T):
        X = normal(rng, (n, T, self.d))
        xp = array_namespace(X)
        return X / xp.linalg.vector_norm(X, axis=-1, keepdims=True)


@dataclass(frozen=True)
class KthLargest(Target):
    """Thm 2: d = 1, x_t ~ U[0, 1], F_k(X) = k-th largest of x_1..x_T. FOUND in prose (App. A.2)."""

    name: ClassVar[str] = "kth-largest"
    label: ClassVar[str] = "FOUND"
    d: int = 1
    k: int = 1

    def __call__(self, X):
        xp = array_namespace(X)
        v = xp.sort(X[..., 0], axis=-1)
        return v[..., v.shape[-1] - self.k]

    def sample_inputs(self, rng, n, T):
        if self.k > T:
            raise ValueError(f"k must be in 1..T (T={T}), got k={self.k}")
        return uniform(rng, (n, T, 1))


@dataclass(frozen=True)
class DRetrieval(Target):
    """Generalized D-retrieval, trained instance of Yu et al. 2026 §6.1 (PRIOR):
    F(X) = Σ_{i=1}^{D} max_t a_i^T x_t, x_t ~ N(0, I_d), a_i fixed (DEFAULT: N(0, I_d/d) from ``seed``).
    """

    name: ClassVar[str] = "d-retrieval"
    label: ClassVar[str] = "PRIOR"
    d: int = 4
    D: int = 4
    seed: int = 0

    @property
    def a(self) -> np.ndarray:
        return np.random.default_rng([self.seed, 1]).standard_normal((self.D, self.d)) / np.sqrt(self.d)

    def __call__(self, X):
        xp = array_namespace(X)
        proj = xp.matmul(X, xp.matrix_transpose(self.constant("a", X)))  # (..., T, D)
        return xp.sum(xp.max(proj, axis=-2), axis=-1)


@dataclass(frozen=True)
class IntrinsicDimension(Target):
    """Eq. 6 / 58: F(X) = Σ_{i=1}^{D} max_{s,t} x_s^T A_i x_t, x_t ~ N(0, I_d), d = 4.

    THIRD-PARTY formula and input law; A_i entries N(0, 1/d) drawn from ``seed`` (DEFAULT).
    """

    name: ClassVar[str] = "intrinsic-dimension"
    label: ClassVar[str] = "THIRD-PARTY"
    d: int = 4
    D: int = 2
    seed: int = 0
    chunk: int = 4096

    @property
    def A(self) -> np.ndarray:
        return np.random.default_rng([self.seed, 2]).standard_normal((self.D, self.d, self.d)) / np.sqrt(self.d)

    def __call__(self, X):
        xp = array_namespace(X)
        A = self.constant("A", X)

        def per_sequence(Xc):
            S = _pair_scores(xp, Xc, A)  # (n, D, T, T)
            return xp.sum(xp.max(xp.max(S, axis=-1), axis=-1), axis=-1)

        return _in_chunks(xp, X, per_sequence, self.chunk)


@dataclass(frozen=True)
class TriangleCenter(Target):
    """Eq. 7 / 59: F(X) = min_{t1,t2,t3} ‖x_t1 + x_t2 + x_t3‖ (repetition allowed), d = 2,
    x_t ~ N(0, 2 I_2) with the norm clamped to [0.2, 4]. THIRD-PARTY.

    Computed from the Gram matrix G: ‖x_a+x_b+x_c‖² = G_aa+G_bb+G_cc+2(G_ab+G_ac+G_bc), in batch chunks
    of ``chunk`` sequences so memory stays at about chunk·T³ numbers (no Python loop over triples).
    """

    name: ClassVar[str] = "triangle-center"
    label: ClassVar[str] = "THIRD-PARTY"
    d: int = 2
    chunk: int = 256
    clamp: tuple = (0.2, 4.0)  # the input law's norm bounds; (0, inf): no clamp (a lever of the T = 8 study)

    def __post_init__(self):
        try:
            lo, hi = (float(v) for v in self.clamp)
        except (TypeError, ValueError):
            raise ValueError(f"clamp must be [low, high], two numbers; got {self.clamp!r}") from None
        if not 0 <= lo < hi < float("inf"):
            raise ValueError(f"clamp must be [low, high] with 0 <= low < high < inf, got {[lo, hi]}")
        object.__setattr__(self, "clamp", (lo, hi))

    def __call__(self, X):
        xp = array_namespace(X)

        def per_sequence(Xc):
            G, diag, pair = _pair_sq_norms(xp, Xc)  # (n,T,T), (n,T), |x_a + x_b|^2
            sq = (
                pair[:, :, :, None] + diag[:, None, None, :] + 2 * (G[:, :, None, :] + G[:, None, :, :])
            )  # (n, T, T, T)
            m = xp.min(xp.reshape(sq, (sq.shape[0], -1)), axis=-1)
            return xp.sqrt(xp.clip(m, min=0.0))

        return _in_chunks(xp, X, per_sequence, self.chunk)

    def sample_inputs(self, rng, n, T):
        X = normal(rng, (n, T, self.d)) * np.sqrt(2.0)
        xp = array_namespace(X)
        r = xp.linalg.vector_norm(X, axis=-1, keepdims=True)
        lo, hi = (float(v) for v in getattr(self, "clamp", (0.2, 4.0)))
        return X * (xp.clip(r, min=lo, max=hi) / r)


@dataclass(frozen=True)
class PairCenter(Target):
    """Ours (beyond the paper): F(X) = min_{s,t} ‖x_s + x_t‖ (repetition allowed), the pairwise
    analogue of eq. 7 (Order of Comparison 2); same input law as triangle-center."""

    name: ClassVar[str] = "pair-center"
    label: ClassVar[str] = "DEFAULT"
    d: int = 2

    def __call__(self, X):
        xp = array_namespace(X)
        _, _, sq = _pair_sq_norms(xp, X)
        return xp.sqrt(xp.clip(xp.min(xp.min(sq, axis=-1), axis=-1), min=0.0))

    sample_inputs = TriangleCenter.sample_inputs


@dataclass(frozen=True)
class SingleCenter(Target):
    """Ours (beyond the paper): F(X) = min_t ‖x_t‖, Order of Comparison 1, with the input law of
    triangle-center: the order-1 member of the comparison-order control (Sec. 6.2's explanation)."""

    name: ClassVar[str] = "single-center"
    label: ClassVar[str] = "DEFAULT"
    d: int = 2

    def __call__(self, X):
        xp = array_namespace(X)
        return xp.min(xp.linalg.vector_norm(X, axis=-1), axis=-1)

    sample_inputs = TriangleCenter.sample_inputs


@dataclass(frozen=True)
class VectorTarget(Target):
    """A target whose value is a vector in R^d (the token dimension): ``out_dim`` is ``d``."""

    @property
    def out_dim(self) -> int:  # type: ignore[override]
        return self.d


@dataclass(frozen=True)
class FirstThreeSum(VectorTarget):
    """Eq. 57: F(X) = x_1 + x_2 + x_3 (a vector in R^d), T = 10, x_t ~ N(0, I_2).
    FOUND in prose; T, d and law THIRD-PARTY. Needs positional encoding to be learned (App. C.3).
    """

    name: ClassVar[str] = "first-three-sum"
    label: ClassVar[str] = "FOUND"
    d: int = 2

    def __call__(self, X):
        if X.shape[-2] < 3:
            raise ValueError(f"first-three-sum needs T >= 3, got T={X.shape[-2]}")
        return X[..., 0, :] + X[..., 1, :] + X[..., 2, :]


@dataclass(frozen=True)
class UnitCube(VectorTarget):
    """Thm 3(b)'s reconstruction task (ours, DEFAULT): one token x ~ U[0,1]^d (a sequence of length
    T = 1) and F(X) = x itself, to be passed through a bottleneck of m numbers (the ``encoding-cost``
    experiment's encoder/decoder pairs)."""

    name: ClassVar[str] = "unit-cube"
    label: ClassVar[str] = "DEFAULT"
    d: int = 1

    def __call__(self, X):
        return X[..., 0, :]

    def sample_inputs(self, rng, n, T):
        return uniform(rng, (n, T, self.d))


TARGETS: dict[str, type[Target]] = {}  # the one registry of targets: training, the engine and the CLI read it


def register_target(cls: type[Target]) -> type[Target]:
    """Register a target class under its ``name`` (use as a class decorator). Everything reads the
    registry: ``make_target``, the experiments, ``predict`` (through the class's ``comparison_profile``
    and ``constructions``) and the CLI. A name taken by another class is refused (the same class
    defined again, as when a notebook cell reruns, replaces it)."""
    if not (isinstance(cls, type) and issubclass(cls, Target)):
        raise TypeError(f"register_target takes a Target subclass, got {cls!r}")
    if "__dataclass_fields__" not in cls.__dict__:
        raise TypeError(f"{cls.__name__} must be a dataclass (decorate it with @dataclass(frozen=True))")
    enter(TARGETS, "target", cls.__dict__.get("name"), cls)
    return cls


for _cls in (
    DepthSeparation,
    KthLargest,
    DRetrieval,
    IntrinsicDimension,
    TriangleCenter,
    PairCenter,
    SingleCenter,
    FirstThreeSum,
    UnitCube,
):
    register_target(_cls)


def make_target(name: str, **params) -> Target:
    """Build a target by name with a clear error for unknown names or parameters."""
    if name not in TARGETS:
        raise ValueError(f"unknown target {name!r}; allowed: {', '.join(sorted(TARGETS))}")
    cls = TARGETS[name]
    allowed = set(cls.__dataclass_fields__) - {"chunk"}
    bad = set(params) - allowed
    if bad:
        raise ValueError(f"target {name!r} has no parameter {sorted(bad)[0]!r}; allowed: {', '.join(sorted(allowed))}")
    for key, value in params.items():
        if key in ("d", "D", "k"):
            positive_int(key, value)
    return cls(**params)
