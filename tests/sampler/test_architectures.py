import math

import pytest
import torch

import sampler
from sampler.architectures import draw_standard, standard_std
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


# --- one initialisation rule, the registry --------------------------------------------------------

@pytest.mark.parametrize("sigma_b", [0.0, 0.3])
def test_stacked_draws_follow_the_init_rule(sigma_b):
    # one network drawn stacked == arch.build on the same generator state when no scale is 0
    arch = sampler.FCN(depth=2, width=6, sigma_w=1.4, sigma_b=sigma_b)
    net = arch.build((3,), generator=make_generator(4, "x"), dtype=torch.float64)
    shapes = [(n, tuple(p.shape)) for n, p in net.named_parameters()]
    stacked = draw_standard([s for _, s in shapes], arch.parameter_stds(net), 1, generator=make_generator(4, "x"),
                            dtype=torch.float64)
    if sigma_b:
        for p, q in zip(net.parameters(), stacked):
            assert torch.equal(p, q[0])
    else:  # zero scales draw nothing and are zeros
        assert all(torch.equal(q, torch.zeros_like(q)) for q in stacked[1::2])
    assert standard_std("layers.0.weight", (6, 3), 1.4, sigma_b) == 1.4 / math.sqrt(3)
    assert standard_std("convs.1.bias", (6,), 1.4, sigma_b) == sigma_b


def test_building_leaves_the_global_rng_alone():
    state = torch.random.get_rng_state()
    sampler.CNN(depth=1, channels=4).build((1, 5, 5), generator=make_generator(0))
    sampler.FCN(depth=1, width=8).network((7,))
    assert torch.equal(torch.random.get_rng_state(), state)


def test_register_architecture_checks_the_class():
    from dataclasses import dataclass
    from typing import ClassVar

    from sampler.architectures import ARCHITECTURES, register_architecture

    assert {"fcn", "cnn", "lstm", "module"} <= set(ARCHITECTURES)
    with pytest.raises(TypeError, match="frozen dataclass subclass"):
        register_architecture(dict)

    @dataclass(frozen=True)
    class Clash(sampler.Architecture):
        kind: ClassVar[str] = "fcn"

    with pytest.raises(ValueError, match="kind 'fcn' is taken"):
        register_architecture(Clash)

    @dataclass(frozen=True)
    class Nameless(sampler.Architecture):
        pass

    with pytest.raises(ValueError, match="kind must be a non-empty string"):
        register_architecture(Nameless)
    assert ARCHITECTURES["fcn"] is sampler.FCN
