"""Serving benchmark: a real dynamic-batching server on this CPU against the serving model.

    bash scripts/setup.sh       # installs litserve==0.2.19 (dev extras): the real server
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/serving.py RUN_DIR [--candidate int8]
        [--requests 2000] [--max-batch 8] [--delay-ms 2] [--seed 0] [--out FILE]

RUN_DIR is a finished `compress run` whose suite measured the candidate's latency at
several batch sizes up to --max-batch (see benchmarks/serving-recipe.yaml), with 1 thread.

The server: LitServe (max_batch_size, batch_timeout, 1 worker) serving the ONNX model with
ONNX Runtime (1 thread), pinned to core 0 with its HTTP front end; the load generator
(asyncio + aiohttp) runs on core 1. Latency is end to end, measured at the client.

1. The server's service curve, measured before any load test and never fitted to one:
   for each batch size k of the run's curve, the same server capped at max batch k is
   driven open loop above its capacity (seeded Poisson arrivals at 1.15x a closed-loop
   estimate, raised until at least k requests wait at every completion of the middle
   half); there, m = the mean batch that formed (the server's batch log) and s = m /
   throughput is how long one batch of m holds the core. What the model alone does not
   explain, s - (compress's model-only p50 at m), is the server's own work: least squares
   gives a part per batch and a part per request (HTTP, JSON, tokenisation and LitServe's
   queues, all on core 0). The serving model's curve is the model's p50 plus both parts
   (ServiceCurve overhead_ms and per_request_ms).
2. Before each rate, the open-loop capacity at the served max batch is measured again the
   same way (a core's speed drifts on a shared machine): it scales the whole curve, and
   the rate is 30%, 60% or 85% of it. With --fixed it is only printed: the curve and the
   rates keep the first measurement (on a quiet machine the overload figure moved 90 ->
   114/s within minutes: benchmarks/results/serving-2026-11-29-b.txt).
3. The prediction: compress.decide.serving.simulate with that curve, one worker, the
   served max batch and delay, and LitServe's batching policy ("window": a free worker
   collects for batch_timeout from the moment it is free, or until max batch requests
   wait; an empty window starts again: litserve/loops/base.py collate_requests), printed
   before the load test starts.
4. The load test: `--requests` seeded Poisson arrivals (open loop) after 50 warm-up
   ones; measured p50/p95/p99 and mean batch (the server's batch log), against the
   prediction. Target: predicted / measured p95 within 25% at each rate. Load averages
   before and after (the machine may be shared).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
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

TEXTS = ["The central bank held interest rates as markets waited for the budget.",
         "The striker scored twice in the second half to win the cup tie.",
         "A new handset with a larger screen goes on sale next month.",
         "The film took the top prize at the festival after a week of screenings."]
OVERLOAD = 1.15


# ------------------------------------------------------------------------------ client

async def _post(session, url, text):
    t0 = time.perf_counter()
    async with session.post(url, json={"text": text}) as r:
        await r.read()
        if r.status != 200:
            raise RuntimeError(f"server answered {r.status}")
    return (time.perf_counter() - t0) * 1000.0


async def sequential(url: str, n: int) -> list[float]:
    import aiohttp

    async with aiohttp.ClientSession() as s:
        return [await _post(s, url, TEXTS[i % len(TEXTS)]) for i in range(n)]


async def saturate(url: str, n: int, concurrency: int) -> float:
    """Closed loop: `concurrency` requests always in flight; requests/s."""
    import aiohttp

    done = 0

    async def worker(s):
        nonlocal done
        while done < n:
            done += 1
            await _post(s, url, TEXTS[done % len(TEXTS)])

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as s:
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(s) for _ in range(concurrency)))
        return n / (time.perf_counter() - t0)


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
        lat[i] = await _post(s, url, TEXTS[i % len(TEXTS)])

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


def open_capacity(url: str, k: int, estimate: float, seed: int) -> tuple[float, float]:
    """Open-loop capacity at max batch k: Poisson arrivals above `estimate`, throughput of
    the middle half of the completions, provided at least k requests waited at every
    completion there (else the rate goes up and it runs again). (requests/s, rate used)."""
    rate, n = OVERLOAD * estimate, max(300, 40 * k)
    for _ in range(4):
        sent, lat = asyncio.run(poisson(url, rate, n, seed, warmup=0))
        done = np.sort(sent + lat / 1000.0)
        a, b = n // 4, 3 * n // 4
        backlog = np.searchsorted(np.sort(sent), done[a:b]) - np.arange(a, b) - 1
        if backlog.min() >= k:
            return (b - a) / (done[b] - done[a]), rate
        rate *= 1.3
    raise RuntimeError(f"could not overload the server at max batch {k} (last rate "
                       f"{rate:.0f}/s)")


# ------------------------------------------------------------------------------ server

class Server:
    """The LitServe process (and the workers it spawns) on core 0, its batch log."""

    def __init__(self, model_dir: str, max_batch: int, delay_ms: float, seq_len: int,
                 err_log: Path):
        self.log = Path(tempfile.mkstemp(prefix="serving-batches-", suffix=".csv")[1])
        port = _free_port()
        self.proc = subprocess.Popen(
            ["taskset", "-c", "0", sys.executable, str(ROOT / "benchmarks" /
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

    def batches(self) -> int:
        return len(self.log.read_text().splitlines())

    def mean_batch(self, since: int) -> float:
        sizes = [int(line.split(",")[1]) for line in self.log.read_text().splitlines()[since:]]
        return float(np.mean(sizes)) if sizes else float("nan")

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


def service_point(server: Server, k: int, seed: int) -> tuple[float, float, float, float]:
    """A server capped at max batch k, overloaded open loop: (mean batch m that formed,
    ms one batch of m holds the worker = m / throughput, open-loop and closed-loop
    requests/s)."""
    closed = asyncio.run(saturate(server.url, max(40, 20 * k), 4 * k))
    since = server.batches()
    cap, _ = open_capacity(server.url, k, closed, seed)
    m = server.mean_batch(since)
    return m, m * 1000.0 / cap, cap, closed


def server_overheads(points: list[tuple[float, float]], model) -> tuple[float, float]:
    """(ms per batch, ms per request): least squares of s - model over the (mean batch,
    s) points, both parts non-negative."""
    m = np.array([p[0] for p in points])
    r = np.array([t - model.first(x) for x, t in points])    # the model's p50 at x
    fixed, per = np.linalg.lstsq(np.c_[np.ones_like(m), m], r, rcond=None)[0]
    if fixed < 0:
        fixed, per = 0.0, float(r @ m / (m @ m))
    if per < 0:
        fixed, per = float(r.mean()), 0.0
    return max(0.0, float(fixed)), max(0.0, float(per))


# ------------------------------------------------------------------------------- main

def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("run_dir")
    ap.add_argument("--candidate", default="int8")
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--max-batch", type=int, default=8)
    ap.add_argument("--delay-ms", type=float, default=2.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--loads", default="0.3,0.6,0.85")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--fixed", action="store_true",
                    help="curve and rates from the first capacity only (re-measured ones "
                         "are printed, not used)")
    a = ap.parse_args()

    from compress.decide.cost import _sigma, measured_curves
    from compress.decide.serving import ServiceCurve, simulate
    from compress.results import load_run

    run = load_run(a.run_dir)
    row = next(r for r in run.rows if r["candidate"] == a.candidate)
    model = measured_curves(run.measurements)[a.candidate]
    sizes = [b for b in model["batch_sizes"] if b <= a.max_batch]
    seq_len = int(row.get("seq_len") or 128)
    if a.max_batch not in model["batch_sizes"]:
        raise SystemExit(f"{a.candidate} was measured at batch sizes {model['batch_sizes']}, "
                         f"not at --max-batch {a.max_batch}; re-run compress with "
                         f"--set 'suite.latency.batch_sizes=[1,2,4,{a.max_batch}]'")
    sigma = _sigma(model["p50"][0], model["p95"][0])
    model_curve = ServiceCurve(tuple(sizes), tuple(model["p50"][:len(sizes)]))
    err_log = Path(a.out or "/tmp/serving").with_suffix(".server.log")
    err_log.parent.mkdir(parents=True, exist_ok=True)
    log = []

    def say(msg=""):
        print(msg, flush=True)
        log.append(msg)

    load_before = os.getloadavg()
    say(f"# serving benchmark, {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC")
    say(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"load average before {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}")
    say(f"command: {' '.join(sys.argv)}; code: {_git_head()}")
    say(f"candidate {a.candidate} ({row['kind']}) from {run.path}; server: LitServe "
        f"max_batch_size {a.max_batch}, batch_timeout {a.delay_ms:g} ms, 1 worker, ORT 1 "
        f"thread, {seq_len} tokens padded; server on core 0, load generator on core 1; "
        f"prediction: compress.decide.serving.simulate, policy 'window', the server's "
        f"curve measured below (see the docstring of benchmarks/serving.py)")
    os.sched_setaffinity(0, {1})

    # ---- 1. the server's service curve, from servers capped at each batch size k
    points: list[tuple[float, float]] = []
    say("the server's service curve, before any load test: the server capped at max batch "
        "k, overloaded open loop; m = mean batch that formed, s = ms per batch of m = m / "
        "throughput; compress's model-only p50 at k beside it:")

    def point(server, k):
        m, t, cap, closed = service_point(server, k, a.seed)
        say(f"  k={k}: m {m:.2f}, s {t:.2f} ms (open loop {cap:.1f}/s, closed loop "
            f"{closed:.1f}/s); model alone {model['p50'][sizes.index(k)]:.2f} ms")
        return m, t, cap

    for k in sizes[:-1]:
        server = Server(row["artifact_path"], k, a.delay_ms, seq_len, err_log)
        try:
            points.append(point(server, k)[:2])
        finally:
            server.stop()
    server = Server(row["artifact_path"], a.max_batch, a.delay_ms, seq_len, err_log)
    results, rows_md, b = {}, [], a.max_batch
    try:
        for n_rate, load in enumerate(float(x) for x in a.loads.split(",")):
            # ---- 2. the open-loop capacity at max batch, just before this rate: the
            # curve's level (a core's speed drifts on a shared machine)
            m, t, capacity = point(server, b)
            if n_rate == 0:
                points.append((m, t))
                fixed, per = server_overheads(points, model_curve)
                first_capacity = capacity
                say(f"  the server's work beyond the model (least squares over these "
                    f"{len(points)} points): {fixed:.2f} ms per batch + {per:.2f} ms per "
                    f"request; s(k) = model p50(k) + that: " + ", ".join(
                        f"k={k} {model_curve.first(k) + fixed + per * k:.1f}" for k in sizes))
                seq = float(np.median(asyncio.run(sequential(server.url, 100))))
                say(f"  one request at a time: median {seq:.2f} ms end to end")
            scale = 1.0 if a.fixed else first_capacity / capacity
            if a.fixed:
                capacity = first_capacity
            sc = ServiceCurve(tuple(sizes), tuple(v * scale for v in model["p50"][:len(sizes)]),
                              sigma=sigma, overhead_ms=fixed * scale,
                              per_request_ms=per * scale)
            rate = load * capacity
            # ---- 3. the prediction
            p = simulate(sc, rate, 1, b, a.delay_ms, 20000, a.seed, policy="window")
            say(f"[{load:.0%}] before the test: open-loop capacity {capacity:.1f}/s, curve x "
                f"{scale:.3f}; predicted at {rate:.1f}/s: "
                f"p50 {p.p50_ms:.1f}, p95 {p.p95_ms:.1f}, p99 {p.p99_ms:.1f} ms, mean batch "
                f"{p.mean_batch:.2f}; load average {os.getloadavg()[0]:.2f}")
            # ---- 4. the load test
            since = server.batches()
            _, lat = asyncio.run(poisson(server.url, rate, a.requests, a.seed))
            mb_test = server.mean_batch(since)
            m50, m95, m99 = np.percentile(lat, [50, 95, 99])
            h1 = np.percentile(lat[: len(lat) // 2], 95)
            h2 = np.percentile(lat[len(lat) // 2:], 95)
            ratio = p.p95_ms / m95
            results[load] = {"rate": rate, "capacity": capacity,
                             "service_ms": [sc.service(k) for k in sizes],
                             "requests": len(lat), "p50": m50, "p95": m95, "p99": m99,
                             "p95_halves": [h1, h2], "mean_batch": mb_test,
                             "predicted_p50": p.p50_ms, "predicted_p95": p.p95_ms,
                             "predicted_p99": p.p99_ms, "predicted_mean_batch": p.mean_batch,
                             "ratio": ratio, "load_average_after": os.getloadavg()[0]}
            rows_md.append(f"| {load:.0%} | {rate:.1f} | {len(lat)} | {m50:.1f} | {m95:.1f} "
                           f"({h1:.1f} / {h2:.1f}) | {m99:.1f} | {mb_test:.2f} | "
                           f"{p.p50_ms:.1f} | {p.p95_ms:.1f} | {p.mean_batch:.2f} | "
                           f"{ratio:.2f} |")
            say(f"[{load:.0%}] measured: p50 {m50:.1f}, p95 {m95:.1f} (halves {h1:.1f} / "
                f"{h2:.1f}), p99 {m99:.1f} ms, mean batch {mb_test:.2f}; predicted / "
                f"measured p95 {ratio:.2f}")
    finally:
        server.stop()
    say("")
    say("| load | rate/s | requests | measured p50 | measured p95 (1st / 2nd half) | "
        "measured p99 | measured mean batch | predicted p50 | predicted p95 | "
        "predicted mean batch | predicted / measured p95 |")
    say("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for line in rows_md:
        say(line)
    load_after = os.getloadavg()
    within = [abs(r["ratio"] - 1) <= 0.25 for r in results.values()]
    say("")
    say(f"within 25%: {sum(within)} of {len(within)} rates; load average after "
        f"{load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f}")
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = a.out.with_suffix(".tmp")
        tmp.write_text("\n".join(log) + "\n\n```json\n" + json.dumps(
            {str(k): v for k, v in results.items()}, indent=2, default=float) + "\n```\n")
        tmp.replace(a.out)
    return 0 if all(within) else 1


if __name__ == "__main__":
    sys.exit(main())
