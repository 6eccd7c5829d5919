"""Confidence intervals for pAUC: a bootstrap over identities, vectorised.

Comparisons of one person are correlated (they share images and a face), so the unit
resampled is the identity, not the pair. A resample draws as many identities as there
are, with replacement; identity ``s`` drawn ``w[s]`` times gives each of its mated pairs
weight ``w[s]`` and each non-mated pair of ``s`` and ``t`` weight ``w[s] * w[t]`` (every
copy of one person compared with every copy of the other). The EDC of a resample is
:func:`aikd.evaluate.edc.edc_fixed` with those weights: the threshold is fixed on the
weighted non-mated scores, the discard fraction counts mated weight, pairs of equal
quality are discarded together. With every weight 1 it is exactly the EDC of the data.

Two models compared on the same resamples give a paired difference: its interval is
much narrower than either model's own, since what both share (the faces, the FR model,
the identities drawn) cancels. Intervals are percentile intervals.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from aikd.errors import AikdError
from aikd.evaluate.pairs import Pairs

BUDGET = 4_000_000  # array elements per chunk of resamples (a few tens of MB per array)


@dataclass(frozen=True)
class Resamples:
    """How often each identity was drawn, per resample: ``counts[b, s]``."""

    counts: np.ndarray  # (B, identities) float64, whole numbers

    @classmethod
    def draw(cls, identities: int, n: int, seed: int) -> Resamples:
        if identities < 2:
            raise AikdError(f"a bootstrap over identities needs at least 2, got {identities}")
        rng = np.random.default_rng(seed)
        return cls(rng.multinomial(identities, np.full(identities, 1.0 / identities), size=n).astype(np.float64))

    @classmethod
    def identity(cls, identities: int) -> Resamples:
        """The data itself, as one resample of weight 1 everywhere."""
        return cls(np.ones((1, identities)))

    def __len__(self) -> int:
        return len(self.counts)

    def chunks(self, width: int):
        """Slices of resamples holding about BUDGET elements for arrays ``width`` wide."""
        step = max(1, BUDGET // max(width, 1))
        for start in range(0, len(self), step):
            yield slice(start, start + step)


@dataclass(frozen=True)
class PairIdentities:
    """Who each comparison is of: one identity per mated pair, two per non-mated pair."""

    mated: np.ndarray  # (n_mated,) identity codes
    non_mated_a: np.ndarray
    non_mated_b: np.ndarray
    identities: int

    @classmethod
    def of(cls, pairs: Pairs, subjects) -> PairIdentities:
        _, codes = np.unique(np.asarray(subjects), return_inverse=True)
        a, b, m = codes[pairs.a], codes[pairs.b], pairs.mated
        if np.any(a[m] != b[m]):
            raise AikdError("a mated pair joins two identities: the pairs and the subject ids disagree")
        return cls(a[m], a[~m], b[~m], int(codes.max()) + 1)


def thresholds(non_mated_scores: np.ndarray, who: PairIdentities, resamples: Resamples, fmr: float) -> np.ndarray:
    """Per resample, the smallest non-mated score with at most ``fmr`` of the non-mated weight above it.

    The threshold lies among the highest scores, so each resample is searched in a window of the top
    scores only (widened until the window's weight exceeds what the FMR allows above the threshold):
    the same threshold as a cumulative sum over every score, at a fraction of its cost.
    """
    order = np.argsort(non_mated_scores, kind="stable")
    scores, a, b = non_mated_scores[order], who.non_mated_a[order], who.non_mated_b[order]
    allowed = np.floor(fmr * _non_mated_weight(who, resamples))
    out = np.empty(len(resamples))
    todo = np.arange(len(resamples))
    window = min(len(scores), max(1024, int(4 * fmr * len(scores))))
    while len(todo):
        top = slice(len(scores) - window, None)
        found, ok = _top_window(scores[top], a[top], b[top], resamples.counts[todo], allowed[todo],
                                whole=window == len(scores))
        out[todo[ok]] = found[ok]
        todo, window = todo[~ok], min(len(scores), 4 * window)
    return out


def _non_mated_weight(who: PairIdentities, resamples: Resamples) -> np.ndarray:
    """Per resample, the weight of every non-mated pair: one term per pair of identities compared."""
    width = who.identities
    both, count = np.unique(who.non_mated_a * width + who.non_mated_b, return_counts=True)
    s, t = np.divmod(both, width)
    total = np.empty(len(resamples))
    for part in resamples.chunks(len(both)):
        c = resamples.counts[part]
        total[part] = (c[:, s] * c[:, t]) @ count
    if np.any(total == 0):
        raise AikdError("a resample holds no non-mated comparison: too few identities for a bootstrap")
    return total


def _top_window(scores, a, b, counts, allowed, whole: bool) -> tuple[np.ndarray, np.ndarray]:
    """Thresholds found in a window of the top (ascending) scores, and for which resamples the window held one:
    those whose weight inside the window exceeds what is allowed above the threshold (always, for the whole)."""
    found, ok = np.empty(len(counts)), np.empty(len(counts), bool)
    for part in Resamples(counts).chunks(len(scores)):
        c = counts[part]
        above = np.cumsum((c[:, a] * c[:, b])[:, ::-1], axis=1)[:, ::-1]  # weight at or above each position
        # the first position whose weight strictly above it is within what is allowed
        strictly_above = np.concatenate([above[:, 1:], np.zeros((len(c), 1))], axis=1)
        found[part] = scores[np.argmax(strictly_above <= allowed[part, None], axis=1)]
        ok[part] = True if whole else above[:, 0] > allowed[part]
    return found, ok


def paucs(mated_scores: np.ndarray, mated_quality: np.ndarray, who: PairIdentities, resamples: Resamples,
          threshold: np.ndarray, limit: float) -> np.ndarray:
    """Per resample, the pAUC up to ``limit`` of the weighted fixed-threshold EDC (see the module docstring)."""
    order = np.argsort(mated_quality, kind="stable")
    q, s, ids = mated_quality[order], mated_scores[order], who.mated[order]
    ends = np.flatnonzero(np.append(q[1:] != q[:-1], True))  # the last pair of each run of equal quality
    out = np.empty(len(resamples))
    for part in resamples.chunks(len(s)):
        w = resamples.counts[part][:, ids]
        cum_w = np.cumsum(w, axis=1)
        cum_e = np.cumsum(w * (s[None, :] <= threshold[part, None]), axis=1)
        total_w, total_e = cum_w[:, -1:], cum_e[:, -1:]
        if np.any(total_w == 0):
            raise AikdError("a resample holds no mated comparison: too few identities with two faces")
        gone = cum_w[:, ends]
        left = total_w - gone
        x = np.concatenate([np.zeros_like(total_w), gone / total_w], axis=1)
        fnmr = np.concatenate([total_e / total_w, np.divide(total_e - cum_e[:, ends], left, out=np.zeros_like(left),
                                                             where=left > 0)], axis=1)
        right = np.minimum(np.concatenate([x[:, 1:], np.full_like(total_w, limit)], axis=1), limit)
        out[part] = np.sum(fnmr * np.clip(right - x, 0.0, None), axis=1)
    return out


def interval(values: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """The central percentile interval holding ``level`` of the values."""
    tail = (1.0 - level) / 2.0
    lo, hi = np.quantile(values, [tail, 1.0 - tail])
    return float(lo), float(hi)


def verdict(lo: float, hi: float) -> str:
    """What an interval of a difference in pAUC (first minus second; lower is better) says of the first."""
    if hi < 0:
        return "better"
    if lo > 0:
        return "worse"
    return "no detectable difference"


@dataclass(frozen=True)
class Bootstrap:
    """One evaluation's resamples: every model and condition is measured on the same ones (paired)."""

    pairs: Pairs
    who: PairIdentities
    resamples: Resamples

    @classmethod
    def of(cls, pairs: Pairs, subjects, n: int, seed: int) -> Bootstrap:
        who = PairIdentities.of(pairs, subjects)
        return cls(pairs, who, Resamples.draw(who.identities, n, seed))

    def thresholds(self, scores: np.ndarray, fmr: float) -> np.ndarray:
        """Per resample, the threshold at ``fmr`` of one condition's comparison scores."""
        return thresholds(scores[~self.pairs.mated], self.who, self.resamples, fmr)

    def paucs(self, scores: np.ndarray, pair_quality: np.ndarray, threshold: np.ndarray, limit: float) -> np.ndarray:
        m = self.pairs.mated
        return paucs(scores[m], pair_quality[m], self.who, self.resamples, threshold, limit)


def differences(compare: list[tuple[str, str]], rows: list[dict], samples: dict, limits: list[float],
                level: float) -> list[dict]:
    """For each compared pair of models, condition, FMR and limit: a - b in pAUC, its interval and the verdict.

    ``samples[(model, condition, fmr, limit)]`` holds a model's pAUC per resample;
    ``rows`` the pAUC of the data (the point estimate).
    """
    point = {(r["model"], r["condition"], r["fmr"]): r for r in rows}
    out = []
    for a, b in compare:
        for model, condition, fmr in point:
            if model != a:
                continue
            for limit in limits:
                key = f"pauc_{limit:g}"
                lo, hi = interval(samples[(a, condition, fmr, limit)] - samples[(b, condition, fmr, limit)], level)
                out.append({"a": a, "b": b, "condition": condition, "fmr": fmr, "limit": limit,
                            "difference": point[(a, condition, fmr)][key] - point[(b, condition, fmr)][key],
                            "low": lo, "high": hi, "verdict": verdict(lo, hi)})
    return out
