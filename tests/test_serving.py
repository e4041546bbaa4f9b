"""The serving model: the simulation against queueing theory, the configuration search
(instances, max batch, queue delay) under an end-to-end SLO, workers per CPU instance, the
batch-composition flag, missing batch curves, causal-LM SLOs and costs."""

from __future__ import annotations

import math

import pytest

from compress.decide.cost import SLO, Traffic, cost_table, measured_curves
from compress.decide.serving import ServiceCurve, choose, simulate
from compress.hardware.catalog import load_catalog
from compress.hardware.formats import ArtifactInfo
from compress.hardware.projection import CandidateModel, Setting

# a CPU worker: service linear in the batch (DESIGN: batching buys nothing on a CPU)
CPU = ServiceCurve((1, 2, 4, 8), (10.0, 20.0, 40.0, 80.0), sigma=0.01)
# a GPU: a batch of 32 costs 4x a batch of 1
GPU = ServiceCurve((1, 2, 4, 8, 16, 32), (2.0, 2.1, 2.3, 2.8, 4.0, 8.0), sigma=0.01)


def test_simulation_matches_md1_queueing_theory():
    # batch 1, no delay, near-deterministic service: an M/D/1 queue, whose mean wait is
    # rho / (2 mu (1 - rho)) (Pollaczek-Khinchine)
    for rho in (0.3, 0.6, 0.85):
        rate = rho * 100.0                                   # service 10 ms: mu = 100/s
        r = simulate(CPU, rate, workers=1, max_batch=1, max_delay_ms=0.0, requests=60000)
        wait = rho / (2 * 100.0 * (1 - rho)) * 1000.0
        assert r.mean_ms == pytest.approx(10.0 + wait, rel=0.06), (rho, r.mean_ms)
        assert r.utilisation == pytest.approx(rho)
        assert r.busy == pytest.approx(rho, abs=0.03)


def test_simulation_is_seeded():
    a = simulate(GPU, 400, 1, 16, 2.0, 5000, seed=3)
    b = simulate(GPU, 400, 1, 16, 2.0, 5000, seed=3)
    c = simulate(GPU, 400, 1, 16, 2.0, 5000, seed=4)
    assert a == b and a.p95_ms != c.p95_ms


def test_batch_formation_waits_for_the_delay_at_low_load():
    # 5 requests/s, max batch 8, max delay 20 ms: a batch never fills, every request waits
    # the whole delay before its 2 ms service
    r = simulate(GPU, 5.0, 1, 8, 20.0, 4000)
    assert r.p50_ms == pytest.approx(22.0, rel=0.05) and r.mean_batch < 1.2
    r0 = simulate(GPU, 5.0, 1, 8, 0.0, 4000)
    assert r0.p50_ms == pytest.approx(2.0, rel=0.05)


def test_litserve_window_policy_collects_from_when_the_worker_is_free():
    # LitServe (litserve/loops/base.py collate_requests): a free worker collects for
    # batch_timeout from the moment it is free, in back-to-back windows while idle; a lone
    # request lands anywhere in a window, so it waits half the delay on average, where
    # Triton's policy (a partial batch goes once its oldest waited the delay) waits all of it
    w = simulate(GPU, 2.0, 1, 8, 20.0, 4000, policy="window")
    o = simulate(GPU, 2.0, 1, 8, 20.0, 4000, policy="oldest")
    assert w.mean_ms == pytest.approx(2.0 + 10.0, rel=0.06) and w.mean_batch < 1.05
    assert o.p50_ms == pytest.approx(22.0, rel=0.02)
    assert w.p95_ms <= 2.0 + 20.0 + 0.5


def test_per_request_server_work_grows_with_the_batch():
    # a server's own work per request (HTTP, JSON, tokenisation: ~3 ms on the benchmark's
    # LitServe) is not amortised by batching: a batch of 8 of a 7.5 ms/request model
    # holds the worker 53 + 1.4 + 8 x 3.1 ms, and the worker's capacity falls from 147/s to
    # 101/s, which the per-batch overhead alone cannot express
    model = ServiceCurve((1, 8), (7.5, 53.0), sigma=0.01, overhead_ms=1.4)
    served = ServiceCurve((1, 8), (7.5, 53.0), sigma=0.01, overhead_ms=1.4,
                          per_request_ms=3.1)
    assert served.service(1) == pytest.approx(7.5 + 1.4 + 3.1)
    assert served.service(8) == pytest.approx(53.0 + 1.4 + 24.8)
    assert model.capacity(1, 8) == pytest.approx(147.1, abs=0.1)
    assert served.capacity(1, 8) == pytest.approx(101.0, abs=0.1)
    # at 90 requests/s the model alone is at 61% of capacity, the served worker at 89%
    a = simulate(model, 90.0, 1, 8, 2.0, 12000, policy="window")
    b = simulate(served, 90.0, 1, 8, 2.0, 12000, policy="window")
    assert b.utilisation == pytest.approx(90.0 / 101.0, abs=0.01)
    assert b.p95_ms > 2 * a.p95_ms and b.mean_batch > a.mean_batch


def test_an_slo_that_only_more_instances_can_meet():
    # 150 requests/s; one worker serves 100/s at any batch (linear curve): capacity alone
    # needs 2 instances, but at 75% load the p95 queue wait breaks a 25 ms SLO
    c = choose(CPU, 150.0, workers=1, slo_ms=25.0, percentile=95)
    assert c.feasible and c.instances > 2, c
    assert c.p95_ms <= 25.0 and c.utilisation == pytest.approx(150.0 / c.instances / 100.0)
    at2 = simulate(CPU, 75.0, 1, c.max_batch, 0.0, 12000)
    assert at2.p95_ms > 25.0            # the capacity count alone would have missed it
    # p99 is stricter than p95: at least as many instances
    assert choose(CPU, 150.0, 1, 25.0, percentile=99).instances >= c.instances


def test_an_slo_no_batch_size_can_meet_is_unsupported_with_the_reason():
    c = choose(CPU, 10.0, workers=4, slo_ms=8.0)
    assert not c.feasible and c.instances is None
    assert "no batch size or instance count" in c.reason and "10.2 ms" in c.reason


def test_a_gpu_batches_and_a_cpu_does_not_need_to():
    g = choose(GPU, 2000.0, workers=1, slo_ms=30.0)
    assert g.feasible and g.instances == 1 and g.max_batch >= 8 and g.mean_batch > 2
    # at 2,000/s batch 1 (500/s) would need 5 instances: batching is what makes it one
    assert GPU.capacity(1, 1) < 2000.0 < GPU.capacity(1, g.max_batch)
    # on the CPU's linear curve batching buys nothing: allowing batches up to 8 needs as
    # many instances as batch 1 alone
    c = choose(CPU, 150.0, workers=1, slo_ms=60.0)
    c1 = choose(CPU, 150.0, workers=1, slo_ms=60.0, max_batch=1)
    assert c.feasible and c1.feasible and c.instances == c1.instances
    assert c.instances >= math.ceil(150.0 / CPU.capacity(1, 8))


def _model(name, fmt="fp32", kind="pytorch", framework="pytorch"):
    cfg = {"model_type": "bert", "hidden_size": 64, "num_hidden_layers": 2,
           "num_attention_heads": 4, "intermediate_size": 256, "vocab_size": 1000}
    return CandidateModel(name, None, kind,
                          info=ArtifactInfo(None, kind, framework, fmt, "fp32", config=cfg))


def test_workers_of_a_priced_cpu_target_are_physical_cores_over_threads():
    cat = load_catalog()
    rows = [{"candidate": "m", "kind": "pytorch"}]
    m = {"m": _model("m")}
    one = cost_table(rows, cat, Setting(128), targets=["c7i.large", "c7i.xlarge",
                                                       "c7i.4xlarge"], models=m, threads=1)
    assert dict(zip(one["target"], one["workers"], strict=True)) == {
        "c7i.large": 1, "c7i.xlarge": 2, "c7i.4xlarge": 8}
    two = cost_table(rows, cat, Setting(128), targets=["c7i.4xlarge"], models=m, threads=2)
    assert two.iloc[0]["workers"] == 4
    # throughput without traffic is workers x batch / service: it scales with the workers
    x = one.set_index("target")
    assert x.loc["c7i.xlarge", "throughput_per_s"] > 1.5 * x.loc["c7i.large", "throughput_per_s"]


def test_local_cpu_is_never_priced_by_default(tmp_path):
    cat = load_catalog()
    row = {"candidate": "m", "kind": "pytorch", "latency_p50_ms": 10.0, "latency_p95_ms": 11.0,
           "device": "cpu", "backend": "pytorch", "batch_size": 1, "peak_rss_mb": 100.0}
    r = cost_table([row], cat, Setting(128), traffic=Traffic(864_000, 2.0),
                   slo=SLO(100.0), targets=["local-cpu"], models={"m": _model("m")}).iloc[0]
    assert r["status"] == "no price" and r["cost_per_1k"] is None
    assert "--prices" in r["reason"] and r["provenance"] == "measured"
    assert r["instances"] >= 1            # the configuration is still worked out
    # measured at batch 1 only: nothing larger is assumed, and the row says how to measure
    assert r["max_batch"] == 1 and "--remeasure" in r["missing"]
    f = tmp_path / "p.yaml"
    f.write_text("prices: {local-cpu: {price_per_hour: 0.1, source: mine}}\n")
    p = cost_table([row], load_catalog(prices=f), Setting(128), traffic=Traffic(864_000, 2.0),
                   slo=SLO(100.0), targets=["local-cpu"], models={"m": _model("m")}).iloc[0]
    assert p["status"] == "ok" and p["monthly_cost"] == pytest.approx(0.1 * 730 * p["instances"])
    # cost per 1k requests: the month's bill over the month's requests (idle headroom paid)
    assert p["cost_per_1k"] == pytest.approx(p["monthly_cost"] / (864_000 * 730 / 24) * 1000)


def test_measured_batch_curves_feed_the_local_rows():
    tidy = [{"candidate": "m", "category": "latency", "metric": f"latency_{s}",
             "value": v * b, "batch_size": b, "seq_len": 128, "phase": "forward"}
            for b in (1, 2, 4, 8) for s, v in (("p50", 10.0), ("p95", 11.0))]
    curves = measured_curves(tidy)
    assert curves["m"]["batch_sizes"] == [1, 2, 4, 8]
    assert curves["m"]["p50"] == [10.0, 20.0, 40.0, 80.0]
    row = {"candidate": "m", "kind": "pytorch", "latency_p50_ms": 10.0, "device": "cpu",
           "backend": "pytorch", "batch_size": 1, "peak_rss_mb": 100.0}
    r = cost_table([row], load_catalog(), Setting(128), traffic=Traffic(86_400 * 20),
                   slo=SLO(500.0), targets=["local-cpu"], models={"m": _model("m")},
                   curves=curves).iloc[0]
    assert r["curve_batch_sizes"] == [1, 2, 4, 8] and r["max_batch"] in (1, 2, 4, 8)


def test_dynamic_activation_quantization_is_flagged_past_the_quality_batch():
    cat = load_catalog()
    dyn = _model("q", fmt="int8-dynamic-ort", kind="onnx-quantized", framework="onnxruntime")
    rows = [{"candidate": "q", "kind": "onnx-quantized"}]
    big = cost_table(rows, cat, Setting(128), targets=["c7i.xlarge"], models={"q": dyn},
                     quality_batch=1).iloc[0]
    assert big["status"] == "ok" and big["batch_size"] > 1
    assert "composition" in big["composition"] and "batch 1" in big["composition"]
    same = cost_table(rows, cat, Setting(128), targets=["c7i.xlarge"], models={"q": dyn},
                      quality_batch=64).iloc[0]
    assert same["composition"] is None
    fp32 = cost_table([{"candidate": "m", "kind": "pytorch"}], cat, Setting(128),
                      targets=["c7i.xlarge"], models={"m": _model("m")},
                      quality_batch=1).iloc[0]
    assert fp32["composition"] is None


def test_causal_lm_slos_and_cost_per_million_tokens():
    lm = ServiceCurve((1, 2, 4), (40.0, 60.0, 100.0), (10.0, 11.0, 13.0), gen_tokens=16,
                      sigma=0.01)
    assert lm.service(1) == pytest.approx(40.0 + 16 * 10.0)
    c = choose(lm, 5.0, 1, slo_ms=2000.0, ttft_slo_ms=500.0, tpot_slo_ms=12.0)
    assert c.feasible and c.ttft_p95_ms <= 500.0 and c.tpot_ms <= 12.0 and c.max_batch <= 2
    no = choose(lm, 5.0, 1, slo_ms=2000.0, tpot_slo_ms=5.0)
    assert not no.feasible and "per token" in no.reason
    # the full request, not the prefill, is what the latency SLO checks
    assert not choose(lm, 1.0, 1, slo_ms=100.0).feasible
    llama = {"model_type": "llama", "hidden_size": 64, "num_hidden_layers": 2,
             "num_attention_heads": 4, "num_key_value_heads": 4, "intermediate_size": 128,
             "vocab_size": 1000}
    m = CandidateModel("lm", None, "pytorch",
                       info=ArtifactInfo(None, "pytorch", "pytorch", "fp32", "fp32",
                                         config=llama))
    r = cost_table([{"candidate": "lm", "kind": "pytorch"}], load_catalog(),
                   Setting(64, gen_tokens=16), traffic=Traffic(100_000), slo=SLO(5000.0),
                   targets=["c7i.xlarge"], models={"lm": m}).iloc[0]
    assert r["status"] == "ok"
    assert r["cost_per_1m_tokens"] == pytest.approx(r["cost_per_1k"] / 16 * 1000)


def test_the_cost_preset_stops_once_throughput_stops_rising():
    from compress.measure.worker import _rising
    from compress.suite import LatencySettings

    s = LatencySettings.model_validate({"batch_sizes": "cost"})
    assert s.batch_sizes == [1, 2, 4, 8, 16, 32] and s.stop_when_flat == 0.05

    def rec(b, tput):
        return {"phase": "forward", "seq_len": 128, "batch_size": b, "throughput": tput}

    assert _rising([rec(1, 100.0)], 0.0, 0.05)
    assert _rising([rec(1, 100.0), rec(2, 150.0)], 100.0, 0.05)
    assert not _rising([rec(1, 100.0), rec(2, 103.0)], 100.0, 0.05)   # flat: stop
    # the measurement cache keys of suites without the preset do not change
    assert "stop_when_flat" not in LatencySettings().model_dump(exclude_none=True)
