"""Benchmark: EP's bias in log P(S) against minimax tilting, by m, dataset and the correlations of K.

For each dataset and training-set size m, the NNGP kernel of the paper's FCN (2x512 relu,
sigma_w = 1, sigma_b = 0.0357) on S, then ``log P(S)`` by EP (``nngp.orthant(method="ep")``) and
by minimax tilting (unbiased, with a Monte Carlo standard error) side by side, and the difference
EP - tilting in nats with the tilting standard error. ``rho`` is the mean off-diagonal correlation
of K (how strongly the inputs are correlated under the prior), ``rho_max`` the largest. Issue 26
saw EP low by 0.15 nats on the Boolean constant target (m = 32) and by 0.08 on the default MNIST
run (m = 100).

Then, on MNIST m = 100, the bias in log P_B(f|S) by k: ``ep-conditional`` (one EP on S, then a
k-dimensional EP under q(g_E|S)) against tilting on the full (m + k)-dimensional orthant minus
tilting's log P(S), for the posterior mean's sign pattern and 1-3 bit flips of it.

    python benchmarks/ep_bias.py           # Boolean (m = 16, 32, 64), MNIST and digits (m = 25 .. 400)
    python benchmarks/ep_bias.py --quick   # a few sizes, well under a minute
"""

from __future__ import annotations

import argparse
import time

import torch

import nngp
import sampler

ARCH = sampler.FCN(depth=2, width=512, activation="relu", sigma_w=1.0, sigma_b=0.0357)


def one(dataset: str, m: int, seed: int, n_samples: int, **kw) -> None:
    split = sampler.load_split(dataset, n_train=m, n_test=1, seed=seed, **kw)
    K = nngp.kernel(ARCH, split.x_train)
    d = torch.diagonal(K).sqrt()
    corr = K / (d[:, None] * d[None, :])
    off = corr[~torch.eye(m, dtype=torch.bool)]
    t0 = time.process_time()
    ep = nngp.orthant(K, split.y_train, method="ep")
    t_ep = time.process_time() - t0
    t0 = time.process_time()
    ti = nngp.orthant(K, split.y_train, method="tilting", seed=seed, n_samples=n_samples)
    t_ti = time.process_time() - t0
    label = dataset + (f" ({kw['target']})" if "target" in kw else "")
    print(f"{label:22s} m={m:4d}  rho={float(off.mean()):.3f} rho_max={float(off.max()):.4f}  "
          f"EP {ep.log_prob:10.4f} ({ep.n_iter} it, converged={ep.converged})  tilting {ti.log_prob:10.4f} "
          f"+- {ti.stderr:.4f}  EP - tilting {ep.log_prob - ti.log_prob:+.4f}  "
          f"(CPU s: EP {t_ep:.2f}, tilting {t_ti:.2f})", flush=True)


def by_k(m: int, ks, n_functions: int, seed: int, n_samples: int) -> None:
    """log P_B(f|S): ep-conditional against tilting (full orthant minus log P(S)), for each k."""
    import numpy as np

    rng = np.random.default_rng(seed)
    for k in ks:
        split = sampler.load_split("mnist", n_train=m, n_test=k, seed=seed)
        post = nngp.train_posterior(ARCH, split)
        base = (post.pred_mean > 0).numpy().astype(np.int64)
        fs = [base] + [base ^ np.isin(np.arange(k), rng.choice(k, size=rng.integers(1, 4), replace=False))
                       for _ in range(n_functions - 1)]
        strings = ["".join(map(str, f)) for f in fs]
        ep = nngp.log_pb(ARCH, split, strings, method="ep-conditional", posterior=post)
        K = post.K
        lps = nngp.orthant(K[:m, :m], split.y_train, method="tilting", seed=seed, n_samples=n_samples)
        diffs, ses = [], []
        for i, f in enumerate(fs):
            y = torch.cat([split.y_train, torch.from_numpy(f)])
            t = nngp.orthant(K, y, method="tilting", seed=seed + 1 + i, n_samples=n_samples)
            diffs.append(ep[i] - (t.log_prob - lps.log_prob))
            ses.append(float(np.hypot(t.stderr, lps.stderr)))
        print(f"mnist m={m} k={k:4d}: log P_B(f|S), ep-conditional - tilting over {len(fs)} functions: mean "
              f"{np.mean(diffs):+.4f}, range {min(diffs):+.4f} .. {max(diffs):+.4f} (tilting se {min(ses):.4f} .. "
              f"{max(ses):.4f})", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="a few small sizes, under a minute")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-samples", type=int, default=20000, help="tilting samples per estimate")
    a = p.parse_args()
    if a.quick:
        cases = [("boolean", 32, {"target": "constant"}), ("mnist", 50, {}), ("digits", 50, {})]
        n_samples = 5000
    else:
        cases = ([("boolean", m, {"target": t}) for t in ("constant", "majority") for m in (16, 32, 64)]
                 + [(ds, m, {}) for ds in ("mnist", "digits") for m in (25, 50, 100, 200, 400)])
        n_samples = a.n_samples
    for dataset, m, kw in cases:
        one(dataset, m, a.seed, n_samples, **kw)
    by_k(100, (10,) if a.quick else (10, 30, 100), 3 if a.quick else 5, a.seed, n_samples)


if __name__ == "__main__":
    main()
