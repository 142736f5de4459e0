"""The CUDA paths of the infinite-width side: NNGP kernels and EP, in float64, against the CPU.

Run on a machine with an NVIDIA GPU (``pytest -m cuda``); skipped elsewhere.
"""

import numpy as np
import pytest
import torch

import nngp
import sampler
from nngp.ep import ep_orthant

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

FCN = sampler.FCN(depth=2, width=512, activation="relu", sigma_w=1.0, sigma_b=0.0357)


@pytest.fixture(scope="module")
def split():
    return sampler.load_split("mnist", n_train=300, n_test=20, seed=0)


@pytest.mark.parametrize("arch", [FCN, sampler.FCN(depth=3, activation="erf", sigma_w=1.5, sigma_b=0.1)],
                         ids=["fcn-relu", "fcn-erf"])
def test_fcn_kernel_cuda_matches_cpu(split, arch):
    x = split.x_all()
    k_cpu = nngp.kernel(arch, x)
    k_gpu = nngp.kernel(arch, x, device="cuda")
    assert k_gpu.device.type == "cuda" and k_gpu.dtype == torch.float64
    torch.testing.assert_close(k_gpu.cpu(), k_cpu, rtol=1e-11, atol=1e-13)


def test_cnn_kernel_cuda_matches_cpu(split):
    arch = sampler.CNN(depth=2, channels=8, kernel_size=3, readout="flatten")
    x = split.x_all()[:40]
    k_cpu = nngp.kernel(arch, x, input_shape=split.input_shape)
    k_gpu = nngp.kernel(arch, x, input_shape=split.input_shape, device="cuda")
    torch.testing.assert_close(k_gpu.cpu(), k_cpu, rtol=1e-11, atol=1e-13)


def test_empirical_kernel_cuda_within_monte_carlo_error(split):
    x = split.x_all()[:30]
    k_mc, se = nngp.empirical_kernel(FCN, x, n_samples=4096, seed=0, device="cuda", dtype=torch.float64,
                                     return_stderr=True)
    k = nngp.kernel(FCN, x)
    z = ((k_mc.cpu() - k) / se.cpu().clamp_min(1e-12)).abs()
    assert z.max() < 6.0  # 465 distinct entries; |z| > 6 by chance has probability ~1e-9 each


def test_ep_cuda_matches_cpu(split):
    K = nngp.kernel(FCN, split.x_train)
    y = split.y_train.to(torch.float64)
    cpu = ep_orthant(K, y, tol=1e-8)
    gpu = ep_orthant(K.cuda(), y.cuda(), tol=1e-8)
    assert bool(cpu.converged) and bool(gpu.converged)
    assert abs(float(gpu.log_z) - float(cpu.log_z)) < 1e-8 * abs(float(cpu.log_z))
    torch.testing.assert_close(gpu.mean.cpu(), cpu.mean, rtol=1e-7, atol=1e-9)


def test_train_posterior_and_log_pb_on_cuda(split):
    cpu = nngp.train_posterior(FCN, split)
    gpu = nngp.train_posterior(FCN, split, device="cuda")
    assert gpu.pred_mean.device.type == "cpu"  # returned on the CPU whatever ran the fit
    assert abs(gpu.log_ps - cpu.log_ps) < 1e-7 * abs(cpu.log_ps)
    torch.testing.assert_close(gpu.pred_cov, cpu.pred_cov, rtol=1e-6, atol=1e-9)
    rng = np.random.default_rng(0)
    functions = ["".join(map(str, rng.integers(0, 2, split.n_test))) for _ in range(5)]
    np.testing.assert_allclose(nngp.log_pb(FCN, split, functions, posterior=gpu),
                               nngp.log_pb(FCN, split, functions, posterior=cpu), rtol=1e-6)
