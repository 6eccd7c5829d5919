"""The evaluation's numbers from scored faces: pairs, EDC per FMR, condition and model, pAUC, intervals.

    faces (one row per usable face: embeddings and qualities per condition)
          -> pairs (built from subject ids, or a pairs file)
          -> per FMR, condition and model: EDC, pAUC at each limit (raw and minus the best curve)
          -> bootstrap intervals and paired differences (``compare``)
          -> invariance: Spearman of each model's aligned vs other-condition scores
"""

from __future__ import annotations

import numpy as np

from aikd.config import EvaluateConfig
from aikd.evaluate.bootstrap import Bootstrap, differences, interval
from aikd.evaluate.edc import EDC, edc_fixed, edc_reestimated, pair_qualities, pauc
from aikd.evaluate.pairs import Pairs, build_pairs, comparison_scores, read_pairs
from aikd.evaluate.ranks import spearman
from aikd.job import count_reasons


def edc_for(cfg: EvaluateConfig, scores: np.ndarray, quality: np.ndarray, pairs: Pairs, fmr: float) -> EDC:
    q = pair_qualities(quality[pairs.a], quality[pairs.b], cfg.pair_quality)
    m = pairs.mated
    if cfg.mode == "fixed":
        return edc_fixed(scores[m], q[m], scores[~m], fmr)
    return edc_reestimated(scores[m], q[m], scores[~m], q[~m], fmr)


def evaluate(cfg: EvaluateConfig, faces: dict[str, np.ndarray], samples: dict | None = None) -> tuple[dict, dict]:
    """(results as plain data, EDC curves keyed (fmr, condition, model)) from scored faces.

    ``samples``, when given, receives each pAUC per resample, keyed (model, condition,
    fmr, limit): what a caller needs to compare models beyond ``compare`` (e.g. averaged
    over seeds) on the same resamples.
    """
    ids, subjects = faces["image_id"], faces["subject_id"]
    pairs = read_pairs(cfg.pairs_file, ids) if cfg.pairs_file else build_pairs(
        subjects, cfg.max_mated, cfg.non_mated, cfg.seed)
    names = [c.name for c in cfg.conditions]  # display names key the scored columns and the report
    models = [m.name for m in cfg.models]
    results = {"faces": int(len(ids)), "mated_pairs": pairs.n_mated, "non_mated_pairs": int(len(pairs) - pairs.n_mated),
               "mode": cfg.mode, "pair_quality": cfg.pair_quality, "conditions": names, "models": models,
               "pauc": [], "invariance": [], "start_fnmr": {}}
    curves = {}
    samples = {} if samples is None else samples
    boot = Bootstrap.of(pairs, subjects, cfg.ci_resamples, cfg.seed) if cfg.ci_resamples else None
    if boot:
        results["bootstrap"] = {"resamples": cfg.ci_resamples, "unit": "identity", "identities": boot.who.identities,
                                "level": cfg.ci_level}
    for condition in names:
        scores = comparison_scores(faces[f"emb__{condition}"], pairs)
        for fmr in cfg.fmr:
            thresholds = boot.thresholds(scores, fmr) if boot else None
            for model in models:
                quality = faces[f"q__{model}__{condition}"]
                edc = edc_for(cfg, scores, quality, pairs, fmr)
                curves[(fmr, condition, model)] = edc
                results["start_fnmr"][f"{condition}@{fmr:g}"] = edc.start_fnmr
                row = {"model": model, "condition": condition, "fmr": fmr, "start_fnmr": edc.start_fnmr}
                q = pair_qualities(quality[pairs.a], quality[pairs.b], cfg.pair_quality) if boot else None
                for limit in cfg.pauc_limits:
                    row[f"pauc_{limit:g}"] = pauc(edc, limit)
                    row[f"pauc_{limit:g}_minus_best"] = pauc(edc, limit, subtract_best=True)
                    if boot:
                        samples[(model, condition, fmr, limit)] = boot.paucs(scores, q, thresholds, limit)
                        row[f"pauc_{limit:g}_ci"] = list(interval(samples[(model, condition, fmr, limit)],
                                                                  cfg.ci_level))
                results["pauc"].append(row)
    results["differences"] = differences(cfg.compare, results["pauc"], samples, cfg.pauc_limits, cfg.ci_level)
    for model in models:
        base = faces[f"q__{model}__aligned"]
        for condition in names[1:]:  # names[0] is aligned
            results["invariance"].append({"model": model, "condition": condition,
                                          "spearman_vs_aligned": spearman(base, faces[f"q__{model}__{condition}"])})
    return results, curves


def reject_counts(faces: dict[str, np.ndarray], rejects: list[tuple[str, str]]) -> dict:
    """Rows read, faces used, rows rejected and the count per reason."""
    used = int(len(faces["image_id"]))
    return {"rows": used + len(rejects), "faces": used, "rejected": len(rejects),
            "reject_reasons": count_reasons(rejects)}
