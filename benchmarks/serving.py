"""Serving benchmark: a real dynamic-batching server on this CPU against the serving model.

    bash scripts/setup.sh       # installs litserve==0.2.19 (dev extras): the real server
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/serving.py RUN_DIR [--candidate int8]
        [--requests 2000] [--max-batch 8] [--delay-ms 2] [--seed 0] [--out FILE]

RUN_DIR is a finished `compress run` holding the candidate's artifact, measured at batch
sizes up to --max-batch (see benchmarks/serving-recipe.yaml); compress's model-only curve
is printed beside the server's for reference, the prediction does not use it.

The server: LitServe (max_batch_size, batch_timeout, 1 worker) serving the ONNX model with
ONNX Runtime (1 thread); the server and every process it spawns (HTTP front end, the
multiprocessing manager of its queues, the inference worker) are pinned to core 0, the
load generator (asyncio + aiohttp) to core 1. Latency is end to end, measured at the client.

1. The prediction's inputs, measured on that same server before any load test and never
   fitted to one, in --calib-rounds rounds (the median is used, the spread recorded):
   - the batch service curve: the worker times its own predict path (tokenise + ORT) on
     batches of each size k, back to back, in the serving process (a `calibrate` request,
     benchmarks/serving_server.py): s_model(k), and its p95/p50 for the spread;
   - the server's CPU work beyond the model (HTTP, JSON, LitServe's queues), which
     shares core 0 with the model: requests one at a time, the CPU time of the server's
     whole process tree (psutil) per request, less what the tree burns idle (LitServe's
     worker polls its queue through the manager every window: measured with no request)
     and less the model's own CPU time (the server's batch log); then a closed-loop burst
     with max batch requests in flight, where batches of mean size m form: the same per
     request there. The two give a part per batch and a part per request (a + b k per
     batch of k), converted to wall time by the share of core 0 the worker got (model
     CPU / model wall). The per-request part enters the curve as
     ServiceCurve.per_request_ms, the per-batch part as overhead_ms: they hold the core,
     so they lower the capacity;
   - the worker's own per-batch cost of serving: its model CPU time on the lone
     requests (the batch log) beyond the back-to-back timing at batch 1 (caches the
     server's other work cooled between batches), in wall time by the same share; added
     to overhead_ms;
   - the fixed latency outside the worker (the hops HTTP -> queue -> worker -> back when
     they wait rather than compute): what the lone requests' median end to end leaves
     beyond s(1) and half the batch window (a lone request lands anywhere in LitServe's
     window), so the prediction for a lone request is that calibration median:
     ServiceCurve.transit_ms, added to every request's latency, not to the service time.
2. The capacity is the curve's: max batch / s(max batch) with s(k) = s_model(k) +
   overhead_ms + k x per_request_ms (ServiceCurve.capacity); the rates are 30%, 60% and 85%
   of it.
3. The prediction: compress.decide.serving.simulate with that curve, one worker, the
   served max batch and delay, and LitServe's batching policy ("window": a free worker
   collects for batch_timeout from the moment it is free, or until max batch requests
   wait: litserve/loops/base.py collate_requests). The inputs and the predictions at every
   rate are written to --out before the first load test.
4. The load test: `--requests` seeded Poisson arrivals (open loop) after 50 warm-up
   ones; measured p50/p95/p99 and mean batch (the server's batch log), against the
   prediction. Target: predicted / measured p95 within 25% at each rate. Load averages
   before and after (the machine may be shared). Then (--drift-rounds) the calibration of
   point 1 once more, printed beside the one used: how far the server drifted during the
   load tests (never used for the prediction).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from compress.decide.cost import _sigma  # noqa: E402
from compress.decide.serving import ServiceCurve, simulate  # noqa: E402
from compress.provenance import cpu_model  # noqa: E402

TEXTS = ["The central bank held interest rates as markets waited for the budget.",
         "The striker scored twice in the second half to win the cup tie.",
         "A new handset with a larger screen goes on sale next month.",
         "The film took the top prize at the festival after a week of screenings."]


# ------------------------------------------------------------------------------ client

async def _post(session, url, payload):
    t0 = time.perf_counter()
    async with session.post(url, json=payload) as r:
        body = await r.json()
        if r.status != 200:
            raise RuntimeError(f"server answered {r.status}")
    return (time.perf_counter() - t0) * 1000.0, body


async def sequential(url: str, n: int) -> list[float]:
    """One request at a time; end-to-end ms of each."""
    import aiohttp

    async with aiohttp.ClientSession() as s:
        return [(await _post(s, url, {"text": TEXTS[i % len(TEXTS)]}))[0] for i in range(n)]


async def closed_loop(url: str, n: int, concurrency: int) -> None:
    """`concurrency` requests always in flight until `n` are done (batches form)."""
    import aiohttp

    done = 0

    async def worker(s):
        nonlocal done
        while done < n:
            done += 1
            await _post(s, url, {"text": TEXTS[done % len(TEXTS)]})

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as s:
        await asyncio.gather(*(worker(s) for _ in range(concurrency)))


async def calibrate_call(url: str, sizes: list[int], repeats: int) -> list[list[float]]:
    import aiohttp

    async with aiohttp.ClientSession() as s:
        return (await _post(s, url, {"calibrate": sizes, "repeats": repeats}))[1]["y"]


async def poisson(url: str, rate: float, n: int, seed: int, warmup: int = 50
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Open loop: seeded Poisson arrivals at `rate`/s; (send time s, latency ms) per
    request after the warm-up."""
    import aiohttp

    gaps = np.random.default_rng(seed).exponential(1.0 / rate, n + warmup)
    sent = np.zeros(n + warmup)
    lat = np.zeros(n + warmup)

    async def one(i, s):
        sent[i] = time.perf_counter()
        lat[i] = (await _post(s, url, {"text": TEXTS[i % len(TEXTS)]}))[0]

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as s:
        tasks, t0, t = [], time.perf_counter(), 0.0
        for i, g in enumerate(gaps):
            t += g
            delay = t0 + t - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(i, s)))
        await asyncio.gather(*tasks)
    return sent[warmup:] - t0, lat[warmup:]


# ------------------------------------------------------------------------------ server

class Server:
    """The LitServe process (and the processes it spawns) on core 0, its batch log."""

    def __init__(self, model_dir: str, max_batch: int, delay_ms: float, seq_len: int,
                 err_log: Path, core: int = 0):
        self.log = Path(tempfile.mkstemp(prefix="serving-batches-", suffix=".csv")[1])
        port = _free_port()
        self.proc = subprocess.Popen(
            ["taskset", "-c", str(core), sys.executable, str(ROOT / "benchmarks" /
             "serving_server.py"), model_dir, str(port), str(max_batch), str(delay_ms),
             str(seq_len), str(self.log)],
            env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.DEVNULL,
            stderr=open(err_log, "a"), start_new_session=True)
        self.url = f"http://127.0.0.1:{port}/predict"
        try:
            _wait_ready(f"http://127.0.0.1:{port}/health", self.proc)
            asyncio.run(sequential(self.url, 30))                          # warm up
        except BaseException:
            self.stop()
            raise

    def rows(self, since: int = 0) -> list[tuple[int, float, float]]:
        """(size, wall ms, cpu ms) of each batch the worker ran, from the `since`-th."""
        out = []
        for line in self.log.read_text().splitlines()[since:]:
            _, size, wall, cpu = line.split(",")
            out.append((int(size), float(wall), float(cpu)))
        return out

    def batches(self) -> int:
        return len(self.log.read_text().splitlines())

    def mean_batch(self, since: int) -> float:
        sizes = [r[0] for r in self.rows(since)]
        return float(np.mean(sizes)) if sizes else float("nan")

    def cpu_seconds(self) -> float:
        """CPU time (user + system) of the server's whole process tree so far."""
        import psutil

        total = 0.0
        root = psutil.Process(self.proc.pid)
        for q in [root, *root.children(recursive=True)]:
            try:
                c = q.cpu_times()
                total += c.user + c.system
            except psutil.NoSuchProcess:
                pass
        return total

    def stop(self) -> None:
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.log.unlink(missing_ok=True)


def _git_head() -> str:
    try:
        out = subprocess.run(["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
                             capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or "unknown"
    except OSError:
        return "unknown"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_ready(url: str, proc, timeout_s: float = 180.0) -> None:
    import urllib.request

    t0 = time.time()
    while time.time() - t0 < timeout_s:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError("server did not come up")


# ------------------------------------------------------------- the prediction's inputs

def calibration_round(server: Server, sizes: list[int], repeats: int, n_seq: int,
                      idle_s: float) -> dict:
    """One round of the pre-test measurement on the serving server (docstring, point 1):
    the worker's own curve, the tree's idle CPU, `n_seq` requests one at a time, and a
    closed-loop burst with max batch requests in flight."""
    curve = asyncio.run(calibrate_call(server.url, sizes, repeats))
    c0, w0 = server.cpu_seconds(), time.monotonic()
    time.sleep(idle_s)
    idle_frac = (server.cpu_seconds() - c0) / (time.monotonic() - w0)
    since = server.batches()
    c0, w0 = server.cpu_seconds(), time.monotonic()
    e2e = asyncio.run(sequential(server.url, n_seq))
    cpu_s, wall_s = server.cpu_seconds() - c0, time.monotonic() - w0
    rows = server.rows(since)
    k = sizes[-1]
    since, c0 = server.batches(), server.cpu_seconds()
    asyncio.run(closed_loop(server.url, 20 * k, k))
    burst_cpu = server.cpu_seconds() - c0
    burst = server.rows(since)
    return {"model_p50_ms": [c[0] for c in curve], "model_p95_ms": [c[1] for c in curve],
            "burst_requests": sum(r[0] for r in burst), "burst_tree_cpu_s": burst_cpu,
            "burst_model_cpu_s": sum(r[2] for r in burst) / 1000.0,
            "burst_mean_batch": float(np.mean([r[0] for r in burst])),
            "model_cpu_ms": [c[2] for c in curve], "idle_cpu_frac": idle_frac,
            "requests": n_seq, "e2e_p50_ms": float(np.median(e2e)),
            "tree_cpu_s": cpu_s, "wall_s": wall_s,
            "batch1_wall_ms": float(np.median([r[1] for r in rows if r[0] == 1])),
            "batch1_cpu_ms": float(np.median([r[2] for r in rows if r[0] == 1]))}


def round_overheads(r: dict, delay_ms: float) -> dict:
    """The server's per-request work (wall ms holding core 0) and its fixed transit (ms
    outside the worker) from one calibration round (docstring, point 1)."""
    n = r["requests"]
    idle_wall = max(0.0, r["wall_s"] - r["tree_cpu_s"])
    active_cpu_ms = (r["tree_cpu_s"] - r["idle_cpu_frac"] * idle_wall) * 1000.0 / n
    share = min(1.0, r["batch1_cpu_ms"] / r["batch1_wall_ms"])
    # the server's CPU per batch of k = a + b k, from batch 1 (lone requests) and the
    # burst's mean batch m: o1 = a + b, om = a / m + b per request
    o1 = active_cpu_ms - r["batch1_cpu_ms"]
    m = r["burst_mean_batch"]
    a, b = 0.0, o1
    if m >= 1.5:
        om = (r["burst_tree_cpu_s"] - r["burst_model_cpu_s"]) * 1000.0 / r["burst_requests"]
        a = (o1 - om) / (1.0 - 1.0 / m)
        b = o1 - a
        if a < 0:
            a, b = 0.0, om
        elif b < 0:
            a, b = o1, 0.0
    per_request = max(0.0, b) / share
    cold = max(0.0, r["batch1_cpu_ms"] - r["model_cpu_ms"][0]) / share
    per_batch = max(0.0, a) / share + cold
    service1 = r["model_p50_ms"][0] + per_batch + per_request
    transit = r["e2e_p50_ms"] - service1 - delay_ms / 2.0
    return {"per_request_ms": per_request, "per_batch_ms": per_batch,
            "transit_ms": max(0.0, transit), "core_share": share}


def _spread(values) -> float:
    """(max - min) / median of a quantity over the calibration rounds."""
    v = np.asarray(values, dtype=float)
    med = float(np.median(v))
    return float((v.max() - v.min()) / med) if med else 0.0


def prediction_inputs(rounds: list[dict], sizes: list[int], delay_ms: float) -> dict:
    """The medians over the rounds (what the prediction uses) and their spreads."""
    over = [round_overheads(r, delay_ms) for r in rounds]
    model = [float(np.median([r["model_p50_ms"][i] for r in rounds]))
             for i in range(len(sizes))]
    sig = float(np.median([_sigma(r["model_p50_ms"][0], r["model_p95_ms"][0])
                           for r in rounds]))
    return {"batch_sizes": list(sizes), "model_ms": model, "sigma": sig,
            "per_request_ms": float(np.median([o["per_request_ms"] for o in over])),
            "per_batch_ms": float(np.median([o["per_batch_ms"] for o in over])),
            "transit_ms": float(np.median([o["transit_ms"] for o in over])),
            "spread": {"model_ms": [_spread([r["model_p50_ms"][i] for r in rounds])
                                    for i in range(len(sizes))],
                       "per_request_ms": _spread([o["per_request_ms"] for o in over]),
                       "per_batch_ms": _spread([o["per_batch_ms"] for o in over]),
                       "transit_ms": _spread([o["transit_ms"] for o in over])},
            "rounds": [{**r, **o} for r, o in zip(rounds, over, strict=True)]}


def prediction_curve(inputs: dict) -> ServiceCurve:
    return ServiceCurve(tuple(inputs["batch_sizes"]), tuple(inputs["model_ms"]),
                        sigma=inputs["sigma"], overhead_ms=inputs["per_batch_ms"],
                        per_request_ms=inputs["per_request_ms"],
                        transit_ms=inputs["transit_ms"])


def plan(inputs: dict, max_batch: int, delay_ms: float, loads: list[float], seed: int
         ) -> dict:
    """Capacity from the curve, the rates, and the prediction at each: all of it fixed
    before any load test."""
    curve = prediction_curve(inputs)
    capacity = curve.capacity(1, max_batch)
    preds = {}
    for load in loads:
        p = simulate(curve, load * capacity, 1, max_batch, delay_ms, 20000, seed,
                     policy="window")
        preds[str(load)] = {"rate": load * capacity, "predicted_p50": p.p50_ms,
                            "predicted_p95": p.p95_ms, "predicted_p99": p.p99_ms,
                            "predicted_mean_batch": p.mean_batch}
    return {"capacity": capacity, "service_ms": [curve.service(k) for k in
                                                 inputs["batch_sizes"]], "rates": preds}


# ------------------------------------------------------------------------------- main

def run_benchmark(measure, drive, write, max_batch: int, delay_ms: float,
                  loads: list[float], seed: int) -> dict:
    """measure() -> prediction inputs; the plan (capacity, rates, predictions) from them;
    write(doc) before the first load test and after each; drive(rate) -> measured."""
    inputs = measure()
    doc = {"inputs": inputs, "plan": plan(inputs, max_batch, delay_ms, loads, seed),
           "measured": {}}
    write(doc)
    for load in loads:
        pred = doc["plan"]["rates"][str(load)]
        m = drive(pred["rate"])
        doc["measured"][str(load)] = {**m, "ratio": pred["predicted_p95"] / m["p95"]}
        write(doc)
    return doc


def render(doc: dict, header: list[str]) -> str:
    """The results file: header, inputs, plan, and what was measured so far."""
    inp, pl = doc["inputs"], doc["plan"]
    sizes = inp["batch_sizes"]
    out = list(header)
    out.append("prediction inputs, measured on the serving server before any load test "
               "(median of the rounds; spread = (max - min) / median):")
    for i, r in enumerate(inp["rounds"]):
        out.append(f"  round {i + 1}: model " + ", ".join(
            f"k={k} {v:.2f}" for k, v in zip(sizes, r["model_p50_ms"], strict=True)) +
            f" ms (CPU k=1 {r['model_cpu_ms'][0]:.2f}); idle tree CPU "
            f"{r['idle_cpu_frac']:.1%}; {r['requests']} requests one "
            f"at a time: e2e p50 {r['e2e_p50_ms']:.2f} ms, model {r['batch1_wall_ms']:.2f} "
            f"ms wall / {r['batch1_cpu_ms']:.2f} ms CPU, tree CPU "
            f"{r['tree_cpu_s'] * 1000 / r['requests']:.2f} ms per request; burst: mean "
            f"batch {r['burst_mean_batch']:.2f}, tree CPU "
            f"{r['burst_tree_cpu_s'] * 1000 / r['burst_requests']:.2f} ms per request, model "
            f"{r['burst_model_cpu_s'] * 1000 / r['burst_requests']:.2f}; -> per request "
            f"{r['per_request_ms']:.2f} ms, per batch {r['per_batch_ms']:.2f} ms, transit "
            f"{r['transit_ms']:.2f} ms, core share "
            f"{r['core_share']:.2f}")
    sp = inp["spread"]
    out.append("  used: model " + ", ".join(
        f"k={k} {v:.2f} (spread {s:.0%})" for k, v, s in zip(sizes, inp["model_ms"],
                                                              sp["model_ms"], strict=True)) +
        f" ms; sigma {inp['sigma']:.3f}; per_request_ms {inp['per_request_ms']:.2f} "
        f"(spread {sp['per_request_ms']:.0%}); per batch (overhead_ms) "
        f"{inp['per_batch_ms']:.2f} (spread {sp['per_batch_ms']:.0%}); transit_ms "
        f"{inp['transit_ms']:.2f} (spread "
        f"{sp['transit_ms']:.0%})")
    out.append("  service s(k) = model(k) + per batch + k x per_request_ms: " + ", ".join(
        f"k={k} {v:.2f}" for k, v in zip(sizes, pl["service_ms"], strict=True)) +
        f" ms; capacity {pl['capacity']:.1f}/s (max batch {sizes[-1]} / s({sizes[-1]}))")
    rows = []
    for load, pr in pl["rates"].items():
        out.append(f"[{float(load):.0%}] predicted at {pr['rate']:.1f}/s: p50 "
                   f"{pr['predicted_p50']:.1f}, p95 {pr['predicted_p95']:.1f}, p99 "
                   f"{pr['predicted_p99']:.1f} ms, mean batch "
                   f"{pr['predicted_mean_batch']:.2f}")
        m = doc["measured"].get(load)
        if m is None:
            continue
        ratio = m["ratio"]
        h1, h2 = m["p95_halves"]
        out.append(f"[{float(load):.0%}] measured: p50 {m['p50']:.1f}, p95 {m['p95']:.1f} "
                   f"(halves {h1:.1f} / {h2:.1f}), p99 {m['p99']:.1f} ms, mean batch "
                   f"{m['mean_batch']:.2f}; load average {m['load_average_after']:.2f}; "
                   f"predicted / measured p95 {ratio:.2f}")
        if "model_wall_by_batch" in m:
            out.append(f"  after the fact (not used): the server's tree CPU "
                       f"{m['tree_cpu_ms_per_request']:.2f} ms per request; the worker's "
                       f"model wall by batch size: " + ", ".join(
                           f"k={k} {v:.1f}" for k, v in m["model_wall_by_batch"].items()))
        rows.append((load, pr, m, ratio))
    if not rows:
        out.append("load tests: not run yet (the inputs and predictions above were written "
                   "before the first one)")
    else:
        out += ["", "| load | rate/s | requests | measured p50 | measured p95 (1st / 2nd "
                "half) | measured p99 | measured mean batch | predicted p50 | predicted "
                "p95 | predicted mean batch | predicted / measured p95 |",
                "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for load, pr, m, ratio in rows:
            out.append(
                f"| {float(load):.0%} | {pr['rate']:.1f} | {m['requests']} | {m['p50']:.1f} "
                f"| {m['p95']:.1f} ({m['p95_halves'][0]:.1f} / {m['p95_halves'][1]:.1f}) | "
                f"{m['p99']:.1f} | {m['mean_batch']:.2f} | {pr['predicted_p50']:.1f} | "
                f"{pr['predicted_p95']:.1f} | {pr['predicted_mean_batch']:.2f} | "
                f"{ratio:.2f} |")
        within = sum(abs(r[3] - 1) <= 0.25 for r in rows)
        out += ["", f"within 25%: {within} of {len(rows)} rates"]
    if "after" in doc:
        af = doc["after"]
        out.append(
            "the same calibration after the load tests (a drift check, not used): model " +
            ", ".join(f"k={k} {v:.2f}" for k, v in zip(sizes, af["model_ms"], strict=True)) +
            f" ms; per request {af['per_request_ms']:.2f}, per batch "
            f"{af['per_batch_ms']:.2f}, transit {af['transit_ms']:.2f} ms; capacity "
            f"{af['capacity']:.1f}/s against {pl['capacity']:.1f}/s before "
            f"({af['capacity'] / pl['capacity'] - 1:+.0%})")
    return "\n".join(out) + "\n\n```json\n" + json.dumps(doc, indent=2, default=float) + \
        "\n```\n"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("run_dir")
    ap.add_argument("--candidate", default="int8")
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--max-batch", type=int, default=8)
    ap.add_argument("--delay-ms", type=float, default=2.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--loads", default="0.3,0.6,0.85")
    ap.add_argument("--calib-rounds", type=int, default=5)
    ap.add_argument("--calib-requests", type=int, default=60,
                    help="requests one at a time per calibration round")
    ap.add_argument("--calib-repeats", type=int, default=20,
                    help="batches per size the worker times per calibration round")
    ap.add_argument("--drift-rounds", type=int, default=2,
                    help="calibration rounds after the load tests: a drift check, not used")
    ap.add_argument("--out", type=Path)
    a = ap.parse_args()

    from compress.decide.cost import measured_curves
    from compress.results import load_run

    run = load_run(a.run_dir)
    row = next(r for r in run.rows if r["candidate"] == a.candidate)
    model = measured_curves(run.measurements).get(a.candidate) or {"batch_sizes": [], "p50": []}
    sizes = sorted({1, 2, 4, a.max_batch} | {b for b in model["batch_sizes"]
                                              if b <= a.max_batch})
    seq_len = int(row.get("seq_len") or 128)
    loads = [float(x) for x in a.loads.split(",")]
    err_log = Path(a.out or "/tmp/serving").with_suffix(".server.log")
    err_log.parent.mkdir(parents=True, exist_ok=True)

    load_before = os.getloadavg()
    header = [
        f"# serving benchmark, {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC",
        f"machine: {cpu_model()}, {os.cpu_count()} CPUs, "
        f"load average before {load_before[0]:.2f} {load_before[1]:.2f} "
        f"{load_before[2]:.2f}",
        f"command: {' '.join(sys.argv)}; code: {_git_head()}",
        f"candidate {a.candidate} ({row['kind']}) from {run.path}; server: LitServe "
        f"max_batch_size {a.max_batch}, batch_timeout {a.delay_ms:g} ms, 1 worker, ORT 1 "
        f"thread, {seq_len} tokens padded; server (all its processes) on core 0, load "
        f"generator on core 1; prediction: compress.decide.serving.simulate, policy "
        f"'window' (see the docstring of benchmarks/serving.py)",
        "compress's model-only p50 (for reference, not used): " + ", ".join(
            f"k={k} {v:.2f}" for k, v in zip(model["batch_sizes"], model["p50"], strict=True)) +
        " ms"]

    def write(doc):
        text = render(doc, header)
        print(text.split("\n```json")[0].splitlines()[-1], flush=True)
        if a.out:
            a.out.parent.mkdir(parents=True, exist_ok=True)
            tmp = a.out.with_suffix(".tmp")
            tmp.write_text(text)
            tmp.replace(a.out)

    os.sched_setaffinity(0, {1})
    server = Server(row["artifact_path"], a.max_batch, a.delay_ms, seq_len, err_log)
    try:
        def measure(n_rounds=a.calib_rounds):
            asyncio.run(calibrate_call(server.url, sizes, a.calib_repeats))   # warm up
            rounds = []
            for i in range(n_rounds):
                rounds.append(calibration_round(server, sizes, a.calib_repeats,
                                                a.calib_requests, 1.0))
                print(f"calibration round {i + 1}: {rounds[-1]}", flush=True)
            return prediction_inputs(rounds, sizes, a.delay_ms)

        def drive(rate):
            since, c0 = server.batches(), server.cpu_seconds()
            _, lat = asyncio.run(poisson(server.url, rate, a.requests, a.seed))
            cpu_ms = (server.cpu_seconds() - c0) * 1000.0 / (a.requests + 50)
            rows = server.rows(since)
            walls = {k: float(np.median([r[1] for r in rows if r[0] == k]))
                     for k in sorted({r[0] for r in rows})}
            m50, m95, m99 = np.percentile(lat, [50, 95, 99])
            halves = [float(np.percentile(lat[: len(lat) // 2], 95)),
                      float(np.percentile(lat[len(lat) // 2:], 95))]
            return {"requests": len(lat), "p50": m50, "p95": m95, "p99": m99,
                    "p95_halves": halves, "mean_batch": server.mean_batch(since),
                    "tree_cpu_ms_per_request": cpu_ms, "model_wall_by_batch": walls,
                    "load_average_after": os.getloadavg()[0]}

        doc = run_benchmark(measure, drive, write, a.max_batch, a.delay_ms, loads, a.seed)
        if a.drift_rounds:
            post = measure(a.drift_rounds)
            doc["after"] = {k: post[k] for k in ("model_ms", "per_request_ms",
                                                 "per_batch_ms", "transit_ms")}
            doc["after"]["capacity"] = prediction_curve(post).capacity(1, a.max_batch)
    finally:
        server.stop()
    load_after = os.getloadavg()
    header.append(f"load average after {load_after[0]:.2f} {load_after[1]:.2f} "
                  f"{load_after[2]:.2f}")
    write(doc)
    print(render(doc, header).split("\n```json")[0], flush=True)
    return 0 if all(abs(m["ratio"] - 1) <= 0.25 for m in doc["measured"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
