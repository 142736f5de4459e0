"""What each kind of shard task does (the workers' side of sampler/distributed.py).

Each function takes a :class:`~sgdbayes.fanout.ShardTask` and the run folder, computes its
piece of the experiment from the config alone (so any node can run it), writes exactly one
shard atomically and returns how many items (runs, functions) it holds.
"""

from __future__ import annotations

import functools
import socket
import time

import pyarrow as pa

from sgdbayes.config import DataConfig, ExperimentConfig, parse_config
from sampler.data import Split, corrupt_labels, load_split
from sampler.store import RunFolder


def split_for(data: DataConfig) -> Split:
    """The split an experiment's ``[data]`` section describes (label corruption included)."""
    split = load_split(data.dataset, n_train=data.n_train, n_test=data.n_test, seed=data.seed,
                       binarize=data.binarize, data_dir=data.data_dir or None,
                       target=(data.target or None) if data.dataset == "boolean" else None)
    if data.corrupt_fraction > 0:
        split = corrupt_labels(split, data.corrupt_fraction, seed=data.seed)
    return split


def train_spec_for(config: ExperimentConfig):
    """The ``sampler.sgd.TrainSpec`` of an experiment's ``[sgd]`` section."""
    from sampler.sgd import TrainSpec

    s = config.sgd
    return TrainSpec(optimizer=s.optimizer, lr=s.lr, batch_size=s.batch_size, loss=s.loss, momentum=s.momentum,
                     max_epochs=s.max_epochs, epochs_after_fit=s.epochs_after_fit,
                     check_every=s.check_every or None)


def sgd_task(task, folder: RunFolder, progress=None) -> int:
    """Train runs ``params['start']`` to ``params['stop']`` and write their per-run rows."""
    from sampler.sgd import resolve_device, train_runs

    config = parse_config(task.config)
    start, stop = int(task.params["start"]), int(task.params["stop"])
    t0 = time.perf_counter()
    device = str(resolve_device(config.sgd.device))
    table = train_runs(config.arch, split_for(config.data), train_spec_for(config), seed=config.sgd.seed,
                       start=start, stop=stop, ensemble=config.sgd.ensemble, device=device, progress=progress)
    folder.write_shard("sgd", task.index, table, node=socket.gethostname(), device=device,
                       seconds=time.perf_counter() - t0, start=start, stop=stop)
    return stop - start


@functools.lru_cache(maxsize=1)
def train_posterior_for(arch, data: DataConfig):
    """The EP fit on S of an experiment's ``arch`` and ``[data]``, computed once per process.

    Every P_B shard of a run, and the driver's log P(S), need the same fit; at m = 10^4 it costs
    about 3 minutes on the 2-core machine (benchmarks/log_pb.py --large-only), so a worker that
    runs several shards computes it once. One entry only: the fit holds the (m + k)^2 kernel
    and its Cholesky factor (1.6 GB at m = 10^4). The cache never changes a result.
    """
    import nngp

    return nngp.train_posterior(arch, split_for(data))


def bayes_task(task, folder: RunFolder, progress=None) -> int:
    """log P_B(f|S) for the functions in ``params['functions']``; rows ``function``, ``log_pb``."""
    import nngp

    config = parse_config(task.config)
    functions = list(task.params["functions"])
    t0 = time.perf_counter()
    log_pb = nngp.log_pb(config.arch, split_for(config.data), functions, method=config.bayes.method,
                         posterior=train_posterior_for(config.arch, config.data))
    table = pa.table({"function": pa.array(functions, pa.string()), "log_pb": pa.array(log_pb, pa.float64())})
    folder.write_shard("bayes", task.index, table, node=socket.gethostname(),
                       seconds=time.perf_counter() - t0, method=config.bayes.method)
    return len(functions)


TASK_KINDS = {"sgd": sgd_task, "bayes": bayes_task}
