"""Shared fixtures."""

import contextlib
import importlib.util
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


class SimulatedGraphs:
    """CUDA graphs as the CPU can simulate them. Capturing records which tensors the step read (a graph
    records memory addresses) and undoes what the step did (a capture runs nothing); a replay runs the
    step again on those very tensors. So host code that hands the step a new tensor after the capture,
    instead of copying into the captured one, trains on stale data here as it would on a GPU."""

    BOUND = ("X", "y", "lr", "step", "active", "first_bad")

    def __init__(self, monkeypatch):
        import infoflow.train as train

        self.captures, self.replays, self.capturing = 0, 0, None
        sim = self

        class Graph:
            def replay(self):
                step, bound = self.captured
                for name, tensor in bound.items():
                    setattr(step, name, tensor)
                real_run(step)
                sim.replays += 1

        @contextlib.contextmanager
        def graph(g, stream=None):
            sim.capturing = g
            yield
            sim.capturing = None

        real_run = train._TrainStep.run

        def run(step):
            g = sim.capturing
            if g is None:
                return real_run(step)
            state = list(step.params) + step.opt.m + step.opt.v + [step.active, step.first_bad]
            saved = [t.detach().clone() for t in state]
            real_run(step)
            with torch.no_grad():
                for t, s in zip(state, saved):
                    t.copy_(s)
            g.captured = (step, {name: getattr(step, name) for name in self.BOUND})
            sim.captures += 1

        class Stream:
            def __init__(self, *a):
                pass

            def wait_stream(self, other):
                pass

        monkeypatch.setattr(train, "_graphs_available", lambda device: True)
        monkeypatch.setattr(train._TrainStep, "run", run)
        monkeypatch.setattr(torch.cuda, "CUDAGraph", Graph)
        monkeypatch.setattr(torch.cuda, "graph", graph)
        monkeypatch.setattr(torch.cuda, "Stream", Stream)
        monkeypatch.setattr(torch.cuda, "stream", lambda s: contextlib.nullcontext())
        monkeypatch.setattr(torch.cuda, "current_stream", lambda *a: Stream())


@pytest.fixture
def simulated_cuda_graphs(monkeypatch):
    """Call it to put :class:`SimulatedGraphs` in place of CUDA graphs and streams (undone after the test)."""
    return lambda: SimulatedGraphs(monkeypatch)


@pytest.fixture
def load_script():
    """Call it with a script's path in the repository (e.g. "benchmarks/check_cuda_graph.py") to import it."""

    def load(relative: str):
        path = ROOT / relative
        spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load


@pytest.fixture
def interrupt_training(monkeypatch):
    """``with interrupt_training(step): train_ensemble(...)``: the training stops at ``step`` as a killed
    process would (the learning-rate schedule raises KeyboardInterrupt there; the block expects it),
    and the schedule is the real one again after the block."""
    import contextlib

    import infoflow.train as train

    real = train.lr_at

    @contextlib.contextmanager
    def at(step: int):
        def killed(s, cfg):
            if s == step:
                raise KeyboardInterrupt
            return real(s, cfg)

        monkeypatch.setattr(train, "lr_at", killed)
        try:
            with pytest.raises(KeyboardInterrupt):
                yield
        finally:
            monkeypatch.setattr(train, "lr_at", real)

    return at
