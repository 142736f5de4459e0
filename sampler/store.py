"""Run folders on disk: config, manifest, atomically written shards, resume, exact merge.

Layout of a run folder::

    RUN/config.toml          the experiment config as run
    RUN/manifest.json        versions, device, git revision, seeds, timings, who did which shard
    RUN/shards/KIND/NNNNNN.parquet   one finished shard of work of KIND (e.g. "sgd", "prior")
    RUN/...                  results (functions.parquet, summary.json, report.md, figures)

Every file is written atomically (temporary file in the same folder, fsync, rename), so a crash
or a killed worker leaves either the whole shard or none of it; a rerun skips shards that exist.
A shard is a Parquet table in one of two forms, both merged exactly by :meth:`RunFolder.merge_counts`:

- per-run rows with columns ``function`` (str) and ``fit`` (bool), one row per run started;
- aggregated rows with columns ``function`` and ``count`` and ``n_runs`` in the table metadata.
"""

from __future__ import annotations

import json
import os
import platform
import socket
import subprocess
import time
from collections import Counter
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any, Iterator

import pyarrow.parquet as pq
import torch

from ._checks import check_int
from .atomic import _json_default, atomic_write_bytes, atomic_write_json, atomic_write_table, atomic_write_text
from .functions import FunctionCounts

__all__ = ["RunFolder", "atomic_write_bytes", "atomic_write_json", "atomic_write_table", "atomic_write_text",
           "git_revision", "package_versions", "host_info"]

SHARD_DIGITS = 6


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

    def read_manifest(self) -> dict[str, Any]:
        """The manifest as a dict ({} when there is none yet)."""
        if not self.manifest_path.is_file():
            return {}
        return json.loads(self.manifest_path.read_text())

    def update_manifest(self, **fields) -> dict[str, Any]:
        """Merge ``fields`` into the manifest (dicts one level deep) and write it atomically.

        Only the driver process updates the manifest; workers report through their shards.
        """
        manifest = self.read_manifest()
        for key, value in fields.items():
            if isinstance(value, dict) and isinstance(manifest.get(key), dict):
                manifest[key] = {**manifest[key], **value}
            else:
                manifest[key] = value
        atomic_write_json(self.manifest_path, manifest)
        return manifest

    def start_manifest(self, *, seeds: dict[str, int], device: str) -> dict[str, Any]:
        """Record versions, host, git revision, seeds and the start time."""
        return self.update_manifest(
            versions=package_versions(), host=host_info(), git_revision=git_revision(), seeds=seeds,
            device=device, started=time.strftime("%Y-%m-%dT%H:%M:%S%z"))

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

    def write_shard(self, kind: str, index: int, table, **meta: Any) -> Path:
        """Write one finished shard atomically; ``meta`` (JSON-able) goes into the table metadata.

        A shard that exists already is left untouched (a resumed or duplicated task writes
        nothing), so no run can be counted twice.
        """
        path = self.shard_path(kind, index)
        if path.is_file():
            return path
        old = dict(table.schema.metadata or {})
        old.update({k.encode(): json.dumps(v, default=_json_default).encode() for k, v in meta.items()})
        return atomic_write_table(table.replace_schema_metadata(old), path)

    def read_shard(self, kind: str, index: int):
        """The shard's ``(pyarrow.Table, meta dict)``."""
        path = self.shard_path(kind, index)
        if not path.is_file():
            raise FileNotFoundError(f"shard {index} of {kind!r} is not finished: no file {path}")
        table = pq.read_table(path)
        meta = {}
        for k, v in (table.schema.metadata or {}).items():
            key = k.decode()
            if key.startswith("ARROW:") or key == "pandas":
                continue
            try:
                meta[key] = json.loads(v.decode())
            except json.JSONDecodeError:
                meta[key] = v.decode()
        return table, meta

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
