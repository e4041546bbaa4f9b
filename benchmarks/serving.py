"""Serving benchmark: a real dynamic-batching server on this CPU against the serving model.

    bash scripts/setup.sh       # installs litserve==0.2.19 (dev extras): the real server
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/serving.py RUN_DIR [--candidate int8]
        [--requests 2000] [--max-batch 8] [--delay-ms 2] [--seed 0] [--out FILE]

RUN_DIR is a finished `compress run` whose suite measured the candidate's latency at
several batch sizes (e.g. `--set suite.latency.batch_sizes=cost`), with 1 thread.

1. Prediction inputs, fixed before each rate's load test and never fitted to it: the
   server's own batch-1 time (median of 100 sequential requests, one at a time: model,
   HTTP, JSON, tokenisation, queues) and full-batch time (a saturating closed loop: its
   throughput is the "measured capacity"), with the shape in between and the spread taken
   from the candidate's batch curve as compress measured it (RUN_DIR). They are measured
   again just before each rate because on a shared machine the speed of a core drifts by
   2x within minutes; a curve measured once, earlier, predicted nonsense.
2. The prediction: compress.decide.serving.simulate at 30%, 60% and 85% of the capacity
   just measured, with LitServe's batching policy ("window": a free worker collects for
   `delay` from the moment it is free), printed before the load test starts.
3. The load test: LitServe (max_batch_size, batch_timeout) serving the ONNX model with
   ONNX Runtime (1 thread) pinned to core 0; an asyncio load generator pinned to core 1
   sends seeded Poisson arrivals (open loop), `--requests` per rate after 50 warm-up ones;
   end-to-end latency is measured at the client.
4. The comparison: predicted / measured p95 at each rate (target: within 25%), with the
   load average before and after (the machine is shared).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TEXTS = ["The central bank held interest rates as markets waited for the budget.",
         "The striker scored twice in the second half to win the cup tie.",
         "A new handset with a larger screen goes on sale next month.",
         "The film took the top prize at the festival after a week of screenings."]


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


async def poisson(url: str, rate: float, n: int, seed: int, warmup: int = 50) -> list[float]:
    """Open loop: seeded Poisson arrivals at `rate`/s; end-to-end latency per request."""
    import aiohttp

    gaps = np.random.default_rng(seed).exponential(1.0 / rate, n + warmup)
    lat: list[float] = [0.0] * (n + warmup)

    async def one(i, s):
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
    return lat[warmup:]


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


# ------------------------------------------------------------------------------- main

def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("run_dir", nargs="?")
    ap.add_argument("--candidate", default="int8")
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--max-batch", type=int, default=8)
    ap.add_argument("--delay-ms", type=float, default=2.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--loads", default="0.3,0.6,0.85")
    ap.add_argument("--out", type=Path)
    a = ap.parse_args()

    from compress.decide.cost import _sigma, measured_curves
    from compress.decide.serving import ServiceCurve, simulate
    from compress.results import load_run

    run = load_run(a.run_dir)
    row = next(r for r in run.rows if r["candidate"] == a.candidate)
    curve_m = measured_curves(run.measurements)[a.candidate]
    sizes, p50 = curve_m["batch_sizes"], curve_m["p50"]
    seq_len = int(row.get("seq_len") or 128)
    if max(sizes) < a.max_batch:
        raise SystemExit(f"{a.candidate} was measured up to batch {max(sizes)}; re-run with "
                         f"--set suite.latency.batch_sizes=cost to reach {a.max_batch}")
    log = []

    def say(msg=""):
        print(msg, flush=True)
        log.append(msg)

    load_before = os.getloadavg()
    say(f"# serving benchmark, {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC")
    say(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"load average before {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}")
    say(f"command: {' '.join(sys.argv)}")
    say(f"candidate {a.candidate} ({row['kind']}) from {run.path}; server: LitServe "
        f"max_batch_size {a.max_batch}, batch_timeout {a.delay_ms:g} ms, 1 worker, ORT 1 "
        f"thread, {seq_len} tokens padded; server on core 0, load generator on core 1")
    say("measured batch curve (compress run, p50 ms): "
        + ", ".join(f"b{b} {v:.2f}" for b, v in zip(sizes, p50, strict=True)))

    os.sched_setaffinity(0, {1})
    port = _free_port()
    proc = subprocess.Popen(
        ["taskset", "-c", "0", sys.executable, str(ROOT / "benchmarks" / "serving_server.py"),
         row["artifact_path"], str(port), str(a.max_batch), str(a.delay_ms), str(seq_len)],
        env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.DEVNULL,
        stderr=open(Path(a.out or "/tmp/serving").with_suffix(".server.log"), "w"),
        start_new_session=True)
    url = f"http://127.0.0.1:{port}/predict"
    results = {}
    try:
        _wait_ready(f"http://127.0.0.1:{port}/health", proc)
        asyncio.run(sequential(url, 30))                                   # warm up
        loads = [float(x) for x in a.loads.split(",")]
        sigma = _sigma(curve_m["p50"][0], curve_m["p95"][0])
        i_b = sizes.index(a.max_batch)
        rows_md = []
        for load in loads:
            # ---- prediction inputs, measured on the server just before this rate's test
            seq = asyncio.run(sequential(url, 100))
            e2e1 = float(np.median(seq))
            cap = asyncio.run(saturate(url, 40 * a.max_batch, 4 * a.max_batch))
            t_full = a.max_batch * 1000.0 / cap          # ms per full batch at saturation
            # the server's curve: its batch-1 and full-batch times, the shape in between
            # from compress's measured curve
            shape = [(v - p50[0]) / (p50[i_b] - p50[0]) for v in p50]
            first = [e2e1 + (t_full - e2e1) * f for f in shape]
            curve = ServiceCurve(tuple(sizes), tuple(first), sigma=sigma)
            rate = load * cap
            p = simulate(curve, rate, 1, a.max_batch, a.delay_ms, 20000, a.seed,
                         policy="window")
            say(f"[{load:.0%}] before the test: sequential median {e2e1:.2f} ms (compress "
                f"measured model p50 {p50[0]:.2f}), saturated {cap:.1f}/s ({t_full:.1f} ms "
                f"per batch of {a.max_batch}; compress measured {p50[i_b]:.1f}); predicted at "
                f"{rate:.1f}/s: p50 {p.p50_ms:.1f}, p95 {p.p95_ms:.1f}, p99 {p.p99_ms:.1f} ms,"
                f" mean batch {p.mean_batch:.2f}; load average {os.getloadavg()[0]:.2f}")
            # ---- the load test
            lat = np.asarray(asyncio.run(poisson(url, rate, a.requests, a.seed)))
            m50, m95, m99 = np.percentile(lat, [50, 95, 99])
            h1 = np.percentile(lat[: len(lat) // 2], 95)
            h2 = np.percentile(lat[len(lat) // 2:], 95)
            ratio = p.p95_ms / m95
            results[load] = {"rate": rate, "capacity": cap, "sequential_ms": e2e1,
                             "requests": len(lat), "p50": m50, "p95": m95, "p99": m99,
                             "p95_halves": [h1, h2], "predicted_p50": p.p50_ms,
                             "predicted_p95": p.p95_ms, "predicted_p99": p.p99_ms,
                             "ratio": ratio, "load_average_after": os.getloadavg()[0]}
            rows_md.append(f"| {load:.0%} | {rate:.1f} | {len(lat)} | {m50:.1f} | {m95:.1f} "
                           f"({h1:.1f} / {h2:.1f}) | {m99:.1f} | {p.p50_ms:.1f} | "
                           f"{p.p95_ms:.1f} | {ratio:.2f} |")
            say(f"[{load:.0%}] measured: p50 {m50:.1f}, p95 {m95:.1f} (halves {h1:.1f} / "
                f"{h2:.1f}), p99 {m99:.1f} ms; predicted / measured p95 {ratio:.2f}")
        say("")
        say("| load | rate/s | requests | measured p50 | measured p95 (1st / 2nd half) | "
            "measured p99 | predicted p50 | predicted p95 | predicted / measured p95 |")
        say("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        for line in rows_md:
            say(line)
    finally:   # the server and the workers it spawned: its own process group
        import signal

        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
    load_after = os.getloadavg()
    within = [abs(r["ratio"] - 1) <= 0.25 for r in results.values()]
    say("")
    say(f"within 25%: {sum(within)} of {len(within)} rates; load average after "
        f"{load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f}")
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text("\n".join(log) + "\n\n```json\n" + json.dumps(
            {str(k): v for k, v in results.items()}, indent=2, default=float) + "\n```\n")
    return 0 if all(within) else 1


if __name__ == "__main__":
    sys.exit(main())
