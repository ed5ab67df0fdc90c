"""Ensemble training: a member trains exactly like the same model alone (gradients and one SGD step,
torch.func as the oracle), NMSE conventions, learning, NaN isolation, config errors."""

import subprocess
import sys
from dataclasses import replace

import pytest
import torch
from torch.func import functional_call, grad, vmap

from infoflow.model import EnsembleTransformer, ModelConfig
from infoflow.targets import DRetrieval, IntrinsicDimension
from infoflow.train import TrainConfig, clip_per_member, draw, lr_at, nmse, predict_in_chunks, train_ensemble

CFG = ModelConfig(d=4, T=6, heads=(2, 2), E=8, ffn=16, layernorm=True, pe="additive")


def member(model, j):
    one = EnsembleTransformer(model.cfgs[j], members=1)
    with torch.no_grad():
        for (n, p), (_, q) in zip(one.named_parameters(), model.named_parameters()):
            p.copy_(q[j : j + 1])
    return one


def test_member_gradients_equal_single_model_and_func_oracle():
    torch.manual_seed(0)
    model = EnsembleTransformer(CFG, members=3, seeds=[4, 5, 6]).double()
    X, y = torch.randn(3, 5, 6, 4, dtype=torch.float64), torch.randn(3, 5, 1, dtype=torch.float64)
    ((model(X) - y) ** 2).flatten(1).mean(1).sum().backward()
    names = [n for n, _ in model.named_parameters()]
    for j in range(3):
        one = member(model, j).double()
        ((one(X[j : j + 1]) - y[j : j + 1]) ** 2).mean().backward()
        for n, p, q in zip(names, one.parameters(), model.parameters()):
            torch.testing.assert_close(p.grad[0], q.grad[j], msg=n)
    # oracle: torch.func per-member gradients of the single-model loss
    one = member(model, 0).double()
    params = {n: p.detach() for n, p in model.named_parameters()}

    def loss(p, Xj, yj):
        out = functional_call(one, {n: v[None] for n, v in p.items()}, (Xj[None],))
        return ((out[0] - yj) ** 2).mean()

    g = vmap(grad(loss))({n: v for n, v in params.items()}, X, y)
    for n, p in model.named_parameters():
        torch.testing.assert_close(g[n], p.grad, msg=n)


def test_sgd_step_matches_single_model():
    model = EnsembleTransformer(CFG, members=2, seeds=[1, 2]).double()
    X, y = torch.randn(2, 4, 6, 4, dtype=torch.float64), torch.randn(2, 4, 1, dtype=torch.float64)
    alone = member(model, 1).double()
    for m, Xm, ym in ((model, X, y), (alone, X[1:], y[1:])):
        ((m(Xm) - ym) ** 2).flatten(1).mean(1).sum().backward()
        with torch.no_grad():
            for p in m.parameters():
                p -= 0.1 * p.grad
    for p, q in zip(alone.parameters(), model.parameters()):
        torch.testing.assert_close(p[0], q[1])


@pytest.mark.parametrize(
    "heads,pe,ln", [((4,), "none", False), ((2, 2), "additive", True), ((1, 2, 4), "augmented", False)]
)
def test_cls_only_last_layer_equals_full_forward(heads, pe, ln):
    """The training path computes only the CLS row of the last layer; it must give the outputs and
    gradients of the full forward (``record=True``) that probes use."""
    cfg = ModelConfig(d=3, T=5, heads=heads, E=8, ffn=16, pe=pe, layernorm=ln)
    model = EnsembleTransformer(cfg, members=2, seeds=[3, 4]).double()
    X = torch.randn(2, 6, 5, 3, dtype=torch.float64)
    grads = []
    for record in (False, True):
        out = model(X, record=record)
        y = out[0] if record else out
        model.zero_grad()
        (y**2).sum().backward()
        grads.append([p.grad.clone() for p in model.parameters()])
        if not record:
            y_fast = y.detach()
    torch.testing.assert_close(y_fast, y.detach())
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b)


def test_member_init_equals_lone_model_with_its_seed():
    ens = EnsembleTransformer(CFG, members=3, seeds=[7, 8, 9])
    alone = EnsembleTransformer(CFG, members=1, seeds=[8])
    for p, q in zip(alone.parameters(), ens.parameters()):
        torch.testing.assert_close(p[0], q[1])


def test_head_dim_sets_attention_width():
    cfg = ModelConfig(d=4, T=6, heads=(5, 6), E=16, head_dim=8)
    m = EnsembleTransformer(cfg, members=2)
    assert m.layers[0]["W_Q"].shape == (2, 16, 40) and m.layers[1]["W_O"].shape == (2, 48, 16)
    y, rec = m(torch.randn(2, 3, 6, 4), record=True)
    assert y.shape == (2, 3, 1) and rec[1]["attention"].shape == (2, 3, 6, 7, 7)


def test_adamw_ensemble_matches_torch_adamw_per_member():
    """Oracle: member j of one batched update == torch.optim.AdamW on member j alone (own lr)."""
    from infoflow.train import AdamWEnsemble

    torch.manual_seed(0)
    shapes, lrs = [(3, 4, 5), (3, 5), (3, 2, 2, 2)], [1e-2, 3e-3, 0.0]
    ens = [torch.nn.Parameter(torch.randn(*s, dtype=torch.float64)) for s in shapes]
    alone = [[torch.nn.Parameter(p.detach()[j].clone()) for p in ens] for j in range(3)]
    frozen = ens[0].detach()[2].clone()
    opt = AdamWEnsemble(ens, weight_decay=0.05)
    refs = [torch.optim.AdamW(ps, lr=lr, weight_decay=0.05, foreach=False) for ps, lr in zip(alone, lrs)]
    for _ in range(4):
        grads = [torch.randn(*s, dtype=torch.float64) for s in shapes]
        for p, g in zip(ens, grads):
            p.grad = g.clone()
        opt.step(torch.tensor(lrs, dtype=torch.float64))
        for j, (ps, ref) in enumerate(zip(alone, refs)):
            for p, g in zip(ps, grads):
                p.grad = g[j].clone()
            ref.step()
    for j in range(3):
        for p, q in zip(alone[j], ens):
            torch.testing.assert_close(p.detach(), q.detach()[j])
    torch.testing.assert_close(ens[0].detach()[2], frozen, rtol=0, atol=0)  # lr 0: the member is left alone


def test_per_member_clipping():
    p = torch.nn.Parameter(torch.zeros(2, 3))
    p.grad = torch.tensor([[3.0, 4.0, 0.0], [0.3, 0.4, 0.0]])
    norms = clip_per_member([p], 1.0)
    torch.testing.assert_close(norms, torch.tensor([5.0, 0.5]))
    torch.testing.assert_close(p.grad, torch.tensor([[0.6, 0.8, 0.0], [0.3, 0.4, 0.0]]))


def test_nmse_and_schedule():
    y = torch.randn(2, 100, 1)
    torch.testing.assert_close(nmse(y.mean(1, keepdim=True).expand_as(y), y), torch.ones(2))
    assert nmse(y, y).abs().max() == 0
    c = TrainConfig(steps=10, tail_steps=5)
    assert lr_at(0, c) == pytest.approx(1e-3) and lr_at(10, c) == 1e-4 and lr_at(5, c) == pytest.approx(5e-4)


def test_training_learns_and_isolates_nan():
    cfg = ModelConfig(d=4, T=8, heads=(4,), E=16, ffn=32)
    model = EnsembleTransformer(cfg, members=3, seeds=[0, 1, 2])
    with torch.no_grad():
        model.R_2[2].fill_(float("nan"))  # member 2 diverges at once
    res = train_ensemble(
        model,
        DRetrieval(D=2),
        seeds=[0, 1, 2],
        cfg=TrainConfig(steps=300, batch=128, lr=3e-3, n_val=512, eval_every=50),
    )
    assert [r["status"] for r in res] == ["done", "done", "failed"]
    assert "non-finite" in res[2]["error"]
    assert all(r["best_val_nmse"] < 0.6 for r in res[:2])


def test_bad_configs():
    with pytest.raises(ValueError, match="must divide E"):
        ModelConfig(d=4, T=8, heads=(3,), E=16)
    with pytest.raises(ValueError, match="E must be a positive integer"):
        ModelConfig(d=4, T=8, E=-1)
    with pytest.raises(ValueError, match="pe must be one of"):
        ModelConfig(d=4, T=8, pe="rotary")
    with pytest.raises(ValueError, match="steps must be a positive integer"):
        TrainConfig(steps=0)
    with pytest.raises(ValueError, match="T must be a positive integer, got True"):  # a bool is not a count
        ModelConfig(d=4, T=True)
    with pytest.raises(ValueError, match="batch must be a positive integer, got 2.5"):
        TrainConfig(batch=2.5)
    model = EnsembleTransformer(ModelConfig(d=4, T=8), members=2)
    with pytest.raises(ValueError, match="one seed per member"):
        train_ensemble(model, IntrinsicDimension(D=2), seeds=[0], cfg=TrainConfig(steps=1))


def test_clipping_zeroes_non_finite_entries_and_frozen_members():
    """Gradients of a frozen member (active = 0) and non-finite entries are zeroed before the norm,
    across parameter tensors of different shapes (one flat pass over all of them)."""
    a = torch.nn.Parameter(torch.zeros(3, 2))
    b = torch.nn.Parameter(torch.zeros(3, 1, 2))
    a.grad = torch.tensor([[3.0, float("nan")], [1.0, 1.0], [float("inf"), 2.0]])
    b.grad = torch.tensor([[[0.0, 4.0]], [[1.0, 1.0]], [[5.0, 5.0]]])
    norms = clip_per_member([a, b], 10.0, active=torch.tensor([1.0, 1.0, 0.0]))
    torch.testing.assert_close(norms, torch.tensor([5.0, 2.0, 0.0]))
    torch.testing.assert_close(a.grad, torch.tensor([[3.0, 0.0], [1.0, 1.0], [0.0, 0.0]]))
    torch.testing.assert_close(b.grad, torch.tensor([[[0.0, 4.0]], [[1.0, 1.0]], [[0.0, 0.0]]]))


_FAULTS = """
import resource, sys, torch
torch.set_num_threads(1)
from infoflow.model import EnsembleTransformer, ModelConfig
from infoflow.targets import IntrinsicDimension
from infoflow.train import TrainConfig, train_ensemble, reuse_freed_memory
import infoflow.train as tr
if sys.argv[1] == "reuse":
    assert reuse_freed_memory()
else:
    tr._REUSE = False      # as if already tried: train_ensemble leaves glibc's defaults alone
m = EnsembleTransformer(ModelConfig(d=4, T=16, heads=(2, 2), E=32, ffn=128), members=4)
tc = TrainConfig(steps=40, batch=256, n_val=256, eval_every=100)
train_ensemble(m, IntrinsicDimension(D=2), range(4), tc)      # warm-up: the heap reaches its peak
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
train_ensemble(m, IntrinsicDimension(D=2), range(4), tc)      # the same again: a steady state
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_reuse_freed_memory_stops_page_faults_on_cpu():
    """Training on a CPU keeps freed host memory for reuse: far fewer page faults per step
    (each run in a fresh process, the setting being process-wide)."""
    faults = {
        mode: int(
            subprocess.run(
                [sys.executable, "-c", _FAULTS, mode], capture_output=True, text=True, check=True
            ).stdout.split()[-1]
        )
        for mode in ("default", "reuse")
    }
    assert faults["default"] > 1000 and faults["reuse"] * 5 < faults["default"], faults


# Members of one ensemble may differ in head counts (same parameter shapes) and in their targets.
MIXED = [replace(CFG, heads=h) for h in [(1, 2), (2, 2), (2, 2), (4, 1)]]  # layer 1 runs: 1 | 2 2 | 4


def test_members_with_different_heads_equal_their_lone_models():
    """Gradients of each member of a mixed-heads ensemble == those of its own config alone (float64)."""
    model = EnsembleTransformer(MIXED, seeds=[4, 5, 6, 7]).double()
    assert model.M == 4 and [len(g) for g in model.head_groups] == [3, 2]
    X, y = torch.randn(4, 5, 6, 4, dtype=torch.float64), torch.randn(4, 5, 1, dtype=torch.float64)
    out = model(X)
    ((out - y) ** 2).flatten(1).mean(1).sum().backward()
    for j in range(4):
        one = member(model, j).double()
        assert one.cfg.heads == MIXED[j].heads
        out_j = one(X[j : j + 1])
        torch.testing.assert_close(out_j[0], out[j].detach())
        ((out_j - y[j : j + 1]) ** 2).mean().backward()
        for (n, p), q in zip(one.named_parameters(), model.parameters()):
            torch.testing.assert_close(p.grad[0], q.grad[j], msg=n)
    # each member's init is its lone model's with its seed, whatever its heads
    alone = EnsembleTransformer(MIXED[3], seeds=[7])
    for p, q in zip(alone.parameters(), EnsembleTransformer(MIXED, seeds=[4, 5, 6, 7]).parameters()):
        torch.testing.assert_close(p[0], q[3])


def test_mixed_ensembles_refuse_what_they_cannot_do():
    with pytest.raises(ValueError, match="member 1 .* does not share parameter shapes"):
        EnsembleTransformer([CFG, replace(CFG, E=12)])
    with pytest.raises(ValueError, match="member 1"):  # head_dim set: heads change shapes
        EnsembleTransformer([replace(CFG, head_dim=4), replace(CFG, head_dim=4, heads=(1, 2))])
    with pytest.raises(ValueError, match="member 1"):
        EnsembleTransformer([CFG, replace(CFG, heads=(2, 2, 2))])
    with pytest.raises(ValueError, match="one config per member"):
        EnsembleTransformer(MIXED, members=3)
    with pytest.raises(ValueError, match="at least one config"):
        EnsembleTransformer([])
    with pytest.raises(ValueError, match="members must be a positive integer"):
        EnsembleTransformer(CFG, members="2")
    with pytest.raises(ValueError, match="record=True needs one head count"):
        EnsembleTransformer(MIXED)(torch.randn(4, 2, 6, 4), record=True)


def test_draw_with_a_target_per_member():
    targets = [IntrinsicDimension(D=2), IntrinsicDimension(D=2), IntrinsicDimension(D=3), IntrinsicDimension(D=2)]
    gens = [torch.Generator().manual_seed(s) for s in range(4)]
    X, y = draw(targets, gens, 16, 6)
    assert X.shape == (4, 16, 6, 4) and y.shape == (4, 16, 1)
    for j, t in enumerate(targets):
        torch.testing.assert_close(X[j], t.sample_inputs(torch.Generator().manual_seed(j), 16, 6))
        torch.testing.assert_close(y[j, :, 0], t(X[j]))
    assert not torch.allclose(y[2, :, 0], IntrinsicDimension(D=2)(X[2]))


def test_member_of_a_mixed_ensemble_trains_like_the_run_alone():
    """Different heads and different D in one ensemble: member j's curve is the run's alone."""
    cfgs = [replace(CFG, heads=h, layernorm=False, pe="none") for h in [(2, 2), (1, 2), (2, 1)]]
    targets = [IntrinsicDimension(D=2), IntrinsicDimension(D=2), IntrinsicDimension(D=3)]
    tc = TrainConfig(steps=30, batch=32, n_val=64, eval_every=10, n_train=64)
    ens = train_ensemble(EnsembleTransformer(cfgs, seeds=[3, 4, 5]), targets, [3, 4, 5], tc)
    for j in (1, 2):
        alone = train_ensemble(EnsembleTransformer(cfgs[j], seeds=[3 + j]), targets[j], [3 + j], tc)[0]
        assert ens[j]["best_val_nmse"] == pytest.approx(alone["best_val_nmse"], rel=1e-4)
        for (s1, v1), (s2, v2) in zip(ens[j]["curve"], alone["curve"]):
            assert s1 == s2 and v1 == pytest.approx(v2, rel=1e-4)
    with pytest.raises(ValueError, match="one per member"):
        train_ensemble(EnsembleTransformer(cfgs, seeds=[3, 4, 5]), targets[:2], [3, 4, 5], tc)


def test_validation_in_slices_equals_one_pass():
    model = EnsembleTransformer(CFG, members=3, seeds=[0, 1, 2])
    X = torch.randn(3, 50, 6, 4)
    with torch.no_grad():
        whole = model(X)
        sliced = predict_in_chunks(model, X, tokens=3 * 7 * 8)  # 8 sequences per slice: 7 slices
    assert sliced.shape == whole.shape == (3, 50, 1)
    torch.testing.assert_close(sliced, whole)


def test_a_training_step_reads_nothing_back_and_copies_nothing_from_the_host():
    """On a GPU, reading a value back (``.item()``, ``nonzero``) or copying from host memory makes the
    host wait for the queued kernels, which these launch-bound models cannot afford once per step.
    Counted on the CPU as the ops that would do it: their number must not grow with the steps."""
    from collections import Counter
    from torch.utils._python_dispatch import TorchDispatchMode

    watched = ("aten._local_scalar_dense", "aten._to_copy", "aten.nonzero", "aten.masked_select", "aten.lift_fresh")

    class Count(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            name = str(func.overloadpacket)
            if name.startswith(watched):
                self.seen[name] += 1
            return func(*args, **(kwargs or {}))

    def count(steps, **tc):
        cfgs = [replace(CFG, heads=h) for h in [(2, 2), (1, 2)]]
        targets = [IntrinsicDimension(D=2), DRetrieval(D=2)]
        mode = Count()
        mode.seen = Counter()
        with mode:
            train_ensemble(
                EnsembleTransformer(cfgs, seeds=[0, 1]),
                targets,
                [0, 1],
                TrainConfig(steps=steps, batch=8, n_val=16, eval_every=steps, **tc),
            )
        return mode.seen

    for tc in ({}, {"n_train": 32}):
        assert count(4, **tc) == count(12, **tc), tc


def _resumable(n_train):
    """A small mixed-target training with a NaN-free but non-trivial state: fixed set or fresh draws."""
    cfg = TrainConfig(steps=50, batch=16, n_val=32, eval_every=10, n_train=n_train, tail_steps=6)
    targets = [IntrinsicDimension(D=2), IntrinsicDimension(D=2), IntrinsicDimension(D=3)]
    return (
        cfg,
        targets,
        (lambda: EnsembleTransformer(ModelConfig(d=4, T=5, heads=(2, 2), E=12, ffn=16), members=3, seeds=[1, 2, 3])),
    )


@pytest.mark.parametrize("n_train", [None, 64])  # 64: the save at step 30 lands mid-epoch
@pytest.mark.parametrize("graph", [False, True])  # True: as a (simulated) CUDA graph, captured again on resuming
def test_a_killed_training_resumes_from_its_checkpoint_exactly(
    tmp_path, interrupt_training, simulated_cuda_graphs, n_train, graph
):
    import infoflow.train as train

    cfg, targets, model = _resumable(n_train)
    reference = train_ensemble(model(), targets, [1, 2, 3], cfg)
    if graph:
        sim = simulated_cuda_graphs()
    ckpt = train.Checkpoint(tmp_path / "group.ckpt", key="group", every_s=0)  # saves at every evaluation
    with interrupt_training(37):
        train_ensemble(model(), targets, [1, 2, 3], cfg, checkpoint=ckpt, cuda_graph=graph)
    assert torch.load(ckpt.path, weights_only=True)["step"] == 30  # the last evaluation before the kill
    logs = []
    resumed = train_ensemble(model(), targets, [1, 2, 3], cfg, checkpoint=ckpt, log=logs.append, cuda_graph=graph)
    assert not logs and (not graph or sim.captures == 2)
    for a, b in zip(resumed, reference):
        assert [(seg["to_step"], seg["cuda_graph"]) for seg in a.pop("resumed")] == [(30, graph)] and b.pop(
            "resumed"
        ) == []
        assert a == b  # same best and final NMSE, same curve, to the last bit


def test_an_unusable_checkpoint_is_reported_and_training_starts_over(tmp_path):
    from infoflow.train import Checkpoint

    cfg, targets, model = _resumable(48)
    reference = train_ensemble(model(), targets, [1, 2, 3], cfg)
    other = Checkpoint(tmp_path / "other.ckpt", key="another group", every_s=0)
    other.save({"step": 10})
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"not a checkpoint")
    for path, why in ((bad, "unreadable"), (other.path, "belongs to another training")):
        logs = []
        out = train_ensemble(
            model(), targets, [1, 2, 3], cfg, checkpoint=Checkpoint(path, "group", 3600), log=logs.append
        )
        assert len(logs) == 1 and why in logs[0] and "training from step 0" in logs[0]
        assert [r["curve"] for r in out] == [r["curve"] for r in reference]
    with pytest.raises(ValueError, match="checkpoint_every must be a finite number >= 0 seconds"):
        Checkpoint(bad, "group", -1)


@pytest.mark.parametrize("n_train", [None, 48])
def test_a_training_step_replayed_as_a_cuda_graph_trains_as_the_eager_one(simulated_cuda_graphs, n_train):
    """The host side of ``cuda_graph=True`` (warm-up, capture, refilling the captured buffers, replay),
    simulated on the CPU: the same results to the last bit, including a member that diverges after
    the capture. (On a GPU the device check runs the real graph: benchmarks/check_cuda_graph.py.)"""
    cfg, targets, model = _resumable(n_train)
    lrs = [1e-3, 1e-3, 4.0]  # the third member's loss turns non-finite at step 7 or 9
    reference = train_ensemble(model(), targets, [1, 2, 3], cfg, lrs=lrs)
    assert reference[2]["status"] == "failed"
    sim = simulated_cuda_graphs()
    replayed = train_ensemble(model(), targets, [1, 2, 3], cfg, lrs=lrs, cuda_graph=True)
    total = cfg.steps + cfg.tail_steps
    from infoflow.train import _TrainStep

    assert sim.captures == 1 and sim.replays == total - _TrainStep.WARMUP
    assert int(reference[2]["error"].split()[-1]) > _TrainStep.WARMUP  # it diverged in a replayed step
    assert replayed == reference


def test_cuda_graph_needs_a_cuda_device():
    cfg, targets, model = _resumable(None)
    with pytest.raises(ValueError, match="cuda_graph needs a CUDA device"):
        train_ensemble(model(), targets, [1, 2, 3], cfg, cuda_graph=True)


def test_the_cuda_graph_check_script_passes_a_correct_graph_and_fails_a_stale_one(
    simulated_cuda_graphs, load_script, monkeypatch
):
    """benchmarks/check_cuda_graph.py, which decides on the GPU whether sweeps use graphs, run on the CPU
    with simulated graphs: it passes the engine's graph, and fails one whose batch buffer goes stale."""
    import infoflow.train as train

    script = load_script("benchmarks/check_cuda_graph.py")
    simulated_cuda_graphs()
    tiny = ["train.batch=16", "train.n_train=64", "train.n_val=32", "ffn=16", "E=12", "T=6", "seeds=[0,1]"]
    out = script.check("intrinsic-dimension", "quick", 12, "cpu", tiny, 4, 1e-2)
    assert out["agrees"] and out["bitwise_equal"] and out["eager_runs_bitwise_equal"] and out["members"] == 4
    real_call = train._TrainStep.__call__

    def stale(self, step, X, y):  # after the capture the graph keeps training on the captured batch
        if self.graph is not None:
            X, y = self.X, self.y
        return real_call(self, step, X, y)

    monkeypatch.setattr(train._TrainStep, "__call__", stale)
    out = script.check("intrinsic-dimension", "quick", 12, "cpu", tiny, 4, 1e-2)
    assert not out["agrees"] and not out["bitwise_equal"] and out["max_relative_difference"] > 1e-2
