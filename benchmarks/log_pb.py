"""Benchmark: log P_B(f|S) by ``ep-conditional`` against per-function ``ep``.

Measures, in one run, on an MNIST split with the paper's FCN (2x512 relu):

1. ``ep-conditional`` on F distinct functions (one EP on S, then batched k-dimensional EPs);
2. per-function ``ep`` (one EP on S + E per function) on a subset of them, timed and
   extrapolated to all F (printed as such);
3. the speed ratio and the median / max |difference| of log P_B over the subset;
4. optionally (``--large``) the time of ``ep-conditional`` for 10^4 functions at m = 10^4,
   kernel and EP on S included;
5. ``--scale-check``: EP on S (m = 2000) on the NNGP kernel and on the same kernel scaled by 1e-8
   and 1e8, side by side (issue 26 saw 732 s against 29 s; EP is scale invariant in exact
   arithmetic: the ratio should be ~1 with the same iterations and log P(S)).

Functions: the kind SGD finds, near the GP posterior's low-error functions: signs of draws from
``q(g_E | S)`` (the Gaussian predictive of EP on S), deduplicated, topped up with random 1-3 bit
flips of the posterior mean's sign pattern if draws repeat.

    python benchmarks/log_pb.py            # m = 1000, k = 100, 1000 functions
    python benchmarks/log_pb.py --large    # also m = 10^4, 10^4 functions
    python benchmarks/log_pb.py --quick    # under a minute
    python benchmarks/log_pb.py --scale-check   # EP on S at m = 2000: K vs K * 1e-8 vs K * 1e8
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

import nngp
import sampler
from sampler.functions import bits_to_strings


def realistic_functions(post: nngp.TrainPosterior, n: int, seed: int) -> list[str]:
    """``n`` distinct bitstrings: signs of draws from q(g_E|S), topped up by flips of its mean's signs."""
    gen = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    k = post.pred_mean.shape[0]
    evals, evecs = torch.linalg.eigh(post.pred_cov)
    root = evecs * evals.clamp_min(0.0).sqrt()
    seen: dict[str, None] = {}
    for _ in range(20):
        z = torch.randn(4 * n, k, generator=gen, dtype=torch.float64)
        g = post.pred_mean + z @ root.T
        for f in bits_to_strings((g > 0).to(torch.uint8)):
            seen.setdefault(f, None)
            if len(seen) >= n:
                return list(seen)[:n]
    base = (post.pred_mean > 0).numpy().astype(np.uint8)
    while len(seen) < n:
        b = base.copy()
        b[rng.choice(k, size=rng.integers(1, 4), replace=False)] ^= 1
        seen.setdefault(bits_to_strings(b[None])[0], None)
    return list(seen)[:n]


def compare(m: int, k: int, n_functions: int, n_ep: int, seed: int) -> None:
    arch = sampler.FCN(depth=2, width=512, activation="relu", sigma_w=1.0, sigma_b=0.0357)
    split = sampler.load_split("mnist", n_train=m, n_test=k, seed=seed)
    t0 = time.perf_counter()
    post = nngp.train_posterior(arch, split)
    t_post = time.perf_counter() - t0
    functions = realistic_functions(post, n_functions, seed)
    print(f"MNIST m={m} k={k}: kernel + EP on S {t_post:.2f} s (log P(S) = {post.log_ps:.3f}, "
          f"{post.n_iter} iterations, converged={post.converged}); {len(functions)} distinct functions "
          f"(signs of draws from q(g_E|S)); GP test error {nngp.gp_test_error(arch, split, posterior=post):.3f}")

    t0 = time.perf_counter()
    cond = nngp.log_pb_details(arch, split, functions, method="ep-conditional", posterior=post)
    t_cond = time.perf_counter() - t0
    print(f"ep-conditional: {t_cond:.2f} s for {len(functions)} functions (+ the shared EP on S above); "
          f"converged {cond.converged.sum()}/{len(functions)}, median iterations {np.median(cond.n_iter):.0f}")

    sub = np.random.default_rng(seed).choice(len(functions), size=min(n_ep, len(functions)), replace=False)
    t0 = time.perf_counter()
    full = nngp.log_pb_details(arch, split, [functions[i] for i in sub], method="ep", posterior=post)
    t_ep = time.perf_counter() - t0
    per_f = t_ep / len(sub)
    t_ep_all = per_f * len(functions)
    diff = np.abs(full.log_pb - cond.log_pb[sub])
    print(f"ep (per function): {t_ep:.2f} s for a random subset of {len(sub)} functions ({per_f:.3f} s each), "
          f"EXTRAPOLATED to {len(functions)}: {t_ep_all:.1f} s; converged {full.converged.sum()}/{len(sub)}")
    print(f"speed ratio ep / ep-conditional (same functions, EP on S counted for ep-conditional): "
          f"{t_ep_all / (t_cond + t_post):.1f}x  (excluding the shared EP on S: {t_ep_all / t_cond:.1f}x)")
    print(f"|log P_B(ep) - log P_B(ep-conditional)| over the {len(sub)} functions: median {np.median(diff):.4f}, "
          f"90% {np.quantile(diff, 0.9):.4f}, max {diff.max():.4f} (log P_B range {full.log_pb.min():.2f} .. "
          f"{full.log_pb.max():.2f}); mean signed diff {np.mean(full.log_pb - cond.log_pb[sub]):+.4f}")


def large(m: int, k: int, n_functions: int, seed: int, device: str = "cpu") -> None:
    arch = sampler.FCN(depth=2, width=512, activation="relu", sigma_w=1.0, sigma_b=0.0357)
    pool = sampler.load_pool("mnist")
    if m + k > pool.size:
        m = pool.size - k
        print(f"(the shipped MNIST pool has {pool.size} images: m reduced to {m})")
    split = sampler.load_split("mnist", n_train=m, n_test=k, seed=seed)
    dev = torch.device(device)
    if dev.type == "cuda":
        nngp.kernel(arch, split.x_all()[:500], device=dev)  # warm-up: CUDA context, kernels' first launch
        t0 = time.perf_counter()
        K_cpu = nngp.kernel(arch, split.x_all())
        t_cpu = time.perf_counter() - t0
        print(f"kernel on the CPU ({torch.get_num_threads()} threads), n={m + k}: {t_cpu:.2f} s")
    t0 = time.perf_counter()
    K = nngp.kernel(arch, split.x_all(), device=dev)
    _sync(dev)
    t_k = time.perf_counter() - t0
    if dev.type == "cuda":
        err = float((K.cpu() - K_cpu).abs().max() / K_cpu.abs().max())
        print(f"kernel on {dev} ({torch.cuda.get_device_name(dev)}), n={m + k}: {t_k:.3f} s, "
              f"{t_cpu / t_k:.0f}x the CPU; max |GPU - CPU| / max |K| = {err:.1e}")
    t1 = time.perf_counter()
    post = nngp.train_posterior(arch, split, K=K)
    t_post = time.perf_counter() - t1
    print(f"EP on S (m={m}) on {dev}: {t_post:.1f} s, {post.n_iter} iterations, converged={post.converged}, "
          f"log P(S) = {post.log_ps:.4f}", flush=True)
    functions = realistic_functions(post, n_functions, seed)
    t1 = time.perf_counter()
    res = nngp.log_pb_details(arch, split, functions, method="ep-conditional", posterior=post)
    t_f = time.perf_counter() - t1
    total = time.perf_counter() - t0
    print(f"large: m={m} k={k}, {len(functions)} functions, device {dev}: kernel {t_k:.2f} s, EP on S {t_post:.1f} s "
          f"({post.n_iter} iterations, converged={post.converged}, log P(S) = {post.log_ps:.2f}), "
          f"functions {t_f:.1f} s; total {total:.1f} s (targets: CPU < 300 s; GPU kernel < 1 s, EP on S < 20 s); "
          f"converged {res.converged.sum()}/{len(functions)}")


def scale_check(m: int, seed: int) -> None:
    """EP on S on K and on K scaled by 1e-8 and 1e8, timed side by side (CPU time of this process)."""
    arch = sampler.FCN(depth=2, width=512, activation="relu", sigma_w=1.0, sigma_b=0.0357)
    split = sampler.load_split("mnist", n_train=m, n_test=10, seed=seed)
    K = nngp.kernel(arch, split.x_all())
    times, results = {}, {}
    for scale in (1.0, 1e-8, 1e8):
        t0 = time.process_time()
        results[scale] = nngp.train_posterior(arch, split, K=K * scale)
        times[scale] = time.process_time() - t0
    for scale, post in results.items():
        print(f"EP on S, m={m}, K x {scale:g}: {times[scale]:.2f} s CPU, {post.n_iter} iterations, "
              f"converged={post.converged}, log P(S) = {post.log_ps:.6f}")
    print(f"scale check: time ratio K x 1e-8 / K = {times[1e-8] / times[1.0]:.2f}, K x 1e8 / K = "
          f"{times[1e8] / times[1.0]:.2f}; max |log P(S) difference| = "
          f"{max(abs(r.log_ps - results[1.0].log_ps) for r in results.values()):.2e}")


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--m", type=int, default=1000)
    p.add_argument("--k", type=int, default=100)
    p.add_argument("--functions", type=int, default=1000)
    p.add_argument("--ep-subset", type=int, default=50, help="functions run with per-f ep (timed, extrapolated)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--large", action="store_true", help="also time m = 10^4 with 10^4 functions")
    p.add_argument("--large-only", action="store_true")
    p.add_argument("--scale-check", action="store_true", help="EP on S at m = 2000 on K, K * 1e-8 and K * 1e8")
    p.add_argument("--quick", action="store_true", help="small sizes, under a minute")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: leave the default)")
    p.add_argument("--device", default="cpu", help="--large: where the kernel and the EP on S run (cpu or cuda)")
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    if a.quick:
        compare(300, 50, 300, 10, a.seed)
        large(2000, 100, 1000, a.seed)
        scale_check(300, a.seed)
        return
    if a.scale_check:
        scale_check(2000, a.seed)
        return
    if not a.large_only:
        compare(a.m, a.k, a.functions, a.ep_subset, a.seed)
    if a.large or a.large_only:
        large(10_000 - a.k, a.k, 10_000, a.seed, a.device)


if __name__ == "__main__":
    main()
