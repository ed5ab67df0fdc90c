"""The multi-layer Transformer of Sec. 3 (eqs. 1–2; SPEC §1, RECONSTRUCTED standard form), built as
an **ensemble**: every parameter has a leading member dimension M, so M independent models train
as one set of batched matmuls. A single model is the M = 1 case.

Shapes: inputs X (M, B, T, d) → outputs (M, B, out_dim). Positions: 0 is the CLS token, 1..T tokens.
Residual width E is shared by all layers; layer l has h_l heads of dimension n_l = E / h_l.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional, Sequence

import torch
from torch import nn

__all__ = ["ModelConfig", "EnsembleTransformer"]


@dataclass(frozen=True)
class ModelConfig:
    d: int                       # token dimension
    T: int                       # sequence length
    heads: tuple = (1,)          # heads per layer
    E: int = 32                  # residual / embedding width (E_l = n_l·h_l)
    ffn: int = 128               # hidden width of the FFN between layers and of the readout
    out_dim: int = 1
    pe: str = "none"             # none | additive | augmented (learned p_t)
    activation: str = "gelu"     # DEFAULT gelu for training, tanh for the constructions (SPEC §1)
    layernorm: bool = False      # App. C.3
    beta: Optional[float] = None  # softmax scaling; None → 1/sqrt(n_l)
    head_dim: Optional[int] = None  # per-head dim n_l (E_l = n_l·h_l); None → n_l = E / h_l

    def __post_init__(self):
        for name in ("d", "T", "E", "ffn", "out_dim"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if len(self.heads) == 0:
            raise ValueError("heads must list at least one layer")
        for l, h in enumerate(self.heads, 1):
            if not isinstance(h, int) or h < 1:
                raise ValueError(f"heads: layer {l} must have a positive head count, got {h!r}")
            if self.head_dim is None and self.E % h:
                raise ValueError(f"heads: layer {l} has {h} heads, which must divide E = {self.E}")
        if self.head_dim is not None and (not isinstance(self.head_dim, int) or self.head_dim < 1):
            raise ValueError(f"head_dim must be a positive integer, got {self.head_dim!r}")
        if self.pe not in ("none", "additive", "augmented"):
            raise ValueError(f"pe must be one of none, additive, augmented; got {self.pe!r}")
        if self.activation not in ("gelu", "relu", "tanh"):
            raise ValueError(f"activation must be one of gelu, relu, tanh; got {self.activation!r}")


def _act(name: str):
    return {"gelu": nn.functional.gelu, "relu": torch.relu, "tanh": torch.tanh}[name]


class EnsembleTransformer(nn.Module):
    """M independent Transformers of the same shape. ``forward(X, record=True)`` also returns, per
    layer, the attention weights (M, B, h, T+1, T+1) and the post-attention states (M, B, T+1, E)."""

    def __init__(self, cfg: ModelConfig, members: int = 1, seeds: Optional[Sequence[int]] = None, device=None):
        super().__init__()
        if not isinstance(members, int) or members < 1:
            raise ValueError(f"members must be a positive integer, got {members!r}")
        seeds = list(range(members)) if seeds is None else [int(s) for s in seeds]
        if len(seeds) != members:
            raise ValueError(f"seeds must give one seed per member ({members}), got {len(seeds)}")
        self.cfg, self.M = cfg, members
        M, E, d, m = members, cfg.E, cfg.d, cfg.ffn
        # one generator per member: member j is initialised exactly as a lone model with seed j
        gens = [torch.Generator().manual_seed(s) for s in seeds]

        def w(*shape, fan_in):
            init = torch.stack([torch.randn(*shape, generator=g) for g in gens]) / math.sqrt(fan_in)
            return nn.Parameter(init.to(device))

        def zeros(*shape):
            return nn.Parameter(torch.zeros(M, *shape, device=device))

        d_in = d + (E if cfg.pe == "augmented" else 0)
        self.W_in, self.b_in = w(d_in, E, fan_in=d_in), zeros(E)
        self.pos = w(cfg.T, E, fan_in=E) if cfg.pe != "none" else None
        self.cls = w(E, fan_in=E)
        self.layers = nn.ModuleList()
        for h in cfg.heads:
            inner = self.inner_width(h)
            layer = nn.ParameterDict(dict(
                W_Q=w(E, inner, fan_in=E), W_K=w(E, inner, fan_in=E), W_V=w(E, inner, fan_in=E),
                W_O=w(inner, E, fan_in=inner),
                W_1=w(E, m, fan_in=E), b_1=zeros(m), W_2=w(m, E, fan_in=m), b_2=zeros(E)))
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
        for l, (h, layer) in enumerate(zip(self.cfg.heads, self.layers)):
            inner = self.inner_width(h)
            n = inner // h
            beta = self.cfg.beta if self.cfg.beta is not None else 1 / math.sqrt(n)
            # The readout reads only the CLS token, so the last layer needs only its row (queries,
            # residual, FFN at position 0): the same outputs for about 40% fewer FLOPs at L = 2.
            # ``record=True`` computes every row, for probes and figures.
            cls_only = l == last and not record
            Hq = H[:, :, :1] if cls_only else H
            Sq = Hq.shape[2]
            # Q, K, V as one batched matmul (K, V only when the queries are the CLS row alone)
            W = [layer["W_K"], layer["W_V"]] if cls_only else [layer["W_Q"], layer["W_K"], layer["W_V"]]
            qkv = torch.einsum("mbse,mef->mbsf", H, torch.cat(W, dim=-1)).split(inner, dim=-1)
            q = (torch.einsum("mbse,mef->mbsf", Hq, layer["W_Q"]),) if cls_only else qkv[:1]
            q, k, v = (t.reshape(M, B, t.shape[2], h, n).transpose(2, 3) for t in q + qkv[-2:])
            att = torch.softmax(beta * q @ k.transpose(-1, -2), dim=-1)           # (M, B, h, Sq, S)
            heads_out = (att @ v).transpose(2, 3).reshape(M, B, Sq, inner)
            H = Hq + torch.einsum("mbse,mef->mbsf", heads_out, layer["W_O"])
            if "ln_g" in layer:
                H = nn.functional.layer_norm(H, (E,)) * layer["ln_g"][:, None, None] + layer["ln_b"][:, None, None]
            if record:
                records.append({"attention": att.detach(), "post_attention": H.detach()})
            F = act(torch.einsum("mbse,mef->mbsf", H, layer["W_1"]) + layer["b_1"][:, None, None])
            H = H + torch.einsum("mbsf,mfe->mbse", F, layer["W_2"]) + layer["b_2"][:, None, None]
        c = H[:, :, 0]
        y = torch.einsum("mbf,mfo->mbo", act(torch.einsum("mbe,mef->mbf", c, self.R_1) + self.r_1[:, None]),
                         self.R_2) + self.r_2[:, None]
        return (y, records) if record else y

    @staticmethod
    def top_positions(attention: torch.Tensor, k: int = 2) -> torch.Tensor:
        """Per head, the positions with the largest (k=1: argmax) and second-largest attention."""
        return attention.topk(k, dim=-1).indices
