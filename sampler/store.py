"""Run folders on disk: config, manifest, atomically written shards, resume, exact merge.

Layout of a run folder::

    RUN/config.toml          the experiment config as run
    RUN/manifest.json        versions, device, git revision, seeds, timings, who did which shard
    RUN/shards/KIND/NNNNNN.parquet   one finished shard of work of KIND (e.g. "sgd", "prior")
    RUN/...                  results (functions.parquet, summary.json, report.md, figures)

Every file is written atomically (temporary file in the same folder, fsync, rename), so a crash
or a killed worker leaves either the whole shard or none of it; a rerun skips shards that exist.

One writer at a time: :meth:`RunFolder.lock` takes ``RUN/.lock`` (written whole to a file of its own,
then hard-linked to that name, which is atomic on local and NFS file systems alike) holding the host,
pid and start time of its holder, whose mtime a heartbeat thread refreshes. A lock is stale, and is
broken, when its holder's pid is gone on this host, its heartbeat is older than ``stale_after``
seconds (another host's process cannot be probed), or it is empty or unreadable and older than
:data:`UNREADABLE_STALE_S` (a writer that crashed, or a full disk).

One shard format (:func:`shard_table`) and one resume path (:meth:`RunFolder.collect_shards`) serve
the library (``sample_sgd``, ``sample_prior``) and the pipeline alike. Each shard file records its
``index``, the ``fingerprint`` of what determines its numbers and its planned parameters ``shard``
(e.g. ``{"start": 0, "stop": 1024}``), which :meth:`RunFolder.check_shards` checks before a shard
is trusted. Count shards merge exactly with :func:`merge_shards`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import socket
import subprocess
import threading
import time
import warnings
from collections import Counter
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch
from tqdm.auto import tqdm

from .checks import check_int, check_plain_name
from .atomic import _json_default, atomic_write_bytes, atomic_write_json, atomic_write_table, atomic_write_text
from .functions import FunctionCounts

__all__ = ["RunFolder", "FolderLock", "FolderBusyError", "ShardError", "fingerprint", "file_digest", "split_digest",
           "SHARD_SCHEMA", "shard_table", "count_table", "shard_meta", "merge_shards", "run_shards", "ShardProgress",
           "atomic_write_bytes", "atomic_write_json", "atomic_write_table", "atomic_write_text", "read_json"]

SHARD_DIGITS = 6
LOCK_NAME = ".lock"
#: Seconds without a heartbeat after which another host's lock counts as stale.
STALE_AFTER_S = 600.0
#: Seconds after which an empty or unreadable lock file counts as stale: its writer crashed between
#: creating and writing it, or the disk was full (a lock is written whole, so no live writer leaves one).
UNREADABLE_STALE_S = 5.0
HEARTBEAT_S = 30.0
#: Installed packages whose versions the manifest records: those that shape the numbers.
VERSIONED = ("sgd-bayes", "torch", "numpy", "scipy", "pyro-ppl", "gpytorch", "arviz", "pyarrow", "matplotlib")


class FolderBusyError(RuntimeError):
    """Another live process holds the run folder's lock."""


class ShardError(ValueError):
    """Shards on disk that cannot be merged: foreign, misnamed, duplicated, overlapping or missing."""


def fingerprint(obj: Any) -> str:
    """A short stable hash (hex, 16 chars) of a JSON-able object: what determines a shard's numbers."""
    text = json.dumps(obj, sort_keys=True, default=_json_default, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def file_digest(path: str | os.PathLike) -> str:
    """A short hash (hex, 16 chars) of a file's bytes (e.g. a user's module: what shards were computed with)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def split_digest(split) -> str:
    """A short hash (hex, 16 chars) of a split's ``x_train``, ``y_train``, ``x_test`` and ``y_test``."""
    h = hashlib.sha256()
    for t in (split.x_train, split.y_train, split.x_test, split.y_test):
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def read_json(path: Path, *, advice: str) -> Any:
    """The JSON file ``path``; one ``ValueError`` naming it, and ``advice``, if it is not valid JSON."""
    try:
        return json.loads(Path(path).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path} is not valid JSON ({exc}); {advice}") from None


def _with_metadata(table: pa.Table, **meta) -> pa.Table:
    """``table`` with ``meta`` added to its schema metadata, each value as JSON."""
    old = dict(table.schema.metadata or {})
    old.update({k.encode(): json.dumps(v, default=_json_default).encode() for k, v in meta.items()})
    return table.replace_schema_metadata(old)


def _metadata(schema_metadata) -> dict[str, Any]:
    """A Parquet schema's metadata, JSON values decoded (pyarrow's and pandas' own keys left out)."""
    meta = {}
    for k, v in (schema_metadata or {}).items():
        key = k.decode()
        if not (key.startswith("ARROW:") or key == "pandas"):
            try:
                meta[key] = json.loads(v.decode())
            except json.JSONDecodeError:
                meta[key] = v.decode()
    return meta


# --- the shard format ---------------------------------------------------------------------------
#: Columns of every shard: a function on E, a sampler's count of it (null for a scorer), a scorer's
#: natural-log P(f|S) and its standard error (null for a sampler, whose log P comes from the counts).
SHARD_SCHEMA = pa.schema([("function", pa.string()), ("count", pa.int64()), ("log_p", pa.float64()),
                          ("log_p_se", pa.float64())])


def shard_table(functions: Sequence[str], *, counts: Sequence[int] | None = None,
                log_p: Sequence[float] | None = None, log_p_se: Sequence[float] | None = None,
                n_samples: int | None = None, info: Mapping[str, Any] | None = None) -> pa.Table:
    """One shard's rows (:data:`SHARD_SCHEMA`), with ``n_samples`` and ``info`` in the schema metadata.

    Parameters
    ----------
    functions : sequence of str, length n
        Bitstrings on E.
    counts : sequence of int, length n
        A sampler's counts of each function in this shard (then ``n_samples`` is required).
    log_p, log_p_se : sequence of float, length n
        A scorer's natural-log P(f|S) and its standard error (nan where the method has none); a
        sampler may give ``log_p_se`` when it has a better error than the binomial one.
    n_samples : int
        Samples drawn (runs started) in this shard, fitted or not; a sample that does not fit S has no row.
    info : mapping
        JSON-able facts about the shard (read back by :func:`shard_meta`).
    """
    n = len(functions)
    if (counts is None) == (log_p is None):
        raise ValueError("a shard has either counts (a sampler) or log_p (a scorer)")
    if counts is not None and n_samples is None:
        raise ValueError("a sampler's shard must say n_samples, the samples it drew")
    nulls_i, nulls_f = pa.nulls(n, pa.int64()), pa.nulls(n, pa.float64())
    table = pa.table({
        "function": pa.array(list(functions), pa.string()),
        "count": pa.array(list(counts), pa.int64()) if counts is not None else nulls_i,
        "log_p": pa.array(np.asarray(log_p, float)) if log_p is not None else nulls_f,
        "log_p_se": (pa.array(np.asarray(log_p_se, float)) if log_p_se is not None
                     else (pa.array(np.full(n, np.nan)) if log_p is not None else nulls_f)),
    }, schema=SHARD_SCHEMA)
    return _with_metadata(table, n_samples=n_samples, info=dict(info or {}))


def count_table(counts: Mapping[str, int], *, n_samples: int, info: Mapping[str, Any] | None = None) -> pa.Table:
    """A sampler's :func:`shard_table` from ``{function: count}``, most frequent first (ties by bitstring)."""
    items = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return shard_table([f for f, _ in items], counts=[c for _, c in items], n_samples=n_samples, info=info)


def shard_meta(table: pa.Table) -> tuple[int | None, dict]:
    """``(n_samples, info)`` of a shard table (read back from its schema metadata)."""
    meta = _metadata(table.schema.metadata)
    if "n_samples" not in meta:
        raise ValueError(f"shard table has no n_samples in its metadata (keys {sorted(meta)}): not written by "
                         f"shard_table of this version")
    return meta["n_samples"], meta.get("info", {})


def merge_shards(tables: Sequence[pa.Table]) -> FunctionCounts:
    """Exact merge of count shards: counts summed per function, ``n_runs`` the sum of the shards'
    ``n_samples``, ``n_fit`` the sum of the counts (each sample counted once per shard given)."""
    counts: Counter = Counter()
    n_samples = 0
    for i, table in enumerate(tables):
        n, _ = shard_meta(table)
        if n is None or table.column("count").null_count:
            raise ValueError(f"tables[{i}] is a scorer's shard (no counts, no n_samples): only count shards merge")
        for f, c in zip(table.column("function").to_pylist(), table.column("count").to_pylist()):
            counts[f] += c
        n_samples += int(n)
    return FunctionCounts(dict(counts), n_runs=n_samples, n_fit=sum(counts.values()))


class ShardProgress:
    """Samples done and fitted so far in a call, told to ``progress``: None or False (nobody), a
    callable ``(n_done, n_fit)``, a tqdm-like bar (``update(n)``), or True: a tqdm bar of ``total``
    samples labelled ``desc`` in ``unit``, closed at the end of a ``with`` block."""

    def __init__(self, progress=None, *, total: int | None = None, desc: str = "", unit: str = "sample"):
        if not (progress is None or isinstance(progress, bool) or callable(progress) or hasattr(progress, "update")):
            raise TypeError(f"progress must be a bool, None, a callable (n_done, n_fit) or a tqdm bar, "
                            f"got {type(progress).__name__}")
        self._own = progress is True
        # smoothing 0: the rate over the whole call, an estimate that settles (shards of different estimators
        # and sizes made a moving average swing from hours to minutes)
        self.progress = tqdm(total=total, desc=desc, unit=unit, unit_scale=True, smoothing=0.0) if self._own \
            else progress or None
        self.done = self.fit = 0

    def to(self, done: int, fit: int) -> None:
        """``done`` samples in all so far, ``fit`` of them fitted."""
        step, self.done, self.fit = done - self.done, done, fit
        if self.progress is None or step == 0:
            return
        if hasattr(self.progress, "update"):
            self.progress.update(step)
            if hasattr(self.progress, "set_postfix_str"):
                self.progress.set_postfix_str(f"fit {fit / max(done, 1):.3f}", refresh=False)
        else:
            self.progress(done, fit)

    def add(self, n_done: int, n_fit: int) -> None:
        """``n_done`` more samples, ``n_fit`` of them fitted."""
        self.to(self.done + n_done, self.fit + n_fit)

    def within(self) -> Callable[[int, int], None]:
        """A ``progress(n_done, n_fit)`` callback for one shard, counting from the shard's start."""
        done, fit = self.done, self.fit
        return lambda n_done, n_fit: self.to(done + n_done, fit + n_fit)

    def __enter__(self) -> "ShardProgress":
        return self

    def __exit__(self, *exc) -> None:
        if self._own:
            self.progress.close()


def _size(table: pa.Table) -> tuple[int, int]:
    """``(n_samples, n_fit)`` of a shard table (0 samples for a scorer's)."""
    n, _ = shard_meta(table)
    return int(n or 0), int(pc.sum(table.column("count")).as_py() or 0)


def run_shards(run_folder, kind: str, plan: Sequence[Mapping[str, Any]], compute: Callable, *, fingerprint: str,
               progress: ShardProgress | None = None) -> list[pa.Table]:
    """The shard tables of ``plan``, in plan order: computed in memory (``run_folder`` None), or
    through :meth:`RunFolder.collect_shards` (same arguments) of ``run_folder`` (a path or :class:`RunFolder`)."""
    progress = progress if progress is not None else ShardProgress()
    if run_folder is None:
        return [_compute(compute, params, progress) for params in plan]
    folder = run_folder if isinstance(run_folder, RunFolder) else RunFolder(run_folder)
    return folder.collect_shards(kind, plan, compute, fingerprint=fingerprint, progress=progress)


def _compute(compute, params, progress: ShardProgress) -> pa.Table:
    """``compute(params, callback)``, then ``progress`` moved to the shard's end."""
    done, fit = progress.done, progress.fit
    table = compute(params, progress.within())
    n, n_fit = _size(table)
    progress.to(done + n, fit + n_fit)
    return table


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        pass
    return True


class FolderLock:
    """The lock of one run folder (see the module docstring); a context manager.

    Parameters
    ----------
    path : Path
        The lock file, ``RUN/.lock``.
    stale_after : float
        Seconds without a heartbeat after which a lock is stale whatever its host.
    heartbeat : float
        Seconds between refreshes of the lock file's mtime while held.
    """

    def __init__(self, path: Path, *, stale_after: float = STALE_AFTER_S, heartbeat: float = HEARTBEAT_S):
        self.path = Path(path)
        self.stale_after = float(stale_after)
        self.heartbeat = float(heartbeat)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._held = False

    def holder(self) -> dict[str, Any] | None:
        """The holder's record (host, pid, started), or None when there is no lock file."""
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return None
        try:
            info = json.loads(text)
        except json.JSONDecodeError:
            info = None
        return info if isinstance(info, dict) else {"host": "?", "pid": -1, "started": "?", "unreadable": text[:80]}

    def _stale(self, info: dict[str, Any]) -> str | None:
        """Why the lock of holder ``info`` is stale, or None while its holder lives."""
        try:
            age = time.time() - self.path.stat().st_mtime
        except FileNotFoundError:
            return "gone"
        if "unreadable" in info:
            what = "empty" if not info["unreadable"] else "unreadable"
            return (f"it is {what} and {age:.0f} s old (> {UNREADABLE_STALE_S:.0f} s)"
                    if age > UNREADABLE_STALE_S else None)
        if info.get("host") == socket.gethostname() and isinstance(info.get("pid"), int):
            return None if _pid_alive(info["pid"]) else f"its process {info['pid']} is gone"
        return f"no heartbeat for {age:.0f} s (> {self.stale_after:.0f} s)" if age > self.stale_after else None

    def acquire(self) -> "FolderLock":
        """Take the lock, breaking a stale one; :class:`FolderBusyError` names a live holder."""
        record = json.dumps({"host": socket.gethostname(), "pid": os.getpid(),
                             "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
        for _ in range(3):
            try:
                self._create(record)
            except FileExistsError:
                info = self.holder()
                if info is None:
                    continue  # released meanwhile
                why = self._stale(info)
                if why is None:
                    holder = (f"pid {info.get('pid')} on host {info.get('host')} since {info.get('started')}"
                              if "unreadable" not in info else "a process that has not written its lock yet")
                    raise FolderBusyError(
                        f"run folder {self.path.parent} is in use by {holder} (lock file {self.path}); wait for it, "
                        f"or delete the lock file if that process is certainly gone") from None
                # Break it by renaming to a name of our own: of several breakers, only one rename succeeds.
                aside = self.path.with_name(f"{self.path.name}.stale.{socket.gethostname()}.{os.getpid()}")
                try:
                    os.replace(self.path, aside)
                except FileNotFoundError:
                    continue
                aside.unlink(missing_ok=True)
                holder = (f"of pid {info.get('pid')} on host {info.get('host')}" if "unreadable" not in info
                          else "left by a crashed writer")
                warnings.warn(f"broke the stale lock {self.path} {holder}: {why}", RuntimeWarning, stacklevel=3)
                continue
            self._held = True
            self._stop.clear()
            self._thread = threading.Thread(target=self._beat, name=f"heartbeat {self.path}", daemon=True)
            self._thread.start()
            return self
        raise FolderBusyError(f"could not take the lock {self.path}: it keeps changing hands")

    def _create(self, record: str) -> None:
        """Create the lock file holding ``record``, whole or not at all: the record is written to a
        file of our own, then hard-linked to the lock's name (``link`` fails if the name exists, and
        is atomic on local and NFS file systems); where hard links are not supported, ``O_EXCL``
        (then a crash between create and write leaves an empty lock, stale after a few seconds)."""
        tmp = self.path.with_name(f"{self.path.name}.new.{socket.gethostname()}.{os.getpid()}.{threading.get_ident()}")
        tmp.unlink(missing_ok=True)  # left by a crashed process that had our pid
        try:
            self._write_new(tmp, record)
        except OSError:  # e.g. a full disk: the direct write below says so, naming the lock file
            tmp.unlink(missing_ok=True)
        else:
            try:
                os.link(tmp, self.path)
                return
            except FileExistsError:
                raise
            except OSError:  # no hard links here (some FUSE and SMB mounts)
                pass
            finally:
                tmp.unlink(missing_ok=True)
        self._write_new(self.path, record)

    @staticmethod
    def _write_new(path: Path, record: str) -> None:
        """Create ``path`` (``O_EXCL``: never an existing file) holding ``record``, fsynced."""
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        try:
            os.write(fd, record.encode())
            os.fsync(fd)
        finally:
            os.close(fd)

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat):
            try:
                os.utime(self.path)
            except FileNotFoundError:
                return

    def release(self) -> None:
        """Stop the heartbeat and delete the lock file (if still ours)."""
        if not self._held:
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        info = self.holder()
        if info is not None and info.get("pid") == os.getpid() and info.get("host") == socket.gethostname():
            self.path.unlink(missing_ok=True)
        self._held = False

    __enter__ = acquire

    def __exit__(self, *exc) -> None:
        self.release()


def _provenance() -> dict[str, Any]:
    """What the manifest records of this process: package versions, host and git revision."""
    versions = {}
    for name in VERSIONED:
        try:
            versions[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            versions[name] = "not installed"
    try:
        git = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent, capture_output=True,
                             text=True, timeout=10)
        revision = git.stdout.strip() if git.returncode == 0 else None
    except (OSError, subprocess.TimeoutExpired):
        revision = None  # no git, or not a checkout
    host = {"host": socket.gethostname(), "platform": platform.platform(), "python": platform.python_version(),
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
    return {"versions": versions, "host": host, "git_revision": revision}


class RunFolder:
    """A run folder on disk (created if missing). See the module docstring for the layout."""

    def __init__(self, path: str | os.PathLike):
        if not isinstance(path, (str, os.PathLike)) or str(path) == "":
            raise TypeError(f"path must be a non-empty path, got {path!r}")
        self.path = Path(path).expanduser()
        if self.path.exists() and not self.path.is_dir():
            raise ValueError(f"run folder path {self.path} exists and is not a folder")
        self.path.mkdir(parents=True, exist_ok=True)
        self.config_path, self.manifest_path = self.path / "config.toml", self.path / "manifest.json"

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    def lock(self, *, stale_after: float = STALE_AFTER_S, heartbeat: float = HEARTBEAT_S) -> FolderLock:
        """The folder's writer lock (``with folder.lock(): ...``); see :class:`FolderLock`."""
        return FolderLock(self.path / LOCK_NAME, stale_after=stale_after, heartbeat=heartbeat)

    def read_manifest(self) -> dict[str, Any]:
        """The manifest as a dict ({} when there is none yet)."""
        if not self.manifest_path.is_file():
            return {}
        return read_json(self.manifest_path, advice="move it aside to go on")

    def update_manifest(self, *, _new: bool = False, **fields) -> dict[str, Any]:
        """Merge ``fields`` into the manifest (dicts one level deep) and write it atomically; the same
        fields go into the latest entry of ``invocations`` (the history of every run of the folder).
        Only the driver updates the manifest; workers report through their shards."""
        manifest = self.read_manifest()
        history = manifest.setdefault("invocations", [])
        if _new or not history:
            history.append({})
        if _new:
            for key in ("timings", "nodes", "finished"):  # the previous invocation's, kept in its entry
                manifest.pop(key, None)
        for target in (manifest, history[-1]):
            for key, value in fields.items():
                if isinstance(value, dict) and isinstance(target.get(key), dict):
                    target[key] = {**target[key], **value}
                else:
                    target[key] = value
        atomic_write_json(self.manifest_path, manifest)
        return manifest

    def start_manifest(self, *, seeds: dict[str, int], device: str, **fields) -> dict[str, Any]:
        """Open a new entry of the manifest's ``invocations`` (earlier ones are kept) recording
        versions, host, git revision, seeds and the start time."""
        return self.update_manifest(_new=True, **_provenance(), seeds=seeds, device=device, pid=os.getpid(),
                                    started=time.strftime("%Y-%m-%dT%H:%M:%S%z"), **fields)

    # shards ---------------------------------------------------------------------------------
    def shard_dir(self, kind: str) -> Path:
        return self.path / "shards" / check_plain_name("shard kind", kind)

    def shard_path(self, kind: str, index: int) -> Path:
        index = check_int("shard index", index, minimum=0)
        return self.shard_dir(kind) / f"{index:0{SHARD_DIGITS}d}.parquet"

    def shard_indices(self, kind: str) -> list[int]:
        """Indices of the finished shards of ``kind``, sorted."""
        d = self.shard_dir(kind)
        return sorted(int(p.stem) for p in d.glob("*.parquet") if p.stem.isdigit()) if d.is_dir() else []

    def write_shard(self, kind: str, index: int, table, *, fingerprint: str | None = None, **meta: Any) -> Path:
        """Write one finished shard atomically, with ``meta`` (JSON-able), its ``index`` and its
        ``fingerprint`` in the table metadata. A shard that exists is left untouched (a resumed or
        duplicated task writes nothing), so no run can be counted twice."""
        path = self.shard_path(kind, index)
        if path.is_file():
            return path
        meta = {**meta, "index": index, **({} if fingerprint is None else {"fingerprint": fingerprint})}
        return atomic_write_table(_with_metadata(table, **meta), path)

    def _set_aside(self, path: Path, exc: Exception) -> None:
        aside = path.with_name(path.name + ".corrupt")
        n = 1
        while aside.exists():
            aside = path.with_name(f"{path.name}.corrupt{n}")
            n += 1
        os.replace(path, aside)
        warnings.warn(f"shard file {path} is corrupt ({type(exc).__name__}: {exc}); moved it aside to {aside.name} "
                      f"and it will be redone", RuntimeWarning, stacklevel=3)

    def shards_off_plan(self, kind: str, plan: Sequence[Mapping[str, Any]]) -> list[int]:
        """Indices of the shard files of ``kind`` whose parameters (metadata ``shard``) are not ``plan``'s
        for their index, or that lie beyond it: what a changed plan (more samples) must redo."""
        expected = json.loads(json.dumps(list(plan), default=_json_default))
        return [i for i in self.shard_indices(kind)
                if i >= len(expected) or _metadata(pq.read_schema(self.shard_path(kind, i)).metadata).get("shard")
                != expected[i]]

    def check_shards(self, kind: str, fingerprint: str | None = None, *,
                     plan: Sequence[Mapping[str, Any]] | None = None) -> list[int]:
        """Check every shard file of ``kind`` before it is trusted; return the good indices.

        An unreadable file is moved aside (``.corrupt``) with a warning naming it, so that its shard
        is redone. A :class:`ShardError` naming the files is raised for a shard whose recorded
        ``index`` is not its file's (copied under another name), whose ``fingerprint`` differs from
        ``fingerprint`` (written by another config), whose parameters (metadata ``shard``) differ
        from ``plan[index]`` (copied over another shard, or planned otherwise) or that repeats or
        overlaps another shard's samples (``start``/``stop`` of its parameters).
        """
        expected = dict(enumerate(json.loads(json.dumps(list(plan or []), default=_json_default))))
        good, spans = [], []
        for index in self.shard_indices(kind):
            path = self.shard_path(kind, index)
            try:
                meta = _metadata(pq.read_schema(path).metadata)
            except (pa.ArrowException, OSError) as exc:
                self._set_aside(path, exc)
                continue
            shard = meta.get("shard")
            if "index" in meta and meta["index"] != index:
                raise ShardError(f"shard file {path} holds shard {meta['index']} of {kind!r}, not {index}: it was "
                                 f"copied or renamed; delete it (its runs are in "
                                 f"{self.shard_path(kind, meta['index']).name})")
            if fingerprint is not None and meta.get("fingerprint") != fingerprint:
                raise ShardError(f"shard file {path} was written by another config (fingerprint "
                                 f"{meta.get('fingerprint')}, this run's is {fingerprint}): it does not belong in "
                                 f"this run folder; use another run folder (--out), or delete {self.shard_dir(kind)}")
            if index in expected and shard != expected[index]:
                raise ShardError(f"shard file {path} holds {shard!r}, this run plans {expected[index]!r} for shard "
                                 f"{index} of {kind!r}: it was copied over, or written with another plan (shard size, "
                                 f"number of samples); delete it or use another run folder")
            if isinstance(shard, dict) and isinstance(shard.get("start"), int):
                spans.append((shard["start"], shard["stop"], path))
            good.append(index)
        spans.sort(key=lambda t: (t[0], t[1]))
        for (a0, a1, pa_), (b0, b1, pb_) in zip(spans, spans[1:]):
            if b0 < a1:
                raise ShardError(f"shard files {pa_} (runs [{a0}, {a1})) and {pb_} (runs [{b0}, {b1})) overlap: "
                                 f"one is a copy; delete it")
        return good

    def collect_shards(self, kind: str, plan: Sequence[Mapping[str, Any]], compute=None, *, fingerprint: str,
                       progress: ShardProgress | None = None) -> list[pa.Table]:
        """The tables of shards ``0 .. len(plan) - 1`` of ``kind``, in plan order, each counted once.

        First :meth:`check_shards` against ``fingerprint`` and ``plan``. Then, with ``compute`` and
        under the folder's :meth:`lock`, each missing shard is computed and written (with its
        parameters as metadata ``shard``, wall time and host) before the next one starts, so an
        interrupted call resumes at the first missing shard. Without ``compute`` (the pipeline,
        whose workers write the shards) a missing shard is a :class:`ShardError` naming its file.

        Parameters
        ----------
        kind : str
            Shard kind (e.g. ``"sgd"``, ``"prior"``, an estimator's label).
        plan : sequence of dict
            JSON-able parameters of each shard; ``start`` and ``stop`` (sample indices) are checked
            for overlaps.
        compute : callable, optional
            ``compute(params, callback) -> pyarrow.Table`` (a :func:`shard_table`);
            ``callback(n_done, n_fit)`` reports progress within the shard.
        fingerprint : str
            :func:`fingerprint` of what determines the shards' numbers.
        progress : ShardProgress, optional
            Hears the samples of the shards read from disk, then of those computed.
        """
        plan = json.loads(json.dumps(list(plan), default=_json_default))  # as the metadata holds it
        progress = progress if progress is not None else ShardProgress()
        with self.lock() if compute is not None else contextlib.nullcontext():
            self.check_shards(kind, fingerprint, plan=plan)
            tables: dict[int, pa.Table | None] = {}
            for index in range(len(plan)):
                path = self.shard_path(kind, index)
                try:
                    tables[index] = pq.read_table(path) if path.is_file() else None
                except (pa.ArrowException, OSError) as exc:
                    self._set_aside(path, exc)
                    tables[index] = None
                if tables[index] is not None:
                    progress.add(*_size(tables[index]))
            missing = [i for i, t in tables.items() if t is None]
            if missing and compute is None:
                raise ShardError(f"run folder {self.shard_dir(kind)} lacks the shard files "
                                 f"{[self.shard_path(kind, i).name for i in missing]}; rerun to redo them")
            for index in missing:
                t0 = time.perf_counter()
                tables[index] = _compute(compute, plan[index], progress)
                self.write_shard(kind, index, tables[index], fingerprint=fingerprint, shard=plan[index],
                                 seconds=time.perf_counter() - t0, node=socket.gethostname())
            return [tables[i] for i in range(len(plan))]
