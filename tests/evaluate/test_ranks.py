"""Spearman with ties: Pearson correlation of average ranks, as pandas and scipy define it."""

import warnings

import numpy as np
import pandas as pd
import pytest

from aikd.evaluate.ranks import average_ranks, spearman


def pandas_spearman(a, b) -> float:
    """The reference: pandas' average ranks, then its Pearson correlation (its method="spearman" needs scipy)."""
    return pd.Series(a).rank().corr(pd.Series(b).rank())


def test_tied_values_share_the_mean_of_their_positions():
    np.testing.assert_array_equal(average_ranks([1, 2, 2, 3]), [1, 2.5, 2.5, 4])
    np.testing.assert_array_equal(average_ranks([3, 1, 3, 3, 0]), [4, 2, 4, 4, 1])
    np.testing.assert_array_equal(average_ranks([5.0, 5.0, 5.0]), [2, 2, 2])
    np.testing.assert_array_equal(average_ranks([2.0, -1.0, 7.0]), [2, 1, 3])
    assert average_ranks([]).shape == (0,)


def test_average_ranks_match_pandas_rank_with_many_ties():
    x = np.random.default_rng(0).integers(0, 5, 1000)
    np.testing.assert_array_equal(average_ranks(x), pd.Series(x).rank().to_numpy())


def test_average_ranks_reject_a_matrix():
    with pytest.raises(ValueError, match="1-D"):
        average_ranks(np.zeros((4, 1)))


def test_spearman_matches_pandas_with_many_ties():
    rng = np.random.default_rng(1)
    for _ in range(20):
        a = rng.integers(0, 3, 200).astype(float)
        b = a + rng.integers(0, 4, 200)
        assert spearman(a, b) == pytest.approx(pandas_spearman(a, b), abs=1e-12)


def test_spearman_matches_pandas_without_ties():
    rng = np.random.default_rng(2)
    a = rng.normal(size=500)
    b = a + rng.normal(size=500)
    assert spearman(a, b) == pytest.approx(pandas_spearman(a, b), abs=1e-12)
    assert spearman(a, 2 * a + 1) == pytest.approx(1.0) and spearman(a, -a) == pytest.approx(-1.0)


def test_order_of_rows_within_a_tie_does_not_change_the_result():
    # severity 0 for most faces, 1 for a few: the old ranking (ties by position) gave a perfect 1.0 here,
    # because the zeros happened to come first in the same order as b
    severity = np.array([0, 0, 0, 0, 0, 0, 0, 1, 1, 1])
    b = np.arange(10.0)
    rho = spearman(severity, b)
    assert rho == pytest.approx(pandas_spearman(severity, b), abs=1e-12)
    assert rho < 0.85
    shuffled = b.copy()
    shuffled[:7] = shuffled[:7][::-1]  # reorder b among the tied zeros only
    assert spearman(severity, shuffled) == pytest.approx(rho, abs=1e-12)


def test_fewer_than_three_values_or_a_constant_input_give_nan_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert np.isnan(spearman([1.0, 2.0], [2.0, 1.0]))
        assert np.isnan(spearman([0, 0, 0, 0], [1, 2, 3, 4]))
        assert np.isnan(spearman([1, 2, 3, 4], [7, 7, 7, 7]))


def test_spearman_needs_equal_lengths():
    with pytest.raises(ValueError, match="equal lengths"):
        spearman([1, 2, 3], [1, 2, 3, 4])
