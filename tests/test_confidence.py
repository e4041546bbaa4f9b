"""Intervals of quality figures from per-unit results: the right units are resampled, and
the figures agree with cases worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from compress.confidence import Intervals, fmt


def classification_units(gold, preds: dict) -> dict:
    return {"task": "text-classification", "metrics": ["accuracy", "macro_f1"],
            "primary_metric": "accuracy", "shared": {"gold": gold},
            "candidates": {k: {"pred": v, "n_classes": 2} for k, v in preds.items()}}


def test_two_examples_in_fifty():
    gold = ["a", "b"] * 25
    base = list(gold)
    cand = list(gold)
    cand[0], cand[1] = "b", "a"          # wrong on two examples the baseline got right
    ivs = Intervals(classification_units(gold, {"teacher": base, "int8": cand}),
                    {"teacher": "teacher", "int8": "teacher"}, 0.95)
    f = ivs.figure("int8", "accuracy")
    assert f.value == pytest.approx(0.96) and f.units == "examples" and f.n_units == 50
    # Wilson 48/50 by hand: centre (48 + 1.920729) / 53.841459 = 0.927180,
    # half 1.959964 * sqrt(50*0.96*0.04 + 0.960365) / 53.841459
    #    = 1.959964 * 1.697164 / 53.841459 = 0.061781
    assert (f.low, f.high) == pytest.approx((0.865399, 0.988961), abs=1e-5)
    assert f.delta == pytest.approx(-0.04)
    # paired: the change is minus the share of the two discordant examples in a resample:
    # Binomial(50, 0.04) / 50, whose 2.5% and 97.5% points are 0 and 5 (0.10)
    assert f.delta_high == 0.0 and -0.12 <= f.delta_low <= -0.08
    assert f.mcnemar_p == pytest.approx(0.5) and f.discordant == (2, 0)
    assert ivs.chance("teacher") == 0.5


def test_lee_pairs_resample_documents():
    from compress.confidence import shared_units
    from compress.data import demo_splits

    df = demo_splits("lee-similarity")["test"]
    payload = {"texts": df["text"].tolist(), "text_pairs": df["text_pair"].tolist(),
               "scores": df["score"].tolist()}
    rng = np.random.default_rng(0)
    sims = (np.asarray(payload["scores"]) + rng.normal(0, 0.3, len(df))).tolist()
    units = {"task": "feature-extraction", "metrics": ["spearman"],
             "primary_metric": "spearman", "shared": shared_units("feature-extraction", payload),
             "candidates": {"model": {"sims": sims}}}
    ivs = Intervals(units, {"model": "model"}, 0.95)
    f = ivs.figure("model", "spearman")
    assert len(df) == 1225 and f.units == "documents" and f.n_units == 50
    # resampling the 1,225 pairs as if independent would give a narrower interval
    from compress import stats
    from compress.confidence import rankdata

    s, x = np.asarray(sims), np.asarray(payload["scores"])
    naive = stats.bootstrap(lambda i: float(np.corrcoef(rankdata(s[i]), rankdata(x[i]))[0, 1]),
                            len(s), 0.95)
    assert f.low < f.value < f.high
    assert (f.high - f.low) > 1.3 * (naive.high - naive.low)


def test_perplexity_resamples_windows():
    units = {"task": "causal-lm", "metrics": ["perplexity"], "primary_metric": "perplexity",
             "shared": {}, "candidates": {"m": {"window_nll": [20.0, 30.0, 25.0, 22.0],
                                                "window_tokens": [10, 10, 10, 10],
                                                "window_correct": [3, 4, 5, 6]}}}
    f = Intervals(units, {"m": "m"}, 0.95).figure("m", "perplexity")
    assert f.units == "windows" and f.n_units == 4
    assert f.value == pytest.approx(np.exp(97 / 40))
    assert np.exp(2.0) - 1e-9 <= f.low <= f.value <= f.high <= np.exp(3.0) + 1e-9


def test_display_format():
    assert fmt(0.973, 0.958, 0.988) == "0.973 ±0.015"
    assert fmt(-0.04, -0.10, 0.0) == "-0.040 +0.040/-0.060"
    assert fmt(None, None, None) == "-"
