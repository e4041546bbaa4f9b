"""docs/examples/model-release.yml: its `run:` steps, run as written on a tiny recipe.

The workflow's settings live in its `env:` block; the test swaps in the tiny recipe and
temporary paths, puts this venv's `compress` and `python` on PATH in place of the install
step, and runs every other `run:` step with bash, as the runner would."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import yaml

from tests.conftest import ROOT

WORKFLOW = ROOT / "docs" / "examples" / "model-release.yml"


def _steps():
    wf = yaml.safe_load(WORKFLOW.read_text())
    (job,) = wf["jobs"].values()
    return wf["env"], [s for s in job["steps"] if "run" in s]


def test_workflow_runs_the_documented_commands(write_recipe, tmp_path):
    env, steps = _steps()
    install, *rest = steps
    assert "bash scripts/setup.sh" in install["run"] and "GITHUB_PATH" in install["run"]
    assert [s["name"] for s in rest] == ["Run the recipe", "Recommend", "Gate the release"]
    assert "compress run" in rest[0]["run"] and "compress recommend" in rest[1]["run"]
    assert "compress gate" in rest[2]["run"] and "--recommended" not in rest[2]["run"]

    recipe = write_recipe()
    suite = recipe.parent / "suite.yaml"  # the tiny suite, with targets like the demo's
    suite.write_text(suite.read_text() + "targets: {max_drop: 1.0, min_fidelity: 0.0}\n")
    summary = tmp_path / "step-summary.md"
    run_env = {**os.environ, **{k: str(v) for k, v in env.items()},
               "RECIPE": str(recipe), "RUN_DIR": str(tmp_path / "run"),
               "REPORTS": str(tmp_path / "reports"),
               "PREVIOUS_VERDICT": str(tmp_path / "previous" / "gate.json"),
               "COMPRESS_CACHE_DIR": str(tmp_path / "cache"),
               "COMPRESS_CALIBRATION": str(tmp_path / "none.json"),
               "GITHUB_STEP_SUMMARY": str(summary), "PYTHONPATH": str(ROOT),
               "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}

    def step(s):
        return subprocess.run(["bash", "-euo", "pipefail", "-c", s["run"]], cwd=ROOT,
                              env=run_env, capture_output=True, text=True, timeout=600)

    for s in rest:   # first release: no previous verdict
        r = step(s)
        assert r.returncode == 0, f"{s['name']}: {r.stdout[-2000:]}{r.stderr[-2000:]}"
    verdict = json.loads((tmp_path / "reports" / "gate.json").read_text())
    assert verdict["verdict"] == "pass" and verdict["recommended"]["candidate"]
    # the gate checked the saved recommendation, not a recomputed one
    saved = json.loads((tmp_path / "run" / "recommendation.json").read_text())
    assert verdict["recommended"]["candidate"] == saved["winner"]["candidate"]
    assert "using the saved recommendation" in verdict["recommended"]["decision"]
    root = ET.parse(tmp_path / "reports" / "gate.xml").getroot()
    assert int(root.get("tests")) == len(verdict["checks"]) >= 3
    assert root.get("failures") == "0" and root.get("errors") == "0"
    assert summary.read_text().startswith("## compress gate: PASS")

    # next release: the previous verdict is there, so the regression checks run too
    (tmp_path / "previous").mkdir()
    shutil.copy(tmp_path / "reports" / "gate.json", tmp_path / "previous" / "gate.json")
    r = step(rest[2])
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    again = json.loads((tmp_path / "reports" / "gate.json").read_text())
    checks = {c["check"]: c for c in again["checks"]}
    assert checks["regression.max_quality_decrease"]["value"] == 0.0
    assert checks["regression.max_cost_increase"]["status"] == "pass"
    assert summary.read_text().count("## compress gate: PASS") == 2
