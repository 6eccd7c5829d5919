"""The two actor stages that score faces, for the scoring job and the evaluation alike.

    Aligner: a work unit's faces read, decoded once and warped once per view and input
             size (CPU) -> crop columns, with a reason for each face that cannot be used
    Scorer:  every quality model (students through torch or ONNX Runtime, teachers by
             name) and, for an evaluation, the FR model, on each view's crops
             -> ``q__<model>[__<view>]`` and ``emb__<view>`` columns

A face that cannot be scored keeps its row with a reason (and blank crops, NaN scores),
so a job counts rows in = rows scored + rejects. Scoring runs the stages as two pools
(:func:`aikd.actor_pool.then_actors`); evaluation runs both in one actor
(:class:`AlignAndScore`) on its one pool. What each job asks of them (views, models,
backend) is read from its spec by :mod:`aikd.score.setup`.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from aikd.align import warp_rgb
from aikd.config import EvaluateConfig, ScoreConfig
from aikd.data.pipeline import decode_image
from aikd.data.schema import BBOX, IMAGE, IMAGE_ID, LANDMARKS, SUBJECT_ID
from aikd.data.split import stable_hash
from aikd.detect import Detector, create_detector, detect_decoded
from aikd.errors import AikdError
from aikd.models.weights import export_onnx, load_model, preprocess_of
from aikd.registry import ONNX_FILE
from aikd.runtime import actor_device
from aikd.score.inputs import ORDER, read_unit
from aikd.score.setup import ModelSource, backend_for, model_sources, settings_of
from aikd.score.views import (
    View,
    crop_column,
    embedding_column,
    is_crop_column,
    matching_face,
    quality_column,
    reject_reason,
    view_matrices,
    views_of,
)
from aikd.storage import Location, resolve
from aikd.teachers import TeacherBatch, create_teacher

__all__ = ["AlignAndScore", "Aligner", "Scorer", "backend_for", "crop_column"]


def detected_landmarks(detector: Detector, images: list, landmarks: np.ndarray,
                       reasons: list[str]) -> tuple[np.ndarray, list[str]]:
    """Each usable face's landmarks as ``detector`` finds them in its image ((N, 10), NaN where not found), and
    the reasons, with the faces it did not find added."""
    found, reasons = np.full((len(images), 10), np.nan), list(reasons)
    todo = [i for i, why in enumerate(reasons) if not why]
    for i, faces in zip(todo, detect_decoded(detector, [images[i] for i in todo]), strict=True):
        match = matching_face(faces, landmarks[i])
        if isinstance(match, str):
            reasons[i] = match
        else:
            found[i] = match
    return found, reasons


def decode_faces(faces: dict) -> list[tuple[np.ndarray | None, str]]:
    """Each face's image decoded (BGR), or why not; a face already rejected (unreadable, a duplicate) is not."""
    return [decode_image(b) if not why else (None, why) for b, why in zip(faces[IMAGE], faces["reason"], strict=True)]


# what a scoring job with alignment: detect adds to each row: the face the detector found
FACE_BOX, FACE_LANDMARKS, DETECTOR_SCORE, SOURCE = "face_box", "face_landmarks", "detector_score", "source"


def found_faces(faces: dict, detector: Detector) -> tuple[dict, list]:
    """A row per face the detector finds in each photo (``<image_id>#<k>``, its landmarks and box), and the rows'
    decoded images. A photo with no face, or one that does not decode, stays one row with its reason.
    ``source`` is each row's photo (its position in ``faces``)."""
    decoded = decode_faces(faces)
    usable = [i for i, (image, _) in enumerate(decoded) if image is not None]
    found = dict(zip(usable, detect_decoded(detector, [decoded[i][0] for i in usable]), strict=True))
    rows: list[tuple] = []  # (photo, id, landmarks, box, score, reason)
    for i, (image, why) in enumerate(decoded):
        ident = str(faces[IMAGE_ID][i])
        if image is None or not found.get(i):
            rows.append((i, ident, np.full(10, np.nan), np.full(4, np.nan), np.nan, why or "no face detected"))
            continue
        rows += [(i, f"{ident}#{f.index}", f.landmarks.reshape(10), f.box, f.score, "") for f in found[i]]
    photo = np.asarray([r[0] for r in rows], np.int64)
    out = {IMAGE_ID: np.asarray([r[1] for r in rows], dtype=object), SUBJECT_ID: faces[SUBJECT_ID][photo],
           IMAGE: [faces[IMAGE][i] for i in photo], "reason": [r[5] for r in rows],
           LANDMARKS: np.stack([r[2] for r in rows]).astype(np.float64) if rows else np.zeros((0, 10)),
           BBOX: [None] * len(rows), SOURCE: photo,
           FACE_BOX: np.stack([r[3] for r in rows]).astype(np.float32) if rows else np.zeros((0, 4), np.float32),
           DETECTOR_SCORE: np.asarray([r[4] for r in rows], np.float32)}
    out[FACE_LANDMARKS] = out[LANDMARKS].astype(np.float32)
    return out, [(decoded[i][0], r[5]) for i, r in zip(photo, rows, strict=True)]


def align_faces(faces: dict, views: list[View], sizes: list[int], detector: Detector | None = None,
                decoded: list | None = None) -> dict:
    """Decode each face once (unless ``decoded`` already has it) and warp it under every view at every size; a
    reason where it cannot be.

    A ``detected`` view needs ``detector``: a face it does not find is rejected under every
    view, so that an evaluation compares its conditions on the same faces."""
    decoded = decode_faces(faces) if decoded is None else decoded
    images = [image for image, _ in decoded]
    reasons = [reject_reason(views, img, lm, box, why) for (img, why), lm, box in
               zip(decoded, faces[LANDMARKS], faces[BBOX], strict=True)]
    detected = None
    if any(v.kind == "detected" for v in views):
        detected, reasons = detected_landmarks(detector, images, faces[LANDMARKS], reasons)
    ok = [i for i, why in enumerate(reasons) if not why]
    out = {IMAGE_ID: faces[IMAGE_ID], SUBJECT_ID: faces[SUBJECT_ID], "reason": np.asarray(reasons, dtype=object)}
    used = [images[i] for i in ok]
    landmarks, boxes, shapes = faces[LANDMARKS][ok], [faces[BBOX][i] for i in ok], [im.shape for im in used]
    seeds = {v.seed for v in views if v.kind == "misaligned"}
    hashes = {seed: stable_hash(faces[IMAGE_ID][ok], seed) for seed in seeds}
    for view in views:
        for size in sizes:
            crops = np.zeros((len(reasons), size, size, 3), np.uint8)
            if ok:
                m = view_matrices(view, size, landmarks, boxes, shapes, hashes.get(view.seed),
                                  None if detected is None else detected[ok])
                crops[ok] = warp_rgb(used, m, size)
            out[crop_column(size, view.name)] = crops
    return out


class Aligner:
    """Actor: one work unit in, its faces as crops (a column per view and input size) with reasons."""

    def __init__(self, cfg: ScoreConfig | EvaluateConfig, sizes: list[int]):
        cv2.setNumThreads(1)  # Ray already runs one actor per core
        self.views, self.sizes = views_of(cfg), sorted(set(sizes))
        # an evaluation's detected condition, or a scoring job that finds the faces of raw photos
        self.find = isinstance(cfg, ScoreConfig) and cfg.alignment == "detect"
        spec = cfg.detector if self.find else getattr(cfg, "detected", None)
        self.detector = create_detector(spec.name, **spec.options) if spec is not None else None

    def __call__(self, items: dict) -> dict:
        unit = {k: v[0] for k, v in items.items()}
        faces = read_unit(unit)
        source, decoded, found = np.arange(len(faces[IMAGE_ID]), dtype=np.int64), None, {}
        if self.find:  # a row per face found; ``order`` stays its photo's plan position
            faces, decoded = found_faces(faces, self.detector)
            source, found = faces[SOURCE], {k: faces[k] for k in (FACE_BOX, FACE_LANDMARKS, DETECTOR_SCORE)}
        out = align_faces(faces, self.views, self.sizes, None if self.find else self.detector, decoded)
        n = len(out["reason"])
        return {"file": np.full(n, unit.get("file", ""), dtype=object),
                ORDER: int(unit.get("start", 0)) + source} | out | found


class _TorchQuality:
    def __init__(self, model: torch.nn.Module, device: torch.device):
        self.model, self.device = model.to(device).eval(), device
        self.preprocess = preprocess_of(model)

    @torch.no_grad()
    def __call__(self, crops: np.ndarray, ids, subjects) -> np.ndarray:
        return self.model(self.preprocess(crops, self.device))[1].float().cpu().numpy().reshape(-1)


class _OnnxQuality:
    """The model in ONNX Runtime: a registered version's checked ``model.onnx``, else exported here."""

    def __init__(self, model: torch.nn.Module, threads: int, registered: Location):
        import onnxruntime as ort

        self.preprocess = preprocess_of(model)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        # idle pool threads sleep instead of spinning: the cores are shared with the decode actors, and a spinning
        # wait burns the CPU they need (bench/score.py, 32,000 faces on 2 CPUs: 329 -> 369 faces/s)
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if registered.exists():  # checked against these weights when the version was registered
            self.session = ort.InferenceSession(registered.read_bytes(), options, providers=["CPUExecutionProvider"])
            return
        with tempfile.TemporaryDirectory() as tmp:
            path = str(Path(tmp) / "model.onnx")
            export_onnx(model, path)
            self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])

    def __call__(self, crops: np.ndarray, ids, subjects) -> np.ndarray:
        x = self.preprocess(crops).contiguous().numpy()
        return self.session.run(["quality"], {"image": x})[0].reshape(-1)


class _TeacherQuality:
    """A teacher as a quality model: higher is better whatever its own direction."""

    def __init__(self, name: str, options: dict):
        self.teacher = create_teacher(name, **options)  # on this actor's device
        self.sign = 1.0 if self.teacher.higher_is_better else -1.0

    def __call__(self, crops: np.ndarray | None, ids, subjects) -> np.ndarray:
        values = self.teacher.score(TeacherBatch(ids, subjects, crops, {})).values
        return self.sign * np.asarray(values, np.float32)


class _Embedder:
    """The FR model: unit-length embeddings of the crops it is fed."""

    def __init__(self, uri: str, device: torch.device):
        model, card = load_model(uri)
        self.model, self.device, self.preprocess = model.to(device).eval(), device, preprocess_of(model)
        self.size, self.dim = self.preprocess.input_size, card.embedding_dim

    @torch.no_grad()
    def __call__(self, crops: np.ndarray) -> np.ndarray:
        return F.normalize(self.model(self.preprocess(crops, self.device)).float(), dim=1).cpu().numpy()


def quality_model(source: ModelSource, backend: str, threads: int | None, device: torch.device):
    """(input size, None for a model that reads no images; the callable that scores a chunk of faces).

    Every callable takes (crops or None, image ids, subject ids): a teacher may need the
    ids (an external table, CR-FIQA's classes), a student only the crops.
    """
    if source.teacher is not None:
        run = _TeacherQuality(source.teacher, source.options)
        if run.teacher.needs_images and run.teacher.input_size is None:
            raise AikdError(f"model {source.name}: teacher {source.teacher} reads images but names no input size")
        return (run.teacher.input_size if run.teacher.needs_images else None), run
    model, card = load_model(source.student)
    if card.kind != "student":
        raise AikdError(f"model {source.name}: {source.uri} is a {card.kind}, not a student with a quality head")
    if backend == "torch":
        return card.input_size, _TorchQuality(model, device)
    return card.input_size, _OnnxQuality(model, threads or 1, resolve(source.student).join(ONNX_FILE))


def spread(n: int, rows: np.ndarray, values: np.ndarray) -> np.ndarray:
    """``values`` of ``rows`` placed among ``n`` rows, NaN elsewhere (float32)."""
    values = np.asarray(values, np.float32)
    out = np.full((n, *values.shape[1:]), np.nan, np.float32)
    out[rows] = values
    return out


class Scorer:
    """Actor: every model on the crops of each view at its input size; NaN where the face was rejected.

    ``models`` are a scoring job's resolved models (name, files, uri); an evaluation's
    come from its spec. Every column out but the crops is the column in.
    """

    def __init__(self, cfg: ScoreConfig | EvaluateConfig, models: list[dict] | None = None):
        settings = settings_of(cfg)
        self.device = actor_device()  # the GPU Ray gave this actor, else the CPU
        self.backend, self.batch_size = backend_for(cfg, self.device), settings.batch_size
        if self.backend == "onnx" and self.device.type == "cuda":
            raise AikdError("backend onnx runs on CPU actors: set backend: torch (or auto) for GPU actors")
        if self.device.type == "cpu" and settings.threads:
            torch.set_num_threads(settings.threads)
        self.views = [v.name for v in views_of(cfg)]
        self.embed = _Embedder(settings.fr_model, self.device) if settings.fr_model else None
        self.models = [(s.name, *quality_model(s, self.backend, settings.threads, self.device))
                       for s in model_sources(cfg, models)]

    @property
    def sizes(self) -> list[int]:
        """The input sizes the crops must come in."""
        sizes = {size for _, size, _ in self.models if size} | ({self.embed.size} if self.embed else set())
        return sorted(sizes)

    def __call__(self, batch: dict) -> dict:
        n = len(batch[IMAGE_ID])
        ok = np.flatnonzero(batch["reason"] == "")
        chunks = [ok[s:s + self.batch_size] for s in range(0, len(ok), self.batch_size)]
        out = {k: v for k, v in batch.items() if not is_crop_column(k)}
        for view in self.views:
            if self.embed is not None:
                crops = batch[crop_column(self.embed.size, view)]
                out[embedding_column(view)] = spread(n, ok, np.concatenate(
                    [self.embed(crops[rows]) for rows in chunks]) if chunks else np.zeros((0, self.embed.dim)))
            for name, size, run in self.models:
                crops = batch[crop_column(size, view)] if size else None
                values = [run(crops[rows] if size else None, batch[IMAGE_ID][rows], batch[SUBJECT_ID][rows])
                          for rows in chunks]
                out[quality_column(name, view)] = spread(n, ok, np.concatenate(values) if values else np.zeros(0))
        return out


class AlignAndScore:
    """Actor: both stages in one process, for a job with one pool (evaluation): a unit in, its scores out."""

    def __init__(self, cfg: ScoreConfig | EvaluateConfig, models: list[dict] | None = None):
        self.scorer = Scorer(cfg, models)
        self.aligner = Aligner(cfg, self.scorer.sizes)

    def __call__(self, items: dict) -> dict:
        return self.scorer(self.aligner(items))
