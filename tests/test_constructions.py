import math

import numpy as np
import pytest
import torch

from infoflow.constructions import bit_codec, depth_separation_transformer, square_staircase
from infoflow.targets import DepthSeparation


def test_square_staircase_error_is_order_one_over_n():
    u = np.linspace(-1.9, 1.9, 2001)
    errs = [np.abs(square_staircase(u, n) - u**2).max() for n in (8, 16, 32, 64)]
    assert all(e2 < e1 * 0.6 for e1, e2 in zip(errs, errs[1:]))
    assert errs[-1] <= 8 / 64 + 1e-9


def test_depth_separation_construction_rate():
    t = DepthSeparation()
    X = torch.as_tensor(t.sample_inputs(np.random.default_rng(1), 256, 6)[None])
    y = t(X)[0]
    params, errs = [], []
    for n in (8, 16, 32, 64):
        model = depth_separation_transformer(6, n)
        with torch.no_grad():
            errs.append(float((model(X)[0, :, 0] - y).abs().max()))
        params.append(model.parameter_counts()["total"])
    slope = np.polyfit(np.log(params), np.log(errs), 1)[0]
    assert -1.3 < slope < -0.7, slope
    assert errs[-1] < 0.1


@pytest.mark.parametrize("n,m", [(1, 1), (2, 1), (2, 2), (3, 1), (4, 2)])
def test_bit_codec_precision_and_cost(n, m):
    x = np.random.default_rng(0).random((3000, n))
    counts = []
    for eps in (2**-3, 2**-5):
        codec = bit_codec(n, m, eps)
        assert np.abs(codec(x) - x).max() <= eps + 1e-12
        counts.append(codec.parameter_count())
    exponent = math.log(counts[1] / counts[0]) / math.log(4)
    assert exponent == pytest.approx(math.ceil(n / min(m, n)), abs=0.35)


def test_bit_codec_tanh_version_is_close_in_l2():
    x = np.random.default_rng(0).random((3000, 2))
    c = bit_codec(2, 1, 2**-4)
    ct = bit_codec(2, 1, 2**-4, kappa=2 ** (2 * c.bits) * 500)
    assert np.sqrt(((ct(x) - x) ** 2).mean()) <= 2**-4


def test_bit_codec_bad_input():
    with pytest.raises(ValueError, match="eps must be in"):
        bit_codec(2, 1, 2.0)
    with pytest.raises(ValueError, match="positive"):
        bit_codec(0, 1, 0.1)


def test_bit_codec_decodes_in_slices_as_in_one_piece():
    """The decoder forms its units' outputs a slice of inputs at a time (memory ~ slice x units, not
    inputs x units): the same reconstruction, and the same bound on the error."""
    codec = bit_codec(2, 1, 2**-5)
    x = np.random.default_rng(0).random((300, 2))
    z = codec.encode(x)
    whole = codec.decode(z, slice_numbers=1 << 40)
    sliced = codec.decode(z, slice_numbers=2 ** (2 * codec.bits) * 7)  # 7 inputs per slice
    np.testing.assert_allclose(sliced, whole, rtol=0, atol=1e-12)
    assert np.abs(sliced - x).max() <= 2**-5
