"""Error-versus-Discard Characteristic (EDC) and its partial area (pAUC), numpy only.

Choices, each explicit because the field's scripts disagree:

* Pair quality: the minimum of the two images' qualities (``pair_quality="mean"`` for
  the mean). Higher quality = better; a FIQA whose scores run the other way is negated
  before it gets here.
* Decisions: a comparison is accepted when its score is strictly above the threshold.
  The threshold is fixed once, on all non-mated scores, at the target FMR: the
  smallest non-mated score such that at most ``fmr`` of the non-mated scores exceed it.
* ``mode="fixed"`` (ISO/IEC 29794-1, Schlett et al.): the lowest-quality *mated* pairs
  are discarded; the discard fraction counts mated pairs; pairs of equal quality are
  discarded together, so the curve has one point per distinct quality level (plus the
  start at 0). FNMR is that of the remaining mated pairs.
* ``mode="reestimated"`` (as the MagFace and CR-FIQA "ERC" scripts): all pairs, mated
  and non-mated, are ranked by one quality; at each of ``steps`` discard fractions of
  all pairs the threshold is re-estimated on the remaining non-mated pairs.
* pAUC: the EDC is a step function (FNMR holds until the next discard point), so the
  area up to the discard limit is a sum of rectangles, not a trapezoid rule; it is not
  divided by the limit. With ``subtract_best`` the area under the theoretical best
  curve, FNMR_best(x) = max(f0 - x, 0) / (1 - x) (the errors discarded first), is
  subtracted: 0 means a perfect ranking.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from aikd.errors import AikdError


@dataclass(frozen=True)
class EDC:
    discard: np.ndarray  # discarded fraction at each point, starting at 0
    fnmr: np.ndarray  # FNMR of what remains
    threshold: float | np.ndarray
    fmr: float
    mode: str

    @property
    def start_fnmr(self) -> float:
        return float(self.fnmr[0])


def pair_qualities(qa: np.ndarray, qb: np.ndarray, how: Literal["min", "mean"] = "min") -> np.ndarray:
    if how == "min":
        return np.minimum(qa, qb)
    if how == "mean":
        return (np.asarray(qa) + np.asarray(qb)) / 2.0
    raise ValueError(f"pair quality must be 'min' or 'mean', got {how!r}")


def threshold_at_fmr(non_mated: np.ndarray, fmr: float) -> float:
    """The smallest non-mated score with at most ``fmr`` of non-mated scores above it."""
    n = len(non_mated)
    if n == 0:
        raise AikdError("no non-mated comparisons to fix a threshold on")
    if not 0.0 <= fmr < 1.0:
        raise ValueError(f"fmr must be in [0, 1), got {fmr}")
    allowed = int(np.floor(fmr * n))
    return float(np.partition(non_mated, n - allowed - 1)[n - allowed - 1])


def edc_fixed(mated_scores: np.ndarray, mated_quality: np.ndarray, non_mated_scores: np.ndarray,
              fmr: float = 1e-3) -> EDC:
    """The ISO-style EDC: fixed threshold, discard over mated pairs, ties together."""
    scores = np.asarray(mated_scores, np.float64)
    quality = np.asarray(mated_quality, np.float64)
    n = len(scores)
    if n == 0:
        raise AikdError("no mated comparisons: the evaluation set needs several images of some identities")
    t = threshold_at_fmr(np.asarray(non_mated_scores, np.float64), fmr)
    order = np.argsort(quality, kind="stable")
    q_sorted = quality[order]
    errors = (scores[order] <= t).astype(np.int64)
    cum_errors = np.cumsum(errors)
    # the last index of every run of equal quality: discarding stops only between distinct values
    ends = np.flatnonzero(np.append(q_sorted[1:] != q_sorted[:-1], True))
    discarded = ends + 1
    keep = discarded < n
    discarded = discarded[keep]
    remaining_errors = cum_errors[-1] - cum_errors[ends[keep]]
    discard = np.concatenate([[0.0], discarded / n])
    fnmr = np.concatenate([[cum_errors[-1] / n], remaining_errors / (n - discarded)])
    return EDC(discard, fnmr, t, fmr, "fixed")


def edc_reestimated(mated_scores: np.ndarray, mated_quality: np.ndarray, non_mated_scores: np.ndarray,
                    non_mated_quality: np.ndarray, fmr: float = 1e-3, steps: int = 100) -> EDC:
    """The "ERC" variant: discard over all pairs by one ranking, re-fix the threshold each step."""
    sm, qm = np.asarray(mated_scores, np.float64), np.asarray(mated_quality, np.float64)
    sn, qn = np.asarray(non_mated_scores, np.float64), np.asarray(non_mated_quality, np.float64)
    all_q = np.sort(np.concatenate([qm, qn]))
    total = len(all_q)
    fractions = np.linspace(0.0, 1.0, steps + 1)[:-1]
    discard, fnmr, thresholds = [], [], []
    for f in fractions:
        k = int(np.floor(f * total))
        cut = all_q[k - 1] if k > 0 else -np.inf  # discard every pair with quality <= cut (ties together)
        keep_m, keep_n = qm > cut, qn > cut
        if not keep_m.any() or not keep_n.any():
            break
        t = threshold_at_fmr(sn[keep_n], fmr)
        discard.append(1.0 - (keep_m.sum() + keep_n.sum()) / total)
        fnmr.append(float(np.mean(sm[keep_m] <= t)))
        thresholds.append(t)
    return EDC(np.array(discard), np.array(fnmr), np.array(thresholds), fmr, "reestimated")


def best_area(start_fnmr: float, limit: float) -> float:
    """Area under FNMR_best(x) = (f0 - x) / (1 - x) for x < f0, else 0, from 0 to ``limit``."""
    a = min(limit, start_fnmr)
    if a <= 0:
        return 0.0
    return float(a + (1.0 - start_fnmr) * np.log1p(-a))


def pauc(edc: EDC, limit: float = 0.2, subtract_best: bool = False) -> float:
    """Area under the step-function EDC from 0 to ``limit`` (see the module docstring)."""
    if not 0.0 < limit <= 1.0:
        raise ValueError(f"pAUC limit must be in (0, 1], got {limit}")
    x = edc.discard
    right = np.minimum(np.append(x[1:], limit), limit)  # each value holds until the next point
    width = np.clip(right - x, 0.0, None)
    area = float(np.sum(edc.fnmr * width))
    if subtract_best:
        area -= best_area(edc.start_fnmr, limit)
    return area
