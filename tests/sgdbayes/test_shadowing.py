"""A user's ``analysis.py`` (or ``sampler.py``) next to their script is named in one line, not left to fail
later with an ImportError that names neither file."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", ["analysis", "sampler"])
def test_a_shadowing_file_is_named(tmp_path, name):
    (tmp_path / f"{name}.py").write_text("x = 1\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), str(ROOT)]))
    proc = subprocess.run([sys.executable, "-c", "import sgdbayes.cli"], cwd=tmp_path, env=env,
                          capture_output=True, text=True)
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert f"{tmp_path / (name + '.py')} shadows sgd-bayes' package '{name}'" in last and "rename" in last


def test_no_shadow_imports(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-c", "import sgdbayes.cli"], cwd=tmp_path, env=env, capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stderr
