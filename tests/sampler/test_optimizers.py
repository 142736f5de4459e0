"""Each ensemble optimiser updates every member exactly as torch.optim updates it alone."""

import pytest
import torch

from sampler.optimizers import OPTIMIZERS, EnsembleOptimizer, torch_optimizer

D64 = torch.float64
SHAPES = [(3, 4), (3,), (1, 3)]


@pytest.mark.parametrize("name,momentum", [(n, 0.0) for n in OPTIMIZERS] + [("sgd", 0.9)])
def test_members_follow_torch_optim_with_a_reset(name, momentum):
    g = torch.Generator().manual_seed(0)
    e, lr, n_steps, reset_at = 3, 0.05, 12, 5
    params = [torch.randn((e, *s), generator=g, dtype=D64) for s in SHAPES]
    opt = EnsembleOptimizer(name, params, lr=lr, momentum=momentum)

    def lone(j):
        ps = [p[j].clone() for p in params]
        return ps, torch_optimizer(name, ps, lr=lr, momentum=momentum)

    refs = [lone(j) for j in range(e)]
    for t in range(n_steps):
        if t == reset_at:  # member 1 becomes a fresh run: new values, fresh optimiser state
            with torch.no_grad():
                for p in params:
                    p[1].normal_(generator=g)
            opt.reset(torch.tensor([1]))
            refs[1] = lone(1)
        grads = [torch.randn(p.shape, generator=g, dtype=D64) for p in params]
        opt.step(params, grads)
        for j, (ps, ref_opt) in enumerate(refs):
            for p, gr in zip(ps, grads):
                p.grad = gr[j].clone()
            ref_opt.step()
            for p, q in zip(ps, params):
                torch.testing.assert_close(q[j], p, rtol=1e-13, atol=1e-15)


def test_keep_selects_members_state():
    params = [torch.ones(4, 2, dtype=D64)]
    opt = EnsembleOptimizer("adam", params, lr=0.1)
    opt.step(params, [torch.arange(8, dtype=D64).reshape(4, 2)])
    before = opt.state["exp_avg"][0].clone()
    opt.keep(torch.tensor([3, 1]))
    assert torch.equal(opt.state["exp_avg"][0], before[[3, 1]])
    assert opt.steps.shape == (2,)


def test_bad_inputs_are_named():
    ps = [torch.zeros(2, 3)]
    with pytest.raises(ValueError, match="optimizer must be one of.*did you mean 'adam'"):
        EnsembleOptimizer("adamm", ps, lr=0.1)
    with pytest.raises(ValueError, match="lr must be > 0"):
        EnsembleOptimizer("sgd", ps, lr=0.0)
    with pytest.raises(ValueError, match="momentum is only for optimizer 'sgd'"):
        EnsembleOptimizer("adam", ps, lr=0.1, momentum=0.9)
