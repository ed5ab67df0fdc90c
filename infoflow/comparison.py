"""Trees of Comparison and Number of Comparison (Sec. 5.3, Definitions 1–2, App. B, D; appendix: the InfoFlow model).

* :class:`TreeOfComparison`: a full binary tree whose leaves carry ordered index sets (repetition
  allowed) and whose internal nodes keep one child's index set, chosen by a function of X.
* :class:`ComparisonProfile`: Dimension / Order of Comparison and the NoC bounds of a target, as
  polynomials in T (``numpy.polynomial.Polynomial``), so that step 1 can compare leading orders.
* :func:`model_noc_poly` / :func:`model_noc`: eq. 5 for an architecture using max-position updates.

All bounds are RECONSTRUCTED (appendix: the InfoFlow model) unless said otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import product
from typing import Callable, Optional, Sequence

import numpy as np
from numpy.polynomial import Polynomial as P

from .targets import TARGETS, Target

__all__ = [
    "TreeOfComparison",
    "ComparisonProfile",
    "PROFILES",
    "comparison_profile",
    "profile_of",
    "set_size_bounds",
    "model_noc_poly",
    "model_noc",
    "asymptotically_at_least",
    "leading_term",
    "prop2_min_set_size",
]


@dataclass(frozen=True)
class TreeOfComparison:
    """Definition 1. A leaf has ``indices`` (an ordered tuple, repetition allowed); an internal node
    has two children and ``choose(X, left, right) -> left or right`` (the index set it keeps)."""

    indices: Optional[tuple] = None
    left: Optional["TreeOfComparison"] = None
    right: Optional["TreeOfComparison"] = None
    choose: Optional[Callable] = None

    @classmethod
    def from_leaves(cls, leaves: Sequence[tuple], key: Callable, mode: str = "min") -> "TreeOfComparison":
        """A balanced tree over ``leaves`` keeping, at every node, the child whose ``key(X, I)`` is
        smaller (``mode="min"``) or larger (``"max"``)."""
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
        if not leaves:
            raise ValueError("leaves: a tree needs at least one leaf")
        sign = 1.0 if mode == "min" else -1.0

        def choose(X, a, b):
            return a if sign * key(X, a) <= sign * key(X, b) else b

        nodes = [cls(indices=tuple(leaf)) for leaf in leaves]
        while len(nodes) > 1:
            paired = [cls(left=nodes[i], right=nodes[i + 1], choose=choose) for i in range(0, len(nodes) - 1, 2)]
            nodes = paired + ([nodes[-1]] if len(nodes) % 2 else [])
        return nodes[0]

    @property
    def is_leaf(self) -> bool:
        return self.indices is not None

    @property
    def size(self) -> int:
        """Number of leaves."""
        return 1 if self.is_leaf else self.left.size + self.right.size

    @property
    def comparisons(self) -> int:
        """A tree with k leaves performs k − 1 comparisons."""
        return self.size - 1

    @property
    def dimension(self) -> int:
        """Largest leaf index set."""
        return len(self.indices) if self.is_leaf else max(self.left.dimension, self.right.dimension)

    def evaluate(self, X) -> tuple:
        """The index set at the root for input X (1-based positions)."""
        if self.is_leaf:
            return self.indices
        return self.choose(X, self.left.evaluate(X), self.right.evaluate(X))


@dataclass(frozen=True)
class ComparisonProfile:
    """Dimension d_c, Order d_o and Number of Comparison bounds of a target (polynomials in T)."""

    target: str
    dimension: int
    order: int
    noc_lower: Callable[[dict], P]
    noc_upper: Callable[[dict], P]
    trees: Optional[Callable] = None  # (T, params) -> list of trees attaining the upper bound
    source: str = ""

    def lower(self, T: int, **params) -> int:
        return int(round(self.noc_lower(params)(T)))

    def upper(self, T: int, **params) -> int:
        return int(round(self.noc_upper(params)(T)))


def _d_retrieval_trees(T, params, target):
    a = target.a
    return [
        TreeOfComparison.from_leaves(
            [(t,) for t in range(1, T + 1)], key=lambda X, I, ai=ai: float(X[I[0] - 1] @ ai), mode="max"
        )
        for ai in a
    ]


def _intrinsic_trees(T, params, target):
    pairs = list(product(range(1, T + 1), repeat=2))
    return [
        TreeOfComparison.from_leaves(pairs, key=lambda X, I, A=A: float(X[I[0] - 1] @ A @ X[I[1] - 1]), mode="max")
        for A in target.A
    ]


def _depth_trees(T, params, target):
    pairs = [(s, t) for s in range(1, T + 1) for t in range(s + 1, T + 1)]
    return [TreeOfComparison.from_leaves(pairs, key=lambda X, I: float(X[I[0] - 1] @ X[I[1] - 1]), mode="min")]


def _triangle_trees(T, params, target):
    triples = [(a, b, c) for a in range(1, T + 1) for b in range(a, T + 1) for c in range(b, T + 1)]
    return [
        TreeOfComparison.from_leaves(
            triples, key=lambda X, I: float(np.linalg.norm(X[I[0] - 1] + X[I[1] - 1] + X[I[2] - 1])), mode="min"
        )
    ]


PROFILES: dict[str, ComparisonProfile] = {
    "d-retrieval": ComparisonProfile(
        "d-retrieval",
        1,
        1,
        noc_lower=lambda p: p.get("D", 4) * P([-1, 1]),
        noc_upper=lambda p: p.get("D", 4) * P([-1, 1]),
        trees=_d_retrieval_trees,
        source="App. D.1: D trees of T singleton leaves; lower bound D(T−1)",
    ),
    "intrinsic-dimension": ComparisonProfile(
        "intrinsic-dimension",
        2,
        2,
        noc_lower=lambda p: p.get("D", 2) * P([-1, 0, 1]),
        noc_upper=lambda p: p.get("D", 2) * P([-1, 0, 1]),
        trees=_intrinsic_trees,
        source="Prop. 1, App. B.1: D trees over the T² ordered pairs; every pair must be a leaf",
    ),
    "triangle-center": ComparisonProfile(
        "triangle-center",
        3,
        3,
        noc_lower=lambda p: P([0, 2, -3, 1]) / 6 - 1,
        noc_upper=lambda p: P([-1, 0, 0, 1]),
        trees=_triangle_trees,
        source="App. D.1: one tree over the T³ ordered triples; lower bound C(T,3) − 1",
    ),
    "depth-separation": ComparisonProfile(
        "depth-separation",
        2,
        2,
        noc_lower=lambda p: P([0, -1, 1]) / 2 - 1,
        noc_upper=lambda p: P([0, -1, 1]) / 2 - 1,
        trees=_depth_trees,
        source="ours, by the argument of App. D.1: one tree over the C(T,2) unordered pairs of distinct tokens",
    ),
    "single-center": ComparisonProfile(
        "single-center",
        1,
        1,
        noc_lower=lambda p: P([-1, 1]),
        noc_upper=lambda p: P([-1, 1]),
        trees=lambda T, params, target: [
            TreeOfComparison.from_leaves(
                [(t,) for t in range(1, T + 1)], key=lambda X, I: float(np.linalg.norm(X[I[0] - 1])), mode="min"
            )
        ],
        source="ours: one tree of T singleton leaves, min ‖x_t‖; T − 1 comparisons",
    ),
    "pair-center": ComparisonProfile(
        "pair-center",
        2,
        2,
        noc_lower=lambda p: P([0, 1, 1]) / 2 - 1,
        noc_upper=lambda p: P([0, 1, 1]) / 2 - 1,
        trees=lambda T, params, target: [
            TreeOfComparison.from_leaves(
                [(s, t) for s in range(1, T + 1) for t in range(s, T + 1)],
                key=lambda X, I: float(np.linalg.norm(X[I[0] - 1] + X[I[1] - 1])),
                mode="min",
            )
        ],
        source="ours (beyond the paper): one tree over the T(T+1)/2 unordered pairs with repetition",
    ),
    "first-three-sum": ComparisonProfile(
        "first-three-sum",
        1,
        1,
        noc_lower=lambda p: P([0]),
        noc_upper=lambda p: P([0]),
        source="ours: the active set {1,2,3} is fixed, no comparison is needed",
    ),
}


def profile_of(cls) -> Optional[ComparisonProfile]:
    """A target class's comparison profile: its own ``comparison_profile()`` where it overrides it,
    else the built-in one in :data:`PROFILES` (None: the engine cannot predict for it)."""
    own = cls.comparison_profile.__func__ is not Target.comparison_profile.__func__
    return cls.comparison_profile() if own else PROFILES.get(cls.name)


def comparison_profile(name: str) -> ComparisonProfile:
    """The comparison profile of the registered target ``name`` (:func:`profile_of` its class)."""
    profile = profile_of(TARGETS[name]) if name in TARGETS else None
    if profile is None:
        allowed = sorted(n for n, cls in TARGETS.items() if profile_of(cls) is not None)
        raise ValueError(f"no comparison profile for target {name!r}; allowed: {', '.join(allowed)}")
    return profile


def set_size_bounds(heads: Sequence[int]) -> tuple[list[int], list[int]]:
    """Largest information sets under max-position updates, independent of T (for T large):
    a token's set grows by a factor (1 + h_l) per layer, M_l = Π_{k≤l}(1 + h_k); the CLS starts
    empty, C_l = C_{l−1} + h_l·M_{l−1}. Returns (M_1..M_L, C_1..C_L)."""
    M, C = [1], [0]
    for h in heads:
        C.append(C[-1] + h * M[-1])
        M.append(M[-1] * (1 + h))
    return M[1:], C[1:]


def model_noc_poly(heads: Sequence[int], d_c: int) -> P:
    """Eq. 5 (RECONSTRUCTED), as a polynomial in T valid once T exceeds the set-size bounds:
    NoC = Σ_l Σ_{t∈U_l} (h_l·T + |I_t^(l)|^{d_c}), U_l = all T+1 positions for l < L, {CLS} for l = L."""
    M, C = set_size_bounds(heads)
    L = len(heads)
    total = P([0])
    for l, h in enumerate(heads):
        if l < L - 1:
            total = total + P([0, 1]) * P([1, 1]) * h + P([0, 1]) * M[l] ** d_c + C[l] ** d_c
        else:
            total = total + P([0, h]) + C[l] ** d_c
    return total


def model_noc(heads: Sequence[int], d_c: int, T: int) -> int:
    """Eq. 5 at a given T, with every set size capped at T."""
    M, C = set_size_bounds(heads)
    L = len(heads)
    total = 0
    for l, h in enumerate(heads):
        if l < L - 1:
            total += (T + 1) * h * T + T * min(M[l], T) ** d_c + min(C[l], T) ** d_c
        else:
            total += h * T + min(C[l], T) ** d_c
    return int(total)


def _trim(p: P) -> np.ndarray:
    c = np.asarray(p.coef, dtype=float)
    nz = np.flatnonzero(np.abs(c) > 1e-12)
    return c[: nz[-1] + 1] if len(nz) else np.zeros(1)


def leading_term(p: P) -> tuple[int, float]:
    """(degree, coefficient) of the leading term."""
    c = _trim(p)
    return len(c) - 1, float(c[-1])


def asymptotically_at_least(a: P, b: P) -> bool:
    """a(T) ≥ b(T) for all large T: the leading non-zero coefficient of a − b is ≥ 0."""
    c = _trim(a - b)
    return bool(c[-1] >= 0)


def prop2_min_set_size(T: float, L: int, h: int, c: float = 1 / 6, d_o: int = 3) -> float:
    """Prop. 2 / App. B.2 (RECONSTRUCTED): the smallest M = max|I| with
    L·h·T² + L·T·M^{d_o} ≥ c·T^{d_o}; grows like (c/L)^{1/d_o}·T^{(d_o−1)/d_o}."""
    need = c * T**d_o - L * h * T**2
    return float(max(0.0, need / (L * T)) ** (1.0 / d_o))
