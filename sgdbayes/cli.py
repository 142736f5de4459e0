"""The ``sgdbayes`` command line.

``sgdbayes data DATASET [--n-train M] ...`` prints a split's summary; ``sgdbayes run [CONFIG]
[--set key=value ...] [--out DIR] [--executor local|ray]`` runs the estimators a config names over
its cases (a ``[sweep]`` makes one case per point) into a run folder (no CONFIG: the default
experiment, ``configs/default.toml``); ``sgdbayes analyze RUN_DIR`` re-makes its report;
``sgdbayes estimators`` lists the registered estimators and their options. Bad input becomes one
line on stderr and exit status 2, never a traceback (set ``SGDBAYES_TRACEBACK=1`` to see one).
"""

from __future__ import annotations

import argparse
import errno
import os
import re
import signal
import sys
import threading
import time
import typing
import warnings
from pathlib import Path

from sampler.data import load_split
from sampler.store import FolderBusyError

from .config import load_config
from .estimators import estimator_names, get_estimator
from .fanout import EXECUTORS
from .pipeline import analyze_run, run_experiment

EXIT_BAD_INPUT = 2
_RULES = {"gt": ">", "ge": ">=", "lt": "<", "le": "<=", "multiple_of": "a multiple of"}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="sgdbayes",
        description="Is SGD a Bayesian sampler? Compare P_SGD(f|S) from many training runs with the "
                    "NNGP posterior P_B(f|S) on your architecture and data.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    d = sub.add_parser("data", help="print the summary of a dataset split")
    d.add_argument("dataset", help="mnist, fashion-mnist, cifar10, digits, ionosphere or boolean")
    d.add_argument("--n-train", type=int, default=1000)
    d.add_argument("--n-test", type=int, default=100)
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--binarize", default="half", help="half (default) or parity")
    d.add_argument("--data-dir", default=None, help="folder with the dataset's files")
    d.add_argument("--target", default=None, help="boolean only: 128-char bitstring or a name (parity, ...)")

    r = sub.add_parser("run", help="run an experiment (P_SGD, P_B, analysis, report) into a run folder")
    r.add_argument("config", nargs="?", default=None,
                   help="TOML experiment file (default: the default experiment, as configs/default.toml)")
    r.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override one config key, e.g. --set estimators.sgd.n_runs=64 (repeatable)")
    r.add_argument("--out", default=None, help="run folder (default: runs/<config name>-<time>)")
    r.add_argument("--executor", default="local", choices=EXECUTORS, help="where shards run")
    r.add_argument("--address", default=None, help="Ray cluster address (with --executor ray)")
    r.add_argument("--no-progress", action="store_true", help="no progress bars")
    r.add_argument("--extend", action="store_true",
                   help="grow a run folder whose config differs only in a smaller n_runs: add the runs, redo the "
                        "scoring and the report")

    a = sub.add_parser("analyze", help="re-make the statistics, figures and report of a finished run folder")
    a.add_argument("run_dir")
    a.add_argument("--set", dest="overrides", action="append", default=[], metavar="analysis.KEY=VALUE",
                   help="override an [analysis] or [report] key, e.g. --set analysis.min_count=5")
    a.add_argument("--out", default=None, help="write the report into this folder instead (variants side by side)")

    sub.add_parser("estimators", help="list the registered estimators and their options")

    pb = sub.add_parser("prior-bias", help="the prior over functions without a training set (m = 0): counts, "
                                           "simplicity bias, NNGP P(f), order-to-chaos sweep")
    pb.add_argument("config", help="TOML file (e.g. configs/prior_bias.toml)")
    pb.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="override a top-level or [sweep] key, e.g. --set sweep.n_samples=20000")
    pb.add_argument("--out", default=None, help="output folder (default: runs/<config name>-<time>)")
    pb.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def _cmd_data(args) -> int:
    split = load_split(args.dataset, n_train=args.n_train, n_test=args.n_test, seed=args.seed,
                       binarize=args.binarize, data_dir=args.data_dir, target=args.target)
    print(split.summary())
    return 0


def _cmd_run(args) -> int:
    out = args.out
    if out is None:
        name = Path(args.config).stem if args.config else "default"
        out = str(Path("runs") / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}")
    return _print(run_experiment(load_config(args.config, args.overrides), out, executor=args.executor,
                                 address=args.address, progress=not args.no_progress, extend=args.extend))


def _cmd_prior_bias(args) -> int:
    from .prior_bias import load_prior_bias_config, run_prior_bias

    out = args.out or str(Path("runs") / f"{Path(args.config).stem}-{time.strftime('%Y%m%d-%H%M%S')}")
    summary = run_prior_bias(load_prior_bias_config(args.config, args.overrides), out, progress=not args.no_progress)
    for name, s in summary["cases"].items():
        print(f"{name}: {s['n_samples']:,} samples at {s['samples_per_s']:,.0f}/s, {s['n_functions']:,} distinct "
              f"functions, P(top) {s['top_share']:.3g}, bound slope {s['bound_slope_log10']:+.3f} log10 P per unit LZ")
    print(f"report: {Path(out) / 'report.md'}")
    return 0


def _cmd_analyze(args) -> int:
    return _print(analyze_run(args.run_dir, overrides=args.overrides, out=args.out))


def _print(result) -> int:
    print(result.summary_text())
    print(f"report: {result.report_path}")
    return 0


def _cmd_estimators(args) -> int:
    for name in estimator_names():
        est = get_estimator(name)
        line = (est.__doc__ or "").strip().splitlines()[0] if est.__doc__ else "(no description)"
        line = re.sub(r"\s*\((see )?(the )?module docstring\)", "", line)
        print(f"{name}  ({est.quantity}, {est.kind}): {line}")
        docs, fields = est.Options.docs(), est.Options.model_fields
        for key, value in est.Options().model_dump().items():
            ann = fields[key].annotation
            kind = (f"one of {list(typing.get_args(ann))}" if typing.get_origin(ann) is typing.Literal
                    else getattr(ann, "__name__", None) or str(ann))
            rules = "".join(f", {op} {getattr(m, attr)}" for m in fields[key].metadata for attr, op in _RULES.items()
                            if hasattr(m, attr))
            print(f"    {key} = {value!r}  ({kind.replace('typing.', '')}{rules})  {docs[key]}".rstrip())
    return 0


def os_error_line(exc: OSError) -> str:
    """One line for an operating-system error: what failed, on which file, and what to do."""
    where = f" {exc.filename}" if exc.filename else ""
    if exc.filename2:
        where += f" -> {exc.filename2}"
    full, denied = "free some space or pass another --out", "pass a folder you may write to with --out"
    advice = {errno.ENOSPC: full, errno.EDQUOT: full, errno.EACCES: denied, errno.EPERM: denied,
              errno.EROFS: "the file system is read-only: pass another --out",
              errno.ENOTDIR: "a path component is a file, not a folder: pass another --out"}.get(exc.errno, "")
    line = (exc.strerror or str(exc)) + (f":{where}" if where else "")
    return line + (f" ({advice})" if advice else "")


class _Terminated(Exception):
    """SIGTERM, turned into an exception so that ``finally`` blocks and ``atexit`` (which stops a
    local Ray the run started) still run."""


def _on_sigterm(signum, frame):
    raise _Terminated()


def _plain_warnings(command: str):
    """``warnings.showwarning`` for the command line: each warning as one plain line on stderr
    (``sgdbayes run: note: ...``), without the category, source path and line Python adds."""
    def show(message, category, filename, lineno, file=None, line=None):
        print(f"sgdbayes {command}: note: {message}", file=sys.stderr if file is None else file)
    return show


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:  # the help on stdout, and what was missing on stderr
        parser.print_help()
        print("sgdbayes: error: a command is required (the commands are listed above; sgdbayes COMMAND --help)",
              file=sys.stderr)
        return EXIT_BAD_INPUT
    with warnings.catch_warnings():
        warnings.showwarning = _plain_warnings(args.command)
        return _main(args)


def _main(args) -> int:
    handler = {"data": _cmd_data, "run": _cmd_run, "analyze": _cmd_analyze, "estimators": _cmd_estimators,
               "prior-bias": _cmd_prior_bias}
    previous = None
    if threading.current_thread() is threading.main_thread():  # only it may set signal handlers
        previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        return handler[args.command](args)
    except (ValueError, TypeError, OSError, NotImplementedError, FolderBusyError) as exc:
        if os.environ.get("SGDBAYES_TRACEBACK"):
            raise
        # disk full, read-only or non-folder --out, unreadable file: say which (ours name their file)
        line = os_error_line(exc) if isinstance(exc, OSError) and not isinstance(exc, FileNotFoundError) else exc
        print(f"sgdbayes {args.command}: error: {line}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except (KeyboardInterrupt, _Terminated) as exc:
        term = isinstance(exc, _Terminated)
        how, status = ("terminated (SIGTERM)", 128 + signal.SIGTERM) if term else ("interrupted", 130)
        print(f"sgdbayes {args.command}: {how}; finished shards are kept, rerun to resume", file=sys.stderr)
        return status
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
