"""Spearman with ties: Pearson correlation of average ranks, as pandas and scipy define it.

The reference is the hand-written numpy the module used before it called pandas: the results must not move.
"""

import warnings

import numpy as np
import pytest

from aikd.evaluate.ranks import average_ranks, spearman


def reference_ranks(x) -> np.ndarray:
    """Average ranks by hand: each run of equal sorted values gets the mean of its 1-based positions."""
    x = np.asarray(x)
    order = np.argsort(x, kind="stable")
    s = x[order]
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
    ends = np.r_[starts[1:], len(x)]
    ranks = np.empty(len(x), np.float64)
    ranks[order] = np.repeat((starts + ends + 1) / 2.0, ends - starts)
    return ranks


def reference_spearman(a, b) -> float:
    """Pearson correlation of the reference's average ranks."""
    ra, rb = reference_ranks(a), reference_ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    return float(np.dot(ra, rb) / np.sqrt(np.dot(ra, ra) * np.dot(rb, rb)))


def test_tied_values_share_the_mean_of_their_positions():
    np.testing.assert_array_equal(average_ranks([1, 2, 2, 3]), [1, 2.5, 2.5, 4])
    np.testing.assert_array_equal(average_ranks([3, 1, 3, 3, 0]), [4, 2, 4, 4, 1])
    np.testing.assert_array_equal(average_ranks([5.0, 5.0, 5.0]), [2, 2, 2])
    np.testing.assert_array_equal(average_ranks([2.0, -1.0, 7.0]), [2, 1, 3])
    assert average_ranks([]).shape == (0,)


def test_average_ranks_match_the_hand_written_ranks_with_many_ties():
    rng = np.random.default_rng(0)
    for x in (rng.integers(0, 5, 1000), rng.normal(size=300).round(1), rng.random(50)):
        ranks = average_ranks(x)
        assert ranks.dtype == np.float64
        np.testing.assert_array_equal(ranks, reference_ranks(x))


def test_average_ranks_reject_a_matrix():
    with pytest.raises(ValueError, match="1-D"):
        average_ranks(np.zeros((4, 1)))


def test_spearman_matches_the_hand_written_one_with_many_ties():
    rng = np.random.default_rng(1)
    for _ in range(20):
        a = rng.integers(0, 3, 200).astype(float)
        b = a + rng.integers(0, 4, 200)
        assert spearman(a, b) == pytest.approx(reference_spearman(a, b), abs=1e-12)


def test_spearman_matches_the_hand_written_one_without_ties():
    rng = np.random.default_rng(2)
    a = rng.normal(size=500)
    b = a + rng.normal(size=500)
    assert spearman(a, b) == pytest.approx(reference_spearman(a, b), abs=1e-12)
    assert spearman(a, 2 * a + 1) == pytest.approx(1.0) and spearman(a, -a) == pytest.approx(-1.0)


def test_order_of_rows_within_a_tie_does_not_change_the_result():
    # severity 0 for most faces, 1 for a few: the old ranking (ties by position) gave a perfect 1.0 here,
    # because the zeros happened to come first in the same order as b
    severity = np.array([0, 0, 0, 0, 0, 0, 0, 1, 1, 1])
    b = np.arange(10.0)
    rho = spearman(severity, b)
    assert rho == pytest.approx(reference_spearman(severity, b), abs=1e-12)
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


def test_spearman_needs_equal_lengths_and_vectors():
    with pytest.raises(ValueError, match="equal lengths"):
        spearman([1, 2, 3], [1, 2, 3, 4])
    with pytest.raises(ValueError, match="1-D"):
        spearman(np.zeros((4, 1)), np.zeros(4))


def test_a_fixed_example_keeps_its_value():
    # ranks a = (1, 2.5, 2.5, 4), b = (3, 1, 2, 4): covariance 1.5 over sqrt(4.5 * 5)
    assert spearman([1, 2, 2, 3], [3, 1, 2, 5]) == pytest.approx(1.5 / np.sqrt(4.5 * 5), abs=1e-15)
    assert spearman(np.arange(3), [0, 2, 1]) == pytest.approx(0.5, abs=1e-15)
    assert isinstance(spearman([1, 2, 3], [3, 2, 1]), float)


def test_pairs_with_a_missing_value_are_left_out_as_pandas_does():
    assert spearman([np.nan, 1, 2, 3], [9, 1, 2, 3]) == pytest.approx(1.0)
    assert np.isnan(spearman([np.nan, np.nan, 1, 2], [1, 2, 3, 4]))  # two complete pairs: too few
