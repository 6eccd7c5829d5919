"""EDC speed: pairs/s of the vectorised EDC at 1e5, 1e6 and 1e7 comparisons.

Baseline in the same run: a straightforward per-discard-step Python loop (at every
distinct quality level, mask the remaining mated pairs and recount the errors), timed
on the same smaller set as the vectorised version (it is quadratic), so the speed-up
compares like with like. A tenth of the pairs are mated.

Bootstrap thresholds (the FMR threshold of each of 1,000 identity resamples, 200,000
non-mated pairs of 8 identities, the demo's evaluation): the search among the top
scores against the same search as a cumulative sum over every score, both in this run;
they must give the same thresholds. Prints one JSON object last.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from aikd.evaluate.bootstrap import PairIdentities, Resamples, thresholds
from aikd.evaluate.edc import edc_fixed, threshold_at_fmr
from aikd.evaluate.pairs import build_pairs


def synthetic(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    m = n // 10
    mated = rng.normal(1.0, 1.0, m)
    quality = np.round(mated + rng.normal(0, 1.0, m), 3)  # rounded: realistic ties
    return mated, quality, rng.normal(-1.0, 1.0, n - m)


def naive_edc(scores, quality, non_mated, fmr):
    t = threshold_at_fmr(non_mated, fmr)
    levels = np.unique(quality)
    discard, fnmr = [0.0], [float(np.mean(scores <= t))]
    for q in levels[:-1]:
        keep = quality > q
        discard.append(1.0 - keep.mean())
        fnmr.append(float(np.mean(scores[keep] <= t)))
    return np.array(discard), np.array(fnmr)


def thresholds_by_full_sum(non_mated_scores, who, resamples, fmr):
    """Baseline: one cumulative sum over every sorted score per resample (chunked as the library chunks)."""
    order = np.argsort(non_mated_scores, kind="stable")
    scores, a, b = non_mated_scores[order], who.non_mated_a[order], who.non_mated_b[order]
    out = np.empty(len(resamples))
    for part in resamples.chunks(len(scores)):
        c = resamples.counts[part]
        cum = np.cumsum(c[:, a] * c[:, b], axis=1)
        total = cum[:, -1]
        out[part] = scores[np.argmax(cum >= (total - np.floor(fmr * total))[:, None], axis=1)]
    return out


def bootstrap_thresholds(identities: int = 8, per_identity: int = 10, non_mated: int = 200_000) -> dict:
    subjects = np.repeat(np.arange(identities), per_identity)
    pairs = build_pairs(subjects, 100_000, non_mated, 0)
    scores = np.random.default_rng(2).normal(0.0, 0.1, len(pairs))[~pairs.mated]
    who = PairIdentities.of(pairs, subjects)
    resamples = Resamples.draw(who.identities, 1000, seed=3)
    out = {"non_mated_pairs": int(len(scores)), "resamples": len(resamples)}
    for fmr in (1e-3, 1e-2):
        fast = timed(lambda f=fmr: thresholds(scores, who, resamples, f), repeat=2)
        slow = timed(lambda f=fmr: thresholds_by_full_sum(scores, who, resamples, f))
        same = bool(np.array_equal(thresholds(scores, who, resamples, fmr),
                                   thresholds_by_full_sum(scores, who, resamples, fmr)))
        out[f"fmr{fmr:g}"] = {"top_scores_s": round(fast, 3), "full_sum_s": round(slow, 3),
                              "speedup": round(slow / fast, 1), "same_thresholds": same}
    return out


def timed(fn, repeat: int = 1) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="1e5,1e6,1e7")
    parser.add_argument("--baseline-size", type=float, default=2e4)
    args = parser.parse_args()
    result = {"bench": "edc", "fmr": 1e-3, "pairs_per_s": {}, "seconds": {}}
    for size in (int(float(s)) for s in args.sizes.split(",")):
        data = synthetic(size)
        s = timed(lambda d=data: edc_fixed(*d, fmr=1e-3), repeat=2 if size < 5e6 else 1)
        result["pairs_per_s"][f"{size:.0e}"] = round(size / s)
        result["seconds"][f"{size:.0e}"] = round(s, 3)
    n = int(args.baseline_size)
    data = synthetic(n, seed=1)
    fast = timed(lambda: edc_fixed(*data, fmr=1e-3), repeat=3)
    slow = timed(lambda: naive_edc(*data, fmr=1e-3))
    edc = edc_fixed(*data, fmr=1e-3)
    discard, fnmr = naive_edc(*data, fmr=1e-3)
    agree = bool(np.allclose(edc.discard, discard) and np.allclose(edc.fnmr, fnmr))
    result |= {"baseline_pairs": n, "baseline_python_loop_s": round(slow, 3), "vectorised_s": round(fast, 5),
               "speedup_vs_python_loop": round(slow / fast, 1), "same_curve_as_baseline": agree,
               "bootstrap_thresholds": bootstrap_thresholds()}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
