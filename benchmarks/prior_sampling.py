"""Prior sampling throughput: vectorised FCN sampler vs a naive loop over ``arch.build`` modules.

Measures, in one run on the Boolean n = 7 system (FCN 7-40-40-1 by default):

- samples/s of ``sampler.prior_sampling`` on ``--samples`` draws (default 10^7; ``--quick`` 2*10^5),
- samples/s of a naive loop (``arch.build`` + forward, one network at a time) on ``--loop`` draws,

and prints their ratio, the acceptance rate and the estimated P(S).

    python benchmarks/prior_sampling.py            # 10^7 samples (minutes on 2 cores)
    python benchmarks/prior_sampling.py --quick    # under a minute
"""

from __future__ import annotations

import argparse
import time

import torch

import sampler
from sampler.prior import prior_sampling


def naive_loop(arch, split, n: int, seed: int) -> tuple[float, int]:
    """Samples/s and number fitting S of one-module-at-a-time sampling."""
    gen = sampler.make_generator(seed, "naive")
    x = split.x_all()
    y = split.y_train == 1
    m = split.n_train
    fits = 0
    t0 = time.perf_counter()
    with torch.no_grad():
        for _ in range(n):
            out = arch.build(split.input_shape, generator=gen)(x)
            fits += bool(((out[:m] > 0) == y).all())
    return n / (time.perf_counter() - t0), fits


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="2*10^5 samples, 500 loop samples")
    ap.add_argument("--samples", type=int, default=10_000_000)
    ap.add_argument("--loop", type=int, default=2000, help="samples for the naive loop")
    ap.add_argument("--n-train", type=int, default=32)
    ap.add_argument("--n-test", type=int, default=64)
    ap.add_argument("--target", default="majority")
    ap.add_argument("--width", type=int, default=40)
    ap.add_argument("--depth", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: leave torch's default)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if args.quick:
        args.samples, args.loop = 200_000, 500
    if args.threads:
        torch.set_num_threads(args.threads)
    split = sampler.load_split("boolean", n_train=args.n_train, n_test=args.n_test, seed=0, target=args.target)
    arch = sampler.FCN(depth=args.depth, width=args.width, activation="relu", sigma_w=1.0, sigma_b=0.0)
    print(f"{arch.describe()} on boolean target={args.target}, |S|={args.n_train}, |E|={args.n_test}, "
          f"torch threads={torch.get_num_threads()}, device={args.device}")
    loop_rate, _ = naive_loop(arch, split, args.loop, args.seed)
    print(f"naive loop      : {args.loop} samples, {loop_rate:,.0f} samples/s")
    res = prior_sampling(arch, split, args.samples, seed=args.seed, device=args.device,
                         batch_size=args.batch_size, progress=False)
    print(f"vectorised      : {args.samples} samples in {res.seconds:.1f} s, {res.samples_per_second:,.0f} samples/s")
    print(f"ratio           : {res.samples_per_second / loop_rate:.1f}x (vectorised / naive loop)")
    lo, hi = res.p_s_interval
    print(f"acceptance      : {res.n_fit} of {res.n_samples}; P(S) = {res.acceptance_rate:.3e} "
          f"+- {res.p_s_se:.1e} (95% CI {lo:.3e}..{hi:.3e}); log P(S) = {res.log_p_s:.3f} +- {res.log_p_s_se:.3f}")
    print(f"functions on E  : {res.counts.n_functions} distinct; most common count "
          f"{res.counts.most_common(1)[0][1] if res.counts.n_fit else 0}")


if __name__ == "__main__":
    main()
