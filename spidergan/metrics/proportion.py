"""How far a share counted on few items can be trusted: k of n photos, one photo moving it by
1/n. Used where a rate comes from a small held-out set (detect's spider-free photos, evaluate's
held-out reals calibrating the copy threshold)."""

from __future__ import annotations


def upper_bound(k: int, n: int, confidence: float = 0.95) -> float:
    """One-sided Clopper-Pearson upper bound of a binomial share seen as k of n: the largest
    true share under which k or fewer of n still has probability >= 1 - confidence. 0 of 15
    gives 0.181 (= 1 - 0.05^(1/15)). 1.0 when k == n or nothing was counted (n == 0)."""
    if n <= 0 or k >= n:
        return 1.0
    from scipy.stats import beta

    return float(beta.ppf(confidence, k + 1, n - k))
