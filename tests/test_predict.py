"""The two-step estimate: the verdicts of Sec. 5.3 (as the appendix restores them) with their reasons."""

import pytest

from infoflow.predict import predict


@pytest.mark.parametrize("D", [2, 3, 4, 5, 6])
def test_intrinsic_dimension_verdicts(D):
    dd = predict("intrinsic-dimension", 64, (D, D), D=D)
    lo = predict("intrinsic-dimension", 64, (D - 1, D), D=D)
    hi = predict("intrinsic-dimension", 64, (D, D - 1), D=D)
    assert dd.step1_ok and dd.efficient and not dd.uses_global and "Prop. 1" in dd.construction
    assert not lo.step1_ok and not lo.efficient and "step 1 fails" in lo.reason
    assert hi.step1_ok and not hi.efficient and "global aggregation" in hi.reason
    assert dd.min_heads == lo.min_heads == hi.min_heads == D


@pytest.mark.parametrize("T", [8, 16, 32, 64])
@pytest.mark.parametrize("heads,E", [((2, 2), 24), ((4, 4), 24), ((4, 4), 48), ((8, 8, 8), 96)])
def test_triangle_center_never_efficient(T, heads, E):
    p = predict("triangle-center", T, heads, embed=E)
    assert not p.step1_ok and not p.efficient and p.min_heads is None
    assert "Prop. 2" in p.reason


def test_single_layer_d_retrieval_needs_D_heads():
    for D in range(1, 6):
        assert predict("d-retrieval", 64, (D,), D=D).efficient
        assert predict("d-retrieval", 64, (1,), D=D).min_heads == D
        if D > 1:
            assert not predict("d-retrieval", 64, (D - 1,), D=D).efficient


def test_global_aggregation_cost_is_dT_over_E():
    p = predict("d-retrieval", 40, (1,), embed=20, D=4)
    assert p.uses_global and p.cost_exponent == pytest.approx(4 * 40 / 20)


def test_depth_separation():
    assert not predict("depth-separation", 32, (4,)).efficient
    p = predict("depth-separation", 32, (1, 1))
    assert p.efficient and "Thm 1" in p.construction


def test_first_three_sum_needs_positional_encoding():
    assert predict("first-three-sum", 10, (1,), pe=True).efficient
    p = predict("first-three-sum", 10, (1,), pe=False)
    assert not p.efficient and "positional encoding" in p.reason


def test_json_fields():
    d = predict("intrinsic-dimension", 16, (2, 2), D=2).to_dict()
    for key in (
        "target",
        "T",
        "heads",
        "target_noc",
        "model_noc",
        "step1_ok",
        "efficient",
        "min_heads",
        "cost_exponent",
        "reason",
    ):
        assert key in d


@pytest.mark.parametrize(
    "kwargs,msg",
    [
        (dict(target="nope", T=8, heads=(1,)), "unknown target"),
        (dict(target="triangle-center", T=0, heads=(1,)), "T must be a positive integer"),
        (dict(target="triangle-center", T=8, heads=(0,)), "positive head count"),
        (dict(target="triangle-center", T=8, heads=()), "at least one layer"),
        (dict(target="triangle-center", T=8, heads=(1, 1), embed=[4]), "one E per layer"),
        (dict(target="intrinsic-dimension", T=8, heads=(1, 1), D=9), "D must be at most T"),
    ],
)
def test_bad_input(kwargs, msg):
    with pytest.raises(ValueError, match=msg):
        predict(**kwargs)


def test_pair_center_is_easy_for_two_layers_unlike_triangle_center():
    for T in (8, 32):
        p = predict("pair-center", T, (2, 2), embed=24)
        assert p.efficient and "pairwise two-stage" in p.construction
        assert not predict("triangle-center", T, (2, 2), embed=24).efficient
    assert not predict("pair-center", 32, (4,), embed=24).efficient
