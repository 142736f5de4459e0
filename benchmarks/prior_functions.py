"""Prior sampling without a training set (m = 0): samples per second of FCN 7-40-40-1 on the 128 inputs
of the Boolean system, counted packed (issue 22's target: 10^7 samples within 15 minutes on 2 cores, i.e.
>= 11,112 samples/s).

Side by side in one run: ``sample_prior_functions`` with the pre-activation sampler (the default for FCNs)
and with the weights sampler (``method="weights"``, the same distribution), alternating, each repeated;
printed: the rates, their ratio, the time 10^7 samples would take, and the number of distinct functions.

    python benchmarks/prior_functions.py             # 2^20 samples per run, 2 repeats
    python benchmarks/prior_functions.py --quick     # 2^16, under a minute
    python benchmarks/prior_functions.py --samples 10000000 --repeats 1 --only preactivations   # the full target
"""

from __future__ import annotations

import argparse
import time

import torch

import sampler
from sampler.data import boolean_inputs
from sampler.prior_functions import sample_prior_functions


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--samples", type=int, default=1 << 20)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--only", choices=("preactivations", "weights"))
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    n = 1 << 16 if a.quick else a.samples
    arch = sampler.FCN(depth=2, width=40, activation="relu", sigma_w=1.0, sigma_b=1.0)
    x = boolean_inputs()
    methods = [a.only] if a.only else ["preactivations", "weights"]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {arch.describe()}, 128 Boolean inputs, "
          f"{n:,} samples per run")
    sample_prior_functions(arch, x, 4096, seed=99, progress=False)  # warm-up
    best = {}
    for r in range(a.repeats):
        for method in methods:
            t0 = time.perf_counter()
            counts = sample_prior_functions(arch, x, n, seed=r, method=method, progress=False)
            rate = n / (time.perf_counter() - t0)
            best[method] = max(best.get(method, 0.0), rate)
            print(f"  {method:15s} run {r}: {rate:10,.0f} samples/s, {counts.n_functions:,} distinct functions",
                  flush=True)
    for method, rate in best.items():
        print(f"{method:15s} best {rate:10,.0f} samples/s -> 10^7 samples in {1e7 / rate / 60:.1f} min")
    if len(best) == 2:
        print(f"ratio preactivations/weights: {best['preactivations'] / best['weights']:.2f}x")


if __name__ == "__main__":
    main()
