"""Benchmark: the infinite-width squared-loss references (``ntk``, ``gp-mse``) on shipped MNIST.

Side by side in one run:

1. the analytic FCN NTK (``nngp.ntk``, 2x512 relu) on n inputs against the empirical NTK
   (``nngp.empirical_ntk``, J J^T of random networks through the protocol) on a subset: cost per
   kernel entry and the ratio, with the empirical one's median relative deviation;
2. the ``gp-mse`` posterior on k = 100 test points at training-set size m: Cholesky against
   gpytorch's conjugate gradients (``solver="cg"``, k + 1 right-hand sides), time ratio and the
   largest difference; and ``nngp.gd_mse_ensemble`` at t = inf (an eigendecomposition of Theta_XX).

    python benchmarks/ntk.py            # NTK on 4000 inputs; GP at m = 2000, 4000, 8000
    python benchmarks/ntk.py --quick    # NTK on 1000 inputs; GP at m = 1000 (under a minute)
    python benchmarks/ntk.py --device cuda   # the GP solves on a GPU (float64)
"""

from __future__ import annotations

import argparse
import math
import time

import torch

import nngp
import sampler
from nngp.mse import gd_mse_ensemble, gp_regression, targets


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: leave the default)")
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    n_ntk, sizes, k = (1000, [1000], 100) if a.quick else (4000, [2000, 4000, 8000], 100)
    pool = sampler.load_pool("mnist")
    arch = sampler.FCN(depth=2, width=512, activation="relu", sigma_w=1.0, sigma_b=0.0357)

    x = torch.from_numpy(pool.x[:n_ntk])
    T, t_a = _timed(lambda: nngp.ntk(arch, x))
    sub = x[:20]
    E, t_e = _timed(lambda: nngp.empirical_ntk(arch, sub, n_init=4, seed=0, dtype=torch.float32))
    dev = float(((E - T[:20, :20]).abs() / T[:20, :20].abs()).median())
    per_a, per_e = t_a / n_ntk ** 2, t_e / 20 ** 2
    print(f"analytic NTK (FCN 2x512 relu, standard parameterisation), {n_ntk} MNIST inputs: {t_a:.2f} s "
          f"({per_a * 1e9:.1f} ns per entry) on {torch.get_num_threads()} threads")
    print(f"empirical NTK, 20 inputs x 4 networks (float32): {t_e:.2f} s ({per_e * 1e6:.0f} us per entry); "
          f"median relative deviation from the analytic {dev:.3f}; cost ratio empirical / analytic "
          f"{per_e / per_a:.3g}")

    for m in sizes:
        xs = torch.from_numpy(pool.x[:m + k])
        ys = torch.from_numpy(pool.labels[:m] >= 5).to(torch.int64)
        K = nngp.kernel(arch, xs)
        Y = targets(ys)
        chol, t_c = _timed(lambda: gp_regression(K, Y, n_train=m, noise=0.1, solver="cholesky", joint=False,
                                                 device=a.device))
        cg, t_g = _timed(lambda: gp_regression(K, Y, n_train=m, noise=0.1, solver="cg", joint=False,
                                               cg_tol=1e-8, device=a.device))
        diff = max(float((chol.mean - cg.mean).abs().max()), float((chol.cov - cg.cov).abs().max()))
        Th = nngp.ntk(arch, xs)
        _, t_n = _timed(lambda: gd_mse_ensemble(K, Th, Y, n_train=m, time=math.inf))
        print(f"m = {m}, k = {k} on {a.device}: gp-mse posterior on E Cholesky {t_c:.2f} s, CG {t_g:.2f} s "
              f"(ratio CG / Cholesky {t_g / t_c:.2f}; largest difference {diff:.1e}); "
              f"NTK ensemble at t = inf (eigendecomposition) {t_n:.2f} s")


if __name__ == "__main__":
    main()
