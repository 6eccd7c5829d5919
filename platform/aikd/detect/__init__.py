"""Face detectors: photos in, faces with a box and 5 landmarks out (mtcnn)."""

from aikd.detect.base import (
    Detector,
    Face,
    create_detector,
    detect_decoded,
    detector_class,
    list_detectors,
    register_detector,
)

__all__ = ["Detector", "Face", "create_detector", "detect_decoded", "detector_class", "list_detectors",
           "register_detector"]
