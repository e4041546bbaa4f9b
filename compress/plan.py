"""Turn a validated recipe into a plan: one chain of stage runs per candidate.

Each stage run (a node) is keyed by a content hash of its input's key, its resolved config
(every `auto` replaced), fingerprints of the data it reads, the task, the seed where the
stage is random, and the stage's code version. Candidates that share a prefix share nodes,
so that work runs once, and a cache keyed this way can never serve a stale artifact.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from pydantic import ValidationError

from compress.artifacts import Kind
from compress.data import check_columns, describe_source, fingerprint, load_frame
from compress.datacheck import check_eval_labels, eval_size_warnings
from compress.errors import InputError
from compress.models import gguf_file, resolve_model
from compress.provenance import package_versions
from compress.recipe import MODEL_STEP, Recipe
from compress.stages.base import StageConfig, all_stages, get_stage
from compress.suite import Suite
from compress.yamlsource import describe_error, format_loc


def content_key(payload: dict) -> str:
    blob = json.dumps(payload, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:20]


@dataclass
class Node:
    """One stage run (or the input model, for step 'model')."""

    key: str
    step: str
    stage: str | None
    config: StageConfig | None
    kind: Kind
    parent: Node | None = None
    variant: dict[str, Any] = field(default_factory=dict)  # this step's swept settings
    data_fingerprints: dict[str, str] = field(default_factory=dict)
    properties: dict[str, Any] = field(default_factory=dict)  # declared by its stage
    layers: int | None = None  # transformer blocks of this node's model, where known

    def chain(self) -> list[Node]:
        out, node = [], self
        while node is not None:
            out.append(node)
            node = node.parent
        return out[::-1]

    def config_dict(self) -> dict:
        return self.config.model_dump(mode="json") if self.config is not None else {}


@dataclass
class Candidate:
    name: str
    node: Node
    baseline: Node
    role: str = "candidate"  # or "baseline" when only measured as the reference


@dataclass
class Plan:
    recipe: Recipe
    suite: Suite
    model_path: str
    model_node: Node
    nodes: list[Node]  # topological order, unique keys, model node excluded
    candidates: list[Candidate]
    data: dict[str, pd.DataFrame]
    eval_data: pd.DataFrame
    model_revision: str | None = None  # passed to from_pretrained for a hub id
    warnings: list[str] = field(default_factory=list)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, dict)):
        return json.dumps(value, separators=(",", ":"))
    return str(value).lower() if isinstance(value, bool) else str(value)


def candidate_name(node: Node) -> str:
    """'int8' or, when settings were swept on its chain, 'int8@epochs=2,per_channel=true'."""
    chain = [n for n in node.chain() if n.variant]
    counts: dict[str, int] = {}
    for n in chain:
        for k in n.variant:
            counts[k] = counts.get(k, 0) + 1
    parts = [f"{n.step + '.' if counts[k] > 1 else ''}{k}={_fmt(v)}"
             for n in chain for k, v in n.variant.items()]
    return node.step + ("@" + ",".join(parts) if parts else "")


def _variants(sweep: dict[str, list]) -> list[dict[str, Any]]:
    keys = list(sweep)
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*sweep.values())]


def load_data(recipe: Recipe, suite: Suite, suite_src) -> tuple[dict, pd.DataFrame]:
    """Load the recipe's data roles and the suite's eval set, checking their columns and
    their contents (compress.datacheck)."""
    from compress.datacheck import frame_problems, label_type_problem

    src = recipe.source
    frames = {}
    for role, spec in recipe.data.items():
        try:
            frames[role] = load_frame(spec, recipe.base_dir)
        except InputError as exc:
            raise src.error(("data", role, "source"), str(exc)) from None
        for fld, col in check_columns(frames[role], spec):
            raise src.error(("data", role, fld), f"column {col!r} not in the data "
                            f"(columns: {', '.join(map(str, frames[role].columns))})")
        if frames[role].empty:
            raise src.error(("data", role), "the dataset is empty")
        where = describe_source(spec, recipe.base_dir)
        for fld, msg in frame_problems(frames[role], where, [spec.text_column],
                                       spec.label_column):
            raise src.error(("data", role, fld), msg)
    try:
        eval_df = load_frame(suite.dataset, suite_src.path.parent)
    except InputError as exc:
        raise suite_src.error(("dataset", "source"), str(exc)) from None
    ds = suite.dataset
    for fld, col in check_columns(eval_df, ds):
        raise suite_src.error(("dataset", fld), f"column {col!r} not in the data "
                              f"(columns: {', '.join(map(str, eval_df.columns))})")
    if eval_df.empty:
        raise suite_src.error(("dataset",), "the eval dataset is empty")
    eval_where = describe_source(ds, suite_src.path.parent)
    texts = [ds.text_column] + ([ds.text_pair_column] if ds.text_pair_column else [])
    for fld, msg in frame_problems(eval_df, eval_where, texts, ds.label_column,
                                   ds.score_column):
        raise suite_src.error(("dataset", fld), msg)
    train = recipe.data.get("train")
    if train is not None and train.label_column is not None:
        train_where = describe_source(train, recipe.base_dir)
        others = [(("data", r, "label_column"), src, frames[r][s.label_column],
                   describe_source(s, recipe.base_dir))
                  for r, s in recipe.data.items() if r != "train" and s.label_column]
        if ds.label_column and suite.task == "text-classification":
            others.append((("dataset", "label_column"), suite_src, eval_df[ds.label_column],
                           eval_where))
        for loc, where_src, series, where in others:
            msg = label_type_problem(frames["train"][train.label_column], series, train_where,
                                     where)
            if msg:
                raise where_src.error(loc, msg)
    return frames, eval_df


def build_plan(recipe: Recipe, suite: Suite, suite_src) -> Plan:
    """Validate everything the schema cannot (stages, chains, data) and key every node."""
    src = recipe.source
    if suite.task != recipe.task:
        raise src.error(("suite",), f"suite {recipe.suite!r} is for task {suite.task!r}, "
                                    f"but the recipe's task is {recipe.task!r}")
    try:
        resolved = resolve_model(recipe.model, recipe.base_dir)
    except InputError as exc:
        raise src.error(getattr(exc, "loc", ("model", "source")), str(exc)) from None
    model_path = resolved.path
    frames, eval_df = load_data(recipe, suite, suite_src)
    fps = {role: fingerprint(df) for role, df in frames.items()}
    versions = package_versions()  # what produced an artifact is part of its key

    model_id = {"model": resolved.identity}
    if gguf_file(recipe.model):  # converted by transformers: its version matters
        model_id["versions"] = versions
    model_node = Node(key=content_key(model_id), step=MODEL_STEP, stage=None, config=None,
                      kind=Kind.PYTORCH, layers=model_layers(model_path))
    outputs: dict[str, list[Node]] = {MODEL_STEP: [model_node]}
    nodes: dict[str, Node] = {}
    known = all_stages()
    previous = MODEL_STEP
    for i, step in enumerate(recipe.pipeline):
        loc = ("pipeline", i)
        if step.id in outputs:
            raise src.error(loc + ("id",), f"duplicate step id {step.id!r}")
        if step.stage not in known:
            raise src.error(loc + ("stage",), f"unknown stage {step.stage!r}; expected one of: "
                                              + ", ".join(sorted(known)))
        stage = get_stage(step.stage)
        source_step = step.input or previous
        if source_step not in outputs:
            raise src.error(loc + ("input",), f"no earlier step {source_step!r}; expected one "
                                              f"of: {', '.join(outputs)}")
        for key, values in step.sweep.items():
            if not values:
                raise src.error(loc + ("sweep", key), "empty sweep: give at least one value")
            if key in step.settings:
                raise src.error(loc + ("sweep", key), f"{key!r} is set in both 'with' and "
                                                      "'sweep'; keep one")
        configs = []
        for variant in _variants(step.sweep):
            try:
                config = stage.parse_config({**step.settings, **variant})
            except ValidationError as exc:
                raise _config_error(src, loc, step, stage, variant, exc) from None
            reason = stage.check(config, recipe.task)
            if reason:
                raise src.error(loc + ("stage",), reason)
            configs.append((variant, stage.resolve(config)))

        roles = {}
        for _, config in configs:
            for role, required in stage.data_roles(config).items():
                if role in frames:
                    roles[role] = fps[role]
                elif required:
                    raise src.error(("data",), f"step {step.id!r} ({step.stage}) needs data "
                                               f"role {role!r}; add data.{role}")
        outs = []
        for parent in outputs[source_step]:
            for variant, config in configs:
                if parent.kind not in stage.accepts(config):
                    raise src.error(loc + ("input",), _chain_message(step, parent, stage, config))
                reason = stage.check_input(config, parent)
                if reason:
                    raise src.error(loc + ("input",), reason)
                bad = layer_problem(config, parent)
                if bad:
                    raise src.error(loc + ("with", bad[0]), bad[1])
                used = {r: fp for r, fp in roles.items() if r in stage.data_roles(config)}
                key = content_key({
                    "stage": step.stage, "version": stage.version,
                    "config": config.model_dump(mode="json"), "parent": parent.key,
                    "data": used, "task": recipe.task,
                    "seed": recipe.seed if stage.uses_seed else None,
                    "versions": versions,
                })
                node = nodes.get(key) or Node(key=key, step=step.id, stage=step.stage,
                                              config=config, parent=parent, variant=variant,
                                              kind=stage.produces(config, parent.kind),
                                              data_fingerprints=used,
                                              properties=stage.properties(config,
                                                                          parent.properties),
                                              layers=layers_after(config, parent.layers))
                nodes[key] = node
                outs.append(node)
        outputs[step.id] = outs
        previous = step.id

    candidates = _candidates(recipe, outputs)
    check_eval_labels(recipe, suite, suite_src, model_path, frames, eval_df, candidates)
    return Plan(recipe=recipe, suite=suite, model_path=model_path, model_node=model_node,
                nodes=list(nodes.values()), candidates=candidates, data=frames,
                eval_data=eval_df, model_revision=resolved.revision,
                warnings=([resolved.warning] if resolved.warning else [])
                + eval_size_warnings(suite, len(eval_df)))


def model_layers(model_path: str) -> int | None:
    """Transformer blocks of a local model folder (config.json), or None if unknown."""
    cfg = Path(model_path) / "config.json"
    try:
        data = json.loads(cfg.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    for name in ("num_hidden_layers", "n_layer", "num_layers"):
        if isinstance(data, dict) and isinstance(data.get(name), int):
            return data[name]
    return None


def layer_problem(config: StageConfig, parent: Node) -> tuple[str, str] | None:
    """(setting, reason) when layer indices in a config do not exist in the input model, so
    `validate` refuses them instead of the stage failing at run time."""
    n = parent.layers
    if n is None:
        return None
    for name in ("keep_layers", "drop_layers"):
        idx = getattr(config, name, None) or []
        bad = [i for i in idx if not 0 <= i < n]
        if bad:
            return name, (f"layer {bad[0]} does not exist: the input {parent.step!r} has {n} "
                          f"layers (0..{n - 1})")
        if name == "drop_layers" and idx and len(set(idx)) >= n:
            return name, f"drops all {n} layers of {parent.step!r}; keep at least one"
    every_k = getattr(config, "every_k", None)
    if every_k is not None and every_k >= n:
        return "every_k", f"{every_k} >= the {n} layers of {parent.step!r}: keeps only layer 0"
    return None


def layers_after(config: StageConfig, layers: int | None) -> int | None:
    """Transformer blocks after a stage: fewer when it keeps or drops layers."""
    if layers is None:
        return None
    if getattr(config, "keep_layers", None):
        return len(config.keep_layers)
    if getattr(config, "every_k", None):
        return len(range(0, layers, config.every_k))
    if getattr(config, "student_config", None):
        return config.student_config.get("num_hidden_layers", layers)
    if getattr(config, "drop_layers", None):
        return layers - len(set(config.drop_layers))
    return layers


def _config_error(src, loc, step, stage, variant, exc: ValidationError):
    lines = []
    settings = {**step.settings, **variant}
    for err in exc.errors():
        err_loc = tuple(err["loc"])
        if err["type"] in ("union_tag_invalid", "union_tag_not_found"):
            # the tag itself (e.g. quantize's backend) is missing or names no config class
            err_loc = (stage.tag,)
            err = {**err, "type": "missing" if err["type"] == "union_tag_not_found"
                   else "union_tag_invalid", "input": settings.get(stage.tag)}
        elif stage.tag and err_loc and err_loc[0] == settings.get(stage.tag):
            err_loc = err_loc[1:]  # pydantic puts the tag first in a union member's errors
        field_name = err_loc[0] if err_loc else None
        if field_name in variant:
            j = step.sweep[field_name].index(variant[field_name])
            where = loc + ("sweep", field_name, j)
        else:
            where = loc + ("with",) + err_loc
        if err["type"] == "extra_forbidden":
            fields = sorted({f for c in stage.config_types().values() for f in c.model_fields})
            msg = f"unknown setting {field_name!r} for stage {step.stage}; expected one of: " \
                  + ", ".join(fields)
        elif err["type"] == "missing":
            msg = "required setting is missing"
        else:
            msg = describe_error(err)
        lines.append(f"{src.where(where)}: {format_loc(where)}: {msg}")
    from compress.errors import RecipeError

    return RecipeError("\n".join(lines))


def _chain_message(step, parent: Node, stage, config) -> str:
    accepts = ", ".join(sorted(k.value for k in stage.accepts(config)))
    return (f"step {step.id!r} ({stage.label(config)}) cannot take the output of "
            f"{parent.step!r}, which is a {parent.kind.value} artifact; it needs: {accepts}")


def _candidates(recipe: Recipe, outputs: dict[str, list[Node]]) -> list[Candidate]:
    src = recipe.source
    ids = recipe.candidates if recipe.candidates is not None else [s.id for s in recipe.pipeline]
    if not ids:
        raise src.error(("candidates",), "no candidates: list at least one step id")
    for j, cid in enumerate(ids):
        if cid not in outputs:
            raise src.error(("candidates", j), f"unknown step {cid!r}; expected one of: "
                                               + ", ".join(outputs))
    baseline = recipe.baseline
    if baseline is None:  # the first step, if its stage declares itself the reference
        first = recipe.pipeline[0] if recipe.pipeline else None
        baseline = first.id if first is not None and (first.input or MODEL_STEP) == MODEL_STEP \
            and get_stage(first.stage).default_baseline else MODEL_STEP
    elif baseline not in outputs:
        raise src.error(("baseline",), f"unknown step {baseline!r}; expected one of: "
                                       + ", ".join(outputs))
    out: dict[str, Candidate] = {}
    for cid in ids:
        for node in outputs[cid]:
            base = next((n for n in node.chain() if n.step == baseline), None)
            if base is None:
                raise src.error(("baseline",), f"candidate {cid!r} does not descend from the "
                                               f"baseline step {baseline!r}")
            out.setdefault(node.key, Candidate(candidate_name(node), node, base))
    for cand in list(out.values()):
        if cand.baseline.key not in out:
            out[cand.baseline.key] = Candidate(candidate_name(cand.baseline), cand.baseline,
                                               cand.baseline, role="baseline")
    names = [c.name for c in out.values()]
    if len(set(names)) != len(names):
        raise src.error(("candidates",), f"candidate names collide: {names}")
    return list(out.values())


def describe(plan: Plan) -> dict:
    """A JSON-able summary of the plan (for the manifest and `validate --plan`)."""
    return {
        "model": plan.model_path,
        "nodes": [{"key": n.key, "step": n.step, "stage": n.stage, "kind": n.kind.value,
                   "config": n.config_dict(), "parent": n.parent.key if n.parent else None,
                   "data": n.data_fingerprints} for n in plan.nodes],
        "candidates": [{"name": c.name, "key": c.node.key, "step": c.node.step,
                        "kind": c.node.kind.value, "baseline": c.baseline.key, "role": c.role}
                       for c in plan.candidates],
    }
