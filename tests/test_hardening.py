"""Issue 15: model revisions are loaded as pinned, keys carry package versions, --out and
run directories are safe, bad input is an exit 2 with a message, exports are verified."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from compress.artifacts import Artifact, Kind
from compress.engine import default_run_dir, measurement_key, prepare, run_recipe
from compress.errors import InputError, RecipeError
from tests.conftest import RECIPE, run_cli

COMMIT = "a" * 40


# ---------------------------------------------------------------- hub revisions

@pytest.fixture
def hub_cache(tmp_path, monkeypatch, tiny_bert):
    """A local Hugging Face cache holding org/tiny at COMMIT, with refs/main pointing to it."""
    import huggingface_hub.constants as C

    root = tmp_path / "hf"
    repo = root / "models--org--tiny"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(COMMIT)
    shutil.copytree(tiny_bert, repo / "snapshots" / COMMIT)
    monkeypatch.setattr(C, "HF_HUB_CACHE", str(root))
    return repo


def test_a_hub_branch_resolves_to_its_commit_in_the_local_cache(write_recipe, hub_cache):
    plan = prepare(write_recipe(RECIPE.replace("model: {model}", "model: org/tiny")))
    assert plan.model_path == str(hub_cache / "snapshots" / COMMIT)  # loads exactly that
    assert not plan.warnings
    pinned = prepare(write_recipe(RECIPE.replace(
        "model: {model}", f"model: {{{{source: org/tiny, revision: {COMMIT}}}}}")))
    assert pinned.model_node.key == plan.model_node.key


def test_trust_remote_code_needs_a_commit(write_recipe, hub_cache):
    path = write_recipe(RECIPE.replace(
        "model: {model}", "model: {{source: org/other, trust_remote_code: true}}"))
    with pytest.raises(RecipeError, match="40-hex commit") as exc:
        prepare(path)
    assert "model.revision" in str(exc.value) and "recipe.yaml:3" in str(exc.value)
    proc = run_cli("validate", str(path))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr


def test_an_unresolved_branch_floats_with_a_warning(write_recipe, hub_cache):
    plan = prepare(write_recipe(RECIPE.replace(
        "model: {model}", "model: {{source: org/other, revision: v2}}")))
    assert plan.model_path == "org/other" and plan.model_revision == "v2"
    assert "floats" in plan.warnings[0] and "40-hex" in plan.warnings[0]
    pinned = prepare(write_recipe(RECIPE.replace(
        "model: {model}", f"model: {{{{source: org/other, revision: {COMMIT}}}}}")))
    assert pinned.model_revision == COMMIT and not pinned.warnings
    assert pinned.model_node.key != plan.model_node.key


def test_every_from_pretrained_of_the_input_model_gets_the_revision(monkeypatch, tmp_path):
    """The High item: the stage loading a hub model passes its revision to transformers."""
    import transformers

    from compress.stages.base import StageContext, get_stage
    from tests.conftest import text_frame

    seen = []

    class Stop(Exception):
        pass

    def recorder(name):
        def from_pretrained(path, *args, **kwargs):
            seen.append((name, str(path), kwargs.get("revision")))
            if name == "model":
                raise Stop
            return _FakeTok()
        return from_pretrained

    class _FakeTok:
        pad_token = "[PAD]"
        eos_token = None

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", recorder("tokenizer"))
    monkeypatch.setattr(transformers.AutoModelForSequenceClassification, "from_pretrained",
                        recorder("model"))
    source = Artifact(key="k", path=Path("org/tiny"), kind=Kind.PYTORCH,
                      meta={"key": "k", "revision": COMMIT})
    stage = get_stage("finetune")
    frame = text_frame()
    ctx = StageContext(task="text-classification", seed=0, data={"train": frame},
                       columns={"train": ("text", "label")})
    with pytest.raises(Stop):
        stage.run(ctx, source, stage.parse_config({"epochs": 1}), tmp_path / "out")
    assert seen and all(rev == COMMIT for _, _, rev in seen), seen


# ---------------------------------------------------------------- keys

def test_keys_change_with_the_package_versions(write_recipe, monkeypatch):
    import compress.engine as E
    import compress.plan as P

    path = write_recipe()
    before = prepare(path)
    mkey = measurement_key(before, before.nodes[0].key, None)
    upgraded = {**P.package_versions(), "torch": "99.0"}
    monkeypatch.setattr(P, "package_versions", lambda: upgraded)
    monkeypatch.setattr(E, "package_versions", lambda: upgraded)
    after = prepare(path)
    assert [n.key for n in after.nodes] != [n.key for n in before.nodes]
    assert all(a.key != b.key for a, b in zip(after.nodes, before.nodes, strict=True))
    assert measurement_key(after, before.nodes[0].key, None) != mkey


# ---------------------------------------------------------------- --out and run dirs

def test_out_must_be_new_empty_or_a_run_dir_and_is_checked_first(write_recipe, tmp_path,
                                                                  monkeypatch):
    import compress.engine as E

    monkeypatch.setattr(E, "build_all", lambda *a, **k: pytest.fail("work started"))
    path = write_recipe()
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "thesis.tex").write_text("years of work")
    with pytest.raises(InputError, match="not a run directory"):
        run_recipe(path, out_dir=busy)
    assert (busy / "thesis.tex").read_text() == "years of work"
    (tmp_path / "afile").write_text("x")
    with pytest.raises(InputError, match="cannot create"):
        run_recipe(path, out_dir=tmp_path / "afile" / "run")
    proc = run_cli("run", str(path), "--out", str(busy))
    assert proc.returncode == 2 and "not a run directory" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_two_runs_started_in_the_same_second_get_their_own_dirs(write_recipe, tmp_path):
    plan = prepare(write_recipe())
    dirs = {default_run_dir(plan, tmp_path / "runs") for _ in range(3)}
    assert len(dirs) == 3 and all(d.is_dir() for d in dirs)


# ---------------------------------------------------------------- validate catches

def test_validate_refuses_a_model_folder_without_tokenizer_json(write_recipe, tiny_bert,
                                                                 tmp_path):
    bare = tmp_path / "bare"
    shutil.copytree(tiny_bert, bare)
    (bare / "tokenizer.json").unlink()
    path = write_recipe(RECIPE.replace("model: {model}", f"model: {bare}"))
    proc = run_cli("validate", str(path))
    assert proc.returncode == 2 and "tokenizer.json" in proc.stderr
    assert "model.source" in proc.stderr and "Traceback" not in proc.stderr


def test_validate_refuses_a_missing_gguf_file(write_recipe, tiny_bert):
    path = write_recipe(RECIPE.replace(
        "model: {model}", "model: {{source: {model}, gguf_file: nope.gguf}}"))
    with pytest.raises(RecipeError, match="model.gguf_file: file 'nope.gguf' not found"):
        prepare(path)


DISTILL = RECIPE.replace("""  - id: onnx
    stage: export
""", """  - id: student
    stage: distill
    with: {{keep_layers: [0, 5], epochs: 1}}
  - id: onnx
    stage: export
""")


def test_validate_refuses_layers_the_model_does_not_have(write_recipe):
    with pytest.raises(RecipeError, match=r"keep_layers: layer 5 does not exist: the input "
                                          r"'teacher' has 2 layers \(0..1\)"):
        prepare(write_recipe(DISTILL))
    ok = prepare(write_recipe(DISTILL.replace("[0, 5]", "[1]")))
    assert next(n for n in ok.nodes if n.step == "student").layers == 1


@pytest.mark.parametrize("value", ["1e308", ".inf", ".nan", "10000000000"])
def test_validate_refuses_absurd_numbers(write_recipe, value):
    assert "epochs: 10," in RECIPE  # (it replaced "epochs: 1," and so tested nothing)
    path = write_recipe(RECIPE.replace("epochs: 10,", f"epochs: {value},"))
    with pytest.raises(RecipeError, match="epochs"):
        prepare(path)


def test_a_non_utf8_recipe_is_an_exit_2(write_recipe, tmp_path):
    path = write_recipe()
    path.write_bytes(path.read_bytes().replace(b"name: tiny", b"name: t\xe9st"))
    proc = run_cli("validate", str(path))
    assert proc.returncode == 2 and "not UTF-8" in proc.stderr
    assert "Traceback" not in proc.stderr


# ---------------------------------------------------------------- export

def test_export_verifies_digests_and_removes_killed_exports_leftovers(tiny_run, tmp_path):
    from compress.export import export
    from compress.results import load_run

    run = load_run(tiny_run)
    row = next(r for r in run.rows if r["candidate"] == "onnx")
    leftover = tmp_path / ".out.0123abcd.compress-export"  # what a killed export leaves
    leftover.mkdir()
    (leftover / "model.onnx").write_bytes(b"half")
    out = export(run, "onnx", to=tmp_path / "out")
    assert (out.path / "model.onnx").is_file() and not leftover.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert "Prov" in (out.path / "README.md").read_text(encoding="utf-8")
    # a tampered cached file is refused, and the destination is not created
    model = Path(row["artifact_path"]) / "model.onnx"
    saved = model.read_bytes()
    try:
        model.write_bytes(saved[:-1] + bytes([saved[-1] ^ 1]))
        from compress.errors import CompressError

        with pytest.raises(CompressError, match="corrupt"):
            export(run, "onnx", to=tmp_path / "bad")
        assert not (tmp_path / "bad").exists()
    finally:
        model.write_bytes(saved)


def test_results_json_is_strict_json(tiny_run):
    text = (tiny_run / "results.json").read_text()
    json.loads(text, parse_constant=lambda c: pytest.fail(f"bare {c} in results.json"))
    proc = run_cli("show", str(tiny_run), "--format", "json")
    assert proc.returncode == 0
    json.loads(proc.stdout, parse_constant=lambda c: pytest.fail(f"bare {c} in show"))


def test_reports_are_utf8_whatever_the_locale(tiny_run, tmp_path):
    """JUnit, markdown and the model card are UTF-8 even under an ASCII locale."""
    env = {"LC_ALL": "C", "PYTHONUTF8": "0"}
    proc = run_cli("gate", str(tiny_run), "--every-candidate", "--max-drop", "1", "--markdown",
                   str(tmp_path / "s.md"),
                   "--junit",
                   str(tmp_path / "j.xml"), "--json", str(tmp_path / "v.json"), env=env)
    assert proc.returncode in (0, 1), proc.stderr
    assert "Traceback" not in proc.stderr
    for name in ("s.md", "j.xml", "v.json"):
        (tmp_path / name).read_bytes().decode("utf-8")
    proc = run_cli("export", str(tiny_run), "onnx", "--to", str(tmp_path / "card"), env=env)
    assert proc.returncode == 0, proc.stderr
    card = (tmp_path / "card" / "README.md").read_bytes().decode("utf-8")
    assert "→" in card or "none (the model as given)" in card
