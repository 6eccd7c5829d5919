"""Rank statistics shared by validation, evaluation and invariance reports."""

from __future__ import annotations

import numpy as np


def spearman(a, b) -> float:
    """Spearman rank correlation (ties broken by position); NaN for fewer than 3 values."""
    a, b = np.asarray(a), np.asarray(b)
    if len(a) < 3:
        return float("nan")
    ra = np.argsort(np.argsort(a, kind="stable"), kind="stable").astype(np.float64)
    rb = np.argsort(np.argsort(b, kind="stable"), kind="stable").astype(np.float64)
    return float(np.corrcoef(ra, rb)[0, 1])
