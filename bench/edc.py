"""EDC speed: pairs/s of the vectorised EDC at 1e5, 1e6 and 1e7 comparisons.

Baseline in the same run: a straightforward per-discard-step Python loop (at every
distinct quality level, mask the remaining mated pairs and recount the errors), timed
on the same smaller set as the vectorised version (it is quadratic), so the speed-up
compares like with like. A tenth of the pairs are mated. Prints one JSON object last.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from aikd.evaluate.edc import edc_fixed, threshold_at_fmr


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
               "speedup_vs_python_loop": round(slow / fast, 1), "same_curve_as_baseline": agree}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
