"""The shape of the code: no import cycle, no oversized module, a measurement worker that
imports neither the stages nor pandas, and a stage interface the planner needs no
special cases for."""

from __future__ import annotations

import ast
import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT, run_stage

PACKAGE = ROOT / "compress"
MAX_LINES = 420  # "about 400"


def import_graph() -> dict[str, set[str]]:
    """module -> compress modules it imports, at top level or inside functions (a lazy
    import is still a dependency); imports for type checkers only are not."""
    mods = {}
    for p in PACKAGE.rglob("*.py"):
        parts = p.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        mods[name] = p
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for m, p in mods.items():
        pkg = m if p.name == "__init__.py" else m.rpartition(".")[0]
        tree = ast.parse(p.read_text())
        typing_only = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If)
                       and getattr(block.test, "id", None) == "TYPE_CHECKING"
                       for n in ast.walk(block)}
        for node in ast.walk(tree):
            if id(node) in typing_only:
                continue
            if isinstance(node, ast.Import):
                graph[m] |= {a.name for a in node.names if a.name in mods}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                    base = ".".join(up + ([node.module] if node.module else []))
                for a in node.names:
                    full = f"{base}.{a.name}"
                    graph[m].add(full if full in mods else base)
        graph[m] &= set(mods)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycle():
    graph = import_graph()
    assert "compress.transforms" in graph["compress.loading"]  # lazy imports are counted
    assert cycles(graph) == []


def test_no_module_over_about_400_lines():
    sizes = {str(p.relative_to(ROOT)): len(p.read_text().splitlines())
             for p in PACKAGE.rglob("*.py")}
    assert {p: n for p, n in sizes.items() if n > MAX_LINES} == {}


def test_stages_import_no_other_stage():
    """Shared stage helpers live in compress.stages.common; a stage imports no sibling."""
    graph = import_graph()
    stage_modules = {"compress.stages.distill", "compress.stages.export",
                     "compress.stages.finetune", "compress.stages.openvino",
                     "compress.stages.prune", "compress.stages.quantize"}
    for m in stage_modules:
        others = {d for d in graph[m] for s in stage_modules - {m}
                  if d == s or d.startswith(s + ".")}
        assert not others, (m, others)


def test_one_definition_of_shared_torch_helpers():
    defs = {"_forward_args": 0, "forward_args": 0, "_cuda_available": 0, "cuda_available": 0}
    for p in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.FunctionDef) and node.name in defs:
                defs[node.name] += 1
    assert defs == {"_forward_args": 0, "forward_args": 1, "_cuda_available": 0,
                    "cuda_available": 1}


WORKER = """
import json, sys
from compress.measure import worker
from compress.measure import runners
from compress import encoding, loading, transforms
worker.import_only({"kind": "pytorch-quantized"})
pandas_on_import = "pandas" in sys.modules
path = sys.argv[1]
runner = runners.make_runner(path, "pytorch-quantized", "text-classification",
                             {"threads": 1, "device": "cpu"})
out = runner(encoding.Encoder(path)(["goal match team"], 16))
print("RESULT" + json.dumps({
    "shape": list(out.shape), "model": type(runner.model.bert.encoder.layer[0].output.dense)
    .__module__,
    "stages": sorted(m for m in sys.modules if m.startswith("compress.stages")),
    "pandas": pandas_on_import}))
"""


def test_measurement_worker_imports_no_stage_and_no_pandas(tiny_bert_cls, tmp_path):
    """A torch-quantized candidate's memory figure must not include the stages' imports:
    the worker reloads it (re-applying the transform) without compress.stages, and its own
    imports (and the import-only baseline's) bring no pandas. (Loading a model through
    transformers' Auto classes does import pandas, via transformers.generation -> sklearn,
    for every PyTorch candidate alike.)"""
    q, _ = run_stage("quantize", {"backend": "torch-dynamic-int8"}, tiny_bert_cls,
                     tmp_path / "q", "text-classification")
    proc = subprocess.run([sys.executable, "-c", WORKER, str(q.path)], capture_output=True,
                          text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(next(x for x in proc.stdout.splitlines()
                          if x.startswith("RESULT"))[len("RESULT"):])
    assert res["shape"] == [1, 3]
    assert "quantized" in res["model"]  # the transform was re-applied
    assert res["stages"] == [] and res["pandas"] is False


# ---------------------------------------------------------------- the stage interface

def test_stage_interface_is_declared_on_the_base():
    from compress.stages.base import Stage, all_stages

    for method in ("check_input", "properties", "label"):
        assert callable(getattr(Stage, method))
    declared = {n for n, s in all_stages().items() if s.default_baseline}
    assert declared == {"finetune"}


DEFAULT_BASELINE = """\
name: tiny
task: text-classification
model: {{model}}
suite: suite.yaml
data:
  train: {{{{source: {{train}}}}}}
pipeline:
  - id: {first}
    stage: {first_stage}
  - id: {second}
    stage: {second_stage}
    input: {second_input}
"""


@pytest.mark.parametrize("order, baseline", [("finetune-first", "teacher"),
                                             ("export-first", "model")])
def test_default_baseline_comes_from_the_stage(write_recipe, monkeypatch, order, baseline):
    from compress.engine import prepare
    from compress.stages.base import get_stage

    if order == "finetune-first":
        recipe = DEFAULT_BASELINE.format(first="teacher", first_stage="finetune",
                                         second="onnx", second_stage="export",
                                         second_input="teacher")
    else:  # export first: no stage that declares itself the baseline comes first
        recipe = DEFAULT_BASELINE.format(first="onnx", first_stage="export",
                                         second="teacher", second_stage="finetune",
                                         second_input="model")
    plan = prepare(write_recipe(recipe))
    assert {c.baseline.step for c in plan.candidates} == {baseline}
    # the declaration, not the stage's name, decides: withdraw it and the model is the baseline
    monkeypatch.setattr(type(get_stage("finetune")), "default_baseline", False)
    plan = prepare(write_recipe(recipe))
    assert {c.baseline.step for c in plan.candidates} == {"model"}


def test_quantize_config_is_a_discriminated_union():
    import typing

    from pydantic import ValidationError

    from compress.stages.quantize import BACKENDS, Quantize, QuantizeConfig

    args = typing.get_args(QuantizeConfig)
    assert args[1].discriminator == "backend"
    assert set(typing.get_args(args[0])) == {b.Config for b in BACKENDS.values()}
    stage = Quantize()
    assert type(stage.parse_config({"backend": "bnb-nf4"})).__name__ == "BnbConfig"
    with pytest.raises(ValidationError) as exc:
        stage.parse_config({"backend": "ort-dynamic-int8", "block_size": 32})
    assert exc.value.errors()[0]["type"] == "extra_forbidden"


def test_graph_optimization_is_a_property_of_the_node(write_recipe):
    """quantize learns the optimisation level from the properties export declared, not from
    export's field names."""
    from compress.engine import prepare

    recipe = """\
name: tiny
task: text-classification
model: {model}
suite: suite.yaml
pipeline:
  - id: onnx
    stage: export
    with: {{optimize: O1}}
  - id: fused
    stage: optimize
    with: {{level: O3}}
"""
    plan = prepare(write_recipe(recipe))
    assert [n.properties for n in plan.nodes] == [{"graph_optimization": "O1"},
                                                  {"graph_optimization": "O3"}]


def test_architecture_page_names_real_modules_and_is_linked():
    import re

    page = (ROOT / "docs" / "ARCHITECTURE.md").read_text()
    assert "docs/ARCHITECTURE.md" in (ROOT / "README.md").read_text()
    named = set(re.findall(r"`([\w/]+\.(?:py|yaml))`", page))
    assert len(named) > 20
    files = {p.relative_to(PACKAGE).as_posix() for p in PACKAGE.rglob("*.*")}
    missing = [n for n in named if not (ROOT / n).exists()
               and not any(f == n or f.endswith("/" + n) for f in files)]
    assert missing == []
    # every module of the package is on the page (by path, or its package is)
    for p in PACKAGE.rglob("*.py"):
        rel = p.relative_to(PACKAGE).as_posix()
        if p.name == "__init__.py" or p.parent.name in ("quantize",):
            continue
        assert rel in named or p.name in named or f"{p.parent.name}/" in page, rel
