"""Sec. 6.2's explanation, tested: does the error grow with the order of comparison, or only with T?
And Table 12 at T = 8: which change of the recipe (a lever) moves the NMSE, and would another
normaliser explain the gap?

The comparison-order control trains one model on three targets with one input law that differ only in
their order of comparison (min ‖x_t‖, min ‖x_s + x_t‖, min ‖x_t1 + x_t2 + x_t3‖). NMSE divides the
squared error by the target's variance, and the variance of a minimum over many candidates shrinks as T
grows; so each row carries, beside the NMSE, the target's spread and the absolute (root-mean-square)
error, which is what the NMSE hides.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Iterable

import numpy as np

from .targets import make_target

__all__ = ["target_spread", "order_rows", "ORDER_MARGIN", "variance_share", "lever_means", "lever_seed_rows"]

ORDER_MARGIN = 0.02  # DEFAULT: "clearly harder" = an NMSE higher by more than the seeds' typical spread


def target_spread(name: str, T: int, n: int = 4000, seed: int = 0) -> float:
    """Standard deviation of the target ``name`` over ``n`` inputs of length ``T`` from its input law."""
    target = make_target(name)
    X = target.sample_inputs(np.random.default_rng(seed), n, T)
    return float(np.std(np.asarray(target(X))))


def order_rows(records: Iterable[dict], orders: dict) -> list[dict]:
    """One row per (order, T) from comparison-order records: seeds, mean best validation NMSE, the
    target's spread and the root-mean-square error it implies (sqrt(NMSE) x spread). ``orders``:
    {order: target name}, as ``ComparisonOrder.orders``."""
    by_key = defaultdict(list)
    order_of = {name: k for k, name in orders.items()}
    for r in records:
        if r["status"] == "done":
            by_key[(order_of[r["config"]["target"]], r["config"]["T"])].append(r["metrics"]["best_val_nmse"])
    rows = []
    for (order, T), values in sorted(by_key.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        spread = target_spread(orders[order], T)
        nmse = float(np.mean(values))
        rows.append(
            {
                "order": order,
                "target": orders[order],
                "T": T,
                "seeds": len(values),
                "nmse": nmse,
                "target_std": spread,
                "rmse": float(np.sqrt(nmse)) * spread,
            }
        )
    return rows


def variance_share(name: str, T: int, n: int = 4000, seed: int = 0) -> float:
    """Var(F) / E[F²] of the target ``name`` at length ``T``: the factor by which an NMSE (MSE over the
    variance) would shrink if it were divided by the mean square instead (a check of the normaliser)."""
    target = make_target(name)
    y = np.asarray(target(target.sample_inputs(np.random.default_rng(seed), n, T)), dtype=float)
    return float(y.var() / np.mean(y**2))


def lever_means(records: Iterable[dict], baseline: str = "paper recipe", goal: float | None = None) -> list[dict]:
    """One row per lever of a lever study (labels "<configuration> <lever>"): seeds, mean, best and
    worst best-validation NMSE, the mean over the ``baseline`` lever's, and (with ``goal``, e.g. the
    paper's value) the fraction of the gap from the baseline mean to ``goal`` that the lever closes."""
    from .paper import lever_of

    by_lever = defaultdict(list)
    for r in records:
        if r["status"] == "done":
            by_lever[lever_of(r["config"]["label"])].append(r["metrics"]["best_val_nmse"])
    if baseline not in by_lever:
        raise ValueError(f"baseline {baseline!r} is not among the levers: {sorted(by_lever)}")
    base = float(np.mean(by_lever[baseline]))
    rows = []
    for lever, values in by_lever.items():
        mean = float(np.mean(values))
        row = {"lever": lever, "seeds": len(values), "mean": mean, "best": min(values), "worst": max(values)}
        row["vs_baseline"] = mean / base
        if goal is not None:
            row["gap_closed"] = (base - mean) / (base - goal)
        rows.append(row)
    return sorted(rows, key=lambda r: r["mean"])


def lever_seed_rows(records: Iterable[dict]) -> list[dict]:
    """One row per finished run of a lever study: its lever, seed and best validation NMSE (the dots
    of the lever figures, and their CSV)."""
    from .paper import lever_of

    return [
        {
            "lever": lever_of(r["config"]["label"]),
            "seed": r["config"]["seed"],
            "best_val_nmse": r["metrics"]["best_val_nmse"],
        }
        for r in records
        if r["status"] == "done"
    ]
