"""Cost of measuring sharpness against the cost of training, side by side in one run.

Trains the same runs twice with the ensemble engine (:func:`sampler.sgd.iter_runs`), once plainly and
once with the ``measure`` hook (:func:`sampler.sharpness.make_measure`), and prints the CPU seconds of
each and their ratio, then the cost of each measure alone on the trained members. Default: the
``configs/flatness.toml`` setup (MNIST m = 100, FCN 2x40 relu, SGD lr 0.01, batch 32).

    python benchmarks/sharpness.py            # 64 runs
    python benchmarks/sharpness.py --quick    # 16 runs, well under a minute
"""

from __future__ import annotations

import argparse
import time

import torch

from sampler import FCN, TrainSpec, load_split, make_generator
from sampler.sgd import iter_runs
from sampler.sharpness import MEASURES, MeasureSpec, make_measure, measure_all


def cpu_seconds(fn):
    t0 = time.process_time()
    out = fn()
    return time.process_time() - t0, out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="16 runs (well under a minute)")
    ap.add_argument("--runs", type=int, default=64)
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--optimizer", default="sgd")
    ap.add_argument("--rescale-alpha", type=float, default=5.0)
    ap.add_argument("--probes", type=int, default=16, help="Hutchinson probes (configs/flatness.toml: 16)")
    ap.add_argument("--lanczos", type=int, default=10, help="Lanczos steps (configs/flatness.toml: 10)")
    ap.add_argument("--measures", nargs="+", choices=MEASURES, default=list(MEASURES[:3]),
                    help="measured during training (default: configs/flatness.toml's three)")
    args = ap.parse_args(argv)
    n = 16 if args.quick else args.runs
    split = load_split("mnist", n_train=100, n_test=50, seed=0)
    arch = FCN(depth=2, width=40, activation="relu")
    train = TrainSpec(optimizer=args.optimizer, lr=args.lr, batch_size=32, max_epochs=2000)
    spec = MeasureSpec(measures=tuple(args.measures), rescale_alpha=args.rescale_alpha, probes=args.probes,
                       iterations=args.lanczos)
    members: dict = {}

    def plain():
        return list(iter_runs(arch, split, train, range(n), seed=0, ensemble=n, keep_members=range(n),
                              members=members))

    def measured():
        return list(iter_runs(arch, split, train, range(n), seed=0, ensemble=n,
                              measure=make_measure(arch, split, spec)))

    t_train, chunks = cpu_seconds(plain)
    t_both, _ = cpu_seconds(measured)
    fit = sum(int(c.fit.sum()) for c in chunks)
    epochs = sum(float(c.epochs[c.fit].sum()) for c in chunks) / max(fit, 1)
    print(f"{n} runs ({fit} fit, mean {epochs:.0f} epochs), torch threads {torch.get_num_threads()}; CPU seconds:")
    print(f"  training alone           {t_train:8.2f}")
    print(f"  training + measures      {t_both:8.2f}   ({', '.join(spec.measures)}, rescaled too: "
          f"{t_both - t_train:.2f} s)")
    print(f"  ratio (measured / plain) {t_both / t_train:8.2f}")
    net = arch.network(split.input_shape, dtype=torch.float64)
    params = [torch.stack([p.detach().double() for p in ps])
              for ps in zip(*(list(members[r].parameters()) for r in sorted(members)))]
    x, y = split.x_train.double(), split.y_train
    for m in MEASURES:  # each alone, unrescaled
        one = MeasureSpec(measures=(m,), probes=args.probes, iterations=args.lanczos)
        t, _ = cpu_seconds(lambda: measure_all(net, params, x, y, one,
                                               generator=[make_generator(0, "sharpness", r) for r in range(n)]))
        print(f"  {m:<24} {t:8.2f} s for {n} members ({t / max(t_train, 1e-9):.3f} x training)")


if __name__ == "__main__":
    main()
