"""The GPU check in one call: CUDA tests, the ensemble engine at the paper's size, the NNGP kernel and
the EP on S in float64, and a reduced paper experiment, with one JSON of every figure.

Written for a GPU machine lent for a short window (one command of at most 10 minutes; no network):
it runs from the repository root with that machine's ``python3`` and ``PYTHONPATH=.`` (the wrapper
``benchmarks/device_check.sh`` adds the carried wheels), installs nothing, and gives each step its
own time limit in a child process, so a step that fails or overruns is recorded and the next one runs.

Steps (``--only`` picks some, e.g. to rerun a failing one):

1. ``pytest``: ``pytest -m cuda`` on the CUDA test files; the summary line is recorded.
2. ``train``: FCN 2x512 on MNIST m = 9,900, batch 128, SGD lr 0.01 (the paper's setting): runs to 100%
   per second at 2-3 ensemble sizes, TFLOP/s of training matmuls against the GPU's own batched-matmul
   rate at the ensemble's shapes, hours per 10^5 runs; under TF32 (the engine's default) and under full
   float32 at the largest size measured.
3. ``kernel_ep``: the FCN's NNGP kernel on 10^4 inputs and the EP on S at m = 9,900, both float64 on the
   device, beside the CPU figures README records (222 s in all on the 2-core CPU, 191 s of it the EP).
4. ``experiment``: ``sgdbayes run configs/paper/mnist_fcn.toml`` at m = 9,900, k = 100, with as many SGD
   runs as fit in the step's budget at the rate step 2 measured; the summary and the P_SGD-vs-P_B figure.

Outputs under ``--out`` (the device tool's ``$OUT``; at most 8 files come back): ``device_check.json``
(every figure, per step: status, seconds, limit), ``device_check.log`` (every child's output), the
figure ``psgd_vs_pb.png`` and the run's ``summary.json``. A short table is printed at the end.

    PYTHONPATH=. python3 benchmarks/device_check.py --out "$OUT"            # on the GPU machine
    PYTHONPATH=. python benchmarks/device_check.py --device cpu --tiny --out /tmp/dc   # the dry run here
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STEPS = ("pytest", "train", "kernel_ep", "experiment")


@dataclass(frozen=True)
class Sizes:
    """The problem sizes of one mode (the GPU machine, or ``--tiny`` for the dry run on a CPU)."""

    n_train: int            # m of the training benchmark, the EP on S and the experiment
    width: int              # FCN hidden width (depth 2)
    ensembles: tuple        # ensemble sizes timed under TF32
    kernel_inputs: int      # inputs of the kernel timing
    limits: dict            # seconds per step
    experiment_min_runs: int
    experiment_max_runs: int
    lr: float = 0.01        # the paper's; the dry run's larger rate makes runs fit in a few epochs
    max_epochs: int = 400


GPU = Sizes(n_train=9900, width=512, ensembles=(512, 1024, 2048), kernel_inputs=10_000,
            limits={"pytest": 75, "train": 130, "kernel_ep": 75, "experiment": 150}, experiment_min_runs=1024,
            experiment_max_runs=200_000)
TINY = Sizes(n_train=200, width=32, ensembles=(8, 16), kernel_inputs=300,
             limits={"pytest": 120, "train": 60, "kernel_ep": 60, "experiment": 120}, experiment_min_runs=32,
             experiment_max_runs=64,
             lr=0.1, max_epochs=100)


# --- steps (each runs in a child process: ``device_check.py --step NAME``) ---------------------------

def step_pytest(args, sizes: Sizes) -> dict:
    files = sorted(str(p.relative_to(ROOT)) for p in ROOT.glob("tests/*/test_*cuda*.py"))
    cmd = [sys.executable, "-m", "pytest", "-m", "cuda", "-q", "-p", "no:cacheprovider", *files]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    print(proc.stdout[-6000:], proc.stderr[-3000:], sep="\n")
    lines = [ln for ln in proc.stdout.strip().splitlines() if ln.strip()]
    summary = lines[-1].strip("= ") if lines else "(no output)"
    # pytest: 0 all passed, 5 nothing collected/everything deselected; both are a result worth recording
    return {"command": " ".join(cmd[2:]), "summary": summary, "returncode": proc.returncode,
            "ok": proc.returncode in (0, 5)}


def _train_once(arch, split, spec, e, device, tf32):
    import torch

    from sampler.sgd import train_runs
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda *a: None)
    sync()
    t0 = time.perf_counter()
    table = train_runs(arch, split, spec, seed=0, start=0, stop=e, ensemble=e, device=device, tf32=tf32)
    sync()
    return table, time.perf_counter() - t0


def step_train(args, sizes: Sizes) -> dict:
    import sampler
    from sampler.sgd import TrainSpec, resolve_device, train_runs
    from sgd_ensemble import ensemble_matmul_tflops, matmul_flops_per_example

    device = resolve_device(args.device)
    split = sampler.load_split("mnist", n_train=sizes.n_train, n_test=100, seed=0)
    arch = sampler.FCN(depth=2, width=sizes.width, activation="relu", sigma_w=1.0, sigma_b=0.0357)
    spec = TrainSpec(optimizer="sgd", lr=sizes.lr, batch_size=128, max_epochs=sizes.max_epochs)
    per_example = matmul_flops_per_example(split.x_train.shape[1], sizes.width, 2)
    shapes = [split.x_train.shape[1], sizes.width, sizes.width, 1]
    train_runs(arch, split, spec, seed=99, start=0, stop=4, ensemble=4, device=device)  # warm-up
    result = {"setting": f"{arch.describe()}, MNIST m={split.n_train}, k=100, batch 128, sgd lr {sizes.lr}",
              "device": _device_name(device), "rows": [], "ok": True}
    budget = sizes.limits["train"] * 0.6  # leave room for the float32 comparison
    t_start, rows = time.perf_counter(), result["rows"]
    # float32 right after the first size, so that both precisions are measured even if time runs short
    plan = [(sizes.ensembles[0], True), (sizes.ensembles[0], False)] + [(e, True) for e in sizes.ensembles[1:]]
    for e, tf32 in plan:
        if rows and time.perf_counter() - t_start + 2.2 * rows[-1]["seconds"] * e / rows[-1]["ensemble"] > budget:
            break  # the next size would not fit the step's budget
        table, t = _train_once(arch, split, spec, e, device, tf32=tf32)
        peak = ensemble_matmul_tflops(e, spec.batch_size, shapes, device) if tf32 else None
        rows.append(_row(table, t, e, "tf32" if tf32 else "float32", split.n_train, per_example, peak))
        best = max((r for r in rows if r["precision"] == "tf32"), key=lambda r: r["runs_per_s"])
        result.update(best_runs_per_s=best["runs_per_s"], best_ensemble=best["ensemble"],
                      runs_per_hour=best["runs_per_s"] * 3600)
        _save(args, "train", result)  # kept if a later size overruns the step's limit
        print(rows[-1], flush=True)
    return result


def _row(table, seconds, e, precision, m, per_example, peak):
    epochs = table.column("epochs").to_pylist()
    fit = int(sum(table.column("fit").to_pylist()))
    rate = fit / seconds
    tflops = sum(epochs) * m * per_example / seconds / 1e12
    return {"precision": precision, "ensemble": e, "fit": fit, "seconds": round(seconds, 3),
            "runs_per_s": rate, "mean_epochs": sum(epochs) / e, "tflops": tflops,
            "matmul_tflops_at_shapes": peak, "fraction_of_matmul": (tflops / peak) if peak else None,
            "hours_per_1e5_runs": (1e5 / rate / 3600) if rate else None}


def step_kernel_ep(args, sizes: Sizes) -> dict:
    import torch

    import nngp
    import sampler
    from sampler.sgd import resolve_device

    device = resolve_device(args.device)
    arch = sampler.FCN(depth=2, width=512, activation="relu", sigma_w=1.0, sigma_b=0.0357)
    pool = sampler.load_pool("mnist")
    n = min(sizes.kernel_inputs, pool.size)
    split = sampler.load_split("mnist", n_train=n - 100, n_test=100, seed=0)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda *a: None)
    nngp.kernel(arch, split.x_all()[:64], device=device)  # warm-up (CUDA context, first launches)
    sync()
    t0 = time.perf_counter()
    K = nngp.kernel(arch, split.x_all(), device=device)
    sync()
    t_kernel = time.perf_counter() - t0
    print(f"kernel n={n} on {device}: {t_kernel:.3f} s, dtype {K.dtype}", flush=True)
    t0 = time.perf_counter()
    post = nngp.train_posterior(arch, split, K=K)
    sync()
    t_ep = time.perf_counter() - t0
    print(f"EP on S m={split.n_train}: {t_ep:.2f} s, {post.n_iter} iterations, converged={post.converged}, "
          f"log P(S) = {post.log_ps:.4f}", flush=True)
    return {"device": _device_name(device), "kernel_inputs": n, "kernel_seconds": t_kernel,
            "kernel_dtype": str(K.dtype), "ep_m": split.n_train, "ep_seconds": t_ep, "ep_iterations": post.n_iter,
            "ep_converged": bool(post.converged), "log_ps": float(post.log_ps),
            "cpu_reference": "README: 222 s on the 2-core CPU for kernel + EP on S (191 s) + 10^4 functions",
            "ok": bool(post.converged)}


def step_experiment(args, sizes: Sizes) -> dict:
    rate = _previous(args, "train").get("best_runs_per_s") or 0.0
    budget = sizes.limits["experiment"] * 0.5  # the rest: data, kernel, EP, report
    ensemble = _previous(args, "train").get("best_ensemble") or sizes.ensembles[0]
    n_runs = max(sizes.experiment_min_runs, int(rate * budget) // ensemble * ensemble)
    n_runs = min(n_runs, sizes.experiment_max_runs)
    run_dir = Path(args.work) / "run"
    cmd = [sys.executable, "-m", "sgdbayes.cli", "run", str(ROOT / "configs/paper/mnist_fcn.toml"),
           "--out", str(run_dir), "--set", f"data.n_train={sizes.n_train}",
           "--set", f"estimators.sgd.n_runs={n_runs}", "--set", f"estimators.sgd.ensemble={min(ensemble, n_runs)}",
           "--set", f"estimators.sgd.shard_size={n_runs}", "--set", f"estimators.sgd.device={args.device}",
           "--set", f"estimators.ep.device={args.device}", "--set", f"arch.width={sizes.width}",
           "--set", f"estimators.sgd.lr={sizes.lr}", "--set", f"estimators.sgd.max_epochs={sizes.max_epochs}"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    print(proc.stdout[-6000:], proc.stderr[-6000:], sep="\n")
    out = {"command": " ".join(cmd[2:]), "n_runs": n_runs, "seconds": seconds, "returncode": proc.returncode,
           "ok": proc.returncode == 0}
    summary = run_dir / "summary.json"
    if summary.exists():
        data = json.loads(summary.read_text())
        shutil.copy(summary, Path(args.out) / "summary.json")
        out["summary"] = {k: v for k, v in data.items() if isinstance(v, (int, float, str))}
        figure = data.get("figures", {}).get("psgd_vs_pb")
        if figure and (run_dir / figure).exists():
            shutil.copy(run_dir / figure, Path(args.out) / "psgd_vs_pb.png")
            out["figure"] = figure
    return out


def _save(args, step: str, result: dict) -> None:
    Path(args.work, f"{step}.json").write_text(json.dumps(result, indent=1, default=str))


def _previous(args, step: str) -> dict:
    path = Path(args.work) / f"{step}.json"
    return json.loads(path.read_text()) if path.exists() else {}


def _device_name(device) -> str:
    import torch
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


STEP_FUNCTIONS = {"pytest": step_pytest, "train": step_train, "kernel_ep": step_kernel_ep,
                  "experiment": step_experiment}


# --- the driver -----------------------------------------------------------------------------------

def run_step(name: str, args, sizes: Sizes, log) -> dict:
    """Run one step in a child process under its time limit; never raises."""
    limit = sizes.limits[name] * args.limit_scale
    cmd = [sys.executable, str(Path(__file__).resolve()), "--step", name, "--device", args.device,
           "--out", args.out, "--work", args.work] + (["--tiny"] if args.tiny else [])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(ROOT), str(ROOT / "benchmarks")] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    t0 = time.perf_counter()
    log.write(f"\n===== step {name} (limit {limit:.0f} s) =====\n")
    log.flush()
    try:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, timeout=limit)
        status = "ok" if proc.returncode == 0 else f"failed (exit {proc.returncode})"
    except subprocess.TimeoutExpired:
        status = f"timed out after {limit:.0f} s"
    seconds = time.perf_counter() - t0
    result = _previous(args, name)
    if status == "ok" and not result.get("ok", False):
        status = "failed (see its figures)"
    result.update(status=status, seconds=round(seconds, 1), limit_s=limit)
    log.write(f"===== step {name}: {status} in {seconds:.1f} s =====\n")
    log.flush()
    return result


def environment() -> dict:
    import torch
    env = {"python": sys.version.split()[0], "torch": torch.__version__, "cuda_available": torch.cuda.is_available(),
           "host": platform.node()}
    if torch.cuda.is_available():
        env.update(gpu=torch.cuda.get_device_name(0), cuda=torch.version.cuda,
                   gpu_memory_gib=round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1))
    for mod in ("numpy", "scipy", "pyro", "arviz", "pydantic", "gpytorch", "pyarrow", "tomli_w"):
        try:
            with warnings.catch_warnings():  # arviz announces its refactor on import
                warnings.simplefilter("ignore")
                env[mod] = __import__(mod).__version__
        except ImportError as e:
            env[mod] = f"missing ({e})"
    return env


def table(results: dict) -> str:
    rows = [f"{'step':12s} {'status':28s} {'seconds':>8s}  figures"]
    for name, r in results["steps"].items():
        rows.append(f"{name:12s} {r['status'][:28]:28s} {r['seconds']:8.1f}  {_headline(name, r)}")
    return "\n".join(rows)


def _headline(name: str, r: dict) -> str:
    if name == "pytest":
        return r.get("summary", "")
    if name == "train" and r.get("rows"):
        return (f"best {r['best_runs_per_s']:.2f} runs/s (ensemble {r['best_ensemble']}), "
                f"{1e5 / r['best_runs_per_s'] / 3600:.2f} h per 10^5 runs" if r["best_runs_per_s"] else "no run fit")
    if name == "kernel_ep" and "kernel_seconds" in r:
        return (f"kernel n={r['kernel_inputs']} {r['kernel_seconds']:.2f} s; EP m={r['ep_m']} {r['ep_seconds']:.1f} s "
                f"(converged {r['ep_converged']})")
    if name == "experiment" and "n_runs" in r:
        s = r.get("summary", {})
        keys = [k for k in ("n_fit", "n_functions", "pearson_log", "log_p_s", "dist_tv") if s.get(k) is not None]
        return f"{r['n_runs']} runs; " + ", ".join(f"{k} {s[k]:.4g}" for k in keys)
    return ""


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda", help="cuda (the GPU machine) or cpu (the dry run)")
    p.add_argument("--tiny", action="store_true", help="the dry run's sizes (seconds on a CPU)")
    p.add_argument("--quick", action="store_true", help="`make bench`: --device cpu --tiny --only train,kernel_ep")
    p.add_argument("--out", default=os.environ.get("OUT", "device_check_out"), help="folder for the outputs")
    p.add_argument("--only", default=",".join(STEPS), help=f"comma-separated steps among {', '.join(STEPS)}")
    p.add_argument("--limit-scale", type=float, default=1.0, help="multiply every step's time limit")
    p.add_argument("--step", choices=STEPS, help=argparse.SUPPRESS)
    p.add_argument("--work", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.device, args.tiny, args.only = "cpu", True, "train,kernel_ep"
    sizes = TINY if args.tiny else GPU
    if args.step:  # child: run one step, write its JSON
        _save(args, args.step, STEP_FUNCTIONS[args.step](args, sizes))
        return 0
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = sorted(set(only) - set(STEPS))
    if unknown:
        p.error(f"--only: unknown steps {unknown}; expected some of {list(STEPS)}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = {"mode": "tiny" if args.tiny else "gpu", "device": args.device, "environment": environment(),
               "steps": {}}
    with tempfile.TemporaryDirectory(prefix="device_check_") as work, open(out / "device_check.log", "w") as log:
        args.work = work
        for name in only:
            results["steps"][name] = run_step(name, args, sizes, log)
            (out / "device_check.json").write_text(json.dumps(results, indent=1, default=str))
            print(f"{name}: {results['steps'][name]['status']} in {results['steps'][name]['seconds']:.1f} s",
                  flush=True)
    print(json.dumps(results["environment"]))
    print(table(results))
    return 0 if all(r["status"] == "ok" for r in results["steps"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
