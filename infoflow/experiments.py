"""The book's experiments as declarative, validated configs (pydantic), each with three profiles:
``quick`` (CPU, seconds to minutes: tests, laptops, the book's live cells), ``cpu`` (the largest scale
for a 2-core CPU) and ``paper`` (the paper's settings as the book's appendix restores them, for one
GPU). Every number below that the paper lost is **our choice** (DEFAULT in the appendix); change it
with ``--set key=value`` rather than in code.

An experiment expands into run configs (plain dicts, seed included) that the runner hashes, groups
into ensembles (runs equal but for the seed) and trains.
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal, Optional

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeInt,
    PositiveInt,
    ValidationError,
    field_validator,
    model_validator,
)

from .paper import KINDS, config_kind, kind_heads, lever_of
from .checks import enter
from .targets import TARGETS

__all__ = [
    "TrainSpec",
    "Experiment",
    "EXPERIMENTS",
    "PROFILES",
    "make_experiment",
    "parse_sets",
    "register_experiment",
    "ConfigError",
]


class ConfigError(ValueError):
    """A bad experiment, profile or key; the message names the field and the allowed values."""


Positive = Annotated[float, Field(gt=0, allow_inf_nan=False)]
NonNegative = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Seed = Annotated[int, Field(ge=0, lt=2**63)]


class TrainSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    steps: PositiveInt = 1000
    batch: PositiveInt = 256
    lr: Positive = 1e-3  # THIRD-PARTY
    weight_decay: NonNegative = 1e-2  # THIRD-PARTY
    grad_clip: Positive = 1.0  # DEFAULT
    tail_steps: NonNegativeInt = 0
    tail_lr: NonNegative = 1e-4
    n_val: PositiveInt = 2048
    eval_every: PositiveInt = 100
    n_train: Optional[PositiveInt] = None
    # levers of the Sec. 6.1 study (DEFAULT, ours); left out of a run's config while they hold these
    # values, so the records written before they existed keep their config hashes
    warmup_steps: NonNegativeInt = 0
    beta2: Annotated[float, Field(gt=0, lt=1)] = 0.999
    curriculum: list[tuple[PositiveInt, PositiveInt]] = []

    @model_validator(mode="after")
    def _consistent(self):
        if self.warmup_steps >= self.steps:
            raise ValueError(f"warmup_steps ({self.warmup_steps}) must be less than steps ({self.steps})")
        if self.n_train is not None and self.n_train < self.batch:
            raise ValueError(f"n_train ({self.n_train}) must be at least batch ({self.batch})")
        if self.curriculum and (self.n_train or sum(s for _, s in self.curriculum) >= self.steps):
            raise ValueError("curriculum needs fresh samples (n_train null) and stages that end before steps")
        return self


LATER_KEYS = {"train": {"warmup_steps": 0, "beta2": 0.999, "curriculum": []}, "model": {"qk_init": 1.0}}


def _drop_later_defaults(section: str, values: dict) -> dict:
    later = LATER_KEYS[section]
    return {k: v for k, v in values.items() if not (k in later and v == later[k])}


class Experiment(BaseModel):
    """Base: subclasses define the axes and :meth:`variants` (label, target params, T, model dict)."""

    model_config = ConfigDict(extra="forbid")
    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    target: ClassVar[str] = ""
    profiles: ClassVar[dict] = {}
    seeds: list[Seed] = [0, 1, 2]
    ffn: PositiveInt = 128
    activation: Literal["gelu", "relu", "tanh"] = "gelu"
    train: TrainSpec = TrainSpec()

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, v):
        if not v or len(set(v)) != len(v):
            raise ValueError("seeds must be a non-empty list of distinct integers")
        return v

    def variants(self):  # pragma: no cover - abstract
        raise NotImplementedError

    def measure(self, model, target, T: int, phase: str) -> Optional[list]:
        """Extra per-member measurements stored in the records, at ``phase`` "init" (before
        training) and "trained". None: nothing to measure."""
        return None

    def monitor(self, model, targets, T: int):
        """(name, probe) to call on the model at every evaluation while it trains (stored in the
        records' measurements under ``name``), or None."""
        return None

    def fit(self, group: list[dict], device: str) -> Optional[tuple]:
        """Train a group of runs (equal but for the seed) of a model other than the Sec. 3 Transformer:
        (one result per run in the form of :func:`~infoflow.train.train_ensemble`'s, the parameter
        counts of one member). ``None``, the default: the runner trains the Transformer of the runs'
        model dicts. An experiment that fits its own models never shares ensembles across shapes."""
        return None

    def model(self, heads, E, **kw) -> dict:
        return {
            "heads": list(heads),
            "E": E,
            "ffn": self.ffn,
            "activation": self.activation,
            "pe": "none",
            "layernorm": False,
            "head_dim": None,
            **kw,
        }

    def train_for(self, label: str) -> dict:
        """The training settings of a variant (the experiment's own unless a subclass varies them)."""
        return self.train.model_dump()

    def target_for(self, label: str) -> str:
        """The target of a variant (the experiment's ``target`` unless a subclass varies it)."""
        return self.target

    def runs(self) -> list[dict]:
        out = []
        for label, params, T, model in self.variants():
            train = _drop_later_defaults("train", self.train_for(label))
            for seed in self.seeds:
                out.append(
                    {
                        "experiment": self.name,
                        "label": label,
                        "target": self.target_for(label),
                        "target_params": params,
                        "T": T,
                        "model": _drop_later_defaults("model", model),
                        "train": train,
                        "seed": seed,
                    }
                )
        return out


# Profiles shared by the one-target-per-T experiments of Sec. 4 (our choice).
SMALL_QUICK = {
    "Ts": [4, 8, 16],
    "seeds": [0],
    "ffn": 64,
    "E": 16,
    "train": {"steps": 500, "batch": 128, "n_val": 1024, "eval_every": 50, "lr": 3e-3},
}
SMALL_CPU = {
    "Ts": [4, 8, 16],
    "seeds": [0, 1],
    "ffn": 64,
    "E": 16,
    "train": {"steps": 2000, "batch": 128, "n_val": 2048, "eval_every": 100},
}


def _probe_inputs(model, target, T: int, n: int):
    """The same ``n`` fixed inputs (seeded) for every member, on the model's device: (M, n, T, d)."""
    import torch

    g = torch.Generator(device=next(model.parameters()).device).manual_seed(20260517)
    return target.sample_inputs(g, n, T)[None].expand(model.M, -1, -1, -1)


def _heads_ok(heads) -> bool:
    return all(h >= 1 for h in heads)


class IntrinsicDimension(Experiment):
    name: ClassVar[str] = "intrinsic-dimension"
    description: ClassVar[str] = "App. C.4 / Fig. 1(a), Table 11: (D,D), (D-1,D), (D,D-1) two-layer models"
    target: ClassVar[str] = "intrinsic-dimension"
    Ds: list[PositiveInt] = [2, 3, 4, 5, 6]
    T: PositiveInt = 64
    E: PositiveInt = 60
    ffn: PositiveInt = 240
    profiles: ClassVar[dict] = {
        "paper": {},
        "cpu": {
            "Ds": [2, 3, 4],
            "T": 16,
            "E": 24,
            "ffn": 96,
            "seeds": [0, 1, 2],
            "train": {"steps": 15000, "batch": 256, "n_val": 4096, "eval_every": 250, "n_train": None},
        },
        "quick": {
            "Ds": [2, 3],
            "T": 16,
            "E": 24,
            "ffn": 64,
            "seeds": [0, 1],
            "train": {"steps": 600, "batch": 128, "n_val": 1024, "eval_every": 50, "lr": 3e-3},
        },
    }
    train: TrainSpec = TrainSpec(steps=20000, batch=256, n_train=100000, n_val=10000, eval_every=500)

    def variants(self):
        for D in self.Ds:
            for heads in (kind_heads(kind, D) for kind in KINDS):
                if _heads_ok(heads):
                    yield f"({heads[0]},{heads[1]})", {"D": D, "d": 4}, self.T, self.model(heads, self.E)


class IntrinsicDimensionLong(IntrinsicDimension):
    """Is the (D,D) gap still opening when the cosine schedule ends? The D = 2, 3 runs of the cpu profile,
    trained four times longer (our question; the paper's steps are unknown)."""

    name: ClassVar[str] = "intrinsic-dimension-long"
    description: ClassVar[str] = (
        "The D = 2 (cpu: and 3) configurations trained 4x longer (60k steps): does the gap keep opening?"
    )
    profiles: ClassVar[dict] = {
        "paper": {"Ds": [2], "train": {"steps": 60000}},
        "cpu": {
            "Ds": [2, 3],
            "T": 16,
            "E": 24,
            "ffn": 96,
            "seeds": [0, 1],
            "train": {"steps": 60000, "batch": 256, "n_val": 4096, "eval_every": 500, "n_train": None},
        },
        "quick": {
            "Ds": [2],
            "T": 16,
            "E": 24,
            "ffn": 64,
            "seeds": [0],
            "train": {"steps": 1200, "batch": 128, "n_val": 1024, "eval_every": 100, "lr": 3e-3},
        },
    }


class IntrinsicDimensionWide(IntrinsicDimension):
    """The cpu profile's missing dimensions: D = 5, 6 need E divisible by D and D - 1, which E = 24 is
    not, so these runs use the paper's widths E = 60, ffn = 240 (our choice) at the cpu profile's T and
    steps; D = 4 is run at both widths as the bridge between the two. At paper scale E is 60 already,
    so the paper profile has no runs (they are ``intrinsic-dimension``'s D = 4..6)."""

    name: ClassVar[str] = "intrinsic-dimension-wide"
    description: ClassVar[str] = (
        "D = 4, 5, 6 at E = 60 (the cpu profile's E = 24 is not divisible by 5): the missing dimensions on CPU"
    )
    profiles: ClassVar[dict] = {
        "paper": {"Ds": []},  # no runs: at paper scale these are intrinsic-dimension's own
        "cpu": {
            "Ds": [5, 6, 4],
            "T": 16,
            "seeds": [0, 1, 2],
            "train": {"steps": 15000, "batch": 256, "n_val": 4096, "eval_every": 250, "n_train": None},
        },
        "quick": {
            "Ds": [5],
            "T": 8,
            "ffn": 64,
            "seeds": [0],
            "train": {"steps": 300, "batch": 128, "n_val": 1024, "eval_every": 50, "lr": 3e-3},
        },
    }


class IntrinsicDimensionDeep(IntrinsicDimension):
    """Beyond the paper: three layers with a one-head middle layer, (D,1,D), (D-1,1,D), (D,1,D-1)."""

    name: ClassVar[str] = "intrinsic-dimension-deep"
    description: ClassVar[str] = (
        "Beyond the paper: three-layer (D,1,D), (D-1,1,D), (D,1,D-1) on the intrinsic-dimension target"
    )
    profiles: ClassVar[dict] = {
        "paper": {},
        "cpu": {
            "Ds": [2],
            "T": 8,
            "E": 24,
            "ffn": 96,
            "seeds": [0],
            "train": {"steps": 8000, "batch": 256, "n_val": 4096, "eval_every": 250, "n_train": None},
        },
        "quick": {
            "Ds": [2],
            "T": 8,
            "E": 24,
            "ffn": 64,
            "seeds": [0],
            "train": {"steps": 300, "batch": 128, "n_val": 1024, "eval_every": 50, "lr": 3e-3},
        },
    }

    def variants(self):
        for D in self.Ds:
            for heads in [(D, 1, D), (D - 1, 1, D), (D, 1, D - 1)]:
                if _heads_ok(heads):
                    yield "({},{},{})".format(*heads), {"D": D, "d": 4}, self.T, self.model(heads, self.E)


# Sec. 6.1 optimisation study (issue: why (D,D) models sit on a plateau). Each lever changes the paper
# recipe in one respect (all values DEFAULT, ours). Keys: TrainSpec fields; "warmup" and the curriculum
# stages' step counts as fractions of ``train.steps``, curriculum lengths as fractions of T; "qk_init",
# "width" (multiplies E and ffn) for the model.
LEVERS = {
    "paper recipe": {},
    "lr 3e-3": {"lr": 3e-3},
    "lr 1e-2": {"lr": 1e-2},
    "lr 3e-3, warm-up 10%": {"lr": 3e-3, "warmup": 0.1},
    "batch 64": {"batch": 64},
    "beta2 0.95": {"beta2": 0.95},
    "qk init x0.1": {"qk_init": 0.1},
    "qk init x3": {"qk_init": 3.0},
    "curriculum T/4, T/2, T": {"curriculum": [[0.25, 0.25], [0.5, 0.25]]},
    "fixed 100k set": {"n_train": 100000},
    "width x2": {"width": 2},
}
TRAIN_LEVER_KEYS = {"warmup", "curriculum", "steps_x"} | set(TrainSpec.model_fields)
LEVER_KEYS = {"qk_init", "width"} | TRAIN_LEVER_KEYS


class LeverStudy(Experiment):
    """Base of the optimisation studies: a recipe (the experiment's own settings) and, one at a time,
    the changes of it named in ``levers`` ({name: {key: value}}; keys in ``lever_keys``). Training
    keys are applied here (:meth:`train_for`); a subclass applies its model and target keys in its
    variants, labelled ``"<configuration> <lever name>"``."""

    lever_keys: ClassVar[set] = TRAIN_LEVER_KEYS
    levers: dict[str, dict] = {"paper recipe": {}}

    @field_validator("levers")
    @classmethod
    def _levers(cls, v):
        for name, lever in v.items():
            unknown = set(lever) - cls.lever_keys
            if unknown:
                raise ValueError(
                    f"lever {name!r}: unknown keys {sorted(unknown)}; allowed: {', '.join(sorted(cls.lever_keys))}"
                )
        return v

    def train_for(self, label: str) -> dict:
        """The recipe's training settings with the label's lever applied: "steps_x" multiplies
        ``train.steps``; "warmup" and a curriculum's stage lengths are fractions of the steps, the
        curriculum's sequence lengths fractions of ``T``; other keys are TrainSpec fields."""
        lever = self.levers[lever_of(label)]
        train = self.train.model_dump()
        train["steps"] = steps = int(round(lever.get("steps_x", 1) * train["steps"]))
        for key, value in lever.items():
            if key == "warmup":
                train["warmup_steps"] = int(round(value * steps))
            elif key == "curriculum":  # stages too short to hold a step at this length of training are left out
                stages = [(max(1, int(round(f * self.T))), int(round(g * steps))) for f, g in value]
                train["curriculum"] = [stage for stage in stages if stage[1] > 0]
            elif key in TrainSpec.model_fields:
                train[key] = value
        try:
            return TrainSpec.model_validate(train).model_dump()
        except ValidationError as err:
            e = err.errors()[0]
            where = ".".join(str(p) for p in e["loc"])
            raise ConfigError(
                f"{self.name}: lever {lever_of(label)!r}: train{'.' + where if where else ''}: {e['msg']}"
            ) from None


class IntrinsicDimensionLevers(IntrinsicDimension, LeverStudy):
    """The Sec. 6.1 optimisation study: the paper recipe and, one at a time, the levers of ``levers``
    (each a change of the recipe, :data:`LEVERS`), for the configurations in ``kinds``. The model is
    probed as it trains: at every evaluation, how often each first-layer head attends to the partner
    argmax_t x_sᵀA_i x_t of each A_i (:func:`~infoflow.probes.head_alignment`)."""

    name: ClassVar[str] = "intrinsic-dimension-levers"
    description: ClassVar[str] = (
        "Sec. 6.1 optimisation study: (D,D) under the paper recipe and one lever at a time, heads probed while training"
    )
    kinds: list[Literal["(D,D)", "(D-1,D)", "(D,D-1)"]] = ["(D,D)"]
    lever_keys: ClassVar[set] = LEVER_KEYS
    levers: dict[str, dict] = LEVERS
    probe_samples: PositiveInt = 256
    profiles: ClassVar[dict] = {
        "paper": {"Ds": [2], "train": {"n_train": None}},
        "cpu": {
            "Ds": [2],
            "T": 16,
            "E": 24,
            "ffn": 96,
            "seeds": [0, 1, 2, 3, 4],
            "train": {"steps": 4000, "batch": 256, "n_val": 4096, "eval_every": 100, "n_train": None},
        },
        "quick": {
            "Ds": [2],
            "T": 8,
            "E": 24,
            "ffn": 32,
            "seeds": [0, 1],
            "train": {"steps": 300, "batch": 64, "n_val": 512, "eval_every": 50, "n_train": None},
        },
    }

    def variants(self):
        for D in self.Ds:
            for kind in self.kinds:
                heads = kind_heads(kind, D)
                if not _heads_ok(heads):
                    continue
                for name, lever in self.levers.items():
                    width = lever.get("width", 1)
                    extra = {"qk_init": float(lever["qk_init"])} if "qk_init" in lever else {}
                    model = self.model(heads, self.E * width, **extra)
                    model["ffn"] = self.ffn * width
                    yield f"({heads[0]},{heads[1]}) {name}", {"D": D, "d": 4}, self.T, model

    def monitor(self, model, targets, T: int):
        import torch
        from .probes import head_alignment

        X = _probe_inputs(model, targets[0], T, self.probe_samples)
        A = torch.as_tensor(targets[0].A, dtype=X.dtype, device=X.device)
        return "alignment", lambda m: head_alignment(m, A, X)  # one target per group: never shared shapes


class IntrinsicDimensionTuned(IntrinsicDimensionLevers):
    """Sec. 6.1 under our tuned recipe (DEFAULT, ours: the study's strongest single lever, lr 1e-2,
    on fresh samples), all three configurations, beside the paper recipe's records, which stay as
    they are. Probed as the study is."""

    name: ClassVar[str] = "intrinsic-dimension-tuned"
    description: ClassVar[str] = (
        "Sec. 6.1 under our tuned recipe (lr 1e-2, fresh samples): (D,D), (D-1,D), (D,D-1), heads probed"
    )
    kinds: list[Literal["(D,D)", "(D-1,D)", "(D,D-1)"]] = ["(D,D)", "(D-1,D)", "(D,D-1)"]
    levers: dict[str, dict] = {"tuned": {"lr": 1e-2}}
    seeds: list[Seed] = [0, 1, 2, 3, 4]
    profiles: ClassVar[dict] = {
        "paper": {"train": {"n_train": None}},
        "cpu": {
            "Ds": [2, 3, 4],
            "T": 16,
            "E": 24,
            "ffn": 96,
            "train": {"steps": 8000, "batch": 256, "n_val": 4096, "eval_every": 200, "n_train": None},
        },
        "quick": IntrinsicDimensionLevers.profiles["quick"],
    }


class IntrinsicDimensionCombined(IntrinsicDimensionTuned):
    """Sec. 6.1: do the study's two strongest levers add up? Twice the width (E and ffn) with the
    learning rate of the tuned recipe (1e-2) and with a smaller one (3e-3, also with a 10% warm-up),
    for the (D,D) model at D = 2 (DEFAULT, ours). Same steps, seeds and probes as the tuned recipe;
    a recipe whose (D,D) seeds all leave the plateau (``confirmed``) is run for (D-1,D) and (D,D-1)
    too, and at the profile's larger D."""

    name: ClassVar[str] = "intrinsic-dimension-combined"
    description: ClassVar[str] = "Sec. 6.1: the two strongest levers together (width x2 with lr 1e-2 or 3e-3), (D,D)"
    kinds: list[Literal["(D,D)", "(D-1,D)", "(D,D-1)"]] = ["(D,D)"]
    levers: dict[str, dict] = {
        "lr 1e-2, width x2": {"lr": 1e-2, "width": 2},
        "lr 3e-3, width x2": {"lr": 3e-3, "width": 2},
        "lr 3e-3, width x2, warm-up 10%": {"lr": 3e-3, "width": 2, "warmup": 0.1},
    }
    # the levers whose (D,D) seeds all left the plateau, run for (D-1,D) and (D,D-1) too, at every D;
    # the other levers run for the kinds in ``kinds`` at the D of ``explore_Ds`` only
    confirmed: list[str] = ["lr 3e-3, width x2"]
    explore_Ds: list[PositiveInt] = [2]

    def variants(self):
        every_kind = self.model_copy(update={"kinds": list(KINDS)})
        for run in IntrinsicDimensionLevers.variants(every_kind):
            label, D = run[0], run[1]["D"]
            if lever_of(label) in self.confirmed or (config_kind(label) in self.kinds and D in self.explore_Ds):
                yield run

    profiles: ClassVar[dict] = {
        # the paper's scale (T = 64, E = 60 doubled by the width lever), the wide recipe at D = 2..6
        "paper": {"Ds": [2, 3, 4, 5, 6], "train": {"n_train": None}},
        "cpu": {**IntrinsicDimensionTuned.profiles["cpu"], "Ds": [2, 3, 4]},
        "quick": IntrinsicDimensionLevers.profiles["quick"],
    }


class TriangleCenter(Experiment):
    name: ClassVar[str] = "triangle-center"
    description: ClassVar[str] = "App. C.5 / Fig. 1(b), Table 12: three model sizes across T"
    target: ClassVar[str] = "triangle-center"
    Ts: list[PositiveInt] = [8, 16, 32, 64]
    sizes: list[tuple[PositiveInt, PositiveInt, PositiveInt]] = [(2, 2, 24), (4, 4, 24), (4, 4, 48)]
    profiles: ClassVar[dict] = {
        "paper": {},
        "cpu": {
            "Ts": [4, 8, 16, 32],
            "seeds": [0, 1],
            "train": {"steps": 2000, "batch": 128, "n_val": 2048, "eval_every": 100, "n_train": None},
        },
        "quick": {
            "Ts": [4, 8, 16],
            "seeds": [0, 1],
            "ffn": 64,
            "train": {"steps": 500, "batch": 128, "n_val": 1024, "eval_every": 50, "lr": 3e-3},
        },
    }
    train: TrainSpec = TrainSpec(steps=20000, batch=256, n_train=100000, n_val=10000, eval_every=500)

    def variants(self):
        for T in self.Ts:
            for h1, h2, E in self.sizes:
                yield f"({h1},{h2}),E={E}", {}, T, self.model((h1, h2), E)


class PairCenter(TriangleCenter):
    name: ClassVar[str] = "pair-center"
    description: ClassVar[str] = "Beyond the paper: min ||x_s + x_t|| (Order 2), the triangle-center sizes across T"
    target: ClassVar[str] = "pair-center"


# The T = 8 study of Table 12 (issue: ours 0.36-0.39 on the GPU, third-party 0.072-0.086). Each lever
# changes the paper recipe in one respect (values DEFAULT, ours): "ffn" sets the FFN width (the paper's
# is lost), "clamp" the input law's norm bounds ([0, 1000]: no clamp in effect for N(0, 2 I_2)).
TRIANGLE_LEVERS = {
    "paper recipe": {},
    "fresh samples": {"n_train": None},
    "ffn 32": {"ffn": 32},
    "ffn 512": {"ffn": 512},
    "lr 3e-3": {"lr": 3e-3},
    "lr 1e-2": {"lr": 1e-2},
    "batch 64": {"batch": 64},
    "batch 1024": {"batch": 1024},
    "weight decay 0": {"weight_decay": 0.0},
    "no clamp": {"clamp": [0.0, 1000.0]},
    # round 2: the architecture (the Sec. 3 model is RECONSTRUCTED), the two best levers of round 1
    # together, and a longer schedule
    "LayerNorm": {"layernorm": True},
    "positional encoding": {"pe": "additive"},
    "lr 3e-3, ffn 512": {"lr": 3e-3, "ffn": 512},
    "lr 3e-3, 4x steps": {"lr": 3e-3, "steps_x": 4},
}


class TriangleCenterLevers(TriangleCenter, LeverStudy):
    """Table 12 at T = 8: the paper recipe and, one at a time, the levers of :data:`TRIANGLE_LEVERS`
    (FFN width, a fixed set against fresh samples, learning rate, batch, weight decay, the input law's
    clamp; then LayerNorm, positional encoding, the best two together, a longer schedule), for one
    model size. Does any of them close our 0.38 to the third-party 0.08?"""

    name: ClassVar[str] = "triangle-center-levers"
    description: ClassVar[str] = (
        "Table 12 at T = 8: the paper recipe and one lever at a time (FFN, data, lr, batch, clamp)"
    )
    lever_keys: ClassVar[set] = (TRAIN_LEVER_KEYS - {"curriculum"}) | {"ffn", "clamp", "layernorm", "pe"}
    levers: dict[str, dict] = TRIANGLE_LEVERS
    Ts: list[PositiveInt] = [8]
    sizes: list[tuple[PositiveInt, PositiveInt, PositiveInt]] = [(4, 4, 24)]
    profiles: ClassVar[dict] = {
        "paper": {},
        "cpu": {"train": {"steps": 4000, "n_val": 4096, "eval_every": 200}},
        "quick": {
            "seeds": [0],
            "train": {"steps": 100, "batch": 64, "n_train": 2000, "n_val": 512, "eval_every": 50},
        },
    }

    def variants(self):
        for T in self.Ts:
            for h1, h2, E in self.sizes:
                for name, lever in self.levers.items():
                    model = self.model((h1, h2), E)
                    model.update({k: lever[k] for k in ("ffn", "layernorm", "pe") if k in lever})
                    params = {"clamp": [float(v) for v in lever["clamp"]]} if "clamp" in lever else {}
                    yield f"({h1},{h2}),E={E} {name}", params, T, model


class ComparisonOrder(TriangleCenter):
    """Beyond the paper, the control of Sec. 6.2's explanation: one model size on three targets with the
    input law of triangle-center that differ only in their order of comparison, min ‖x_t‖ (order 1),
    min ‖x_s + x_t‖ (2) and min ‖x_t1 + x_t2 + x_t3‖ (3), across T (sizes and budget: our choice)."""

    name: ClassVar[str] = "comparison-order"
    description: ClassVar[str] = "Beyond the paper: orders of comparison 1, 2, 3 with one input law and one model"
    target: ClassVar[str] = "triangle-center"
    orders: ClassVar[dict] = {1: "single-center", 2: "pair-center", 3: "triangle-center"}
    Ts: list[PositiveInt] = [4, 8, 16, 32]
    sizes: list[tuple[PositiveInt, PositiveInt, PositiveInt]] = [(4, 4, 24)]
    profiles: ClassVar[dict] = {
        "paper": {"Ts": [8, 16, 32, 64]},
        "cpu": {"seeds": [0, 1, 2], "train": {"steps": 2000, "batch": 128, "n_val": 2048, "eval_every": 100}},
        "quick": {
            "Ts": [4, 8],
            "seeds": [0],
            "ffn": 64,
            "train": {"steps": 300, "batch": 128, "n_val": 1024, "eval_every": 50, "lr": 3e-3},
        },
    }

    def target_for(self, label: str) -> str:
        return self.orders[int(label.split(":")[0].removeprefix("order "))]

    def variants(self):
        for T in self.Ts:
            for order, target in self.orders.items():
                for h1, h2, E in self.sizes:
                    yield f"order {order}: {target}, ({h1},{h2}),E={E}", {}, T, self.model((h1, h2), E)


class DepthSeparation(Experiment):
    name: ClassVar[str] = "depth-separation"
    description: ClassVar[str] = "Thm 1: one-layer (h = 1, 2, 4) vs two-layer one-head models on eq. 8 across T"
    target: ClassVar[str] = "depth-separation"
    Ts: list[PositiveInt] = [4, 8, 16, 32]
    E: PositiveInt = 32
    d: PositiveInt = 8  # DEFAULT: on the circle (d = 2) min x_s.x_t is ≈ −1 with variance ~1e-4 at T = 32
    configs: list[list[PositiveInt]] = [[1], [2], [4], [1, 1]]
    profiles: ClassVar[dict] = {
        "paper": {},
        "cpu": SMALL_CPU,
        "quick": SMALL_QUICK,
    }
    train: TrainSpec = TrainSpec(steps=10000, batch=256, n_val=4096, eval_every=250)

    def variants(self):
        for T in self.Ts:
            for heads in self.configs:
                label = f"{len(heads)} layer, h={heads[0]}" if len(heads) == 1 else "2 layers, 1 head each"
                yield label, {"d": self.d}, T, self.model(heads, self.E)


class KthLargest(Experiment):
    name: ClassVar[str] = "kth-largest"
    description: ClassVar[str] = "Thm 2: one-layer models returning the k-th largest token, k = 1, 2, 3, across T"
    target: ClassVar[str] = "kth-largest"
    ks: list[PositiveInt] = [1, 2, 3]
    Ts: list[PositiveInt] = [4, 8, 16, 32, 64]
    heads: PositiveInt = 1
    E: PositiveInt = 32
    profiles: ClassVar[dict] = {
        "paper": {},
        "cpu": {**SMALL_CPU, "Ts": [4, 8, 16, 32]},
        "quick": SMALL_QUICK,
    }
    train: TrainSpec = TrainSpec(steps=10000, batch=256, n_val=4096, eval_every=250)

    def variants(self):
        for T in self.Ts:
            for k in self.ks:
                if k <= T:
                    yield f"k={k}", {"k": k}, T, self.model([self.heads], self.E)


class Probes(Experiment):
    name: ClassVar[str] = "probes"
    description: ClassVar[str] = "App. C.1-C.2: two-layer models on generalized D-retrieval for the recovery probes"
    target: ClassVar[str] = "d-retrieval"
    # also measure which direction each head retrieves: both ends for the first layer (argmax and argmin
    # alignment, and the rule in the query that tells them apart), the argmax for the last layer's CLS
    align_directions: ClassVar[bool] = False
    D: PositiveInt = 6
    T: PositiveInt = 32
    head_dim: PositiveInt = 8
    E: PositiveInt = 64
    configs: list[tuple[PositiveInt, PositiveInt]] = [(5, 5), (5, 6), (6, 5), (6, 6), (7, 6), (7, 7)]
    profiles: ClassVar[dict] = {
        "paper": {},
        "cpu": {
            "T": 12,
            "seeds": [0],
            "ffn": 64,
            "E": 32,
            "head_dim": 4,
            "train": {"steps": 2000, "batch": 128, "n_val": 2048, "eval_every": 100, "lr": 3e-3},
        },
        "quick": {
            "T": 12,
            "seeds": [0],
            "ffn": 64,
            "E": 32,
            "head_dim": 4,
            "configs": [(5, 5), (6, 6)],
            "train": {"steps": 500, "batch": 128, "n_val": 1024, "eval_every": 50, "lr": 3e-3},
        },
    }
    train: TrainSpec = TrainSpec(steps=10000, batch=256, n_val=4096, eval_every=250)

    def measure(self, model, target, T, phase):
        from .probes import direction_measurements, recovery_errors

        X = _probe_inputs(model, target, T, 2048)
        argmax, second = recovery_errors(model, X, rank=1), recovery_errors(model, X, rank=2)
        out = [
            {f"recovery_argmax_{phase}": a.tolist(), f"recovery_second_{phase}": b.tolist()}
            for a, b in zip(argmax, second)
        ]
        if self.align_directions:
            a = target.constant("a", X)
            d = direction_measurements(model, a, X)
            for m, f, l, fm, r in zip(out, d["first"], d["last"], d["first_min"], d["rule"]):
                m[f"directions_first_{phase}"], m[f"directions_last_{phase}"] = f.tolist(), l.tolist()
                m[f"directions_first_min_{phase}"], m[f"end_rule_first_{phase}"] = fm.tolist(), r.tolist()
        return out

    def variants(self):
        for h1, h2 in self.configs:
            yield f"({h1},{h2})", {"D": self.D, "d": 4}, self.T, self.model((h1, h2), self.E, head_dim=self.head_dim)


class ProbesPaperShapes(Probes):
    """App. C.1-C.2 at the paper's shapes (T = 32, head dimension 8, E = 64, the six configurations,
    3 seeds) on a CPU budget: fewer steps and a smaller batch than the paper profile of ``probes``
    (our choice, DEFAULT). Its paper profile is that of ``probes``."""

    name: ClassVar[str] = "probes-paper-shapes"
    align_directions: ClassVar[bool] = True
    description: ClassVar[str] = "App. C.1-C.2 at the paper's shapes (T = 32, head dim 8) on a CPU budget"
    profiles: ClassVar[dict] = {
        "paper": {},
        "cpu": {"train": {"steps": 3000, "batch": 128, "n_val": 2048, "eval_every": 150}},
        "quick": {
            "T": 8,
            "seeds": [0],
            "configs": [(5, 5), (6, 6)],
            "train": {"steps": 60, "batch": 64, "n_val": 256, "eval_every": 30},
        },
    }


def _probes_paper_shapes_for(steps: int, eval_every: int, configs=None) -> dict:
    """Profiles of ``probes-paper-shapes`` trained longer on the CPU: the same runs (batch 128, 2048
    validation samples) with ``steps`` and ``eval_every`` changed (and, given ``configs``, only those
    head configurations); paper and quick unchanged."""
    cpu = {"train": {"steps": steps, "batch": 128, "n_val": 2048, "eval_every": eval_every}}
    if configs is not None:
        cpu["configs"] = configs
    return {"paper": {}, "cpu": cpu, "quick": ProbesPaperShapes.profiles["quick"]}


class ProbesPaperShapesLong(ProbesPaperShapes):
    """App. C.1-C.2 at the paper's shapes trained 8k steps (cosine to 0) instead of the 3k of
    ``probes-paper-shapes``: were its models still improving when the schedule ended? Our question
    and length (DEFAULT, what two CPU cores train in a session); the paper trains to convergence with
    its steps unknown."""

    name: ClassVar[str] = "probes-paper-shapes-long"
    description: ClassVar[str] = "App. C.1-C.2 at the paper's shapes, 8k steps instead of 3k: are the curves flat?"
    profiles: ClassVar[dict] = _probes_paper_shapes_for(steps=8000, eval_every=400)


class ProbesPaperShapes24k(ProbesPaperShapes):
    """App. C.1-C.2 at the paper's shapes trained 24k steps of batch 128 (cosine to 0): 3.1M samples,
    more than the 2.6M of the ``probes`` paper profile (10k steps of 256). Does the error stop falling
    between 8k and 24k steps? Our question and length (DEFAULT; about 42 min of one CPU core per
    configuration, its three seeds trained as one ensemble)."""

    name: ClassVar[str] = "probes-paper-shapes-24k"
    description: ClassVar[str] = "App. C.1-C.2 at the paper's shapes, 24k steps: does the error stop falling?"
    profiles: ClassVar[dict] = _probes_paper_shapes_for(steps=24000, eval_every=800)


class ProbesPaperShapes72k(ProbesPaperShapes):
    """App. C.1-C.2 at the paper's shapes trained 72k steps of batch 128 (cosine to 0): 9.2M samples,
    3x the 24k runs again. Does the error stop falling, and do the first-layer heads keep taking up
    single directions? Our question and length (DEFAULT; about 2-2.5 h of one CPU core per
    configuration, its three seeds trained as one ensemble; the six were trained a pair per session,
    one configuration per core: (6,6) and (5,6), (6,5) and (5,5), then (7,6) and (7,7), with
    ``--set configs=[[h1,h2]]``)."""

    name: ClassVar[str] = "probes-paper-shapes-72k"
    description: ClassVar[str] = "App. C.1-C.2 at the paper's shapes, 72k steps: does the error stop falling?"
    profiles: ClassVar[dict] = _probes_paper_shapes_for(steps=72000, eval_every=2400)


class ProbesPaperShapes216k(ProbesPaperShapes):
    """App. C.1-C.2 at the paper's shapes trained 216k steps of batch 128 (cosine to 0): 27.6M samples,
    3x the 72k runs again, for the pair that holds the second layer at D heads, (6,6) and (5,6). Does a
    gap open between h1 = D and h1 < D as training goes on, and does either curve flatten? Our question
    and length (DEFAULT; about 7 h of one CPU core per configuration, its three seeds one ensemble,
    trained across sessions: it resumes from its checkpoint, saved at evaluations about once a minute)."""

    name: ClassVar[str] = "probes-paper-shapes-216k"
    description: ClassVar[str] = "App. C.1-C.2 at the paper's shapes, 216k steps, (6,6) and (5,6): does a gap open?"
    profiles: ClassVar[dict] = _probes_paper_shapes_for(steps=216000, eval_every=3600, configs=[(6, 6), (5, 6)])


class SpecificPosition(Experiment):
    name: ClassVar[str] = "specific-position"
    description: ClassVar[str] = (
        "App. C.3 / Fig. 4: one layer, one head on x1+x2+x3, with and without positional encoding"
    )
    target: ClassVar[str] = "first-three-sum"
    T: PositiveInt = 10
    E: PositiveInt = 32
    pes: list[Literal["additive", "none"]] = ["additive", "none"]
    profiles: ClassVar[dict] = {
        "paper": {},
        "cpu": {
            "seeds": [0, 1],
            "ffn": 64,
            "train": {
                "steps": 4000,
                "batch": 128,
                "n_train": 10000,
                "n_val": 2000,
                "eval_every": 100,
                "lr": 3e-3,
                "tail_steps": 400,
            },
        },
        "quick": {
            "seeds": [0],
            "ffn": 64,
            "train": {
                "steps": 1500,
                "batch": 128,
                "n_train": 10000,
                "n_val": 2000,
                "eval_every": 100,
                "lr": 3e-3,
                "tail_steps": 200,
            },
        },
    }
    # THIRD-PARTY: 2000 epochs; DEFAULT: 10k samples (78 steps of 128 per epoch), tail 200 epochs at 1e-4
    train: TrainSpec = TrainSpec(
        steps=156000, batch=128, n_train=10000, n_val=2000, eval_every=1000, tail_steps=15600, tail_lr=1e-4
    )

    def measure(self, model, target, T, phase):
        if phase != "trained":
            return None
        import torch

        X = _probe_inputs(model, target, T, 1024)
        with torch.no_grad():
            _, rec = model(X, record=True)
        cls = rec[0]["attention"][:, :, 0, 0, :]  # (M, B, T+1): CLS query, head 1
        return [{"cls_attention_mean": c.mean(0).tolist(), "cls_attention_samples": c[:8].tolist()} for c in cls]

    def variants(self):
        for pe in self.pes:
            yield f"pe={pe}", {"d": 2}, self.T, self.model([1], self.E, pe=pe, layernorm=True)


class EncodingCost(Experiment):
    """Thm 3(b), trained (ours, DEFAULT throughout): two-layer tanh encoder ℝ^|I| → ℝ^m and decoder
    back (hidden width w) on x ~ U[0,1]^|I| (d = 1), for |I| = 1, 2, 3 with the bottleneck m = 1 and
    m = |I|, across widths: the smallest width whose reconstruction error reaches a threshold is the
    trained analogue of the encoding cost. Not a Transformer: :meth:`fit` trains the pairs."""

    name: ClassVar[str] = "encoding-cost"
    description: ClassVar[str] = "Thm 3(b): trained encoder/decoder pairs through a bottleneck m, across widths"
    target: ClassVar[str] = "unit-cube"
    sizes: list[PositiveInt] = [1, 2, 3]
    widths: list[PositiveInt] = [4, 16, 64]
    seeds: list[Seed] = [0, 1]
    train: TrainSpec = TrainSpec(steps=800, batch=256, lr=3e-3, weight_decay=0.0, n_val=4096, eval_every=100)
    profiles: ClassVar[dict] = {
        "paper": {"widths": [4, 16, 64, 256], "seeds": [0, 1, 2], "train": {"steps": 8000, "eval_every": 500}},
        "cpu": {"widths": [4, 16, 64, 256], "seeds": [0, 1, 2], "train": {"steps": 4000, "eval_every": 200}},
        "quick": {},
    }

    @field_validator("train")
    @classmethod
    def _fresh_samples_only(cls, v):
        if v.n_train is not None or v.tail_steps or v.curriculum:
            raise ValueError(
                "the encoder/decoder pairs train on fresh samples only: n_train null, no tail, no curriculum"
            )
        return v

    def variants(self):
        for size in self.sizes:
            for m in sorted({1, size}):
                for w in self.widths:
                    model = {"kind": "autoencoder", "bottleneck": m, "width": w}
                    yield f"|I|={size}, m={m}, w={w}", {"d": size}, 1, model

    def fit(self, group, device):
        from .train import TrainConfig, train_autoencoders

        run = group[0]
        cfg = TrainConfig(**run["train"])
        size, m, w = run["target_params"]["d"], run["model"]["bottleneck"], run["model"]["width"]
        return train_autoencoders(size, m, w, [r["seed"] for r in group], cfg, device)


EXPERIMENTS: dict[str, type[Experiment]] = {}  # the registry `infoflow run` and `reproduce` read


def register_experiment(cls: type[Experiment]) -> type[Experiment]:
    """Register an experiment class under its ``name`` (use as a class decorator). Its ``target`` must
    be a registered target (:func:`infoflow.targets.register_target`); a name taken by another class
    is refused (the same class defined again replaces it)."""
    if not (isinstance(cls, type) and issubclass(cls, Experiment)):
        raise TypeError(f"register_experiment takes an Experiment subclass, got {cls!r}")
    if cls.target not in TARGETS:
        raise ValueError(
            f"{cls.__name__}.target {cls.target!r} is not a registered target; register it first "
            f"(registered: {', '.join(TARGETS)})"
        )
    enter(EXPERIMENTS, "experiment", cls.name, cls)
    return cls


for _cls in (
    DepthSeparation,
    KthLargest,
    Probes,
    ProbesPaperShapes,
    ProbesPaperShapesLong,
    ProbesPaperShapes24k,
    ProbesPaperShapes72k,
    ProbesPaperShapes216k,
    SpecificPosition,
    IntrinsicDimension,
    IntrinsicDimensionDeep,
    IntrinsicDimensionLong,
    IntrinsicDimensionWide,
    IntrinsicDimensionLevers,
    IntrinsicDimensionTuned,
    IntrinsicDimensionCombined,
    TriangleCenter,
    PairCenter,
    ComparisonOrder,
    TriangleCenterLevers,
    EncodingCost,
):
    register_experiment(_cls)

PROFILES = ("quick", "cpu", "paper")  # cpu: the largest scale that fits a 2-core CPU (our choice)


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out.get(k, {}), v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _parse_value(text: str):
    import json

    try:
        return json.loads(text)
    except ValueError:
        if "," in text:
            return [_parse_value(t) for t in text.split(",")]
        return text


def parse_sets(pairs: list[str]) -> dict:
    """``["train.steps=100", "seeds=[0,1]"]`` → nested dict."""
    out: dict = {}
    for pair in pairs:
        if "=" not in pair:
            raise ConfigError(f"--set expects key=value, got {pair!r}")
        key, value = pair.split("=", 1)
        node = out
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = _parse_value(value.strip())
    return out


def make_experiment(name: str, profile: str = "quick", overrides: Optional[dict] = None) -> Experiment:
    """The validated config of an experiment under a profile, with overrides (``--set``)."""
    if name not in EXPERIMENTS:
        raise ConfigError(f"unknown experiment {name!r}; allowed: {', '.join(EXPERIMENTS)}")
    if profile not in PROFILES:
        raise ConfigError(f"unknown profile {profile!r}; allowed: {', '.join(PROFILES)}")
    cls = EXPERIMENTS[name]
    base = cls().model_dump()
    values = _merge(_merge(base, cls.profiles.get(profile, {})), overrides or {})
    try:
        exp = cls.model_validate(values)
    except ValidationError as err:
        e = err.errors()[0]
        field = ".".join(str(p) for p in e["loc"])
        if e["type"] == "extra_forbidden":
            allowed = sorted(cls.model_fields) if len(e["loc"]) == 1 else sorted(TrainSpec.model_fields)
            raise ConfigError(f"{name}: unknown key {field!r}; allowed: {', '.join(allowed)}") from None
        got = f" (got {e['input']!r})" if "input" in e and not isinstance(e["input"], dict) or len(e["loc"]) > 1 else ""
        raise ConfigError(f"{name}: {field or 'config'}: {e['msg']}{got}") from None
    for run in exp.runs():
        m = run["model"]
        for l, h in enumerate(m.get("heads", ()), 1):  # a model of the experiment's own (fit) has none
            if m["head_dim"] is None and m["E"] % h:
                raise ConfigError(
                    f"{name}: E = {m['E']} must be divisible by the head count of layer {l} ({h}) "
                    f"in variant {run['label']}"
                )
        if run["target"] not in TARGETS:  # registered targets only (register_experiment checks it too)
            raise ConfigError(f"{name}: unknown target {run['target']!r}; registered: {', '.join(TARGETS)}")
    return exp
