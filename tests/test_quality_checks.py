"""The one quality-checks module: pass / fail / inconclusive at a confidence level, errors
for missing figures and undefined ratios, baseline sanity, threshold validation."""

from __future__ import annotations

import pytest

from compress.confidence import Intervals
from compress.errors import InputError
from compress.quality_checks import (
    check_thresholds,
    parse_confidence,
    quality_checks,
    sanity_checks,
)


def units_for(n: int, base_wrong: int, cand_extra_wrong: int, classes=("a", "b")) -> tuple:
    """Gold labels, the baseline wrong on the first `base_wrong` examples, the candidate
    also wrong on the next `cand_extra_wrong`."""
    gold = [classes[i % len(classes)] for i in range(n)]

    def flip(lab):
        return classes[(classes.index(lab) + 1) % len(classes)]

    base = [flip(g) if i < base_wrong else g for i, g in enumerate(gold)]
    cand = [flip(g) if i < base_wrong + cand_extra_wrong else g for i, g in enumerate(gold)]
    units = {"task": "text-classification", "metrics": ["accuracy"],
             "primary_metric": "accuracy", "shared": {"gold": gold},
             "candidates": {"teacher": {"pred": base, "n_classes": len(classes)},
                            "int8": {"pred": cand, "n_classes": len(classes)}}}
    rows = [{"candidate": "teacher", "status": "ok", "baseline": "teacher",
             "accuracy": 1 - base_wrong / n},
            {"candidate": "int8", "status": "ok", "baseline": "teacher",
             "accuracy": 1 - (base_wrong + cand_extra_wrong) / n, "top1_agreement": 0.99}]
    return units, rows


def check(units, rows, thr, level=0.95, name="int8", key="quality.max_drop"):
    ivs = Intervals(units, {r["candidate"]: r["baseline"] for r in rows}, level) \
        if level is not None else None
    (c,) = [c for c in quality_checks(rows, thr, "accuracy", level, ivs, [name])
            if c.check == key]
    return c


def test_two_examples_in_fifty_against_004_is_inconclusive():
    units, rows = units_for(50, 0, 2)
    c = check(units, rows, {"max_drop": 0.04})
    assert c.status == "inconclusive"
    assert c.value == pytest.approx(0.04)
    assert c.message.startswith("eval set too small to decide: 50 examples, about ")
    assert c.needed is not None and c.needed > 50
    assert f"about {c.needed} needed" in c.message and "1/sqrt(N)" in c.message
    # the point comparison alone passed it, at exactly the threshold
    assert check(units, rows, {"max_drop": 0.04}, level=None).status == "pass"


def test_a_large_eval_set_decides_both_ways():
    units, rows = units_for(4000, 100, 40)       # drop 0.01
    assert check(units, rows, {"max_drop": 0.02}).status == "pass"
    assert check(units, rows, {"max_drop": 0.005}).status == "fail"
    assert check(units, rows, {"max_relative_drop": 0.03},
                 key="quality.max_relative_drop").status == "pass"
    assert check(units, rows, {"min_recovery": 0.995},
                 key="quality.min_recovery").status == "fail"
    floor = check(units, rows, {"min_value": 0.9}, key="quality.min_value")
    assert floor.status == "pass" and floor.low > 0.9


def test_estimate_matches_the_width_scaling():
    units, rows = units_for(200, 0, 3)           # drop 0.015, threshold 0.02
    c = check(units, rows, {"max_drop": 0.02})
    assert c.status == "inconclusive"
    half = (c.high - c.low) / 2
    assert c.needed == pytest.approx(200 * (half / 0.005) ** 2, rel=0.01, abs=1)


def test_missing_value_is_an_error_never_a_pass():
    units, rows = units_for(50, 0, 0)
    rows[1]["accuracy"] = None
    for level in (0.95, None):
        c = check(units, rows, {"max_drop": 1.0}, level=level)
        assert c.status == "error" and "no accuracy" in c.message
    # a run without per-example results cannot be judged at a confidence level
    units["candidates"].pop("int8")
    units_rows = units_for(50, 0, 0)[1]
    c = check(units, units_rows, {"max_drop": 1.0})
    assert c.status == "error" and "--confidence none" in c.message


def test_ratio_against_a_baseline_at_zero_is_an_error():
    units, rows = units_for(50, 0, 0)
    rows[0]["accuracy"] = 0.0
    for key in ("max_relative_drop", "min_recovery"):
        c = check(units, rows, {key: 0.5}, level=None, key=f"quality.{key}")
        assert c.status == "error" and "needs a baseline above 0" in c.message


def test_chance_level_baseline_fails_sanity():
    # 3 classes, the baseline right on 12 of 30: Wilson [0.25, 0.58] includes 1/3
    units, rows = units_for(30, 18, 0, classes=("a", "b", "c"))
    ivs = Intervals(units, {"teacher": "teacher", "int8": "teacher"}, 0.95)
    (c,) = sanity_checks(rows, "accuracy", ["int8"], 0.95, ivs)
    assert c.status == "fail" and c.candidate == "teacher"
    assert "not clearly above chance" in c.message and "0.3333" in c.message
    good_units, good_rows = units_for(30, 2, 0, classes=("a", "b", "c"))
    ivs = Intervals(good_units, {"teacher": "teacher", "int8": "teacher"}, 0.95)
    assert sanity_checks(good_rows, "accuracy", ["int8"], 0.95, ivs)[0].status == "pass"


@pytest.mark.parametrize("thr,match", [
    ({"max_drop": float("nan")}, "finite"), ({"max_drop": float("inf")}, "finite"),
    ({"max_drop": -0.1}, r"\[0, inf\]"), ({"min_fidelity": 1.5}, r"\[0, 1\]"),
    ({"max_latency_ms": 0}, r"\(0, inf\]"), ({"max_drop": "x"}, "a number")])
def test_bad_thresholds_are_refused(thr, match):
    with pytest.raises(InputError, match=match):
        check_thresholds(thr)


def test_confidence_parsing():
    assert parse_confidence("none") is None and parse_confidence(None) is None
    assert parse_confidence("0.9") == 0.9
    for bad in ("1", "0", "nan", "high"):
        with pytest.raises(InputError, match="between 0 and 1"):
            parse_confidence(bad)
