"""Sec. 6.1's plateau, measured: the explicit (h1, h2) recipes against their FFN width, when a (D,D)
seed leaves the plateau, what fraction of seeds does under each lever of the recipe, and which
pairings the first layer's heads have taken up as it happens.

A (D,D) seed **escapes** when its validation NMSE falls below ``ESCAPE_FACTOR`` times the best seed
of (D-1,D) and (D,D-1) under the paper recipe at the same scale: the goal of the study (our
definition; the paper states none). Its escape step is the first evaluation below that line.
"""

from __future__ import annotations

from collections import defaultdict
from statistics import median
from typing import Iterable, Optional

import numpy as np

from .paper import KINDS, config_kind, dd_gap, lever_of

__all__ = [
    "ESCAPE_FACTOR",
    "escape_step",
    "escape_thresholds",
    "lever_of",
    "lever_rows",
    "unstable_seeds",
    "escaped_by_step",
    "pairings_taken",
    "construction_rows",
    "d_and_kind",
    "kind_values",
    "table11_rows",
    "gaps_of_means",
    "plot_third_party",
    "recipe_table",
    "goal_rows",
    "gap_trend",
    "claim_rows",
]

ESCAPE_FACTOR = 0.1  # DEFAULT: "well below the others" = a tenth of the best (D-1,D) / (D,D-1) seed


def escape_step(curve, threshold: float) -> Optional[int]:
    """The first evaluation step whose validation NMSE is below ``threshold`` (None: never)."""
    for step, value in curve:
        if value is not None and value < threshold:
            return int(step)
    return None


def escape_thresholds(records: Iterable[dict], factor: float = ESCAPE_FACTOR) -> dict:
    """{D: factor x the best (D-1,D) or (D,D-1) seed} from records of all three configurations."""
    best: dict = defaultdict(lambda: float("inf"))
    for r in records:
        if r["status"] == "done" and config_kind(r["config"]["label"]) != "(D,D)":
            D = r["config"]["target_params"]["D"]
            best[D] = min(best[D], r["metrics"]["best_val_nmse"])
    return {D: factor * v for D, v in sorted(best.items())}


def _by_lever(records: Iterable[dict], lever: Optional[str] = None) -> dict:
    groups: dict = defaultdict(list)
    for r in records:
        c = r["config"]
        groups[(lever or lever_of(c["label"]), config_kind(c["label"]), c["target_params"]["D"])].append(r)
    return groups


def lever_rows(records: Iterable[dict], thresholds: dict, lever: Optional[str] = None) -> list[dict]:
    """One row per (lever, configuration, D): seeds, how many escaped, the median escape step, and
    the geometric mean, best and worst of the best validation NMSE. Failed runs count as not escaped.
    ``lever`` names the recipe of records whose labels do not (e.g. the paper recipe trained longer)."""
    rows = []
    for (lever, kind, D), recs in _by_lever(records, lever).items():
        steps = [escape_step(r["curve"], thresholds[D]) if r["status"] == "done" else None for r in recs]
        done = [r["metrics"]["best_val_nmse"] for r in recs if r["status"] == "done"]
        escaped = [s for s in steps if s is not None]
        rows.append(
            {
                "lever": lever,
                "kind": kind,
                "D": D,
                "seeds": len(recs),
                "failed": len(recs) - len(done),
                "escaped": len(escaped),
                "fraction": len(escaped) / len(recs),
                "median_escape_step": median(escaped) if escaped else None,
                "geomean": float(np.exp(np.mean(np.log(done)))) if done else None,
                "best": min(done) if done else None,
                "worst": max(done) if done else None,
                "threshold": thresholds[D],
                "steps": recs[0]["metrics"]["steps"],
            }
        )
    return rows


def unstable_seeds(records: Iterable[dict], above: float = 1.0) -> int:
    """How many runs had a validation NMSE above ``above`` at some evaluation: with 1, worse than
    predicting the mean (a learning rate too large for the width; a diverged run counts too)."""
    return sum(
        r["status"] != "done" or max((v for _, v in r["curve"] if v is not None), default=float("inf")) > above
        for r in records
    )


def escaped_by_step(records: Iterable[dict], thresholds: dict, lever: Optional[str] = None) -> dict:
    """{(lever, kind, D): (evaluation steps, fraction of seeds escaped by each)}: the study's figure."""
    out = {}
    for key, recs in _by_lever(records, lever).items():
        grid = [s for s, _ in recs[0]["curve"]]
        first = [escape_step(r["curve"], thresholds[key[2]]) if r["status"] == "done" else None for r in recs]
        out[key] = (grid, [sum(f is not None and f <= s for f in first) / len(recs) for s in grid])
    return out


def pairings_taken(alignment, level: float = 0.5) -> int:
    """From one evaluation's alignment matrix (heads x 2D, :func:`~infoflow.probes.head_alignment`:
    how often head j looks up the partner of A_i, then of A_iᵀ), the number of distinct A_i that
    some head looks up, in either orientation, at least ``level`` of the time; found by a greedy
    one-head-one-pairing assignment (a head serves one pairing)."""
    a = np.asarray(alignment, dtype=float)
    D = a.shape[1] // 2
    a = np.maximum(a[:, :D], a[:, D:])  # pairing i in either orientation
    taken = 0
    # a greedy matching over (head, pairing) entries above the level, largest first
    used_h, used_i = set(), set()
    for j, i in sorted(np.ndindex(*a.shape), key=lambda ji: -a[ji]):
        if a[j, i] >= level and j not in used_h and i not in used_i:
            used_h.add(j)
            used_i.add(i)
            taken += 1
    return taken


def construction_rows(D: int, T: int, widths: Iterable[int], n: int = 1024, seed: int = 0) -> list[dict]:
    """NMSE of the explicit (D,D), (D-1,D) and (D,D-1) recipes (:func:`~infoflow.constructions.
    intrinsic_dimension_transformer`) on ``n`` samples of eq. 6 at length T, for each number of
    staircase steps in ``widths``: raw, and after the best affine map of the output (least squares on
    the same samples; what a trained readout could add)."""
    import torch

    from .constructions import intrinsic_dimension_transformer
    from .targets import IntrinsicDimension
    from .train import nmse

    target = IntrinsicDimension(D=D)
    X = target.sample_inputs(torch.Generator().manual_seed(seed), n, T).double()[None]
    y = target(X)[..., None]
    rows = []
    for kind, heads in zip(("(D,D)", "(D-1,D)", "(D,D-1)"), ((D, D), (D - 1, D), (D, D - 1))):
        if min(heads) < 1:
            continue
        for steps in widths:
            model = intrinsic_dimension_transformer(target.A, T, steps, heads)
            with torch.no_grad():  # in slices: the staircases' hidden layer is 2·d·D·steps wide
                pred = torch.cat([model(X[:, i : i + 128]) for i in range(0, n, 128)], dim=1)
            design = torch.cat([pred[0], torch.ones_like(pred[0])], dim=1)
            coef = torch.linalg.lstsq(design, y[0]).solution
            rows.append(
                {
                    "D": D,
                    "kind": kind,
                    "heads": f"({heads[0]},{heads[1]})",
                    "staircase_steps": steps,
                    "ffn": model.cfg.ffn,
                    "parameters": model.parameter_counts()["total"],
                    "nmse": float(nmse(pred, y)[0]),
                    "nmse_affine": float(nmse((design @ coef)[None], y)[0]),
                }
            )
    return rows


def d_and_kind(record: dict) -> tuple:
    """(D, Table 11 configuration) of a Sec. 6.1 record: (3, '(D-1,D)') for a (2,3) run at D = 3."""
    return record["config"]["target_params"]["D"], config_kind(record["config"]["label"])


def kind_values(records: Iterable[dict], seeds: Optional[Iterable[int]] = None) -> dict:
    """{(D, kind): [best validation NMSE of each finished seed, by seed]} (only ``seeds`` if given)."""
    keep = None if seeds is None else set(seeds)
    pairs: dict = defaultdict(list)
    for r in records:
        if r["status"] == "done" and (keep is None or r["config"]["seed"] in keep):
            pairs[d_and_kind(r)].append((r["config"]["seed"], r["metrics"]["best_val_nmse"]))
    return {k: [v for _, v in sorted(p)] for k, p in pairs.items()}


def table11_rows(records: Iterable[dict], third_party: Optional[dict] = None) -> list[dict]:
    """Table 11 from records: one row per (D, configuration) with the number of seeds, the mean, best
    and worst seed's best validation NMSE and, with ``third_party`` ({D: {kind: value}}), its value."""
    values = kind_values(records)
    rows = []
    for D in sorted({D for D, _ in values}):
        for kind in KINDS:
            v = values.get((D, kind))
            if not v:
                continue
            row = {
                "D": D,
                "configuration": kind,
                "seeds": len(v),
                "mean": float(np.mean(v)),
                "best": min(v),
                "worst": max(v),
            }
            if third_party is not None:
                row["third-party (T = 64)"] = third_party.get(D, {}).get(kind)
            rows.append(row)
    return rows


def gaps_of_means(records: Iterable[dict], seeds: Optional[Iterable[int]] = None) -> dict:
    """{D: Table 11's gap, the better mean of (D-1,D), (D,D-1) over the (D,D) mean} for every D with all
    three configurations (only ``seeds`` if given)."""
    values = kind_values(records, seeds)
    Ds = sorted({D for D, _ in values if all(values.get((D, k)) for k in KINDS)})
    return {D: dd_gap({k: float(np.mean(values[(D, k)])) for k in KINDS}) for D in Ds}


def plot_third_party(ax, third_party: dict, kinds=KINDS, label: str = "third-party (T = 64)") -> list[dict]:
    """Draw Table 11's values on ``ax`` against D: crosses on dotted lines, coloured per configuration
    as C0, C1, C2 (one legend entry, ``label``); returns them as figure rows for the CSV."""
    Ds = sorted(third_party)
    rows = []
    for j, kind in enumerate(kinds):
        color = f"C{KINDS.index(kind)}"
        ax.plot(Ds, [third_party[D][kind] for D in Ds], "x:", color=color, label=label if j == 0 else None)
        rows += [
            {"D": D, "config": kind, "source": "third-party mean", "best_val_nmse": third_party[D][kind]} for D in Ds
        ]
    return rows


def recipe_table(recipes: dict, third_party: dict) -> list[dict]:
    """Table 11 side by side: one row per (D, configuration) with the third-party value and each
    recipe's mean over seeds (None where a recipe has no such runs). ``recipes``: {name: records}."""
    values = {name: kind_values(recs) for name, recs in recipes.items()}
    Ds = sorted({D for v in values.values() for D, _ in v})
    rows = []
    for D in Ds:
        for kind in KINDS:
            row = {"D": D, "configuration": kind, "third-party (T = 64)": third_party.get(D, {}).get(kind)}
            for name, v in values.items():
                row[name] = float(np.mean(v[(D, kind)])) if v.get((D, kind)) else None
            rows.append(row)
    return rows


def goal_rows(recipes: dict, factor: float = ESCAPE_FACTOR, min_gap: float = 30.0) -> list[dict]:
    """Per recipe and D: the gap of the means (better of (D-1,D), (D,D-1) over (D,D)), whether every
    (D,D) seed is below ``factor`` x the best seed of the other two, and whether both goals hold
    (gap >= ``min_gap``). ``recipes``: {name: records}."""
    rows = []
    for name, recs in recipes.items():
        v = kind_values(recs)
        for D in sorted({D for D, _ in v}):
            if not all(v.get((D, k)) for k in KINDS):
                continue
            means = {k: float(np.mean(v[(D, k)])) for k in KINDS}
            gap = dd_gap(means)
            best_other = min(min(v[(D, k)]) for k in KINDS[1:])
            below = max(v[(D, "(D,D)")]) < factor * best_other
            rows.append(
                {
                    "recipe": name,
                    "D": D,
                    "seeds_dd": len(v[(D, "(D,D)")]),
                    "gap_of_means": gap,
                    "worst_dd_seed": max(v[(D, "(D,D)")]),
                    "best_other_seed": best_other,
                    "every_dd_seed_below_a_tenth": below,
                    "goal_met": bool(below and gap >= min_gap),
                }
            )
    return rows


def gap_trend(goals: list[dict]) -> dict:
    """{recipe: (its gaps of the means in order of D, whether they shrink as D grows)} from
    :func:`goal_rows` (never rising counts as shrinking), for the recipes recorded at more than one D."""
    by_recipe: dict = {}
    for g in goals:
        by_recipe.setdefault(g["recipe"], []).append((g["D"], g["gap_of_means"]))
    out = {}
    for name, pairs in by_recipe.items():
        gaps = [gap for _, gap in sorted(pairs)]
        if len(gaps) > 1:
            out[name] = (gaps, all(b <= a for a, b in zip(gaps, gaps[1:])))
    return out


def claim_rows(goals: list[dict], construction_best: float, below_taken: Optional[list[int]]) -> list[dict]:
    """Sec. 6.1's claims and the verdict on each ("holds" / "does not hold"), per recipe where a
    recipe matters. ``goals``: :func:`goal_rows`; ``construction_best``: the largest best error of
    the constructed (D,D) models; ``below_taken``: pairings taken at each evaluation below the
    escape line (empty: none fell below; None: not probed)."""

    def word(ok: bool) -> str:
        return "holds" if ok else "does not hold"

    rows = [
        {
            "claim": "a (D,D) model can represent the target to below 1e-3 (construction, T = 16, D = 2..4)",
            "recipe": "none (constructed weights)",
            "verdict": word(construction_best < 1e-3),
        }
    ]
    for name in dict.fromkeys(g["recipe"] for g in goals):
        mine = [g for g in goals if g["recipe"] == name]
        Ds = "D = " + ", ".join(str(g["D"]) for g in mine)
        for claim, ok in (
            ("(D,D) has the lowest mean error", all(g["gap_of_means"] > 1 for g in mine)),
            ("by two to three orders of magnitude (gap of means >= 100)", all(g["gap_of_means"] >= 100 for g in mine)),
            ("every (D,D) seed below a tenth of every other seed", all(g["every_dd_seed_below_a_tenth"] for g in mine)),
        ):
            rows.append({"claim": f"{claim}, {Ds}", "recipe": name, "verdict": word(ok)})
    probe = (
        "not probed"
        if below_taken is None
        else (
            "not tested (no evaluation below the escape line)"
            if not below_taken
            else word(all(t == 2 for t in below_taken))
        )
    )
    rows.append(
        {
            "claim": "leaving the plateau needs the first layer's heads to take up all D pairings",
            "recipe": "probe (D = 2: every probed run)",
            "verdict": probe,
        }
    )
    return rows
