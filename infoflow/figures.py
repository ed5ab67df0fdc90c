"""Figures for citing: every figure saved as PDF, SVG and PNG with the CSV of its data and a
caption that says what was run (profile, seeds, device), under a stable name in ``book/figures/``.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import matplotlib

matplotlib.rcParams["svg.hashsalt"] = "infoflow-book"  # stable SVG ids, so files diff cleanly
matplotlib.rcParams["svg.fonttype"] = "none"

FIGURE_DIR = Path(os.environ.get("INFOFLOW_FIGURE_DIR", Path(__file__).resolve().parent.parent / "book" / "figures"))
FORMATS = ("pdf", "svg", "png")

__all__ = [
    "save_figure",
    "caption",
    "FIGURE_DIR",
    "plot_information_flow",
    "plot_seed_spread",
    "table",
    "show_figure",
    "span",
    "numbers",
]


def plot_seed_spread(ax, rows, x: str, series: str = "label", logy: bool = True, markers="osD^v<>"):
    """One line per ``series`` of the mean over seeds against ``x``, a band from the best to the
    worst seed. ``rows`` come from :func:`infoflow.results.aggregate`."""
    names = list(dict.fromkeys(r[series] for r in rows))
    for i, name in enumerate(names):
        rs = sorted((r for r in rows if r[series] == name and r["mean"] is not None), key=lambda r: r[x])
        xs = [r[x] for r in rs]
        (line,) = ax.plot(xs, [r["mean"] for r in rs], marker=markers[i % len(markers)], label=str(name))
        ax.fill_between(xs, [r["best"] for r in rs], [r["worst"] for r in rs], color=line.get_color(), alpha=0.2)
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel(x)
    ax.legend(fontsize=8)
    return ax


def caption(text: str, profile: str, seeds: Sequence[int] | str | None = None, device: str = "cpu") -> str:
    """A caption that says what was run: ``text`` + profile, seeds, device."""
    s = "none (no training)" if seeds is None else (seeds if isinstance(seeds, str) else ", ".join(map(str, seeds)))
    return f"{text.rstrip('.')}. Profile: {profile}; seeds: {s}; device: {device}."


def save_figure(fig, name: str, rows: Iterable[Mapping], caption_text: str, outdir: Path | str | None = None) -> dict:
    """Save ``fig`` as ``name``.pdf/.svg/.png, its data ``rows`` as ``name``.csv and the caption as
    ``name``.json. Returns the paths written. ``name`` must be a stable slug (letters, digits, - _)."""
    if not name or not all(c.isalnum() or c in "-_" for c in name):
        raise ValueError(f"name must be a slug of letters, digits, '-' and '_', got {name!r}")
    rows = list(rows)
    if not rows:
        raise ValueError(f"rows: figure {name!r} needs the data it plots (at least one row)")
    _csv_path(name, outdir, "figure")  # refused before anything is written if a table has the name
    outdir = Path(outdir) if outdir is not None else FIGURE_DIR
    outdir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for fmt in FORMATS:
        path = outdir / f"{name}.{fmt}"
        meta = {"Creator": "infoflow-book"} if fmt in ("pdf", "svg") else {"Software": "infoflow-book"}
        if fmt == "pdf":
            meta["CreationDate"] = None
        if fmt == "svg":
            meta["Date"] = None
        fig.savefig(path, bbox_inches="tight", dpi=150, metadata=meta)
        paths[fmt] = str(path)
    paths["csv"] = str(_write_csv(rows, name, outdir, kind="figure"))
    with open(outdir / f"{name}.json", "w") as fh:
        json.dump(
            {"name": name, "caption": caption_text, "files": sorted(Path(p).name for p in paths.values())}, fh, indent=1
        )
    paths["json"] = str(outdir / f"{name}.json")
    return paths


def plot_information_flow(trace, ax=None, labels: Sequence[str] | None = None):
    """Positions × layers diagram of a :class:`~infoflow.infosets.Trace`: each node lists I_t^(l);
    arrows show the argmax retrievals (max-position heads) from layer l−1 to layer l."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(1.6 * (trace.T + 1) + 1, 1.5 * (trace.L + 1) + 0.5))
    colors = plt.get_cmap("tab10")
    for l in range(trace.L + 1):
        for t in range(trace.T + 1):
            s = trace.sets[l][t]
            text = "{" + ",".join(map(str, sorted(s))) + "}" if s else "∅"
            ax.text(
                t,
                l,
                text,
                ha="center",
                va="center",
                fontsize=9,
                bbox=dict(boxstyle="round", fc="#fde7c8" if t == 0 else "#e8eef8", ec="0.4"),
            )
    for l in range(1, trace.L + 1):
        for t in range(trace.T + 1):
            if l == trace.L and t != 0:
                continue
            for i, pick in enumerate(trace.picks[l - 1][t]):
                if isinstance(pick, int) and pick != t:
                    ax.annotate(
                        "",
                        xy=(t, l - 0.22),
                        xytext=(pick, l - 1 + 0.22),
                        arrowprops=dict(arrowstyle="->", color=colors(i), lw=1.3, connectionstyle="arc3,rad=0.12"),
                    )
    ax.set_xticks(range(trace.T + 1))
    ax.set_xticklabels(labels or ["CLS"] + [f"t={t}" for t in range(1, trace.T + 1)])
    ax.set_yticks(range(trace.L + 1))
    ax.set_yticklabels([f"layer {l}" for l in range(trace.L + 1)])
    ax.set_xlim(-0.6, trace.T + 0.6)
    ax.set_ylim(-0.5, trace.L + 0.5)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    return ax


def _cell(value, digits: int):
    if isinstance(value, bool) or value is None:
        return "" if value is None else ("yes" if value else "no")
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(str(_cell(v, digits)) for v in value)
    return value


_CSV_KINDS: dict = {}  # path of each CSV written in this process -> "table" or "figure"


def _csv_path(name: str, outdir: Path | str | None, kind: str) -> Path:
    """Where ``name``.csv (a stable slug) of a ``kind`` ("table" or "figure") goes. A table and a figure
    may not share a name: the second would overwrite the first's data (the same kind again, as a
    re-executed cell writes it, is fine)."""
    if not all(c.isalnum() or c in "-_" for c in name):
        raise ValueError(f"name must be a slug of letters, digits, '-' and '_', got {name!r}")
    outdir = Path(outdir) if outdir is not None else FIGURE_DIR
    path = (outdir / f"{name}.csv").resolve()
    if _CSV_KINDS.setdefault(path, kind) != kind:
        raise ValueError(f"name {name!r} is already a {_CSV_KINDS[path]}'s in {outdir}; give this {kind} another name")
    return path


def _write_csv(rows: list[dict], name: str, outdir: Path | str | None = None, kind: str = "table") -> Path:
    """Every field of ``rows`` at full precision as ``name``.csv in ``outdir`` (:func:`_csv_path`)."""
    path = _csv_path(name, outdir, kind)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(dict.fromkeys(k for r in rows for k in r)))
        writer.writeheader()
        writer.writerows(rows)
    return path


def table(
    rows: Iterable[Mapping],
    columns: Mapping[str, str] | Sequence[str] | None = None,
    name: str | None = None,
    caption: str | None = None,
    digits: int = 3,
    outdir: Path | str | None = None,
):
    """A table for the book: ``rows`` (dicts) as a pandas Styler that renders as an HTML table, the
    ``columns`` in order under their headers (a mapping field → header, or a list of fields), numbers to
    ``digits`` significant digits, no index. With ``name`` the full rows (every field, full precision)
    are also saved as ``name``.csv beside the figures, for a reader to download."""
    import pandas as pd

    rows = [dict(r) for r in rows]
    if not rows:
        raise ValueError(f"rows: table {name or ''!r} has no rows")
    if columns is None:
        columns = list(dict.fromkeys(k for r in rows for k in r))
    headers = dict(columns) if isinstance(columns, Mapping) else {c: c for c in columns}
    missing = [c for c in headers if not any(c in r for r in rows)]
    if missing:
        raise ValueError(f"columns: {missing} not in the rows (fields: {sorted({k for r in rows for k in r})})")
    if name is not None:
        _write_csv(rows, name, outdir)
    frame = pd.DataFrame([{h: _cell(r.get(c), digits) for c, h in headers.items()} for r in rows])
    styler = frame.style.hide(axis="index").set_uuid(name or "table")
    styler = styler.set_table_styles(
        [
            {"selector": "", "props": "font-size: 0.85em; border-collapse: collapse; margin-bottom: 0.5em"},
            {"selector": "th, td", "props": "padding: 2px 8px; text-align: left; vertical-align: top"},
            {"selector": "caption", "props": "caption-side: top; text-align: left; font-style: italic"},
        ]
    )
    return styler.set_caption(caption) if caption else styler


def show_figure(fig, name: str, rows: Iterable[Mapping], caption_text: str) -> None:
    """Save ``fig`` for citing (:func:`save_figure`) and glue it under ``name`` for a numbered
    ``{glue:figure}`` in the chapter (myst-nb), without displaying it in the cell (nor the paths,
    which name this machine's folders)."""
    import matplotlib.pyplot as plt
    from myst_nb import glue

    save_figure(fig, name, rows, caption_text)
    glue(name, fig, display=False)
    plt.close(fig)


def span(values, fmt: str = ".3g", sep: str = " to ") -> str:
    """A range of numbers for prose: '0.84 to 0.86', or one number when both ends print the same."""
    values = list(values)
    low, high = format(min(values), fmt), format(max(values), fmt)
    return low if low == high else f"{low}{sep}{high}"


def per_config(rows: Mapping[str, Mapping], key: str, fmt: str = "") -> str:
    """One field of each configuration's row, for prose: '(6,6) 0.52; (5,6) 0.61' (rows in their order)."""
    return "; ".join(f"{config} {format(row[key], fmt)}" for config, row in rows.items())


def numbers(values, fmt: str = ".2g") -> str:
    """Numbers listed for prose: '1.1, 2.4 and 1.1'."""
    texts = [format(v, fmt) for v in values]
    return texts[0] if len(texts) == 1 else ", ".join(texts[:-1]) + " and " + texts[-1]
