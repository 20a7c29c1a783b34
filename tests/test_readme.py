"""The README's examples: every ```python block runs as written, alone in a fresh interpreter.
The suite runs this file after the large ones (``conftest.FRESH``), so that those interpreters
load the engine's units the other tests compiled instead of compiling them again."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_every_readme_python_block_runs_on_its_own(tmp_path):
    """Each ```python block of the README, alone in a fresh interpreter, runs as written."""
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert len(blocks) >= 3
    for i, code in enumerate(blocks):
        script = tmp_path / f"block{i}.py"
        script.write_text(code)
        r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                           timeout=300, cwd=tmp_path)
        assert r.returncode == 0, f"README block {i} failed:\n{code}\n{r.stderr[-2000:]}"
