"""Benchmark: kill -9 at seeded random points of a whole journey, then check the re-run.

The journey is what a user does with a small recipe (a tiny random BERT and tiny data, the
assets of benchmarks/concurrent_runs.py): `compress run` (finetune -> distill -> ONNX
export -> ORT INT8 quantize, then measurement of the INT8 candidate and its baseline, the
teacher), `compress recommend`, `compress export` and `compress cache --prune`. It runs
once uninterrupted (the reference). Then each journey starts from an empty cache and, for
each command in turn, starts it, sends SIGKILL to it at the next of its seeded random kill
points, and starts it again (the re-run, which resumes what the killed attempt finished),
until an attempt runs to the end, as a spot instance preempted again and again would.
After each kill:

- corrupt artifacts: `Store.verify()` (every artifact against its digests, every
  measurement and its outputs) must find none;
- leftover processes: nothing of the killed command's process group may still run 10 s
  after it died (measurement workers die with their parent);
- resumes: the next attempt printed "resumed at step k of n" (training kills: finetune and
  distill checkpoint every 2 steps, and their kill points come after a checkpoint).

When an attempt finishes (exit 0 is required), what the command produced must equal the
reference's: every artifact's file digests and checks, the quality and fidelity figures of
results.json (latency, memory and timing columns excepted), the exported files (its
README.md model card quotes latency, so it is excepted), the recommendation's fields;
anything else is a differing result.

Kill points (seeded, `--seed`), 39 per journey: seven during finetune and four during
distill (once a checkpoint of a random step exists, plus 0-40 ms, so some land in the
middle of writing the next one); three between stages (the instant an artifact commits);
two during the ONNX export stage, two during the quantization and three during the
measurement (a random share, up to half, of the reference duration after it starts); and
for `compress recommend`, `compress export` and `compress cache --prune`, five during
the command (a random share, from a quarter to all, of its reference duration) and one
between commands (the command killed as it starts, before it does any work). A kill point
an attempt finishes before is not a kill (for these three commands the finished attempt
is compared, and the command is started again for its next kill point); journeys repeat
until `--kills` kills have landed.

    nice -n 10 .venv/bin/python benchmarks/chaos.py [--kills 30] [--seed 0] [--out FILE]

Expected (issue 16): 0 corrupt artifacts, 0 differing results, 0 leftover processes,
every re-run finished, resumes from a checkpoint in at least a third of the training kills.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.concurrent_runs import build_assets  # noqa: E402 - after the path setup
from benchmarks.tiny_assets import recipe_template  # noqa: E402 - after the path setup
from compress.provenance import cpu_model  # noqa: E402

RECIPE = recipe_template("tiny-chaos", """\
pipeline:
  - id: teacher
    stage: finetune
    with: {{epochs: 4, batch_size: 4, max_length: 16, lr: 5.0e-3, warmup_ratio: 0,
           checkpoint_every: 2}}
  - id: student
    stage: distill
    with: {{keep_layers: [0], max_steps: 12, batch_size: 4, max_length: 16,
           checkpoint_every: 2}}
  - id: onnx
    stage: export
  - id: int8
    stage: quantize
    with: {{backend: ort-dynamic-int8}}
candidates: [int8]
""", dev=False)
COMMANDS = ("run", "recommend", "export", "prune")
STATE = ("cache", "run", "export")  # what the journey writes, under live/
# results.json columns that are timings or machine load, not quality or fidelity
NOT_COMPARED = re.compile(r"latency|throughput|decode|noisy|rss|mem_delta|measured_at|"
                          r"cached|_path|wall_time|provenance")


class Journey:
    def __init__(self, work: Path):
        self.work = work
        self.live = work / "live"
        self.recipe = work / "chaos-recipe.yaml"
        self.env = {**os.environ, "COMPRESS_CACHE_DIR": str(self.live / "cache"),
                    "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}

    def argv(self, command: str) -> list[str]:
        live = self.live
        args = {"run": ["run", str(self.recipe), "--out", str(live / "run")],
                "recommend": ["recommend", str(live / "run"), "--max-drop", "1.0"],
                "export": ["export", str(live / "run"), "int8", "--to", str(live / "export")],
                "prune": ["cache", "--prune"]}[command]
        return [sys.executable, "-m", "compress", *args]

    def start(self, command: str) -> tuple[subprocess.Popen, list]:
        """Start a command in its own process group; a thread records its stderr lines
        with their times."""
        proc = subprocess.Popen(self.argv(command), env=self.env, cwd=ROOT, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                start_new_session=True)
        lines: list = []
        threading.Thread(target=lambda: lines.extend((time.monotonic(), x)
                                                      for x in proc.stderr), daemon=True).start()
        threading.Thread(target=proc.stdout.read, daemon=True).start()
        return proc, lines

    def snapshot(self, name: str) -> None:
        dest = self.work / "snapshots" / name
        shutil.rmtree(dest, ignore_errors=True)
        dest.mkdir(parents=True)
        for part in STATE:
            if (self.live / part).exists():
                shutil.copytree(self.live / part, dest / part, symlinks=True)

    def restore(self, name: str) -> None:
        shutil.rmtree(self.live, ignore_errors=True)
        shutil.copytree(self.work / "snapshots" / name, self.live, symlinks=True)


def reference(j: Journey) -> dict:
    """The uninterrupted journey: a snapshot before each command, the stderr marker times
    (phase durations for the kill points) and the final state."""
    phases = {}
    j.live.mkdir()
    for command in COMMANDS:
        j.snapshot(command)
        t0 = time.monotonic()
        proc, lines = j.start(command)
        proc.wait()
        t1 = time.monotonic()
        time.sleep(0.2)  # the reader thread drains the pipe
        print(f"reference {command}: {t1 - t0:.1f} s", flush=True)
        if proc.returncode != 0:
            raise SystemExit(f"reference {command} failed:\n" + "".join(x for _, x in lines))
        phases[command] = (0.0, t1 - t0)
        if command == "run":
            marks = [(t - t0, x) for t, x in lines if "building" in x or "measuring" in x]
            for i, (t, x) in enumerate(marks):
                end = marks[i + 1][0] if i + 1 < len(marks) else t1 - t0
                phase = _phase_of(x)
                if phase == "measure" and phase in phases:  # from the first to the end
                    phases[phase] = (phases[phase][0], end - phases[phase][0])
                else:
                    phases[phase] = (t, end - t)
    j.snapshot("final")
    print("reference phases: " + ", ".join(f"{k} at {v[0]:.1f} s for {v[1]:.1f} s"
                                           for k, v in phases.items()), flush=True)
    return phases


def _phase_of(line: str) -> str:
    m = re.search(r"building \S+ \((\w+)\)", line)
    if m:
        return {"finetune": "finetune", "distill": "distill", "export": "export-stage",
                "quantize": "quantize"}.get(m[1], m[1])
    return "measure"


# ---------------------------------------------------------------- comparing with the reference

def artifact_facts(cache: Path) -> dict:
    out = {}
    for meta in sorted((cache / "artifacts").glob("*/compress-artifact.json")):
        m = json.loads(meta.read_text())
        out[m["key"]] = {"files": m["files"], "checks": m.get("checks")}
    return out


def results_facts(run: Path) -> list:
    rows = json.loads((run / "results.json").read_text())["candidates"]
    return [{k: v for k, v in r.items() if not NOT_COMPARED.search(k)} for r in rows]


def export_facts(export: Path) -> dict:
    from compress.fsutil import sha256_file

    return {str(f.relative_to(export)): sha256_file(f) for f in sorted(export.rglob("*"))
            if f.is_file() and f.name != "README.md"}


def differences(command: str, live: Path, ref: Path) -> list[str]:
    """What the re-run's outcome does not share with the reference's."""
    diff = []
    if command in ("run", "prune"):
        got, want = artifact_facts(live / "cache"), artifact_facts(ref / "cache")
        diff += [f"artifact {k}" for k in sorted(set(got) | set(want)) if got.get(k) != want.get(k)]
    if command == "run" and results_facts(live / "run") != results_facts(ref / "run"):
        diff.append("results.json quality/fidelity")
    if command == "recommend":
        got = json.loads((live / "run" / "recommendation.json").read_text())
        want = json.loads((ref / "run" / "recommendation.json").read_text())
        if sorted(got) != sorted(want):
            diff.append("recommendation.json fields")
    if command == "export" and export_facts(live / "export") != export_facts(ref / "export"):
        diff.append("exported files")
    return diff


# ---------------------------------------------------------------- kill points

def chain_points(rng: random.Random) -> dict[str, list[tuple]]:
    """One journey's 39 kill points, in the order the attempts meet them: (phase,
    parameter). Training: kill once a checkpoint of at least that step exists (plus 0-40
    ms); between: once that many more artifacts have committed; a stage or measurement: a
    delay after its start, as a share of its reference duration; a command: a share of
    its duration (0: as it starts, before it does any work, i.e. between commands)."""
    steps = sorted(rng.sample(range(2, 24, 2), 7))  # finetune: 24 steps, checkpoint every 2
    dsteps = sorted(rng.sample(range(2, 12, 2), 4))  # distill: 12 steps
    early = lambda: rng.uniform(0, 0.5)  # noqa: E731 - a re-run is shorter than the first
    return {
        "run": [("finetune", t) for t in steps] + [("between", 1)]
        + [("distill", t) for t in dsteps] + [("between", 1)]
        + [("export-stage", early()) for _ in range(2)] + [("between", 1)]
        + [("quantize", early()) for _ in range(2)]
        + [("measure", early()) for _ in range(3)],
        **{c: [("between", 0.0)] + [("during", rng.uniform(0.25, 1.0)) for _ in range(5)]
           for c in ("recommend", "export", "prune")},
    }


def kill_at(j: Journey, proc, lines, command: str, point: tuple, phases: dict,
            rng: random.Random, keys: dict) -> str:
    """Wait for the kill point in this attempt, then SIGKILL the command; returns where it
    landed (its last line of output and the seconds since it started), or that it
    finished first."""
    phase, param = point
    t0 = time.monotonic()
    cache = j.live / "cache"

    def wait(cond) -> None:
        while not cond() and proc.poll() is None:
            time.sleep(0.003)

    def committed() -> int:
        return len(list((cache / "artifacts").iterdir())) if (cache / "artifacts").is_dir() \
            else 0

    if phase == "between" and command == "run":
        target = committed() + param
        wait(lambda: committed() >= target)
    elif phase in ("finetune", "distill"):
        area = cache / "checkpoints" / keys["teacher" if phase == "finetune" else "student"]
        wait(lambda: area.is_dir() and any(int(p.name[5:]) >= param
                                           for p in area.glob("step-*")))
        time.sleep(rng.uniform(0, 0.04))
    elif phase in ("export-stage", "quantize", "measure"):
        marker = {"export-stage": "(export)", "quantize": "(quantize)", "measure": "measuring"}
        wait(lambda: any(marker[phase] in x for _, x in list(lines)))
        time.sleep(param * phases[phase][1])
    else:
        time.sleep(param * phases[command][1])
    if proc.poll() is not None:
        return "finished first"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    seen = [x.strip() for _, x in list(lines) if x.strip() and not x.startswith(("W1", "Fail"))]
    return f"{seen[-1][:70] if seen else 'before any output'!r} after " \
        f"{time.monotonic() - t0:.1f} s"


def leftovers(pgid: int) -> int:
    """Processes of the killed command's group still alive after 10 s (then killed)."""
    deadline = time.monotonic() + 10
    while True:
        alive = [p for p in Path("/proc").iterdir() if p.name.isdigit() and _pgid(p) == pgid]
        if not alive or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    if alive:
        os.killpg(pgid, signal.SIGKILL)
    return len(alive)


def _pgid(proc_dir: Path) -> int | None:
    try:
        stat = (proc_dir / "stat").read_text()
        return int(stat.rsplit(")", 1)[1].split()[2])
    except (OSError, ValueError, IndexError):
        return None


def corrupt_now(j: Journey) -> int:
    from compress.store import Store

    if not (j.live / "cache").is_dir():
        return 0
    v = Store(j.live / "cache", warn=lambda m: None).verify()
    return len(v["artifacts_corrupt"]) + len(v["measurements_corrupt"])


def journey(j: Journey, points: dict, phases: dict, rng, keys, totals, out) -> None:
    """One journey from an empty state: each command is started again after each kill
    (the re-run resumes) until an attempt finishes, which is compared with the reference."""
    j.restore("run")
    pending = None  # (training kill?) of the last kill, scored by the next attempt
    for command in COMMANDS:
        for point in points[command] + [None]:
            proc, lines = j.start(command)
            where = kill_at(j, proc, lines, command, point, phases, rng, keys) \
                if point else None
            if where is None:
                proc.wait()
            time.sleep(0.2)  # the reader thread drains the pipe
            text = "".join(x for _, x in lines)
            resumed = re.findall(r"(\w+): resumed at step (\d+) of (\d+)", text)
            if pending is not None:  # this attempt is the re-run after a kill
                totals["resumed_from_checkpoint"] += pending and bool(resumed)
                pending = None
            note = ", ".join(f"{s} resumed at step {k} of {n}" for s, k, n in resumed)
            note = f"this attempt: {note}" if note else ""
            if point is not None and where != "finished first":
                training = point[0] in ("finetune", "distill")
                left = leftovers(proc.pid)
                corrupt = corrupt_now(j)
                totals["kills"] += 1
                totals["training_kills"] += training
                totals["leftover_processes"] += left
                totals["corrupt_artifacts"] += corrupt
                pending = training
                out(f"kill {totals['kills']:>2}: {command} {point[0]:<12} landed at: "
                    f"{where}" + (f" ({note})" if note else "")
                    + (f"; CORRUPT {corrupt}" if corrupt else "")
                    + (f"; LEFTOVER {left}" if left else ""))
                continue
            if point is not None:
                totals["not_killed"] += 1
            finished = proc.returncode == 0
            diff = differences(command, j.live, j.work / "snapshots" / "final") \
                if finished else [f"exit {proc.returncode}"]
            corrupt = corrupt_now(j)
            totals["corrupt_artifacts"] += corrupt
            totals["reruns_finished"] += finished
            totals["reruns"] += 1
            totals["differing_results"] += bool(diff)
            out(f"  {command} finished" + (f" ({note})" if note else "")
                + (" and matches the reference" if not diff else
                   f"; DIFFERS: {', '.join(diff)}") + (f"; CORRUPT {corrupt}" if corrupt else ""))
            if not finished:
                print(text[-3000:], file=sys.stderr)
            if command == "run" or point is None:
                break


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kills", type=int, default=30, help="at least this many kills")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", help="also write the report to this file")
    args = ap.parse_args()

    from compress.engine import prepare

    t_start = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="compress-chaos-"))
    build_assets(work)
    j = Journey(work)
    j.recipe.write_text(RECIPE.format(model=work / "tiny-bert", train=work / "train.csv"))
    keys = {n.step: n.key for n in prepare(j.recipe).nodes}
    phases = reference(j)
    rng = random.Random(args.seed)
    totals = {"kills": 0, "training_kills": 0, "resumed_from_checkpoint": 0,
              "reruns": 0, "reruns_finished": 0, "corrupt_artifacts": 0,
              "differing_results": 0, "leftover_processes": 0, "not_killed": 0}
    lines_out: list[str] = []

    def out(line: str) -> None:
        lines_out.append(line)
        print(line, flush=True)
        if args.out:  # after every line, so a stopped benchmark still records its counts
            Path(args.out).write_text(report(args, lines_out, totals, phases, t_start))

    n = 0
    while totals["kills"] < args.kills and n < 3:
        n += 1
        out(f"journey {n}:")
        journey(j, chain_points(rng), phases, rng, keys, totals, out)
    text = report(args, lines_out, totals, phases, t_start)
    print("\n".join(text.strip().splitlines()[-3:]))
    if args.out:
        Path(args.out).write_text(text)
    shutil.rmtree(work, ignore_errors=True)
    return 0 if _ok(totals, args.kills) else 1


def _ok(t: dict, wanted: int) -> bool:
    return (t["kills"] >= wanted and t["corrupt_artifacts"] == 0
            and t["differing_results"] == 0 and t["leftover_processes"] == 0
            and t["reruns_finished"] == t["reruns"]
            and 3 * t["resumed_from_checkpoint"] >= t["training_kills"])


def report(args, lines: list[str], totals: dict, phases: dict, t_start: float) -> str:
    head = [f"# benchmarks/chaos.py, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {cpu_model()} "
            f"({os.cpu_count()} cores, no GPU, load average {os.getloadavg()[0]:.1f})",
            f"# command: nice -n 10 .venv/bin/python benchmarks/chaos.py --kills {args.kills} "
            f"--seed {args.seed}",
            "# reference journey (uninterrupted): " + ", ".join(
                f"{k} {v[1]:.1f} s" for k, v in phases.items()),
            "# each journey from an empty cache: each command killed at its kill points, "
            "re-run after each kill, the finishing attempt compared with the reference"]
    import resource

    cpu = sum(getattr(resource.getrusage(who), f) for who in (resource.RUSAGE_SELF,
              resource.RUSAGE_CHILDREN) for f in ("ru_utime", "ru_stime"))
    summary = [f"totals: {json.dumps(totals)}",
               f"wall: {time.monotonic() - t_start:.0f} s; CPU time (this script and every "
               f"command it ran): {cpu:.0f} s; load average at the end "
               f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores",
               "expected: 0 corrupt artifacts, 0 differing results, 0 leftover processes, "
               "every re-run finished, resumes >= 1/3 of training kills -> "
               + ("met" if _ok(totals, args.kills) else "NOT met")]
    return "\n".join(head + lines + summary) + "\n"


if __name__ == "__main__":
    sys.exit(main())
