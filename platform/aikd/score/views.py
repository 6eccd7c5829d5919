"""Views: the ways a face is cut out of its image, what each needs of a face, and the columns they key.

A scoring job has one view, the alignment its spec names (``landmarks``, ``box``, or
``aligned``: a pre-aligned crop resized); an evaluation has one per condition
(``aligned``, ``misaligned_<s>``, ``box``, ``detected``: aligned by a face detector's own
landmarks, a second, real landmark source). The Aligner warps every face once per view
and input size; the Scorer runs every model on each view's crops. Pure functions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from aikd.align import box_matrix, box_reason, degenerate_reason, perturb, similarity_batch, template
from aikd.config import Condition, EvaluateConfig, ScoreConfig

Kind = Literal["landmarks", "misaligned", "box", "resized", "detected"]


@dataclass(frozen=True)
class View:
    """One way of cutting a face out of its image.

    ``name`` keys the view's columns ('': a job's only view, whose columns carry no view
    name). A misaligned view's noise is seeded by (``seed``, ``index``, the face's id
    hash), so every model sees the same misaligned crop, whatever the batch.
    """

    name: str
    kind: Kind
    strength: float = 0.0  # misaligned: landmark noise (pixels, or a share of the eye distance if relative)
    index: int = 0  # misaligned: the strength's position among the conditions
    relative: bool = False
    margin: float = 0.0  # box: side * (1 + margin)
    seed: int = 0


def condition_view(cfg: EvaluateConfig, condition: Condition) -> View:
    kind: Kind = {"aligned": "landmarks", "misaligned": "misaligned", "box": "box",
                  "detected": "detected"}[condition.kind]
    return View(condition.name, kind, condition.strength or 0.0, condition.index, cfg.misalignment_relative,
                cfg.box_margin, cfg.seed)


def views_of(cfg: ScoreConfig | EvaluateConfig) -> list[View]:
    """A job's views: an evaluation's conditions in report order, or scoring's one alignment."""
    if isinstance(cfg, EvaluateConfig):
        return [condition_view(cfg, c) for c in cfg.conditions]
    # detect: each face found becomes a row with the detector's landmarks (:func:`aikd.score.actors.found_faces`)
    kind: Kind = {"landmarks": "landmarks", "box": "box", "aligned": "resized", "detect": "landmarks"}[cfg.alignment]
    return [View("", kind, margin=cfg.box_margin)]


def crop_column(size: int, view: str = "") -> str:
    return f"crop_{size}" + (f"__{view}" if view else "")


def is_crop_column(name: str) -> bool:
    return name.startswith("crop_")


def quality_column(model: str, view: str = "") -> str:
    return f"q__{model}" + (f"__{view}" if view else "")


def embedding_column(view: str) -> str:
    return f"emb__{view}"


def needs(views: list[View]) -> list[str]:
    """What the views need of a face, in view order: 'landmarks' and/or 'box' (a resized view needs neither;
    a detected view, the landmarks that say which of the faces found is this one)."""
    wanted = {"landmarks": "landmarks", "misaligned": "landmarks", "box": "box", "resized": None,
              "detected": "landmarks"}
    return list(dict.fromkeys(w for v in views if (w := wanted[v.kind])))


def reject_reason(views: list[View], image: np.ndarray | None, landmarks: np.ndarray, bbox, reason: str) -> str:
    """'' if every view can cut the face out of ``image``, else why not (``reason``: why it was not decoded)."""
    if reason:
        return reason
    if image is None:
        return "undecodable image"
    for need in needs(views):
        if need == "landmarks":
            why = degenerate_reason(landmarks[None], np.array([[image.shape[1], image.shape[0]]]))[0]
        else:
            why = box_reason(bbox)
        if why:
            return str(why)
    return ""


def view_matrices(view: View, size: int, landmarks: np.ndarray, boxes: list, shapes: list[tuple[int, ...]],
                  hashes: np.ndarray, detected: np.ndarray | None = None) -> np.ndarray:
    """(N, 2, 3) warps of the faces under ``view`` at output ``size``.

    ``landmarks`` (N, 10), ``boxes``, the images' ``shapes`` and the ``detected``
    landmarks (N, 10) are what the view's kind reads; ``hashes`` (each id's
    :func:`aikd.data.split.stable_hash` under ``view.seed``) seed a misaligned view's noise.
    """
    if view.kind == "landmarks":
        return similarity_batch(landmarks, template(size))
    if view.kind == "detected":
        return similarity_batch(detected, template(size))
    if view.kind == "box":
        return np.stack([box_matrix(np.asarray(b, np.float64), size, view.margin) for b in boxes])
    if view.kind == "resized":  # a pre-aligned crop: scaled to the model's input
        return np.stack([np.array([[size / s[1], 0.0, 0.0], [0.0, size / s[0], 0.0]]) for s in shapes])
    rngs = (np.random.default_rng([view.seed, view.index, int(h)]) for h in hashes)
    noisy = np.stack([perturb(lm, view.strength, rng, view.relative) for lm, rng in zip(landmarks, rngs, strict=True)])
    return similarity_batch(noisy, template(size))


def matching_face(faces: list, landmarks: np.ndarray) -> np.ndarray | str:
    """The landmarks (10,) of the detected face that is the one ``landmarks`` (10,) place, or why there is none.

    It is the face whose landmarks lie nearest on average, and it must lie within half the
    eye distance of the given ones: a detector that found only another face in the photo
    has not found this one.
    """
    if not faces:
        return "no face detected"
    given = np.asarray(landmarks, np.float64).reshape(5, 2)
    distances = [float(np.linalg.norm(f.landmarks - given, axis=1).mean()) for f in faces]
    best = int(np.argmin(distances))
    if distances[best] > 0.5 * max(float(np.linalg.norm(given[1] - given[0])), 1.0):
        return "no face detected at the given landmarks"
    return faces[best].landmarks.astype(np.float64).reshape(10)
