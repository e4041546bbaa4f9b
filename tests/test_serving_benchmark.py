"""benchmarks/serving.py without a server or a clock: the fixed transit of a server's hops
enters the predicted latency (not the service time, not the capacity); the per-request
work and the transit come from the pre-test calibration as documented; the capacity the
rates are set from is the prediction's own curve; the inputs and predictions are written
before the first load test and are not changed by it."""

from __future__ import annotations

import copy
import json

import pytest

from benchmarks.serving import (
    plan,
    prediction_curve,
    prediction_inputs,
    render,
    round_overheads,
    run_benchmark,
)
from compress.decide.serving import ServiceCurve, choose, simulate

CURVE = ServiceCurve((1, 2, 4, 8), (7.5, 14.7, 27.0, 53.0), sigma=0.05, per_request_ms=3.0)


def _with_transit(curve: ServiceCurve, transit: float) -> ServiceCurve:
    return ServiceCurve(curve.batch_sizes, curve.first_ms, sigma=curve.sigma,
                        per_request_ms=curve.per_request_ms, transit_ms=transit)


@pytest.mark.parametrize("rate", [20.0, 60.0, 85.0])
def test_transit_adds_to_every_latency_but_not_to_service_or_capacity(rate):
    # LitServe's hops (HTTP front end -> queue -> worker -> back) delay a request without
    # holding the worker: the same batches form, every latency is longer by exactly the
    # transit, the utilisation and capacity do not move
    a = simulate(CURVE, rate, 1, 8, 2.0, 6000, policy="window")
    b = simulate(_with_transit(CURVE, 6.0), rate, 1, 8, 2.0, 6000, policy="window")
    assert b.p50_ms == pytest.approx(a.p50_ms + 6.0)
    assert b.p95_ms == pytest.approx(a.p95_ms + 6.0)
    assert b.mean_batch == a.mean_batch and b.busy == pytest.approx(a.busy)
    assert _with_transit(CURVE, 6.0).capacity(1, 8) == CURVE.capacity(1, 8)
    assert _with_transit(CURVE, 6.0).service(8) == CURVE.service(8)


def test_an_slo_that_only_the_transit_breaks_is_unsupported_with_the_reason():
    # one request's service p95 fits 20 ms; with 10 ms of transit nothing can meet it
    assert choose(CURVE, 10.0, 1, 20.0).feasible
    c = choose(_with_transit(CURVE, 10.0), 10.0, 1, 20.0)
    assert not c.feasible and "service and transit" in c.reason


def _round(**kw) -> dict:
    r = {"model_p50_ms": [8.0, 15.0, 28.0, 55.0], "model_p95_ms": [9.0, 16.0, 30.0, 60.0],
         "model_cpu_ms": [8.0, 15.0, 28.0, 55.0], "idle_cpu_frac": 0.1, "requests": 100,
         "e2e_p50_ms": 20.0, "tree_cpu_s": 1.4, "wall_s": 2.0, "batch1_wall_ms": 12.5,
         "batch1_cpu_ms": 10.0, "burst_requests": 160, "burst_mean_batch": 1.0,
         "burst_model_cpu_s": 1.44, "burst_tree_cpu_s": 1.44 + 0.352}
    return r | kw


def test_round_overheads_as_documented():
    # idle 2.0 - 1.4 = 0.6 s, of which 10% CPU polling: 1.34 s of CPU for 100 requests
    # = 13.4 ms each, 10 of them the model's; the worker got 10 / 12.5 = 80% of the core,
    # so the 3.4 ms of server CPU take 4.25 ms of wall; the model's 10 ms of CPU while
    # serving against 8 back to back is a per-batch 2 / 0.8 = 2.5 ms; what the lone
    # request's 20 ms leaves beyond s(1) = 8 + 2.5 + 4.25 and half the 2 ms window is transit
    o = round_overheads(_round(), 2.0)
    assert o["core_share"] == pytest.approx(0.8)
    assert o["per_request_ms"] == pytest.approx(4.25)
    assert o["per_batch_ms"] == pytest.approx(2.5)
    assert o["transit_ms"] == pytest.approx(20.0 - 8.0 - 2.5 - 4.25 - 1.0)
    # a burst whose batches averaged 4 cost 2.2 ms of server CPU per request against 3.4
    # alone: per batch of k, a + b k with a + b = 3.4 and a / 4 + b = 2.2, so a = 1.6 and
    # b = 1.8 of CPU, 2.0 and 2.25 of wall; the lone request's transit is unchanged
    o = round_overheads(_round(burst_mean_batch=4.0), 2.0)
    assert o["per_request_ms"] == pytest.approx(1.8 / 0.8)
    assert o["per_batch_ms"] == pytest.approx(1.6 / 0.8 + 2.5)
    assert o["transit_ms"] == pytest.approx(20.0 - 8.0 - 4.5 - 2.25 - 1.0)
    # noise never makes either negative
    o = round_overheads(_round(e2e_p50_ms=10.0, tree_cpu_s=0.9, idle_cpu_frac=0.0), 2.0)
    assert o["per_request_ms"] == 0.0 and o["transit_ms"] == 0.0


def test_inputs_are_the_medians_of_the_rounds_with_their_spread():
    rounds = [_round(), _round(model_p50_ms=[8.0, 15.0, 28.0, 90.0], e2e_p50_ms=24.0),
              _round(model_p50_ms=[9.0, 16.0, 28.0, 57.0])]
    inp = prediction_inputs(rounds, [1, 2, 4, 8], 2.0)
    assert inp["model_ms"] == [8.0, 15.0, 28.0, 57.0]            # the outlier 90 is out
    assert inp["spread"]["model_ms"][3] == pytest.approx((90.0 - 55.0) / 57.0)
    # transit 4.25, 8.25 and 3.25 (the third's model is 1 ms slower): median 4.25
    assert inp["transit_ms"] == pytest.approx(4.25)
    assert inp["spread"]["transit_ms"] == pytest.approx(5.0 / 4.25)
    assert len(inp["rounds"]) == 3 and "per_request_ms" in inp["rounds"][1]


def test_capacity_and_rates_come_from_the_prediction_curve():
    inp = prediction_inputs([_round()], [1, 2, 4, 8], 2.0)
    curve = prediction_curve(inp)
    assert curve.per_request_ms == inp["per_request_ms"] and curve.transit_ms > 0
    p = plan(inp, 8, 2.0, [0.3, 0.6, 0.85], 0)
    s8 = 55.0 + inp["per_batch_ms"] + 8 * inp["per_request_ms"]
    assert curve.overhead_ms == inp["per_batch_ms"] == pytest.approx(2.5)
    assert p["capacity"] == pytest.approx(8 * 1000.0 / s8)
    assert p["service_ms"][-1] == pytest.approx(s8)
    rates = [p["rates"][k]["rate"] for k in ("0.3", "0.6", "0.85")]
    assert rates == pytest.approx([0.3 * p["capacity"], 0.6 * p["capacity"],
                                   0.85 * p["capacity"]])
    # the prediction at each rate is the simulation of that curve at that rate
    sim = simulate(curve, rates[1], 1, 8, 2.0, 20000, 0, policy="window")
    assert p["rates"]["0.6"]["predicted_p95"] == sim.p95_ms


def test_inputs_and_predictions_are_written_before_any_load_and_never_refitted():
    events, written = [], []
    inp = prediction_inputs([_round(), _round(e2e_p50_ms=21.0)], [1, 2, 4, 8], 2.0)

    def write(doc):
        events.append("write")
        written.append(copy.deepcopy(doc))

    def drive(rate):
        events.append("drive")
        # a load test that comes out far slower than predicted changes nothing upstream
        return {"requests": 10, "p50": 500.0, "p95": 900.0, "p99": 990.0,
                "p95_halves": [800.0, 950.0], "mean_batch": 6.0, "load_average_after": 1.0}

    doc = run_benchmark(lambda: inp, drive, write, 8, 2.0, [0.3, 0.6, 0.85], 0)
    assert events == ["write", "drive", "write", "drive", "write", "drive", "write"]
    first = written[0]
    assert first["measured"] == {} and set(first["plan"]["rates"]) == {"0.3", "0.6", "0.85"}
    assert doc["inputs"] == first["inputs"] and doc["plan"] == first["plan"]
    assert doc["measured"]["0.6"]["ratio"] == pytest.approx(
        first["plan"]["rates"]["0.6"]["predicted_p95"] / 900.0)
    text = render(first, ["# header"])
    assert "not run yet" in text and "transit_ms" in text and "drift check" not in text
    assert json.loads(text.split("```json\n")[1].split("\n```")[0])["measured"] == {}
