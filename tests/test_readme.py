"""The README's Python example runs as written, pasted into a script.

The ```python block(s) under "## Python API" are written to a file and run in a fresh interpreter,
with the start method forced to spawn (as on macOS and Windows): the data loader's workers then
re-import the script, which is what breaks an example without its ``__main__`` guard. The example
itself is sized to be cheap (two steps on a 16-clip synthetic set).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"
SPAWN = 'import multiprocessing\nmultiprocessing.set_start_method("spawn", force=True)  # as on macOS\n'


def api_blocks(text: str) -> list[str]:
    """The ```python blocks of the "## Python API" section (up to the next ``## `` heading)."""
    section = re.search(r"^## Python API\n(.*?)(?=^## |\Z)", text, re.S | re.M)
    assert section, "README.md has no '## Python API' section"
    return re.findall(r"^```python\n(.*?)^```", section.group(1), re.S | re.M)


def test_python_api_example_runs(tmp_path: Path) -> None:
    blocks = api_blocks(README.read_text())
    assert blocks, "no ```python block under '## Python API'"
    script = tmp_path / "example.py"
    script.write_text(SPAWN + "\n".join(blocks))
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "knn_top1" in done.stdout and "loss of an untrained ViT-S" in done.stdout, done.stdout
    runs = list((tmp_path / "runs").glob("api-*"))
    assert len(runs) == 1 and (runs[0] / "summary.json").is_file()
