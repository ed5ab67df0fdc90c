"""The two-step estimate of Sec. 5.3 and the built-in constructions (Prop. 1, Thm 1, App. E).

Step 1 (lower bound): the model's Number of Comparison (eq. 5) must reach the target's, compared
to leading order in T (the paper's regime T ≫ L·h; appendix: the InfoFlow model). Step 2 (upper bound): an explicit
InfoFlow model, i.e. a choice of update rule per head, that learns the target; its cost exponent
(Sec. 5.2) is bounded in T unless it needs global aggregation (exponent d·T/E_l).

Verdict (appendix: the InfoFlow model): ``efficient`` when step 1 holds and a construction without global aggregation
learns the target; otherwise ``inefficient``, with the reason.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Optional, Sequence

import textwrap

import numpy as np

from .comparison import (
    asymptotically_at_least,
    comparison_profile,
    leading_term,
    model_noc,
    model_noc_poly,
    profile_of,
)
from .infosets import (
    GlobalAggregation,
    InfoFlowModel,
    MaxPosition,
    SpecificPosition,
    bilinear_score,
    learns,
    linear_score,
    pair_score,
    self_score,
    token_score,
    within_key_pair_score,
    within_key_score,
)
from .targets import TARGETS, Target, make_target

__all__ = [
    "Construction",
    "Prediction",
    "constructions_for",
    "predict",
    "predict_targets",
    "layers_with",
    "BUILTIN_CONSTRUCTIONS",
    "prop1_model",
    "DEFAULT_EMBED",
    "validate_architecture",
]

PREDICT_TARGETS = (
    "intrinsic-dimension",
    "triangle-center",
    "d-retrieval",
    "depth-separation",
    "first-three-sum",
    "pair-center",
)
DEFAULT_EMBED = 60  # DEFAULT (appendix: experiments, C.4: total E = 60); only scales the cost exponent
# The construction check evaluates the target on 2·T·d + 1 perturbed copies of each of n_check inputs, each
# evaluation T^order (x D) numbers, and runs the InfoFlow model (about Σ_l h_l·T² scores): a budget of
# element operations keeps a check within about 10 s and, with the target evaluated in slices of
# CHECK_SLICE numbers, within 1 GB (measured on a 2-core CPU). Larger sizes are refused, naming the limit.
CHECK_BUDGET = 1e9
CHECK_SLICE = 1 << 22
MAX_LAYERS, MAX_HEADS = 64, 1024


@dataclass(frozen=True)
class Construction:
    """An explicit InfoFlow model for a (target, architecture), with where it comes from."""

    name: str
    model: InfoFlowModel
    source: str


def _pass_through(h: int) -> list:
    return [MaxPosition(self_score()) for _ in range(h)]


def layers_with(heads: Sequence[int], last: list, earlier: Optional[dict] = None) -> list:
    """The layers of an InfoFlow construction on an architecture with ``heads`` per layer: layer ``l``
    (0-based) gets the update rules ``earlier[l]``, the last layer gets ``last``, and every head left
    over passes its own set through. For writing a target's ``constructions``."""
    earlier = earlier or {}
    layers = []
    for l, h in enumerate(heads):
        rules = last if l == len(heads) - 1 else earlier.get(l, [])
        layers.append(list(rules) + _pass_through(h - len(rules)))
    return layers


def _global_readout(heads, pe) -> Construction:
    return Construction(
        "global aggregation at the CLS (last layer)",
        InfoFlowModel(layers_with(heads, [GlobalAggregation()]), positional_encoding=pe),
        "Mechanism II (Yu et al. 2026, Thm 2.3): always learns, cost exponent d·T/E",
    )


def _intrinsic_dimension(target, heads, pe) -> list[Construction]:
    D, L = target.D, len(heads)
    first = next((l for l in range(L - 1) if heads[l] >= D), None)
    if first is None or heads[-1] < D:
        return []
    return [
        Construction(
            f"Prop. 1 (App. B.1, eqs. 49–50): layer {first + 1} retrieves argmax_s x_tᵀA_i x_s, the CLS "
            "retrieves the best pair of each A_i",
            prop1_model(target, heads, pe, first=first),
            "App. B.1, eqs. 49–50",
        )
    ]


def _two_stage(heads, pe, pair, description: str, source: str) -> list[Construction]:
    """The Thm 1 / App. E shape for a min or max over pairs: at layer 1 every token retrieves its best
    partner under the pair score ``pair``, and the CLS retrieves the best pair among the tokens' sets."""
    if len(heads) < 2:
        return []
    layers = layers_with(heads, [MaxPosition(within_key_pair_score(pair))], {0: [MaxPosition(pair_score(pair))]})
    return [Construction(description, InfoFlowModel(layers, pe), source)]


def _depth_separation(target, heads, pe) -> list[Construction]:
    def neg_inner(a, b):
        return -np.einsum("...d,...d->...", a, b)

    return _two_stage(
        heads,
        pe,
        neg_inner,
        "Thm 1 / App. E: layer 1 retrieves argmin_s x_tᵀx_s, the CLS retrieves the smallest pair",
        "App. A.1 (second part) and App. E, eqs. 65–67",
    )


def _pair_center(target, heads, pe) -> list[Construction]:
    def neg_norm(a, b):
        return -np.linalg.norm(a + b, axis=-1)

    return _two_stage(
        heads,
        pe,
        neg_norm,
        "pairwise two-stage: layer 1 retrieves argmin_s ‖x_t + x_s‖, the CLS retrieves the smallest pair",
        "ours (beyond the paper), as Thm 1 / App. E",
    )


def _single_center(target, heads, pe) -> list[Construction]:
    def neg_norm(a, b):  # on a singleton key set (a = b = x_s): -‖x_s‖
        return -(np.linalg.norm(a, axis=-1) + np.linalg.norm(b, axis=-1)) / 2

    return [
        Construction(
            "the CLS retrieves argmin_t ‖x_t‖",
            InfoFlowModel(layers_with(heads, [MaxPosition(within_key_pair_score(neg_norm))]), pe),
            "ours (beyond the paper): Mechanism I on a token-only score",
        )
    ]


def _d_retrieval(target, heads, pe) -> list[Construction]:
    a, D, L, out = target.a, target.D, len(heads), []
    if heads[-1] >= D:
        out.append(
            Construction(
                "one CLS head per direction a_i (Yu et al. 2026, Thm 2.2)",
                InfoFlowModel(layers_with(heads, [MaxPosition(linear_score(ai)) for ai in a]), pe),
                "Sec. 6 consistency check; Yu et al. 2026 Thm 2.2",
            )
        )
    if L >= 2:
        first = max(range(L - 1), key=lambda l: heads[l])
        k = min(heads[first], D)  # directions retrieved by every token
        rest = [MaxPosition(linear_score(ai)) for ai in a[k:]] or [MaxPosition(token_score())]
        if len(rest) <= heads[-1]:
            spread = {first: [MaxPosition(linear_score(ai)) for ai in a[:k]]}
            out.append(
                Construction(
                    f"spread then read: at layer {first + 1} every token retrieves the argmax tokens of {k} "
                    f"direction(s); the CLS retrieves the other {D - k} (or reads any token)",
                    InfoFlowModel(layers_with(heads, rest, spread), pe),
                    "ours (beyond the paper); needs h_first + h_last ≥ D",
                )
            )
    return out


def _first_three_sum(target, heads, pe) -> list[Construction]:
    if not pe:
        return []
    return [
        Construction(
            "specific-position aggregation: the CLS reads positions 1, 2, 3",
            InfoFlowModel(layers_with(heads, [SpecificPosition({0: (1, 2, 3)})]), positional_encoding=True),
            "Mechanism III, App. C.3",
        )
    ]


# The built-in targets' constructions (read by Target.constructions); a target of your own defines
# its constructions on its class instead.
BUILTIN_CONSTRUCTIONS = {
    "intrinsic-dimension": _intrinsic_dimension,
    "depth-separation": _depth_separation,
    "pair-center": _pair_center,
    "single-center": _single_center,
    "d-retrieval": _d_retrieval,
    "first-three-sum": _first_three_sum,
}


def constructions_for(target: Target, heads: Sequence[int], pe: bool = False) -> list[Construction]:
    """The target's constructions that fit the architecture (:meth:`Target.constructions`), best first,
    then the global-aggregation readout, which learns every target at cost exponent d·T/E."""
    if type(target).constructions is not Target.constructions:  # a target of your own
        own = target.constructions(list(heads), pe)
    else:
        build = BUILTIN_CONSTRUCTIONS.get(target.name)
        own = build(target, list(heads), pe) if build else []
    return [*own, _global_readout(heads, pe)]


def predict_targets() -> list[str]:
    """The registered targets the engine can predict for: those with a comparison profile."""
    return [name for name, cls in TARGETS.items() if profile_of(cls) is not None]


@dataclass
class Prediction:
    """The engine's report for one (target, architecture)."""

    target: str
    params: dict
    T: int
    heads: list
    d: int
    embed: list
    target_dimension: int
    target_noc: int  # lower bound, at this T
    target_noc_upper: int
    model_noc: int  # eq. 5 at this T
    target_noc_leading: str
    model_noc_leading: str
    step1_ok: bool
    construction: str
    construction_source: str
    learns_fraction: float
    uses_global: bool
    cost_exponent: float
    efficient: bool
    min_heads: Optional[int]
    reason: str
    labels: dict = field(
        default_factory=lambda: {
            "noc": "RECONSTRUCTED (appendix: the InfoFlow model)",
            "cost law": "RECONSTRUCTED (appendix: the InfoFlow model)",
            "embed": f"DEFAULT {DEFAULT_EMBED} unless given",
        }
    )

    def to_dict(self) -> dict:
        return asdict(self)

    def report(self, width: int | None = 100) -> str:
        """The estimate as text, one field per line; lines longer than ``width`` characters wrap
        under their field (None: no wrapping)."""
        head = f"{self.target} {self.params}  T={self.T}  heads={tuple(self.heads)}  E={tuple(self.embed)}  d={self.d}"
        mh = "none (no fixed head count passes step 1)" if self.min_heads is None else str(self.min_heads)
        lines = [
            head,
            f"  target NoC      {self.target_noc:>12,d}  (lower bound; upper {self.target_noc_upper:,d})"
            f"  ~ {self.target_noc_leading}   [Dimension of Comparison {self.target_dimension}]",
            f"  model NoC       {self.model_noc:>12,d}  (eq. 5)  ~ {self.model_noc_leading}",
            f"  step 1          {'passes' if self.step1_ok else 'fails'} (leading order in T)",
            f"  construction    {self.construction}",
            f"                  [{self.construction_source}; "
            f"covers A(X) on {self.learns_fraction:.0%} of random inputs]",
            f"  cost exponent   {self.cost_exponent:.3g}  (max over updates of d·|I|/E; "
            f"{'grows with T: global aggregation' if self.uses_global else 'bounded in T'})",
            f"  verdict         {'EFFICIENT' if self.efficient else 'NOT EFFICIENT'}: {self.reason}",
            f"  min first-layer heads (step 1): {mh}",
        ]
        if width is None:
            return "\n".join(lines)
        indent = " " * 18
        return "\n".join(
            "\n".join(textwrap.wrap(line, width, subsequent_indent=indent, break_on_hyphens=False)) for line in lines
        )


def _fmt_leading(p) -> str:
    deg, coef = leading_term(p)
    c = f"{coef:.3g}"
    return c if deg == 0 else f"{c}·T" + ("" if deg == 1 else f"^{deg}")


def validate_architecture(T: int, heads: Sequence[int], embed: Sequence[int], d: int) -> None:
    if not isinstance(T, (int, np.integer)) or T < 1:
        raise ValueError(f"T must be a positive integer, got {T!r}")
    if len(heads) == 0:
        raise ValueError("heads must list at least one layer, e.g. 4,4")
    for l, h in enumerate(heads, 1):
        if not isinstance(h, (int, np.integer)) or h < 1:
            raise ValueError(f"heads: layer {l} must have a positive head count, got {h!r}")
    if len(embed) != len(heads):
        raise ValueError(f"embed must give one E per layer ({len(heads)}), got {len(embed)}")
    for l, e in enumerate(embed, 1):
        if not isinstance(e, (int, np.integer)) or e < 1:
            raise ValueError(f"embed: layer {l} must be a positive integer, got {e!r}")
    if d < 1:
        raise ValueError(f"d must be a positive integer, got {d!r}")


def check_work(profile, T: int, d: int, heads: Sequence[int], n_check: int, D: int = 1) -> float:
    """Element operations of the construction check (see ``CHECK_BUDGET``)."""
    return n_check * ((2 * T * d + 1) * float(T) ** profile.order * D + sum(heads) * float(T) ** 2)


def _bounded(profile, T: int, d: int, heads: Sequence[int], n_check: int, D: int, target: str) -> None:
    if len(heads) > MAX_LAYERS or max(heads) > MAX_HEADS:
        raise ValueError(
            f"heads: at most {MAX_LAYERS} layers of at most {MAX_HEADS} heads each, "
            f"got {len(heads)} layers, up to {max(heads)} heads"
        )
    if check_work(profile, T, d, heads, n_check, D) > CHECK_BUDGET:
        largest = max(
            (t for t in range(1, T) if check_work(profile, t, d, heads, n_check, D) <= CHECK_BUDGET), default=0
        )
        raise ValueError(
            f"T = {T} is too large to check a construction for {target} in bounded time and memory "
            f"(about {check_work(profile, T, d, heads, n_check, D):.1g} operations; the limit, "
            f"{CHECK_BUDGET:.0e}, is about 10 s and 1 GB): use T <= {largest} with these heads"
        )


def _step1(profile, params, heads) -> bool:
    return asymptotically_at_least(model_noc_poly(heads, profile.dimension), profile.noc_lower(params))


def predict(
    target: str,
    T: int,
    heads: Sequence[int],
    embed: Sequence[int] | int | None = None,
    pe: bool = False,
    n_check: int = 8,
    seed: int = 0,
    max_heads: int = 64,
    **params,
) -> Prediction:
    """Run the two-step estimate for a built-in target on an architecture (heads per layer)."""
    if target not in predict_targets():
        raise ValueError(f"unknown target {target!r}; allowed: {', '.join(predict_targets())}")
    heads = [int(h) for h in heads]
    tgt = make_target(target, **params)
    if embed is None:
        embed = DEFAULT_EMBED
    embed = [int(embed)] * len(heads) if isinstance(embed, (int, np.integer)) else [int(e) for e in embed]
    validate_architecture(T, heads, embed, tgt.d)
    if getattr(tgt, "D", 1) > T:
        raise ValueError(f"D must be at most T ({T}), got D={tgt.D}")
    if target == "first-three-sum" and T < 3:
        raise ValueError(f"T must be at least 3 for first-three-sum, got T={T}")
    profile = comparison_profile(target)
    _bounded(profile, T, tgt.d, heads, n_check, getattr(tgt, "D", 1), target)
    if hasattr(tgt, "chunk"):  # the check's target in slices of about CHECK_SLICE numbers
        per_sequence = float(T) ** profile.order * getattr(tgt, "D", 1)
        tgt = replace(tgt, chunk=int(max(1, min(tgt.chunk, CHECK_SLICE // per_sequence))))
    step1 = _step1(profile, params, heads)
    m_poly = model_noc_poly(heads, profile.dimension)

    chosen, rep = None, None
    for c in constructions_for(tgt, heads, pe):
        rep = learns(c.model, tgt, T, n=n_check, seed=seed, embed=embed)
        if rep.ok:
            chosen = c
            break
    assert chosen is not None, "the global readout always learns"

    if not step1:
        tl, ml = _fmt_leading(profile.noc_lower(params)), _fmt_leading(m_poly)
        reason = (
            f"step 1 fails: the model's Number of Comparison grows like {ml}, below the target's "
            f"{tl}; no choice of update rules can make up for it"
        )
        if profile.order >= 3:
            reason += (
                f" (Order of Comparison {profile.order} ≥ 3: by Prop. 2 the cost exponent grows like "
                f"T^({profile.order - 1}/{profile.order}) for any fixed L, h, E)"
            )
    elif rep.uses_global:
        reason = (
            "step 1 passes, but the only construction that learns the target needs global aggregation "
            f"(cost exponent d·T/E = {rep.max_cost_exponent:.3g}, growing with T)"
        )
        if target == "intrinsic-dimension" and heads[-1] < tgt.D and any(h >= tgt.D for h in heads[:-1]):
            reason += f": the CLS needs D = {tgt.D} heads in the last layer to gather the D pairs, it has {heads[-1]}"
        if target == "first-three-sum" and not pe:
            reason += ": without positional encoding no head can select positions 1–3 by index"
    else:
        reason = f"step 1 passes and {chosen.name.split(':')[0]} learns the target with a cost exponent bounded in T"

    min_heads = None
    for h1 in range(1, max_heads + 1):
        if _step1(profile, params, [h1] + heads[1:]):
            min_heads = h1
            break

    return Prediction(
        target=target,
        params=dict(params),
        T=int(T),
        heads=heads,
        d=tgt.d,
        embed=embed,
        target_dimension=profile.dimension,
        target_noc=profile.lower(T, **params),
        target_noc_upper=profile.upper(T, **params),
        model_noc=model_noc(heads, profile.dimension, T),
        target_noc_leading=_fmt_leading(profile.noc_lower(params)),
        model_noc_leading=_fmt_leading(m_poly),
        step1_ok=step1,
        construction=chosen.name,
        construction_source=chosen.source,
        learns_fraction=rep.covered / rep.n,
        uses_global=rep.uses_global,
        cost_exponent=rep.max_cost_exponent,
        efficient=bool(step1 and not rep.uses_global),
        min_heads=min_heads,
        reason=reason,
    )


def prop1_model(target: Target, heads: Sequence[int], pe: bool = False, first: int = 0) -> InfoFlowModel:
    """The App. B.1 construction (eqs. 49–50) with as many of the D matrices as each layer has heads:
    at layer ``first`` + 1, head i retrieves argmax_s x_tᵀA_i x_s (i ≤ h), at the last layer CLS head i
    retrieves the best pair of A_i (i ≤ h_L); other layers pass through. With D heads in both it is
    Prop. 1's model; with fewer heads it shows what breaks."""
    A = target.A
    return InfoFlowModel(
        layers_with(
            heads,
            [MaxPosition(within_key_score(a)) for a in A[: heads[-1]]],
            {first: [MaxPosition(bilinear_score(a)) for a in A[: heads[first]]]},
        ),
        pe,
    )
