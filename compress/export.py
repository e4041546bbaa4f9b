"""Export a candidate as a deployable directory: `compress export RUN [CANDIDATE |
--recommended] --to DIR`.

The directory holds the model in its runnable format (the artifact's files as built:
safetensors or model.onnx, plus `compress-load.json` where the kind needs compress's
loader), its tokenizer and config, and a README.md model card with the measured figures,
their provenance and, for the recommended pair, the targets it was recommended for. The
artifact's store metadata (`compress-artifact.json`) stays behind. The copy is written
beside the destination and renamed into place, so a failed export leaves nothing half
written; a killed one leaves a hidden temp dir that the next export into the same folder
removes. A destination that already holds a complete export of the same artifact is
replaced (so a re-run after a kill completes); any other non-empty one is refused. The
export holds the store lock shared (no prune meanwhile) and the artifact for
reading (no --force swap meanwhile), and verifies every file against the sha256 recorded
when the artifact was committed.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

from compress.artifacts import META_FILE, Kind
from compress.errors import CompressError, InputError
from compress.provenance import describe_git
from compress.results import Run, load_run

LEFT_BEHIND = {META_FILE}
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "tokenizer.model", "spiece.model",
                   "vocab.json")


@dataclass
class Exported:
    path: Path
    candidate: str
    kind: str
    files: list[str]
    recommended: dict | None = None


def _inside(child: Path, parent: Path) -> bool:
    try:
        child.resolve().relative_to(parent.resolve())
        return True
    except ValueError:
        return False


def _fmt(v, spec=".4f") -> str:
    if v is None or (isinstance(v, float) and v != v):
        return "-"
    return format(v, spec) if isinstance(v, (int, float)) else str(v)


def _load_snippet(kind: Kind, task: str, seq_len: int, max_length: int | None) -> list[str]:
    """Code that loads this directory and runs it as it was measured: texts truncated to
    the measured length (a longer text would overflow the model's positions), and, for a
    classifier, the predicted label names from the config's id2label."""
    n = max_length or seq_len
    classify = task == "text-classification"
    if kind.runtime == "onnxruntime":
        code = ["import json", "", "import onnxruntime as ort",
                "from transformers import AutoTokenizer", "",
                'tok = AutoTokenizer.from_pretrained("PATH")',
                'session = ort.InferenceSession("PATH/model.onnx")',
                'feeds = tok(["some text"], return_tensors="np", padding="max_length", '
                f"truncation=True, max_length={seq_len})",
                "names = {i.name for i in session.get_inputs()}",
                "outputs = session.run(None, {k: v for k, v in feeds.items() if k in names})"]
        if classify:
            code += ['id2label = json.load(open("PATH/config.json"))["id2label"]',
                     "print([id2label[str(i)] for i in outputs[0].argmax(-1)])"]
        out = ["```python", *code, "```", ""]
    else:
        code = ["import torch", "from transformers import AutoTokenizer", "",
                "from compress.loading import load_for_inference", "",
                'tok = AutoTokenizer.from_pretrained("PATH")',
                f'model = load_for_inference("PATH", "{task}")',
                'feeds = tok(["some text"], return_tensors="pt", padding=True, '
                f"truncation=True, max_length={n})",
                "with torch.inference_mode():",
                "    outputs = model(**feeds)"]
        if classify:
            code += ["print([model.config.id2label[int(i)] for i in "
                     "outputs.logits.argmax(-1)])"]
        out = ["```python", *code, "```", ""]
        if kind == Kind.PYTORCH:
            out += ["A plain Hugging Face model directory: `transformers`' "
                    "`AutoModel*.from_pretrained(\"PATH\")` loads it too.", ""]
        else:
            out += ["`compress-load.json` records how the weights are stored and what to "
                    "rebuild; compress's loader reads it.", ""]
    return out


def model_card(run: Run, row: dict, base: dict | None, rec: dict | None,
               files: list[str]) -> str:
    name, kind = row["candidate"], Kind(row["kind"])
    metric = row.get("primary_metric")
    recipe = run.manifest["recipe"]["resolved"]
    suite = run.suite
    task = suite.task
    lines = [f"# {name}", "",
             f"{recipe.get('name')} / {name}, **{task}**, exported by compress. Kind "
             f"`{kind.value}`: {kind.describe}.", ""]
    lines += ["## Load it", "", "`PATH` is this directory.", ""] + _load_snippet(
        kind, task, suite.latency.seq_lens[0], suite.quality.max_length)
    lines += ["## Measured figures", "",
              "| figure | this model | baseline |", "|---|---:|---:|"]
    keys = [k for k in ("accuracy", "macro_f1", "spearman", "pearson", "perplexity",
                        "next_token_accuracy", "top1_agreement", "kl_divergence", "cosine")
            if row.get(k) is not None]
    for k in keys:
        label = f"{k} (primary)" if k == metric else k
        lines.append(f"| {label} | {_fmt(row.get(k))} | {_fmt((base or {}).get(k))} |")
    for k, label, spec in (("latency_p50_ms", "latency p50 (ms)", ".2f"),
                           ("latency_p95_ms", "latency p95 (ms)", ".2f"),
                           ("decode_ms_per_token", "decode (ms/token)", ".2f"),
                           ("size_mb", "size on disk (MB)", ".1f"),
                           ("peak_rss_mb", "peak memory (MB)", ".0f")):
        if row.get(k) is not None:
            lines.append(f"| {label} | {_fmt(row.get(k), spec)} | "
                         f"{_fmt((base or {}).get(k), spec)} |")
    lines += ["", f"Quality on the `{suite.name}` suite's eval set; fidelity (agreement,"
              f" KL, cosine) against the baseline `{row.get('baseline')}`. Latency measured "
              f"at batch {row.get('batch_size')}, {row.get('seq_len')} tokens, "
              f"{row.get('threads')} thread(s) on {row.get('device_name') or row.get('device')}"
              f" via {row.get('backend')}, {row.get('measured_at')}. All figures in this "
              "table are measured, none projected.", ""]
    if rec:
        lines += ["## Recommended for", "",
                  f"The cheapest candidate x target meeting the targets: **{name}** on "
                  f"**{rec['target']}** via {rec.get('runtime')} ({rec.get('provenance')}), "
                  f"${_fmt(rec.get('cost_per_1k'), '.6f')} per 1,000 inferences, max batch "
                  f"{_fmt(rec.get('batch_size'), '.0f')}, p95 "
                  f"{_fmt(rec.get('latency_p95_ms'), '.2f')} ms.", "",
                  "Targets: " + (", ".join(f"`{k}: {v}`" for k, v in rec["targets"].items())
                                 or "none") + ".", ""]
        lines += [f"- {line}" for line in rec["explanation"]]
        if rec.get("serving"):
            lines += ["", f"Serving configuration: {rec['serving']}."]
        lines += ["", f"Prices: {rec['prices']}; calibration: {rec['calibration']}. Figures "
                  "on other targets than local-cpu are projected (roofline), not measured. "
                  f"Decision: {rec.get('decision')}.", ""]
    versions = run.manifest.get("versions") or {}
    by_key = {n["key"]: n for n in run.manifest.get("plan", {}).get("nodes", [])}
    steps, key = [], row.get("artifact_key")
    while key in by_key:
        n = by_key[key]
        if n.get("stage"):
            steps.append(f"{n['step']} ({n['stage']}: {json.dumps(n.get('config'))})")
        key = n.get("parent")
    lines += ["## Provenance", "",
              f"- recipe: `{recipe.get('name')}` ({run.manifest['recipe'].get('path')}), "
              f"seed {run.manifest.get('seed')}",
              f"- base model: `{run.manifest.get('plan', {}).get('model')}`",
              "- stages: " + (" → ".join(reversed(steps)) or "none (the model as given)"),
              f"- artifact key: `{row.get('artifact_key')}`",
              f"- run: `{run.path}` ({run.manifest.get('finished')}), git "
              + describe_git(run.manifest.get("git")),
              f"- versions: {', '.join(f'{k} {v}' for k, v in (versions or {}).items())}",
              f"- files: {', '.join(files)}", ""]
    return "\n".join(lines)


EXPORT_TMP = re.compile(r"^\..+\.[0-9a-f]{8}\.compress-export$")


def _store_of(src: Path):
    """The store an artifact dir belongs to (None for a model folder given by the recipe)."""
    from compress.store import MARKER, Store

    root = src.parent.parent
    if src.parent.name == "artifacts" and (root / MARKER).is_file():
        return Store(root)
    return None


def clean_stale_exports(parent: Path) -> int:
    """Remove the hidden temp dirs of exports into `parent` that were killed (their holder's
    lock is free); returns how many."""
    from compress.store import flock_dir

    removed = 0
    for d in parent.iterdir() if parent.is_dir() else []:
        if not (EXPORT_TMP.match(d.name) and d.is_dir()):
            continue
        with flock_dir(d, blocking=False) as free:
            if free:
                shutil.rmtree(d, ignore_errors=True)
                removed += 1
    return removed


def _copy_out(run: Run, row: dict, rec: dict | None, src: Path, dest: Path, store) -> list[str]:
    """Copy the artifact into a hidden temp dir beside dest (held by a lock, so a killed
    export's leftovers are recognised and removed by the next one), verify every file
    against the digests recorded at commit, write the model card, then rename into place."""
    from compress.store import flock_dir, fsync_tree, verify_files

    candidate = row["candidate"]
    dest.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_exports(dest.parent)
    tmp = dest.parent / f".{dest.name}.{uuid.uuid4().hex[:8]}.compress-export"
    tmp.mkdir()
    try:
        with flock_dir(tmp):
            shutil.copytree(src, tmp, dirs_exist_ok=True,
                            ignore=lambda d, fs: [f for f in fs if f in LEFT_BEHIND])
            if store is not None:
                meta = json.loads((src / META_FILE).read_text(encoding="utf-8"))
                problems = verify_files(tmp, meta.get("files"))
                if problems:
                    raise CompressError(f"{candidate}: the cached artifact {src} is corrupt ("
                                        + "; ".join(problems[:3]) + "); nothing exported. "
                                        "Run the recipe again to rebuild it")
            files = sorted(str(f.relative_to(tmp)) for f in tmp.rglob("*") if f.is_file())
            if not (tmp / "config.json").is_file():
                raise CompressError(f"{candidate}: the artifact has no config.json")
            if not any((tmp / f).is_file() for f in TOKENIZER_FILES):
                raise CompressError(f"{candidate}: the artifact has no tokenizer files")
            if (tmp / "README.md").is_file():  # the source model's own card, kept beside ours
                (tmp / "README.md").rename(tmp / "README.source.md")
                files = [("README.source.md" if f == "README.md" else f) for f in files]
            base = next((r for r in run.rows if r["candidate"] == row.get("baseline")), None)
            card = model_card(run, row, base if base is not row else None, rec,
                              sorted(files + ["README.md"]))
            (tmp / "README.md").write_text(card, encoding="utf-8")
            fsync_tree(tmp)
            if dest.exists() and any(dest.iterdir()):  # an earlier export of this artifact
                old = dest.parent / f".{dest.name}.{uuid.uuid4().hex[:8]}.compress-export"
                dest.rename(old)  # killed here: the next export removes it, as a temp dir
                tmp.rename(dest)
                shutil.rmtree(old, ignore_errors=True)
            else:
                if dest.exists():
                    dest.rmdir()
                tmp.rename(dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return files


def same_export(dest: Path, src: Path) -> bool:
    """Whether `dest` holds a complete export of this very artifact: each of its files with
    the digest recorded at commit, and a model card. Such a folder (an earlier export, or
    one whose `compress export` was killed after it finished writing) is replaced, so a
    re-run of the same export completes; any other non-empty folder is refused."""
    from compress.fsutil import sha256_file

    try:
        files = json.loads((src / META_FILE).read_text(encoding="utf-8"))["files"]
        present = {str(f.relative_to(dest)) for f in dest.rglob("*") if f.is_file()}
    except (OSError, ValueError, KeyError):
        return False
    moved = {n: ("README.source.md" if n == "README.md" else n) for n in files}
    if present != set(moved.values()) | {"README.md"}:
        return False
    return all(sha256_file(dest / moved[n]) == d for n, d in files.items())


def _serving_row(decision, candidate: str) -> dict | None:
    """The decision's row for this candidate: the winner's, else its cheapest runnable."""
    r = decision.rec
    if r.winner and r.winner["candidate"] == candidate:
        return r.winner
    o = r.options
    o = o[(o["candidate"] == candidate) & (o["status"].isin(["ok", "no price"]))]
    if not len(o):
        return None
    key = "monthly_cost" if o["monthly_cost"].notna().any() else "cost_per_1k"
    return o.sort_values(key, na_position="last").iloc[0].to_dict()


def _triton_serving(row: dict | None, threads: int):
    from compress.triton import ServingConfig

    def num(v, default=None):
        return default if v is None or (isinstance(v, float) and v != v) else v

    if row is None:
        raise InputError("no serving configuration for this candidate in the recommendation "
                         "(run `compress recommend RUN --requests-per-day N` first)")
    b = int(num(row.get("max_batch"), num(row.get("batch_size"), 1)))
    pref = num(row.get("preferred_batch_sizes"), None) or [b]
    gpu = str(row.get("runtime") or "").endswith(("cuda", "tensorrt"))
    return ServingConfig(b, float(num(row.get("max_queue_delay_ms"), 0.0)),
                         tuple(int(x) for x in pref), int(num(row.get("workers"), 1)),
                         threads, "KIND_GPU" if gpu else "KIND_CPU",
                         int(num(row.get("instances"), 0)) or None)


def _triton_out(run: Run, decision, candidate: str, row: dict, rec, src: Path,
                dest: Path) -> Exported:
    from compress.triton import write_repository

    dest.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_exports(dest.parent)
    tmp = dest.parent / f".{dest.name}.{uuid.uuid4().hex[:8]}.compress-export"
    serving = _triton_serving(_serving_row(decision, candidate),
                              int((run.manifest["suite"]["resolved"].get("latency") or {})
                                  .get("threads") or 1))
    model_name = "".join(c if c.isalnum() or c in "-_" else "_" for c in candidate)
    tmp.mkdir()
    try:
        with flock_dir_ctx(tmp):
            write_repository(src, tmp, model_name, serving)
            (tmp / "README.md").write_text(
                f"# Triton model repository: {candidate}\n\n"
                f"`{model_name}/config.pbtxt` serves it with max batch {serving.max_batch}, "
                f"max queue delay {serving.max_queue_delay_ms:g} ms and {serving.workers} "
                f"instance(s) of {serving.threads} thread(s) ({serving.kind}); "
                f"{serving.instances or 1} machine(s) at the peak. {decision.describe()}."
                "\n", encoding="utf-8")
            files = sorted(str(f.relative_to(tmp)) for f in tmp.rglob("*") if f.is_file())
            if dest.exists():
                dest.rmdir()
            tmp.rename(dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return Exported(dest, candidate, row["kind"], files, rec)


def flock_dir_ctx(path: Path):
    from compress.store import flock_dir

    return flock_dir(path)


def export(run: Run | str | Path, candidate: str | None = None, *, to: str | Path,
           recommended: bool = False, ask=None, format: str = "hf",
           cache_dir: str | Path | None = None) -> Exported:
    """Write CANDIDATE (or the recommended one) of a run as a deployable directory
    (`format="hf"`), or as a Triton model repository (`format="triton"`, ONNX candidates)
    whose config.pbtxt carries the recommendation's serving configuration. The
    recommendation is the run's saved one; `ask` (decision.Ask) recomputes it with other
    inputs."""
    from compress.decide.decision import decide
    from compress.store import default_cache_dir

    if format not in ("hf", "triton"):
        raise InputError(f"--format {format!r}: expected hf or triton")
    run = run if isinstance(run, Run) else load_run(run)
    names = [r["candidate"] for r in run.rows]
    if recommended == (candidate is not None):
        raise InputError("name one candidate or pass --recommended"
                         f" (candidates: {', '.join(names)})")
    rec = None
    decision = decide(run, ask) if recommended or format == "triton" else None
    if recommended:
        r = decision.rec
        if r.winner is None:
            raise CompressError("nothing meets the targets, so nothing is recommended: "
                                + "; ".join(r.explanation[1:3]))
        candidate = r.winner["candidate"]
        p = r.provenance
        rec = {**{k: r.winner.get(k) for k in ("target", "runtime", "provenance",
                                                 "cost_per_1k", "batch_size",
                                                 "latency_p95_ms")},
               "targets": p["targets"], "explanation": r.explanation,
               "prices": (", ".join(p["price_files"]) or "catalog defaults")
               + f" ({r.winner['target']}: ${r.winner.get('price_per_hour')}/h, "
                 f"{r.winner.get('price_source')})",
               "calibration": p["calibration"], "decision": decision.describe(),
               "serving": r.winner.get("serving")}
    if candidate not in names:
        raise InputError(f"candidate {candidate!r} is not in the run "
                         f"(candidates: {', '.join(names)})")
    row = next(r for r in run.rows if r["candidate"] == candidate)
    if row.get("status") != "ok":
        raise CompressError(f"{candidate} failed in this run ({row.get('error')}); "
                            "nothing to export")
    src = Path(row.get("artifact_path") or "")
    if not row.get("artifact_path") or not src.is_dir():
        raise CompressError(f"{candidate}: its artifact {src} is gone (cache pruned?); run "
                            "the recipe again to rebuild it")
    dest = Path(to).resolve()
    caches = {Path(c) for c in (run.manifest.get("cache_dir"), cache_dir,
                                default_cache_dir()) if c}
    for c in caches:
        if _inside(dest, c):
            raise InputError(f"--to {dest}: inside the artifact cache {c}; choose a "
                             "directory outside it")
    if _inside(dest, src) or _inside(src, dest):
        raise InputError(f"--to {dest}: overlaps the artifact itself ({src})")
    if _inside(dest, run.path) or _inside(run.path, dest):
        raise InputError(f"--to {dest}: overlaps the run directory {run.path}")
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())) \
            and not (format == "hf" and same_export(dest, src)):
        raise InputError(f"--to {dest}: exists and is not empty")
    store = _store_of(src)
    with store.shared_lock() if store else contextlib.nullcontext():
        with store.reading(src.name) if store else contextlib.nullcontext():
            if format == "triton":
                return _triton_out(run, decision, candidate, row, rec, src, dest)
            files = _copy_out(run, row, rec, src, dest, store)
    return Exported(dest, candidate, row["kind"], sorted(files + ["README.md"]), rec)
