"""Trees of Comparison and Number of Comparison (eq. 5) on hand-computed cases and properties."""

import numpy as np
import pytest
from numpy.polynomial import Polynomial as P

from infoflow.comparison import (
    PROFILES,
    TreeOfComparison,
    asymptotically_at_least,
    comparison_profile,
    model_noc,
    model_noc_poly,
    prop2_min_set_size,
    set_size_bounds,
)
from infoflow.infosets import active_index_set
from infoflow.targets import DepthSeparation, DRetrieval, IntrinsicDimension, TriangleCenter


def test_tree_basics():
    tree = TreeOfComparison.from_leaves([(1,), (2,), (3,)], key=lambda X, I: X[I[0] - 1], mode="max")
    assert tree.size == 3 and tree.comparisons == 2 and tree.dimension == 1
    assert tree.evaluate(np.array([0.1, 0.7, 0.3])) == (2,)
    with pytest.raises(ValueError):
        TreeOfComparison.from_leaves([], key=None)


@pytest.mark.parametrize(
    "target,T", [(DRetrieval(D=2), 6), (IntrinsicDimension(D=2), 5), (DepthSeparation(), 6), (TriangleCenter(), 5)]
)
def test_trees_find_the_active_set(target, T):
    rng = np.random.default_rng(0)
    profile = comparison_profile(target.name)
    for _ in range(3):
        X = np.asarray(target.sample_inputs(rng, 1, T), dtype=float)[0]
        trees = profile.trees(T, {"D": getattr(target, "D", 1)}, target)
        roots = set().union(*(set(t.evaluate(X)) for t in trees))
        assert active_index_set(target, X) <= roots
        assert all(t.dimension <= profile.dimension for t in trees)


def test_target_noc_bounds():
    assert comparison_profile("d-retrieval").lower(10, D=3) == 27
    assert comparison_profile("intrinsic-dimension").upper(8, D=2) == 2 * 63
    assert comparison_profile("triangle-center").upper(4) == 63
    assert comparison_profile("triangle-center").lower(6) == 19  # C(6,3) - 1
    assert comparison_profile("depth-separation").lower(4) == 5
    with pytest.raises(ValueError, match="no comparison profile"):
        comparison_profile("kth-largest")


def test_set_size_bounds():
    assert set_size_bounds([2, 3]) == ([3, 12], [2, 2 + 3 * 3])


def test_model_noc_hand_cases():
    # one layer, h heads: only the CLS state is read out: hT + h^{d_c}
    assert model_noc([3], 1, 20) == 3 * 20 + 3
    # two layers, one head each, d_c = 2: layer 1 at T+1 positions, layer 2 at the CLS
    T = 10
    assert model_noc([1, 1], 2, T) == (T + 1) * T + T * 2**2 + 1 + T + 3**2
    assert model_noc_poly([1, 1], 2)(T) == model_noc([1, 1], 2, T)


def test_adding_a_head_never_lowers_model_noc():
    for heads in ([1], [2, 3], [1, 1, 1], [4, 2]):
        for l in range(len(heads)):
            more = list(heads)
            more[l] += 1
            for T in (4, 16, 64):
                for dc in (1, 2, 3):
                    assert model_noc(more, dc, T) >= model_noc(heads, dc, T)


def test_asymptotic_comparison():
    assert asymptotically_at_least(P([0, 0, 4]), P([-4, 0, 4]))
    assert not asymptotically_at_least(P([100, 100, 3]), P([0, 0, 4]))
    # Sec. 6 / Yu et al. Thm 2.2: one layer needs h >= D for D-retrieval
    D = 4
    need = comparison_profile("d-retrieval").noc_lower({"D": D})
    assert not asymptotically_at_least(model_noc_poly([D - 1], 1), need)
    assert asymptotically_at_least(model_noc_poly([D], 1), need)


def test_prop2_set_size_grows_like_T_two_thirds():
    Ms = [prop2_min_set_size(T, L=2, h=4) for T in (1e3, 8e3, 64e3)]
    ratios = np.array(Ms[1:]) / np.array(Ms[:-1])
    np.testing.assert_allclose(ratios, 8 ** (2 / 3), rtol=0.05)
    assert prop2_min_set_size(8, L=2, h=4) == 0


def test_every_profile_has_bounds_in_order():
    for name, p in PROFILES.items():
        assert p.lower(32, D=3) <= p.upper(32, D=3)
