"""pAUC intervals from a bootstrap over identities: exact on the data, honest on known answers."""

import numpy as np
import pytest

from aikd.errors import AikdError
from aikd.evaluate.bootstrap import PairIdentities, Resamples, interval, paucs, thresholds, verdict
from aikd.evaluate.edc import edc_fixed, pair_qualities, pauc
from aikd.evaluate.pairs import Pairs, build_pairs


def _faces(identities=120, per_identity=5, seed=0):
    """Faces whose true quality drives their mated scores; non-mated scores are impostor noise."""
    rng = np.random.default_rng(seed)
    subjects = np.repeat(np.arange(identities), per_identity)
    true_quality = rng.uniform(0, 1, len(subjects))
    pairs = build_pairs(subjects, non_mated=20_000, seed=seed)
    u = np.minimum(true_quality[pairs.a], true_quality[pairs.b])
    scores = np.where(pairs.mated, 0.05 + 0.6 * u + rng.normal(0, 0.08, len(pairs)), rng.normal(0, 0.08, len(pairs)))
    return subjects, pairs, scores, true_quality, rng


def _bootstrap(subjects, pairs, scores, quality, resamples, fmr=1e-2, limit=0.2):
    who = PairIdentities.of(pairs, subjects)
    q = pair_qualities(quality[pairs.a], quality[pairs.b])
    t = thresholds(scores[~pairs.mated], who, resamples, fmr)
    return paucs(scores[pairs.mated], q[pairs.mated], who, resamples, t, limit)


@pytest.mark.parametrize("fmr", [1e-3, 1e-2])
def test_weights_of_one_give_exactly_the_pauc_of_the_data(fmr):
    subjects, pairs, scores, true_quality, _ = _faces()
    quality = np.round(true_quality, 1)  # many ties: equal qualities are discarded together
    q = pair_qualities(quality[pairs.a], quality[pairs.b])
    m = pairs.mated
    for limit in (0.2, 0.3):
        expected = pauc(edc_fixed(scores[m], q[m], scores[~m], fmr), limit)
        got = _bootstrap(subjects, pairs, scores, quality, Resamples.identity(120), fmr, limit)
        assert got[0] == pytest.approx(expected, abs=1e-12)


def test_a_model_against_itself_differs_by_nothing():
    subjects, pairs, scores, true_quality, rng = _faces()
    quality = true_quality + rng.normal(0, 0.3, len(true_quality))
    resamples = Resamples.draw(120, 200, seed=1)
    diff = (_bootstrap(subjects, pairs, scores, quality, resamples)
            - _bootstrap(subjects, pairs, scores, quality.copy(), resamples))
    lo, hi = interval(diff)
    assert lo <= 0 <= hi and (lo, hi) == (0.0, 0.0)
    assert verdict(lo, hi) == "no detectable difference"


def test_planted_quality_beats_noise_with_an_interval_that_excludes_zero():
    subjects, pairs, scores, true_quality, rng = _faces()
    signal = true_quality + rng.normal(0, 0.05, len(true_quality))
    noise = rng.uniform(0, 1, len(true_quality))
    resamples = Resamples.draw(120, 300, seed=2)
    a = _bootstrap(subjects, pairs, scores, signal, resamples)
    b = _bootstrap(subjects, pairs, scores, noise, resamples)
    lo, hi = interval(a - b)
    assert hi < 0 and verdict(lo, hi) == "better"
    assert verdict(*interval(b - a)) == "worse"
    own = _bootstrap(subjects, pairs, scores, signal, Resamples.identity(120))[0]
    assert interval(a)[0] <= own <= interval(a)[1]


def test_resampling_identities_weights_non_mated_pairs_by_both_people():
    pairs = Pairs(a=np.array([0, 0, 2]), b=np.array([1, 2, 3]), mated=np.array([True, False, False]))
    who = PairIdentities.of(pairs, subjects=["x", "x", "y", "z"])
    assert who.mated.tolist() == [0] and who.identities == 3
    assert list(zip(who.non_mated_a.tolist(), who.non_mated_b.tolist(), strict=True)) == [(0, 1), (1, 2)]
    # drawn: x twice, y once, z never: only x-y comparisons remain, with weight 2
    t = thresholds(np.array([0.5, 0.9]), who, Resamples(np.array([[2.0, 1.0, 0.0]])), fmr=0.0)
    assert t.tolist() == [0.5]


def test_pairs_that_contradict_the_subject_ids_are_refused():
    pairs = Pairs(a=np.array([0]), b=np.array([1]), mated=np.array([True]))
    with pytest.raises(AikdError, match="mated pair joins two identities"):
        PairIdentities.of(pairs, subjects=["x", "y"])


def _thresholds_by_full_sum(non_mated_scores, who, resamples, fmr):
    """The definition, over every score: the first (ascending) whose weight strictly above it is allowed."""
    order = np.argsort(non_mated_scores, kind="stable")
    scores, a, b = non_mated_scores[order], who.non_mated_a[order], who.non_mated_b[order]
    w = resamples.counts[:, a] * resamples.counts[:, b]
    above = w.sum(axis=1, keepdims=True) - np.cumsum(w, axis=1)
    return scores[np.argmax(above <= np.floor(fmr * w.sum(axis=1))[:, None], axis=1)]


@pytest.mark.parametrize("fmr", [0.0, 1e-3, 1e-2, 0.3])
def test_thresholds_searched_among_the_top_scores_equal_those_of_a_sum_over_every_score(fmr):
    subjects, pairs, scores, _, _ = _faces()
    who = PairIdentities.of(pairs, subjects)
    non_mated = np.round(scores[~pairs.mated], 2)  # ties
    resamples = Resamples.draw(who.identities, 50, seed=1)
    expected = _thresholds_by_full_sum(non_mated, who, resamples, fmr)
    assert np.array_equal(thresholds(non_mated, who, resamples, fmr), expected)


def test_a_resample_without_the_people_of_the_top_scores_is_searched_further_down():
    # the top 3,000 non-mated scores compare identities 0 and 1; the second resample drew neither
    a = np.r_[np.zeros(3000, int), np.full(3000, 2)]
    who = PairIdentities(mated=np.array([], int), non_mated_a=a, non_mated_b=a + 1, identities=4)
    scores = np.r_[np.linspace(0.5, 0.9, 3000), np.linspace(0.0, 0.4, 3000)]
    resamples = Resamples(np.array([[1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 2.0, 2.0]]))
    got = thresholds(scores, who, resamples, fmr=1e-3)
    assert got.tolist() == _thresholds_by_full_sum(scores, who, resamples, 1e-3).tolist()
    assert got[1] <= 0.4  # found among identities 2 and 3's comparisons
