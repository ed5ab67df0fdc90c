import csv
import json

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pytest

from infoflow.figures import caption, plot_information_flow, save_figure
from infoflow.infosets import InfoFlowModel, MaxPosition, self_score


def test_save_figure_writes_every_format(tmp_path):
    fig, ax = plt.subplots()
    ax.plot([1, 2], [3, 4])
    cap = caption("A line", profile="quick", seeds=[0, 1], device="cpu")
    assert "Profile: quick" in cap and "seeds: 0, 1" in cap and "device: cpu" in cap
    paths = save_figure(fig, "demo-line", [{"x": 1, "y": 3}, {"x": 2, "y": 4}], cap, outdir=tmp_path)
    for ext in ("pdf", "svg", "png", "csv", "json"):
        assert (tmp_path / f"demo-line.{ext}").stat().st_size > 0
    assert list(csv.DictReader(open(paths["csv"])))[1] == {"x": "2", "y": "4"}
    assert json.load(open(paths["json"]))["caption"] == cap
    plt.close(fig)


def test_save_figure_bad_input(tmp_path):
    fig = plt.figure()
    with pytest.raises(ValueError, match="slug"):
        save_figure(fig, "bad name", [{"a": 1}], "c", outdir=tmp_path)
    with pytest.raises(ValueError, match="rows"):
        save_figure(fig, "ok", [], "c", outdir=tmp_path)
    plt.close(fig)


def test_a_table_and_a_figure_may_not_share_a_csv(tmp_path):
    from infoflow.figures import table

    fig = plt.figure()
    save_figure(fig, "shared", [{"seed": 0, "nmse": 0.1}], "c", outdir=tmp_path)
    save_figure(fig, "shared", [{"seed": 1, "nmse": 0.2}], "c", outdir=tmp_path)  # a cell run again: fine
    with pytest.raises(ValueError, match="'shared' is already a figure's"):
        table([{"mean": 0.15}], name="shared", outdir=tmp_path)
    assert list(csv.DictReader(open(tmp_path / "shared.csv"))) == [{"seed": "1", "nmse": "0.2"}]  # not overwritten
    table([{"mean": 0.15}], name="shared-means", outdir=tmp_path)
    with pytest.raises(ValueError, match="'shared-means' is already a table's"):
        save_figure(fig, "shared-means", [{"seed": 0}], "c", outdir=tmp_path)
    assert not (tmp_path / "shared-means.png").exists()  # refused before anything was written
    plt.close(fig)


def test_plot_information_flow_draws_every_set():
    tr = InfoFlowModel([[MaxPosition(self_score())]]).run(np.zeros((3, 1)) + np.arange(3)[:, None])
    ax = plot_information_flow(tr)
    assert len(ax.texts) == (tr.L + 1) * (tr.T + 1)
    plt.close(ax.figure)


def test_span_and_numbers_write_numbers_for_prose():
    from infoflow.figures import numbers, span

    assert span([0.843, 0.856, 0.85]) == "0.843 to 0.856" and span([0.9851, 0.9849], ".3g") == "0.985"
    assert span([1.0, 2.0], ".2g", "-") == "1-2"
    assert numbers([1.13, 2.4]) == "1.1 and 2.4" and numbers([1, 2, 3], "d") == "1, 2 and 3" and numbers([7]) == "7"


def test_per_config_lists_one_field_per_configuration_in_order():
    from infoflow.figures import per_config

    rows = {"(6,6)": {"ratio": 0.5234, "heads": 6}, "(5,6)": {"ratio": 0.61, "heads": 5}}
    assert per_config(rows, "ratio", ".2f") == "(6,6) 0.52; (5,6) 0.61"
    assert per_config(rows, "heads") == "(6,6) 6; (5,6) 5"
