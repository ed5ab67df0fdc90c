"""The checks config fields share: counts, and non-negative amounts; and the one way a class joins
a registry (targets, experiments)."""

from __future__ import annotations

__all__ = ["positive_int", "nonnegative", "enter"]


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


def enter(registry: dict, kind: str, name, cls) -> None:
    """Put ``cls`` into ``registry`` under ``name``, a slug of letters, digits and '-'. A name taken by
    another class is refused; the same class defined again (a rerun notebook cell) replaces itself."""
    if not isinstance(name, str) or not name or not all(c.isalnum() or c == "-" for c in name):
        raise ValueError(f"{cls.__name__}.name must be a slug of letters, digits and '-', got {name!r}")
    taken = registry.get(name)
    if taken is not None and (taken.__module__, taken.__qualname__) != (cls.__module__, cls.__qualname__):
        raise ValueError(f"{kind} name {name!r} is taken by {taken.__module__}.{taken.__qualname__}")
    registry[name] = cls
