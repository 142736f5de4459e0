"""sampler.checks.check_device: one device check for every public function that takes a device (issue 26)."""

import pytest
import torch

import analysis
import nngp
import sampler
from sampler.checks import check_device
from sampler.mcmc import mcmc_functions, run_nuts
from sampler.prior import iter_prior_outputs

ARCH = sampler.FCN(depth=1, width=4)


@pytest.fixture(scope="module")
def split():
    return sampler.load_split("boolean", n_train=8, n_test=4, seed=0, target="majority")


def calls(split):
    """Every public function that takes ``device``, with small valid arguments otherwise."""
    x, K = split.x_all(), torch.eye(12, dtype=torch.float64)
    model = torch.nn.Sequential(torch.nn.Linear(7, 1))
    return {
        "sample_sgd": lambda d: sampler.sample_sgd(ARCH, split, 4, seed=0, batch_size=4, device=d),
        "train_runs": lambda d: sampler.train_runs(ARCH, split, sampler.TrainSpec(batch_size=4), seed=0, start=0, stop=2,
                                                   device=d),
        "sample_prior": lambda d: sampler.sample_prior(ARCH, split, 4, seed=0, device=d),
        "iter_prior_outputs": lambda d: next(iter_prior_outputs(ARCH, x, 4, seed=0, device=d)),
        "Network": lambda d: sampler.Network(ARCH, (7,), device=d),
        "make_generator": lambda d: sampler.make_generator(0, "x", device=d),
        "nngp.kernel": lambda d: nngp.kernel(ARCH, x, device=d),
        "nngp.empirical_kernel": lambda d: nngp.empirical_kernel(ARCH, x, n_samples=4, seed=0, device=d),
        "nngp.kernel_for": lambda d: nngp.kernel_for(ARCH, x, device=d),
        "nngp.empirical_ntk": lambda d: nngp.empirical_ntk(ARCH, x, n_init=2, seed=0, device=d),
        "nngp.gp_regression": lambda d: nngp.gp_regression(K, torch.ones(8), n_train=8, noise=0.1, device=d),
        "nngp.train_posterior": lambda d: nngp.train_posterior(ARCH, split, device=d),
        "nngp.ess_sample": lambda d: nngp.ess_sample(K, split.y_train, 8, n_samples=2, seed=0, device=d),
        "nngp.ess_posterior": lambda d: nngp.ess_posterior(ARCH, split, 2, seed=0, device=d),
        "analysis.critical_samples": lambda d: analysis.critical_samples(model, x, radius=0.1, device=d),
        "analysis.critical_sample_ratio": lambda d: analysis.critical_sample_ratio(model, x, radius=0.1, device=d),
        "mcmc_functions": lambda d: mcmc_functions(ARCH, split, n_samples=2, n_warmup=2, seed=0, device=d),
        "run_nuts": lambda d: run_nuts(lambda: None, n_samples=2, n_warmup=2, seed=0, device=d),
    }


NAMES = sorted([
    "sample_sgd", "train_runs", "sample_prior", "iter_prior_outputs", "Network", "make_generator", "nngp.kernel",
    "nngp.empirical_kernel", "nngp.kernel_for", "nngp.empirical_ntk", "nngp.gp_regression", "nngp.train_posterior", "nngp.ess_sample", "nngp.ess_posterior",
    "analysis.critical_samples", "analysis.critical_sample_ratio", "mcmc_functions", "run_nuts"])


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("device, error, match", [
    ("tpu", ValueError, r"^device must be one of \['cpu', 'cuda', 'auto'\] \(or 'cuda:N'\), got device='tpu'$"),
    ("meta", ValueError, r"^device must be one of .*got device='meta'$"),
    (torch.device("meta"), ValueError, r"^device must be one of .*got device='meta'$"),
    (3, TypeError, r"^device must be a string \['cpu', 'cuda', 'auto'\], a torch.device.*got int$"),
])
def test_every_public_function_checks_its_device_the_same_way(split, name, device, error, match):
    """Guards (issue 26): sample_prior(device="tpu") raised torch's list of device types; sample_sgd
    alone validated its device."""
    with pytest.raises(error, match=match):
        calls(split)[name](device)


def test_the_list_of_functions_is_complete():
    """Every public callable of sampler, nngp and analysis with a ``device`` parameter is tested above."""
    import inspect

    found = set()
    for mod, prefix in ((sampler, ""), (nngp, "nngp."), (analysis, "analysis.")):
        for name in mod.__all__:
            obj = getattr(mod, name)
            try:
                if callable(obj) and "device" in inspect.signature(obj).parameters:
                    found.add(prefix + name)
            except (TypeError, ValueError):
                continue
    assert found <= set(NAMES)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_where_there_is_none_is_one_line():
    with pytest.raises(ValueError, match=r"^device='cuda:1' was asked for but CUDA is not available here; use 'cpu'"):
        check_device("cuda:1")
    assert check_device("auto") == torch.device("cpu") and check_device(None, allow_none=True) is None
