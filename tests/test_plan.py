"""Sweep expansion, candidate naming and content keys."""

from __future__ import annotations

from compress.engine import prepare
from compress.plan import candidate_name
from compress.stages.quantize import detect_isa
from tests.conftest import RECIPE

SWEPT = RECIPE.replace(
    "with: {{epochs: 10, batch_size: 8, max_length: 32, lr: 3.0e-3}}",
    "with: {{batch_size: 8, max_length: 32}}\n    sweep: {{epochs: [1, 2], lr: [1.0e-3]}}"
).replace("with: {{backend: ort-dynamic-int8}}",
          "with: {{backend: ort-dynamic-int8}}\n    sweep: {{per_channel: [false, true]}}")


def test_sweeps_expand_as_cartesian_product_with_readable_names(write_recipe):
    plan = prepare(write_recipe(SWEPT))
    names = [c.name for c in plan.candidates]
    assert names == [
        "teacher@epochs=1,lr=0.001", "teacher@epochs=2,lr=0.001",
        "onnx@epochs=1,lr=0.001", "onnx@epochs=2,lr=0.001",
        "int8@epochs=1,lr=0.001,per_channel=false", "int8@epochs=1,lr=0.001,per_channel=true",
        "int8@epochs=2,lr=0.001,per_channel=false", "int8@epochs=2,lr=0.001,per_channel=true",
    ]
    # 2 finetunes, 2 exports, 4 quantizations: shared prefixes are planned once
    assert [n.stage for n in plan.nodes].count("finetune") == 2
    assert [n.stage for n in plan.nodes].count("export") == 2
    assert len(plan.nodes) == 8
    # each candidate is judged against the teacher on its own chain
    for c in plan.candidates:
        assert c.baseline.step == "teacher"
        assert c.baseline.variant["epochs"] == c.node.chain()[1].variant["epochs"]


def test_same_setting_swept_in_two_steps_is_qualified_by_step():
    from compress.artifacts import Kind
    from compress.plan import Node

    a = Node(key="a", step="a", stage="x", config=None, kind=Kind.PYTORCH, variant={"lr": 1})
    b = Node(key="b", step="b", stage="x", config=None, kind=Kind.PYTORCH, parent=a,
             variant={"lr": 2, "bits": 8})
    assert candidate_name(b) == "b@a.lr=1,b.lr=2,bits=8"


def test_keys_change_only_downstream_of_a_changed_setting(write_recipe):
    path = write_recipe()
    base = {n.step: n.key for n in prepare(path).nodes}
    again = {n.step: n.key for n in prepare(path).nodes}
    assert base == again  # deterministic
    last = {n.step: n.key for n in prepare(path, ["pipeline.int8.with.per_channel=true"]).nodes}
    assert last["teacher"] == base["teacher"] and last["onnx"] == base["onnx"]
    assert last["int8"] != base["int8"]
    first = {n.step: n.key for n in prepare(path, ["pipeline.teacher.with.lr=0.01"]).nodes}
    assert all(first[s] != base[s] for s in base)  # everything downstream changes


def test_data_and_seed_are_part_of_the_key(write_recipe):
    path = write_recipe()
    base = {n.step: n.key for n in prepare(path).nodes}
    fewer = {n.step: n.key for n in prepare(path, ["data.train.limit=20"]).nodes}
    assert fewer["teacher"] != base["teacher"]
    reseeded = {n.step: n.key for n in prepare(path, ["seed=1"]).nodes}
    assert reseeded["teacher"] != base["teacher"]


def test_auto_settings_are_resolved_before_hashing(write_recipe):
    path = write_recipe()
    auto = prepare(path).nodes[-1]
    assert auto.config.isa == detect_isa()
    explicit = prepare(path, [f"pipeline.int8.with.isa={detect_isa()}"]).nodes[-1]
    assert explicit.key == auto.key
