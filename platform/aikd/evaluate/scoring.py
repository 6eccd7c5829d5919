"""Per image and per condition: the FR embedding and every FIQA model's quality, on Ray Data.

Conditions: ``aligned`` (5-point similarity alignment), ``misaligned_<s>`` (the same
after landmark noise of strength s, seeded per image, so every model sees the same
misaligned crop) and ``box`` (the detector box, squared and resized: no landmarks).
The FR model sees exactly the crop the FIQA models see.

Every row read comes back used or rejected with a reason (undecodable or unusable image,
bad landmarks, no or an invalid box when the box condition is on, or an image_id that an
earlier row in plan order already has), so rows in = faces used + rejects.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from aikd.actor_pool import map_actors
from aikd.align import box_matrix, box_reason, perturb, similarity_batch, template, warp_rgb
from aikd.config import Condition, EvaluateConfig
from aikd.data.ingest import DUPLICATE
from aikd.data.pipeline import decode_rows, plan_units, unit_batches
from aikd.data.schema import BBOX, IMAGE, IMAGE_ID, LANDMARKS, SUBJECT_ID
from aikd.data.split import stable_hash
from aikd.errors import AikdError
from aikd.models.weights import load_model, preprocess_of
from aikd.runtime import actor_device
from aikd.teachers import Scores, TeacherBatch, create_teacher


def condition_matrices(cfg: EvaluateConfig, condition: Condition, landmarks: np.ndarray, boxes, hashes: np.ndarray,
                       size: int) -> np.ndarray:
    """(N, 2, 3) warps of one condition at output ``size``."""
    if condition.kind == "aligned":
        return similarity_batch(landmarks, template(size))
    if condition.kind == "box":
        return np.stack([box_matrix(b, size, cfg.box_margin) for b in boxes])
    rngs = (np.random.default_rng([cfg.seed, condition.index, int(h)]) for h in hashes)
    noisy = np.stack([perturb(lm, condition.strength, rng, cfg.misalignment_relative)
                      for lm, rng in zip(landmarks, rngs, strict=True)])
    return similarity_batch(noisy, template(size))


class _Student:
    """A distilled student used as a FIQA model: its head's output is the quality."""

    higher_is_better = True
    needs_images = True

    def __init__(self, uri: str, device: torch.device):
        self.model, _ = load_model(uri)
        self.model = self.model.to(device).eval()
        self.preprocess, self.device = preprocess_of(self.model), device
        self.input_size = self.preprocess.input_size

    @torch.no_grad()
    def score(self, batch: TeacherBatch):
        q = self.model(self.preprocess(batch.aligned, self.device))[1]
        return Scores(q.float().cpu().numpy(), {})


REASON, ORDER = "reason", "order"


class EvalScorer:
    """Actor: FR model + FIQA models loaded once; scores every condition of each batch."""

    def __init__(self, cfg: EvaluateConfig):
        cv2.setNumThreads(1)
        self.cfg = cfg
        self.device = actor_device()  # the GPU Ray gave this actor, else the CPU
        self.fr, _ = load_model(cfg.fr_model)
        self.fr = self.fr.to(self.device).eval()
        self.fr_preprocess = preprocess_of(self.fr)
        self.models = {}
        for spec in cfg.models:
            if spec.teacher is not None:
                self.models[spec.name] = create_teacher(spec.teacher, **spec.options)  # on this actor's device
            else:
                self.models[spec.name] = _Student(spec.student, self.device)
        self.conditions = cfg.conditions

    def __call__(self, units: dict) -> dict:
        columns = [IMAGE_ID, SUBJECT_ID, IMAGE, LANDMARKS, BBOX]
        parts = []
        for index, uri, row_group in zip(units["index"], units["uri"], units["row_group"], strict=True):
            start = 0
            for batch in unit_batches(uri, row_group, columns, self.cfg.batch_size):
                part = self.score_batch(batch)
                n = len(part[IMAGE_ID])
                part[ORDER] = int(index) * 2**32 + start + np.arange(n, dtype=np.int64)  # plan order
                start += n
                parts.append(part)
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]} if parts else {}

    @torch.no_grad()
    def score_batch(self, batch: dict) -> dict:
        """Every row of ``batch``: its columns where usable; NaN and a reason where not."""
        n = len(batch[IMAGE_ID])
        rows, images, landmarks, rejected = decode_rows(batch, np.arange(n))
        reasons = np.full(n, "", dtype=object)
        for i, why in rejected.items():
            reasons[i] = why
        if self.cfg.box:  # a box condition needs a box: rows without a usable one are left out of every condition
            for r in rows:
                reasons[r] = box_reason(batch[BBOX][r])
            usable = [k for k, r in enumerate(rows) if not reasons[r]]
            images = [images[k] for k in usable]
            rows = rows[usable]
        out = {IMAGE_ID: np.asarray(batch[IMAGE_ID]).astype(str), SUBJECT_ID: np.asarray(batch[SUBJECT_ID]).astype(str),
               REASON: reasons}
        ids = out[IMAGE_ID][rows]
        lms = landmarks[rows]
        boxes = [np.asarray(batch[BBOX][r], np.float64) for r in rows] if self.cfg.box else None
        hashes = stable_hash(ids, self.cfg.seed)

        def full(values: np.ndarray) -> np.ndarray:
            """The values of the usable rows spread over all rows, NaN elsewhere."""
            values = np.asarray(values, np.float32)
            spread = np.full((n, *values.shape[1:]), np.nan, np.float32)
            spread[rows] = values
            return spread

        for condition in self.conditions:
            crops: dict[int, np.ndarray] = {}  # one warp per output size, shared by the models

            def crop(size: int, condition=condition, crops=crops) -> np.ndarray:
                if size not in crops:  # a batch with no usable face has no warps to compute
                    m = condition_matrices(self.cfg, condition, lms, boxes, hashes, size) if images else None
                    crops[size] = warp_rgb(images, m, size)
                return crops[size]

            fr_in = self.fr_preprocess(crop(self.fr_preprocess.input_size), self.device)
            out[f"emb__{condition.name}"] = full(F.normalize(self.fr(fr_in).float(), dim=1).cpu().numpy())
            for name, model in self.models.items():
                tb = TeacherBatch(ids, out[SUBJECT_ID][rows], crop(model.input_size), {})
                values = model.score(tb).values
                sign = 1.0 if model.higher_is_better else -1.0  # EDC wants higher = better
                out[f"q__{name}__{condition.name}"] = full(sign * np.asarray(values, np.float32))
        return out


def score_faces(cfg: EvaluateConfig) -> tuple[dict[str, np.ndarray], list[tuple[str, str]]]:
    """Every usable face of the evaluation set with all its columns (in image_id order), gathered on the
    driver, and the rejected rows as (image_id, reason) in plan order."""
    from aikd.config import DataConfig

    units = [u for u in plan_units(DataConfig(shards=cfg.shards)) if u.rows > 0]
    if not units:
        raise AikdError(f"no faces in {cfg.shards}: every shard is empty")
    items = [{"index": k, "uri": u.uri, "row_group": u.row_group} for k, u in enumerate(units)]
    ds = map_actors(items, EvalScorer, {"cfg": cfg}, cfg.resources)
    batches = [b for b in ds.iter_batches(batch_size=None, batch_format="numpy") if IMAGE_ID in b]
    rows = {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}
    order = np.argsort(rows.pop(ORDER), kind="stable")  # plan order, whatever order Ray delivered
    rows = {k: v[order] for k, v in rows.items()}
    reasons = rows.pop(REASON).astype(object)
    _, first = np.unique(rows[IMAGE_ID], return_index=True)
    later = np.ones(len(reasons), bool)
    later[first] = False
    reasons[later] = DUPLICATE  # one face per id: a repeated id would be a mated pair with itself
    ok = reasons == ""
    rejects = [(str(i), str(r)) for i, r in zip(rows[IMAGE_ID][~ok], reasons[~ok], strict=True)]
    if not ok.any():
        raise AikdError(f"no usable faces in {cfg.shards}: all {len(reasons)} rows rejected "
                        f"(first: {rejects[0][0]}: {rejects[0][1]})")
    faces = {k: v[ok] for k, v in rows.items()}
    by_id = np.argsort(faces[IMAGE_ID], kind="stable")  # a deterministic order
    return {k: v[by_id] for k, v in faces.items()}, rejects
