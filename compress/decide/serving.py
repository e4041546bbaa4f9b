"""The serving model: dynamic batching and queueing under Poisson traffic.

For one candidate on one target, given a service curve (how long a batch of k requests
takes, measured here or projected), the peak request rate and an end-to-end latency SLO
(a percentile of queue wait + batch formation + service), `choose()` finds the cheapest
configuration that meets the SLO: the number of instances, the max batch size and the max
queue delay of a Triton-style dynamic batcher, with the utilisation and the simulated
latency percentiles at that configuration.

The batcher (as Triton's dynamic batcher): requests wait in one queue per instance, served
by the instance's workers (a CPU instance runs `cores // threads` single-stream workers; a
GPU one). When a worker is free and requests wait, it takes up to `max_batch` of them at
once, but waits for more while fewer than `max_batch` wait and the oldest has waited less
than `max_delay`. Instances are fed by random routing, so each sees Poisson arrivals at
peak / instances (conservative against round-robin or least-loaded balancing).

Simulation: a seeded discrete-event loop over *batches* (not requests) on numpy arrays:
arrivals are drawn once per rate (common random numbers across configurations), each
batch is formed with a binary search over the arrival times, and latencies are computed
vectorised at the end. simpy would spend one Python event per request plus its generator
machinery; this loop spends a few microseconds per batch, which is what makes every
candidate x target pair fit in seconds, and it stops as soon as enough requests have
missed the SLO to decide the percentile. Service times vary from batch to batch as a
lognormal whose spread comes from the measured p95/p50 (or the catalog's ratio when the
curve is projected).
"""

from __future__ import annotations

import bisect
import heapq
import math
from dataclasses import asdict, dataclass, field

import numpy as np

Z = {50: 0.0, 90: 1.2816, 95: 1.6449, 99: 2.3263}
SEARCH_REQUESTS = 3000
CONFIRM_REQUESTS = 12000
MAX_INSTANCES = 512


@dataclass(frozen=True)
class ServiceCurve:
    """Service time of one batch (ms, median) at each batch size, and its spread.

    For causal LMs `first_ms` is the prefill and `decode_ms` the per-token decode at each
    batch size, and a batch takes prefill + gen_tokens x decode; otherwise `first_ms` is
    the forward pass. Between two sizes the time is interpolated linearly; beyond the
    largest size nothing is assumed (the batcher never forms a larger batch).

    A server adds work of its own: `overhead_ms` once per batch, and `per_request_ms` for
    each request in it (HTTP, (de)serialisation, tokenisation, the server's queues). The
    per-request part grows with the batch, so batching amortises only the per-batch part:
    on a CPU whose model time is ~linear in the batch, it caps what batching can buy.
    `transit_ms` is wall time every request spends outside the worker that holds nothing:
    the hops between a server's processes (HTTP front end -> queue -> worker -> back) when
    they wait rather than compute. It adds to each request's latency, not to the batch's
    service time, so it neither queues nor lowers the capacity."""

    batch_sizes: tuple[int, ...]
    first_ms: tuple[float, ...]
    decode_ms: tuple[float, ...] | None = None
    gen_tokens: int = 0
    sigma: float = 0.06                  # lognormal spread of a batch's service time
    overhead_ms: float = 0.0             # per batch (the server's fixed work)
    per_request_ms: float = 0.0          # per request in the batch (HTTP, JSON, tokens)
    transit_ms: float = 0.0              # per request, outside the worker (the server's hops)
    provenance: str = "measured"

    def __post_init__(self):
        if not self.batch_sizes or list(self.batch_sizes) != sorted(set(self.batch_sizes)):
            raise ValueError(f"batch sizes must be increasing and unique: {self.batch_sizes}")
        if len(self.first_ms) != len(self.batch_sizes):
            raise ValueError("one time per batch size")

    @property
    def max_batch(self) -> int:
        return self.batch_sizes[-1]

    def _interp(self, values, k: int) -> float:
        bs = self.batch_sizes
        if k <= bs[0]:
            return values[0] * (k / bs[0]) if bs[0] > 1 else values[0]
        return float(np.interp(k, bs, values))

    def first(self, k: int) -> float:
        """Forward (or prefill) of a batch of k, with the server's per-batch and
        per-request work."""
        return self._interp(self.first_ms, k) + self.overhead_ms + self.per_request_ms * k

    def decode(self, k: int) -> float:
        return self._interp(self.decode_ms, k) if self.decode_ms else 0.0

    def service(self, k: int) -> float:
        return self.first(k) + self.gen_tokens * self.decode(k)

    def capacity(self, workers: int, batch: int) -> float:
        """Requests/s one instance serves when every batch is full."""
        return workers * batch * 1000.0 / self.service(batch)


@dataclass
class SimResult:
    rate_rps: float
    workers: int
    max_batch: int
    max_delay_ms: float
    requests: int
    mean_ms: float | None = None
    p50_ms: float | None = None
    p95_ms: float | None = None
    p99_ms: float | None = None
    ttft_p95_ms: float | None = None     # causal LM: queue + formation + prefill
    ttft_p99_ms: float | None = None
    utilisation: float | None = None     # peak rate / capacity at full batches
    busy: float | None = None            # share of worker time spent serving
    mean_batch: float | None = None
    aborted: bool = False                # stopped early: too many requests missed the SLO

    def percentile(self, p: int) -> float | None:
        return {50: self.p50_ms, 95: self.p95_ms, 99: self.p99_ms}[p]


def _stream(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return np.cumsum(rng.exponential(1.0, n)), rng.standard_normal(n)


def simulate(curve: ServiceCurve, rate_rps: float, workers: int, max_batch: int,
             max_delay_ms: float, requests: int = CONFIRM_REQUESTS, seed: int = 0,
             slo_ms: float | None = None, percentile: int = 95, warmup: float = 0.02,
             policy: str = "oldest", _stream_cache: dict | None = None) -> SimResult:
    """Simulate one instance (`workers` workers, one queue) under Poisson arrivals.

    `policy`: "oldest" (Triton: a partial batch goes once its oldest request has waited
    `max_delay_ms`) or "window" (LitServe: a free worker collects for `max_delay_ms` from
    the moment it is free, in back-to-back windows while idle). With `slo_ms`, stops early
    (aborted=True) once more requests missed it than the percentile allows."""
    if policy not in ("oldest", "window"):
        raise ValueError(f"policy must be 'oldest' or 'window', not {policy!r}")
    window = policy == "window" and max_delay_ms > 0
    if rate_rps <= 0:
        raise ValueError("rate must be positive")
    if max_batch > curve.max_batch:
        raise ValueError(f"max batch {max_batch} beyond the curve's largest size "
                         f"{curve.max_batch}")
    key = (requests, seed)
    if _stream_cache is not None and key in _stream_cache:
        unit, normal = _stream_cache[key]
    else:
        unit, normal = _stream(requests, seed)
        if _stream_cache is not None:
            _stream_cache[key] = (unit, normal)
    arr = unit * (1000.0 / rate_rps)
    arrl = arr.tolist()
    jitter = np.exp(curve.sigma * normal).tolist()
    transit = curve.transit_ms
    svc = [0.0] + [curve.service(k) for k in range(1, max_batch + 1)]
    first = [0.0] + [curve.first(k) for k in range(1, max_batch + 1)]
    bounds: list[int] = []      # end index of each batch
    dones: list[float] = []     # completion time of each batch
    starts: list[float] = []    # first output (prefill done) of each batch
    free = [0.0] * workers
    skip = int(requests * warmup)
    allowed = math.inf if slo_ms is None else (requests - skip) * (1 - percentile / 100.0)
    check = slo_ms is not None
    missed = 0
    busy = 0.0
    i = nb = 0
    n, d, b = requests, max_delay_ms, max_batch
    pop, push, right = heapq.heappop, heapq.heappush, bisect.bisect_right
    while i < n:
        t_free = pop(free)
        oldest = arrl[i]
        full_at = arrl[i + b - 1] if i + b - 1 < n else math.inf
        if window:
            # windows [t_free + k d, t_free + (k + 1) d): the one the oldest lands in closes
            w_end = t_free + (math.floor(max(0.0, oldest - t_free) / d) + 1) * d
            start = max(full_at, t_free, oldest)
            start = start if start < w_end else w_end
        else:
            formed = full_at if full_at < oldest + d else oldest + d
            start = t_free if t_free > formed else formed
        j = right(arrl, start, i, i + b if i + b < n else n)
        k = j - i
        jt = jitter[nb]
        s = svc[k] * jt
        done = start + s
        bounds.append(j)
        dones.append(done)
        starts.append(start + first[k] * jt)
        busy += s
        push(free, done)
        if check and j > skip:
            lo = i if i > skip else skip
            late = right(arrl, done + transit - slo_ms, lo, j) - lo
            if late > 0:
                missed += late
                if missed > allowed:
                    return SimResult(rate_rps, workers, max_batch, max_delay_ms, requests,
                                     aborted=True)
        i = j
        nb += 1
    sizes = np.diff(np.asarray(bounds), prepend=0)
    end = np.repeat(np.asarray(dones), sizes) + transit
    ttft = np.repeat(np.asarray(starts), sizes) + transit
    lat = (end - arr)[skip:]
    first_lat = (ttft - arr)[skip:]
    p50, p95, p99 = np.percentile(lat, [50, 95, 99]).tolist()
    t95, t99 = np.percentile(first_lat, [95, 99]).tolist()
    capacity = curve.capacity(workers, max_batch)
    span = float(max(dones) - arr[0])
    return SimResult(rate_rps, workers, max_batch, max_delay_ms, requests, float(lat.mean()),
                     p50, p95, p99, t95, t99, utilisation=rate_rps / capacity,
                     busy=busy / (workers * span), mean_batch=n / nb)


@dataclass
class ServingChoice:
    """The cheapest configuration of one candidate on one target that meets the SLO, or
    why there is none (`feasible` False, `reason`)."""

    feasible: bool
    reason: str | None = None
    instances: int | None = None
    workers: int | None = None
    max_batch: int | None = None
    max_delay_ms: float | None = None
    preferred_batch_sizes: list[int] = field(default_factory=list)
    p50_ms: float | None = None
    p95_ms: float | None = None
    p99_ms: float | None = None
    ttft_p95_ms: float | None = None
    ttft_p99_ms: float | None = None
    tpot_ms: float | None = None
    utilisation: float | None = None
    mean_batch: float | None = None
    capacity_rps: float | None = None   # one instance, full batches
    simulations: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


def _sizes(curve: ServiceCurve, cap: int) -> list[int]:
    """Max-batch settings to try: powers of two and the measured sizes, within the curve."""
    limit = min(cap, curve.max_batch)
    pows = [2 ** i for i in range(0, 12) if 2 ** i <= limit]
    return sorted(set(pows) | {b for b in curve.batch_sizes if b <= limit})


def choose(curve: ServiceCurve, peak_rps: float, workers: int, slo_ms: float,
           percentile: int = 95, max_batch: int = 64, seed: int = 0,
           ttft_slo_ms: float | None = None, tpot_slo_ms: float | None = None,
           max_instances: int = MAX_INSTANCES) -> ServingChoice:
    """The fewest instances, then the lowest simulated latency, that meet the SLO at the
    peak rate (see the module docstring). Seeded: the same inputs give the same answer."""
    if percentile not in (95, 99):
        raise ValueError(f"percentile must be 95 or 99, not {percentile}")
    sizes = _sizes(curve, max_batch)
    z = Z[percentile]
    tail1 = curve.service(1) * math.exp(z * curve.sigma) + curve.transit_ms
    if tail1 > slo_ms:
        return ServingChoice(False, f"even alone, one request takes p{percentile} "
                                    f"{tail1:.1f} ms of service"
                                    f"{' and transit' if curve.transit_ms else ''} > SLO "
                                    f"{slo_ms:g} ms; no "
                                    f"batch size or instance count can meet it",
                             workers=workers)
    if tpot_slo_ms is not None and curve.decode(1) > tpot_slo_ms:
        return ServingChoice(False, f"decode takes {curve.decode(1):.1f} ms per token at "
                                    f"batch 1 > TPOT SLO {tpot_slo_ms:g} ms", workers=workers)
    # batch sizes whose own service already misses the SLO (or the TPOT) are useless
    usable = [b for b in sizes
              if curve.service(b) * math.exp(z * curve.sigma) + curve.transit_ms <= slo_ms
              and (tpot_slo_ms is None or curve.decode(b) <= tpot_slo_ms)]
    best_cap = max(curve.capacity(workers, b) for b in usable)
    n_lo = max(1, math.floor(peak_rps / best_cap) + 1)
    delays = sorted({0.0, round(slo_ms * 0.05, 2), round(slo_ms * 0.2, 2)})
    cache: dict = {}
    sims = 0

    def meets(r: SimResult) -> bool:
        if r.aborted or r.percentile(percentile) is None:
            return False
        ok = r.percentile(percentile) <= slo_ms
        if ttft_slo_ms is not None:
            ok = ok and (r.ttft_p95_ms if percentile == 95 else r.ttft_p99_ms) <= ttft_slo_ms
        return ok

    def run(n: int, b: int, d: float, requests: int) -> SimResult | None:
        nonlocal sims
        rate = peak_rps / n
        if rate >= 0.999 * curve.capacity(workers, b):
            return None
        sims += 1
        return simulate(curve, rate, workers, b, d, requests, seed,
                        slo_ms if ttft_slo_ms is None else None, percentile,
                        _stream_cache=cache)

    def feasible_at(n: int) -> bool:
        b = usable[-1]
        for d in delays:
            r = run(n, b, d, SEARCH_REQUESTS)
            if r is not None and meets(r):
                return True
        return False

    # exponential then binary search on the instance count (latency falls as it grows)
    lo, hi, step = n_lo, None, 1
    n = n_lo
    while n <= max_instances:
        if feasible_at(n):
            hi = n
            break
        lo, n, step = n + 1, n + step, step * 2
    if hi is None:
        return ServingChoice(False, f"no configuration with up to {max_instances} instances "
                                    f"meets p{percentile} <= {slo_ms:g} ms at "
                                    f"{peak_rps:.1f} requests/s", workers=workers,
                             simulations=sims)
    while lo < hi:
        mid = (lo + hi) // 2
        if feasible_at(mid):
            hi = mid
        else:
            lo = mid + 1
    # at the fewest instances, the configuration with the lowest tail, confirmed on a
    # longer run (one more instance if the confirmation misses)
    for n in range(hi, max_instances + 1):
        tried = []
        for b, d in [(b, 0.0) for b in usable] + [(usable[-1], d) for d in delays[1:]]:
            r = run(n, b, d, SEARCH_REQUESTS)
            if r is not None and meets(r):
                tried.append((r.percentile(percentile), b, d))
        for _, b, d in sorted(tried):
            r = run(n, b, d, CONFIRM_REQUESTS)
            if r is not None and meets(r):
                return ServingChoice(
                    True, None, n, workers, b, d,
                    preferred_batch_sizes=[s for s in curve.batch_sizes if s <= b][-2:],
                    p50_ms=r.p50_ms, p95_ms=r.p95_ms, p99_ms=r.p99_ms,
                    ttft_p95_ms=r.ttft_p95_ms if curve.gen_tokens else None,
                    ttft_p99_ms=r.ttft_p99_ms if curve.gen_tokens else None,
                    tpot_ms=curve.decode(b) if curve.gen_tokens else None,
                    utilisation=r.utilisation, mean_batch=r.mean_batch,
                    capacity_rps=curve.capacity(workers, b), simulations=sims)
    return ServingChoice(False, f"no configuration with up to {max_instances} instances "
                                f"meets the SLO", workers=workers, simulations=sims)
