"""Metric implementations against scikit-learn / scipy on fixed inputs."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import log_softmax as sp_log_softmax
from scipy.stats import entropy, pearsonr, spearmanr
from sklearn.metrics import accuracy_score, f1_score
from sklearn.metrics.pairwise import cosine_similarity

from compress.measure import metrics as M

RNG = np.random.default_rng(0)
GOLD = ["a", "b", "c", "a", "b", "c", "a", "a", "b", "c", "c", "b"]
PRED = ["a", "b", "a", "a", "c", "c", "b", "a", "b", "c", "a", "b"]


def test_accuracy_and_f1_match_sklearn():
    labels = ["a", "b", "c", "d"]  # 'd' never occurs: F1 0 as in sklearn (zero_division=0)
    assert M.accuracy(PRED, GOLD) == pytest.approx(accuracy_score(GOLD, PRED))
    ours = M.per_class_f1(PRED, GOLD, labels)
    theirs = f1_score(GOLD, PRED, labels=labels, average=None, zero_division=0)
    assert list(ours.values()) == pytest.approx(list(theirs))
    assert M.macro_f1(PRED, GOLD, labels[:3]) == pytest.approx(
        f1_score(GOLD, PRED, labels=labels[:3], average="macro"))


def test_kl_and_agreement_match_scipy():
    ref, cand = RNG.normal(size=(20, 7)), RNG.normal(size=(20, 7))
    p, q = np.exp(sp_log_softmax(ref, -1)), np.exp(sp_log_softmax(cand, -1))
    expected = np.mean([entropy(p[i], q[i]) for i in range(20)])
    assert M.kl_divergence(ref, cand) == pytest.approx(expected, rel=1e-9)
    assert M.kl_divergence(ref, ref) == pytest.approx(0, abs=1e-12)
    assert M.top1_agreement(ref, cand) == pytest.approx(np.mean(ref.argmax(1) == cand.argmax(1)))


def test_topk_kl_is_a_lower_bound_that_is_exact_with_all_tokens():
    ref, cand = RNG.normal(size=(30, 50)) * 3, RNG.normal(size=(30, 50)) * 3
    full = M.kl_divergence(ref, cand)
    ids, lp = M.topk_reference(ref, 50)
    assert M.kl_topk(ids, lp, cand) == pytest.approx(full, rel=1e-6)
    ids, lp = M.topk_reference(ref, 5)
    assert 0 <= M.kl_topk(ids, lp, cand) <= full + 1e-9
    ids, lp = M.topk_reference(ref, 5)
    assert M.kl_topk(ids, lp, ref) == pytest.approx(0, abs=1e-9)


def test_cosine_correlations_and_pooling():
    a, b = RNG.normal(size=(10, 4)), RNG.normal(size=(10, 4))
    assert M.cosine_rows(a, b) == pytest.approx(np.diag(cosine_similarity(a, b)))
    x, y = RNG.normal(size=40), RNG.normal(size=40)
    assert M.spearman(x, y) == pytest.approx(spearmanr(x, y).statistic)
    assert M.pearson(x, y) == pytest.approx(pearsonr(x, y).statistic)
    hidden = RNG.normal(size=(2, 3, 4))
    mask = np.array([[1, 1, 0], [1, 0, 0]])
    pooled = M.mean_pool(hidden, mask)
    assert pooled[0] == pytest.approx(hidden[0, :2].mean(0))
    assert pooled[1] == pytest.approx(hidden[1, 0])


@pytest.mark.parametrize("n,window,stride", [(10, 4, 2), (11, 4, 4), (5, 8, 4), (100, 16, 5)])
def test_sliding_windows_score_every_token_once(n, window, stride):
    scored = []
    for begin, end, first in M.sliding_windows(n, window, stride):
        assert end - begin <= window and begin < first <= end
        scored.extend(range(first, end))
    assert scored == list(range(1, n))  # every token but the first, once, in order


def test_token_nll_and_perplexity():
    logits = np.log(np.array([[0.5, 0.25, 0.25], [0.1, 0.8, 0.1]]))
    nll = M.token_nll(logits, np.array([0, 1]))
    assert nll == pytest.approx([-np.log(0.5), -np.log(0.8)])
    assert M.perplexity(nll.sum(), 2) == pytest.approx(np.exp(nll.mean()))
