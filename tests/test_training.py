"""Ensemble training: a member trains exactly like the same model alone (gradients and one SGD step,
torch.func as the oracle), NMSE conventions, learning, NaN isolation, config errors."""
import subprocess
import sys

import pytest
import torch
from torch.func import functional_call, grad, vmap

from infoflow.model import EnsembleTransformer, ModelConfig
from infoflow.targets import DRetrieval, IntrinsicDimension
from infoflow.train import TrainConfig, clip_per_member, lr_at, nmse, train_ensemble

CFG = ModelConfig(d=4, T=6, heads=(2, 2), E=8, ffn=16, layernorm=True, pe="additive")


def member(model, j):
    one = EnsembleTransformer(model.cfg, members=1)
    with torch.no_grad():
        for (n, p), (_, q) in zip(one.named_parameters(), model.named_parameters()):
            p.copy_(q[j:j + 1])
    return one


def test_member_gradients_equal_single_model_and_func_oracle():
    torch.manual_seed(0)
    model = EnsembleTransformer(CFG, members=3, seeds=[4, 5, 6]).double()
    X, y = torch.randn(3, 5, 6, 4, dtype=torch.float64), torch.randn(3, 5, 1, dtype=torch.float64)
    ((model(X) - y) ** 2).flatten(1).mean(1).sum().backward()
    names = [n for n, _ in model.named_parameters()]
    for j in range(3):
        one = member(model, j).double()
        ((one(X[j:j + 1]) - y[j:j + 1]) ** 2).mean().backward()
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


@pytest.mark.parametrize("heads,pe,ln", [((4,), "none", False), ((2, 2), "additive", True), ((1, 2, 4), "augmented", False)])
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
        (y ** 2).sum().backward()
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
    torch.testing.assert_close(ens[0].detach()[2], frozen, rtol=0, atol=0)   # lr 0: the member is left alone


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
        model.R_2[2].fill_(float("nan"))          # member 2 diverges at once
    res = train_ensemble(model, DRetrieval(D=2), seeds=[0, 1, 2], cfg=TrainConfig(steps=300, batch=128, lr=3e-3,
                         n_val=512, eval_every=50))
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
train_ensemble(m, IntrinsicDimension(D=2), range(4), TrainConfig(steps=3, batch=256, n_val=256))   # warm-up
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
train_ensemble(m, IntrinsicDimension(D=2), range(4), TrainConfig(steps=10, batch=256, n_val=256, eval_every=100))
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_reuse_freed_memory_stops_page_faults_on_cpu():
    """Training on a CPU keeps freed host memory for reuse: far fewer page faults per step
    (each run in a fresh process, the setting being process-wide)."""
    faults = {mode: int(subprocess.run([sys.executable, "-c", _FAULTS, mode], capture_output=True, text=True,
                                       check=True).stdout.split()[-1]) for mode in ("default", "reuse")}
    assert faults["default"] > 1000 and faults["reuse"] * 5 < faults["default"], faults
