"""infoflow: the InfoFlow engine and the training engine of the infoflow-book.

Companion to *InfoFlow: A Framework for Multi-Layer Transformer Analysis* (Yu, Jiang, Bao, Li, 2026).
The InfoFlow engine (``infosets``, ``comparison``, ``predict``) needs numpy only.
"""

__version__ = "0.1.0"

from .infosets import GlobalAggregation, InfoFlowModel, MaxPosition, SpecificPosition, active_index_set, learns
from .predict import predict
from .targets import TARGETS, make_target

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
    "__version__",
]
