"""Face detectors by name: each finds the faces in a batch of photos, with a box and 5 landmarks per face.

Landmarks are in the ArcFace template's order: the eye on the image's left first, then
the other eye, the nose tip, the mouth corner on the image's left, the other corner.
Boxes are ``(x1, y1, x2, y2)`` in pixels of the photo as decoded.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass

import numpy as np

from aikd.named import Named


@dataclass(frozen=True)
class Face:
    """One face found in one photo."""

    index: int  # its rank among the faces kept from its photo (0 = the first kept)
    box: np.ndarray  # (4,) float32: x1, y1, x2, y2
    score: float  # the detector's confidence, 0..1
    landmarks: np.ndarray  # (5, 2) float32, x then y, in the template's order


class Detector(abc.ABC):
    """What a detector is, as class attributes (read without building it; the first docstring line describes it)."""

    name: str = ""

    @abc.abstractmethod
    def detect(self, images: list[np.ndarray]) -> list[list[Face]]:
        """The faces of each photo (RGB uint8, HxWx3, sizes may differ), in the photo's order."""


DETECT_BATCH = 16  # photos per detector call: its canvas holds them all at once


def detect_decoded(detector: Detector, images: list[np.ndarray]) -> list[list[Face]]:
    """The faces of each image as aikd decodes it (BGR, :func:`aikd.data.decode.decode_image`), in order,
    ``DETECT_BATCH`` photos per detector call (detectors take RGB)."""
    found: list[list[Face]] = []
    for start in range(0, len(images), DETECT_BATCH):
        batch = images[start:start + DETECT_BATCH]
        found += detector.detect([np.ascontiguousarray(image[:, :, ::-1]) for image in batch])
    return found


def _load() -> None:
    from aikd.detect import mtcnn  # noqa: F401  (registration side effect)


_REGISTRY: Named[Detector] = Named("detector", _load)
register_detector = _REGISTRY.register
list_detectors = _REGISTRY.names
detector_class = _REGISTRY.get
create_detector = _REGISTRY.create
