"""Face detectors by name: each finds the faces in a batch of photos, with a box and 5 landmarks per face.

Landmarks are in the ArcFace template's order: the eye on the image's left first, then
the other eye, the nose tip, the mouth corner on the image's left, the other corner.
Boxes are ``(x1, y1, x2, y2)`` in pixels of the photo as decoded.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass

import numpy as np

from aikd.errors import ComponentError


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


_DETECTORS: dict[str, type[Detector]] = {}


def register_detector(name: str):
    def wrap(cls):
        if name in _DETECTORS:
            raise ComponentError(f"detector {name!r} registered twice")
        cls.name = name
        _DETECTORS[name] = cls
        return cls

    return wrap


def list_detectors() -> list[str]:
    _load()
    return sorted(_DETECTORS)


def detector_class(name: str) -> type[Detector]:
    _load()
    if name not in _DETECTORS:
        raise ComponentError(f"unknown detector {name!r}; valid: {', '.join(sorted(_DETECTORS))}")
    return _DETECTORS[name]


def create_detector(name: str, **options) -> Detector:
    """Build a registered detector; options that are None are dropped."""
    cls = detector_class(name)
    try:
        return cls(**{k: v for k, v in options.items() if v is not None})
    except (TypeError, ValueError) as err:
        raise ComponentError(f"bad options for detector {name!r}: {err}") from None


def _load() -> None:
    from aikd.detect import mtcnn  # noqa: F401  (registration side effect)
