"""Run folders on disk: config, manifest, atomically written shards, resume, exact merge.

Layout of a run folder::

    RUN/config.toml          the experiment config as run
    RUN/manifest.json        versions, device, git revision, seeds, timings, who did which shard
    RUN/shards/KIND/NNNNNN.parquet   one finished shard of work of KIND (e.g. "sgd", "prior")
    RUN/...                  results (functions.parquet, summary.json, report.md, figures)

Every file is written atomically (temporary file in the same folder, fsync, rename), so a crash
or a killed worker leaves either the whole shard or none of it; a rerun skips shards that exist.

One writer at a time: :meth:`RunFolder.lock` takes ``RUN/.lock`` (created with ``O_CREAT | O_EXCL``,
which is atomic on local and NFS file systems alike) holding the host, pid and start time of its
holder, whose mtime a heartbeat thread refreshes. A lock is stale, and is broken, when its holder's
pid is gone on this host or its heartbeat is older than ``stale_after`` seconds (another host's
process cannot be probed). Each shard records its ``index`` and, when the writer gives one, the
``fingerprint`` of what determines its numbers; :meth:`RunFolder.check_shards` refuses shards that
are foreign, misnamed, duplicated or overlapping, naming the files, and moves unreadable ones aside
(``NNNNNN.parquet.corrupt``) so that they are redone.
A shard is a Parquet table in one of two forms, both merged exactly by :meth:`RunFolder.merge_counts`:

- per-run rows with columns ``function`` (str) and ``fit`` (bool), one row per run started;
- aggregated rows with columns ``function`` and ``count`` and ``n_runs`` in the table metadata.
"""

from __future__ import annotations

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
from typing import Any, Iterator

import pyarrow as pa
import pyarrow.parquet as pq
import torch

from ._checks import check_int
from .atomic import _json_default, atomic_write_bytes, atomic_write_json, atomic_write_table, atomic_write_text
from .functions import FunctionCounts

__all__ = ["RunFolder", "FolderLock", "FolderBusyError", "ShardError", "fingerprint", "atomic_write_bytes", "atomic_write_json", "atomic_write_table", "atomic_write_text",
           "git_revision", "package_versions", "host_info"]

SHARD_DIGITS = 6
LOCK_NAME = ".lock"
#: Seconds without a heartbeat after which another host's lock counts as stale.
STALE_AFTER_S = 600.0
HEARTBEAT_S = 30.0


class FolderBusyError(RuntimeError):
    """Another live process holds the run folder's lock."""


class ShardError(ValueError):
    """Shards on disk that cannot be merged: foreign, misnamed, duplicated, overlapping or missing."""


def fingerprint(obj: Any) -> str:
    """A short stable hash (hex, 16 chars) of a JSON-able object: what determines a shard's numbers."""
    text = json.dumps(obj, sort_keys=True, default=_json_default, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
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
            return json.loads(text)
        except json.JSONDecodeError:
            return {"host": "?", "pid": -1, "started": "?", "unreadable": text[:80]}

    def _stale(self, info: dict[str, Any]) -> str | None:
        try:
            age = time.time() - self.path.stat().st_mtime
        except FileNotFoundError:
            return "gone"
        if info.get("host") == socket.gethostname() and isinstance(info.get("pid"), int):
            if not _pid_alive(info["pid"]):
                return f"its process {info['pid']} is gone"
            return None
        if age > self.stale_after:
            return f"no heartbeat for {age:.0f} s (> {self.stale_after:.0f} s)"
        return None

    def acquire(self) -> "FolderLock":
        """Take the lock, breaking a stale one; :class:`FolderBusyError` names a live holder."""
        record = json.dumps({"host": socket.gethostname(), "pid": os.getpid(),
                             "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                info = self.holder()
                if info is None:
                    continue  # released meanwhile
                why = self._stale(info)
                if why is None:
                    raise FolderBusyError(
                        f"run folder {self.path.parent} is in use by pid {info.get('pid')} on host "
                        f"{info.get('host')} since {info.get('started')} (lock file {self.path}); wait for it, "
                        f"or delete the lock file if that process is certainly gone") from None
                # Break it by renaming to a name of our own: of several breakers, only one rename succeeds.
                aside = self.path.with_name(f"{self.path.name}.stale.{socket.gethostname()}.{os.getpid()}")
                try:
                    os.replace(self.path, aside)
                except FileNotFoundError:
                    continue
                aside.unlink(missing_ok=True)
                warnings.warn(f"broke the stale lock {self.path} of pid {info.get('pid')} on host "
                              f"{info.get('host')}: {why}", RuntimeWarning, stacklevel=3)
                continue
            with os.fdopen(fd, "w") as fh:
                fh.write(record)
                fh.flush()
                os.fsync(fh.fileno())
            self._held = True
            self._stop.clear()
            self._thread = threading.Thread(target=self._beat, name=f"heartbeat {self.path}", daemon=True)
            self._thread.start()
            return self
        raise FolderBusyError(f"could not take the lock {self.path}: it keeps changing hands")

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

    def __enter__(self) -> "FolderLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def git_revision(directory: str | Path | None = None) -> str | None:
    """The git commit of ``directory`` (default: this package's source), or None outside git."""
    where = Path(directory) if directory else Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def package_versions() -> dict[str, str]:
    """Installed versions of the packages that shape the numbers."""
    names = ["sgd-bayes", "torch", "numpy", "scipy", "pyro-ppl", "gpytorch", "arviz", "pyarrow", "matplotlib"]
    versions = {}
    for name in names:
        try:
            versions[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def host_info() -> dict[str, Any]:
    """Host name, platform, Python, CPU count and CUDA device (if any) of this process."""
    info = {"host": socket.gethostname(), "platform": platform.platform(), "python": platform.python_version(),
            "cpu_count": os.cpu_count()}
    info["cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    info["torch_threads"] = torch.get_num_threads()
    return info


class RunFolder:
    """A run folder on disk (created if missing). See the module docstring for the layout."""

    def __init__(self, path: str | os.PathLike):
        if not isinstance(path, (str, os.PathLike)) or str(path) == "":
            raise TypeError(f"path must be a non-empty path, got {path!r}")
        self.path = Path(path).expanduser()
        if self.path.exists() and not self.path.is_dir():
            raise ValueError(f"run folder path {self.path} exists and is not a folder")
        self.path.mkdir(parents=True, exist_ok=True)

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    # config and manifest ------------------------------------------------------------------
    @property
    def config_path(self) -> Path:
        return self.path / "config.toml"

    @property
    def manifest_path(self) -> Path:
        return self.path / "manifest.json"

    def lock(self, *, stale_after: float = STALE_AFTER_S, heartbeat: float = HEARTBEAT_S) -> FolderLock:
        """The folder's writer lock (``with folder.lock(): ...``); see :class:`FolderLock`."""
        return FolderLock(self.path / LOCK_NAME, stale_after=stale_after, heartbeat=heartbeat)

    def read_manifest(self) -> dict[str, Any]:
        """The manifest as a dict ({} when there is none yet)."""
        if not self.manifest_path.is_file():
            return {}
        try:
            return json.loads(self.manifest_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(f"{self.manifest_path} is not valid JSON ({exc}); move it aside to go on") from None

    def update_manifest(self, **fields) -> dict[str, Any]:
        """Merge ``fields`` into the manifest (dicts one level deep) and write it atomically; the same
        fields go into the latest entry of ``invocations`` (the history of every run of the folder).

        Only the driver process updates the manifest; workers report through their shards.
        """
        manifest = self.read_manifest()
        history = manifest.setdefault("invocations", [{}])
        for target in (manifest, history[-1]):
            for key, value in fields.items():
                if isinstance(value, dict) and isinstance(target.get(key), dict):
                    target[key] = {**target[key], **value}
                else:
                    target[key] = value
        atomic_write_json(self.manifest_path, manifest)
        return manifest

    def start_manifest(self, *, seeds: dict[str, int], device: str, **fields) -> dict[str, Any]:
        """Record versions, host, git revision, seeds and the start time, opening a new entry of
        the manifest's ``invocations`` (earlier ones are kept)."""
        manifest = self.read_manifest()
        manifest.setdefault("invocations", []).append({})
        for key in ("timings", "nodes", "finished"):  # the previous invocation's, kept in its entry
            manifest.pop(key, None)
        atomic_write_json(self.manifest_path, manifest)
        return self.update_manifest(
            versions=package_versions(), host=host_info(), git_revision=git_revision(), seeds=seeds,
            device=device, pid=os.getpid(), started=time.strftime("%Y-%m-%dT%H:%M:%S%z"), **fields)

    # shards ---------------------------------------------------------------------------------
    def shard_dir(self, kind: str) -> Path:
        if not kind or "/" in kind or kind.startswith("."):
            raise ValueError(f"shard kind must be a plain name, got {kind!r}")
        return self.path / "shards" / kind

    def shard_path(self, kind: str, index: int) -> Path:
        index = check_int("shard index", index, minimum=0)
        return self.shard_dir(kind) / f"{index:0{SHARD_DIGITS}d}.parquet"

    def has_shard(self, kind: str, index: int) -> bool:
        """Whether shard ``index`` of ``kind`` is finished (written whole)."""
        return self.shard_path(kind, index).is_file()

    def shard_indices(self, kind: str) -> list[int]:
        """Indices of the finished shards of ``kind``, sorted."""
        d = self.shard_dir(kind)
        if not d.is_dir():
            return []
        return sorted(int(p.stem) for p in d.glob("*.parquet") if p.stem.isdigit())

    def write_shard(self, kind: str, index: int, table, *, fingerprint: str | None = None, **meta: Any) -> Path:
        """Write one finished shard atomically; ``meta`` (JSON-able) goes into the table metadata,
        with the shard's ``index`` and, if given, the ``fingerprint`` of what determines it.

        A shard that exists already is left untouched (a resumed or duplicated task writes
        nothing), so no run can be counted twice.
        """
        path = self.shard_path(kind, index)
        if path.is_file():
            return path
        meta = {**meta, "index": index, **({} if fingerprint is None else {"fingerprint": fingerprint})}
        old = dict(table.schema.metadata or {})
        old.update({k.encode(): json.dumps(v, default=_json_default).encode() for k, v in meta.items()})
        return atomic_write_table(table.replace_schema_metadata(old), path)

    @staticmethod
    def _meta(schema_metadata) -> dict[str, Any]:
        meta = {}
        for k, v in (schema_metadata or {}).items():
            key = k.decode()
            if key.startswith("ARROW:") or key == "pandas":
                continue
            try:
                meta[key] = json.loads(v.decode())
            except json.JSONDecodeError:
                meta[key] = v.decode()
        return meta

    def _set_aside(self, path: Path, exc: Exception) -> Path:
        aside = path.with_name(path.name + ".corrupt")
        n = 1
        while aside.exists():
            aside = path.with_name(f"{path.name}.corrupt{n}")
            n += 1
        os.replace(path, aside)
        warnings.warn(f"shard file {path} is corrupt ({type(exc).__name__}: {exc}); moved it aside to {aside.name} "
                      f"and it will be redone", RuntimeWarning, stacklevel=3)
        return aside

    def check_shards(self, kind: str, fingerprint: str | None = None, *, expected: dict[int, Any] | None = None,
                     identity: str = "shard") -> list[int]:
        """Check every shard file of ``kind`` before it is trusted; return the good indices.

        An unreadable file is moved aside (``.corrupt``) with a warning naming it, so that its shard
        is redone. A :class:`ShardError` naming the files is raised for a shard whose recorded
        ``index`` is not its file's (copied under another name), whose ``fingerprint`` differs from
        ``fingerprint`` (written by another config), whose ``identity`` metadata differs from
        ``expected[index]`` (copied over another shard) or that repeats or overlaps another shard's
        runs (``start``/``stop`` metadata).
        """
        good, spans = [], []
        for index in self.shard_indices(kind):
            path = self.shard_path(kind, index)
            try:
                meta = self._meta(pq.read_schema(path).metadata)
            except (pa.ArrowException, OSError) as exc:
                self._set_aside(path, exc)
                continue
            if "index" in meta and meta["index"] != index:
                raise ShardError(f"shard file {path} holds shard {meta['index']} of {kind!r}, not {index}: it was "
                                 f"copied or renamed; delete it (its runs are in "
                                 f"{self.shard_path(kind, meta['index']).name})")
            if fingerprint is not None and meta.get("fingerprint") != fingerprint:
                raise ShardError(f"shard file {path} was written by another config (fingerprint "
                                 f"{meta.get('fingerprint')}, this run's is {fingerprint}): it does not belong in "
                                 f"this run folder; use a new --out, or delete {self.shard_dir(kind)}")
            if expected is not None and index in expected and meta.get(identity) != expected[index]:
                raise ShardError(f"shard file {path} holds {meta.get(identity)!r}, this run plans "
                                 f"{expected[index]!r} for shard {index} of {kind!r}: it was copied over; delete it")
            if isinstance(meta.get("start"), int) and isinstance(meta.get("stop"), int):
                spans.append((meta["start"], meta["stop"], path))
            elif isinstance(meta.get(identity), dict) and isinstance(meta[identity].get("start"), int):
                spans.append((meta[identity]["start"], meta[identity]["stop"], path))
            good.append(index)
        spans.sort(key=lambda t: (t[0], t[1]))
        for (a0, a1, pa_), (b0, b1, pb_) in zip(spans, spans[1:]):
            if b0 < a1:
                raise ShardError(f"shard files {pa_} (runs [{a0}, {a1})) and {pb_} (runs [{b0}, {b1})) overlap: "
                                 f"one is a copy; delete it")
        return good

    def read_shard(self, kind: str, index: int):
        """The shard's ``(pyarrow.Table, meta dict)``; a :class:`ShardError` names an unreadable file."""
        path = self.shard_path(kind, index)
        if not path.is_file():
            raise FileNotFoundError(f"shard {index} of {kind!r} is not finished: no file {path}")
        try:
            table = pq.read_table(path)
        except (pa.ArrowException, OSError) as exc:
            raise ShardError(f"shard file {path} is corrupt ({type(exc).__name__}: {exc}); rerun to redo it") from None
        return table, self._meta(table.schema.metadata)

    def iter_shards(self, kind: str) -> Iterator[tuple[int, Any, dict]]:
        """``(index, table, meta)`` for each finished shard of ``kind``, in index order."""
        for index in self.shard_indices(kind):
            table, meta = self.read_shard(kind, index)
            yield index, table, meta

    def merge_counts(self, kind: str, indices: list[int] | None = None) -> FunctionCounts:
        """Exact merge of the finished shards of ``kind`` (each run counted once).

        Memory holds counts only, never per-run rows of more than one shard.
        """
        counts: Counter = Counter()
        n_runs = n_fit = 0
        wanted = None if indices is None else set(indices)
        present = self.check_shards(kind)  # misnamed, duplicated or overlapping shards are refused, by file
        if wanted is not None and not wanted <= set(present):
            gone = [self.shard_path(kind, i).name for i in sorted(wanted - set(present))]
            raise ShardError(f"run folder {self.shard_dir(kind)} lacks the shard files {gone}; rerun to redo them")
        for index, table, meta in self.iter_shards(kind):
            if wanted is not None and index not in wanted:
                continue
            names = table.column_names
            if "fit" in names:
                fit = table.column("fit").to_pylist()
                funcs = table.column("function").to_pylist()
                counts.update(f for f, ok in zip(funcs, fit) if ok)
                n_runs += len(fit)
                n_fit += sum(fit)
            elif "count" in names:
                part = dict(zip(table.column("function").to_pylist(), table.column("count").to_pylist()))
                counts.update(part)
                n_fit += sum(part.values())
                if "n_runs" not in meta:
                    raise ValueError(f"shard {index} of {kind!r} has counts but no n_runs in its metadata")
                n_runs += int(meta["n_runs"])
            else:
                raise ValueError(f"shard {index} of {kind!r} has neither 'fit' nor 'count' column: {names}")
        return FunctionCounts(dict(counts), n_runs, n_fit)
