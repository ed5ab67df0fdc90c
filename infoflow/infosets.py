"""Information sets and their update rules (Sec. 5.1 of the paper, appendix: the InfoFlow model).

An InfoFlow model replaces each hidden state by the set ``I_t^(l)`` of input positions whose
information is accessible at position ``t`` after layer ``l``. Positions run 0..T, 0 being the CLS
token; eq. 3 (RECONSTRUCTED): ``I_t^(0) = {t}`` for t ≥ 1 and ``I_0^(0) = ∅``.

Each layer is a list of heads, each head one of the three rules of Sec. 5.1:

* :class:`MaxPosition` (Mechanism I): head i sends position t the set of
  ``s* = argmax_s σ_i(X_{I_t}, X_{I_s})``;
* :class:`GlobalAggregation` (Mechanism II): the head sees every input position, ``{1..T}``;
* :class:`SpecificPosition` (Mechanism III, needs positional encoding): the head sends the sets
  of a fixed list of positions ``S_t^(l)`` chosen by (t, l) alone.

The new set is the union of the position's own set (residual) and what its heads bring.
Score functions are plain callables ``score(queries, keys) -> (T+1, T+1) array``; they only ever
see the tokens inside the information sets (:class:`Visible`), so a construction cannot cheat.
Ties in an argmax go to the lowest position.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping, Sequence, Union

import numpy as np

__all__ = [
    "Visible",
    "MaxPosition",
    "GlobalAggregation",
    "SpecificPosition",
    "InfoFlowModel",
    "Trace",
    "active_index_set",
    "learns",
    "LearnReport",
    "bilinear_score",
    "within_key_score",
    "pair_score",
    "within_key_pair_score",
    "linear_score",
    "self_score",
    "token_score",
    "initial_sets",
]


@dataclass(frozen=True)
class Visible:
    """What each position 0..T can see: the tokens of its information set, padded.

    ``tokens[t, j]`` is the j-th token of ``X_{I_t}`` in increasing index order (zeros where
    ``mask[t, j]`` is False); ``own[t]`` is x_t itself (zeros for the CLS, ``has_own[0]`` False).
    """

    sets: tuple
    tokens: np.ndarray
    mask: np.ndarray
    own: np.ndarray
    has_own: np.ndarray

    @classmethod
    def build(cls, X: np.ndarray, sets: Sequence[frozenset]) -> "Visible":
        T, d = X.shape
        width = max(1, max(len(s) for s in sets))
        tokens = np.zeros((T + 1, width, d))
        mask = np.zeros((T + 1, width), dtype=bool)
        for t, s in enumerate(sets):
            idx = sorted(s)
            if idx:
                tokens[t, : len(idx)] = X[np.asarray(idx) - 1]
                mask[t, : len(idx)] = True
        own = np.vstack([np.zeros((1, d)), X])
        has_own = np.arange(T + 1) > 0
        return cls(tuple(sets), tokens, mask, own, has_own)


Score = Callable[[Visible, Visible], np.ndarray]


@dataclass(frozen=True)
class MaxPosition:
    """Mechanism I: I_t ← I_t ∪ I_{s*}, s* = argmax_s score(queries, keys)[t, s]."""

    score: Score
    name: str = "max-position"


@dataclass(frozen=True)
class GlobalAggregation:
    """Mechanism II: the head aggregates the whole sequence, I_t ← {1, ..., T}."""

    name: str = "global"


@dataclass(frozen=True)
class SpecificPosition:
    """Mechanism III: I_t ← I_t ∪ ⋃_{s ∈ S_t} I_s with S_t fixed by position alone.

    ``select`` maps a position t (0..T) to the positions S_t it reads; a mapping or a callable.
    Needs positional encoding (without it attention cannot tell positions apart).
    """

    select: Union[Mapping[int, Iterable[int]], Callable[[int], Iterable[int]]]
    name: str = "specific-position"

    def positions(self, t: int) -> list[int]:
        sel = self.select.get(t, ()) if isinstance(self.select, Mapping) else self.select(t)
        return list(sel)


Rule = Union[MaxPosition, GlobalAggregation, SpecificPosition]


def initial_sets(T: int) -> list[frozenset]:
    """Eq. 3: I_0^(0) = ∅ (CLS), I_t^(0) = {t}."""
    return [frozenset()] + [frozenset({t}) for t in range(1, T + 1)]


@dataclass
class Trace:
    """The information sets of one input across layers: ``sets[l][t]`` for l = 0..L, t = 0..T,
    and ``picks[l-1][t][i]``: what head i of layer l gave position t (an argmax position, "all",
    or the tuple S_t)."""

    X: np.ndarray
    sets: list
    picks: list
    kinds: list

    @property
    def T(self) -> int:
        return self.X.shape[0]

    @property
    def L(self) -> int:
        return len(self.sets) - 1

    @property
    def cls_set(self) -> frozenset:
        """I_0^(L): the CLS token's set after the last layer."""
        return self.sets[-1][0]

    def used_positions(self, l: int) -> list[int]:
        """U_l: positions whose layer-l state is used later (all for l < L, only the CLS at l = L)."""
        return [0] if l == self.L else list(range(self.T + 1))

    def cost_exponents(self, d: int, embed: Sequence[int]) -> np.ndarray:
        """Sec. 5.2 cost law (RECONSTRUCTED exponent form): the update producing I_t^(l) costs
        ε^{-d·|I_t^(l)|/E_l}; global aggregation gives |I| = T, hence ε^{-dT/E_l}.
        Returns the exponents, shape (L, T+1), NaN for positions outside U_l."""
        out = np.full((self.L, self.T + 1), np.nan)
        for l in range(1, self.L + 1):
            for t in self.used_positions(l):
                out[l - 1, t] = d * len(self.sets[l][t]) / embed[l - 1]
        return out

    def cost_exponent(self, d: int, embed: Sequence[int], eps: float | None = None) -> float:
        """log(total cost)/log(1/ε). With ``eps=None`` the ε → 0 limit: the largest exponent."""
        e = self.cost_exponents(d, embed)
        e = e[~np.isnan(e)]
        if eps is None:
            return float(e.max())
        if not 0 < eps < 1:
            raise ValueError(f"eps must be in (0, 1), got {eps}")
        return float(np.log(np.sum(eps ** (-e))) / np.log(1 / eps))

    def uses_global(self) -> bool:
        return any("global" in layer for layer in self.kinds)


@dataclass(frozen=True)
class InfoFlowModel:
    """An InfoFlow model: ``layers[l]`` is the list of heads (update rules) of layer l+1."""

    layers: Sequence[Sequence[Rule]]
    positional_encoding: bool = False
    name: str = ""

    def __post_init__(self):
        if len(self.layers) == 0:
            raise ValueError("layers: an InfoFlow model needs at least one layer")
        for l, layer in enumerate(self.layers, 1):
            if len(layer) == 0:
                raise ValueError(f"layers[{l - 1}]: layer {l} needs at least one head")
            for i, rule in enumerate(layer, 1):
                if not isinstance(rule, (MaxPosition, GlobalAggregation, SpecificPosition)):
                    raise TypeError(f"layer {l}, head {i}: not an update rule: {rule!r}")
                if isinstance(rule, SpecificPosition) and not self.positional_encoding:
                    raise ValueError(
                        f"layer {l}, head {i}: specific-position aggregation needs positional encoding "
                        "(set positional_encoding=True); without it attention depends on content only"
                    )

    @property
    def heads(self) -> tuple[int, ...]:
        return tuple(len(layer) for layer in self.layers)

    def run(self, X) -> Trace:
        """Propagate the information sets of input ``X`` (shape (T, d)) through every layer."""
        X = np.asarray(X, dtype=float)
        if X.ndim != 2:
            raise ValueError(f"X must have shape (T, d), got {X.shape}")
        T = X.shape[0]
        sets = [initial_sets(T)]
        picks, kinds = [], []
        for l, layer in enumerate(self.layers, 1):
            prev = sets[-1]
            new = [set(s) for s in prev]
            layer_picks = [[None] * len(layer) for _ in range(T + 1)]
            vis = None
            for i, rule in enumerate(layer):
                if isinstance(rule, MaxPosition):
                    vis = vis or Visible.build(X, prev)
                    S = np.asarray(rule.score(vis, vis), dtype=float)
                    if S.shape != (T + 1, T + 1):
                        raise ValueError(
                            f"layer {l}, head {i + 1}: score returned shape {S.shape}, expected {(T + 1, T + 1)}"
                        )
                    star = np.argmax(np.nan_to_num(S, nan=-np.inf), axis=1)
                    for t in range(T + 1):
                        new[t] |= prev[star[t]]
                        layer_picks[t][i] = int(star[t])
                elif isinstance(rule, GlobalAggregation):
                    for t in range(T + 1):
                        new[t] |= set(range(1, T + 1))
                        layer_picks[t][i] = "all"
                else:
                    for t in range(T + 1):
                        chosen = rule.positions(t)
                        bad = [s for s in chosen if not (isinstance(s, (int, np.integer)) and 0 <= s <= T)]
                        if bad:
                            raise ValueError(f"layer {l}, head {i + 1}: S_{t} must hold positions in 0..{T}, got {bad}")
                        for s in chosen:
                            new[t] |= prev[s]
                        layer_picks[t][i] = tuple(chosen)
            sets.append([frozenset(s) for s in new])
            picks.append(layer_picks)
            kinds.append([r.name for r in layer])
        return Trace(X, sets, picks, kinds)


# --- built-in score functions --------------------------------------------------------------------


def _masked_max(values: np.ndarray, mask: np.ndarray, axes) -> np.ndarray:
    return np.where(mask, values, -np.inf).max(axis=axes)


def pair_score(f) -> Score:
    """σ(X_{I_t}, X_{I_s}) = max_{a ∈ I_t, b ∈ I_s} f(x_a, x_b); ``f`` broadcasts over leading axes
    of two (..., d) arrays. On singletons: f(x_t, x_s)."""

    def score(q: Visible, k: Visible) -> np.ndarray:
        v = f(q.tokens[:, None, :, None, :], k.tokens[None, :, None, :, :])
        m = q.mask[:, None, :, None] & k.mask[None, :, None, :]
        return _masked_max(v, m, (2, 3))

    return score


def within_key_pair_score(f) -> Score:
    """σ(·, X_{I_s}) = max_{a, b ∈ I_s} f(x_a, x_b): the best pair already inside the key's set."""

    def score(q: Visible, k: Visible) -> np.ndarray:
        v = f(k.tokens[:, :, None, :], k.tokens[:, None, :, :])
        m = k.mask[:, :, None] & k.mask[:, None, :]
        row = _masked_max(v, m, (1, 2))
        return np.broadcast_to(row, (q.tokens.shape[0], row.shape[0]))

    return score


def _bilinear(A):
    A = np.asarray(A, dtype=float)
    return lambda a, b: np.einsum("...d,de,...e->...", a, A, b)


def bilinear_score(A) -> Score:
    """σ(X_{I_t}, X_{I_s}) = max_{a ∈ I_t, b ∈ I_s} x_aᵀ A x_b (x_tᵀ A x_s on singletons)."""
    return pair_score(_bilinear(A))


def within_key_score(A) -> Score:
    """σ(·, X_{I_s}) = max_{a, b ∈ I_s} x_aᵀ A x_b."""
    return within_key_pair_score(_bilinear(A))


def linear_score(a) -> Score:
    """σ(·, X_{I_s}) = max_{b ∈ I_s} aᵀ x_b (one D-retrieval direction)."""
    a = np.asarray(a, dtype=float)

    def score(q: Visible, k: Visible) -> np.ndarray:
        row = _masked_max(k.tokens @ a, k.mask, 1)
        return np.broadcast_to(row, (q.tokens.shape[0], row.shape[0]))

    return score


def self_score() -> Score:
    """Each position retrieves itself (a pass-through head). By content, -‖x_t - x_s‖² has the same
    argmax almost surely, so no positional encoding is needed."""

    def score(q: Visible, k: Visible) -> np.ndarray:
        n = q.tokens.shape[0]
        return np.where(np.eye(n, dtype=bool), 0.0, -np.inf)

    return score


def token_score() -> Score:
    """Any input token beats the CLS (argmax: position 1); used to read a set every token holds."""

    def score(q: Visible, k: Visible) -> np.ndarray:
        row = np.where(k.has_own, 0.0, -np.inf)
        return np.broadcast_to(row, (q.tokens.shape[0], row.shape[0]))

    return score


# --- active index set and the learning criterion ------------------------------------------------


def active_index_set(F: Callable, X, h: float = 1e-7, tol: float = 1e-6) -> frozenset:
    """Eq. 4: A(X) = {t : ∂F/∂x_t (X) ≠ 0}, by central differences (autograd-free).

    Token t is active when some coordinate's difference quotient (F(X + h e) - F(X - h e)) / 2h
    exceeds ``tol · max(1, |F(X)|)`` in absolute value. ``F`` maps a batch (n, T, d) to (n,) or
    (n, k). Positions are 1-based, as in the paper. In float64 the rounding error of a quotient is
    about 1e-9, far below ``tol``; an input within ``h`` of a switching boundary of a max/min target
    (two candidates tied to within ~h) can flag both candidates, a set of measure O(h).
    """
    X = np.asarray(X, dtype=float)
    T, d = X.shape
    steps = np.zeros((T * d, T, d))
    steps.reshape(T * d, T * d)[np.arange(T * d), np.arange(T * d)] = h
    batch = np.concatenate([X[None] + steps, X[None] - steps, X[None]])
    out = np.asarray(F(batch), dtype=float).reshape(2 * T * d + 1, -1)
    grad = (out[: T * d] - out[T * d : 2 * T * d]) / (2 * h)
    scale = max(1.0, float(np.abs(out[-1]).max()))
    active = np.abs(grad).max(axis=1).reshape(T, d).max(axis=1) > tol * scale
    return frozenset(int(t) + 1 for t in np.flatnonzero(active))


@dataclass
class LearnReport:
    """Result of checking A(X) ⊆ I_0^(L)(X) on random points."""

    n: int
    covered: int
    missing: list = field(default_factory=list)  # (sample index, positions not covered)
    max_cost_exponent: float = float("nan")
    uses_global: bool = False

    @property
    def ok(self) -> bool:
        return self.covered == self.n


def learns(
    model: InfoFlowModel,
    target,
    T: int,
    n: int = 16,
    seed: int = 0,
    d: int | None = None,
    embed: Sequence[int] | None = None,
) -> LearnReport:
    """Sec. 5.1: the model learns F if A(X) ⊆ I_0^(L)(X) for almost every X; checked on ``n``
    random inputs drawn from the target's own input law (numpy, seeded). With ``embed`` the
    largest cost exponent seen is recorded too."""
    rng = np.random.default_rng(seed)
    X = np.asarray(target.sample_inputs(rng, n, T), dtype=float)
    report = LearnReport(n=n, covered=0)
    worst = -np.inf
    for j in range(n):
        trace = model.run(X[j])
        missing = active_index_set(target, X[j]) - trace.cls_set
        if missing:
            report.missing.append((j, sorted(missing)))
        else:
            report.covered += 1
        report.uses_global |= trace.uses_global()
        if embed is not None:
            worst = max(worst, trace.cost_exponent(d or X.shape[-1], embed))
    report.max_cost_exponent = float(worst) if embed is not None else float("nan")
    return report
