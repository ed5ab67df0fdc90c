"""Aggregate run records into tables: one row per (variant, T, target parameters), with mean, std,
best and worst of the best validation NMSE over seeds, and the provenance the rows came from."""

from __future__ import annotations

import csv
import io
import json
from collections import defaultdict
from pathlib import Path
from typing import Callable, Iterable, Mapping, Optional, Sequence

import numpy as np

from .store import ResultsStore

__all__ = [
    "pair_comparison",
    "pair_by_length",
    "load_records",
    "aggregate",
    "format_rows",
    "DATA_DIR",
    "best_profile",
    "describe",
    "run_text",
    "best_seeds",
    "best_seed_rows",
    "best_seed_curves",
    "best_until",
    "geomean_best_until",
    "length_rows",
    "flatness_rows",
    "flat_configs",
]

DATA_DIR = Path(__file__).resolve().parent.parent / "data"


def load_records(
    experiment: str,
    profile: str,
    root: Optional[Path] = None,
    current: bool = True,
    problems: Optional[list] = None,
    folder: Optional[Path] = None,
) -> list[dict]:
    """Valid records of ``experiment`` under ``profile`` (``root``/experiment/profile, default data/;
    or the records folder ``folder`` itself). With ``current`` only the records of the experiment's
    present config for that profile, so a folder holding runs of an older config never mixes them
    into a table. Records that are invalid are left out and, with ``problems``, listed there."""
    from .experiments import make_experiment
    from .store import config_hash

    store = ResultsStore(Path(folder) if folder is not None else Path(root or DATA_DIR) / experiment / profile)
    records = store.records()
    if problems is not None:
        problems.extend(store.problems)
    if current:
        wanted = {config_hash(r) for r in make_experiment(experiment, profile).runs()}
        records = [r for r in records if r["config_hash"] in wanted]
    return records


def best_profile(
    experiment: str,
    root: Optional[Path] = None,
    order=("paper", "cpu", "quick"),
    folder: Optional[Path] = None,
    passed: Optional[list] = None,
) -> Optional[str]:
    """The largest profile whose every run has a record in ``root`` (paper, then cpu, then quick; or
    in the records folder ``folder``); a sweep still running (or killed midway) does not count, nor
    does a profile without runs. With ``passed``, the larger profiles passed over are listed there
    as (profile, valid records, runs)."""
    from .experiments import make_experiment

    for p in order:
        expected = len(make_experiment(experiment, p).runs())
        found = len(load_records(experiment, p, root, folder=folder))
        if expected and found == expected:
            return p
        if passed is not None and found:
            passed.append((p, found, expected))
    return None


def aggregate(records: Iterable[dict], metric: str = "best_val_nmse") -> list[dict]:
    groups = defaultdict(list)
    for r in records:
        c = r["config"]
        key = (c["label"], c["T"], json.dumps(c["target_params"], sort_keys=True))
        groups[key].append(r)
    rows = []
    for (label, T, params), recs in sorted(groups.items(), key=lambda kv: (kv[0][2], kv[0][1], kv[0][0])):
        vals = np.array([r["metrics"][metric] for r in recs if r["status"] == "done"], dtype=float)
        rows.append(
            {
                "label": label,
                "T": T,
                **json.loads(params),
                "n_seeds": len(recs),
                "n_failed": sum(r["status"] != "done" for r in recs),
                "mean": float(vals.mean()) if len(vals) else None,
                "std": float(vals.std()) if len(vals) else None,
                "best": float(vals.min()) if len(vals) else None,
                "worst": float(vals.max()) if len(vals) else None,
                "seeds": sorted(r["config"]["seed"] for r in recs),
                "device": sorted({r["provenance"]["device_name"] for r in recs}),
                "steps": recs[0]["metrics"]["steps"],
            }
        )
    return rows


def format_rows(rows: list[dict], fmt: str = "table") -> str:
    if fmt == "json":
        return json.dumps(rows, indent=1)
    cols = [k for k in rows[0] if k not in ("seeds", "device")] if rows else []
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
        return buf.getvalue()
    if fmt != "table":
        raise ValueError(f"format must be table, csv or json; got {fmt!r}")

    def cell(v):
        return f"{v:.3g}" if isinstance(v, float) else str(v)

    widths = [max(len(c), *(len(cell(r.get(c))) for r in rows)) for c in cols]
    lines = ["  ".join(c.rjust(w) for c, w in zip(cols, widths))]
    lines += ["  ".join(cell(r.get(c)).rjust(w) for c, w in zip(cols, widths)) for r in rows]
    return "\n".join(lines)


PROFILE_WORDS = {
    "paper": "paper profile (the paper's settings as the appendix restores them)",
    "cpu": "cpu profile: the largest scale that fits a 2-core CPU (our choice; the paper profile needs a GPU)",
    "quick": "quick profile (CPU, minutes)",
}


def describe(records: list[dict], profile: str) -> dict:
    """What was run, from the records' configs and provenance: for captions."""
    seeds = sorted({r["config"]["seed"] for r in records})
    devices = sorted({r["provenance"]["device_name"] for r in records})
    steps = sorted({r["metrics"]["steps"] for r in records})
    return {
        "profile": f"{profile} ({PROFILE_WORDS.get(profile, profile)})",
        "seeds": seeds,
        "device": ", ".join(devices),
        "steps": steps,
        "commits": sorted({(r["provenance"].get("git_commit") or "?")[:7] for r in records}),
    }


def run_text(records: list[dict], profile: str) -> str:
    """What was run, in a few words for a caption or a sentence: 'cpu profile, seeds 0, 1, 2, cpu'."""
    info = describe(records, profile)
    return f"{profile} profile, seeds {', '.join(map(str, info['seeds']))}, {info['device']}"


def mean_curves(records: list[dict], key: Callable[[dict], object]) -> dict:
    """Validation curves grouped by ``key(record)``: {key: (steps, geometric mean over the group's
    runs)}; runs of a group share their evaluation steps."""
    groups: dict = defaultdict(list)
    for r in records:
        groups[key(r)].append(r["curve"])
    return {
        k: (
            [s for s, _ in runs[0]],
            np.exp(np.mean(np.log(np.array([[v for _, v in c] for c in runs], dtype=float)), axis=0)),
        )
        for k, runs in groups.items()
    }


def run_curves(records: Iterable[dict], key: Callable[[dict], object]) -> dict:
    """Each run's validation curve, keyed by ``key(record)`` plus its seed, in the records' order:
    {(*key, seed): (steps, values)}."""
    out = {}
    for r in records:
        k = key(r)
        steps, vals = zip(*r["curve"])
        out[(*(k if isinstance(k, tuple) else (k,)), r["config"]["seed"])] = (steps, vals)
    return out


def curves_to_rows(curves: dict, names: Sequence[str], value: str = "val_nmse_geomean", **fixed) -> list[dict]:
    """A figure's CSV rows from curves {key: (steps, values)} (as :func:`mean_curves` or
    :func:`run_curves` return): one row
    per point, with the key's parts named by ``names``, the ``fixed`` columns, ``step`` and ``value``."""
    return [
        {**fixed, **dict(zip(names, key if isinstance(key, tuple) else (key,))), "step": s, value: float(v)}
        for key, (steps, vals) in curves.items()
        for s, v in zip(steps, vals)
    ]


def best_seeds(records: Iterable[dict]) -> dict:
    """{label: the finished run with the lowest best validation NMSE}: each configuration's best seed,
    the one App. C.1-C.2 report."""
    best: dict = {}
    for r in records:
        if r["status"] != "done":
            continue
        label = r["config"]["label"]
        if label not in best or r["metrics"]["best_val_nmse"] < best[label]["metrics"]["best_val_nmse"]:
            best[label] = r
    return best


def best_seed_curves(records: Iterable[dict]) -> dict:
    """The best seed's best-so-far validation curve per configuration: {label: (steps, running minimum
    of its validation NMSE)}, the best seed being the one with the lowest ``best_val_nmse`` (the paper
    keeps the best seed, App. C.1). Finished runs only."""
    out = {}
    for label, r in best_seeds(records).items():
        points = [(s, v) for s, v in r["curve"] if v is not None]
        out[label] = ([s for s, _ in points], np.minimum.accumulate([v for _, v in points]).tolist())
    return out


def seed_pairs(records: Iterable[dict], key: Callable[[dict], object], metric: str = "best_val_nmse") -> dict:
    """(seed, value of ``metric``) of every finished run, grouped by ``key(record)`` and sorted by seed:
    {key: [(seed, value), ...]}."""
    groups: dict = defaultdict(list)
    for r in records:
        if r["status"] == "done":
            groups[key(r)].append((r["config"]["seed"], float(r["metrics"][metric])))
    return {k: sorted(pairs) for k, pairs in groups.items()}


def seed_values(records: Iterable[dict], key: Callable[[dict], object], metric: str = "best_val_nmse") -> dict:
    """Per-seed values of ``metric`` over the finished runs, grouped by ``key(record)``:
    {key: [value of seed s for s in sorted seeds]}. For claims a mean hides (a seed that never
    leaves the plateau next to seeds that do)."""
    return {k: [v for _, v in pairs] for k, pairs in seed_pairs(records, key, metric).items()}


def tail_improvement(record: dict, fraction: float = 0.25) -> float:
    """How much the best validation NMSE improved over the last ``fraction`` of the evaluations, relative
    to the best before them: 0 when the tail found nothing better, 0.5 when it halved the error. Our
    test of "trained until the validation curve is flat": below 0.05 over the last quarter."""
    vals = [v for _, v in record["curve"] if v is not None]
    cut = max(1, int(round(len(vals) * (1 - fraction))))
    before = min(vals[:cut])
    return (before - min(vals)) / before if before > 0 else 0.0


def best_until(record: dict, step: int) -> float:
    """The best validation NMSE a run had reached by evaluation step ``step`` (its curve up to there)."""
    vals = [v for s, v in record["curve"] if s <= step and v is not None]
    if not vals:
        raise ValueError(f"the run has no evaluation at or before step {step}")
    return min(vals)


def geomean_best_until(records: Iterable[dict], steps: Sequence[int]) -> dict:
    """{step: geometric mean over ``records`` of :func:`best_until` that step}: how a group of runs
    was still improving (used where a mean would be ruled by one seed's plateau)."""
    records = list(records)
    return {s: float(np.exp(np.mean([np.log(best_until(r, s)) for r in records]))) for s in steps}


def second_half_ratio(record: dict) -> float:
    """Best validation NMSE of the whole run over the best of its first half (evaluations up to mid-run):
    well below 1 for a run still improving when its schedule ended."""
    vals = [v for _, v in record["curve"] if v is not None]
    return min(vals) / min(vals[: len(vals) // 2])


def best_seed_rows(records: list, level: float = 0.5) -> list:
    """App. C.1-C.2 as the paper reports them, one row per configuration from its best seed (lowest
    best validation NMSE): the seed, its error, how much the last quarter of training still improved it
    (:func:`tail_improvement`), the mean trained/initialized recovery ratio at the argmax (C.1) and
    second-largest (C.2) positions, and how many directions the first layer's heads and the last layer's
    CLS heads retrieve (:func:`~infoflow.probes.directions_covered`), apart and together, and, where
    the records have the argmin measurements, the first layer's directions counted by either end.
    Records need the direction measurements (``probes-paper-shapes``)."""
    from .probes import directions_covered, recovery_ratios

    rows = []
    for config, r in best_seeds(records).items():
        m = r["measurements"]
        first = directions_covered(m["directions_first_trained"], level)
        last = directions_covered(m["directions_last_trained"], level)
        row = {
            "config": config,
            "seed": r["config"]["seed"],
            "val_nmse": r["metrics"]["best_val_nmse"],
            "tail_improvement": tail_improvement(r),
            "c1_ratio": float(recovery_ratios(m, "argmax").mean()),
            "c2_ratio": float(recovery_ratios(m, "second").mean()),
            "first_layer_directions": len(first),
            "cls_directions": len(last),
            "directions_together": len(set(first) | set(last)),
        }
        if "directions_first_min_trained" in m:  # a head counts when it looks up either end
            ends = directions_covered(m["directions_first_trained"], level, other_end=m["directions_first_min_trained"])
            row["first_layer_directions_ends"] = len(ends)
            row["directions_together_ends"] = len(set(ends) | set(last))
        rows.append(row)
    return rows


def rerun_ratios(first: Iterable[dict], again: Iterable[dict]) -> dict:
    """The same runs (equal config hashes) trained twice: {(label, seed): best validation NMSE of the
    second over the first}. Apart from 1 by how much a run's outcome moves when only the order of
    floating-point sums changes (another thread count, another code version of the same arithmetic)."""
    before = {r["config_hash"]: r for r in first if r["status"] == "done"}
    return {
        (r["config"]["label"], r["config"]["seed"]): r["metrics"]["best_val_nmse"]
        / before[r["config_hash"]]["metrics"]["best_val_nmse"]
        for r in again
        if r["status"] == "done" and r["config_hash"] in before
    }


def length_rows(short: Iterable[dict], long: Iterable[dict]) -> list[dict]:
    """The same configurations trained for two lengths (labels match, schedules end at their own
    steps): per configuration, the best seed's and the mean seed's best validation NMSE at each length,
    the ratios long / short, and the exponent of the best seed's error in the steps (log of the ratio
    over log of the ratio of steps: -1 when 2x the steps halve it). A ratio near 1 says the shorter
    run had already converged; well below 1, that more steps still paid."""

    def by_label(records):
        groups: dict = defaultdict(list)
        for r in records:
            if r["status"] == "done":
                groups[r["config"]["label"]].append((r["metrics"]["best_val_nmse"], r["config"]["train"]["steps"]))
        return groups

    a, b = by_label(short), by_label(long)
    rows = []
    for label in [x for x in a if x in b]:
        (best_a, steps_a), (best_b, steps_b) = min(a[label]), min(b[label])
        rows.append(
            {
                "config": label,
                "best_short": best_a,
                "best_long": best_b,
                "best_ratio": best_b / best_a,
                "mean_ratio": float(np.mean([v for v, _ in b[label]]) / np.mean([v for v, _ in a[label]])),
                "exponent": float(np.log(best_b / best_a) / np.log(steps_b / steps_a)),
            }
        )
    return rows


def flatness_rows(
    short: Iterable[dict],
    long: Iterable[dict],
    reference: str,
    tail_limit: float = 0.05,
    ratio_limit: float = 0.8,
    previous: Optional[Iterable[dict]] = None,
) -> list[dict]:
    """Were the longer runs trained until flat? :func:`length_rows` with two tests (our criteria,
    DEFAULT): **within** the run, the longer best seed's :func:`tail_improvement` is below
    ``tail_limit``; **across** lengths, the longer best seed keeps at least ``ratio_limit`` of the
    shorter one's error. Also each configuration's best error over the ``reference`` configuration's,
    at either length (``vs_ref_short``, ``vs_ref_long``). With ``previous`` (the rows of the step before,
    shorter lengths) each row also carries that step's ``exponent`` as ``exponent_before``."""
    long = list(long)
    best_long = best_seeds(long)
    rows = length_rows(short, long)
    ref = next((r for r in rows if r["config"] == reference), None)
    if ref is None:
        raise ValueError(f"reference: {reference!r} is not among the configurations both lengths have")
    for row in rows:
        row["tail_gain"] = tail_improvement(best_long[row["config"]])
        row["flat_within"] = row["tail_gain"] < tail_limit
        row["flat_across"] = row["best_ratio"] >= ratio_limit
        row["vs_ref_short"] = row["best_short"] / ref["best_short"]
        row["vs_ref_long"] = row["best_long"] / ref["best_long"]
    if previous is not None:
        before = {r["config"]: r["exponent"] for r in previous}
        for row in rows:
            row["exponent_before"] = before[row["config"]]
    return rows


def flat_configs(rows: Iterable[dict]) -> list[str]:
    """The configurations of :func:`flatness_rows` flat by at least one of its two tests, sorted."""
    return sorted(r["config"] for r in rows if r["flat_within"] or r["flat_across"])


def pair_comparison(rows: Iterable[dict], seeds: Mapping[str, Sequence[float]], first: str, second: str) -> dict:
    """``first`` against ``second`` (e.g. h1 < D against h1 = D with the second layer fixed), from
    :func:`flatness_rows` and the longer runs' per-seed best errors (:func:`seed_values`): the ratio of
    the best seeds' errors at the longer (``best_long``) and shorter (``best_short``) length, the ratio
    of the seeds' means (``mean``), and whether the two seeds' ranges overlap (``overlap``)."""
    by_config = {r["config"]: r for r in rows}
    a, b = by_config[first], by_config[second]
    sa, sb = seeds[first], seeds[second]
    return {
        "best_long": a["best_long"] / b["best_long"],
        "best_short": a["best_short"] / b["best_short"],
        "mean": float(np.mean(sa) / np.mean(sb)),
        "overlap": _gap(sa, sb) is None,
    }


def pair_by_length(records_by_length: Mapping[int, Iterable[dict]], first: str, second: str) -> list[dict]:
    """``first`` against ``second`` (e.g. h1 < D against h1 = D, the second layer fixed) at every length
    ({steps: records}) where both were trained, shortest first: each one's best seed's error
    (``best_first``, ``best_second``), the ratios first / second of the best seeds (``best_ratio``) and
    of the seeds' means (``mean_ratio``), whether the seeds overlap, which one is ahead by a gap
    (``gap``: "first", "second" or None, :func:`_gap`), and the per-seed errors. A ratio that moves
    away from 1 with the seeds apart is a gap opening; with the seeds overlapping, a lead."""
    rows = []
    for steps, records in sorted(records_by_length.items()):
        seeds = seed_values(records, key=lambda r: r["config"]["label"])
        if first not in seeds or second not in seeds:
            continue
        a, b = seeds[first], seeds[second]
        gap = _gap(a, b)
        rows.append(
            {
                "steps": steps,
                "best_first": min(a),
                "best_second": min(b),
                "best_ratio": min(a) / min(b),
                "mean_ratio": float(np.mean(a) / np.mean(b)),
                "overlap": gap is None,
                "gap": gap,
                "seeds_first": a,
                "seeds_second": b,
            }
        )
    return rows


def _gap(first: Sequence[float], second: Sequence[float]) -> Optional[str]:
    """Our rule for a gap between two configurations (DEFAULT): "first" when every seed of ``first``
    ends below every seed of ``second``, "second" the other way round, None when the seeds' ranges
    overlap (a lead of the best seeds within overlapping seeds is no verdict)."""
    if max(first) < min(second):
        return "first"
    if max(second) < min(first):
        return "second"
    return None


def rows_by_length(records_by_length: Mapping[int, Iterable[dict]]) -> list[dict]:
    """The same App. C.1 configurations trained for several lengths ({steps: records}): one row per
    configuration (in order of first appearance) with its best seed's (:func:`best_seed_rows`) error,
    C.1 ratio, first-layer directions and directions retrieved together at each length, as
    ``val_nmse_STEPS``, ``c1_STEPS``, ``layer1_STEPS`` and ``together_STEPS``; None where the
    configuration was not trained that long."""
    fields = {
        "val_nmse": "val_nmse",
        "c1": "c1_ratio",
        "layer1": "first_layer_directions",
        "together": "directions_together",
    }
    best = {
        steps: {r["config"]: r for r in best_seed_rows(list(recs))} for steps, recs in sorted(records_by_length.items())
    }
    configs = list(dict.fromkeys(c for rows in best.values() for c in rows))
    return [
        {
            "config": c,
            **{
                f"{short}_{steps}": rows[c][field] if c in rows else None
                for short, field in fields.items()
                for steps, rows in best.items()
            },
        }
        for c in configs
    ]


def trend_text(row: dict, field: str, steps: Sequence[int]) -> str:
    """One configuration's ``field`` across lengths as "a -> b -> c" (lengths where it was not trained
    left out), e.g. the first-layer directions of a :func:`rows_by_length` row."""
    return " -> ".join(str(row[f"{field}_{s}"]) for s in steps if row.get(f"{field}_{s}") is not None)


def behind_at_end(long: Iterable[dict], short: Iterable[dict]) -> dict:
    """{label: how far the longer run's best seed was, at the shorter schedule's last step, above the
    shorter run's best seed at its end} (best validation NMSE so far over best; above 1 when the longer
    schedule, its learning rate still high there, had not yet caught up)."""
    bl, bs = best_seeds(long), best_seeds(short)
    out = {}
    for label in [c for c in bs if c in bl]:
        end = bs[label]["config"]["train"]["steps"]
        out[label] = best_until(bl[label], end) / best_until(bs[label], end)
    return out
