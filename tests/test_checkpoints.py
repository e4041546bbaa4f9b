"""Training that survives preemption (issue 16): checkpoints during finetune, distill and
prune recovery, resumption after kill -9 or SIGTERM with byte-identical final weights, and
the checkpoint area's place in the cache (kept by cleanup and prune, removed on commit or
by --prune-checkpoints)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from benchmarks.tiny_assets import recipe_template
from compress.artifacts import META_FILE
from compress.checkpoints import CheckpointArea
from tests.conftest import ROOT, make_rows, run_cli

# a teacher (3 epochs with dev: best-epoch selection), a student distilled from it and a
# magnitude-pruned student with recovery, each checkpointing every few steps
RECIPE = recipe_template("tiny-resume", """\
pipeline:
  - id: teacher
    stage: finetune
    with: {{epochs: 3, batch_size: 8, max_length: 32, lr: 3.0e-3, checkpoint_every: 4}}
  - id: student
    stage: distill
    with: {{keep_layers: [0], max_steps: 8, batch_size: 8, max_length: 32,
           checkpoint_every: 3}}
  - id: pruned
    stage: prune
    with: {{method: magnitude, sparsity: 0.5, recovery_steps: 6, batch_size: 8,
           max_length: 32, checkpoint_every: 2}}
candidates: [pruned]
""")


# ---------------------------------------------------------------- the training loop

def _train(tiny_bert, area=None, every=None, fail_at=None):
    """Fine-tune a fresh seeded tiny BERT for 3 epochs (18 steps, best dev epoch kept);
    `fail_at`: raise inside that step's loss, as a crash would."""
    import torch
    from transformers import AutoTokenizer, BertForSequenceClassification

    from compress.stages.training import train_epochs

    torch.manual_seed(0)
    model = BertForSequenceClassification.from_pretrained(tiny_bert, num_labels=3)
    tok = AutoTokenizer.from_pretrained(tiny_bert)
    rows = make_rows(48, 1)
    texts = [t for t, _ in rows]
    y = torch.tensor([["sport", "business", "tech"].index(lab) for _, lab in rows])
    calls, logged, bars = [0], [], []

    def loss_fn(batch, idx):
        calls[0] += 1
        if calls[0] == fail_at:
            raise RuntimeError("preempted")
        return model(**batch, labels=y[idx]).loss

    dev = make_rows(12, 2)

    def evaluate():
        model.eval()
        with torch.inference_mode():
            batch = tok([t for t, _ in dev], padding=True, return_tensors="pt")
            pred = model(**batch).logits.argmax(-1).tolist()
        gold = [["sport", "business", "tech"].index(lab) for _, lab in dev]
        return "dev_accuracy", sum(p == g for p, g in zip(pred, gold, strict=True)) / 12, True

    result = train_epochs(model, tok, texts, loss_fn, epochs=3, total=18, lr=3e-3,
                          weight_decay=0.01, warmup_ratio=0.1, batch_size=8, max_length=32,
                          seed=0, evaluate=evaluate, clip_norm=1.0, log=logged.append,
                          checkpoints=area, checkpoint_every=every,
                          track=lambda description, total: bars.append(description) or (
                              lambda n=1: bars.append(n)))
    return model, result, logged + bars


def test_a_resumed_loop_ends_with_the_same_weights_and_history(tiny_bert, tmp_path):
    import torch

    ref_model, ref, _ = _train(tiny_bert)
    area = CheckpointArea(tmp_path / "ckpt", "teacher (finetune)")
    with pytest.raises(RuntimeError, match="preempted"):
        _train(tiny_bert, area, every=5, fail_at=13)  # after step 12: checkpoint at 10
    assert [p.name for p in area.root.iterdir()] == ["step-00000010"]
    model, result, logged = _train(tiny_bert, area, every=5)
    assert "train: resumed at step 10 of 18 from its checkpoint" in logged
    assert "train (resumed at step 10 of 18)" in logged  # the progress bar's description
    assert logged[logged.index("train (resumed at step 10 of 18)") + 1] == 10  # starts at 10
    assert result == ref  # history (losses of the epoch in progress too), kept epoch
    ref_state = ref_model.state_dict()
    assert all(torch.equal(v, ref_state[k]) for k, v in model.state_dict().items())


def test_a_torn_checkpoint_is_never_used(tmp_path):
    area = CheckpointArea(tmp_path / "ckpt")
    area.write(2, 10, lambda d: (d / "model.safetensors").write_bytes(b"two"))
    # a later write killed before its rename: a partial dir, never read
    (area.root / ".partial-0000abcd").mkdir()
    (area.root / ".partial-0000abcd" / "model.safetensors").write_bytes(b"half")
    assert area.latest()[0].name == "step-00000002"
    assert not list(area.root.glob(".partial-*"))
    # a complete-looking one whose file was damaged afterwards: removed, not used
    newer = area.write(4, 10, lambda d: (d / "model.safetensors").write_bytes(b"four"))
    assert not (area.root / "step-00000002").exists()  # only the newest is kept
    (newer / "model.safetensors").write_bytes(b"fxur")
    assert area.latest() is None and not newer.exists()


def test_checkpoint_every_does_not_change_the_node_key(write_recipe, tiny_bert, tiny_data):
    from compress.engine import prepare

    path = write_recipe(RECIPE)
    keys = [n.key for n in prepare(path).nodes]
    other = [n.key for n in prepare(path, ["pipeline.teacher.with.checkpoint_every=7",
                                           "pipeline.pruned.with.checkpoint_every=0"]).nodes]
    assert keys == other


# ---------------------------------------------------------------- the cache's checkpoint area

def test_checkpoints_survive_cleanup_and_prune_and_go_on_commit(tmp_path):
    from compress.store import Store

    store = Store(tmp_path / "c")
    key, other = "a" * 20, "b" * 20
    for k in (key, other):
        store.checkpoints(k, "teacher (finetune)").write(
            3, 9, lambda d: (d / "model.safetensors").write_bytes(b"w"))
    store.clean_stale()
    store.prune()
    assert {a["key"]: a["step"] for a in store.checkpoint_areas()} == {key: 3, other: 3}
    # a key whose artifact committed but whose checkpoints stayed (killed in between)
    done = "d" * 20
    store.checkpoints(done).write(1, 2, lambda d: (d / "model.safetensors").write_bytes(b"w"))
    store.artifact_dir(done).mkdir()
    store.clean_stale()
    assert done not in {a["key"] for a in store.checkpoint_areas()}
    assert all(not a["live"] for a in store.checkpoint_areas())
    with store.building(key) as out:
        (out / "model.safetensors").write_bytes(b"final")
        assert [a["live"] for a in store.checkpoint_areas() if a["key"] == key] == [True]
        assert store.prune_checkpoints()["checkpoints_removed"] == 1  # not the live one
        assert [a["key"] for a in store.checkpoint_areas()] == [key]
        store.commit(out, {"key": key, "kind": "pytorch"})
    assert store.checkpoint_areas() == []


def test_compress_cache_shows_and_prunes_left_checkpoints(tmp_path):
    from compress.store import Store

    cache = tmp_path / "c"
    Store(cache).checkpoints("c" * 20, "student (distill)").write(
        6, 8, lambda d: (d / "model.safetensors").write_bytes(b"w"))
    shown = run_cli("cache", "--cache-dir", str(cache))
    assert shown.returncode == 0, shown.stderr
    text = " ".join(shown.stdout.split())
    assert "checkpoint of student (distill) cccccccc: step 6 of 8, 0.0 MB, left by an " \
        "interrupted build" in text
    assert "a re-run of the build resumes from its checkpoint" in text
    pruned = run_cli("cache", "--cache-dir", str(cache), "--prune-checkpoints")
    assert pruned.returncode == 0, pruned.stderr
    assert "removed the checkpoints of 1 interrupted build(s)" in " ".join(
        pruned.stdout.split())
    assert not list((cache / "checkpoints").iterdir())


# ---------------------------------------------------------------- kill -9 and SIGTERM

def _run(recipe, cache, out, kill: str | None = None):
    env = {**os.environ, "COMPRESS_CACHE_DIR": str(cache), "HF_HUB_OFFLINE": "1"}
    if kill:
        env.update(COMPRESS_PLUGINS="tests.kill_at_step", COMPRESS_TEST_KILL=kill)
    return subprocess.run([sys.executable, "-m", "compress", "run", str(recipe), "--out",
                           str(out)], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)


def test_killed_builds_resume_from_checkpoints_with_byte_identical_weights(write_recipe,
                                                                          tmp_path):
    from compress.engine import build_all, prepare
    from compress.store import Store

    path = write_recipe(RECIPE)
    plan = prepare(path)
    keys = {n.step: n.key for n in plan.nodes}
    ref = build_all(plan, Store(tmp_path / "ref-cache"))  # never interrupted
    assert not ref.errors

    cache = tmp_path / "cache"
    # SIGTERM after teacher step 8: one last checkpoint at the next step boundary (9)
    term = _run(path, cache, tmp_path / "r1", kill="teacher:8:TERM")
    assert term.returncode == 130, term.stderr
    assert "SIGTERM: checkpoint at step 9 of 18 written; stopping" in term.stderr
    assert (cache / "checkpoints" / keys["teacher"] / "step-00000009").is_dir()
    # kill -9 after student step 5 (checkpoint at 3), then after recovery step 5 (at 4)
    killed = _run(path, cache, tmp_path / "r2", kill="student:5:KILL")
    assert killed.returncode == -signal.SIGKILL
    assert "finetune: resumed at step 9 of 18 from its checkpoint" in killed.stderr
    assert (cache / "artifacts" / keys["teacher"]).is_dir()
    assert not (cache / "checkpoints" / keys["teacher"]).exists()  # gone with the commit
    killed = _run(path, cache, tmp_path / "r3", kill="pruned:5:KILL")
    assert killed.returncode == -signal.SIGKILL
    assert "distill: resumed at step 3 of 8 from its checkpoint" in killed.stderr
    done = _run(path, cache, tmp_path / "r4")
    assert done.returncode == 0, done.stderr
    assert "prune recovery: resumed at step 4 of 6 from its checkpoint" in done.stderr
    assert not list((cache / "checkpoints").iterdir())

    import json

    for step, key in keys.items():
        got = json.loads((cache / "artifacts" / key / META_FILE).read_text())
        want = json.loads((tmp_path / "ref-cache" / "artifacts" / key / META_FILE).read_text())
        assert got["files"] == want["files"], step  # every file's sha256: the same bytes
        assert got["checks"] == want["checks"], step  # histories, kept epochs, sparsity


def test_when_a_checkpoint_is_due(tmp_path):
    from compress.checkpoints import DEFAULT_SECONDS, Checkpointer

    area = CheckpointArea(tmp_path / "ckpt")
    assert DEFAULT_SECONDS == 120.0  # the default: about every 2 minutes of training
    by_steps = Checkpointer(area, 3)
    assert [s for s in range(1, 10) if by_steps.due(s)] == [3, 6, 9]
    assert not Checkpointer(area, None).due(1)  # 2 minutes have not passed
    assert Checkpointer(area, None, seconds=0.0).due(1)
    assert Checkpointer(area, 0).area is None and not Checkpointer(area, 0).due(3)  # off
