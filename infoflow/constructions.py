"""Explicit constructions from the proofs, as real networks.

* :func:`depth_separation_transformer` — Thm 1, second part (App. A.1, steps 1–7): a two-layer,
  one-head-per-layer Transformer with tanh FFNs, built as weights of the package's
  :class:`~infoflow.model.EnsembleTransformer`, that approximates F(X) = min_{s,t} x_sᵀx_t (eq. 8).
  Layer 1: token t attends to s*(t) = argmin_s x_tᵀx_s (score −β x_tᵀx_s, β large: near-hardmax)
  and copies x_{s*} into spare coordinates; the FFN computes g_t ≈ x_tᵀx_{s*} through the
  one-dimensional squares of xᵀy = (‖x+y‖² − ‖x−y‖²)/4, each square a staircase of N steep tanh
  units (error ∝ 1/N, i.e. O(ε⁻¹) parameters). Layer 2: the CLS attends to argmin_t g_t; the readout
  returns g. RECONSTRUCTED in detail (the proof's constants were lost).
* :func:`intrinsic_dimension_transformer` — Sec. 6.1 (eq. 6), the mechanism behind Prop. 1 as weights:
  a two-layer model for F(X) = Σ_i max_{s,t} x_sᵀA_i x_t. Layer-1 head i sends token s to its partner
  argmax_t x_sᵀA_i x_t and copies it; the FFN forms g_i(s) = x_sᵀA_i x_{t*} by the squares of the
  polarisation identity; layer-2 head i takes max_s g_i(s) at the CLS; the readout sums. With fewer
  heads the same recipe must make do: a missing layer-1 head leaves g_i(s) = x_sᵀA_i x_s (the token
  alone), a missing layer-2 head makes the last head select by a sum of the remaining g_i. Ours
  (the paper gives no construction for this target).
* :func:`bit_codec` — Thm 3, first part (App. A.3): encode the d|I| coordinates of X_I in [0,1)
  into m latent numbers by b-bit truncation (Heaviside units), each latent packing the bits of
  ⌈d|I|/m⌉ coordinates; decode by staircases; then every Heaviside unit replaced by a steep tanh
  (Lemma 1). Parameter count ~ m·ε^{−d|I|/m} + d|I|·ε^{−1}.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

__all__ = [
    "depth_separation_transformer",
    "intrinsic_dimension_transformer",
    "square_staircase",
    "BitCodec",
    "bit_codec",
    "staircase_units",
    "autoencoder_rows",
    "smallest_widths",
]


def staircase_units(f, lo: float, hi: float, n: int):
    """N steps approximating f on [lo, hi]: returns (midpoints m_k, jumps Δ_k, f(lo)), so that
    f(u) ≈ f(lo) + Σ_k Δ_k H(u − m_k); error ≤ sup|f'|·(hi − lo)/(2n)."""
    grid = np.linspace(lo, hi, n + 1)
    values = f(grid)
    return (grid[:-1] + grid[1:]) / 2, np.diff(values), float(values[0])


def square_staircase(u, n: int, kappa: float | None = None):
    """u² on [−2, 2] by n steep tanh units (the building block of step 4 of App. A.1)."""
    mids, jumps, f0 = staircase_units(np.square, -2.0, 2.0, n)
    kappa = kappa if kappa is not None else 50.0 * n
    u = np.asarray(u, dtype=float)[..., None]
    return f0 + (jumps * (1 + np.tanh(kappa * (u - mids))) / 2).sum(-1)


def depth_separation_transformer(
    T: int, n_steps: int, beta: float = 2000.0, d: int = 2, kappa: float | None = None, big: float = 50.0
):
    """The Thm 1 construction as an EnsembleTransformer (one member), float64.

    Residual coordinates: x (d) | y = retrieved x_{s*} (d) | g | out | const | is_cls.
    """
    import torch

    from .model import EnsembleTransformer, ModelConfig

    E = 2 * d + 4
    X_, Y_, G, OUT, C, CLS = slice(0, d), slice(d, 2 * d), 2 * d, 2 * d + 1, 2 * d + 2, 2 * d + 3
    m = 2 * d * n_steps
    cfg = ModelConfig(d=d, T=T, heads=(1, 1), E=E, ffn=m, activation="tanh", beta=1.0)
    model = EnsembleTransformer(cfg, members=1).double()
    kappa = kappa if kappa is not None else 50.0 * n_steps
    sb = math.sqrt(beta)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        W_in = torch.zeros(d, E, dtype=torch.float64)
        W_in[:, X_] = torch.eye(d)
        model.W_in[0] = W_in
        model.b_in[0, C] = 1.0
        model.cls[0, C], model.cls[0, CLS] = 1.0, 1.0
        # layer 1: score(t, s) = -beta x_t.x_s - big*beta*is_cls(s); value: x_s -> y slot
        l1 = model.layers[0]
        l1["W_Q"][0, X_, :d] = -sb * torch.eye(d)
        l1["W_Q"][0, C, d] = sb
        l1["W_K"][0, X_, :d] = sb * torch.eye(d)
        l1["W_K"][0, CLS, d] = -big * sb
        l1["W_V"][0, X_, Y_] = torch.eye(d)
        l1["W_O"][0] = torch.eye(E)
        # layer-1 FFN: g += (sum_i (x_i+y_i)^2 - sum_i (x_i-y_i)^2) / 4 by staircases of tanh units
        mids, jumps, _ = staircase_units(np.square, -2.0, 2.0, n_steps)
        unit = 0
        for i in range(d):
            for sign in (1.0, -1.0):
                for mk, dk in zip(mids, jumps):
                    l1["W_1"][0, i, unit] = kappa
                    l1["W_1"][0, d + i, unit] = sign * kappa
                    l1["b_1"][0, unit] = -kappa * mk
                    l1["W_2"][0, unit, G] = sign * dk / 8.0  # H = (1 + tanh)/2; the /2 constants cancel
                    unit += 1
        # layer 2: the CLS attends to argmin_t g_t (score -beta g_t, CLS key excluded); value: g -> out
        l2 = model.layers[1]
        l2["W_Q"][0, C, 0] = sb
        l2["W_K"][0, G, 0] = -sb
        l2["W_K"][0, CLS, 0] = -big * sb
        l2["W_V"][0, G, OUT] = 1.0
        l2["W_O"][0] = torch.eye(E)
        # readout: out -> tanh(a*out)/a ~ out
        a = 1e-3
        model.R_1[0, OUT, 0] = a
        model.R_2[0, 0, 0] = 1.0 / a
    return model


def intrinsic_dimension_transformer(
    A,
    T: int,
    n_steps: int,
    heads: tuple | None = None,
    reach: float = 10.0,
    beta: float = 400.0,
    kappa: float | None = None,
    big: float = 50.0,
):
    """The (h1, h2) recipe for eq. 6 as an EnsembleTransformer (one member, float64); ``A`` (D, d, d).
    ``heads`` defaults to (D, D); h1, h2 in {D - 1, D}. Each product x_j·w_j of g_i is
    ((x_j + w_j)² − (x_j − w_j)²)/4, each square a staircase of ``n_steps`` tanh units on
    [−``reach``, ``reach``]: FFN width 2·d·D·n_steps. Residual: x | y_1..y_h1 | g_1..g_D | out | const | is_cls."""
    import torch

    from .model import EnsembleTransformer, ModelConfig

    A = np.asarray(A, dtype=float)
    D, d, _ = A.shape
    h1, h2 = heads or (D, D)
    if not (D - 1 <= h1 <= D and D - 1 <= h2 <= D and min(h1, h2) >= 1):
        raise ValueError(f"heads must be (h1, h2) with each D - 1 = {D - 1} or D = {D} (and >= 1), got {heads!r}")
    Y = [slice(d * (i + 1), d * (i + 2)) for i in range(h1)]
    G = [d * (h1 + 1) + i for i in range(D)]
    OUT, C, CLS = G[-1] + 1, G[-1] + 2, G[-1] + 3
    E, n = CLS + 1, d + 1  # per-head width: d for the pairing, 1 to exclude the CLS key
    m = 2 * d * D * n_steps
    cfg = ModelConfig(d=d, T=T, heads=(h1, h2), E=E, ffn=m, activation="tanh", beta=1.0, head_dim=n)
    model = EnsembleTransformer(cfg, members=1).double()
    kappa = kappa if kappa is not None else 2.0 * n_steps / reach
    sb = math.sqrt(beta)
    At = torch.as_tensor(A, dtype=torch.float64)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model.W_in[0, :, :d] = torch.eye(d)
        model.b_in[0, C] = 1.0
        model.cls[0, C], model.cls[0, CLS] = 1.0, 1.0
        l1, l2 = model.layers
        for i in range(h1):  # layer 1, head i: s → argmax_t x_sᵀA_i x_t, copy x_t into y_i
            cols = slice(i * n, i * n + d)
            l1["W_Q"][0, :d, cols] = sb * At[i]
            l1["W_K"][0, :d, cols] = sb * torch.eye(d)
            l1["W_Q"][0, C, i * n + d] = sb
            l1["W_K"][0, CLS, i * n + d] = -big * sb
            l1["W_V"][0, :d, cols] = torch.eye(d)
            l1["W_O"][0, cols, Y[i]] = torch.eye(d)
        mids, jumps, _ = staircase_units(np.square, -reach, reach, n_steps)
        unit = 0
        for i in range(D):  # layer-1 FFN: g_i = Σ_j x_j (A_i y_i)_j  (y_i = x without head i)
            src = Y[i] if i < h1 else slice(0, d)
            for j in range(d):
                for sign in (1.0, -1.0):
                    for mk, dk in zip(mids, jumps):
                        l1["W_1"][0, j, unit] += kappa
                        l1["W_1"][0, src, unit] += sign * kappa * At[i, j]
                        l1["b_1"][0, unit] = -kappa * mk
                        l1["W_2"][0, unit, G[i]] = sign * dk / 8.0
                        unit += 1
        for i in range(h2):  # layer 2, head i: the CLS takes max_s g_i(s); the last head
            rest = G[i:] if i == h2 - 1 else [G[i]]  # of h2 = D - 1 selects by the sum of the g_i left
            for g in rest:
                l2["W_K"][0, g, i * n] = sb
                l2["W_V"][0, g, i * n] = 1.0
            l2["W_Q"][0, C, i * n] = sb
            l2["W_Q"][0, C, i * n + 1] = sb
            l2["W_K"][0, CLS, i * n + 1] = -big * sb
            l2["W_O"][0, i * n, OUT] = 1.0
        a = 1e-4  # readout: tanh(a·out)/a ≈ out
        model.R_1[0, OUT, 0] = a
        model.R_2[0, 0, 0] = 1.0 / a
    return model


@dataclass
class BitCodec:
    """Two two-layer networks (encoder ℝ^{n} → ℝ^m, decoder ℝ^m → ℝ^{n}) built from step units."""

    n: int  # d·|I| coordinates
    m: int  # latent width
    bits: int
    enc_thresholds: np.ndarray  # per coordinate: 2^b − 1 thresholds
    groups: list  # coordinates packed in each latent
    kappa: float = math.inf  # inf: Heaviside; finite: steep tanh (Lemma 1)

    def step(self, z):
        if math.isinf(self.kappa):
            return (z >= 0).astype(float)
        return (1 + np.tanh(self.kappa * z)) / 2

    def encode(self, x: np.ndarray) -> np.ndarray:
        """x (N, n) in [0,1) → z (N, m): latent j = Σ_r q(x_{i_r}) 2^{−b r}, q the b-bit truncation."""
        q = (self.step(x[..., None] - self.enc_thresholds) / 2**self.bits).sum(-1)  # (N, n)
        z = np.zeros((x.shape[0], self.m))
        for j, group in enumerate(self.groups):
            for r, i in enumerate(group):
                z[:, j] += q[:, i] * 2.0 ** (-self.bits * r)
        return z

    def decode(self, z: np.ndarray, slice_numbers: int = 1 << 22) -> np.ndarray:
        """z (N, m) → x̂ (N, n): each packed coordinate is a staircase in its latent, with
        2^{b·k} − 1 units for a latent packing k coordinates; outputs the cell centres. The units'
        outputs are formed for slices of the N inputs of about ``slice_numbers`` numbers at a time
        (a million units on 4000 inputs would otherwise be 32 GB)."""
        out = np.zeros((z.shape[0], self.n))
        for j, group in enumerate(self.groups):
            k = len(group)
            levels = 2 ** (self.bits * k)
            cells = np.arange(levels)
            thresholds = (cells[1:] - 0.5) / levels  # between packed codes
            codes = cells[:, None] // (2 ** (self.bits * (k - 1 - np.arange(k)))) % 2**self.bits
            centres = (codes + 0.5) / 2**self.bits  # (levels, k)
            jumps = np.diff(centres, axis=0)
            rows = max(1, slice_numbers // levels)
            for a in range(0, z.shape[0], rows):
                steps = self.step(z[a : a + rows, j, None] - thresholds)  # (rows, levels-1)
                out[a : a + rows, group] = centres[0] + steps @ jumps
        return out

    def __call__(self, x):
        return self.decode(self.encode(x))

    def parameter_count(self) -> int:
        """Non-zero weights and biases of the two two-layer networks."""
        enc_units = self.n * (2**self.bits - 1)
        enc = enc_units * 2 + enc_units * 1 + self.m  # in-weight + bias per unit, one out-weight each
        dec = 0
        for group in self.groups:
            units = 2 ** (self.bits * len(group)) - 1
            dec += units * 2 + units * len(group)  # in-weight + bias, out-weights per packed coordinate
        return enc + dec + self.n


def bit_codec(n: int, m: int, eps: float, kappa: float = math.inf) -> BitCodec:
    """Thm 3 construction for n = d|I| coordinates, latent width m, precision eps (sup error of the
    Heaviside version ≤ eps): b = ⌈log₂(1/eps)⌉ − 1 bits (cell centres halve the truncation error).
    For m ≥ n each latent holds one coordinate."""
    if n < 1 or m < 1:
        raise ValueError(f"n and m must be positive integers, got n={n}, m={m}")
    if not 0 < eps < 1:
        raise ValueError(f"eps must be in (0, 1), got {eps}")
    bits = max(1, math.ceil(math.log2(1 / eps)) - 1)
    m_used = min(m, n)
    per = math.ceil(n / m_used)
    groups = [list(range(j * per, min(n, (j + 1) * per))) for j in range(m_used)]
    groups = [g for g in groups if g]
    thresholds = np.arange(1, 2**bits) / 2**bits
    return BitCodec(n=n, m=len(groups), bits=bits, enc_thresholds=thresholds, groups=groups, kappa=kappa)


def codec_cost_rows(sizes=(1, 2, 3, 4), ms=(1, 2), ks=range(2, 9), n_points: int = 4000, max_params: float = 3e6):
    """Thm 3 measured on the construction (d = 1): for each |I| in ``sizes``, latent width m in ``ms``
    and eps = 2^-k, the codec's parameter count, its sup error on ``n_points`` uniform points (seeded per
    |I|) and the upper bound m·eps^(-|I|/m) + |I|/eps with constants 1. Codecs over ``max_params`` are
    skipped."""
    rows = []
    for size in sizes:
        x = np.random.default_rng(size).random((n_points, size))
        for m in ms:
            for k in ks:
                eps = 2.0**-k
                codec = bit_codec(size, m, eps)
                if codec.parameter_count() > max_params:
                    continue
                rows.append(
                    {
                        "I": size,
                        "m": m,
                        "eps": eps,
                        "parameters": codec.parameter_count(),
                        "sup_error": float(np.abs(codec(x) - x).max()),
                        "bound": m * eps ** (-size / m) + size / eps,
                    }
                )
    return rows


def codec_cost_exponents(rows=None, eps_max: float = 2**-4) -> dict:
    """Fitted exponent of parameters ~ eps^-e per (|I|, m) over the rows with eps <= ``eps_max``
    (rows from :func:`codec_cost_rows`, computed when not given). Thm 3 predicts e = max(1, d|I|/m);
    the construction packs whole coordinates, so it pays max(1, ceil(d|I|/m))."""
    if rows is None:  # the default grid is fixed and takes seconds: computed once per process
        return dict(_default_codec_exponents())
    fits = {}
    for size, m in dict.fromkeys((r["I"], r["m"]) for r in rows):
        rs = [r for r in rows if r["I"] == size and r["m"] == m and r["eps"] <= eps_max]
        x = np.log([1 / r["eps"] for r in rs])
        fits[(size, m)] = float(np.polyfit(x, np.log([r["parameters"] for r in rs]), 1)[0])
    return fits


@functools.lru_cache(maxsize=1)
def _default_codec_exponents() -> dict:
    return codec_cost_exponents(codec_cost_rows())


def autoencoder_rows(records) -> list[dict]:
    """Thm 3(b), trained: one row per (|I|, m, width) from ``encoding-cost`` records: seeds, the mean
    and the best held-out RMS reconstruction error, and the parameter count of one pair."""
    from collections import defaultdict

    groups = defaultdict(list)
    for r in records:
        if r["status"] == "done":
            c = r["config"]
            groups[(c["target_params"]["d"], c["model"]["bottleneck"], c["model"]["width"])].append(r)
    rows = []
    for (size, m, width), recs in sorted(groups.items()):
        rms = [r["measurements"]["rms"] for r in recs]
        params = sum(recs[0]["parameters"].values())
        rows.append(
            {
                "I": size,
                "m": m,
                "width": width,
                "seeds": len(recs),
                "rms_mean": float(np.mean(rms)),
                "rms_best": float(min(rms)),
                "parameters": params,
            }
        )
    return rows


def smallest_widths(rows: list[dict], threshold: float) -> list[dict]:
    """Per (|I|, m): the mean RMS error at each width and the smallest width whose best seed reaches
    ``threshold`` (None: no width does), from :func:`autoencoder_rows`."""
    out = []
    for size, m in sorted({(r["I"], r["m"]) for r in rows}):
        rs = sorted((r for r in rows if r["I"] == size and r["m"] == m), key=lambda r: r["width"])
        reached = [r["width"] for r in rs if r["rms_best"] <= threshold]
        out.append(
            {
                "|I|": size,
                "m": m,
                **{f"RMS, w = {r['width']}": r["rms_mean"] for r in rs},
                "smallest_width": min(reached) if reached else None,
            }
        )
    return out
