"""Quality and fidelity metrics, computed locally with numpy and scipy.

Hugging Face `evaluate` fetches metric scripts from the hub, which fails offline, so the
standard metrics live here; a user's own local `evaluate` module is still supported
(`quality.evaluate_module` in a suite).
"""

from __future__ import annotations

import numpy as np

# ---------------------------------------------------------------- classification

def accuracy(pred, gold) -> float:
    pred, gold = np.asarray(pred), np.asarray(gold)
    return float(np.mean(pred == gold)) if len(gold) else float("nan")


def per_class_f1(pred, gold, labels) -> dict[str, float]:
    """F1 per class; a class never predicted and never present scores 0 (sklearn's default)."""
    pred, gold = np.asarray(pred), np.asarray(gold)
    out = {}
    for c in labels:
        tp = np.sum((pred == c) & (gold == c))
        fp = np.sum((pred == c) & (gold != c))
        fn = np.sum((pred != c) & (gold == c))
        denom = 2 * tp + fp + fn
        out[str(c)] = float(2 * tp / denom) if denom else 0.0
    return out


def macro_f1(pred, gold, labels) -> float:
    scores = per_class_f1(pred, gold, labels)
    return float(np.mean(list(scores.values()))) if scores else float("nan")


# ---------------------------------------------------------------- distributions

def log_softmax(logits: np.ndarray) -> np.ndarray:
    logits = np.asarray(logits, dtype=np.float64)
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def top1_agreement(logits_a, logits_b) -> float:
    return float(np.mean(np.argmax(logits_a, -1) == np.argmax(logits_b, -1)))


def kl_divergence(ref_logits, logits) -> float:
    """Mean KL(ref || candidate) of the softmax distributions, in nats."""
    lp, lq = log_softmax(ref_logits), log_softmax(logits)
    return float(np.mean(np.sum(np.exp(lp) * (lp - lq), axis=-1)))


def topk_reference(logits: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The reference's top-k token ids and their log-probs, per position (for causal-lm
    vocabularies, where storing full distributions is too big)."""
    lp = log_softmax(logits)
    ids = np.argsort(-lp, axis=-1)[..., :k]
    return ids, np.take_along_axis(lp, ids, axis=-1)


def kl_topk(ref_ids, ref_logp, logits) -> float:
    """KL(ref || candidate) over the reference's top-k tokens plus one bucket for the rest.

    This is the exact KL between the two distributions coarsened to k+1 outcomes, so it is
    never above the full KL and equals it when the tail mass is negligible.
    """
    lq = log_softmax(logits)
    q_top = np.exp(np.take_along_axis(lq, ref_ids, axis=-1))
    p_top = np.exp(ref_logp)
    eps = 1e-12
    p_tail = np.clip(1 - p_top.sum(-1), eps, 1)
    q_tail = np.clip(1 - q_top.sum(-1), eps, 1)
    kl = np.sum(p_top * (ref_logp - np.log(np.clip(q_top, eps, 1))), -1) \
        + p_tail * (np.log(p_tail) - np.log(q_tail))
    return float(np.mean(kl))


# ---------------------------------------------------------------- embeddings

def mean_pool(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Mean of token embeddings over the attention mask (sentence-transformers' pooling)."""
    m = mask[..., None].astype(hidden.dtype)
    return (hidden * m).sum(1) / np.clip(m.sum(1), 1e-9, None)


def cosine_rows(a, b) -> np.ndarray:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    num = (a * b).sum(-1)
    return num / np.clip(np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1), 1e-12, None)


def spearman(x, y) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(x, y).statistic)


def pearson(x, y) -> float:
    from scipy.stats import pearsonr

    return float(pearsonr(x, y).statistic)


# ---------------------------------------------------------------- causal-lm

def perplexity(nll_sum: float, n_tokens: int) -> float:
    return float(np.exp(nll_sum / n_tokens)) if n_tokens else float("nan")


def token_nll(logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Negative log-likelihood of each target token under the logits at its position."""
    lp = log_softmax(logits)
    return -np.take_along_axis(lp, targets[..., None], axis=-1)[..., 0]


def sliding_windows(n_tokens: int, window: int, stride: int) -> list[tuple[int, int, int]]:
    """(begin, end, first scored position) per window, as in Hugging Face's perplexity guide:
    each token is scored once, with up to `window - stride` tokens of left context. Windows
    overlap by at least one token, so the first token of a window always has context."""
    stride = max(1, min(stride, window - 1))
    out, prev_end = [], 0
    for begin in range(0, max(n_tokens - 1, 1), stride):
        end = min(begin + window, n_tokens)
        out.append((begin, end, max(prev_end, begin + 1)))
        prev_end = end
        if end == n_tokens:
            break
    return out
