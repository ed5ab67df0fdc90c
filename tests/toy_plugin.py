"""A target of one's own, in one file: the largest of T scalar tokens, its comparison profile, a
construction for the engine and a tiny experiment. Imported by tests/test_extend.py (and by the CLI with
INFOFLOW_PLUGINS=toy_plugin); CONTRIBUTING.md walks through the same file."""

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from numpy.polynomial import Polynomial as P

from infoflow.backend import array_namespace
from infoflow.comparison import ComparisonProfile, TreeOfComparison
from infoflow.experiments import Experiment, TrainSpec, register_experiment
from infoflow.infosets import InfoFlowModel, MaxPosition, linear_score
from infoflow.predict import Construction, layers_with
from infoflow.targets import Target, register_target


@register_target
@dataclass(frozen=True)
class ToyMax(Target):
    """F(X) = max_t x_t for scalar tokens (d = 1): one comparison per token."""

    name: ClassVar[str] = "toy-max"
    label: ClassVar[str] = "DEFAULT"
    d: int = 1

    def __call__(self, X):  # numpy arrays and torch tensors alike (infoflow.backend)
        return array_namespace(X).max(X[..., 0], axis=-1)

    @classmethod
    def comparison_profile(cls):
        def trees(T, params, target):
            leaves = [(t,) for t in range(1, T + 1)]
            return [TreeOfComparison.from_leaves(leaves, key=lambda X, I: float(X[I[0] - 1, 0]), mode="max")]

        return ComparisonProfile(
            "toy-max", 1, 1, noc_lower=lambda p: P([-1, 1]), noc_upper=lambda p: P([-1, 1]), trees=trees
        )

    def constructions(self, heads, pe=False):
        rules = [MaxPosition(linear_score(np.ones(1)))]
        return [
            Construction("the CLS retrieves the largest token", InfoFlowModel(layers_with(heads, rules), pe), "toy")
        ]


@register_experiment
class ToyMaxExperiment(Experiment):
    name: ClassVar[str] = "toy-max"
    description: ClassVar[str] = "one layer, one head on the largest of T scalars"
    target: ClassVar[str] = "toy-max"
    Ts: list[int] = [4, 8]
    seeds: list[int] = [0, 1]
    ffn: int = 16
    train: TrainSpec = TrainSpec(steps=40, batch=32, n_val=64, eval_every=20)

    def variants(self):
        for T in self.Ts:
            yield "1 layer, h=1", {}, T, self.model([1], 8)
