"""infoflow: the InfoFlow engine and the training engine of the infoflow-book.

Companion to *InfoFlow: A Framework for Multi-Layer Transformer Analysis* (Yu, Jiang, Bao, Li, 2026).
The InfoFlow engine (``infosets``, ``comparison``, ``predict``) needs numpy only.

Targets and experiments of your own register themselves (``register_target``,
``register_experiment``) when their module is imported; name such modules in the environment variable
``INFOFLOW_PLUGINS`` (comma-separated) and the CLI and every worker process import them at start.
"""

__version__ = "0.1.0"

from .infosets import GlobalAggregation, InfoFlowModel, MaxPosition, SpecificPosition, active_index_set, learns
from .predict import predict
from .targets import TARGETS, make_target, register_target

__all__ = [
    "GlobalAggregation",
    "InfoFlowModel",
    "MaxPosition",
    "SpecificPosition",
    "active_index_set",
    "learns",
    "predict",
    "TARGETS",
    "make_target",
    "register_target",
    "load_plugins",
    "__version__",
]


def load_plugins(names: str | None = None) -> list[str]:
    """Import the modules named in ``names`` (default: the environment variable INFOFLOW_PLUGINS,
    comma-separated), so the targets and experiments they register are known. Returns the names."""
    import importlib
    import os

    text = os.environ.get("INFOFLOW_PLUGINS", "") if names is None else names
    loaded = []
    for name in (n.strip() for n in text.split(",")):
        if not name:
            continue
        try:
            importlib.import_module(name)
        except ImportError as err:
            raise ImportError(f"INFOFLOW_PLUGINS names {name!r}, which cannot be imported: {err}") from err
        loaded.append(name)
    return loaded


PLUGIN_ERROR: str | None = None  # why INFOFLOW_PLUGINS failed to load at import (the CLI says it in one line)
try:
    load_plugins()
except ImportError as _err:
    PLUGIN_ERROR = str(_err)
