"""`compress export`: the deployable directory, its model card, refusals, and loading the
export in a fresh process. (test_recommend_cli.py exports ONNX candidates of a real run.)"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from compress.artifacts import META_FILE
from compress.errors import CompressError, InputError
from compress.export import export
from tests.conftest import inproc_outputs, reload_outputs, run_cli
from tests.test_gate import _row, make_run


@pytest.fixture
def run_with_artifact(tmp_path, tiny_bert_cls, monkeypatch):
    """A synthetic run whose candidate `teacher` is the tiny classifier in a fake cache."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("COMPRESS_CACHE_DIR", str(cache))
    art = cache / "artifacts" / "abc123"
    shutil.copytree(tiny_bert_cls, art)
    (art / META_FILE).write_text(json.dumps({"key": "abc123", "kind": "pytorch"}))
    rows = [_row("teacher", 0.95, None, 10.0, 300.0, artifact_path=str(art),
                 artifact_key="abc123", measured_at="2026-11-28T00:00:00"),
            _row("int8", 0.94, 0.98, 5.0, 200.0, artifact_path=str(tmp_path / "gone"))]
    run = make_run(tmp_path / "run", rows)
    m = json.loads((run / "manifest.json").read_text())
    m.update(cache_dir=str(cache), seed=0, git="deadbeef", versions={"torch": "2.13.0"},
             plan={"model": "tiny-bert", "nodes": [
                 {"key": "abc123", "step": "teacher", "stage": "finetune",
                  "config": {"epochs": 1}, "parent": None}]})
    (run / "manifest.json").write_text(json.dumps(m))
    return run, art


def test_export_writes_a_loadable_dir_with_a_model_card(run_with_artifact, tmp_path):
    run, art = run_with_artifact
    out = export(run, "teacher", to=tmp_path / "release")
    dest = tmp_path / "release"
    assert out.path == dest.resolve() and (dest / "config.json").is_file()
    assert not (dest / META_FILE).exists() and (dest / "model.safetensors").is_file()
    assert not list(tmp_path.glob(".release.*"))          # no temporary dir left behind
    card = (dest / "README.md").read_text()
    assert card.startswith("# teacher")
    assert "| accuracy (primary) | 0.9500 | - |" in card
    assert "| latency p95 (ms) | 10.00 | - |" in card
    assert "teacher (finetune: {\"epochs\": 1})" in card and "deadbeef" in card
    assert "load_for_inference" in card
    # a fresh process loads the export and gives the artifact's outputs
    fresh = reload_outputs([(dest, "text-classification")])[str(dest)]
    _, here = inproc_outputs(art, "text-classification")
    np.testing.assert_allclose(np.array(fresh["out"]), here, rtol=1e-5, atol=1e-6)


def test_export_refusals(run_with_artifact, tmp_path):
    run, art = run_with_artifact
    with pytest.raises(InputError, match="not in the run"):
        export(run, "../../etc", to=tmp_path / "x")
    with pytest.raises(InputError, match="inside the artifact cache"):
        export(run, "teacher", to=art.parent / "mine")
    with pytest.raises(InputError, match="overlaps the run directory"):
        export(run, "teacher", to=run / "export")
    with pytest.raises(InputError, match="name one candidate"):
        export(run, to=tmp_path / "x")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    with pytest.raises(InputError, match="not empty"):
        export(run, "teacher", to=tmp_path / "full")
    assert (tmp_path / "full" / "keep.txt").read_text() == "mine"
    with pytest.raises(CompressError, match="is gone"):
        export(run, "int8", to=tmp_path / "y")
    assert not (tmp_path / "y").exists()
    r = run_cli("export", str(run), "nope", "--to", str(tmp_path / "z"), timeout=120)
    assert r.returncode == 2 and "not in the run" in r.stderr and "Traceback" not in r.stderr


def _card_code(dest) -> str:
    card = (dest / "README.md").read_text()
    code = card.split("## Load it", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    return code.replace("PATH", str(dest))


@pytest.mark.parametrize("candidate", ["teacher", "int8"])
def test_model_card_load_snippet_runs_on_a_long_text_and_names_labels(tiny_run, tmp_path,
                                                                      candidate):
    """The card's own code, run as written on a text far longer than the model's 128
    positions: it truncates (it did not), and prints label names (it printed nothing)."""
    import subprocess
    import sys

    from tests.conftest import ROOT, WORDS

    dest = tmp_path / candidate
    export(tiny_run, candidate, to=dest)
    long_text = " ".join(["goal match team win"] * 200)
    code = _card_code(dest).replace('"some text"', repr(long_text))
    assert "truncation=True" in code
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    labels = eval(proc.stdout.strip().splitlines()[-1])  # noqa: S307 - our own print of a list
    assert isinstance(labels, list) and len(labels) == 1 and labels[0] in WORDS, proc.stdout


def test_model_card_says_why_git_is_missing(run_with_artifact, tmp_path):
    run, _ = run_with_artifact
    m = json.loads((run / "manifest.json").read_text())
    (run / "manifest.json").write_text(json.dumps({**m, "git": None}))
    export(run, "teacher", to=tmp_path / "release")
    card = (tmp_path / "release" / "README.md").read_text()
    assert "git None" not in card and "`None`" not in card
    assert "git not recorded (the recipe's folder is not in a git repository)" in card


def test_a_second_export_of_the_same_artifact_replaces_the_first(run_with_artifact, tmp_path):
    """A `compress export` killed after its copy was renamed into place left a complete
    export; the re-run of the same command must finish (issue 16's chaos benchmark found it
    refused), while any other non-empty folder is still refused."""
    from compress.fsutil import file_digests

    run, art = run_with_artifact
    meta = json.loads((art / META_FILE).read_text())
    (art / META_FILE).write_text(json.dumps({**meta, "files": file_digests(art)}))
    dest = tmp_path / "release"
    export(run, "teacher", to=dest)
    first = sorted(p.name for p in dest.iterdir())
    out = export(run, "teacher", to=dest)  # the re-run
    assert sorted(p.name for p in dest.iterdir()) == first and out.path == dest.resolve()
    assert not list(tmp_path.glob(".release.*"))
    (dest / "model.safetensors").write_bytes(b"edited by someone")
    with pytest.raises(InputError, match="not empty"):
        export(run, "teacher", to=dest)
    assert (dest / "model.safetensors").read_bytes() == b"edited by someone"
