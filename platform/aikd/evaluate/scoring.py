"""Per image and per condition: the FR embedding and every FIQA model's quality, on Ray Data.

Conditions: ``aligned`` (5-point similarity alignment), ``misaligned_<s>`` (the same
after landmark noise of strength s, seeded per image, so every model sees the same
misaligned crop), ``box`` (the detector box, squared and resized: no landmarks) and
``detected`` (aligned by the landmarks a face detector finds in the image).
The FR model sees exactly the crop the FIQA models see.

The faces are planned, read, aligned and scored by the scoring job's code
(:mod:`aikd.score`): one view per condition, the FR model's embeddings added. Every row
read comes back used or rejected with a reason (undecodable or unusable image, bad
landmarks, no or an invalid box when the box condition is on, or an image_id that an
earlier row in plan order already has), so rows in = faces used + rejects.
"""

from __future__ import annotations

import numpy as np

from aikd.actor_pool import map_actors
from aikd.config import Condition, EvaluateConfig
from aikd.data.schema import IMAGE_ID, SUBJECT_ID
from aikd.errors import AikdError
from aikd.progress import Progress
from aikd.score.actors import AlignAndScore
from aikd.score.inputs import ORDER, plan_shards
from aikd.score.views import condition_view, view_matrices


def condition_matrices(cfg: EvaluateConfig, condition: Condition, landmarks: np.ndarray, boxes, hashes: np.ndarray,
                       size: int) -> np.ndarray:
    """(N, 2, 3) warps of one condition at output ``size``."""
    return view_matrices(condition_view(cfg, condition), size, landmarks, boxes, [], hashes)


def _scored(key: str) -> bool:
    return key in (IMAGE_ID, SUBJECT_ID) or key.startswith(("emb__", "q__"))


def score_faces(cfg: EvaluateConfig) -> tuple[dict[str, np.ndarray], list[tuple[str, str]]]:
    """Every usable face of the evaluation set with all its columns (in image_id order), gathered on the
    driver, and the rejected rows as (image_id, reason) in plan order."""
    units = [u for f in plan_shards(cfg.shards) for u in f.units if u["rows"] > 0]
    if not units:
        raise AikdError(f"no faces in {cfg.shards}: every shard is empty")
    ds = map_actors(units, AlignAndScore, {"cfg": cfg}, cfg.resources)
    batches = []
    with Progress("evaluate", "faces", sum(u["rows"] for u in units)) as shown:
        for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
            if IMAGE_ID in batch:
                batches.append(batch)
                shown.advance(len(batch[IMAGE_ID]))
    rows = {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}
    order = np.argsort(rows[ORDER], kind="stable")  # plan order, whatever order Ray delivered
    reasons = rows["reason"][order].astype(object)
    rows = {k: v[order] for k, v in rows.items() if _scored(k)}
    ok = reasons == ""
    rejects = [(str(i), str(r)) for i, r in zip(rows[IMAGE_ID][~ok], reasons[~ok], strict=True)]
    if not ok.any():
        raise AikdError(f"no usable faces in {cfg.shards}: all {len(reasons)} rows rejected "
                        f"(first: {rejects[0][0]}: {rejects[0][1]})")
    faces = {k: v[ok] for k, v in rows.items()}
    by_id = np.argsort(faces[IMAGE_ID], kind="stable")  # a deterministic order
    return {k: v[by_id] for k, v in faces.items()}, rejects
