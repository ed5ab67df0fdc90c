"""The multi-layer Transformer of Sec. 3 (eqs. 1–2; appendix: the model, RECONSTRUCTED standard form), built as
an **ensemble**: every parameter has a leading member dimension M, so M independent models train
as one set of batched matmuls. A single model is the M = 1 case.

Shapes: inputs X (M, B, T, d) → outputs (M, B, out_dim). Positions: 0 is the CLS token, 1..T tokens.
Residual width E is shared by all layers; layer l has h_l heads of dimension n_l = E / h_l.

Members may differ in their head counts: with n_l = E / h_l every parameter has the same shape
whatever h_l is, so (say) the (D-1,D), (D,D-1) and (D,D) models of Sec. 6.1 train as one ensemble.
Only the attention core (scores, softmax, weighted sum) runs once per run of consecutive members
with the same h_l; everything else stays one batched op for all members.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Optional, Sequence

import torch
from torch import nn

from .checks import positive_int

__all__ = ["ModelConfig", "EnsembleTransformer", "shape_key", "equal_runs"]


@dataclass(frozen=True)
class ModelConfig:
    d: int  # token dimension
    T: int  # sequence length
    heads: tuple = (1,)  # heads per layer
    E: int = 32  # residual / embedding width (E_l = n_l·h_l)
    ffn: int = 128  # hidden width of the FFN between layers and of the readout
    out_dim: int = 1
    pe: str = "none"  # none | additive | augmented (learned p_t)
    activation: str = "gelu"  # DEFAULT gelu for training, tanh for the constructions (appendix: the model)
    layernorm: bool = False  # App. C.3
    beta: Optional[float] = None  # softmax scaling; None → 1/sqrt(n_l)
    head_dim: Optional[int] = None  # per-head dim n_l (E_l = n_l·h_l); None → n_l = E / h_l
    qk_init: float = 1.0  # scale of W_Q, W_K at initialisation (the softmax's initial temperature; DEFAULT 1)

    def __post_init__(self):
        for name in ("d", "T", "E", "ffn", "out_dim"):
            positive_int(name, getattr(self, name))
        if len(self.heads) == 0:
            raise ValueError("heads must list at least one layer")
        for l, h in enumerate(self.heads, 1):
            if not isinstance(h, int) or h < 1:
                raise ValueError(f"heads: layer {l} must have a positive head count, got {h!r}")
            if self.head_dim is None and self.E % h:
                raise ValueError(f"heads: layer {l} has {h} heads, which must divide E = {self.E}")
        if self.head_dim is not None:
            positive_int("head_dim", self.head_dim)
        if (
            isinstance(self.qk_init, bool)
            or not isinstance(self.qk_init, (int, float))
            or not self.qk_init >= 0
            or not math.isfinite(self.qk_init)
        ):
            raise ValueError(f"qk_init must be a finite number >= 0, got {self.qk_init!r}")
        if self.pe not in ("none", "additive", "augmented"):
            raise ValueError(f"pe must be one of none, additive, augmented; got {self.pe!r}")
        if self.activation not in ("gelu", "relu", "tanh"):
            raise ValueError(f"activation must be one of gelu, relu, tanh; got {self.activation!r}")


def _act(name: str):
    return {"gelu": nn.functional.gelu, "relu": torch.relu, "tanh": torch.tanh}[name]


def shape_key(cfg: ModelConfig) -> ModelConfig:
    """``cfg`` with what does not set a parameter shape blanked: the head counts, when the attention
    width is E (``head_dim`` unset). Models with equal keys can be members of one ensemble."""
    return replace(cfg, heads=(1,) * len(cfg.heads)) if cfg.head_dim is None else cfg


def equal_runs(items: Sequence) -> list[tuple[int, int, object]]:
    """Runs of consecutive equal items: [(start, end, item), ...]."""
    runs: list = []
    for j, item in enumerate(items):
        if runs and runs[-1][2] == item:
            runs[-1][1] = j + 1
        else:
            runs.append([j, j + 1, item])
    return [tuple(r) for r in runs]


class EnsembleTransformer(nn.Module):
    """M independent Transformers of the same parameter shapes. ``cfg`` is one config for all members
    or one per member (equal but for ``heads``, see :func:`shape_key`). ``forward(X, record=True)``
    also returns, per layer, the attention weights (M, B, h, T+1, T+1) and the post-attention states
    (M, B, T+1, E); recording needs one head count per layer."""

    def __init__(self, cfg, members: Optional[int] = None, seeds: Optional[Sequence[int]] = None, device=None):
        super().__init__()
        if members is not None:
            positive_int("members", members)
        cfgs = [cfg] * (members or 1) if isinstance(cfg, ModelConfig) else list(cfg)
        if not cfgs:
            raise ValueError("cfg must give at least one config")
        members = members or len(cfgs)
        if len(cfgs) != members:
            raise ValueError(f"cfg must give one config per member ({members}), got {len(cfgs)}")
        for j, c in enumerate(cfgs):
            if shape_key(c) != shape_key(cfgs[0]):
                raise ValueError(
                    f"cfg: member {j} ({c}) does not share parameter shapes with member 0 ({cfgs[0]}); "
                    "members may differ only in heads, and only when head_dim is unset"
                )
        seeds = list(range(members)) if seeds is None else [int(s) for s in seeds]
        if len(seeds) != members:
            raise ValueError(f"seeds must give one seed per member ({members}), got {len(seeds)}")
        cfg = cfgs[0]
        self.cfg, self.cfgs, self.M = cfg, cfgs, members
        # per layer: runs of consecutive members with the same head count
        self.head_groups = [equal_runs([c.heads[l] for c in cfgs]) for l in range(len(cfg.heads))]
        M, E, d, m = members, cfg.E, cfg.d, cfg.ffn
        # one generator per member: member j is initialised exactly as a lone model with seed j
        gens = [torch.Generator().manual_seed(s) for s in seeds]

        def w(*shape, fan_in, scale=1.0):
            init = torch.stack([torch.randn(*shape, generator=g) for g in gens]) / math.sqrt(fan_in)
            return nn.Parameter((init if scale == 1.0 else init * scale).to(device))

        def zeros(*shape):
            return nn.Parameter(torch.zeros(M, *shape, device=device))

        d_in = d + (E if cfg.pe == "augmented" else 0)
        self.W_in, self.b_in = w(d_in, E, fan_in=d_in), zeros(E)
        self.pos = w(cfg.T, E, fan_in=E) if cfg.pe != "none" else None
        self.cls = w(E, fan_in=E)
        self.layers = nn.ModuleList()
        for h in cfg.heads:
            inner = self.inner_width(h)  # E (or head_dim·h, then h is every member's)
            layer = nn.ParameterDict(
                dict(
                    W_Q=w(E, inner, fan_in=E, scale=cfg.qk_init),
                    W_K=w(E, inner, fan_in=E, scale=cfg.qk_init),
                    W_V=w(E, inner, fan_in=E),
                    W_O=w(inner, E, fan_in=inner),
                    W_1=w(E, m, fan_in=E),
                    b_1=zeros(m),
                    W_2=w(m, E, fan_in=m),
                    b_2=zeros(E),
                )
            )
            if cfg.layernorm:
                layer["ln_g"] = nn.Parameter(torch.ones(M, E, device=device))
                layer["ln_b"] = zeros(E)
            self.layers.append(layer)
        self.R_1, self.r_1 = w(E, m, fan_in=E), zeros(m)
        self.R_2, self.r_2 = w(m, cfg.out_dim, fan_in=m), zeros(cfg.out_dim)

    def inner_width(self, h: int) -> int:
        """E_l = n_l·h_l, the attention width of a layer with h heads."""
        return self.cfg.head_dim * h if self.cfg.head_dim else self.cfg.E

    def parameter_counts(self) -> dict:
        """Parameters of one member, per block (the theory is about parameter cost)."""

        def n(*ps):
            return int(sum(p[0].numel() for p in ps if p is not None))

        counts = {"encoder": n(self.W_in, self.b_in, self.pos, self.cls)}
        for l, layer in enumerate(self.layers, 1):
            counts[f"layer{l}.attention"] = n(layer["W_Q"], layer["W_K"], layer["W_V"], layer["W_O"])
            counts[f"layer{l}.ffn"] = n(layer["W_1"], layer["b_1"], layer["W_2"], layer["b_2"])
            if "ln_g" in layer:
                counts[f"layer{l}.layernorm"] = n(layer["ln_g"], layer["ln_b"])
        counts["readout"] = n(self.R_1, self.r_1, self.R_2, self.r_2)
        counts["total"] = sum(counts.values())
        return counts

    def embed(self, X: torch.Tensor) -> torch.Tensor:
        """Token encoder + CLS at position 0: (M, B, T, d) → (M, B, T+1, E)."""
        M, B, T, _ = X.shape
        if self.cfg.pe == "augmented":
            X = torch.cat([X, self.pos[:, None, :T].expand(M, B, T, -1)], dim=-1)
        H = torch.einsum("mbtd,mde->mbte", X, self.W_in) + self.b_in[:, None, None]
        if self.cfg.pe == "additive":
            H = H + self.pos[:, None, :T]
        cls = self.cls[:, None, None].expand(M, B, 1, -1)
        return torch.cat([cls, H], dim=2)

    def forward(self, X: torch.Tensor, record: bool = False):
        if X.dim() != 4 or X.shape[0] != self.M or X.shape[-1] != self.cfg.d:
            raise ValueError(f"X must have shape (M={self.M}, B, T, d={self.cfg.d}), got {tuple(X.shape)}")
        act = _act(self.cfg.activation)
        H = self.embed(X)
        M, B, S, E = H.shape
        records = []
        last = len(self.layers) - 1
        if record and any(len(groups) > 1 for groups in self.head_groups):
            raise ValueError("record=True needs one head count per layer; these members differ in heads")
        for l, (groups, layer) in enumerate(zip(self.head_groups, self.layers)):
            inner = self.inner_width(groups[0][2])
            # The readout reads only the CLS token, so the last layer needs only its row (queries,
            # residual, FFN at position 0): the same outputs for about 40% fewer FLOPs at L = 2.
            # ``record=True`` computes every row, for probes and figures.
            cls_only = l == last and not record
            Hq = H[:, :, :1] if cls_only else H
            # Q, K, V as one batched matmul (K, V only when the queries are the CLS row alone)
            W = [layer["W_K"], layer["W_V"]] if cls_only else [layer["W_Q"], layer["W_K"], layer["W_V"]]
            qkv = torch.einsum("mbse,mef->mbsf", H, torch.cat(W, dim=-1)).split(inner, dim=-1)
            q = torch.einsum("mbse,mef->mbsf", Hq, layer["W_Q"]) if cls_only else qkv[0]
            k, v = qkv[-2:]
            # the attention core once per run of members with the same head count (usually one run)
            outs = [self.attend(q[a:b], k[a:b], v[a:b], h) for a, b, h in groups]
            att = outs[0][0]
            heads_out = outs[0][1] if len(outs) == 1 else torch.cat([out for _, out in outs])
            H = Hq + torch.einsum("mbse,mef->mbsf", heads_out, layer["W_O"])
            if "ln_g" in layer:
                H = nn.functional.layer_norm(H, (E,)) * layer["ln_g"][:, None, None] + layer["ln_b"][:, None, None]
            if record:
                records.append({"attention": att.detach(), "post_attention": H.detach()})
            F = act(torch.einsum("mbse,mef->mbsf", H, layer["W_1"]) + layer["b_1"][:, None, None])
            H = H + torch.einsum("mbsf,mfe->mbse", F, layer["W_2"]) + layer["b_2"][:, None, None]
        c = H[:, :, 0]
        y = (
            torch.einsum("mbf,mfo->mbo", act(torch.einsum("mbe,mef->mbf", c, self.R_1) + self.r_1[:, None]), self.R_2)
            + self.r_2[:, None]
        )
        return (y, records) if record else y

    def attend(self, q, k, v, h: int):
        """Eq. 1's attention core for members with h heads: q (m, B, Sq, inner), k and v (m, B, S, inner)
        → weights (m, B, h, Sq, S) and the heads' outputs concatenated, (m, B, Sq, inner)."""
        m, B, Sq, inner = q.shape
        n = inner // h
        beta = self.cfg.beta if self.cfg.beta is not None else 1 / math.sqrt(n)
        q, k, v = (t.reshape(m, B, t.shape[2], h, n).transpose(2, 3) for t in (q, k, v))
        att = torch.softmax(beta * q @ k.transpose(-1, -2), dim=-1)
        return att, (att @ v).transpose(2, 3).reshape(m, B, Sq, inner)

    @staticmethod
    def top_positions(attention: torch.Tensor, k: int = 2) -> torch.Tensor:
        """Per head, the positions with the largest (k=1: argmax) and second-largest attention."""
        return attention.topk(k, dim=-1).indices
