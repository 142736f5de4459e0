import os

import pytest

from sgdbayes.cli import main


def test_data_summary(capsys):
    assert main(["data", "mnist", "--n-train", "100", "--n-test", "10"]) == 0
    out = capsys.readouterr().out
    assert "m = 100" in out and "k = 10" in out


@pytest.mark.parametrize("argv, match", [
    (["data", "mnist", "--n-train", "-5"], "n_train must be >= 1, got n_train=-5"),
    (["data", "mnsit"], "did you mean 'mnist'"),
    (["run", "--set", "estimators.sgd.n_rns=3"], "unknown key estimators.sgd.n_rns"),
    (["run", "no-such-config.toml"], "does not exist"),
])
def test_bad_input_is_one_line_and_exit_2(capsys, argv, match):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert pytest.importorskip("re").search(match, err)


def test_help_exits_cleanly():
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0


def test_estimators_are_listed(capsys):
    assert main(["estimators"]) == 0
    out = capsys.readouterr().out
    for name in ["sgd", "prior", "ess", "nuts", "ep", "ep-conditional", "tilting"]:
        assert f"\n{name}  (" in "\n" + out
    # every option with its default, type, rules and doc (TrainSpec's docs for the sgd options)
    assert "    n_runs = 8192  (int, >= 1, <= 1000000000)  runs started" in out
    assert "    lr = 0.1  (float)  Learning rate (> 0)." in out
    assert "    device = 'cpu'  (one of ['cpu', 'cuda', 'auto'])" in out


# Failures of the machine and of files (issue 15): each is one line on stderr naming the file or
# key and the limit, and exit status 2; each gave a traceback or minutes of silence before.
def one_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


TINY_RUN = ["--set", "data.dataset=boolean", "--set", "data.n_train=32", "--set", "data.n_test=16",
            "--set", "data.target=majority", "--set", "arch.width=16", "--set", "estimators.sgd.n_runs=8",
            "--set", "estimators.sgd.shard_size=4", "--set", "estimators.sgd.ensemble=4",
            "--set", "estimators.sgd.batch_size=8", "--set", "estimators.sgd.lr=0.5",
            "--set", "estimators.sgd.max_epochs=100", "--set", "estimators.tilting.top=2",
            "--set", "estimators.tilting.n_samples=200", "--set", "analysis.n_boot=20"]


def test_disk_full_is_one_line_naming_the_file(tmp_path, monkeypatch, capsys):
    """Guards: OSError(ENOSPC) from a write escaped as a traceback."""
    import errno

    import sampler.atomic

    def full(path, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(sampler.atomic, "atomic_write_bytes", full)
    out = tmp_path / "run"
    assert main(["run", "--out", str(out), "--no-progress"] + TINY_RUN) == 2
    err = one_line(capsys)
    assert "No space left on device" in err and str(out / "sources.json") in err and "free some space" in err  # the first file written


def test_out_under_a_file_is_one_line(tmp_path, capsys):
    """Guards: --out below a plain file (NotADirectoryError) escaped as a traceback."""
    (tmp_path / "file").write_text("x")
    assert main(["run", "--out", str(tmp_path / "file" / "run"), "--no-progress"] + TINY_RUN) == 2
    assert str(tmp_path / "file") in one_line(capsys)


def test_read_only_out_is_one_line(tmp_path, capsys):
    """Guards: a read-only --out (PermissionError) escaped as a traceback."""
    if os.geteuid() == 0:
        pytest.skip("root may write anywhere")
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        assert main(["run", "--out", str(ro / "run"), "--no-progress"] + TINY_RUN) == 2
    finally:
        ro.chmod(0o700)
    assert str(ro / "run") in one_line(capsys)


def test_read_only_out_as_root_is_simulated(tmp_path, monkeypatch, capsys):
    """The same failure where the tests run as root (who may write anywhere): mkdir raises EROFS."""
    import errno
    import pathlib

    def ro(self, *args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(self))

    monkeypatch.setattr(pathlib.Path, "mkdir", ro)
    assert main(["run", "--out", str(tmp_path / "run"), "--no-progress"] + TINY_RUN) == 2
    err = one_line(capsys)
    assert "Read-only file system" in err and str(tmp_path / "run") in err


def test_truncated_idx_file_is_named(tmp_path, capsys):
    """Guards: a truncated .gz IDX file gave gzip's EOFError as a traceback."""
    import shutil

    import sampler

    shipped = os.path.join(os.path.dirname(sampler.__file__), "data")
    images = (open(os.path.join(shipped, "t10k-images-idx3-ubyte.gz"), "rb")).read()
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(images[: len(images) // 2])
    shutil.copyfile(os.path.join(shipped, "t10k-labels-idx1-ubyte.gz"), tmp_path / "train-labels-idx1-ubyte.gz")
    assert main(["data", "mnist", "--data-dir", str(tmp_path)]) == 2
    err = one_line(capsys)
    assert str(tmp_path / "train-images-idx3-ubyte.gz") in err and "truncated" in err


def test_truncated_cifar_batch_is_named(tmp_path, capsys):
    """Guards: a truncated CIFAR-10 batch gave pickle's error as a traceback."""
    import pickle

    import numpy as np

    for i in range(1, 6):
        batch = {b"data": np.zeros((10, 3072), np.uint8), b"labels": list(range(10))}
        blob = pickle.dumps(batch)
        (tmp_path / f"data_batch_{i}").write_bytes(blob[: len(blob) // 2] if i == 3 else blob)
    assert main(["data", "cifar10", "--data-dir", str(tmp_path), "--n-train", "10", "--n-test", "5"]) == 2
    err = one_line(capsys)
    assert str(tmp_path / "data_batch_3") in err and "truncated" in err


def test_non_utf8_config_is_named(tmp_path, capsys):
    """Guards: a Latin-1 config gave Python's codec message without the file's name."""
    cfg = tmp_path / "latin1.toml"
    cfg.write_bytes("# caf\xe9\n[data]\nn_train = 50\n".encode("latin-1"))
    assert main(["run", str(cfg), "--out", str(tmp_path / "run")]) == 2
    err = one_line(capsys)
    assert f"config file {cfg} is not UTF-8" in err and not (tmp_path / "run").exists()


def test_a_network_too_large_for_memory_is_refused_before_allocating(tmp_path, capsys):
    """Guards: arch.width=1000000 died in the allocator with a traceback. Memory is estimated
    (parameters counted on the meta device) and compared with the machine's before anything runs."""
    out = tmp_path / "run"
    assert main(["run", "--out", str(out), "--no-progress", "--set", "arch.width=1000000"]) == 2
    err = one_line(capsys)
    assert "estimators.sgd: needs about" in err and "more than the" in err and "arch.width=1000000" in err
    assert not out.exists()


@pytest.mark.parametrize("override, match", [
    ("estimators.sgd.n_runs=10000000000000", "estimators.sgd.n_runs must be <= 1000000000"),
    ("estimators.sgd.n_runs=1000000000", "more than the limit 100000; raise shard_size"),
])
def test_absurd_run_counts_are_refused_at_once(tmp_path, capsys, override, match):
    """Guards: n_runs = 10^13 planned 10^10 shards in silence for minutes."""
    assert main(["run", "--out", str(tmp_path / "run"), "--no-progress", "--set", override]) == 2
    assert match in one_line(capsys)


def test_sigterm_stops_the_run_cleanly(tmp_path):
    """Guards: SIGTERM killed the driver without running ``finally``/``atexit`` (which stop a local
    Ray the run started, and release the folder's lock). Killed at a known point: inside the second
    shard."""
    import subprocess
    import sys

    out = tmp_path / "run"
    script = ("import os, signal, sgdbayes.fanout as f\n"
              "real = f.run_task\n"
              "def run_task(task, progress=None):\n"
              "    if task.kind == 'sgd' and task.index == 1:\n"
              "        os.kill(os.getpid(), signal.SIGTERM)\n"
              "    return real(task, progress)\n"
              "f.run_task = run_task\n"
              "from sgdbayes.cli import main\n"
              f"raise SystemExit(main({['run', '--out', str(out), '--no-progress'] + TINY_RUN!r}))\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 143, proc.stderr
    assert "terminated (SIGTERM); finished shards are kept" in proc.stderr
    assert not (out / ".lock").exists()
    assert sorted(p.name for p in (out / "cases" / "main" / "shards" / "sgd").iterdir()) == ["000000.parquet"]


# happy paths through the command line (issue 15: only failures were tested through main) ----------
def test_run_then_analyze_through_main(tmp_path, capsys):
    """`sgdbayes run` writes the folder docs/DESIGN.md promises and prints the summary; `sgdbayes analyze`
    re-makes the report with another min_count."""
    import json

    out = tmp_path / "run"
    assert main(["run", "--out", str(out), "--no-progress"] + TINY_RUN) == 0
    printed = capsys.readouterr().out
    assert f"report: {out / 'report.md'}" in printed
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_runs"] == 8 and summary["min_count"] == 2
    for name in ("config.toml", "manifest.json", "functions.parquet", "results.parquet", "report.md"):
        assert (out / name).is_file(), name
    assert main(["analyze", str(out), "--set", "analysis.min_count=1"]) == 0
    assert json.loads((out / "summary.json").read_text())["min_count"] == 1
    assert "report:" in capsys.readouterr().out


def test_a_sweep_through_main(tmp_path, capsys):
    """A `[sweep]` given with --set runs one case per point and one report over them."""
    import json

    out = tmp_path / "sweep"
    argv = ["run", "--out", str(out), "--no-progress"] + TINY_RUN + [
        "--set", "sweep.kind=width", "--set", "sweep.axes={'arch.width' = [8, 16]}"]
    assert main(argv) == 0
    sweep = json.loads((out / "sweep.json").read_text())
    assert [p["name"] for p in sweep["points"]] == ["width=8", "width=16"]
    assert (out / "cases" / "width=8" / "shards" / "sgd" / "000001.parquet").is_file()


def test_no_command_prints_the_help(capsys):
    """Guards (issue 26): `sgdbayes` alone exited 2 and printed nothing."""
    assert main([]) == 2
    out, err = capsys.readouterr()
    assert "usage: sgdbayes" in out and "run" in out and "estimators" in out
    assert err.count("\n") == 1 and err.startswith("sgdbayes: error: a command is required")


def test_python_dash_m_sgdbayes_is_the_command_line():
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "sgdbayes", "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "usage: sgdbayes" in done.stdout
