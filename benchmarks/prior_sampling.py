"""Prior sampling throughput: pre-activation sampler vs weight sampler (and vs a naive loop).

Measures in one run, side by side (the two samplers alternate, ``--repeats`` times each):

- MNIST, m = 8, k = 6, FCN 2x64 relu (sigma_w = 1, sigma_b = 0.0357): samples/s of
  ``sampler.sample_prior`` with ``method="weights"`` (every weight drawn) and
  ``method="preactivations"`` (each layer's pre-activations drawn on the 14 points);
- the Boolean system (n = 7 bits, |S| = 32, |E| = 64, FCN 7-40-40-1 relu, sigma_b = 0): the same
  two, and a naive loop (``arch.build`` + forward, one network at a time) on ``--loop`` draws;

and prints each sampler's median samples/s, P(S) from both (they estimate the same number), and
last the ratios (median pre-activations / median weights; the range over repeats in brackets).
Goal of issue 16: >= 5x on MNIST, no slower on Boolean.

    python benchmarks/prior_sampling.py            # about 3 minutes on 2 cores
    python benchmarks/prior_sampling.py --quick    # under a minute
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import torch

import sampler


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


def side_by_side(arch, split, samples: dict[str, int], *, repeats: int, seed: int, device: str,
                 batch_size: int) -> dict[str, list]:
    """Per method, ``(counts, samples/s)`` of ``repeats`` runs, the methods alternating (same machine load)."""
    runs: dict[str, list] = {m: [] for m in samples}
    for r in range(repeats):
        for method, n in samples.items():
            t0 = time.perf_counter()
            counts = sampler.sample_prior(arch, split, n, seed=seed + r, device=device, batch_size=batch_size,
                                          progress=False, method=method)
            runs[method].append((counts, n / (time.perf_counter() - t0)))
    return runs


def report(name: str, runs: dict[str, list]) -> tuple[float, float, float]:
    """Print each method's median samples/s and P(S); return (median ratio, min, max) pre/weights."""
    rates = {m: [rate for _, rate in rs] for m, rs in runs.items()}
    for method, rs in runs.items():
        rs = [c for c, _ in rs]
        n = sum(r.n_runs for r in rs)
        fit = sum(r.n_fit for r in rs)
        p = fit / n
        p_s = f"{p:.4e} +- {math.sqrt(p * (1 - p) / n):.1e}" if fit else f"< {3 / n:.1e} (95%)"
        print(f"{name:8s} {method:15s}: {statistics.median(rates[method]):>10,.0f} samples/s (median of "
              f"{len(rs)}; {', '.join(f'{x:,.0f}' for x in rates[method])}); P(S) = {p_s} ({fit} of {n})")
    per_rep = [p / w for p, w in zip(rates["preactivations"], rates["weights"])]
    return statistics.median(rates["preactivations"]) / statistics.median(rates["weights"]), min(per_rep), max(per_rep)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer samples and repeats")
    ap.add_argument("--repeats", type=int, default=3, help="runs of each sampler, alternating")
    ap.add_argument("--mnist-samples", type=int, default=1 << 15, help="weight-sampler draws per MNIST run "
                    "(the pre-activation sampler draws 8 times as many)")
    ap.add_argument("--boolean-samples", type=int, default=1 << 18, help="draws per Boolean run, each sampler")
    ap.add_argument("--loop", type=int, default=2000, help="samples for the naive loop (0: skip it)")
    ap.add_argument("--batch-size", type=int, default=0,
                    help="networks per batched pass (0: each sampler's default, sample_prior's batch_size=None)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: leave torch's default)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if args.quick:
        args.repeats, args.mnist_samples, args.boolean_samples, args.loop = 2, 1 << 13, 1 << 16, 500
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch threads={torch.get_num_threads()}, device={args.device}, batch_size={args.batch_size or 'default'}")
    kw = dict(repeats=args.repeats, seed=args.seed, device=args.device, batch_size=args.batch_size or None)

    mnist = sampler.load_split("mnist", n_train=8, n_test=6, seed=0)
    arch = sampler.FCN(depth=2, width=64, activation="relu", sigma_w=1.0, sigma_b=0.0357)
    print(f"MNIST: {arch.describe()}, |S|={mnist.n_train}, |E|={mnist.n_test}")
    mnist_ratio = report("MNIST", side_by_side(arch, mnist, {"weights": args.mnist_samples,
                                                             "preactivations": 8 * args.mnist_samples}, **kw))

    boolean = sampler.load_split("boolean", n_train=32, n_test=64, seed=0, target="majority")
    arch = sampler.FCN(depth=2, width=40, activation="relu", sigma_w=1.0, sigma_b=0.0)
    print(f"Boolean: {arch.describe()}, target=majority, |S|={boolean.n_train}, |E|={boolean.n_test}")
    runs = side_by_side(arch, boolean, {"weights": args.boolean_samples,
                                        "preactivations": args.boolean_samples}, **kw)
    boolean_ratio = report("Boolean", runs)
    if args.loop:
        loop_rate, _ = naive_loop(arch, boolean, args.loop, args.seed)
        weights = statistics.median(rate for _, rate in runs["weights"])
        print(f"Boolean  naive loop     : {loop_rate:>10,.0f} samples/s ({args.loop} samples); "
              f"weights / naive loop {weights / loop_rate:.1f}x")
    for name, (ratio, lo, hi) in (("MNIST", mnist_ratio), ("Boolean", boolean_ratio)):
        print(f"ratio {name:8s}: {ratio:.2f}x pre-activations / weights (per repeat {lo:.2f}-{hi:.2f}x)")


if __name__ == "__main__":
    main()
