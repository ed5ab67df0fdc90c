"""The three update rules, active index sets and the learning criterion, on hand-computed cases."""

import numpy as np
import pytest

from infoflow.infosets import (
    GlobalAggregation,
    InfoFlowModel,
    MaxPosition,
    SpecificPosition,
    active_index_set,
    bilinear_score,
    initial_sets,
    learns,
    linear_score,
    self_score,
    within_key_score,
)
from infoflow.targets import DepthSeparation, FirstThreeSum, IntrinsicDimension, TriangleCenter

CIRCLE = np.stack([np.cos(np.deg2rad([0, 75, 160, 250])), np.sin(np.deg2rad([0, 75, 160, 250]))], axis=1)


def test_initial_sets_eq3():
    assert initial_sets(3) == [frozenset(), {1}, {2}, {3}]


def test_app_e_example():
    m = InfoFlowModel([[MaxPosition(bilinear_score(-np.eye(2)))], [MaxPosition(within_key_score(-np.eye(2)))]])
    tr = m.run(CIRCLE)
    assert [p[0] for p in tr.picks[0][1:]] == [3, 4, 1, 2]  # argmin_s x_t . x_s by hand
    assert tr.sets[1][1:] == [{1, 3}, {2, 4}, {1, 3}, {2, 4}]
    assert tr.cls_set == {2, 4} == active_index_set(DepthSeparation(), CIRCLE)


def test_max_position_hand_case():
    # scalar tokens; score a_t * x_s: every position retrieves the largest token (position 2)
    X = np.array([[0.1], [0.9], [0.4]])
    tr = InfoFlowModel([[MaxPosition(linear_score([1.0]))]]).run(X)
    assert tr.sets[1] == [{2}, {1, 2}, {2}, {2, 3}]
    assert all(p == [2] for p in tr.picks[0])


def test_global_aggregation_hand_case():
    tr = InfoFlowModel([[GlobalAggregation()]]).run(np.zeros((4, 1)))
    assert all(s == {1, 2, 3, 4} for s in tr.sets[1])


def test_specific_position_hand_case_and_refusal():
    X = np.arange(5.0)[:, None]
    tr = InfoFlowModel([[SpecificPosition({0: (1, 2, 3)})]], positional_encoding=True).run(X)
    assert tr.cls_set == {1, 2, 3} and tr.sets[1][4] == {4}
    with pytest.raises(ValueError, match="needs positional encoding"):
        InfoFlowModel([[SpecificPosition({0: (1,)})]])
    with pytest.raises(ValueError, match="positions in 0..5"):
        InfoFlowModel([[SpecificPosition({0: (9,)})]], positional_encoding=True).run(X)


def test_two_layer_set_union():
    # layer 1: self retrieval; layer 2: max token -> CLS gets {argmax}
    X = np.array([[0.3], [0.2], [0.8]])
    tr = InfoFlowModel([[MaxPosition(self_score())], [MaxPosition(linear_score([1.0]))]]).run(X)
    assert tr.sets[1] == initial_sets(3) and tr.cls_set == {3}


def test_model_validation():
    with pytest.raises(ValueError, match="at least one layer"):
        InfoFlowModel([])
    with pytest.raises(ValueError, match="at least one head"):
        InfoFlowModel([[]])
    with pytest.raises(ValueError, match="score returned shape"):
        InfoFlowModel([[MaxPosition(lambda q, k: np.zeros(3))]]).run(np.zeros((4, 1)))


def test_cost_grows_with_set_size():
    X = np.random.default_rng(0).standard_normal((6, 2))
    small = InfoFlowModel([[MaxPosition(self_score())]]).run(X)
    big = InfoFlowModel([[MaxPosition(self_score()), GlobalAggregation()]]).run(X)
    assert small.cost_exponent(2, [4]) < big.cost_exponent(2, [4])
    assert big.cost_exponent(2, [4]) == pytest.approx(2 * 6 / 4)  # global: d T / E
    assert small.cost_exponent(2, [4], eps=1e-3) <= small.cost_exponent(2, [4]) + 1e-9 + np.log(7) / np.log(1e3)
    with pytest.raises(ValueError, match="eps must be in"):
        small.cost_exponent(2, [4], eps=2.0)


def test_active_index_sets():
    rng = np.random.default_rng(1)
    X = rng.standard_normal((10, 2))
    assert active_index_set(FirstThreeSum(), X) == {1, 2, 3}
    t = IntrinsicDimension(D=2)
    A = active_index_set(t, rng.standard_normal((8, 4)))
    assert 1 <= len(A) <= 4
    assert len(active_index_set(TriangleCenter(), rng.standard_normal((8, 2)))) in (1, 2, 3)


def test_learns_prop1_and_failure_with_fewer_heads():
    t = IntrinsicDimension(D=3)
    full = InfoFlowModel(
        [[MaxPosition(bilinear_score(a)) for a in t.A], [MaxPosition(within_key_score(a)) for a in t.A]]
    )
    assert learns(full, t, T=16, n=12).ok
    short = InfoFlowModel(
        [[MaxPosition(bilinear_score(a)) for a in t.A[:2]], [MaxPosition(within_key_score(a)) for a in t.A]]
    )
    rep = learns(short, t, T=16, n=24)
    assert not rep.ok and rep.missing
