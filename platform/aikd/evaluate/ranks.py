"""Rank statistics shared by validation, evaluation and invariance reports."""

from __future__ import annotations

import numpy as np


def average_ranks(x) -> np.ndarray:
    """1-based ranks of a 1-D array, tied values sharing the mean of their positions (pandas' ``rank()``).

    Ties are common in quality data (a synthetic ``severity`` is 0 for most rows); ranking
    them by position would let the input order, not the values, decide the correlation.
    """
    x = np.asarray(x)
    if x.ndim != 1:
        raise ValueError(f"expected a 1-D array, got shape {x.shape}")
    n = len(x)
    order = np.argsort(x, kind="stable")
    s = x[order]
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])  # first sorted position of each run of equal values
    ends = np.r_[starts[1:], n]  # one past the last
    ranks = np.empty(n, np.float64)
    ranks[order] = np.repeat((starts + ends + 1) / 2.0, ends - starts)  # mean of the 1-based positions starts+1..ends
    return ranks


def spearman(a, b) -> float:
    """Spearman rank correlation with average ranks for ties; NaN for fewer than 3 values or a constant input."""
    ra, rb = average_ranks(a), average_ranks(b)
    if len(ra) != len(rb):
        raise ValueError(f"spearman needs equal lengths, got {len(ra)} and {len(rb)}")
    if len(ra) < 3:
        return float("nan")
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denom = np.sqrt(np.dot(ra, ra) * np.dot(rb, rb))
    if denom == 0:  # a constant input has no order to agree with (np.corrcoef would warn and divide by zero)
        return float("nan")
    return float(np.clip(np.dot(ra, rb) / denom, -1.0, 1.0))
