"""Benchmark: generated malformed inputs, each must be an exit 2 with a one-paragraph
message and no traceback.

A seeded mutator takes the shipped recipes and suites (recipes/, eval/), a tiny recipe on
a tiny random BERT built offline, its data files and model folder, and the files of one
tiny finished run (results.json, manifest.json, a calibration JSON, catalog and prices
YAML, a gate verdict), and breaks them in every class the issue names: YAML syntax,
non-UTF-8 bytes, a document that is not a mapping, unknown keys, missing required keys,
wrong types, unknown names, out-of-range and absurd numbers, missing files, data files
(missing columns, empty, undecodable), model folders (no tokenizer.json, no config.json,
missing GGUF file, layers it does not have, a revision on a local folder), foreign run
files, corrupt or list-shaped calibration, malformed catalog and prices files, a malformed
--baseline verdict, malformed --set overrides. Every case runs the real CLI entry point
in this process (`compress.cli.main`), capturing its output.

Outcomes: `exit2` (the wanted one: exit 2, a message, one paragraph, no traceback),
`exit2-untidy` (exit 2 but no message or a blank-line-separated one), `accepted` (exit 0:
the mutation was not refused), `exit1`, `traceback` (an exception escaped or a traceback
was printed).

    .venv/bin/python benchmarks/malformed_inputs.py [--per-class 12] [--seed 0] [--out F]

Expected (issue 15): at least 200 cases, every one `exit2`.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import json
import random
import shutil
import sys
import tempfile
import textwrap
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


@dataclass
class Case:
    cls: str
    argv: list[str]
    note: str
    outcome: str = ""
    message: str = ""
    extra: dict = field(default_factory=dict)


# ---------------------------------------------------------------- running one case

def invoke(argv: list[str]) -> tuple[int | None, str, str, str | None]:
    """Run `compress ARGV` in this process: (exit code, stdout, stderr, escaped traceback)."""
    from compress import cli

    out, err = io.StringIO(), io.StringIO()
    code, tb = 0, None
    old_argv = sys.argv
    sys.argv = ["compress", *argv]
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            cli.main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:  # noqa: BLE001 - exactly what this benchmark looks for
        tb = traceback.format_exc()
        code = None
    finally:
        sys.argv = old_argv
    return code, out.getvalue(), err.getvalue(), tb


def judge(case: Case) -> Case:
    code, out, err, tb = invoke(case.argv)
    text = err.strip()
    if tb is not None or "Traceback" in err or "Traceback" in out:
        case.outcome, case.message = "traceback", (tb or err)[-2000:]
    elif code == 2:
        one_paragraph = bool(text) and "\n\n" not in text.replace("\r", "")
        case.outcome = "exit2" if one_paragraph else "exit2-untidy"
        case.message = text
    elif code == 0:
        case.outcome, case.message = "accepted", (out + err)[-500:]
    else:
        case.outcome, case.message = f"exit{code}", text[-1000:]
    return case


# ---------------------------------------------------------------- assets

TINY_SUITE = """\
name: tiny
task: text-classification
dataset: {source: test.csv, text_column: text, label_column: label}
quality: {max_length: 16, batch_size: 8}
latency: {batch_sizes: [1], seq_lens: [16], warmup: 1, iterations: 3, threads: 1}
targets: {max_drop: 0.5}
"""
TINY_RECIPE = """\
name: tiny
task: text-classification
model: ./tiny-bert
suite: suite.yaml
seed: 0
data:
  train: {source: train.csv}
pipeline:
  - id: teacher
    stage: finetune
    with: {epochs: 1, batch_size: 8, max_length: 16, lr: 1.0e-3}
  - id: student
    stage: distill
    with: {keep_layers: [0], epochs: 1, batch_size: 8, max_length: 16}
  - id: onnx
    stage: export
    input: teacher
  - id: int8
    stage: quantize
    with: {backend: ort-dynamic-int8}
candidates: [teacher, student, onnx, int8]
baseline: teacher
"""
WORDS = ["goal", "match", "team", "bank", "market", "profit", "phone", "chip", "data"]


def build_tiny(work: Path) -> Path:
    """A tiny random BERT with tokenizer.json, CSV data, a suite and a recipe."""
    from benchmarks.tiny_assets import build_bert, write_csv
    from compress.quiet import import_transformers

    import_transformers()  # quietly, before build_bert imports it
    tiny = work / "tiny"
    build_bert(tiny / "tiny-bert", WORDS, hidden=16, layers=2, intermediate=32,
               max_positions=32)
    rng = random.Random(0)
    for split, n in (("train", 18), ("test", 9)):
        write_csv(tiny / f"{split}.csv", [(" ".join(rng.choices(WORDS, k=6)), "abc"[i % 3])
                                          for i in range(n)])
    (tiny / "suite.yaml").write_text(TINY_SUITE)
    (tiny / "recipe.yaml").write_text(TINY_RECIPE)
    return tiny


def copy_shipped(work: Path) -> Path:
    shipped = work / "shipped"
    shutil.copytree(ROOT / "recipes", shipped / "recipes")
    shutil.copytree(ROOT / "eval", shipped / "eval")
    return shipped


# ---------------------------------------------------------------- tree mutations

def _paths(node, prefix=(), skip=("student_config",)):
    """Every (path, value) in a YAML tree."""
    yield prefix, node
    if isinstance(node, dict):
        for k, v in node.items():
            if k not in skip:
                yield from _paths(v, prefix + (k,), skip)
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, prefix + (i,), skip)


def _set(tree, path, value):
    node = tree
    for k in path[:-1]:
        node = node[k]
    node[path[-1]] = value


def _delete(tree, path):
    node = tree
    for k in path[:-1]:
        node = node[k]
    del node[path[-1]]


def dump(tree) -> str:
    return yaml.safe_dump(tree, sort_keys=False, allow_unicode=True)


SYNTAX_BREAKERS = ["unclosed: [1, 2", "\tindented_with_a_tab: 1", "key: 'unterminated",
                   "- a list item inside a mapping", "a: b: c", "{broken"]


def m_syntax(text: str, rng) -> str | None:
    lines = text.splitlines()
    for _ in range(20):
        i = rng.randrange(len(lines) + 1)
        new = "\n".join(lines[:i] + [rng.choice(SYNTAX_BREAKERS)] + lines[i:]) + "\n"
        try:
            yaml.safe_load(new)
        except yaml.YAMLError:
            return new
    return None


def m_non_utf8(text: str, rng) -> bytes:
    data = text.encode("utf-8")
    i = rng.randrange(len(data))
    bad = rng.choice([b"\xff", b"\xfe\xfe", b"\xc3\x28", b"\x80abc", b"\xe9"])
    return data[:i] + bad + data[i:]


def m_not_mapping(text: str, rng) -> str:
    return rng.choice(["", "- just\n- a\n- list\n", "42\n", "'a string'\n", "null\n",
                       "[1, 2, 3]\n"])


def m_unknown_key(tree, rng, required=None):
    maps = [p for p, v in _paths(tree) if isinstance(v, dict)]
    path = rng.choice(maps)
    node = tree
    for k in path:
        node = node[k]
    node[f"bogus_{rng.randrange(1000)}"] = rng.choice([1, "x", [1], {"a": 1}])
    return tree, f"unknown key at {path or 'top'}"


def m_wrong_type(tree, rng, required=None):
    leaves = [p for p, v in _paths(tree) if p and not isinstance(v, (dict, list))
              and v is not None]
    path = rng.choice(leaves)
    _set(tree, path, {"not": ["a", "scalar"]})
    return tree, f"mapping in place of {path}"


def m_absurd(tree, rng, required=None):
    nums = [p for p, v in _paths(tree) if isinstance(v, (int, float))
            and not isinstance(v, bool)]
    if not nums:
        return None, ""
    path = rng.choice(nums)
    value = rng.choice([1e308, float("nan"), float("inf"), float("-inf"), -1e12, 10 ** 12])
    _set(tree, path, value)
    return tree, f"{path} = {value}"


def m_missing_required(tree, rng, required=None):
    options = [p for p in required or [] if _exists(tree, p)]
    if not options:
        return None, ""
    path = rng.choice(options)
    _delete(tree, path)
    return tree, f"deleted {path}"


def _exists(tree, path):
    node = tree
    for k in path:
        if isinstance(node, dict) and k in node:
            node = node[k]
        elif isinstance(node, list) and isinstance(k, int) and k < len(node):
            node = node[k]
        else:
            return False
    return True


ENUMS = {"task": "text-generation", "stage": "prune-magic", "backend": "int3",
         "device": "tpu", "method": "vibes", "kind": "fpga", "framework": "tensorflow"}


def m_bad_name(tree, rng, required=None):
    options = [p for p, v in _paths(tree) if p and p[-1] in ENUMS and isinstance(v, str)]
    if not options:
        return None, ""
    path = rng.choice(options)
    _set(tree, path, ENUMS[path[-1]])
    return tree, f"{path} = {ENUMS[path[-1]]}"


COUNTS = ("epochs", "batch_size", "iterations", "max_length", "threads", "batch_sizes",
          "seq_lens", "warmup", "gen_tokens", "top_k", "memory_gb", "bandwidth_gbps",
          "price_per_hour", "compute_efficiency", "memory_efficiency", "every_k", "limit")


AT_LEAST_ONE = {"epochs", "batch_size", "iterations", "max_length", "threads", "batch_sizes",
                "seq_lens", "gen_tokens", "top_k", "every_k", "limit", "compute_efficiency",
                "memory_efficiency"}


def m_out_of_range(tree, rng, required=None):
    options = [p for p, v in _paths(tree) if p and p[-1] in COUNTS]
    if not options:
        return None, ""
    path = rng.choice(options)
    value = rng.choice([0, -3] if path[-1] in AT_LEAST_ONE else [-3, -0.5])
    _set(tree, path, [value] if path[-1] in ("batch_sizes", "seq_lens") else value)
    return tree, f"{path} = {value}"


def m_missing_file(tree, rng, required=None):
    options = [p for p, v in _paths(tree) if p and p[-1] in ("source", "suite",
                                                              "evaluate_module", "model")
               and isinstance(v, str) and not v.startswith("demo:")]
    if not options:
        return None, ""
    path = rng.choice(options)
    _set(tree, path, f"./missing-{rng.randrange(1000)}/nothing.csv")
    return tree, f"{path} -> missing file"


TREE_MUTATORS = {"unknown-key": m_unknown_key, "wrong-type": m_wrong_type,
                 "absurd-number": m_absurd, "missing-required": m_missing_required,
                 "unknown-name": m_bad_name, "out-of-range": m_out_of_range,
                 "missing-file": m_missing_file}
TEXT_MUTATORS = {"yaml-syntax": m_syntax, "non-utf8": m_non_utf8, "not-a-mapping": m_not_mapping}

RECIPE_REQUIRED = [("name",), ("task",), ("model",), ("suite",), ("pipeline", 0, "id"),
                   ("pipeline", 0, "stage"), ("pipeline", 1, "stage")]
SUITE_REQUIRED = [("name",), ("task",), ("dataset",), ("dataset", "source")]


# ---------------------------------------------------------------- case generation

class Maker:
    def __init__(self, work: Path, seed: int):
        self.work, self.rng, self.n = work, random.Random(seed), 0
        self.cases: list[Case] = []

    def path(self, folder: Path, suffix: str) -> Path:
        self.n += 1
        return folder / f"case-{self.n:04d}{suffix}"

    def add(self, cls, argv, note):
        self.cases.append(Case(cls, [str(a) for a in argv], note))


def _write(path: Path, content) -> None:
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")


def yaml_cases(mk: Maker, per_class: int, bases: list[tuple[str, Path, Path | None]]):
    """Mutated recipes and suites. bases: (kind, file, recipe using it if kind == suite)."""
    for cls, fn in {**TEXT_MUTATORS, **TREE_MUTATORS}.items():
        made, tries = 0, 0
        while made < per_class and tries < per_class * 10:
            tries += 1
            kind, base, user = mk.rng.choice(bases)
            text = base.read_text(encoding="utf-8")
            if cls in TEXT_MUTATORS:
                content, note = fn(text, mk.rng), cls
                if content is None:
                    continue
            else:
                required = RECIPE_REQUIRED if kind == "recipe" else SUITE_REQUIRED
                tree, note = fn(copy.deepcopy(yaml.safe_load(text)), mk.rng, required)
                if tree is None:
                    continue
                content = dump(tree)
            target = mk.path(base.parent, ".yaml")
            _write(target, content)
            if kind == "recipe":
                mk.add(f"recipe:{cls}", ["validate", target], f"{base.name}: {note}")
            else:
                rtree = yaml.safe_load(user.read_text())
                rtree["suite"] = str(target)
                rpath = mk.path(user.parent, ".yaml")
                _write(rpath, dump(rtree))
                mk.add(f"suite:{cls}", ["validate", rpath], f"{base.name}: {note}")
            made += 1


def data_cases(mk: Maker, tiny: Path):
    """Broken data files behind the tiny recipe (train data) and suite (eval data)."""
    good = (tiny / "train.csv").read_text()
    variants = {
        "renamed-column": good.replace("text,label", "txt,label", 1),
        "header-only": "text,label\n",
        "empty-file": "",
        "non-utf8": good.encode("utf-8")[:40] + b"\xff\xfe\xe9" + good.encode("utf-8")[40:],
        "binary": bytes(range(256)) * 4,
        "ragged": "text,label\n\"unterminated,a\nx,y,z,w\n",
    }
    for role in ("train", "eval"):
        for name, content in variants.items():
            for suffix in (".csv", ".parquet", ".jsonl") if name == "binary" else (".csv",):
                data = mk.path(tiny, suffix)
                _write(data, content)
                if role == "train":
                    tree = yaml.safe_load(TINY_RECIPE)
                    tree["data"]["train"]["source"] = data.name
                    recipe = mk.path(tiny, ".yaml")
                    _write(recipe, dump(tree))
                else:
                    stree = yaml.safe_load(TINY_SUITE)
                    stree["dataset"]["source"] = data.name
                    suite = mk.path(tiny, ".yaml")
                    _write(suite, dump(stree))
                    tree = yaml.safe_load(TINY_RECIPE)
                    tree["suite"] = suite.name
                    recipe = mk.path(tiny, ".yaml")
                    _write(recipe, dump(tree))
                mk.add(f"data:{name}", ["validate", recipe], f"{role} data {data.name}")


def model_cases(mk: Maker, tiny: Path):
    """Model folders and model settings that cannot run."""
    base = tiny / "tiny-bert"

    def folder(drop=(), corrupt=None):
        f = mk.path(tiny, "-model")
        shutil.copytree(base, f)
        for name in drop:
            (f / name).unlink()
        if corrupt:
            (f / corrupt[0]).write_bytes(corrupt[1])
        return f

    def recipe(model, **changes):
        tree = yaml.safe_load(TINY_RECIPE)
        tree["model"] = model
        for path, value in changes.items():
            _set(tree, tuple(int(p) if p.isdigit() else p for p in path.split(".")), value)
        path = mk.path(tiny, ".yaml")
        _write(path, dump(tree))
        return path

    cases = [
        ("no-tokenizer.json", recipe(str(folder(drop=("tokenizer.json",))))),
        ("no-config.json", recipe(str(folder(drop=("config.json",))))),
        ("config.json-not-json", recipe(str(folder(corrupt=("config.json", b"{oops"))))),
        ("config.json-non-utf8", recipe(str(folder(corrupt=("config.json", b"\xff\xfe"))))),
        ("missing-gguf", recipe({"source": str(base), "gguf_file": "model.Q4.gguf"})),
        ("revision-on-local-folder", recipe({"source": str(base), "revision": "main"})),
        ("unpinned-remote-code",
         recipe({"source": "org-x/model-y", "trust_remote_code": True})),
        ("unpinned-remote-code-branch", recipe({"source": "org-x/model-y", "revision": "v1",
                                                "trust_remote_code": True})),
        ("keep-layers-out-of-range",
         recipe(str(base), **{"pipeline.1.with.keep_layers": [0, 7]})),
        ("keep-layers-negative", recipe(str(base), **{"pipeline.1.with.keep_layers": [-1]})),
        ("every-k-too-large", recipe(str(base), **{"pipeline.1.with": {"every_k": 9}})),
        ("epochs-1e308", recipe(str(base), **{"pipeline.0.with.epochs": 1e308})),
        ("unknown-demo-model", recipe("demo:nope")),
        ("model-is-a-file", recipe(str(base / "config.json"))),
    ]
    for name, path in cases:
        mk.add(f"model:{name}", ["validate", path], name)


def override_cases(mk: Maker, tiny: Path):
    recipe = tiny / "recipe.yaml"
    for o in ("nokeyvalue", "=1", "pipeline.nope.with.epochs=1", "pipeline.9.stage=x",
              "seed=[1, 2]", "name.sub=1", "pipeline.teacher.with.epochs=1e308",
              "suite.latency.threads=0", "suite.nope=1", "task=translation"):
        mk.add("override", ["validate", recipe, "--set", o], o)


GATE_OR_READ = (["show"], ["recommend"], ["gate", "--every-candidate", "--max-drop", "1"])


def run_cases(mk: Maker, run_dir: Path, per_class: int):
    """Foreign run files, calibration, catalog, prices and verdict files against a run."""
    folder = run_dir.parent / "mutants"
    folder.mkdir(exist_ok=True)
    results = json.loads((run_dir / "results.json").read_text())
    manifest = json.loads((run_dir / "manifest.json").read_text())

    def run_copy(name: str, content) -> Path:
        d = mk.path(folder, "-run")
        shutil.copytree(run_dir, d)
        _write(d / name, content)
        return d

    foreign = [("{}", "empty object"), ("[]", "a list"), ("", "empty file"),
               ("not json", "not JSON"), (b"\xff\xfe{}", "non-UTF-8"),
               (json.dumps({"candidates": 3}), "candidates not a list"),
               (json.dumps({"candidates": [{"x": 1}]}), "rows without fields"),
               (json.dumps({"schema": "someone-else/v9", "rows": []}), "another tool's file")]
    commands = (["show"], ["show", "--format", "json"], ["recommend"],
                ["gate", "--every-candidate", "--max-drop", "1"], ["report"])
    for name in ("results.json", "manifest.json"):
        for content, note in foreign:
            for cmd in commands:
                d = run_copy(name, content)
                mk.add(f"run-file:{name}", [cmd[0], d, *cmd[1:]], f"{note} ({' '.join(cmd)})")
    # a manifest/results pair that is valid JSON but mutated in one field
    read = [("recipe",), ("suite",), ("recipe", "resolved"), ("suite", "resolved"),
            ("recipe", "resolved", "name"), ("suite", "resolved", "task")]
    for _ in range(per_class):  # a field the commands read: deleted, or of the wrong type
        tree, path = copy.deepcopy(manifest), mk.rng.choice(read)
        if mk.rng.random() < 0.5:
            _delete(tree, path)
            note = f"manifest: deleted {'.'.join(path)}"
        else:
            _set(tree, path, mk.rng.choice([[1, 2], 7, None]))
            note = f"manifest: {'.'.join(path)} of the wrong type"
        d = run_copy("manifest.json", json.dumps(tree))
        mk.add("run-file:manifest-field", [*mk.rng.choice(GATE_OR_READ), d], note)
    rows = results["candidates"]
    fields = ["candidate", "status", "kind", "accuracy", "latency_p50_ms", "size_mb"]
    for _ in range(per_class):  # a row field the commands read, of the wrong type
        tree, fld = copy.deepcopy(results), mk.rng.choice(fields)
        i = mk.rng.randrange(len(rows))
        tree["candidates"][i][fld] = mk.rng.choice([{"a": 1}, [1], "fast"] if fld not in (
            "candidate", "kind") else [{"a": 1}, [1], 3])
        if fld == "status":
            tree["candidates"][i][fld] = "maybe"
        d = run_copy("results.json", json.dumps(tree))
        mk.add("run-file:results-field", [*mk.rng.choice(GATE_OR_READ), d],
               f"results: candidates[{i}].{fld} of the wrong type")

    calib = [("", "empty"), ("[]", "a list"), ("[1, 2, 3]", "list of numbers"),
             ("{", "not JSON"), (b"\xff", "non-UTF-8"), ("{}", "empty object"),
             (json.dumps({"classes": []}), "classes a list"),
             (json.dumps({"classes": {"cpu-x86-avx512": []}}), "class not a mapping"),
             (json.dumps({"classes": {"cpu-x86-avx512": {"compute_efficiency": "fast"}}}),
              "efficiency a string"),
             ("null", "null"), ("42", "a number")]
    for content, note in calib:
        f = mk.path(folder, ".json")
        _write(f, content)
        for cmd in ("recommend", "gate", "report"):
            extra = ["--every-candidate", "--max-drop", "1"] if cmd == "gate" else []
            mk.add("calibration", [cmd, run_dir, "--calibration", f, *extra], f"{note} ({cmd})")

    catalog_base = ROOT / "compress" / "hardware" / "catalog.yaml"
    prices_base = yaml.safe_dump({"prices": {"T4": {"price_per_hour": 0.5,
                                                    "source": "test"}}})
    pbase = folder / "prices-base.yaml"
    pbase.write_text(prices_base)
    for opt, base in (("--catalog", catalog_base), ("--prices", pbase)):
        for cls, fn in {**TEXT_MUTATORS, **TREE_MUTATORS}.items():
            if cls in ("missing-file", "missing-required"):
                continue
            for _ in range(max(1, per_class // 4)):
                text = base.read_text()
                if cls in TEXT_MUTATORS:
                    content = fn(text, mk.rng)
                    if content is None:
                        continue
                    if cls == "not-a-mapping" and content.strip() in ("", "null"):
                        content = "- a list\n"  # an empty file is an empty catalog
                else:
                    tree, _ = fn(copy.deepcopy(yaml.safe_load(text)), mk.rng, [])
                    if tree is None:
                        continue
                    content = dump(tree)
                f = mk.path(folder, ".yaml")
                _write(f, content)
                mk.add(f"{opt[2:]}:{cls}", ["recommend", run_dir, opt, f], cls)
        mk.add(f"{opt[2:]}:missing-file", ["recommend", run_dir, opt, folder / "nope.yaml"],
               "missing")

    verdicts = [("", "empty"), ("[]", "a list"), ("{", "not JSON"), (b"\xfe", "non-UTF-8"),
                ("{}", "empty object"), (json.dumps({"checks": "all good"}), "checks a string"),
                (json.dumps({"verdict": "pass", "checks": [{"candidate": 1}]}), "bad check"),
                (json.dumps({"candidates": 7}), "results-like, wrong type")]
    for content, note in verdicts:
        f = mk.path(folder, ".json")
        _write(f, content)
        mk.add("baseline-verdict", ["gate", run_dir, "--every-candidate", "--max-drop", "1",
                                    "--baseline", f], note)


def make_cases(work: Path, per_class: int, seed: int, run_dir: Path | None,
               shipped: bool = True) -> list[Case]:
    tiny = build_tiny(work)
    mk = Maker(work, seed)
    bases = [("recipe", tiny / "recipe.yaml", None), ("suite", tiny / "suite.yaml",
                                                      tiny / "recipe.yaml")]
    if shipped:
        sh = copy_shipped(work)
        bases += [("recipe", p, None) for p in sorted((sh / "recipes").glob("*.yaml"))]
        users = {yaml.safe_load(p.read_text())["suite"].split("/")[-1]: p
                 for p in sorted((sh / "recipes").glob("*.yaml"))}
        bases += [("suite", p, users[p.name]) for p in sorted((sh / "eval").glob("*.yaml"))
                  if p.name in users]
    yaml_cases(mk, per_class, bases)
    data_cases(mk, tiny)
    model_cases(mk, tiny)
    override_cases(mk, tiny)
    if run_dir is not None:
        run_cases(mk, run_dir, per_class)
    return mk.cases


def tiny_run(work: Path) -> Path:
    """One real tiny run (teacher and its ONNX export) to break the files of."""
    from compress.engine import run_recipe

    tiny = work / "run-assets"
    tiny.mkdir()
    shutil.copytree(work / "tiny" / "tiny-bert", tiny / "tiny-bert")
    for f in ("train.csv", "test.csv", "suite.yaml"):
        shutil.copy(work / "tiny" / f, tiny / f)
    recipe = tiny / "recipe.yaml"
    recipe.write_text(textwrap.dedent("""\
        name: tiny
        task: text-classification
        model: ./tiny-bert
        suite: suite.yaml
        data: {train: {source: train.csv}}
        pipeline:
          - {id: teacher, stage: finetune, with: {epochs: 1, batch_size: 8, max_length: 16}}
          - {id: onnx, stage: export}
        """))
    run = run_recipe(recipe, out_dir=work / "run", cache_dir=work / "cache")
    assert run.ok, run.rows
    return work / "run"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--per-class", type=int, default=12)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", help="also write the report to this file")
    ap.add_argument("--show", type=int, default=3, help="messages to print per class")
    args = ap.parse_args()

    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    work = Path(tempfile.mkdtemp(prefix="compress-malformed-"))
    os.environ["COMPRESS_CACHE_DIR"] = str(work / "cache")
    t0 = time.perf_counter()
    build_tiny(work / "pre")  # warm imports
    shutil.rmtree(work / "pre")
    cases = make_cases(work, args.per_class, args.seed, None)
    run_dir = tiny_run(work)  # the run-file classes need a finished run
    mk = Maker(work, args.seed + 1)
    mk.n = 10_000
    run_cases(mk, run_dir, args.per_class)
    cases += mk.cases
    setup_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    for case in cases:
        judge(case)
    run_s = time.perf_counter() - t1
    by_cls: dict[str, Counter] = {}
    for c in cases:
        by_cls.setdefault(c.cls, Counter())[c.outcome] += 1
    total = Counter(c.outcome for c in cases)
    import platform
    from datetime import UTC, datetime

    lines = [f"# benchmarks/malformed_inputs.py, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, "
             f"{platform.node()} ({os.cpu_count()} cores, no GPU)",
             f"# command: .venv/bin/python benchmarks/malformed_inputs.py --per-class "
             f"{args.per_class} --seed {args.seed}",
             f"cases: {len(cases)} in {run_s:.0f} s in-process (setup {setup_s:.0f} s); "
             f"outcomes: {dict(total)}", "", f"{'class':<34}{'cases':>6}  outcomes"]
    for cls in sorted(by_cls):
        lines.append(f"{cls:<34}{sum(by_cls[cls].values()):>6}  {dict(by_cls[cls])}")
    lines.append("")
    lines.append("sample messages (first per class):")
    for cls in sorted(by_cls):
        c = next(c for c in cases if c.cls == cls)
        first = c.message.splitlines()[0][:220] if c.message else ""
        lines.append(f"- {cls} [{c.note}]: {first}")
    bad = [c for c in cases if c.outcome != "exit2"]
    if bad:
        lines.append("")
        lines.append("not exit 2 with a clean message:")
        for c in bad:
            lines.append(f"- {c.cls} [{c.note}] {c.outcome}: {' '.join(c.argv[:1])} ... "
                         f"{c.message.strip().splitlines()[-1][:300] if c.message else ''}")
    ok = len(cases) >= 200 and not bad
    lines.append("")
    lines.append("expected: >= 200 cases, every one exit 2 with a one-paragraph message and "
                 "no traceback -> " + ("met" if ok else "NOT met"))
    report = "\n".join(lines) + "\n"
    print(report)
    if args.out:
        Path(args.out).write_text(report)
    shutil.rmtree(work, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
