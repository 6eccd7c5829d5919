"""Per image and per condition: the FR embedding and every FIQA model's quality, on Ray Data.

Conditions: ``aligned`` (5-point similarity alignment), ``misaligned_<s>`` (the same
after landmark noise of strength s, seeded per image, so every model sees the same
misaligned crop) and ``box`` (the detector box, squared and resized: no landmarks).
The FR model sees exactly the crop the FIQA models see.
"""

from __future__ import annotations

import cv2
import numpy as np
import ray
import torch
import torch.nn.functional as F

from aikd.align import box_matrix, perturb, similarity_batch, template, warp_batch
from aikd.config import EvaluateConfig
from aikd.data.pipeline import _bgr_to_rgb, decode_valid, plan_units, stable_hash, unit_batches
from aikd.data.schema import BBOX, IMAGE, IMAGE_ID, LANDMARKS, SUBJECT_ID
from aikd.models.transforms import to_input
from aikd.models.weights import load_model
from aikd.teachers import Scores, TeacherBatch, create_teacher


def condition_names(cfg: EvaluateConfig) -> list[str]:
    names = ["aligned"] + [f"misaligned_{s:g}" for s in cfg.misalignment]
    return names + (["box"] if cfg.box else [])


def condition_matrices(cfg: EvaluateConfig, name: str, landmarks: np.ndarray, boxes, hashes: np.ndarray,
                       size: int) -> np.ndarray:
    """(N, 2, 3) warps of one condition at output ``size``."""
    if name == "aligned":
        return similarity_batch(landmarks, template(size))
    if name == "box":
        return np.stack([box_matrix(b, size, cfg.box_margin) for b in boxes])
    strength = float(name.split("_", 1)[1])
    k = cfg.misalignment.index(strength)
    noisy = np.stack([perturb(lm, strength, np.random.default_rng([cfg.seed, k, int(h)]), cfg.misalignment_relative)
                      for lm, h in zip(landmarks, hashes, strict=True)])
    return similarity_batch(noisy, template(size))


class _Student:
    """A distilled student used as a FIQA model: its head's output is the quality."""

    higher_is_better = True
    needs_images = True

    def __init__(self, uri: str, device: torch.device):
        self.model, card = load_model(uri)
        self.model = self.model.to(device).eval()
        self.card, self.device, self.input_size = card, device, card.input_size

    @torch.no_grad()
    def score(self, batch: TeacherBatch):
        q = self.model(to_input(batch.aligned, self.card.mean, self.card.std, device=self.device))[1]
        return Scores(q.float().cpu().numpy(), {})


class EvalScorer:
    """Actor: FR model + FIQA models loaded once; scores every condition of each batch."""

    def __init__(self, cfg: EvaluateConfig):
        cv2.setNumThreads(1)
        self.cfg = cfg
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.fr, self.fr_card = load_model(cfg.fr_model)
        self.fr = self.fr.to(self.device).eval()
        self.models = {}
        for spec in cfg.models:
            if spec.teacher is not None:
                self.models[spec.name] = create_teacher(spec.teacher, **spec.options)
            else:
                self.models[spec.name] = _Student(spec.student, self.device)
        self.conditions = condition_names(cfg)

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
                if size not in crops:
                    m = condition_matrices(self.cfg, condition, lms, boxes, hashes, size)
                    crops[size] = _bgr_to_rgb(warp_batch(images, m, size)) if len(images) else np.zeros(
                        (0, size, size, 3), np.uint8)
                return crops[size]

            fr_in = to_input(crop(self.fr_card.input_size), self.fr_card.mean, self.fr_card.std, device=self.device)
            out[f"emb__{condition}"] = F.normalize(self.fr(fr_in).float(), dim=1).cpu().numpy()
            for name, model in self.models.items():
                tb = TeacherBatch(ids, out[SUBJECT_ID], crop(model.input_size), {})
                values = model.score(tb).values
                sign = 1.0 if model.higher_is_better else -1.0  # EDC wants higher = better
                out[f"q__{name}__{condition}"] = sign * np.asarray(values, np.float32)
        return out


def score_faces(cfg: EvaluateConfig) -> dict[str, np.ndarray]:
    """All columns for every usable face of the evaluation set, gathered on the driver."""
    from aikd.config import DataConfig

    units = plan_units(DataConfig(shards=cfg.shards))
    items = [{"uri": u.uri, "row_group": u.row_group} for u in units]
    ds = ray.data.from_items(items, override_num_blocks=len(items)).map_batches(
        EvalScorer, fn_constructor_kwargs={"cfg": cfg}, batch_size=1, batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=min(cfg.workers, len(items))), num_cpus=cfg.worker_cpus)
    batches = list(ds.iter_batches(batch_size=None, batch_format="numpy"))
    if not batches:
        raise ValueError(f"no usable faces in {cfg.shards}")
    out = {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}
    order = np.argsort(out[IMAGE_ID], kind="stable")  # a deterministic order, whatever Ray delivered
    return {k: v[order] for k, v in out.items()}
