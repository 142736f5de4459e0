"""Runs trained to 100% per second: the ensemble engine against a loop of plain torch.optim models.

Three settings, each measured side by side in one run on this machine (issues 4 and 27):

- Boolean system: FCN 7-40-40-1 (relu), m = 64, batch 8, ensemble 256, SGD: per-model overhead
  dominates;
- MNIST: FCN 784-40-40-1 (relu), m = 1000, batch 128, ensemble 256, SGD: arithmetic dominates.
  Also printed: the FLOP/s the engine reaches, as a fraction of this machine's own matmul
  throughput (a large float32 ``torch.mm``) measured in the same run. FLOPs counted: matmuls of
  forward and backward of the training steps (``2 * examples * (fwd + weight-grad + input-grad
  multiply-adds)``), for the examples each member processes; accuracy checks, gathers and
  elementwise work are not counted but their time is, so the fraction is conservative.

- Span (first; ``--only span`` alone): the default experiment's SGD stage (``configs/default.toml``:
  MNIST m = 100, k = 20, FCN 2x64, SGD lr 0.1, batch 32, ensemble 512) trained with the first layer
  in the span of the split's inputs (``span=None``, automatic: r = 120 of d = 784) and in input
  coordinates (``span=False``), the same runs (``--runs``, 128 with ``--quick``) one path after the
  other; prints wall and CPU seconds of each and their ratio (goal >= 3x), and how many runs both
  paths' counts share (float32: rounding may flip a few functions).

Both sides train the *same* runs (same initialisation, same minibatch order, same stopping
rule: whole-training-set accuracy at each epoch's end); the loop trains the first runs of the
engine's set, one ``torch.optim.SGD`` model at a time (``sampler.sgd.reference_run``).
Throughput = fitted runs / wall seconds. The last line is ``speedup X`` for the Boolean setting.

    python benchmarks/sgd_ensemble.py            # full
    python benchmarks/sgd_ensemble.py --quick    # under a minute: MNIST with lr 0.3, ensemble 64
    python benchmarks/sgd_ensemble.py --only span --threads 2    # span vs full path, default experiment
"""

from __future__ import annotations

import argparse
import contextlib
import time
from pathlib import Path

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


def generic_twin(arch):
    """The same FCN as a user's own module (``sgdbayes.examples:mlp``): trained by the generic
    vmap path; under the standard initialisation run i starts from the same values."""
    return sampler.Module(factory="sgdbayes.examples:mlp",
                          kwargs={"depth": arch.depth, "width": arch.width, "activation": arch.activation},
                          init="standard", sigma_w=arch.sigma_w, sigma_b=arch.sigma_b)


def measure(name, arch, split, spec, *, n_runs, n_loop, ensemble, device, seed=0, generic=False):
    # One-time costs (autograd engine start-up, allocator warm-up) kept out of every timing.
    reference_run(arch, split, spec, seed=seed + 1, run=0)
    train_runs(arch, split, spec, seed=seed + 1, start=0, stop=8, ensemble=8, device=device)
    t0 = time.perf_counter()
    table = train_runs(arch, split, spec, seed=seed, start=0, stop=n_runs, ensemble=ensemble, device=device)
    t_engine = time.perf_counter() - t0
    fit = table.column("fit").to_pylist()
    epochs = table.column("epochs").to_pylist()
    funcs = table.column("function").to_pylist()
    rate_generic = None
    if generic:
        twin = generic_twin(arch)
        train_runs(twin, split, spec, seed=seed + 1, start=0, stop=8, ensemble=8, device=device)
        t0 = time.perf_counter()
        gtable = train_runs(twin, split, spec, seed=seed, start=0, stop=n_runs, ensemble=ensemble, device=device)
        t_generic = time.perf_counter() - t0
        gfit = gtable.column("fit").to_pylist()
        gsame = sum(a == b for a, b in zip(gtable.column("function").to_pylist(), funcs))
        rate_generic = sum(gfit) / t_generic
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
    if rate_generic is not None:
        print(f"  generic module path (vmap over sgdbayes.examples:mlp): {sum(gfit)}/{n_runs} fit in {t_generic:.2f} s "
              f"-> {rate_generic:.2f} runs/s (same function as the hand-written path: {gsame}/{n_runs})")
        print(f"  ratio generic/loop: {rate_generic / rate_loop:.1f}x; generic/hand-written: "
              f"{rate_generic / rate_engine:.2f}x")
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
                        help="only the paper's setting on MNIST: FCN 2x512, m=9900, batch 128 (for a GPU)")
    parser.add_argument("--ensembles", default="512,1024,2048",
                        help="--paper: ensemble sizes to time (comma-separated)")
    parser.add_argument("--precision-runs", type=int, default=256,
                        help="--paper: runs trained under each precision policy to compare their functions (0: skip)")
    parser.add_argument("--only", choices=("mnist", "boolean", "span"),
                        help="measure one setting only (span: the first layer in the span of the inputs vs not, "
                             "on configs/default.toml's SGD stage)")
    parser.add_argument("--runs", type=int, default=1024, help="--only span: runs trained on each path")
    parser.add_argument("--generic", action="store_true",
                        help="also train the same FCN as a user module through the generic vmap path")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = sampler.sgd.resolve_device(args.device)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {device}"
          + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""))

    if args.paper:
        paper_setting(args, device)
        return
    if args.only in (None, "span"):
        span_setting(args, device)
    if args.only in (None, "mnist"):
        mnist_setting(args, device)
    if args.only in (None, "boolean"):
        boolean_setting(args, device)


def span_setting(args, device):
    """configs/default.toml's SGD stage with and without the span fast path, side by side."""
    from sampler.sgd import sgd_shard
    from sampler.store import shard_meta
    from sgdbayes.config import load_config

    config = load_config(Path(__file__).resolve().parents[1] / "configs" / "default.toml")
    case = config.cases()[0]
    options = next(e.options for e in case.estimators if e.method == "sgd")
    spec, split = options.train_spec(), case.split()
    n_runs = min(args.runs, 128) if args.quick else args.runs
    ensemble = min(options.ensemble, n_runs)
    print(f"[span] configs/default.toml: {case.arch.describe()}, m={split.n_train}, k={split.n_test}, "
          f"{spec.optimizer} lr {spec.lr} batch {spec.batch_size}, ensemble {ensemble}, {n_runs} runs per path")
    sgd_shard(case.arch, split, spec, seed=1, start=0, stop=8, ensemble=8, device=device)  # warm-up
    times, functions = {}, {}
    for span in (None, False):
        t0, c0 = time.perf_counter(), time.process_time()
        table = sgd_shard(case.arch, split, spec, seed=options.seed, start=0, stop=n_runs, ensemble=ensemble,
                          device=device, span=span)
        _sync(device)
        times[span] = (time.perf_counter() - t0, time.process_time() - c0)
        info = shard_meta(table)[1]
        functions[span] = dict(zip(table.column("function").to_pylist(), table.column("count").to_pylist()))
        print(f"  first layer {info['first_layer']:4s} (rank {info['span_rank']}, d {info['input_dim']}): "
              f"{times[span][0]:.2f} s wall, {times[span][1]:.2f} s CPU; {sum(functions[span].values())} fit, "
              f"{len(functions[span])} functions ({info['first_layer_reason']})")
    common = sum(min(c, functions[False].get(f, 0)) for f, c in functions[None].items())
    print(f"  runs whose function both paths count (multiset overlap): {common}/{n_runs}")
    print(f"  CPU-time ratio full/span: {times[False][1] / times[None][1]:.2f}x")
    print(f"  speedup {times[False][0] / times[None][0]:.2f}x (wall, full/span)")


def mnist_setting(args, device):
    # MNIST: arithmetic-bound.
    mnist = sampler.load_split("mnist", n_train=1000, n_test=100, seed=0)
    arch = sampler.FCN(depth=2, width=40)
    spec = TrainSpec(optimizer="sgd", lr=0.3 if args.quick else 0.1, batch_size=128, max_epochs=300)
    m_ensemble = min(args.ensemble, 64) if args.quick else args.ensemble
    gflops = matmul_gflops(1.0 if args.quick else 3.0, device)
    _, t_engine, epochs = measure("MNIST", arch, mnist, spec, n_runs=m_ensemble, n_loop=2 if args.quick else 6,
                                  ensemble=m_ensemble, device=device, generic=args.generic)
    flops = sum(epochs) * mnist.n_train * matmul_flops_per_example(784, 40, 2)
    achieved = flops / t_engine / 1e9
    print(f"  engine {achieved:.1f} GFLOP/s of matmul work; machine matmul (1024^3 float32 mm) "
          f"{gflops:.1f} GFLOP/s -> {100 * achieved / gflops:.0f}% of matmul throughput")



PAPER_ARCH = sampler.FCN(depth=2, width=512, activation="relu", sigma_w=1.0, sigma_b=0.0357)
PAPER_SPEC = TrainSpec(optimizer="sgd", lr=0.01, batch_size=128, max_epochs=400)


def ensemble_matmul_tflops(e: int, b: int, sizes: list[int], device: torch.device, reps: int = 20) -> float:
    """TFLOP/s of one training step's batched matmuls at the ensemble's own shapes.

    Forward ``(E, B, d_in) @ (E, d_in, d_out)`` per layer, weight gradients ``(E, d_out, B) @ (E, B, d_in)``,
    input gradients ``(E, B, d_out) @ (E, d_out, d_in)`` (not for the first layer), on random data,
    with the engine's precision settings (TF32 on CUDA), timed with CUDA events after a warm-up.
    """
    g = torch.Generator(device).manual_seed(0)
    layers = list(zip(sizes[:-1], sizes[1:]))[:-1]  # the hidden layers; the width-1 readout is not a matmul
    acts = [torch.randn(e, b, a, device=device, generator=g) for a, _ in layers]
    ws = [torch.randn(e, o, a, device=device, generator=g) for a, o in layers]
    dz = [torch.randn(e, b, o, device=device, generator=g) for _, o in layers]

    def step():
        for h, w in zip(acts, ws):
            torch.bmm(h, w.transpose(1, 2))
        for i, (h, d, w) in enumerate(zip(acts, dz, ws)):
            torch.bmm(d.transpose(1, 2), h)
            if i:
                torch.bmm(d, w)

    flops = 2 * e * b * sum(a * o * (3 if i else 2) for i, (a, o) in enumerate(layers))
    with sampler.sgd._tf32(device):
        for _ in range(3):
            step()
        _sync(device)
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(reps):
                step()
            end.record()
            end.synchronize()
            seconds = start.elapsed_time(end) / 1e3
        else:
            t0 = time.perf_counter()
            for _ in range(reps):
                step()
            seconds = time.perf_counter() - t0
    return flops * reps / seconds / 1e12


def paper_setting(args, device):
    """The paper's MNIST setting: runs to 100% per second, TFLOP/s, fraction of the same GPU's
    matmul throughput at the ensemble's shapes, extrapolation to 10^5 runs; then how the
    precision policy (TF32, full float32, bf16 autocast, float64) changes the functions."""
    split = sampler.load_split("mnist", n_train=9900, n_test=100, seed=0)
    arch, spec = PAPER_ARCH, PAPER_SPEC
    m = split.n_train
    per_example = matmul_flops_per_example(784, 512, 2)
    print(f"[paper] {arch.describe()}, m={m} (shipped MNIST pool), k=100, batch 128, sgd lr {spec.lr}")
    train_runs(arch, split, spec, seed=99, start=0, stop=4, ensemble=4, device=device)  # warm-up
    rows = []
    for e in [int(v) for v in args.ensembles.split(",") if v]:
        peak = ensemble_matmul_tflops(e, spec.batch_size, [784, 512, 512, 1], device)
        _sync(device)
        t0 = time.perf_counter()
        table = train_runs(arch, split, spec, seed=0, start=0, stop=e, ensemble=e, device=device)
        _sync(device)
        t = time.perf_counter() - t0
        epochs = table.column("epochs").to_pylist()
        fit = sum(table.column("fit").to_pylist())
        tflops = sum(epochs) * m * per_example / t / 1e12
        rate = fit / t
        rows.append((e, fit, t, rate, sum(epochs) / len(epochs), tflops, peak))
        print(f"  ensemble {e}: {fit}/{e} fit in {t:.1f} s -> {rate:.2f} runs/s; mean epochs {sum(epochs) / e:.1f}; "
              f"{tflops:.1f} TFLOP/s of training matmuls; matmul at these shapes {peak:.1f} TFLOP/s "
              f"-> {100 * tflops / peak:.0f}%; 10^5 runs would take {1e5 / rate / 3600:.2f} h", flush=True)
    if args.precision_runs:
        precision_study(split, arch, spec, args.precision_runs, device)
    if not rows:
        return
    print("ensemble  fit/runs  seconds  runs/s  epochs  TFLOP/s  matmul-TFLOP/s  fraction  h-per-1e5-runs")
    for e, fit, t, rate, ep, tf, peak in rows:
        print(f"{e:8d}  {fit:4d}/{e:<4d} {t:8.1f} {rate:7.2f} {ep:7.1f} {tf:8.1f} {peak:14.1f} {tf / peak:9.2f} "
              f"{1e5 / rate / 3600:14.2f}")


def precision_study(split, arch, spec, n, device):
    """Train the same ``n`` runs under each precision policy; compare their functions on E with
    full-float32 training (per run: same function or not, Hamming distance) and the fraction fit."""
    policies = {"fp32 (highest)": (torch.float32, False, None),
                "tf32 (engine)": (torch.float32, True, None),
                "bf16 autocast": (torch.float32, True, torch.bfloat16),
                "float64": (torch.float64, False, None)}
    out = {}
    for name, (dtype, tf32, autocast) in policies.items():
        ctx = torch.autocast(device.type, dtype=autocast) if autocast else contextlib.nullcontext()
        t0 = time.perf_counter()
        with ctx:
            table = train_runs(arch, split, spec, seed=0, start=0, stop=n, ensemble=n, device=device, dtype=dtype,
                               tf32=tf32)
        _sync(device)
        out[name] = (table.column("function").to_pylist(), table.column("fit").to_pylist(), time.perf_counter() - t0)
    ref, ref_fit, _ = out["fp32 (highest)"]
    print(f"[precision] {n} runs, each policy against full float32 (same runs, same seeds):")
    for name, (funcs, fit, t) in out.items():
        same = sum(a == b for a, b in zip(funcs, ref))
        ham = [sum(x != y for x, y in zip(a, b)) for a, b in zip(funcs, ref)]
        print(f"  {name:15s}: fit {sum(fit)}/{n}, same function as fp32 {same}/{n}, mean Hamming distance "
              f"{sum(ham) / n:.2f} of 100 bits, {t:.1f} s")


def boolean_setting(args, device):
    # Boolean: overhead-bound.
    arch = sampler.FCN(depth=2, width=40)
    boolean = sampler.load_split("boolean", n_train=64, n_test=64, seed=0, target="majority")
    bspec = TrainSpec(optimizer="sgd", lr=0.1, batch_size=8, max_epochs=500)
    ratio, _, _ = measure("Boolean", arch, boolean, bspec, n_runs=args.ensemble * (1 if args.quick else 4),
                          n_loop=6 if args.quick else 48, ensemble=args.ensemble, device=device, generic=args.generic)
    print(f"speedup {ratio:.1f}")


if __name__ == "__main__":
    main()
