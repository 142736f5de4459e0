"""P_SGD(f|S): train many networks at once, each to 100% training accuracy, and count their functions.

One engine (:func:`iter_runs`) serves :func:`train_runs` (one row per run), :func:`sgd_shard` (a
count shard, the unit of work of :func:`sample_sgd` and of the pipeline's ``sgd`` estimator) and
:func:`sample_sgd`; :func:`reference_run` is the same run trained alone with ``torch.optim``.

The engine trains an ensemble of ``E`` networks as stacked parameters (:mod:`sampler.ensemble`):
one batched forward pass, one backward pass (hand-written for relu FCNs, autograd otherwise), one
batched optimiser step (:mod:`sampler.optimizers`). A finished member is replaced by the next run.

Run ``i`` is a pure function of ``(seed, i)``, the architecture, the split and the :class:`TrainSpec`:
its initialisation is ``arch.build(split.input_shape, generator=make_generator(seed, "init", i))``;
its minibatch order, at each epoch's start, ``torch.randperm(m, generator=g)`` with ``g =
make_generator(seed, "batches", i)`` created once for the run, cut into consecutive batches of
``batch_size`` (the last one smaller, like a ``DataLoader`` without ``drop_last``).

So results do not depend on the ensemble size, the shard layout or the executor on the same
device type (checked bit for bit on the CPU for relu FCNs with every optimiser). Caveat: torch's
CPU kernels for tanh, erf and sigmoid round the last bit differently in their vectorised body and
scalar tail, so with those activations, LSTMs and possibly CNNs a trajectory can depend on the
ensemble size at the level of rounding; on CUDA, cuBLAS may pick kernels by ensemble size.

Losses (mean over the minibatch, per member; :func:`sampler.ensemble.pointwise_loss`): ``ce`` on 0/1
labels, ``mse`` on targets ``2y - 1`` in {-1, +1}, so that ``1{output > 0}`` sits between the two.

Stopping: a run has *fit* S when every training example is classified right (``1{output > 0} ==
y``), checked on the whole training set at each epoch's end (as in the paper) or every
``check_every`` steps. It then trains ``epochs_after_fit`` more epochs and its function on E is
read. A run that has not fit after ``max_epochs`` epochs ends unfit. A run whose outputs or loss
become non-finite ends unfit with ``final_loss = nan`` and a ``RuntimeWarning`` says how many did.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import warnings
from collections import Counter
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import numpy as np
import pyarrow as pa
import torch
import torch.nn.functional as F

from . import _span
from .checks import DEVICES, check_choice, check_device, check_int  # noqa: F401 (DEVICES: public here too)
from .architectures import Architecture, check_arch_split
from .data import Split
from .ensemble import LOSSES, pointwise_loss  # noqa: F401 (pointwise_loss: public here too)
from .functions import FunctionCounts, outputs_to_strings
from .optimizers import EnsembleOptimizer, check_rule, torch_optimizer
from .seeding import make_generator
from .store import ShardProgress, count_table, fingerprint, merge_shards, run_shards, split_digest

#: How a run ends (:attr:`TrainSpec.stop`): at 100% training accuracy, or after a fixed budget of epochs.
STOPS = ("fit", "budget")


@dataclass(frozen=True)
class TrainSpec:
    """How each run is trained.

    Attributes
    ----------
    optimizer : {"sgd", "adam", "adagrad", "adadelta", "rmsprop"}
        ``torch.optim`` rule with its default hyper-parameters (see :mod:`sampler.optimizers`).
    lr : float
        Learning rate (> 0).
    batch_size : int
        Minibatch size (>= 1, and <= m, checked when training).
    loss : {"ce", "mse"}
        Logistic loss on 0/1 labels, or squared error on -1/+1 targets.
    momentum : float
        SGD momentum (>= 0; only with ``optimizer="sgd"``).
    max_epochs : int
        A run that has not fit after this many epochs ends unfit (>= 1).
    epochs_after_fit : int
        Epochs trained after fitting before the function is read (>= 0). A run that no longer
        fits S at the end of them is reported ``fit = False`` (its ``epochs`` still says when
        it first fit): P_SGD(f|S) counts only functions that fit S.
    check_every : int or None
        None: check training accuracy on the whole training set at each epoch's end (the
        paper's way); N >= 1: every N steps (and at ``max_epochs``).
    stop : {"fit", "budget"}
        ``fit`` (default): stop at 100% training accuracy, as above. ``budget``: every run trains
        exactly ``max_epochs`` epochs whether or not it fits S (the fixed budget of double-descent
        experiments); ``fit`` then says whether it fits S at the end, and only those runs' functions
        are counted. Needs ``epochs_after_fit = 0`` and ``check_every = None``.
    """

    optimizer: str = "sgd"
    lr: float = 0.1
    batch_size: int = 32
    loss: str = "ce"
    momentum: float = 0.0
    max_epochs: int = 200
    epochs_after_fit: int = 0
    check_every: int | None = None
    stop: str = "fit"

    def __post_init__(self):
        check_rule(self.optimizer, self.lr, self.momentum)
        check_int("batch_size", self.batch_size, minimum=1)
        check_choice("loss", self.loss, LOSSES)
        check_int("max_epochs", self.max_epochs, minimum=1)
        check_int("epochs_after_fit", self.epochs_after_fit, minimum=0)
        if self.check_every is not None:
            if not isinstance(self.check_every, bool) and self.check_every == 0:
                raise ValueError("check_every must be None (check at each epoch's end) or an integer >= 1, "
                                 "got check_every=0")
            check_int("check_every", self.check_every, minimum=1)
        check_choice("stop", self.stop, STOPS)
        if self.stop == "budget" and (self.epochs_after_fit or self.check_every is not None):
            raise ValueError(f"stop='budget' trains max_epochs epochs and reads the end: it needs epochs_after_fit=0 "
                             f"and check_every=None, got epochs_after_fit={self.epochs_after_fit}, "
                             f"check_every={self.check_every}")

    def to_dict(self) -> dict:
        """The fields as a dict, ``stop`` left out at its default ``fit`` (fingerprints from before it
        existed stay valid)."""
        d = dataclasses.asdict(self)
        if d["stop"] == "fit":
            del d["stop"]
        return d

    def check_train_size(self, m: int) -> None:
        """Raise ``ValueError`` if ``batch_size`` exceeds the training set size ``m``."""
        if self.batch_size > m:
            raise ValueError(f"batch_size must be <= the training set size m={m}, got batch_size={self.batch_size}")

    def steps_per_epoch(self, m: int) -> int:
        """Minibatches per epoch, ``ceil(m / batch_size)``."""
        return math.ceil(m / self.batch_size)


# losses ------------------------------------------------------------------------------------------
_LANES = 64  # a multiple of every CPU vector width torch uses, in elements


def member_losses(outputs: torch.Tensor, labels: torch.Tensor, loss: str,
                  weights: torch.Tensor | None = None) -> torch.Tensor:
    """Mean loss of each member over its examples: ``(E, n)`` outputs -> ``(E,)``.

    ``labels`` are ``(E, n)`` or ``(n,)`` 0/1; ``weights`` ``(E, n)`` (0 for padding) or None.

    Rows are padded to a multiple of 64 elements before the elementwise loss: torch's CPU
    kernels compute transcendental functions (exp, log, sigmoid) slightly differently in their
    vectorised body and in the scalar tail, and which elements fall in the tail depends on the
    tensor's total size; with padded rows no element does (for up to two threads), so a
    member's loss and gradient do not depend on how many members share the tensor.
    """
    outputs, labels, weights, _ = _lane_padded(outputs, labels, weights)
    return (pointwise_loss(outputs, labels, loss) * weights).sum(1) / weights.sum(1)


def _lane_padded(outputs, labels, weights):
    """``(outputs, labels (E, n), weights (E, n), n)`` with rows zero-padded to a multiple of ``_LANES``."""
    e, n = outputs.shape
    labels = labels.expand(e, n)
    if weights is None:
        weights = outputs.new_ones(e, n)
    pad = -n % _LANES
    if pad:
        outputs, labels, weights = (F.pad(t, (0, pad)) for t in (outputs, labels, weights))
    return outputs, labels, weights, n


def member_loss_grads(outputs: torch.Tensor, labels: torch.Tensor, loss: str,
                      weights: torch.Tensor | None = None) -> torch.Tensor:
    """Gradient of :func:`member_losses` of each member with respect to its own outputs: ``(E, n)``.

    ``ce``: ``w (sigmoid(o) - y) / sum(w)``; ``mse``: ``2 w (o - (2y - 1)) / sum(w)``. Rows are
    padded to 64 elements as in :func:`member_losses`, for the same reason (sigmoid).
    """
    outputs, labels, weights, n = _lane_padded(outputs.detach(), labels.to(outputs.dtype), weights)
    if loss == "ce":
        g = torch.sigmoid(outputs).sub_(labels)
    else:
        g = (outputs - (2 * labels - 1)).mul_(2)
    return g.mul_(weights).div_(weights.sum(1, keepdim=True))[:, :n]


def reference_loss(outputs: torch.Tensor, labels: torch.Tensor, loss: str) -> torch.Tensor:
    """The mean minibatch loss with plain torch losses (what a lone torch.optim run uses)."""
    y = labels.to(outputs.dtype)
    if loss == "ce":
        return F.binary_cross_entropy_with_logits(outputs, y)
    return F.mse_loss(outputs, 2 * y - 1)


def resolve_device(device) -> torch.device:
    """``"cpu"``, ``"cuda"`` (or ``"cuda:N"``, a ``torch.device``) or ``"auto"`` -> a torch.device
    (:func:`sampler.checks.check_device`, the one device check)."""
    return check_device(device)


@contextlib.contextmanager
def _tf32(device: torch.device, enabled: bool = True):
    """Allow TF32 matmuls and convolutions on CUDA while training (``enabled``); restore the settings after."""
    if not (enabled and device.type == "cuda"):
        yield
        return
    saved = (torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32)
    torch.set_float32_matmul_precision("high")
    torch.backends.cudnn.allow_tf32 = True
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(saved[0])
        torch.backends.cudnn.allow_tf32 = saved[1]


def _to_device(t: torch.Tensor, dev: torch.device) -> torch.Tensor:
    """``t`` on ``dev``; to a GPU through pinned memory without blocking the host (the copy is
    ordered on the stream, and torch's pinned-memory cache keeps the buffer until it is done)."""
    if dev.type != "cuda":
        return t.to(dev)
    return t.pin_memory().to(dev, non_blocking=True)


_EVAL_ELEMENTS = 1 << 27  # activations (members x points x width) per chunk of a whole-set evaluation


# the engine -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RunsChunk:
    """Runs that finished together, in no particular run order: ``runs`` int64, ``functions`` (bitstrings
    on E), ``fit`` (reached, and after ``epochs_after_fit`` kept, 100% training accuracy), ``epochs``
    int32 (to fit, started epochs when ``check_every`` is set, or ``max_epochs``), ``final_loss`` float64
    (mean over the whole training set at the end; nan if it diverged); ``first_layer`` how the first
    layer was trained (``FirstLayer.info()`` of :mod:`sampler._span`); ``measures``: with a ``measure``
    hook, ``{name: (n,) float64}`` of the trained members (nan for runs that did not fit); at the end of
    each run (fitted or not): ``train_error`` and ``test_error`` (fractions of S and E misclassified) and
    ``test_loss`` (mean loss on E, as ``final_loss`` on S), float64, nan where it diverged."""

    runs: np.ndarray
    functions: list
    fit: np.ndarray
    epochs: np.ndarray
    final_loss: np.ndarray
    first_layer: dict = dataclasses.field(default_factory=dict)
    measures: dict = dataclasses.field(default_factory=dict)
    train_error: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0))
    test_error: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0))
    test_loss: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0))


def iter_runs(arch: Architecture, split: Split, spec: TrainSpec, runs: Sequence[int], *, seed: int,
              ensemble: int = 256, device="cpu", dtype: torch.dtype = torch.float32, tf32: bool = True,
              keep_members: Sequence[int] = (), members: dict | None = None,
              on_step: Callable | None = None, span: bool | None = None,
              measure: Callable | None = None) -> Iterator[RunsChunk]:
    """Train ``runs`` (run indices) in an ensemble of ``ensemble`` networks; yield results as they finish.

    Parameters
    ----------
    runs : sequence of int
        Run indices (>= 0); each is trained exactly once.
    seed : int
        Seeds initialisation and minibatch order together with the run index (module docstring).
    ensemble : int
        Networks trained at once (memory ~ ``ensemble * batch_size * width`` activations).
    device : "cpu", "cuda", "auto" or torch.device
    dtype : torch.float32 (default) or torch.float64 (for exact comparisons)
    tf32 : bool
        On CUDA, float32 matmuls and convolutions in TF32 (10-bit mantissa inputs, float32
        accumulation): several times faster. False: full float32. Ignored on the CPU.
        ``benchmarks/sgd_ensemble.py --paper`` measures how much either changes the functions.
    keep_members, members
        For the runs listed in ``keep_members``, ``members[run]`` receives the trained network
        (a plain torch module on the CPU) when it finishes.
    on_step : callable, optional
        ``on_step(runs, params)`` after every optimiser step: ``runs`` (E,) int64 array of the
        run in each member slot (-1 for an idle slot), ``params`` the stacked parameters (do not
        modify them). For step-by-step tests. Forces the full path (``span``).
    span : bool or None
        Train the first layer in the span of the split's inputs (S and E), exact for SGD and momentum
        with a dense first layer (FCN), d / r times less first-layer arithmetic (:mod:`sampler._span`).
        None (default): where exact and ``r < d``; True: required (``ValueError`` where not exact);
        False: never. Each chunk's ``first_layer`` says which path ran and why.
    measure : callable, optional
        ``measure(runs, params) -> {name: (n,) array}`` on the runs that fit, at their stopping point
        (e.g. :func:`sampler.sharpness.make_measure`): ``runs`` their indices, ``params`` their stacked
        parameters (detached). Its values go to :attr:`RunsChunk.measures`. Forces the full path: the
        measures are those of the input-coordinate weights.
    """
    dev = _check_inputs(arch, split, spec, seed, ensemble, device, dtype)
    if isinstance(runs, range):  # kept lazy: 10^6 runs need no list
        if runs.step != 1 or (len(runs) and runs.start < 0):
            raise ValueError(f"runs must be a range of indices >= 0 with step 1, got {runs!r}")
    else:
        runs = [check_int("run index", r, minimum=0) for r in runs]
    keep = set(int(r) for r in keep_members)
    if keep and members is None:
        raise ValueError("keep_members needs a dict members to put the trained networks in")
    if not runs:
        return
    layer = _span.first_layer(arch, spec, split.x_train, split.x_test, span=span, on_step=on_step, measure=measure)
    with _tf32(dev, tf32):
        yield from _train(arch, split, spec, runs, seed, ensemble, dev, dtype, keep, members, on_step, layer,
                          measure)


def _check_inputs(arch, split, spec, seed, ensemble, device, dtype) -> torch.device:
    """The checks every entry point makes before training; returns the resolved device."""
    check_arch_split(arch, split)
    if not isinstance(spec, TrainSpec):
        raise TypeError(f"spec must be a TrainSpec, got {type(spec).__name__}")
    check_int("seed", seed, minimum=0)
    check_int("ensemble", ensemble, minimum=1)
    if dtype not in (torch.float32, torch.float64):
        raise TypeError(f"dtype must be torch.float32 or torch.float64, got {dtype!r}")
    spec.check_train_size(split.n_train)
    return resolve_device(device)


def _train(arch, split, spec, runs, seed, ensemble, dev, dtype, keep, members, on_step, layer, measure=None):
    path = layer.bind(arch, split.input_shape, dtype=dtype, device=dev)
    net = path.net
    info = layer.info()
    x = path.train_inputs(split.x_train)
    y = split.y_train.to(dev)
    y_bool = y.bool()
    yf = y.to(dtype)
    x_test = path.inputs(split.x_test)
    y_test_bool = split.y_test.to(dev).bool()
    y_test_f = split.y_test.to(device=dev, dtype=dtype)
    m, bs = split.n_train, spec.batch_size
    spe = spec.steps_per_epoch(m)
    max_steps = spec.max_epochs * spe
    after = spec.epochs_after_fit * spe
    every = spec.check_every

    size = min(ensemble, len(runs))
    params = [torch.zeros((size, *s), dtype=dtype, device=dev, requires_grad=True) for s in net.shapes]
    opt = EnsembleOptimizer(spec.optimizer, path.trained(params), lr=spec.lr, momentum=spec.momentum)
    slot_run = np.full(size, -1, dtype=np.int64)
    step = np.zeros(size, dtype=np.int64)
    fit_step = np.full(size, -1, dtype=np.int64)
    end_step = np.full(size, max_steps, dtype=np.int64)
    gens: list = [None] * size
    perms = torch.zeros((size, m), dtype=torch.long, device=dev)
    # Each member's position in its epoch (step % spe), kept on the device: computing the minibatch
    # offsets from a host array would copy it to the GPU at every step, and a blocking copy waits
    # for the queue to drain, which exposes every kernel launch.
    pos_dev = torch.zeros(size, dtype=torch.long, device=dev)
    arange_b = torch.arange(bs, device=dev)
    short = m - (spe - 1) * bs if m % bs else 0  # size of the last batch of an epoch when it is short
    next_run = 0
    n_diverged = 0
    x_buf = None

    def assign(slots: np.ndarray) -> None:
        nonlocal next_run
        k = min(len(slots), len(runs) - next_run)
        new, idle = slots[:k], slots[k:]
        batch = runs[next_run:next_run + k]
        next_run += k
        slot_run[idle] = -1
        if k:
            new_t = torch.as_tensor(new, device=dev)
            with torch.no_grad():
                for p, q in zip(params, path.init([make_generator(seed, "init", int(r)) for r in batch])):
                    p.index_copy_(0, new_t, q)
            opt.reset(new_t)
            pos_dev.index_fill_(0, new_t, 0)
            slot_run[new] = batch
            step[new] = 0
            fit_step[new] = -1
            end_step[new] = max_steps
            for j, r in zip(new.tolist(), batch):
                gens[j] = make_generator(seed, "batches", int(r))

    def subset(ps, sl):
        if len(sl) == len(slot_run):
            return [p.detach() for p in ps]
        index = torch.as_tensor(sl, device=dev)
        return [p.detach().index_select(0, index) for p in ps]

    def evaluate(ps, xx):
        # Members in chunks: at paper size all members on all 10^4 training points at once would
        # hold (E, m, width) activations, 20 GB for E = 1024, width 512.
        e = ps[0].shape[0]
        chunk = max(1, _EVAL_ELEMENTS // max(1, xx.shape[0] * net.units))
        if chunk >= e:
            return net.apply(ps, xx)
        return torch.cat([net.apply([p[a:a + chunk] for p in ps], xx) for a in range(0, e, chunk)])

    assign(np.arange(size))
    while True:
        active = slot_run >= 0
        if not active.any():
            break
        # Members at an epoch's start draw that epoch's order.
        pos = step % spe
        starting = np.nonzero(active & (pos == 0))[0]
        if starting.size:
            new_perms = torch.stack([torch.randperm(m, generator=gens[j]) for j in starting.tolist()])
            perms.index_copy_(0, _to_device(torch.from_numpy(starting), dev), _to_device(new_perms, dev))
        # Each member's minibatch, padded to batch_size with zero weights for a short last batch;
        # with checks at epoch ends, runs start and stop at epoch boundaries, so every member is in
        # phase and a short last batch is trained without padding, whatever the ensemble holds
        # (m = 100, batch 32: 100 rows an epoch instead of 128).
        cols = short if short and every is None and bool((pos[active] == spe - 1).all()) else bs
        offsets = (pos_dev * bs).unsqueeze(1) + arange_b[:cols]
        weights = (offsets < m).to(dtype)
        index = perms.gather(1, offsets.clamp_(max=m - 1))
        # Gathered into one reused buffer: a fresh (E*B, d) tensor per step costs more in page
        # faults than the gather itself (measured: 90 ms -> 14 ms for MNIST, E=256, B=128).
        rows = len(slot_run) * cols
        if x_buf is None or x_buf.shape[0] < rows:
            x_buf = torch.empty((rows, x.shape[1]), dtype=dtype, device=dev)
        xb = torch.index_select(x, 0, index.reshape(-1), out=x_buf[:rows]).view(len(slot_run), cols, -1)
        trained = path.trained(params)
        outputs, backward = net.forward_train(trained, xb)
        grads = backward(member_loss_grads(outputs, y[index], spec.loss, weights))
        opt.step(trained, grads)
        step += 1
        torch.remainder(pos_dev + 1, spe, out=pos_dev)
        if on_step is not None:
            on_step(slot_run.copy(), params)

        if spec.stop == "budget":  # read only at the end of the budget
            due = np.zeros(len(step), dtype=bool)
        elif every is None:
            due = step % spe == 0
        else:
            due = step % every == 0
        need = active & ((step == end_step) | ((fit_step < 0) & due))
        if not need.any():
            continue
        sl = np.nonzero(need)[0]
        with torch.no_grad():
            out = evaluate(path.trained(subset(params, sl)), x)
            right_t = (out > 0) == y_bool
            fits_t = right_t.all(1)
            train_error_t = 1.0 - right_t.double().mean(1)
            loss_t = member_losses(out, yf, spec.loss)
            finite_t = torch.isfinite(out).all(1) & torch.isfinite(loss_t)
        fits, loss, finite = fits_t.cpu().numpy(), loss_t.double().cpu().numpy(), finite_t.cpu().numpy()
        train_error = train_error_t.cpu().numpy()
        in_train = fit_step[sl] < 0
        newly = in_train & fits & finite
        fit_step[sl[newly]] = step[sl[newly]]
        end_step[sl[newly]] = step[sl[newly]] + after
        done = ~finite | (step[sl] >= end_step[sl])
        if not done.any():
            continue
        fin = sl[done]
        fitted = fit_step[fin] >= 0
        ok = fits[done] & finite[done] & fitted
        epochs = np.where(fitted, -(-fit_step[fin] // spe), spec.max_epochs).astype(np.int32)
        epochs = np.where(finite[done], epochs, -(-step[fin] // spe)).astype(np.int32)
        final_loss = np.where(finite[done], loss[done], np.nan)
        n_diverged += int((~finite[done]).sum())
        with torch.no_grad():
            out_test = evaluate(subset(params, fin), x_test)
            functions = outputs_to_strings(out_test)
            test_error = 1.0 - ((out_test > 0) == y_test_bool).double().mean(1).cpu().numpy()
            test_loss = member_losses(out_test, y_test_f, spec.loss).double().cpu().numpy()
        test_error = np.where(finite[done], test_error, np.nan)
        test_loss = np.where(finite[done], test_loss, np.nan)
        for j in fin.tolist():
            if int(slot_run[j]) in keep:
                members[int(slot_run[j])] = path.member(params, j, make_generator(seed, "init", int(slot_run[j])))
        # Measures are taken on the full parameters (the span path is off when measure is given:
        # _span.span_allowed): they are coordinate-dependent (a Hessian, a box in weight space).
        measures = {}
        if measure is not None and ok.any():
            got = measure(slot_run[fin[ok]].copy(), subset(params, fin[ok]))
            for name, v in got.items():
                measures[name] = np.full(len(fin), np.nan)
                measures[name][ok] = np.asarray(v, dtype=np.float64)
        yield RunsChunk(slot_run[fin].copy(), functions, ok, epochs, final_loss.astype(np.float64), dict(info),
                        measures, np.where(finite[done], train_error[done], np.nan), test_error, test_loss)

        assign(fin)
        # Once runs are used up, drop idle members so the tail trains only what is left.
        idle = slot_run < 0
        if next_run == len(runs) and idle.any() and idle.sum() * 4 >= len(slot_run) and not idle.all():
            kept = np.nonzero(~idle)[0]
            kept_t = torch.as_tensor(kept, device=dev)
            params = [p.detach().index_select(0, kept_t).requires_grad_() for p in params]
            opt.keep(kept_t)
            perms = perms.index_select(0, kept_t)
            pos_dev = pos_dev.index_select(0, kept_t)
            slot_run, step, fit_step, end_step = slot_run[kept], step[kept], fit_step[kept], end_step[kept]
            gens = [gens[j] for j in kept.tolist()]
    if n_diverged:
        warnings.warn(f"{n_diverged} of {len(runs)} runs diverged (non-finite outputs or loss; lr={spec.lr} too "
                      f"large?); they are reported as not fit with final_loss nan", RuntimeWarning, stacklevel=3)


# public API --------------------------------------------------------------------------------------
def _shard_chunks(arch, split, spec, seed, start, stop, progress, **kw) -> Iterator[RunsChunk]:
    """:func:`iter_runs` over runs ``[start, stop)``, telling ``progress`` as runs finish."""
    start, stop = check_int("start", start, minimum=0), check_int("stop", stop, minimum=0)
    if stop <= start:
        raise ValueError(f"stop must be > start, got start={start}, stop={stop}")
    prog = ShardProgress(progress)
    for chunk in iter_runs(arch, split, spec, range(start, stop), seed=seed, **kw):
        prog.add(len(chunk.runs), int(chunk.fit.sum()))
        yield chunk


def train_runs(arch: Architecture, split: Split, spec: TrainSpec, *, seed: int, start: int, stop: int,
               ensemble: int = 256, device="cpu", progress=None, dtype: torch.dtype = torch.float32,
               tf32: bool = True, span: bool | None = None) -> pa.Table:
    """Train runs ``start, ..., stop - 1``; one row per run. Parameters as in :func:`sgd_shard`.

    Returns
    -------
    pyarrow.Table
        Sorted by ``run``, columns ``run`` int64, ``function`` str (bitstring on ``split.x_test``),
        ``fit`` bool, ``epochs`` int32 (to fit, else ``max_epochs``), ``final_loss`` float64.
    """
    chunks = list(_shard_chunks(arch, split, spec, seed, start, stop, progress, ensemble=ensemble, device=device,
                                dtype=dtype, tf32=tf32, span=span))
    runs = np.concatenate([c.runs for c in chunks])
    order = np.argsort(runs, kind="stable")
    functions = [f for c in chunks for f in c.functions]
    return pa.table({
        "run": pa.array(runs[order], pa.int64()),
        "function": pa.array([functions[i] for i in order], pa.string()),
        **{name: pa.array(np.concatenate([getattr(c, name) for c in chunks])[order], kind)
           for name, kind in (("fit", pa.bool_()), ("epochs", pa.int32()), ("final_loss", pa.float64()))},
    })


def sgd_shard(arch: Architecture, split: Split, spec: TrainSpec, *, seed: int, start: int, stop: int,
              ensemble: int = 256, device="cpu", progress=None, dtype: torch.dtype = torch.float32,
              tf32: bool = True, span: bool | None = None, measure: Callable | None = None) -> pa.Table:
    """One shard of P_SGD: train runs ``[start, stop)`` and count the functions of those that fit S.

    The unit of work of :func:`sample_sgd` and of the pipeline's ``sgd`` estimator; only counts are
    kept in memory, never one string per run.

    ``progress(n_done, n_fit)`` (runs finished and fitted so far in this call; a tqdm-like bar gets
    ``update(n)``) hears whenever runs finish; an exception it raises stops training. Other
    arguments as in :func:`iter_runs`.

    Returns
    -------
    pyarrow.Table
        A count shard (:func:`sampler.store.shard_table`): ``function`` and ``count`` of the fitted
        runs, most frequent first; ``n_samples = stop - start`` (runs started, fitted or not);
        ``info`` with ``epochs`` and ``final_loss`` of each fitted run in run order, the ``device``, and
        how the first layer was trained (``span``): ``first_layer`` ("span" or "full"), ``span_rank``
        (r, or None where not computed), ``input_dim`` (d) and ``first_layer_reason``; with ``measure``
        (:func:`iter_runs`) also ``measures`` (``{name: [value of each fitted run]}``, run order) and
        ``measured_function`` (each fitted run's function, run order). With ``spec.stop = "budget"``
        also ``budget``: ``{"fit", "train_error", "test_error", "train_loss", "test_loss": [value of
        each run]}``, every run started (fitted or not) in run order (:class:`RunsChunk`). Where runs did
        not fit: ``unfit`` = ``{"n", "best_train_accuracy", "epochs"}`` (how many, the best training accuracy
        they reached, the most epochs one of them ran).
    """
    counts: Counter = Counter()
    functions, measured = [], []  # with measure: each fitted run's function and measures
    every_run = []  # (runs, fit, train_error, test_error, train_loss, test_loss, epochs) per chunk
    chunks = _shard_chunks(arch, split, spec, seed, start, stop, progress, ensemble=ensemble, device=device,
                           dtype=dtype, tf32=tf32, span=span, measure=measure)
    for c in chunks:
        counts.update(f for f, ok in zip(c.functions, c.fit) if ok)
        every_run.append((c.runs, c.fit, c.train_error, c.test_error, c.final_loss, c.test_loss, c.epochs))
        if measure is not None:
            functions += [f for f, ok in zip(c.functions, c.fit) if ok]
            measured.append({k: v[c.fit] for k, v in c.measures.items()})
    runs_all, *columns, epochs_all = (np.concatenate(parts) for parts in zip(*every_run))
    fit_all = columns[0]
    by_run = np.argsort(runs_all[fit_all], kind="stable")  # the fitted runs in run order
    info = {"epochs": epochs_all[fit_all][by_run].tolist(), "final_loss": columns[3][fit_all][by_run].tolist(),
            "device": str(resolve_device(device)), **c.first_layer}  # every chunk has the shard's one path
    unfit = ~fit_all
    if unfit.any():  # what the runs that never fit reached: for the warning and the report
        acc = 1.0 - columns[1][unfit]
        info["unfit"] = {"n": int(unfit.sum()), "best_train_accuracy": float(np.nanmax(acc)) if np.isfinite(acc).any()
                         else None, "epochs": int(epochs_all[unfit].max())}
    if spec.stop == "budget":
        order_all = np.argsort(runs_all, kind="stable")
        info["budget"] = {name: [v.item() for v in col[order_all]] for name, col in
                          zip(("fit", "train_error", "test_error", "train_loss", "test_loss"), columns)}
    if measure is not None:
        names = list(dict.fromkeys(k for d in measured for k in d))
        info["measures"] = {k: np.concatenate([d.get(k, np.full(0, np.nan)) for d in measured])[by_run].tolist()
                            for k in names}
        info["measured_function"] = [functions[i] for i in by_run]
    return count_table(counts, n_samples=stop - start, info=info)


def sample_sgd(arch: Architecture, split: Split, n_runs: int, *, optimizer: str = TrainSpec.optimizer,
               lr: float = TrainSpec.lr, batch_size: int = TrainSpec.batch_size, loss: str = TrainSpec.loss,
               seed: int = 0, device="cpu", momentum: float = TrainSpec.momentum,
               max_epochs: int = TrainSpec.max_epochs, epochs_after_fit: int = TrainSpec.epochs_after_fit,
               check_every: int | None = TrainSpec.check_every, ensemble: int = 256, run_folder=None,
               shard_size: int = 1024, progress=True, dtype: torch.dtype = torch.float32,
               span: bool | None = None, stop: str = TrainSpec.stop) -> FunctionCounts:
    """P_SGD by counting: train ``n_runs`` networks to 100% training accuracy and count their functions.

    Parameters
    ----------
    n_runs : int
        Runs started (>= 1); runs that never fit are counted in ``n_runs`` and not in ``n_fit``.
    optimizer, lr, batch_size, loss, momentum, max_epochs, epochs_after_fit, check_every, stop
        See :class:`TrainSpec` (whose defaults these are).
    seed : int
        Same seed, same counts (on the same device type), whatever ``ensemble`` or ``shard_size``.
    run_folder : path or RunFolder, optional
        If given, runs ``[s * shard_size, (s + 1) * shard_size)`` are shard ``s`` of kind ``"sgd"``
        (:func:`sgd_shard`, through :func:`sampler.store.run_shards`): finished shards are read,
        not retrained, so an interrupted call resumes; shards of another seed, training,
        architecture, split or shard layout are refused. Without it, the runs are one shard in memory.
    progress : bool, callable or tqdm bar
        True: a tqdm bar over the ``n_runs`` runs (its estimate from the whole call's rate)
        with the fit fraction; a callable gets ``(n_done, n_fit)``.
    device, ensemble, dtype, span
        As in :func:`iter_runs` (``span``: the first layer in the span of the inputs; the same
        functions up to rounding either way, so it is not part of a run folder's fingerprint).
    """
    n_runs = check_int("n_runs", n_runs, minimum=1)
    check_int("shard_size", shard_size, minimum=1)
    spec = TrainSpec(optimizer=optimizer, lr=lr, batch_size=batch_size, loss=loss, momentum=momentum,
                     max_epochs=max_epochs, epochs_after_fit=epochs_after_fit, check_every=check_every, stop=stop)
    _check_inputs(arch, split, spec, seed, ensemble, device, dtype)
    step = shard_size if run_folder is not None else n_runs  # in memory: one shard
    plan = [{"start": a, "stop": min(a + step, n_runs)} for a in range(0, n_runs, step)]
    print_ = fingerprint({"seed": seed, "spec": spec.to_dict(), "arch": arch.to_dict(),
                          "split": split_digest(split), "dtype": str(dtype)})

    def compute(shard, callback):
        return sgd_shard(arch, split, spec, seed=seed, start=shard["start"], stop=shard["stop"], ensemble=ensemble,
                         device=device, progress=callback, dtype=dtype, span=span)

    with ShardProgress(progress, total=n_runs, desc=f"P_SGD {arch.describe()}", unit="run") as prog:
        return merge_shards(run_shards(run_folder, "sgd", plan, compute, fingerprint=print_, progress=prog))


# the reference's way ----------------------------------------------------------------------------
def reference_run(arch: Architecture, split: Split, spec: TrainSpec, *, seed: int, run: int,
                  dtype: torch.dtype = torch.float32, callback: Callable | None = None) -> dict:
    """Run ``run`` trained alone with plain ``torch.optim`` (the reference for tests and benchmarks):
    same initialisation, minibatch order, losses and stopping rule as the engine; ``callback(module)``
    after every optimiser step. Returns ``function``, ``fit``, ``epochs``, ``final_loss``, ``train_error``,
    ``test_error``, ``test_loss`` and ``module``."""
    m, bs = split.n_train, spec.batch_size
    spec.check_train_size(m)
    net = arch.build(split.input_shape, generator=make_generator(seed, "init", run), dtype=dtype)
    opt = torch_optimizer(spec.optimizer, net.parameters(), lr=spec.lr, momentum=spec.momentum)
    x, y, x_test = split.x_train.to(dtype), split.y_train, split.x_test.to(dtype)
    spe = spec.steps_per_epoch(m)
    gen = make_generator(seed, "batches", int(run))
    max_steps, end, fit_at, steps = spec.max_epochs * spe, spec.max_epochs * spe, None, 0
    fits, loss, train_error = False, math.nan, math.nan
    while steps < end:
        for idx in torch.randperm(m, generator=gen).split(bs):
            batch_loss = reference_loss(net(x[idx]), y[idx], spec.loss)
            opt.zero_grad()
            batch_loss.backward()
            opt.step()
            steps += 1
            if callback is not None:
                callback(net)
            due = steps % spe == 0 if spec.check_every is None else steps % spec.check_every == 0
            if steps == end or (fit_at is None and due and spec.stop == "fit"):
                with torch.no_grad():
                    out = net(x)
                fits = bool(((out > 0) == y.bool()).all())
                train_error = float(((out > 0) != y.bool()).double().mean())
                loss = float(reference_loss(out, y, spec.loss))
                if fit_at is None and fits:
                    fit_at = steps
                    end = steps + spec.epochs_after_fit * spe  # budget mode: epochs_after_fit is 0
                if steps >= end:
                    break
    with torch.no_grad():
        out_test = net(x_test)
        function = outputs_to_strings(out_test.unsqueeze(0))[0]
        test_error = float(((out_test > 0) != split.y_test.bool()).double().mean())
        test_loss = float(reference_loss(out_test, split.y_test, spec.loss))
    fit = fit_at is not None and fits and max_steps > 0
    return {"function": function, "fit": fit, "epochs": -(-fit_at // spe) if fit_at else spec.max_epochs,
            "final_loss": loss, "train_error": train_error, "test_error": test_error, "test_loss": test_loss,
            "module": net}
