"""The one check every config field that counts something shares."""
from __future__ import annotations

__all__ = ["positive_int"]


def positive_int(name: str, value) -> int:
    """``value`` if it is a positive integer (a bool is not), else a ValueError naming ``name``."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value
