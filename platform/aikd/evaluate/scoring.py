"""Per image and per condition: the FR embedding and every FIQA model's quality, on Ray Data.

Conditions: ``aligned`` (5-point similarity alignment), ``misaligned_<s>`` (the same
after landmark noise of strength s, seeded per image, so every model sees the same
misaligned crop) and ``box`` (the detector box, squared and resized: no landmarks).
The FR model sees exactly the crop the FIQA models see.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from aikd.actor_pool import map_actors
from aikd.align import box_matrix, perturb, similarity_batch, template, warp_rgb
from aikd.config import Condition, EvaluateConfig
from aikd.data.pipeline import decode_valid, plan_units, unit_batches
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
        for uri, row_group in zip(units["uri"], units["row_group"], strict=True):
            for batch in unit_batches(uri, row_group, columns, self.cfg.batch_size):
                parts.append(self.score_batch(batch))
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]} if parts else {}

    @torch.no_grad()
    def score_batch(self, batch: dict) -> dict:
        rows, images, landmarks, _ = decode_valid(batch, np.arange(len(batch[IMAGE_ID])))
        if self.cfg.box:  # a box condition needs a box: rows without one are left out of every condition
            rows_with_box = [i for i, r in enumerate(rows) if batch[BBOX][r] is not None]
            images = [images[i] for i in rows_with_box]
            rows = rows[rows_with_box]
        ids = np.asarray(batch[IMAGE_ID])[rows].astype(str)
        out = {IMAGE_ID: ids, SUBJECT_ID: np.asarray(batch[SUBJECT_ID])[rows].astype(str)}
        lms = landmarks[rows]
        boxes = [np.asarray(batch[BBOX][r], np.float64) for r in rows] if self.cfg.box else None
        hashes = stable_hash(ids, self.cfg.seed)
        for condition in self.conditions:
            crops: dict[int, np.ndarray] = {}  # one warp per output size, shared by the models

            def crop(size: int, condition=condition, crops=crops) -> np.ndarray:
                if size not in crops:  # a batch with no usable face has no warps to compute
                    m = condition_matrices(self.cfg, condition, lms, boxes, hashes, size) if images else None
                    crops[size] = warp_rgb(images, m, size)
                return crops[size]

            fr_in = self.fr_preprocess(crop(self.fr_preprocess.input_size), self.device)
            out[f"emb__{condition.name}"] = F.normalize(self.fr(fr_in).float(), dim=1).cpu().numpy()
            for name, model in self.models.items():
                tb = TeacherBatch(ids, out[SUBJECT_ID], crop(model.input_size), {})
                values = model.score(tb).values
                sign = 1.0 if model.higher_is_better else -1.0  # EDC wants higher = better
                out[f"q__{name}__{condition.name}"] = sign * np.asarray(values, np.float32)
        return out


def score_faces(cfg: EvaluateConfig) -> dict[str, np.ndarray]:
    """All columns for every usable face of the evaluation set, gathered on the driver."""
    from aikd.config import DataConfig

    units = plan_units(DataConfig(shards=cfg.shards))
    items = [{"uri": u.uri, "row_group": u.row_group} for u in units]
    ds = map_actors(items, EvalScorer, {"cfg": cfg}, cfg.resources)
    batches = list(ds.iter_batches(batch_size=None, batch_format="numpy"))
    if not batches:
        raise AikdError(f"no usable faces in {cfg.shards}")
    out = {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}
    order = np.argsort(out[IMAGE_ID], kind="stable")  # a deterministic order, whatever Ray delivered
    return {k: v[order] for k, v in out.items()}
