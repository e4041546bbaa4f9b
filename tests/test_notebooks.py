"""Every notebook in notebooks/ executes against a tiny real run with the README's own
commands (jupyter-execute saving the executed copy, then printing its text outputs), and
is stored with its outputs stripped."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from tests.conftest import ROOT

NOTEBOOKS = sorted(p for p in (ROOT / "notebooks").glob("*.ipynb")
                   if not p.stem.endswith("-executed"))


def test_there_are_notebooks():
    assert "tradeoffs.ipynb" in [p.name for p in NOTEBOOKS]


def _readme_commands(name: str) -> list[list[str]]:
    """The README's headless notebook commands (execute and save; print), as argv lists."""
    block = (ROOT / "README.md").read_text().split("## Explore in a notebook", 1)[1]
    block = block.split("```bash\n", 1)[1].split("```", 1)[0]
    lines = [x for x in block.splitlines() if x and not x.startswith("#")]
    assert len(lines) == 2 and "jupyter-execute" in lines[0], lines
    return [shlex.split(x.replace("notebooks/tradeoffs", f"notebooks/{Path(name).stem}"))
            for x in lines]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_executes_with_the_readme_command(path, tiny_run, tmp_path):
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(not c.outputs and c.execution_count is None for c in code), \
        f"{path.name}: strip the outputs before committing"
    (tmp_path / "notebooks").mkdir()
    shutil.copy(path, tmp_path / "notebooks" / path.name)  # the executed copy lands beside it
    run, show = _readme_commands(path.name)
    assert run[0].startswith("COMPRESS_RUN=")
    bindir = Path(sys.executable).parent
    env = {**os.environ, "COMPRESS_RUN": str(tiny_run), "PYTHONPATH": str(ROOT),
           "COMPRESS_CALIBRATION": str(tmp_path / "none.json"), "MPLBACKEND": "Agg"}
    argv = [str(bindir / Path(run[1]).name), *run[2:]]
    proc = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]    # a failing cell fails the command
    executed = tmp_path / "notebooks" / f"{path.stem}-executed.ipynb"
    assert executed.is_file(), sorted(p.name for p in (tmp_path / "notebooks").iterdir())
    out = nbformat.read(executed, as_version=4)
    assert all(c.execution_count for c in out.cells if c.cell_type == "code")
    shown = subprocess.run([sys.executable, *show[1:]], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0, shown.stderr
    assert re.search(r"Recommended: \S+ on \S+ via ", shown.stdout), shown.stdout[-2000:]
