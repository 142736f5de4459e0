import math

import pytest
import torch

import sampler
from sampler.architectures import draw_standard, fcn_forward, fcn_param_shapes, standard_std
from sampler.seeding import derive_seed, make_generator


@pytest.mark.parametrize("arch, shape", [
    (sampler.FCN(depth=2, width=64), (1, 28, 28)),
    (sampler.FCN(depth=0), (7,)),
    (sampler.CNN(depth=2, channels=8, readout="flatten"), (1, 8, 8)),
    (sampler.CNN(depth=1, channels=8, readout="gap"), (3, 6, 6)),
    (sampler.LSTM(hidden=16), (1, 8, 8)),
    (sampler.LSTM(hidden=16), (7,)),
])
def test_networks_map_flat_inputs_to_scalars(arch, shape):
    net = arch.build(shape, generator=make_generator(0))
    x = torch.rand(5, math.prod(shape))
    assert net(x).shape == (5,)


def test_init_is_a_pure_function_of_the_generator():
    arch = sampler.FCN(depth=2, width=32)
    a = arch.build((7,), generator=make_generator(3, "init", 1))
    b = arch.build((7,), generator=make_generator(3, "init", 1))
    c = arch.build((7,), generator=make_generator(3, "init", 2))
    for pa, pb, pc in zip(a.parameters(), b.parameters(), c.parameters()):
        assert torch.equal(pa, pb)
        assert not torch.equal(pa, pc)


@pytest.mark.parametrize("sigma_w, sigma_b", [(1.0, 0.0357), (2.0, 0.5)])
def test_init_statistics_match_the_standard_parameterisation(sigma_w, sigma_b):
    arch = sampler.FCN(depth=2, width=400, sigma_w=sigma_w, sigma_b=sigma_b)
    net = arch.build((1, 28, 28), generator=make_generator(11))
    for name, p in net.named_parameters():
        n = p.numel()
        if name.endswith("bias"):
            var = sigma_b ** 2
        else:
            var = sigma_w ** 2 / p.shape[1]
        # sample variance of n Gaussians: relative std sqrt(2/n); allow 5 sigma
        rel = float(p.detach().double().pow(2).mean() / var)
        assert abs(rel - 1) < 5 * math.sqrt(2 / n), (name, rel)


def test_cnn_weight_fan_in_is_channels_times_kernel_area():
    arch = sampler.CNN(depth=1, channels=200, kernel_size=3, sigma_w=1.5)
    net = arch.build((4, 5, 5), generator=make_generator(0))
    w = net.convs[0].weight
    var = 1.5 ** 2 / (4 * 9)
    assert abs(float(w.detach().double().pow(2).mean()) / var - 1) < 5 * math.sqrt(2 / w.numel())


@pytest.mark.parametrize("kwargs, err, match", [
    (dict(width=0), ValueError, "width must be >= 1, got width=0"),
    (dict(activation="gelu"), ValueError, "activation must be one of"),
    (dict(sigma_w=-1.0), ValueError, "sigma_w must be > 0"),
    (dict(depth=1.5), TypeError, "depth must be an integer"),
])
def test_bad_fcn_specs(kwargs, err, match):
    with pytest.raises(err, match=match):
        sampler.FCN(**kwargs)


def test_cnn_needs_images_and_odd_kernels():
    with pytest.raises(ValueError, match="kernel_size must be odd"):
        sampler.CNN(kernel_size=2)
    with pytest.raises(ValueError, match="CNN needs image inputs"):
        sampler.CNN().build((7,), generator=make_generator(0))


def test_make_architecture_names_unknown_fields():
    assert sampler.make_architecture("fcn", width=8) == sampler.FCN(width=8)
    with pytest.raises(ValueError, match="did you mean 'width'"):
        sampler.make_architecture("fcn", widht=8)


def test_derive_seed_is_stable_and_distinct():
    assert derive_seed(0, "init", 1) == derive_seed(0, "init", 1)
    assert len({derive_seed(0, "init", i) for i in range(1000)}) == 1000
    with pytest.raises(ValueError):
        derive_seed(-1)


# --- one initialisation rule and one FCN forward pass ------------------------------------------------

def test_fcn_param_shapes_name_the_modules_parameters():
    for depth in (0, 1, 3):
        net = sampler.FCN(depth=depth, width=5).build((4,), generator=make_generator(0))
        assert fcn_param_shapes(4, depth, 5) == [(n, tuple(p.shape)) for n, p in net.named_parameters()]


@pytest.mark.parametrize("sigma_b", [0.0, 0.3])
def test_stacked_draws_follow_the_init_rule(sigma_b):
    # one network drawn stacked == arch.build on the same generator state (same rule, same stream)
    arch = sampler.FCN(depth=2, width=6, sigma_w=1.4, sigma_b=sigma_b)
    net = arch.build((3,), generator=make_generator(4, "x"), dtype=torch.float64)
    stacked = draw_standard(fcn_param_shapes(3, 2, 6), 1, sigma_w=1.4, sigma_b=sigma_b,
                            generator=make_generator(4, "x"), dtype=torch.float64)
    for p, q in zip(net.parameters(), stacked):
        assert torch.equal(p, q[0])
    skipped = draw_standard(fcn_param_shapes(3, 2, 6), 2, sigma_w=1.4, sigma_b=sigma_b,
                            generator=make_generator(4, "x"), skip_zero=True)
    assert [q is None for q in skipped] == [sigma_b == 0 and i % 2 == 1 for i in range(6)]
    assert standard_std("layers.0.weight", (6, 3), 1.4, sigma_b) == 1.4 / math.sqrt(3)
    assert standard_std("convs.1.bias", (6,), 1.4, sigma_b) == sigma_b


@pytest.mark.parametrize("activation", ["relu", "erf", "tanh"])
def test_fcn_forward_against_a_plain_loop(activation):
    # independent reference: per member, per layer, x @ W^T + b with the activation written out
    import torch.nn.functional as F

    phi = {"relu": torch.relu, "erf": torch.erf, "tanh": torch.tanh}[activation]
    gen = torch.Generator().manual_seed(0)
    params = draw_standard(fcn_param_shapes(4, 2, 5), 3, sigma_w=1.0, sigma_b=0.5, generator=gen,
                           dtype=torch.float64)
    x_shared = torch.randn(7, 4, generator=gen, dtype=torch.float64)
    x_each = torch.randn(3, 6, 4, generator=gen, dtype=torch.float64)
    acts: list = []
    out_shared = fcn_forward(params, x_shared, activation)
    out_each = fcn_forward(params, x_each, activation, acts)
    assert out_shared.shape == (3, 7) and out_each.shape == (3, 6) and len(acts) == 2
    for j in range(3):
        for x, out in ((x_shared, out_shared[j]), (x_each[j], out_each[j])):
            h = x
            for i in range(2):
                h = phi(F.linear(h, params[2 * i][j], params[2 * i + 1][j]))
            torch.testing.assert_close(out, F.linear(h, params[4][j], params[5][j]).squeeze(-1), rtol=1e-13, atol=1e-13)
    no_bias = [p if i % 2 == 0 else None for i, p in enumerate(params)]
    zero_bias = [p if i % 2 == 0 else torch.zeros_like(p) for i, p in enumerate(params)]
    torch.testing.assert_close(fcn_forward(no_bias, x_shared, activation), fcn_forward(zero_bias, x_shared, activation))
    net = sampler.FCN(depth=2, width=5, activation=activation).build((4,), generator=make_generator(1),
                                                                     dtype=torch.float64)
    member = [p.unsqueeze(0) for p in net.parameters()]
    torch.testing.assert_close(net(x_shared), fcn_forward(member, x_shared, activation)[0], rtol=0, atol=0)
