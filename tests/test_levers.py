"""The Sec. 6.1 study's levers of the training recipe and its probe of the first layer's heads:
each lever does what it says, leaves the paper recipe as it was at its default, and resumes exactly."""

import math

import numpy as np
import pytest
import torch

from infoflow.experiments import ConfigError, make_experiment
from infoflow.model import EnsembleTransformer, ModelConfig
from infoflow.probes import head_alignment
from infoflow.store import config_hash
from infoflow.targets import IntrinsicDimension
from infoflow.train import Checkpoint, TrainConfig, lr_at, train_ensemble


def test_warmup_rises_linearly_then_follows_the_cosine_over_the_remaining_steps():
    c = TrainConfig(steps=110, lr=1e-2, warmup_steps=10)
    assert [lr_at(s, c) for s in (0, 4, 9)] == pytest.approx([1e-3, 5e-3, 1e-2])
    assert lr_at(10, c) == pytest.approx(1e-2) and lr_at(60, c) == pytest.approx(5e-3)
    assert lr_at(109, c) == pytest.approx(0.5e-2 * (1 + math.cos(math.pi * 99 / 100)))
    plain = TrainConfig(steps=110, lr=1e-2)
    assert [lr_at(s, plain) for s in range(110)] == [0.5e-2 * (1 + math.cos(math.pi * s / 110)) for s in range(110)]


@pytest.mark.parametrize(
    "kw, message",
    [
        ({"warmup_steps": 10}, "warmup_steps must be an integer in \\[0, steps = 10\\)"),
        ({"warmup_steps": -1}, "warmup_steps"),
        ({"beta2": 1.0}, "beta2 must be in \\(0, 1\\)"),
        ({"curriculum": [(4,)]}, "each stage must be \\(T, steps\\)"),
        ({"curriculum": [(0, 2)]}, "curriculum T must be a positive integer"),
        ({"curriculum": [(4, 10)]}, "its stages must end before steps = 10"),
        ({"curriculum": [(4, 2)], "n_train": 64, "batch": 16}, "curriculum needs fresh samples"),
    ],
)
def test_bad_lever_settings_are_refused_by_name(kw, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(steps=10, **kw)


def test_the_curriculum_trains_its_stages_lengths_then_the_runs_own():
    c = TrainConfig(steps=20, curriculum=[[4, 3], [8, 5]])
    assert c.curriculum == ((4, 3), (8, 5))
    assert [c.length_at(s, 16) for s in (0, 2, 3, 7, 8, 19)] == [4, 4, 8, 8, 16, 16]
    seen = []

    class Recording(IntrinsicDimension):
        def sample_inputs(self, rng, n, T):
            seen.append(T)
            return super().sample_inputs(rng, n, T)

    model = EnsembleTransformer(ModelConfig(d=4, T=16, heads=(2, 2), E=8, ffn=8), members=1)
    out = train_ensemble(
        model, Recording(D=2), [0], TrainConfig(steps=20, batch=8, n_val=16, eval_every=10, curriculum=[[4, 3], [8, 5]])
    )
    assert seen == [16] + [4] * 3 + [8] * 5 + [16] * 12 and out[0]["status"] == "done"  # validation first, at T


def test_qk_init_scales_only_the_query_and_key_weights():
    base = EnsembleTransformer(ModelConfig(d=4, T=6, heads=(2, 2), E=8, ffn=8), members=2)
    cool = EnsembleTransformer(ModelConfig(d=4, T=6, heads=(2, 2), E=8, ffn=8, qk_init=0.1), members=2)
    for (name, p), q in zip(base.named_parameters(), cool.parameters()):
        scale = 0.1 if name.endswith(("W_Q", "W_K")) else 1.0
        torch.testing.assert_close(q, p * scale, rtol=0, atol=0)
    with pytest.raises(ValueError, match="qk_init must be a finite number >= 0"):
        ModelConfig(d=4, T=6, qk_init=float("nan"))


def test_beta2_reaches_the_optimizer():
    cfg = ModelConfig(d=4, T=5, heads=(2, 2), E=8, ffn=8)
    runs = [
        train_ensemble(
            EnsembleTransformer(cfg, members=1),
            IntrinsicDimension(D=2),
            [0],
            TrainConfig(steps=20, batch=16, n_val=16, eval_every=10, beta2=b2),
        )
        for b2 in (0.999, 0.95)
    ]
    assert runs[0][0]["curve"] != runs[1][0]["curve"]


def test_levers_at_their_defaults_leave_the_paper_recipes_config_hashes_as_they_were():
    """A run's config leaves out a lever holding its default, so records written before the levers
    existed keep their hashes: every run of the committed cpu profile still finds its record."""
    from infoflow.results import DATA_DIR

    runs = make_experiment("intrinsic-dimension", "cpu").runs()
    assert all("warmup_steps" not in r["train"] and "qk_init" not in r["model"] for r in runs)
    missing = [
        r["label"] for r in runs if not (DATA_DIR / "intrinsic-dimension" / "cpu" / f"{config_hash(r)}.json").exists()
    ]
    assert not missing


def test_the_study_expands_one_variant_per_lever_with_its_change_applied():
    exp = make_experiment("intrinsic-dimension-levers", "cpu")
    runs = {r["label"]: r for r in exp.runs() if r["seed"] == 0}
    assert len(runs) == len(exp.levers) and all(label.startswith("(2,2) ") for label in runs)
    paper = runs["(2,2) paper recipe"]
    assert runs["(2,2) lr 3e-3, warm-up 10%"]["train"]["warmup_steps"] == exp.train.steps // 10
    assert runs["(2,2) curriculum T/4, T/2, T"]["train"]["curriculum"] == [(4, 1000), (8, 1000)]
    assert runs["(2,2) qk init x0.1"]["model"]["qk_init"] == 0.1
    assert runs["(2,2) width x2"]["model"]["E"] == 2 * paper["model"]["E"]
    assert runs["(2,2) fixed 100k set"]["train"]["n_train"] == 100000 and paper["train"]["n_train"] is None
    with pytest.raises(ConfigError, match="lever 'mine': unknown keys \\['momentum'\\]"):
        make_experiment("intrinsic-dimension-levers", "cpu", {"levers": {"mine": {"momentum": 0.5}}})


def test_the_triangle_study_varies_one_thing_per_lever_from_the_paper_recipe():
    exp = make_experiment("triangle-center-levers", "cpu")
    runs = {r["label"].split(" ", 1)[1]: r for r in exp.runs() if r["seed"] == 0}
    assert set(runs) == set(exp.levers) and {r["T"] for r in runs.values()} == {8}
    paper = runs["paper recipe"]
    assert paper["train"]["n_train"] == 100000 and paper["train"]["lr"] == 1e-3 and paper["target_params"] == {}

    def changed(run):
        out = {k: v for k, v in run["train"].items() if paper["train"][k] != v}
        out.update({k: v for k, v in run["model"].items() if paper["model"][k] != v})
        return {**out, **run["target_params"]}

    def expected(lever):  # each lever's own settings, "steps_x" read as a multiple of the paper's steps
        out = {k: v for k, v in lever.items() if k != "steps_x"}
        return {**out, "steps": lever["steps_x"] * paper["train"]["steps"]} if "steps_x" in lever else out

    assert {name: changed(r) for name, r in runs.items()} == {name: expected(lv) for name, lv in exp.levers.items()}
    assert changed(runs["lr 3e-3, 4x steps"]) == {"lr": 3e-3, "steps": 4 * paper["train"]["steps"]}
    with pytest.raises(ConfigError, match="lever 'c': unknown keys \\['curriculum'\\]"):
        make_experiment("triangle-center-levers", "cpu", {"levers": {"c": {"curriculum": [[0.5, 0.5]]}}})


def test_the_clamp_bounds_the_input_norms_and_is_checked():
    from infoflow.targets import make_target

    g = torch.Generator().manual_seed(0)
    norms = make_target("triangle-center").sample_inputs(g, 4000, 8).norm(dim=-1)
    assert norms.min() >= 0.2 - 1e-6 and norms.max() <= 4.0 + 1e-6 and (norms == 4.0).any()
    g = torch.Generator().manual_seed(0)
    free = make_target("triangle-center", clamp=[0.0, 1000.0]).sample_inputs(g, 4000, 8).norm(dim=-1)
    assert free.max() > 4.0 and free.min() < 0.2
    inside = (free > 0.2) & (free < 4.0)
    torch.testing.assert_close(free[inside], norms[inside])  # the same draws, only the clamp differs
    for bad in ([1.0, 0.5], [0.0, float("inf")], [1.0]):
        with pytest.raises(ValueError, match="clamp must be"):
            make_target("triangle-center", clamp=bad)


class _Attending:
    """A stand-in model whose one first-layer head attends, from each token, to a given key."""

    def __init__(self, keys):
        self.keys = keys  # (B, T) key positions (0 = CLS)

    def __call__(self, X, record=False):
        M, B, T, _ = X.shape
        att = torch.zeros(M, B, 1, T + 1, T + 1)
        att[:, :, 0, 1:, :] = torch.nn.functional.one_hot(self.keys, T + 1).float()
        return None, [{"attention": att}]


def test_head_alignment_counts_how_often_a_head_looks_up_each_matrixs_partner():
    torch.manual_seed(0)
    X = torch.randn(1, 64, 6, 4)
    A = torch.randn(2, 4, 4)
    partner = torch.einsum("mbsd,ide,mbte->mbist", X, A, X).argmax(-1)[0]  # (B, D, T)
    transposed = torch.einsum("mbsd,ide,mbte->mbist", X, A.transpose(-1, -2), X).argmax(-1)[0]
    exact = head_alignment(_Attending(partner[:, 0] + 1), A, X)
    assert exact.shape == (1, 1, 4) and exact[0, 0, 0] == 1.0  # A_1, A_2, A_1ᵀ, A_2ᵀ
    assert exact[0, 0, 1] == (partner[:, 0] == partner[:, 1]).double().mean()
    assert exact[0, 0, 2] == (partner[:, 0] == transposed[:, 0]).double().mean() < 0.5
    assert head_alignment(_Attending(transposed[:, 1] + 1), A, X)[0, 0, 3] == 1.0  # the other orientation
    assert head_alignment(_Attending(torch.zeros(64, 6, dtype=torch.long)), A, X).sum() == 0  # all on the CLS


def test_a_probed_training_resumes_with_its_probe_history(tmp_path, interrupt_training):
    cfg = TrainConfig(steps=40, batch=16, n_val=32, eval_every=10, warmup_steps=5, curriculum=[[3, 8]])
    model = lambda: EnsembleTransformer(ModelConfig(d=4, T=5, heads=(2, 2), E=8, ffn=8), members=2, seeds=[1, 2])
    X = torch.randn(2, 8, 5, 4)
    target = IntrinsicDimension(D=2)
    A = torch.as_tensor(target.A, dtype=torch.float32)
    probe = lambda m: head_alignment(m, A, X)
    reference = train_ensemble(model(), target, [1, 2], cfg, monitor=probe)
    assert [s for s, _ in reference[0]["monitored"]] == [10, 20, 30, 40]
    assert len(reference[0]["monitored"][0][1]) == 2 and len(reference[0]["monitored"][0][1][0]) == 4  # (h, 2D)
    ckpt = Checkpoint(tmp_path / "g.ckpt", key="g", every_s=0)
    with interrupt_training(25):
        train_ensemble(model(), target, [1, 2], cfg, checkpoint=ckpt, monitor=probe)
    resumed = train_ensemble(model(), target, [1, 2], cfg, checkpoint=ckpt, monitor=probe)
    for a, b in zip(resumed, reference):
        a.pop("resumed"), b.pop("resumed")
        assert a == b


def test_the_dd_construction_converges_as_its_staircases_refine_and_fewer_heads_stall():
    """The (D,D) recipe's error falls about 4x per doubling of the staircase (smooth tanh steps:
    second order); a recipe with D - 1 heads in either layer stays far above it however wide."""
    from infoflow.plateau import construction_rows

    rows = construction_rows(2, 8, (25, 50), n=256)
    by = {(r["kind"], r["staircase_steps"]): r for r in rows}
    assert by[("(D,D)", 50)]["nmse"] < by[("(D,D)", 25)]["nmse"] / 2.5 and by[("(D,D)", 50)]["nmse"] < 5e-3
    for kind in ("(D-1,D)", "(D,D-1)"):
        assert by[(kind, 50)]["nmse_affine"] > 20 * by[("(D,D)", 50)]["nmse"]
        assert by[(kind, 50)]["nmse_affine"] <= by[(kind, 50)]["nmse"] + 1e-12  # affine fit never hurts
    with pytest.raises(ValueError, match="heads must be \\(h1, h2\\) with each D - 1 = 1 or D = 2"):
        from infoflow.constructions import intrinsic_dimension_transformer

        intrinsic_dimension_transformer(IntrinsicDimension(D=2).A, 8, 10, (3, 2))


def _record(label, D, curve, status="done"):
    vals = [v for _, v in curve if v is not None]
    return {
        "config": {"label": label, "target_params": {"D": D, "d": 4}, "seed": len(curve)},
        "status": status,
        "curve": curve,
        "metrics": {"best_val_nmse": min(vals) if vals else None, "steps": curve[-1][0]},
    }


def test_escapes_are_counted_against_a_tenth_of_the_best_other_seed():
    from infoflow.plateau import escape_step, escape_thresholds, escaped_by_step, lever_rows, pairings_taken

    others = [
        _record("(1,2)", 2, [(100, 0.05), (200, 0.04)]),
        _record("(2,1)", 2, [(100, 0.03), (200, 0.02)]),
        _record("(2,2)", 2, [(100, 1e-4)]),
    ]
    assert escape_thresholds(others) == {2: pytest.approx(0.002)}  # (D,D) runs do not set the line
    th = {2: 0.002}
    assert escape_step([(100, 0.01), (200, None), (300, 0.0019)], 0.002) == 300
    study = [
        _record("(2,2) lr 1e-2", 2, [(100, 0.01), (200, 0.001)]),
        _record("(2,2) lr 1e-2", 2, [(100, 0.001), (200, 0.0005)]),
        _record("(2,2) lr 1e-2", 2, [(100, 0.03), (200, 0.02)]),
        _record("(2,2) paper recipe", 2, [(100, 0.03), (200, 0.01)]),
    ]
    rows = {r["lever"]: r for r in lever_rows(study, th)}
    assert rows["lr 1e-2"]["escaped"] == 2 and rows["lr 1e-2"]["fraction"] == pytest.approx(2 / 3)
    assert rows["lr 1e-2"]["median_escape_step"] == 150 and rows["paper recipe"]["escaped"] == 0
    assert escaped_by_step(study, th)[("lr 1e-2", "(D,D)", 2)] == (
        [100, 200],
        [pytest.approx(1 / 3), pytest.approx(2 / 3)],
    )
    # a head serves one pairing: two heads on the same A_i count once
    assert pairings_taken([[0.9, 0.1, 0, 0], [0.8, 0.2, 0, 0]]) == 1
    assert pairings_taken([[0.9, 0.1, 0, 0], [0.1, 0.2, 0, 0.7]]) == 2  # A_2 in its other orientation


def test_recipes_side_by_side_and_the_goal_per_d():
    from infoflow.plateau import goal_rows, recipe_table

    recs = [
        _record("(1,2) tuned", 2, [(10, 0.05)]),
        _record("(2,1) tuned", 2, [(10, 0.02)]),
        _record("(2,1) tuned", 2, [(10, 0.04)]),
        _record("(2,2) tuned", 2, [(10, 1e-4)]),
        _record("(2,2) tuned", 2, [(10, 3e-4)]),
    ]
    rows = recipe_table({"tuned": recs}, {2: {"(D,D)": 5.89e-5, "(D-1,D)": 5.89e-2, "(D,D-1)": 3.67e-2}})
    assert [(r["configuration"], r["tuned"]) for r in rows] == [
        ("(D,D)", pytest.approx(2e-4)),
        ("(D-1,D)", 0.05),
        ("(D,D-1)", pytest.approx(0.03)),
    ]
    assert rows[0]["third-party (T = 64)"] == 5.89e-5
    (goal,) = goal_rows({"tuned": recs})
    assert goal["gap_of_means"] == pytest.approx(150) and goal["every_dd_seed_below_a_tenth"] and goal["goal_met"]
    (short,) = goal_rows({"tuned": recs + [_record("(2,2) tuned", 2, [(10, 3e-3)])]})  # one seed left behind
    assert not short["every_dd_seed_below_a_tenth"] and not short["goal_met"]


def test_claim_rows_say_per_recipe_which_claims_hold():
    from infoflow.plateau import claim_rows

    goals = [
        {"recipe": "a", "D": 2, "gap_of_means": 150.0, "every_dd_seed_below_a_tenth": True},
        {"recipe": "a", "D": 3, "gap_of_means": 2.0, "every_dd_seed_below_a_tenth": False},
        {"recipe": "b", "D": 2, "gap_of_means": 0.5, "every_dd_seed_below_a_tenth": False},
    ]
    rows = claim_rows(goals, construction_best=5e-4, below_taken=[2, 2, 1])
    verdicts = {(r["claim"].split(",")[0], r["recipe"]): r["verdict"] for r in rows}
    assert verdicts[("a (D", "none (constructed weights)")] == "holds"
    assert verdicts[("(D", "a")] == "holds" and verdicts[("(D", "b")] == "does not hold"
    assert verdicts[("by two to three orders of magnitude (gap of means >= 100)", "a")] == "does not hold"
    assert rows[1]["claim"].endswith("D = 2, 3") and rows[-1]["verdict"] == "does not hold"
    assert claim_rows(goals, 2e-3, [])[-1]["verdict"].startswith("not tested")
    assert claim_rows(goals, 2e-3, [2])[0]["verdict"] == "does not hold"


def test_table11_rows_and_gaps_from_records_per_seed():
    from infoflow.plateau import gaps_of_means, kind_values, plot_third_party, table11_rows

    def rec(label, D, seed, value):
        return {
            "config": {"label": label, "target_params": {"D": D}, "seed": seed},
            "status": "done",
            "metrics": {"best_val_nmse": value, "steps": 10},
        }

    records = [rec("(2,2)", 2, 1, 0.002), rec("(2,2)", 2, 0, 0.004), rec("(1,2)", 2, 0, 0.03), rec("(2,1)", 2, 0, 0.02)]
    records += [rec("(1,2)", 2, 1, 0.05), rec("(2,1)", 2, 1, 0.04), rec("(3,3)", 3, 0, 0.01)]  # D = 3 incomplete
    failed = {**rec("(2,2)", 2, 2, None), "status": "failed"}
    assert kind_values(records + [failed])[(2, "(D,D)")] == [0.004, 0.002]  # by seed, failed runs left out
    rows = table11_rows(records, {2: {"(D,D)": 6e-5}})
    dd = next(r for r in rows if r["D"] == 2 and r["configuration"] == "(D,D)")
    assert (dd["seeds"], dd["mean"], dd["best"], dd["worst"]) == (2, pytest.approx(0.003), 0.002, 0.004)
    assert dd["third-party (T = 64)"] == 6e-5 and len(rows) == 4
    assert gaps_of_means(records) == {2: pytest.approx(0.03 / 0.003)}  # D = 3 lacks two configurations
    assert gaps_of_means(records, seeds=[0]) == {2: pytest.approx(0.02 / 0.004)}

    class Axes:
        def __init__(self):
            self.lines = []

        def plot(self, x, y, fmt, color, label):
            self.lines.append((list(x), list(y), color, label))

    ax = Axes()
    third = {2: {"(D,D)": 1e-4, "(D-1,D)": 1e-2, "(D,D-1)": 2e-2}, 3: {"(D,D)": 2e-4, "(D-1,D)": 3e-2, "(D,D-1)": 4e-2}}
    out = plot_third_party(ax, third)
    assert [c for _, _, c, _ in ax.lines] == ["C0", "C1", "C2"] and [lab for *_, lab in ax.lines].count(None) == 2
    assert len(out) == 6 and {r["source"] for r in out} == {"third-party mean"}


def test_order_rows_carry_the_spread_and_the_rms_error_the_nmse_hides():
    from infoflow.order import order_rows, target_spread

    def rec(target, T, seed, value):
        return {
            "config": {"target": target, "T": T, "seed": seed},
            "status": "done",
            "metrics": {"best_val_nmse": value},
        }

    orders = {1: "single-center", 3: "triangle-center"}
    rows = order_rows(
        [rec("single-center", 8, 0, 0.04), rec("single-center", 8, 1, 0.0), rec("triangle-center", 8, 0, 0.5)], orders
    )
    assert [(r["order"], r["T"], r["seeds"]) for r in rows] == [(1, 8, 2), (3, 8, 1)]
    one = rows[0]
    assert one["nmse"] == pytest.approx(0.02) and one["target_std"] == pytest.approx(target_spread("single-center", 8))
    assert one["rmse"] == pytest.approx(0.02**0.5 * one["target_std"])
    assert target_spread("triangle-center", 16) < target_spread("triangle-center", 4)  # a minimum concentrates


def test_lever_means_compare_each_lever_with_the_baseline_and_the_goal():
    from infoflow.order import lever_means

    def rec(label, value, status="done"):
        return {"config": {"label": label}, "status": status, "metrics": {"best_val_nmse": value}}

    records = [
        rec("(4,4),E=24 paper recipe", 0.40),
        rec("(4,4),E=24 paper recipe", 0.44),
        rec("(4,4),E=24 lr 1e-2", 0.24),
        rec("(4,4),E=24 lr 1e-2", None, status="failed"),
    ]
    rows = lever_means(records, goal=0.02)
    assert [r["lever"] for r in rows] == ["lr 1e-2", "paper recipe"]  # best first
    lr, base = rows
    assert base["seeds"] == 2 and base["vs_baseline"] == 1 and base["gap_closed"] == 0
    assert lr["seeds"] == 1 and lr["vs_baseline"] == pytest.approx(0.24 / 0.42)
    assert lr["gap_closed"] == pytest.approx(0.18 / 0.40)
    with pytest.raises(ValueError, match="baseline 'fresh' is not among the levers"):
        lever_means(records, baseline="fresh")


def test_lever_seed_rows_keep_one_row_per_finished_run():
    from infoflow.order import lever_seed_rows

    records = [
        {
            "config": {"label": "(4,4),E=24 paper recipe", "seed": 1},
            "status": "done",
            "metrics": {"best_val_nmse": 0.4},
        },
        {"config": {"label": "(4,4),E=24 lr 1e-2", "seed": 0}, "status": "failed", "metrics": {}},
    ]
    assert lever_seed_rows(records) == [{"lever": "paper recipe", "seed": 1, "best_val_nmse": 0.4}]


def test_unstable_seeds_count_runs_that_went_above_the_constant():
    from infoflow.plateau import unstable_seeds

    def rec(curve, status="done"):
        return {"status": status, "curve": curve}

    records = [rec([[1, 0.9], [2, 0.1]]), rec([[1, 0.5], [2, 25.0], [3, 0.3]]), rec([[1, None], [2, 0.2]])]
    assert unstable_seeds(records) == 1
    assert unstable_seeds(records, above=0.4) == 2
    assert unstable_seeds([rec([[1, 0.5]], status="failed")]) == 1  # a diverged run counts


def test_gap_trend_orders_gaps_by_D_and_says_whether_they_shrink():
    from infoflow.plateau import gap_trend

    goals = [
        {"recipe": "wide", "D": 3, "gap_of_means": 3.1},
        {"recipe": "wide", "D": 2, "gap_of_means": 23.8},
        {"recipe": "paper", "D": 2, "gap_of_means": 1.1},
        {"recipe": "paper", "D": 3, "gap_of_means": 2.4},
        {"recipe": "once", "D": 2, "gap_of_means": 5.0},
    ]
    assert gap_trend(goals) == {"wide": ([23.8, 3.1], True), "paper": ([1.1, 2.4], False)}


def test_first_layer_heads_reads_h1_of_a_probes_label():
    from infoflow.probes import first_layer_heads

    assert first_layer_heads("(5,6)") == 5 and first_layer_heads("(7,7)") == 7


def test_head_counts_read_every_label_shape_the_experiments_write():
    from infoflow.paper import config_kind, head_counts

    assert head_counts("(5,6)") == (5, 6) and head_counts("(12,10) lr 3e-3") == (12, 10)
    assert head_counts("(4,4),E=24 ffn 512") == (4, 4)
    assert [config_kind(x) for x in ("(3,3) wide", "(2,3)", "(3,2),E=8")] == ["(D,D)", "(D-1,D)", "(D,D-1)"]


def test_variance_share_is_the_variance_over_the_mean_square():
    from infoflow.order import variance_share
    from infoflow.targets import make_target

    target = make_target("triangle-center")
    y = np.asarray(target(target.sample_inputs(np.random.default_rng(0), 4000, 8)), dtype=float)
    assert variance_share("triangle-center", 8) == pytest.approx(y.var() / (y**2).mean())
    assert 0 < variance_share("triangle-center", 16) < variance_share("triangle-center", 8) < 1


def test_direction_alignment_finds_which_direction_each_head_retrieves():
    from infoflow.probes import direction_alignment

    torch.manual_seed(1)
    X = torch.randn(1, 128, 6, 3)
    a = torch.randn(2, 3)
    best = torch.einsum("mbtd,id->mbit", X, a).argmax(-1)[0]  # (B, D): the argmax token per direction

    class TwoLayers:
        """Layer 1: head 0 looks up direction 1's argmax from every token, head 1 the CLS; layer 2: the
        CLS looks up direction 2's argmax."""

        def __call__(self, X, record=False):
            M, B, T, _ = X.shape
            first = torch.zeros(M, B, 2, T + 1, T + 1)
            first[:, :, 0, :, :] = torch.nn.functional.one_hot(best[:, 0] + 1, T + 1).float()[:, None, :]
            first[:, :, 1, :, 0] = 1.0
            last = torch.zeros(M, B, 1, T + 1, T + 1)
            last[:, :, 0, 0, :] = torch.nn.functional.one_hot(best[:, 1] + 1, T + 1).float()
            return None, [{"attention": first}, {"attention": last}]

    first, last = direction_alignment(TwoLayers(), a, X)
    assert first.shape == (1, 2, 2) and last.shape == (1, 1, 2)
    assert first[0, 0, 0] == 1.0 and first[0, 1].sum() == 0 and last[0, 0, 1] == 1.0
    assert first[0, 0, 1] == (best[:, 0] == best[:, 1]).double().mean() < 1


def test_a_bilinear_head_looks_up_both_ends_of_its_direction_by_the_side_of_a_hyperplane():
    from infoflow.probes import direction_alignment, direction_measurements, end_rule_accuracy

    torch.manual_seed(2)
    X = torch.randn(1, 256, 8, 3)
    a, u = torch.randn(2, 3), torch.randn(3)
    proj = torch.einsum("mbtd,id->mbit", X, a)[0]  # (B, D, T)
    top, bottom = proj.argmax(-1), proj.argmin(-1)  # (B, D)
    side = X[0] @ u > 0  # (B, T): which side of u's hyperplane each query lies on
    coin = torch.rand(side.shape) > 0.5  # an end chosen by no rule in the query

    class OneLayer:
        """Head 0 scores (uᵀx_t)(a_1ᵀx_s): direction 1's argmax for queries with uᵀx_t > 0, its argmin
        for the rest; head 1 always looks up direction 2's argmax (a query-independent score); head 2
        looks up one end of direction 1 or the other at random."""

        def __call__(self, X, record=False):
            M, B, T, _ = X.shape
            att = torch.zeros(M, B, 3, T + 1, T + 1)
            for head, choice in ((0, side), (2, coin)):
                key = torch.where(choice, top[:, :1], bottom[:, :1])  # (B, T)
                att[0, :, head, 1:] = torch.nn.functional.one_hot(key + 1, T + 1).float()
            att[0, :, 1, 1:] = torch.nn.functional.one_hot(top[:, 1] + 1, T + 1).float()[:, None, :]
            return None, [{"attention": att}]

    (high, _), (low, _) = (direction_alignment(OneLayer(), a, X, end=e) for e in ("max", "min"))
    assert high[0, 0, 0] == side.double().mean() and low[0, 0, 0] == 1 - side.double().mean()
    assert high[0, 1, 1] == 1.0 and abs(float(high[0, 0, 0]) - 0.5) < 0.1  # a bilinear head sits near 0.5
    rule = end_rule_accuracy(OneLayer(), a, X)
    # least squares on the signs separates the hyperplane's two sides almost exactly, a coin not at all
    assert rule.shape == (1, 3) and rule[0, 0] > 0.97 and rule[0, 1] == 1.0 and rule[0, 2] < 0.7
    with pytest.raises(ValueError, match="end must be 'max' or 'min'"):
        direction_alignment(OneLayer(), a, X, end="middle")

    class Counted(OneLayer):
        calls = 0

        def __call__(self, X, record=False):
            Counted.calls += 1
            return super().__call__(X, record)

    together = direction_measurements(Counted(), a, X)  # the same numbers from one forward pass
    assert Counted.calls == 1 and together["first"].equal(high) and together["first_min"].equal(low)
    assert together["rule"].equal(rule) and together["last"].equal(direction_alignment(OneLayer(), a, X)[1])


def test_directions_covered_reads_an_alignment_matrix():
    from infoflow.probes import directions_covered

    alignment = [[0.9, 0.1, 0.0], [0.2, 0.4, 0.0], [0.6, 0.0, 0.55]]  # heads x directions
    assert directions_covered(alignment) == [0, 2] and directions_covered(alignment, level=0.3) == [0, 1, 2]
    argmin = [[0.0, 0.0, 0.0], [0.0, 0.45, 0.0], [0.0, 0.0, 0.0]]  # head 1 looks up direction 1's two ends
    assert directions_covered(alignment, other_end=argmin) == [0, 1, 2]


def test_end_rows_put_each_heads_two_ends_beside_its_c1_ratio():
    from infoflow.probes import end_rows, end_summary

    m = {"recovery_argmax_init": [0.4, 0.4], "recovery_argmax_trained": [0.04, 0.4]}
    m |= {
        "directions_first_trained": [[0.1, 0.48], [0.3, 0.1]],
        "directions_first_min_trained": [[0.0, 0.47], [0.0, 0.1]],
    }
    m["end_rule_first_trained"] = [0.998, None]
    rec = {"config": {"label": "(2,2)", "seed": 3, "train": {"steps": 50}}, "measurements": m}
    old = {"config": rec["config"], "measurements": {k: v for k, v in m.items() if "min" not in k}}
    rows = end_rows([rec, old])  # a record without the argmin measurements is skipped
    assert [(r["head"], r["direction"]) for r in rows] == [(0, 1), (1, 0)]
    assert rows[0]["ends"] == pytest.approx(0.95) and rows[0]["top"] == 0.48 and rows[0]["bottom"] == 0.47
    assert rows[0]["c1_ratio"] == pytest.approx(0.1) and rows[0]["rule"] == 0.998 and rows[1]["rule"] is None
    summary = end_summary(rows)
    assert (summary["heads"], summary["two_ended"], summary["argmax_alone"]) == (2, 1, 0)
    assert summary["top"] == 0.48 and summary["bottom"] == 0.47 and summary["rule_min"] == 0.998
    assert end_summary(rows, level=0.2)["two_ended"] == 2 and end_summary(rows, level=0.2)["rule_median"] == 0.998
    with pytest.raises(ValueError, match="at least one head"):
        end_summary([])


def test_recovery_ratios_are_trained_over_initialized_per_head_for_either_probe():
    from infoflow.probes import recovery_ratios

    m = {"recovery_argmax_init": [0.4, 0.5], "recovery_argmax_trained": [0.1, 0.5]}
    m |= {"recovery_second_init": [2.0, 1.0], "recovery_second_trained": [1.0, 3.0]}
    assert recovery_ratios(m).tolist() == pytest.approx([0.25, 1.0])
    assert recovery_ratios(m, "second").tolist() == pytest.approx([0.5, 3.0])
    with pytest.raises(ValueError, match="kind must be 'argmax' or 'second'"):
        recovery_ratios(m, "third")


def test_head_rows_put_each_heads_c1_ratio_beside_its_alignment_and_head_classes_sort_them():
    import math

    from infoflow.probes import head_classes, head_rows

    def rec(seed, trained, alignment):
        m = {"recovery_argmax_init": [0.4] * len(trained), "recovery_argmax_trained": trained}
        m["directions_first_trained"] = alignment  # heads x directions
        return {"config": {"label": "(3,2)", "seed": seed, "train": {"steps": 100}}, "measurements": m}

    records = [
        rec(0, [0.04, 0.44, 0.2], [[0.9, 0.1], [0.2, 0.3], [0.1, 0.6]]),  # low, high, mid
        rec(1, [0.4, 0.08, 0.6], [[0.7, 0.2], [0.1, 0.55], [0.3, 0.1]]),  # high (aligned), low, high
    ]
    rows = head_rows(records)
    assert [(r["seed"], r["head"], r["direction"]) for r in rows] == [(0, 0, 0), (0, 1, 1), (0, 2, 1)] + [
        (1, 0, 0),
        (1, 1, 1),
        (1, 2, 0),
    ]
    assert rows[0]["c1_ratio"] == pytest.approx(0.1) and rows[0]["alignment"] == 0.9 and rows[0]["steps"] == 100
    classes = head_classes(rows)
    assert (classes["heads"], classes["low"], classes["mid"], classes["high"]) == (6, 2 / 6, 1 / 6, 3 / 6)
    assert classes["low_median"] == pytest.approx(0.15) and classes["low_alignment"] == pytest.approx(0.725)
    assert classes["high_alignment"] == pytest.approx((0.3 + 0.7 + 0.3) / 3)
    assert classes["exceptions"] == [("(3,2)", 1, 0)]  # high ratio, yet looks up direction 0 70% of the time
    assert classes["correlation"] < 0
    only_high = head_classes([r for r in rows if r["c1_ratio"] >= 0.9])
    assert math.isnan(only_high["low_median"]) and only_high["low"] == 0
    with pytest.raises(ValueError, match="at least one head"):
        head_classes([])


def test_alignment_shares_place_heads_against_one_half():
    from infoflow.probes import alignment_shares

    rows = [{"alignment": v} for v in (0.1, 0.45, 0.5, 0.58, 0.65, 0.95)]
    assert alignment_shares(rows) == pytest.approx({"near_half": 3 / 6, "at_least_half": 4 / 6, "high": 2 / 6})
    assert alignment_shares(rows, near=0.2, high=0.9)["near_half"] == pytest.approx(4 / 6)
    with pytest.raises(ValueError, match="at least one head"):
        alignment_shares([])


def test_best_seed_rows_keep_the_best_seed_of_each_configuration():
    from infoflow.results import best_seed_rows

    def rec(label, seed, nmse, dirs_first, dirs_last):
        m = {
            "recovery_argmax_init": [1.0, 1.0],
            "recovery_argmax_trained": [0.5, 0.7],
            "recovery_second_init": [1.0, 2.0],
            "recovery_second_trained": [1.0, 2.0],
            "directions_first_trained": dirs_first,
            "directions_last_trained": dirs_last,
        }
        curve = [[1, 1.0], [2, 0.5], [3, 0.5], [4, nmse]]
        return {
            "config": {"label": label, "seed": seed},
            "status": "done",
            "curve": curve,
            "metrics": {"best_val_nmse": nmse},
            "measurements": m,
        }

    rows = best_seed_rows(
        [
            rec("(5,6)", 0, 0.01, [[0.9, 0.0]], [[0.0, 0.8]]),
            rec("(5,6)", 1, 0.002, [[0.1, 0.1]], [[0.6, 0.7]]),
            {"config": {"label": "(5,6)", "seed": 2}, "status": "failed", "metrics": {"best_val_nmse": None}},
        ]
    )
    (row,) = rows
    assert (row["config"], row["seed"], row["val_nmse"]) == ("(5,6)", 1, 0.002)
    assert row["c1_ratio"] == pytest.approx(0.6) and row["c2_ratio"] == pytest.approx(1.0)
    assert (row["first_layer_directions"], row["cls_directions"], row["directions_together"]) == (0, 2, 2)
    assert row["tail_improvement"] == pytest.approx((0.5 - 0.002) / 0.5)
    assert "first_layer_directions_ends" not in row  # no argmin measurements in these records
    both = rec("(5,6)", 3, 0.001, [[0.1, 0.45]], [[0.6, 0.7]])
    both["measurements"]["directions_first_min_trained"] = [[0.0, 0.4]]  # direction 1 by its two ends
    (row,) = best_seed_rows([both])
    assert row["first_layer_directions"] == 0 and row["first_layer_directions_ends"] == 1
    assert row["directions_together"] == 2 and row["directions_together_ends"] == 2  # the CLS has direction 1 too


def test_rerun_ratios_match_runs_by_config_hash():
    from infoflow.results import rerun_ratios

    def rec(h, seed, nmse, status="done"):
        return {
            "config": {"label": "(5,5)", "seed": seed},
            "config_hash": h,
            "status": status,
            "metrics": {"best_val_nmse": nmse},
        }

    first = [rec("a", 0, 0.002), rec("b", 1, 0.004), rec("c", 2, None, "failed")]
    again = [rec("a", 0, 0.003), rec("b", 1, 0.001), rec("c", 2, 0.5), rec("d", 3, 0.1)]
    assert rerun_ratios(first, again) == {("(5,5)", 0): pytest.approx(1.5), ("(5,5)", 1): pytest.approx(0.25)}
