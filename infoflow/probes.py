"""Recovery probes of App. C.1–C.2 (eq. 56, appendix: error measures; the normaliser is RECONSTRUCTED).

For first-layer head i and query position t, s* is the key with the largest (C.1) or second-largest
(C.2) attention weight. The probe fits by least squares the best affine map W_i from the
post-attention state z_t (layer-1 output at t, before the FFN) to the token x_{s*}, and reports
R_i = E‖W_i z_t − x_{s*}‖² / E‖x_{s*} − E x_{s*}‖², pooled over token positions t = 1..T and samples
(queries whose s* is the CLS, which carries no token, are left out). The trained/initialised ratio
does not depend on the normaliser.
"""

from __future__ import annotations

import numpy as np
import torch

from .paper import head_counts

__all__ = [
    "recovery_errors",
    "probe_table",
    "probe_rows",
    "probe_summary",
    "first_layer_heads",
    "head_alignment",
    "direction_alignment",
    "end_rule_accuracy",
    "direction_measurements",
    "directions_covered",
    "end_rows",
    "end_summary",
    "head_rows",
    "head_classes",
    "alignment_shares",
]


@torch.no_grad()
def head_alignment(model, A: torch.Tensor, X: torch.Tensor) -> torch.Tensor:
    """Which pairing each first-layer head has learned (Sec. 6.1, eq. 6): for head j and matrix A_i,
    the fraction of token queries s = 1..T whose most-attended key is argmax_t x_sᵀA_i x_t, the
    partner the construction's head i looks up; then the same for A_iᵀ (argmax_t x_tᵀA_i x_s), the
    other orientation, which serves max_{s,t} x_sᵀA_i x_t as well. X (M, B, T, d), A (D, d, d) →
    (M, h, 2D): columns A_1..A_D, then A_1ᵀ..A_Dᵀ. Chance is about 1/(T+1) (a CLS key never matches)."""
    _, records = model(X, record=True)
    att = records[0]["attention"][:, :, :, 1:, :]  # (M, B, h, T, T+1): token queries
    looked_up = att.argmax(-1) - 1  # key position as a token index; CLS → -1
    A = A.to(X.dtype)
    both = torch.cat([A, A.transpose(-1, -2)])  # (2D, d, d)
    scores = torch.einsum("mbsd,ide,mbte->mbist", X, both, X)  # (M, B, 2D, T, T): x_sᵀ A x_t
    partner = scores.argmax(-1)  # (M, B, 2D, T)
    hits = looked_up[:, :, :, None, :] == partner[:, :, None, :, :]  # (M, B, h, 2D, T)
    return hits.double().mean(dim=(1, 4))


def _ends(X: torch.Tensor, a: torch.Tensor, end: str) -> torch.Tensor:
    """The token at one end of each direction: (M, B, T, d), (D, d) → (M, B, D), 0-based."""
    if end not in ("max", "min"):
        raise ValueError(f"end must be 'max' or 'min', got {end!r}")
    proj = torch.einsum("mbtd,id->mbit", X, a.to(X.dtype))
    return proj.argmax(-1) if end == "max" else proj.argmin(-1)


def _looked_up(att: torch.Tensor) -> torch.Tensor:
    """Each query's most-attended key as a token index (CLS → -1): (M, B, h, Q, S) → (M, B, h, Q)."""
    return att.argmax(-1) - 1


@torch.no_grad()
def direction_alignment(model, a: torch.Tensor, X: torch.Tensor, end: str = "max") -> tuple:
    """Which direction of generalized D-retrieval each head retrieves ("spread then read", the engine's
    construction for h1 < D): for head j and direction a_i, the fraction of queries whose most-attended
    key is argmax_t a_iᵀx_t (``end="min"``: argmin_t). Layer 1 over the token queries, the last layer
    over the CLS query. X (M, B, T, d), a (D, d) → (layer 1 (M, h1, D), last layer (M, h_L, D)).
    Chance is about 1/(T+1). A first-layer head whose score is bilinear in query and key, with no
    query-independent part, looks up the argmax for queries on one side of a hyperplane and the argmin
    for the rest (:func:`end_rule_accuracy`): its argmax alignment stays near 0.5, its two ends sum to 1."""
    _, records = model(X, record=True)
    return _alignment(records, a, X, end)


def _alignment(records: list, a: torch.Tensor, X: torch.Tensor, end: str) -> tuple:
    """:func:`direction_alignment` from a forward pass's records."""
    best = _ends(X, a, end)  # (M, B, D)

    def hits(att):  # att (M, B, h, Q, S): fraction of queries whose argmax key is the token best_i
        return (_looked_up(att)[:, :, :, None, :] == best[:, :, None, :, None]).double().mean(dim=(1, 4))

    first = hits(records[0]["attention"][:, :, :, 1:, :])
    last = hits(records[-1]["attention"][:, :, :, :1, :])
    return first, last


@torch.no_grad()
def end_rule_accuracy(model, a: torch.Tensor, X: torch.Tensor) -> torch.Tensor:
    """For each first-layer head, which end of its direction a query looks up: over the token queries
    that look up the argmax or the argmin token of the head's best direction (by both ends together),
    the accuracy of the best affine rule in the query token x_t (least squares on ±1) that tells the
    two apart. 1.0: the end is set by the side of a hyperplane the query lies on, as for a score
    (uᵀx_t)(a_iᵀx_s); NaN for a head that looks up no end. X (M, B, T, d), a (D, d) → (M, h1)."""
    _, records = model(X, record=True)
    return _end_rule(records, a, X)


@torch.no_grad()
def direction_measurements(model, a: torch.Tensor, X: torch.Tensor) -> dict:
    """The direction probes from one forward pass: first-layer alignment to each direction's argmax
    (``first``) and argmin (``first_min``) token, the last layer's CLS alignment to the argmax
    (``last``), and the first layer's end rule (``rule``); as :func:`direction_alignment` and
    :func:`end_rule_accuracy` give them."""
    _, records = model(X, record=True)
    first, last = _alignment(records, a, X, "max")
    first_min, _ = _alignment(records, a, X, "min")
    return {"first": first, "first_min": first_min, "last": last, "rule": _end_rule(records, a, X)}


def _end_rule(records: list, a: torch.Tensor, X: torch.Tensor) -> torch.Tensor:
    """:func:`end_rule_accuracy` from a forward pass's records."""
    looked = _looked_up(records[0]["attention"][:, :, :, 1:, :])  # (M, B, h, T)
    top, bottom = (_ends(X, a, end)[:, :, None, :, None] == looked[:, :, :, None, :] for end in ("max", "min"))
    best = (top | bottom).double().mean(dim=(1, 4)).argmax(-1)  # (M, h): the head's direction
    M, _, h, _ = looked.shape
    out = torch.full((M, h), float("nan"), dtype=torch.float64)
    for m in range(M):
        for i in range(h):
            hi, lo = top[m, :, i, best[m, i]], bottom[m, :, i, best[m, i]]  # (B, T)
            sel = hi | lo
            if sel.sum() < 2:
                continue
            feats = torch.cat([X[m][sel], torch.ones(int(sel.sum()), 1, dtype=X.dtype)], dim=1).double()
            y = hi[sel].double() * 2 - 1
            w = torch.linalg.lstsq(feats, y[:, None]).solution[:, 0]
            out[m, i] = ((feats @ w).sign() == y).double().mean()
    return out


@torch.no_grad()
def recovery_errors(model, X: torch.Tensor, rank: int = 1, layer: int = 0, ridge: float = 1e-6) -> torch.Tensor:
    """R_i for every member and head of ``layer``: shape (M, h). ``rank`` 1 = argmax, 2 = second."""
    if rank not in (1, 2):
        raise ValueError(f"rank must be 1 (argmax) or 2 (second largest), got {rank}")
    X = X.double() if X.dtype == torch.float64 else X
    _, records = model(X, record=True)
    att = records[layer]["attention"]  # (M, B, h, S, S)
    z = records[layer]["post_attention"][:, :, 1:]  # (M, B, T, E): token positions only
    star = att[:, :, :, 1:, :].topk(rank, dim=-1).indices[..., rank - 1]  # (M, B, h, T)
    M, B, h, T = star.shape
    out = torch.empty(M, h, dtype=torch.float64)
    Xpad = torch.cat([torch.zeros_like(X[:, :, :1]), X], dim=2)  # position 0 = CLS: no token
    for m in range(M):
        feats = torch.cat([z[m].reshape(B * T, -1), torch.ones(B * T, 1, device=z.device)], dim=1).double()
        for i in range(h):
            s = star[m, :, i].reshape(B * T)
            keep = s > 0
            Z = feats[keep]
            Y = (
                Xpad[m]
                .reshape(B * (T + 1), -1)[(torch.arange(B, device=s.device).repeat_interleave(T) * (T + 1) + s)[keep]]
                .double()
            )
            A = Z.T @ Z + ridge * torch.eye(Z.shape[1], dtype=Z.dtype, device=Z.device)
            W = torch.linalg.solve(A, Z.T @ Y)
            err = ((Z @ W - Y) ** 2).sum(1).mean()
            var = ((Y - Y.mean(0)) ** 2).sum(1).mean()
            out[m, i] = (err / var).item()
    return out


def probe_table(initial: torch.Tensor, trained: torch.Tensor) -> dict:
    """Rows of Tables 1–10: initialised, trained, ratio (per head)."""
    return {"initialized": initial.tolist(), "trained": trained.tolist(), "ratio": (trained / initial).tolist()}


def recovery_ratios(measurements: dict, kind: str = "argmax") -> np.ndarray:
    """Per first-layer head, trained / initialized recovery error of a run's probe measurements:
    ``kind`` "argmax" is App. C.1's ratio, "second" App. C.2's (Tables 1-10 report it per head)."""
    if kind not in ("argmax", "second"):
        raise ValueError(f"kind must be 'argmax' or 'second', got {kind!r}")
    return np.asarray(measurements[f"recovery_{kind}_trained"], dtype=float) / np.asarray(
        measurements[f"recovery_{kind}_init"], dtype=float
    )


def probe_rows(records: list) -> list:
    """One row per (run, probe kind) from run records with probe measurements: config label, seed,
    probe ("argmax" / "second"), per-head initialized / trained errors and their ratio, val NMSE."""
    rows = []
    for r in records:
        m = r["measurements"]
        for kind in ("argmax", "second"):
            rows.append(
                {
                    "config": r["config"]["label"],
                    "seed": r["config"]["seed"],
                    "probe": kind,
                    "init": np.array(m[f"recovery_{kind}_init"]),
                    "trained": np.array(m[f"recovery_{kind}_trained"]),
                    "ratio": recovery_ratios(m, kind),
                    "val_nmse": r["metrics"]["best_val_nmse"],
                }
            )
    return rows


def first_layer_heads(label: str) -> int:
    """h1 of a probes configuration labelled "(h1,h2)"."""
    return head_counts(label)[0]


def probe_summary(rows: list, D: int) -> dict:
    """The quantities App. C.1–C.2 argue from: mean ratio per configuration for each probe, the share
    of heads whose argmax recovery improved, the mean argmax ratio with h₁ ≥ D and with h₁ < D, and the
    worst trained argmax error against the best trained second-largest error."""
    configs = list(dict.fromkeys(r["config"] for r in rows))

    def mean_ratio(kind, c):
        return float(np.mean([r["ratio"].mean() for r in rows if r["probe"] == kind and r["config"] == c]))

    arg = {c: mean_ratio("argmax", c) for c in configs}
    sec = {c: mean_ratio("second", c) for c in configs}
    ge = [c for c in configs if first_layer_heads(c) >= D]
    lt = [c for c in configs if c not in ge]
    return {
        "argmax": arg,
        "second": sec,
        "heads_improved": float(np.mean(np.concatenate([r["ratio"] < 1 for r in rows if r["probe"] == "argmax"]))),
        "mean_argmax_h1_ge_D": float(np.mean([arg[c] for c in ge])) if ge else None,
        "mean_argmax_h1_lt_D": float(np.mean([arg[c] for c in lt])) if lt else None,
        "worst_trained_argmax": float(max(r["trained"].max() for r in rows if r["probe"] == "argmax")),
        "best_trained_second": float(min(r["trained"].min() for r in rows if r["probe"] == "second")),
    }


def directions_covered(alignment, level: float = 0.5, other_end=None) -> list:
    """The directions some head retrieves at least ``level`` of the time, from one member's alignment
    (heads x D, as :func:`direction_alignment` gives per member; a nested list from a record works).
    With ``other_end`` (the same member's argmin alignment), a head counts when it looks up either end."""
    alignment = np.asarray(alignment, dtype=float)
    if other_end is not None:
        alignment = alignment + np.asarray(other_end, dtype=float)
    return [i for i in range(alignment.shape[1]) if (alignment[:, i] >= level).any()]


def end_rows(records) -> list:
    """One row per first-layer head of each run that has the two-ended measurements (records of the
    ``probes-paper-shapes`` experiments from the version that added them; others are skipped): its C.1
    ratio, its direction (the one whose argmax or argmin it looks up most), how often it looks up that
    direction's argmax token (``top``), its argmin token (``bottom``), the two together (``ends``), and
    the accuracy of the affine rule in the query that tells which (:func:`end_rule_accuracy`; None for
    a head that looks up no end)."""
    rows = []
    for r in records:
        m = r["measurements"]
        if "directions_first_min_trained" not in m:
            continue
        top = np.asarray(m["directions_first_trained"], dtype=float)  # (h1, D)
        bottom = np.asarray(m["directions_first_min_trained"], dtype=float)
        ratio = recovery_ratios(m, "argmax")
        for head, direction in enumerate((top + bottom).argmax(1)):
            rows.append(
                {
                    "config": r["config"]["label"],
                    "seed": r["config"]["seed"],
                    "steps": r["config"]["train"]["steps"],
                    "head": head,
                    "c1_ratio": float(ratio[head]),
                    "direction": int(direction),
                    "top": float(top[head, direction]),
                    "bottom": float(bottom[head, direction]),
                    "ends": float(top[head, direction] + bottom[head, direction]),
                    "rule": m["end_rule_first_trained"][head],
                }
            )
    return rows


def end_summary(rows: list, level: float = 0.5) -> dict:
    """Heads (rows of :func:`end_rows`) that look up an end of one direction, either end, at least
    ``level`` of the time (``two_ended``): how many of all, their mean argmax and argmin shares, the
    lowest and the median accuracy of the rule telling the ends apart; and how many heads reach
    ``level`` by the argmax end alone (the count :func:`directions_covered` makes without ``other_end``)."""
    if not rows:
        raise ValueError("end_summary needs at least one head row")
    two = [r for r in rows if r["ends"] >= level]
    rules = [r["rule"] for r in two if r["rule"] is not None]
    return {
        "heads": len(rows),
        "two_ended": len(two),
        "top": float(np.mean([r["top"] for r in two])) if two else float("nan"),
        "bottom": float(np.mean([r["bottom"] for r in two])) if two else float("nan"),
        "rule_min": float(min(rules)) if rules else float("nan"),
        "rule_median": float(np.median(rules)) if rules else float("nan"),
        "argmax_alone": sum(r["top"] >= level for r in rows),
    }


def head_rows(records) -> list:
    """One row per first-layer head of each run: its C.1 ratio (trained/initialized argmax recovery
    error) beside how often it looks up one direction's argmax token (its best direction alignment,
    :func:`direction_alignment`). The paper reports the ratio per head (Tables 1-3); this puts the two
    probes of one head side by side. Records need the direction measurements (``probes-paper-shapes``)."""
    rows = []
    for r in records:
        m = r["measurements"]
        ratio = recovery_ratios(m, "argmax")
        alignment = np.asarray(m["directions_first_trained"], dtype=float)  # (h1, D)
        for head, (value, aligned) in enumerate(zip(ratio, alignment)):
            rows.append(
                {
                    "config": r["config"]["label"],
                    "seed": r["config"]["seed"],
                    "steps": r["config"]["train"]["steps"],
                    "head": head,
                    "c1_ratio": float(value),
                    "alignment": float(aligned.max()),
                    "direction": int(aligned.argmax()),
                }
            )
    return rows


def alignment_shares(rows: list, near: float = 0.1, high: float = 0.6) -> dict:
    """Where heads' argmax alignments (rows of :func:`head_rows`) lie against one half, the level a
    head that looks up both ends of its direction sits at (:func:`direction_alignment`): the share
    within ``near`` of one half, the share at one half or more, and the share at ``high`` or more."""
    if not rows:
        raise ValueError("alignment_shares needs at least one head row")
    aligned = np.array([r["alignment"] for r in rows])
    return {
        "near_half": float(np.mean(np.abs(aligned - 0.5) < near)),
        "at_least_half": float(np.mean(aligned >= 0.5)),
        "high": float(np.mean(aligned >= high)),
    }


def head_classes(rows: list, low: float = 0.4, high: float = 0.9, level: float = 0.5) -> dict:
    """Sort heads (rows of :func:`head_rows`) by their C.1 ratio: ``low`` (below ``low``: the token is
    read back far better than at initialization), ``high`` (at least ``high``: no better than at
    initialization), ``mid`` between. Returns the share of each class, the correlation of ratio and
    alignment over all heads, the median ratio of the low heads, the mean alignment of the low and of
    the high heads (NaN for an empty class), and the ``exceptions``: heads with a high ratio that still
    look up one direction at least ``level`` of the time, as (config, seed, head)."""
    if not rows:
        raise ValueError("head_classes needs at least one head row")
    ratio = np.array([r["c1_ratio"] for r in rows])
    aligned = np.array([r["alignment"] for r in rows])
    is_low, is_high = ratio < low, ratio >= high

    def stat(fn, values, mask):
        return float(fn(values[mask])) if mask.any() else float("nan")

    return {
        "heads": len(rows),
        "low": float(is_low.mean()),
        "mid": float((~is_low & ~is_high).mean()),
        "high": float(is_high.mean()),
        "correlation": float(np.corrcoef(ratio, aligned)[0, 1]) if len(rows) > 1 else float("nan"),
        "low_median": stat(np.median, ratio, is_low),
        "low_alignment": stat(np.mean, aligned, is_low),
        "high_alignment": stat(np.mean, aligned, is_high),
        "exceptions": [(r["config"], r["seed"], r["head"]) for r, e in zip(rows, is_high & (aligned >= level)) if e],
    }
