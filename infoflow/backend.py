"""One code path for numpy (the InfoFlow engine) and torch (the training engine).

Targets are written against the array API (via ``array_api_compat``); random draws go through
:func:`normal` / :func:`uniform`, which take either a ``numpy.random.Generator`` or a
``torch.Generator`` and return an array of the matching kind (torch on the generator's device).
Torch is imported only when a torch generator is passed, so the engine needs numpy alone.
"""

from __future__ import annotations

import numpy as np
from array_api_compat import array_namespace

__all__ = ["array_namespace", "normal", "uniform", "is_torch_generator", "as_array"]


def is_torch_generator(rng) -> bool:
    return type(rng).__module__.startswith("torch")


def normal(rng, shape, dtype=None):
    """Standard normal draws of ``shape`` from ``rng`` (numpy Generator or torch.Generator)."""
    if is_torch_generator(rng):
        import torch

        return torch.randn(shape, generator=rng, device=rng.device, dtype=dtype or torch.float32)
    return rng.standard_normal(shape)


def uniform(rng, shape, dtype=None):
    """Uniform draws on [0, 1) of ``shape`` from ``rng`` (numpy Generator or torch.Generator)."""
    if is_torch_generator(rng):
        import torch

        return torch.rand(shape, generator=rng, device=rng.device, dtype=dtype or torch.float32)
    return rng.random(shape)


def as_array(value, like):
    """``value`` (a numpy array) as an array of the same kind, device and dtype as ``like``."""
    if type(like).__module__.startswith("torch"):
        import torch

        return torch.as_tensor(np.asarray(value), dtype=like.dtype, device=like.device)
    return np.asarray(value, dtype=like.dtype)
