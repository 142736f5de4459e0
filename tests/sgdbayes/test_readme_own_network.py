"""README's "Your own network on your own data" runs as written (its Python block, in a fresh folder)."""

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_readme_own_network_snippet_runs(tmp_path):
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Your own network on your own data"):readme.index("## Extending:")]
    code = re.findall(r"```python\n(.*?)```", section, re.S)[0]
    (tmp_path / "snippet.py").write_text(code)
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "snippet.py"], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert re.search(r"\d+ of 128 fit;", proc.stdout), proc.stdout
    assert (tmp_path / "digits.npz").exists()
