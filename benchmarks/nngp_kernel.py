"""Benchmark: the analytic FCN NNGP kernel on the 10^4 shipped MNIST images.

Prints the time of ``nngp.kernel`` (2x512 relu, the paper's MNIST FCN) on all 10^4 images of
the shipped pool (target < 10 s on the 2-core machine) and, side by side in the same run, the
time of a Monte Carlo kernel (``nngp.empirical_kernel``) on a subset, scaled per kernel entry,
as the ratio analytic / Monte Carlo cost.

    python benchmarks/nngp_kernel.py           # 10^4 inputs
    python benchmarks/nngp_kernel.py --quick   # 2000 inputs, under a minute
"""

from __future__ import annotations

import argparse
import time

import torch

import nngp
import sampler


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=10_000, help="inputs (the shipped pool has 10^4)")
    p.add_argument("--mc-n", type=int, default=500, help="inputs of the Monte Carlo comparison")
    p.add_argument("--mc-samples", type=int, default=64, help="networks of the Monte Carlo comparison")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: leave the default)")
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    n = 2000 if a.quick else a.n
    pool = sampler.load_pool("mnist")
    x = torch.from_numpy(pool.x[:n])
    arch = sampler.FCN(depth=2, width=512, activation="relu", sigma_w=1.0, sigma_b=0.0357)
    t0 = time.perf_counter()
    K = nngp.kernel(arch, x)
    t_k = time.perf_counter() - t0
    print(f"analytic FCN kernel, {n} MNIST inputs ({n * n:.2e} entries, {K.numel() * 8 / 2**20:.0f} MiB): "
          f"{t_k:.2f} s on {torch.get_num_threads()} threads (target < 10 s for 10^4)")
    del K
    xm = x[:a.mc_n]
    t0 = time.perf_counter()
    E = nngp.empirical_kernel(arch, xm, n_samples=a.mc_samples, seed=0)
    t_mc = time.perf_counter() - t0
    Km = nngp.kernel(arch, xm)
    rel = float(((E - Km).abs() / Km.abs()).median())
    per_a = t_k / n ** 2
    per_mc = t_mc / a.mc_n ** 2
    print(f"Monte Carlo kernel, {a.mc_n} inputs x {a.mc_samples} width-512 networks: {t_mc:.2f} s "
          f"(median relative difference from the analytic kernel {rel:.3f})")
    print(f"cost per kernel entry: analytic {per_a * 1e9:.1f} ns, Monte Carlo {per_mc * 1e9:.1f} ns: "
          f"ratio {per_mc / per_a:.0f}x")


if __name__ == "__main__":
    main()
