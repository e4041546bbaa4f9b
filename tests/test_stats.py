"""The statistics against cases worked out by hand (not against the same scipy call)."""

import math

import numpy as np
import pytest

from compress import stats


def test_wilson_8_of_10_worked_on_paper():
    # z = 1.959964, z^2 = 3.841459; centre = (8 + z^2/2) / (10 + z^2) = 9.920729 / 13.841459
    # = 0.716740; half = z * sqrt(10*0.8*0.2 + z^2/4) / (10 + z^2)
    # = 1.959964 * sqrt(2.560365) / 13.841459 = 0.226578  ->  [0.490162, 0.943318]
    ci = stats.wilson(8, 10, 0.95)
    assert ci.low == pytest.approx(0.490162, abs=2e-6)
    assert ci.high == pytest.approx(0.943318, abs=2e-6)


def test_wilson_all_correct_is_not_a_point():
    # k = n = 18: low = n / (n + z^2) = 18 / 21.841459 = 0.824121, high = 1
    ci = stats.wilson(18, 18, 0.95)
    assert ci.low == pytest.approx(0.824121, abs=2e-6)
    assert ci.high == pytest.approx(1.0)


def test_mcnemar_two_discordant_pairs_one_way():
    # b = 2, c = 0: two-sided binomial p = 2 * 0.5^2 = 0.5
    cand = [False, False] + [True] * 48
    base = [True] * 50
    p, b, c = stats.mcnemar_exact(cand, base)
    assert (b, c) == (2, 0)
    assert p == pytest.approx(0.5)


def test_mcnemar_six_to_one():
    # b = 6, c = 1, n = 7: P(X <= 1) = (1 + 7) / 128 = 0.0625, two-sided 0.125
    base = [True] * 6 + [False] + [True] * 3
    cand = [False] * 6 + [True] + [True] * 3
    p, b, c = stats.mcnemar_exact(cand, base)
    assert (b, c) == (6, 1)
    assert p == pytest.approx(0.125)


def test_mcnemar_no_discordance_is_p_1():
    assert stats.mcnemar_exact([True, False], [True, False])[0] == 1.0


def test_bootstrap_of_a_constant_is_that_constant():
    ci = stats.bootstrap(lambda idx: 3.0, 20, 0.95)
    assert (ci.low, ci.high) == (3.0, 3.0)


def test_bootstrap_of_two_in_fifty_covers_zero_and_the_threshold():
    # mean of 2 ones among 50: the count in a resample is Binomial(50, 0.04), whose 2.5% and
    # 97.5% quantiles are 0 and 5, so the interval is about [0, 0.10]
    x = np.array([1.0, 1.0] + [0.0] * 48)
    ci = stats.bootstrap(lambda idx: float(x[idx].mean()), 50, 0.95)
    assert ci.low == 0.0
    assert 0.08 <= ci.high <= 0.12


def test_bootstrap_is_seeded():
    x = np.random.default_rng(1).normal(size=40)
    a = stats.bootstrap(lambda idx: float(x[idx].mean()), 40)
    b = stats.bootstrap(lambda idx: float(x[idx].mean()), 40)
    assert a == b
    # the mean of 40 standard normals: about +-1.96/sqrt(40) = 0.31 around the sample mean
    assert a.half_width == pytest.approx(1.96 * x.std() / math.sqrt(40), rel=0.15)


def test_examples_needed_scales_with_the_square_of_the_width():
    # half-width 0.06 at 50 examples, 0.02 from the threshold: 50 * (0.06 / 0.02)^2 = 450
    assert stats.examples_needed(50, 0.06, 0.02) == 450
    assert stats.examples_needed(50, 0.06, 0.0) is None


@pytest.mark.parametrize("level", [0, 1, 1.5, float("nan"), float("inf"), -0.1])
def test_confidence_level_must_be_inside_0_1(level):
    with pytest.raises(ValueError):
        stats.check_confidence(level)
