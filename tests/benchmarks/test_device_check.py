"""The GPU check's dry run (issue 24): ``benchmarks/device_check.sh --device cpu --tiny`` in a virtual
environment that holds only what the GPU machine's image holds (``make device-venv``: torch, the image's
packages of ``benchmarks/device/image.txt``, no project install), the carried wheels installed by the
wrapper with ``--no-index`` as on that machine. A missing package, an import the image cannot meet or a
step over its time limit fails here, on the CPU, before the GPU window."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
VENV = ROOT / ".device-venv"
STEPS = ["pytest", "train", "kernel_ep", "experiment"]


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    if not (VENV / ".installed").exists():
        if os.environ.get("CI"):
            pytest.fail("the dry-run venv is missing: `make test` builds it (`make device-venv`)")
        pytest.skip("no .device-venv: run `make device-venv` (make test does)")
    out = tmp_path_factory.mktemp("device_check")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(PATH=f"{VENV / 'bin'}{os.pathsep}{env.get('PATH', '')}", DEVICE_WHEELS=str(VENV / "wheels"),
               OUT=str(out), OMP_NUM_THREADS="1")
    proc = subprocess.run(["bash", "benchmarks/device_check.sh", "--device", "cpu", "--tiny"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    return proc, out


def test_every_step_passes_in_the_image_environment(dry_run):
    proc, out = dry_run
    results = json.loads((out / "device_check.json").read_text())
    failed = {n: r["status"] for n, r in results["steps"].items() if r["status"] != "ok"}
    log = (out / "device_check.log").read_text()
    assert not failed and proc.returncode == 0, f"{failed}\n{proc.stdout[-3000:]}\n{log[-6000:]}"
    assert list(results["steps"]) == STEPS
    assert "+cpu" in results["environment"]["torch"]  # the venv's own torch, not the project's .venv
    for mod in ("pyro", "arviz", "pydantic", "tomli_w"):  # came from the carried wheels
        assert not results["environment"][mod].startswith("missing"), results["environment"][mod]


def test_figures_and_outputs(dry_run):
    _, out = dry_run
    results = json.loads((out / "device_check.json").read_text())
    steps = results["steps"]
    assert "skipped" in steps["pytest"]["summary"] or "passed" in steps["pytest"]["summary"]
    rows = steps["train"]["rows"]
    assert {r["precision"] for r in rows} == {"tf32", "float32"}
    assert all(r["fit"] > 0 and r["runs_per_s"] > 0 and r["seconds"] > 0 for r in rows)
    assert steps["kernel_ep"]["kernel_dtype"] == "torch.float64" and steps["kernel_ep"]["ep_converged"]
    exp = steps["experiment"]
    assert exp["summary"]["n_runs"] == exp["n_runs"] and exp["summary"]["n_fit"] > 0
    assert (out / "psgd_vs_pb.png").stat().st_size > 1000
    assert len(list(out.iterdir())) <= 8  # the device tool brings back at most 8 files


def test_a_failing_step_does_not_stop_the_next(tmp_path):
    """Every step over its limit: each is recorded as timed out, the script goes on and exits 1."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "benchmarks/device_check.py", "--device", "cpu", "--tiny",
                           "--only", "train,kernel_ep", "--limit-scale", "0.002", "--out", str(tmp_path)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    results = json.loads((tmp_path / "device_check.json").read_text())
    assert proc.returncode == 1
    assert [r["status"].startswith("timed out") for r in results["steps"].values()] == [True, True]


def test_unknown_step_is_refused(tmp_path):
    proc = subprocess.run([sys.executable, "benchmarks/device_check.py", "--only", "trian", "--out", str(tmp_path)],
                          cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True, text=True)
    assert proc.returncode == 2 and "unknown steps ['trian']" in proc.stderr
