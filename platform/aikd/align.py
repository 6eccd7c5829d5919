"""5-point face alignment: similarity transform to the ArcFace template, perturbation, box crop.

The transform is the least-squares similarity (rotation, uniform scale, translation)
from the 5 landmarks to the template, solved in closed form and vectorised over a batch
(a whole batch costs a few numpy operations). Warping is OpenCV's bilinear
``warpAffine`` with a zero border.
"""

from __future__ import annotations

import cv2
import numpy as np

from aikd.errors import AikdError

# ArcFace 112x112 template: left eye, right eye, nose tip, left mouth, right mouth (x, y).
ARCFACE_TEMPLATE = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float64,
)
TEMPLATE_SIZE = 112
MIN_POINT_DISTANCE = 1e-3  # pixels: closer landmarks are treated as coincident
# A landmark may lie beyond the image's edge (a face cut by the border keeps its extrapolated
# points), but not by more than this share of the image's width (x) or height (y): farther
# out, the aligned crop is mostly border, not the face.
OUTSIDE_MARGIN = 0.5


class AlignmentError(AikdError):
    """Landmarks from which no meaningful alignment can be computed."""


def template(size: int = TEMPLATE_SIZE) -> np.ndarray:
    """The ArcFace template scaled to a ``size`` x ``size`` output."""
    if size < 8:
        raise ValueError(f"output size must be >= 8, got {size}")
    return ARCFACE_TEMPLATE * (size / TEMPLATE_SIZE)


def _as_points(landmarks: np.ndarray) -> np.ndarray:
    pts = np.asarray(landmarks, dtype=np.float64)
    if pts.shape[-1] == 10:
        pts = pts.reshape(*pts.shape[:-1], 5, 2)
    if pts.shape[-2:] != (5, 2):
        raise AlignmentError(f"expected 5 landmarks as (..., 5, 2) or (..., 10), got shape {pts.shape}")
    return pts


def outside_image(landmarks: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Per face: True if a landmark lies more than ``OUTSIDE_MARGIN`` of the image's side beyond its edge.

    ``sizes`` holds each face's image (width, height), shape (N, 2).
    """
    pts = _as_points(landmarks).reshape(-1, 5, 2)
    wh = np.asarray(sizes, np.float64).reshape(-1, 1, 2)
    with np.errstate(invalid="ignore"):
        far = (pts < -OUTSIDE_MARGIN * wh) | (pts > (1.0 + OUTSIDE_MARGIN) * wh)
    return far.any(axis=(1, 2))


def degenerate_reason(landmarks: np.ndarray, sizes: np.ndarray | None = None) -> np.ndarray:
    """Per face: '' if usable, else why not (non-finite values, coincident points and, given each
    image's (width, height) as ``sizes``, points far outside the image)."""
    pts = _as_points(landmarks).reshape(-1, 5, 2)
    reasons = np.full(len(pts), "", dtype=object)
    finite = np.isfinite(pts).all(axis=(1, 2))
    reasons[~finite] = "non-finite landmarks"
    with np.errstate(invalid="ignore"):
        diff = pts[:, :, None, :] - pts[:, None, :, :]
        dist = np.where(np.eye(5, dtype=bool), np.inf, np.sqrt((diff**2).sum(-1)))
        coincident = dist.reshape(len(pts), 25).min(axis=1, initial=np.inf) < MIN_POINT_DISTANCE
    reasons[finite & coincident] = "coincident landmarks"
    if sizes is not None:
        reasons[finite & ~coincident & outside_image(pts, sizes)] = "landmarks outside the image"
    return reasons


def box_reason(bbox) -> str:
    """'' if ``bbox`` is a usable detector box (4 finite numbers, x1 < x2, y1 < y2), else why not."""
    if bbox is None:
        return "no box"
    try:
        box = np.asarray(bbox, np.float64).reshape(-1)
    except (TypeError, ValueError):
        return "invalid box"
    if len(box) != 4 or not np.isfinite(box).all() or box[2] <= box[0] or box[3] <= box[1]:
        return "invalid box"
    return ""


def similarity_batch(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity transforms mapping ``src`` (N,5,2) onto ``dst`` (5,2) or (N,5,2).

    Returns (N, 2, 3) matrices. With x' = a x - b y + tx and y' = b x + a y + ty, the
    centred normal equations give a and b directly (the 2-D case of Umeyama's method
    without reflection). Raises :class:`AlignmentError` for degenerate input.
    """
    src = _as_points(src).reshape(-1, 5, 2)
    dst = np.broadcast_to(np.asarray(dst, np.float64), src.shape)
    reasons = degenerate_reason(src)
    bad = np.flatnonzero(reasons != "")
    if bad.size:
        raise AlignmentError(f"{reasons[bad[0]]} (face {bad[0]} of the batch): {src[bad[0]].tolist()}")
    s_mean, d_mean = src.mean(1, keepdims=True), dst.mean(1, keepdims=True)
    sc, dc = src - s_mean, dst - d_mean
    norm = (sc**2).sum((1, 2))
    a = (sc * dc).sum((1, 2)) / norm
    b = (sc[..., 0] * dc[..., 1] - sc[..., 1] * dc[..., 0]).sum(1) / norm
    m = np.empty((len(src), 2, 3))
    m[:, 0, 0], m[:, 0, 1], m[:, 1, 0], m[:, 1, 1] = a, -b, b, a
    m[:, :, 2] = d_mean[:, 0] - np.einsum("nij,nj->ni", m[:, :, :2], s_mean[:, 0])
    return m


def similarity(src: np.ndarray, dst: np.ndarray | None = None, size: int = TEMPLATE_SIZE) -> np.ndarray:
    """One (2, 3) transform from 5 landmarks to ``dst`` (default: the template at ``size``)."""
    return similarity_batch(_as_points(src)[None], template(size) if dst is None else dst)[0]


def warp(image: np.ndarray, matrix: np.ndarray, size: int, out: np.ndarray | None = None) -> np.ndarray:
    """Bilinear warp to ``size`` x ``size`` with a zero border (into ``out`` when given)."""
    return cv2.warpAffine(image, np.asarray(matrix, np.float64), (size, size), dst=out, flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def warp_batch(images: list[np.ndarray], matrices: np.ndarray, size: int, out: np.ndarray | None = None) -> np.ndarray:
    """Warp images of any sizes into one (N, size, size, C) uint8 array."""
    channels = images[0].shape[2] if images and images[0].ndim == 3 else 1
    if out is None:
        out = np.empty((len(images), size, size, channels), np.uint8)
    for i, (image, m) in enumerate(zip(images, matrices, strict=True)):
        target = out[i] if channels > 1 else out[i, :, :, 0]
        warp(image, m, size, out=target)  # straight into the batch: no per-image copy
    return out


def warp_rgb(images: list[np.ndarray], matrices: np.ndarray, size: int) -> np.ndarray:
    """Warp decoded BGR sources to (N, size, size, 3) RGB crops, the models' channel order.

    The colour conversion runs on the small crops rather than the large sources, in
    place, as one SIMD pass over the whole batch.
    """
    out = np.empty((len(images), size, size, 3), np.uint8)
    if images:
        warp_batch(images, matrices, size, out=out)
        flat = out.reshape(-1, size, 3)
        cv2.cvtColor(flat, cv2.COLOR_BGR2RGB, dst=flat)
    return out


def align(image: np.ndarray, landmarks: np.ndarray, size: int = TEMPLATE_SIZE) -> np.ndarray:
    """The properly aligned ``size`` x ``size`` face."""
    return warp(image, similarity(landmarks, size=size), size)


def align_batch(images: list[np.ndarray], landmarks: np.ndarray, size: int = TEMPLATE_SIZE) -> np.ndarray:
    return warp_batch(images, similarity_batch(landmarks, template(size)), size)


def inter_ocular(landmarks: np.ndarray) -> np.ndarray:
    pts = _as_points(landmarks)
    return np.linalg.norm(pts[..., 1, :] - pts[..., 0, :], axis=-1)


def perturb(landmarks: np.ndarray, strength: float, rng: np.random.Generator, relative: bool = False) -> np.ndarray:
    """Add U(-strength, +strength) to each of the 10 coordinates (AI-KD's misalignment).

    ``strength`` is in source pixels (reference: 3), or with ``relative=True`` a fraction
    of each face's inter-ocular distance, so one setting means the same on small and
    large source images. Output has the input's shape.
    """
    if strength < 0:
        raise ValueError(f"misalignment strength must be >= 0, got {strength}")
    arr = np.asarray(landmarks, np.float64)
    noise = rng.uniform(-1.0, 1.0, arr.shape)
    scale = strength
    if relative:
        iod = inter_ocular(arr)
        scale = strength * iod.reshape(*iod.shape, *([1] * (arr.ndim - iod.ndim)))
    return arr + noise * scale


def box_square(bbox: np.ndarray, margin: float = 0.0) -> np.ndarray:
    """The square around a box's centre with side max(w, h) * (1 + margin): x1, y1, side."""
    x1, y1, x2, y2 = np.asarray(bbox, np.float64)
    if not np.all(np.isfinite([x1, y1, x2, y2])) or x2 <= x1 or y2 <= y1:
        raise AlignmentError(f"invalid box {list(map(float, (x1, y1, x2, y2)))}: need finite x1 < x2, y1 < y2")
    side = max(x2 - x1, y2 - y1) * (1.0 + margin)
    return np.array([(x1 + x2 - side) / 2, (y1 + y2 - side) / 2, side])


def box_matrix(bbox: np.ndarray, size: int, margin: float = 0.0) -> np.ndarray:
    x0, y0, side = box_square(bbox, margin)
    s = size / side
    return np.array([[s, 0.0, -x0 * s], [0.0, s, -y0 * s]])


def box_align(image: np.ndarray, bbox: np.ndarray, size: int = TEMPLATE_SIZE, margin: float = 0.0) -> np.ndarray:
    """Crop the detector box (squared, with margin; outside the image is black) and resize.

    The "other alignment procedure" of the evaluation: no landmarks involved.
    """
    return warp(image, box_matrix(bbox, size, margin), size)
