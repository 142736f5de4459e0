"""Runs trained to 100% per second: the ensemble engine against a loop of plain torch.optim models.

Two settings from issue 4, measured side by side in one run on this machine:

- Boolean system: FCN 7-40-40-1 (relu), m = 64, batch 8, ensemble 256, SGD: per-model overhead
  dominates;
- MNIST: FCN 784-40-40-1 (relu), m = 1000, batch 128, ensemble 256, SGD: arithmetic dominates.
  Also printed: the FLOP/s the engine reaches, as a fraction of this machine's own matmul
  throughput (a large float32 ``torch.mm``) measured in the same run. FLOPs counted: matmuls of
  forward and backward of the training steps (``2 * examples * (fwd + weight-grad + input-grad
  multiply-adds)``), for the examples each member processes; accuracy checks, gathers and
  elementwise work are not counted but their time is, so the fraction is conservative.

Both sides train the *same* runs (same initialisation, same minibatch order, same stopping
rule: whole-training-set accuracy at each epoch's end); the loop trains the first runs of the
engine's set, one ``torch.optim.SGD`` model at a time (``sampler.sgd.reference_run``).
Throughput = fitted runs / wall seconds. The last line is ``speedup X`` for the Boolean setting.

    python benchmarks/sgd_ensemble.py            # full
    python benchmarks/sgd_ensemble.py --quick    # under a minute: MNIST with lr 0.3, ensemble 64
"""

from __future__ import annotations

import argparse
import time

import torch

import sampler
from sampler.sgd import TrainSpec, reference_run, train_runs


def matmul_gflops(seconds: float, device: torch.device, n: int = 1024) -> float:
    """Sustained float32 GFLOP/s of an ``n x n x n`` matmul on ``device``."""
    a = torch.randn(n, n, device=device, generator=torch.Generator(device).manual_seed(0))
    b = torch.randn(n, n, device=device, generator=torch.Generator(device).manual_seed(1))
    c = torch.empty(n, n, device=device)
    for _ in range(3):
        torch.mm(a, b, out=c)
    _sync(device)
    reps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        torch.mm(a, b, out=c)
        reps += 1
        if device.type == "cuda" and reps % 20:
            continue
        _sync(device)
    _sync(device)
    return 2 * n ** 3 * reps / (time.perf_counter() - t0) / 1e9


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_flops_per_example(d: int, width: int, depth: int) -> int:
    """Matmul FLOPs of one example's forward + backward through an FCN (no input-gradient for x)."""
    sizes = [d] + [width] * depth + [1]
    layers = list(zip(sizes[:-1], sizes[1:]))
    fwd = sum(a * b for a, b in layers)
    wgrad = fwd
    igrad = sum(a * b for a, b in layers[1:])
    return 2 * (fwd + wgrad + igrad)


def measure(name, arch, split, spec, *, n_runs, n_loop, ensemble, device, seed=0):
    # One-time costs (autograd engine start-up, allocator warm-up) kept out of both timings.
    reference_run(arch, split, spec, seed=seed + 1, run=0)
    train_runs(arch, split, spec, seed=seed + 1, start=0, stop=8, ensemble=8, device=device)
    t0 = time.perf_counter()
    table = train_runs(arch, split, spec, seed=seed, start=0, stop=n_runs, ensemble=ensemble, device=device)
    t_engine = time.perf_counter() - t0
    fit = table.column("fit").to_pylist()
    epochs = table.column("epochs").to_pylist()
    funcs = table.column("function").to_pylist()
    t0 = time.perf_counter()
    ref = [reference_run(arch, split, spec, seed=seed, run=i) for i in range(n_loop)]
    t_loop = time.perf_counter() - t0
    loop_fit = sum(r["fit"] for r in ref)
    same = sum(r["function"] == funcs[i] and r["fit"] == fit[i] for i, r in enumerate(ref))
    rate_engine = sum(fit) / t_engine
    rate_loop = loop_fit / t_loop
    mean_epochs = sum(epochs) / len(epochs)
    print(f"[{name}] {arch.describe()}, m={split.n_train}, batch {spec.batch_size}, {spec.optimizer} "
          f"lr {spec.lr}, ensemble {ensemble}, device {device}")
    print(f"  engine: {sum(fit)}/{n_runs} runs fit in {t_engine:.2f} s -> {rate_engine:.2f} runs/s "
          f"(mean epochs {mean_epochs:.1f})")
    print(f"  loop  : {loop_fit}/{n_loop} runs fit in {t_loop:.2f} s -> {rate_loop:.2f} runs/s "
          f"(same function and fit as the engine: {same}/{n_loop})")
    ratio = rate_engine / rate_loop if rate_loop > 0 else float("nan")
    print(f"  ratio engine/loop: {ratio:.1f}x")
    return ratio, t_engine, epochs


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer runs; finishes in under a minute")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (default 1: on a shared machine, spinning OpenMP threads "
                             "waiting for a busy core slowed both sides many-fold; 0 = torch's default)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    parser.add_argument("--ensemble", type=int, default=256)
    parser.add_argument("--paper", action="store_true",
                        help="also the paper's setting on MNIST: FCN 2x512, m=10^4, batch 128 (for a GPU)")
    parser.add_argument("--only", choices=("mnist", "boolean"), help="measure one setting only")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = sampler.sgd.resolve_device(args.device)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {device}"
          + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""))

    if args.only != "boolean":
        mnist_setting(args, device)
    if args.only != "mnist":
        boolean_setting(args, device)


def mnist_setting(args, device):
    # MNIST: arithmetic-bound.
    mnist = sampler.load_split("mnist", n_train=1000, n_test=100, seed=0)
    arch = sampler.FCN(depth=2, width=40)
    spec = TrainSpec(optimizer="sgd", lr=0.3 if args.quick else 0.1, batch_size=128, max_epochs=300)
    m_ensemble = min(args.ensemble, 64) if args.quick else args.ensemble
    gflops = matmul_gflops(1.0 if args.quick else 3.0, device)
    _, t_engine, epochs = measure("MNIST", arch, mnist, spec, n_runs=m_ensemble, n_loop=2 if args.quick else 6,
                                  ensemble=m_ensemble, device=device)
    flops = sum(epochs) * mnist.n_train * matmul_flops_per_example(784, 40, 2)
    achieved = flops / t_engine / 1e9
    print(f"  engine {achieved:.1f} GFLOP/s of matmul work; machine matmul (1024^3 float32 mm) "
          f"{gflops:.1f} GFLOP/s -> {100 * achieved / gflops:.0f}% of matmul throughput")

    if args.paper:
        big = sampler.load_split("mnist", n_train=10_000, n_test=100, seed=0)
        parch = sampler.FCN(depth=2, width=512, activation="relu", sigma_w=1.0, sigma_b=0.0357)
        pspec = TrainSpec(optimizer="sgd", lr=0.01, batch_size=128, max_epochs=100)
        t0 = time.perf_counter()
        table = train_runs(parch, big, pspec, seed=0, start=0, stop=args.ensemble, ensemble=args.ensemble,
                           device=device)
        t = time.perf_counter() - t0
        ep = table.column("epochs").to_pylist()
        fit = sum(table.column("fit").to_pylist())
        pflops = sum(ep) * big.n_train * matmul_flops_per_example(784, 512, 2) / t / 1e9
        print(f"[paper] {parch.describe()}, m=10^4, batch 128, sgd lr 0.01: {fit}/{len(ep)} fit in {t:.1f} s "
              f"-> {fit / t:.2f} runs/s, {pflops:.0f} GFLOP/s = {100 * pflops / gflops:.0f}% of measured matmul")


def boolean_setting(args, device):
    # Boolean: overhead-bound.
    arch = sampler.FCN(depth=2, width=40)
    boolean = sampler.load_split("boolean", n_train=64, n_test=64, seed=0, target="majority")
    bspec = TrainSpec(optimizer="sgd", lr=0.1, batch_size=8, max_epochs=500)
    ratio, _, _ = measure("Boolean", arch, boolean, bspec, n_runs=args.ensemble * (1 if args.quick else 4),
                          n_loop=6 if args.quick else 48, ensemble=args.ensemble, device=device)
    print(f"speedup {ratio:.1f}")


if __name__ == "__main__":
    main()
