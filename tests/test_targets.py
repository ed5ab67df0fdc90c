"""Targets against brute-force references (explicit loops), numpy vs torch, determinism."""

import itertools

import numpy as np
import pytest
import torch

from infoflow.targets import (
    DepthSeparation,
    DRetrieval,
    FirstThreeSum,
    IntrinsicDimension,
    KthLargest,
    PairCenter,
    SingleCenter,
    TARGETS,
    TriangleCenter,
    make_target,
)


def brute(target, X):
    T = X.shape[0]
    if isinstance(target, DepthSeparation):
        return min(X[s] @ X[t] for s in range(T) for t in range(T))
    if isinstance(target, KthLargest):
        return sorted(X[:, 0], reverse=True)[target.k - 1]
    if isinstance(target, DRetrieval):
        return sum(max(a @ X[t] for t in range(T)) for a in target.a)
    if isinstance(target, IntrinsicDimension):
        return sum(max(X[s] @ A @ X[t] for s in range(T) for t in range(T)) for A in target.A)
    if isinstance(target, TriangleCenter):
        return min(np.linalg.norm(X[a] + X[b] + X[c]) for a, b, c in itertools.product(range(T), repeat=3))
    if isinstance(target, PairCenter):
        return min(np.linalg.norm(X[a] + X[b]) for a, b in itertools.product(range(T), repeat=2))
    if isinstance(target, SingleCenter):
        return min(np.linalg.norm(X[t]) for t in range(T))
    if isinstance(target, FirstThreeSum):
        return X[0] + X[1] + X[2]
    raise AssertionError(target)


ALL = [
    DepthSeparation(),
    KthLargest(k=1),
    KthLargest(k=2),
    KthLargest(k=3),
    DRetrieval(D=3),
    IntrinsicDimension(D=3, chunk=3),
    TriangleCenter(chunk=3),
    PairCenter(),
    SingleCenter(),
    FirstThreeSum(),
]


@pytest.mark.parametrize("target", ALL, ids=lambda t: f"{t.name}")
def test_matches_brute_force(target):
    X = np.asarray(target.sample_inputs(np.random.default_rng(3), 7, 6), dtype=float)
    y = np.asarray(target(X))
    for j in range(len(X)):
        np.testing.assert_allclose(y[j], brute(target, X[j]), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("target", ALL, ids=lambda t: f"{t.name}")
def test_torch_equals_numpy(target):
    X = target.sample_inputs(np.random.default_rng(5), 4, 6)
    y_np = np.asarray(target(np.asarray(X, dtype=np.float64)))
    y_t = target(torch.as_tensor(X, dtype=torch.float64)).numpy()
    np.testing.assert_allclose(y_t, y_np, rtol=1e-12)


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_sampling_is_deterministic_per_seed(name):
    t = make_target(name)
    a = t.sample(torch.Generator().manual_seed(7), 5, 8)
    b = t.sample(torch.Generator().manual_seed(7), 5, 8)
    c = t.sample(torch.Generator().manual_seed(8), 5, 8)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


def test_input_laws():
    rng = np.random.default_rng(0)
    X = TriangleCenter().sample_inputs(rng, 2000, 8)
    r = np.linalg.norm(X, axis=-1)
    assert r.min() >= 0.2 - 1e-12 and r.max() <= 4.0 + 1e-12
    X = DepthSeparation().sample_inputs(rng, 10, 5)
    np.testing.assert_allclose(np.linalg.norm(X, axis=-1), 1.0)
    X = KthLargest(k=2).sample_inputs(rng, 100, 5)
    assert X.min() >= 0 and X.max() < 1


def test_triangle_center_fast_at_T64():
    import time

    X = TriangleCenter().sample_inputs(torch.Generator().manual_seed(0), 256, 64)
    start = time.perf_counter()
    y = TriangleCenter()(X)
    assert y.shape == (256,) and time.perf_counter() - start < 10


def test_fixed_matrices_come_from_the_seed():
    np.testing.assert_array_equal(IntrinsicDimension(D=3, seed=1).A, IntrinsicDimension(D=3, seed=1).A)
    assert not np.allclose(IntrinsicDimension(D=3, seed=1).A, IntrinsicDimension(D=3, seed=2).A)
    A = IntrinsicDimension(D=4).A
    assert len({a.tobytes() for a in A}) == 4  # distinct matrices


@pytest.mark.parametrize(
    "name,params,msg",
    [
        ("nope", {}, "unknown target"),
        ("intrinsic-dimension", {"D": 0}, "D must be a positive integer"),
        ("intrinsic-dimension", {"q": 1}, "has no parameter 'q'"),
    ],
)
def test_bad_targets(name, params, msg):
    with pytest.raises(ValueError, match=msg):
        make_target(name, **params)


def test_kth_largest_needs_k_at_most_T():
    with pytest.raises(ValueError, match="k must be in 1..T"):
        KthLargest(k=5).sample_inputs(np.random.default_rng(0), 2, 3)


def test_the_comparison_order_control_varies_only_the_target():
    from infoflow.experiments import make_experiment
    from infoflow.predict import predict

    runs = make_experiment("comparison-order", "cpu").runs()
    by_target = {}
    for r in runs:
        key = {k: v for k, v in r.items() if k not in ("target", "label")}
        by_target.setdefault(r["target"], []).append(repr(sorted(key.items())))
    assert set(by_target) == {"single-center", "pair-center", "triangle-center"}
    assert by_target["single-center"] == by_target["pair-center"] == by_target["triangle-center"]
    assert all(
        r["label"].startswith(f"order {o}: ")
        for o, t in ((1, "single"), (2, "pair"), (3, "triangle"))
        for r in runs
        if r["target"].startswith(t)
    )
    X = SingleCenter().sample_inputs(np.random.default_rng(0), 500, 8)
    norms = np.linalg.norm(X, axis=-1)
    assert norms.min() >= 0.2 - 1e-12 and norms.max() <= 4 + 1e-12  # triangle-center's clamped law
    assert [
        predict(t, 16, (4, 4), embed=24).efficient for t in ("single-center", "pair-center", "triangle-center")
    ] == [
        True,
        True,
        False,
    ]
