"""Rank statistics shared by validation, evaluation and invariance reports (pandas' own)."""

from __future__ import annotations

import numpy as np
import pandas as pd

MIN_VALUES = 3  # fewer pairs have no order worth a correlation


def _vector(x) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 1:
        raise ValueError(f"expected a 1-D array, got shape {x.shape}")
    return x


def average_ranks(x) -> np.ndarray:
    """1-based ranks of a 1-D array, tied values sharing the mean of their positions (pandas' ``rank()``).

    Ties are common in quality data (a synthetic ``severity`` is 0 for most rows); ranking
    them by position would let the input order, not the values, decide the correlation.
    """
    return pd.Series(_vector(x)).rank(method="average").to_numpy(np.float64)


def spearman(a, b) -> float:
    """Spearman rank correlation with average ranks for ties; NaN for fewer than 3 values or a constant input.

    ``DataFrame.corr`` ranks and correlates without scipy (``Series.corr`` would need it); pairs with a
    NaN are left out, as pandas does.
    """
    a, b = _vector(a), _vector(b)
    if len(a) != len(b):
        raise ValueError(f"spearman needs equal lengths, got {len(a)} and {len(b)}")
    rho = pd.DataFrame({"a": a, "b": b}).corr(method="spearman", min_periods=MIN_VALUES).iloc[0, 1]
    return float(np.clip(rho, -1.0, 1.0))  # rounding may step past +-1; NaN stays NaN
