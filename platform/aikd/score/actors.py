"""The two actor stages of a scoring job: faces to crops (CPU), crops to qualities (the models).

Each face is read, decoded and warped once per input size the models take; every model
of that size scores the same crop. A face that cannot be scored keeps its row with a
reason (and a blank crop), so the driver counts rows in = rows scored + rejects.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import cv2
import numpy as np
import torch

from aikd.align import box_matrix, box_reason, degenerate_reason, similarity_batch, template, warp_rgb
from aikd.config import ScoreConfig
from aikd.data.pipeline import decode_image
from aikd.data.schema import BBOX, IMAGE, IMAGE_ID, LANDMARKS
from aikd.errors import AikdError
from aikd.models.weights import export_onnx, load_model, preprocess_of
from aikd.registry import ONNX_FILE
from aikd.runtime import actor_device
from aikd.score.inputs import read_unit
from aikd.storage import Location, resolve


def crop_column(size: int) -> str:
    return f"crop_{size}"


def _matrix(cfg: ScoreConfig, image: np.ndarray, bbox, size: int) -> np.ndarray:
    """One face's warp when it has no landmarks: its box, or the whole (pre-aligned) image."""
    if cfg.alignment == "box":
        return box_matrix(np.asarray(bbox, np.float64), size, cfg.box_margin)
    h, w = image.shape[:2]  # a pre-aligned crop: resized to the model's input
    return np.array([[size / w, 0.0, 0.0], [0.0, size / h, 0.0]])


def _why_not(cfg: ScoreConfig, image: np.ndarray | None, landmarks: np.ndarray, bbox, reason: str) -> str:
    """'' if the face can be aligned as the spec says, else the reason (``reason``: why it was not decoded)."""
    if reason:
        return reason
    if image is None:
        return "undecodable image"
    if cfg.alignment == "landmarks":
        return degenerate_reason(landmarks[None], np.array([[image.shape[1], image.shape[0]]]))[0] or ""
    if cfg.alignment == "box":
        return box_reason(bbox)
    return ""


class Aligner:
    """Actor: one work unit in, its faces as crops (one column per input size) with reasons."""

    def __init__(self, cfg: ScoreConfig, sizes: list[int]):
        cv2.setNumThreads(1)
        self.cfg, self.sizes = cfg, sorted(set(sizes))

    def __call__(self, items: dict) -> dict:
        unit = {k: v[0] for k, v in items.items()}
        faces = read_unit(unit)
        # a face already rejected (unreadable, a duplicate) is not decoded
        decoded = [decode_image(b) if not why else (None, why) for b, why in zip(faces[IMAGE], faces["reason"],
                                                                                strict=True)]
        images = [image for image, _ in decoded]
        reasons = [_why_not(self.cfg, img, lm, box, why) for (img, why), lm, box in
                   zip(decoded, faces[LANDMARKS], faces[BBOX], strict=True)]
        ok = [i for i, why in enumerate(reasons) if not why]
        out = {"file": np.full(len(reasons), unit["file"], dtype=object), IMAGE_ID: faces[IMAGE_ID],
               "reason": np.asarray(reasons, dtype=object)}
        for size in self.sizes:
            crops = np.zeros((len(reasons), size, size, 3), np.uint8)
            if ok:
                crops[ok] = warp_rgb([images[i] for i in ok], self.matrices(faces, images, ok, size), size)
            out[crop_column(size)] = crops
        return out


    def matrices(self, faces: dict, images: list, ok: list[int], size: int) -> np.ndarray:
        if self.cfg.alignment == "landmarks":  # one batched least-squares fit
            return similarity_batch(faces[LANDMARKS][ok], template(size))
        return np.stack([_matrix(self.cfg, images[i], faces[BBOX][i], size) for i in ok])


class _TorchQuality:
    def __init__(self, model: torch.nn.Module, device: torch.device):
        self.model, self.device = model.to(device).eval(), device
        self.preprocess = preprocess_of(model)

    @torch.no_grad()
    def __call__(self, crops: np.ndarray) -> np.ndarray:
        return self.model(self.preprocess(crops, self.device))[1].float().cpu().numpy().reshape(-1)


class _OnnxQuality:
    """The model in ONNX Runtime: a registered version's checked ``model.onnx``, else exported here."""

    def __init__(self, model: torch.nn.Module, threads: int, registered: Location):
        import onnxruntime as ort

        self.preprocess = preprocess_of(model)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        if registered.exists():  # checked against these weights when the version was registered
            self.session = ort.InferenceSession(registered.read_bytes(), options, providers=["CPUExecutionProvider"])
            return
        with tempfile.TemporaryDirectory() as tmp:
            path = str(Path(tmp) / "model.onnx")
            export_onnx(model, path)
            self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])

    def __call__(self, crops: np.ndarray) -> np.ndarray:
        x = self.preprocess(crops).contiguous().numpy()
        return self.session.run(["quality"], {"image": x})[0].reshape(-1)


def backend_for(cfg: ScoreConfig, device: torch.device) -> str:
    if cfg.backend != "auto":
        return cfg.backend
    return "torch" if device.type == "cuda" else "onnx"


class Scorer:
    """Actor: every model on the crops of its input size; NaN where the face was rejected."""

    def __init__(self, cfg: ScoreConfig, models: list[dict]):
        self.cfg, self.device = cfg, actor_device()
        self.backend = backend_for(cfg, self.device)
        if self.backend == "onnx" and self.device.type == "cuda":
            raise AikdError("backend onnx runs on CPU actors: set backend: torch (or auto) for GPU actors")
        threads = cfg.scorer_threads
        if self.device.type == "cpu":
            torch.set_num_threads(threads)
        self.models = []
        for spec in models:
            model, card = load_model(spec["files"])
            if card.kind != "student":
                raise AikdError(f"model {spec['name']}: {spec['uri']} is a {card.kind}, not a student with a "
                                f"quality head")
            run = (_TorchQuality(model, self.device) if self.backend == "torch"
                   else _OnnxQuality(model, threads, resolve(spec["files"]).join(ONNX_FILE)))
            self.models.append((spec["name"], card.input_size, run))

    def __call__(self, batch: dict) -> dict:
        ok = np.flatnonzero(batch["reason"] == "")
        out = {"file": batch["file"], IMAGE_ID: batch[IMAGE_ID], "reason": batch["reason"]}
        for name, size, run in self.models:
            quality = np.full(len(batch[IMAGE_ID]), np.nan, np.float32)
            crops = batch[crop_column(size)]
            for start in range(0, len(ok), self.cfg.batch_size):
                rows = ok[start:start + self.cfg.batch_size]
                quality[rows] = run(crops[rows])
            out[f"q__{name}"] = quality
        return out
