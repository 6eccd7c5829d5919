import numpy as np
import pytest

from aikd.evaluate.edc import best_area, edc_fixed, edc_reestimated, pair_qualities, pauc, threshold_at_fmr

# 8 mated pairs worked by hand; threshold 0.5 (accept: score > 0.5) -> errors at pairs 0, 2, 4
QUALITY = np.array([0.1, 0.1, 0.3, 0.5, 0.5, 0.7, 0.8, 0.9])
SCORES = np.array([0.2, 0.9, 0.4, 0.8, 0.3, 0.9, 0.6, 0.95])
NON_MATED = np.array([0.1, 0.2, 0.3, 0.5])  # fmr 0: the threshold is the largest non-mated score


def test_hand_worked_edc_with_ties():
    edc = edc_fixed(SCORES, QUALITY, NON_MATED, fmr=0.0)
    assert edc.threshold == 0.5
    # ties (0.1, 0.1) and (0.5, 0.5) leave together: no point at 1/8 or 4/8
    np.testing.assert_allclose(edc.discard, [0, 2 / 8, 3 / 8, 5 / 8, 6 / 8, 7 / 8])
    np.testing.assert_allclose(edc.fnmr, [3 / 8, 2 / 6, 1 / 5, 0, 0, 0])


def test_hand_worked_pauc_and_best_curve():
    edc = edc_fixed(SCORES, QUALITY, NON_MATED, fmr=0.0)
    # steps: 3/8 on [0, 0.25), 1/3 on [0.25, 0.3)
    assert pauc(edc, 0.3) == pytest.approx(3 / 8 * 0.25 + 1 / 3 * 0.05)
    # 0.2 stops inside the first step
    assert pauc(edc, 0.2) == pytest.approx(3 / 8 * 0.2)
    # best: integral of (f0 - x) / (1 - x) from 0 to 0.3 with f0 = 3/8
    best = 0.3 + (1 - 3 / 8) * np.log(0.7)
    assert best_area(3 / 8, 0.3) == pytest.approx(best)
    assert pauc(edc, 0.3, subtract_best=True) == pytest.approx(3 / 8 * 0.25 + 1 / 3 * 0.05 - best)


def test_pauc_limits_behave():
    edc = edc_fixed(SCORES, QUALITY, NON_MATED, fmr=0.0)
    areas = [pauc(edc, lim) for lim in (0.1, 0.2, 0.3, 0.5, 1.0)]
    assert all(a < b for a, b in zip(areas, areas[1:], strict=False) if b > 0) and areas == sorted(areas)
    assert pauc(edc, 1.0) == pytest.approx(3 / 8 * 0.25 + 1 / 3 * 0.125 + 1 / 5 * 0.25)
    for bad in (0.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="limit"):
            pauc(edc, bad)
    assert best_area(0.0, 0.3) == 0.0 and best_area(0.5, 0.2) < 0.2


def test_threshold_at_fmr():
    scores = np.arange(1000) / 1000
    t = threshold_at_fmr(scores, 1e-2)
    assert np.mean(scores > t) == pytest.approx(1e-2)


def test_random_quality_gives_a_flat_edc_in_expectation():
    rng = np.random.default_rng(0)
    scores = rng.normal(1.0, 1.0, 20000)
    non_mated = rng.normal(-1.0, 1.0, 20000)
    curves = []
    grid = np.linspace(0, 0.5, 6)
    for _ in range(20):
        edc = edc_fixed(scores, rng.random(20000), non_mated, fmr=1e-2)
        curves.append(edc.fnmr[np.searchsorted(edc.discard, grid, side="right") - 1])
    mean = np.mean(curves, axis=0)
    np.testing.assert_allclose(mean, mean[0], rtol=0.05)


def test_an_oracle_quality_reaches_zero_at_the_starting_fnmr():
    rng = np.random.default_rng(1)
    scores = rng.normal(1.0, 1.0, 5000)
    non_mated = rng.normal(-1.0, 1.0, 5000)
    t = threshold_at_fmr(non_mated, 1e-2)
    quality = np.where(scores <= t, 0.0, 1.0) + rng.random(5000) * 0.1  # failures lowest
    edc = edc_fixed(scores, quality, non_mated, fmr=1e-2)
    f0 = edc.start_fnmr
    at = np.searchsorted(edc.discard, f0 - 1e-12)
    assert edc.discard[at] == pytest.approx(f0) and edc.fnmr[at] == 0.0
    assert np.all(edc.fnmr[:at] > 0)
    assert pauc(edc, 0.3, subtract_best=True) == pytest.approx(0.0, abs=1e-3)


def test_fixed_and_reestimated_modes_differ_where_they_should():
    rng = np.random.default_rng(2)
    mated = rng.normal(1.0, 1.0, 4000)
    mated_q = rng.random(4000)  # mated quality says nothing
    non_mated = rng.normal(-1.0, 1.0, 4000)
    non_mated_q = -non_mated + rng.normal(0, 0.1, 4000)  # the high-scoring impostors have low quality
    fixed = edc_fixed(mated, mated_q, non_mated, fmr=1e-2)
    ree = edc_reestimated(mated, mated_q, non_mated, non_mated_q, fmr=1e-2, steps=20)
    assert ree.fnmr[0] == pytest.approx(fixed.fnmr[0])  # same start: same threshold on all pairs
    half = np.searchsorted(ree.discard, 0.3)
    # discarding high-scoring impostors lowers the re-estimated threshold: FNMR falls; the fixed one stays flat
    assert ree.fnmr[half] < 0.5 * ree.fnmr[0]
    assert fixed.fnmr[np.searchsorted(fixed.discard, 0.3)] == pytest.approx(fixed.fnmr[0], rel=0.25)
    # when only mated quality matters and impostor quality is uninformative, both agree closely
    ree2 = edc_reestimated(mated, mated_q, non_mated, rng.random(4000), fmr=1e-2, steps=20)
    assert abs(ree2.fnmr[half] - fixed.fnmr[np.searchsorted(fixed.discard, ree2.discard[half])]) < 0.02


def test_pair_quality_min_or_mean():
    np.testing.assert_allclose(pair_qualities(np.array([1.0, 4.0]), np.array([3.0, 2.0])), [1.0, 2.0])
    np.testing.assert_allclose(pair_qualities(np.array([1.0, 4.0]), np.array([3.0, 2.0]), "mean"), [2.0, 3.0])
    with pytest.raises(ValueError):
        pair_qualities(np.ones(1), np.ones(1), "max")
