"""The checks config fields share: counts, and non-negative amounts."""

from __future__ import annotations

__all__ = ["positive_int", "nonnegative"]


def positive_int(name: str, value) -> int:
    """``value`` if it is a positive integer (a bool is not), else a ValueError naming ``name``."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def nonnegative(name: str, value, unit: str = "") -> float:
    """``value`` if it is a finite number >= 0, else a ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < float("inf"):
        raise ValueError(f"{name} must be a finite number >= 0{' ' + unit if unit else ''}, got {value!r}")
    return value
