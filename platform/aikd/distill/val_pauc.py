"""The EDC pAUC of the student at every validation: does its quality rank misaligned faces well?

The comparisons are fixed for a run: pairs among the validation faces (mated within a
subject, a seeded sample of non-mated ones) scored by the frozen FR backbone's
embeddings of the same crops the student sees, one set per view (aligned, misaligned).
They are computed once; each validation then costs one EDC per view on the student's
new qualities. Lower pAUC is better.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from aikd.config import ValidationConfig
from aikd.data.schema import SUBJECT_ID
from aikd.distill.metrics import PAUC
from aikd.evaluate.edc import edc_fixed, pair_qualities, pauc
from aikd.evaluate.pairs import Pairs, build_pairs, comparison_scores
from aikd.models.transforms import Preprocess

VIEWS = tuple(PAUC)  # the validation views: aligned, misaligned


@dataclass(frozen=True)
class Comparisons:
    """The validation pairs and each view's comparison scores."""

    pairs: Pairs
    scores: dict[str, np.ndarray]


@torch.no_grad()
def _embeddings(fr: nn.Module, batches: list[dict], view: str, preprocess: Preprocess) -> np.ndarray:
    param = next(fr.parameters())
    out = [F.normalize(fr(preprocess(b[view], param.device).to(param.dtype)).float(), dim=1).cpu().numpy()
           for b in batches]
    return np.concatenate(out)


def comparisons(batches: list[dict], fr: nn.Module, preprocess: Preprocess, cfg: ValidationConfig,
                seed: int) -> tuple[Comparisons | None, str]:
    """The run's fixed comparisons, or None and why not (too few mated pairs, no misaligned view)."""
    if not cfg.pauc:
        return None, "validation.pauc is off"
    if not batches or any(view not in batches[0] for view in VIEWS):
        return None, "the validation batches lack a view"
    subjects = np.concatenate([np.asarray(b[SUBJECT_ID]).astype(str) for b in batches])
    pairs = build_pairs(subjects, non_mated=cfg.non_mated, seed=seed)
    if pairs.n_mated < cfg.min_mated_pairs:
        return None, (f"{pairs.n_mated} mated pairs among {len(subjects)} validation faces, fewer than "
                      f"validation.min_mated_pairs = {cfg.min_mated_pairs} (hold out more images per identity)")
    fr.eval()
    scores = {view: comparison_scores(_embeddings(fr, batches, view, preprocess), pairs) for view in VIEWS}
    return Comparisons(pairs, scores), ""


def pauc_metrics(comp: Comparisons, quality: dict[str, np.ndarray], cfg: ValidationConfig) -> dict[str, float]:
    """The pAUC metric of each view: at ``cfg.discard`` of the EDC at ``cfg.fmr``, pair quality = min of the two."""
    p, m = comp.pairs, comp.pairs.mated
    out = {}
    for view in VIEWS:
        q = pair_qualities(quality[view][p.a], quality[view][p.b], "min")
        edc = edc_fixed(comp.scores[view][m], q[m], comp.scores[view][~m], cfg.fmr)
        out[PAUC[view]] = pauc(edc, cfg.discard)
    return out
