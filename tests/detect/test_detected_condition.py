"""The evaluation's ``detected`` condition: faces aligned by a detector's own landmarks, found in their photos."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from aikd.align import similarity_batch, template, warp_rgb
from aikd.config import Condition, EvaluateConfig, FIQASpec
from aikd.data.schema import BBOX, IMAGE, IMAGE_ID, LANDMARKS, SUBJECT_ID
from aikd.detect import create_detector
from aikd.errors import ConfigError
from aikd.score.actors import align_faces, detected_landmarks
from aikd.score.views import views_of
from aikd.spec import validate

skimage_data = pytest.importorskip("skimage.data", reason="scikit-image ships the real photo these tests use")
SIZE = 112


def config(**kw) -> EvaluateConfig:
    return EvaluateConfig(shards=["x"], out="y", fr_model="z", models=[FIQASpec(name="n", teacher="norm")], **kw)


def test_a_detector_adds_the_detected_condition_last():
    cfg = config(misalignment=[3.0], detected={"name": "mtcnn", "options": {"min_face_size": 40}})
    assert cfg.conditions[-1] == Condition("detected") and cfg.conditions[-1].name == "detected"
    assert [v.kind for v in views_of(cfg)] == ["landmarks", "misaligned", "box", "detected"]
    assert Condition("detected") not in config().conditions  # off unless asked for


def test_an_unknown_detector_is_refused_by_name():
    with pytest.raises(ConfigError, match="unknown detector 'retina'; valid: mtcnn"):
        validate(EvaluateConfig, {"shards": ["x"], "out": "y", "fr_model": "z", "models": [{"name": "n",
                 "teacher": "norm"}], "detected": {"name": "retina"}}, "spec")


@pytest.fixture(scope="module")
def photos():
    """The portrait, the same shifted inside a larger frame, and a blank photo; as shards store them (PNG)."""
    face = skimage_data.astronaut()
    framed = np.zeros((600, 700, 3), np.uint8)
    framed[50:562, 120:632] = face
    blank = np.full((300, 300, 3), 128, np.uint8)
    return [face, framed, blank]


def _faces(photos, landmarks) -> dict:
    encoded = [cv2.imencode(".png", p[:, :, ::-1])[1].tobytes() for p in photos]  # RGB photo -> PNG
    n = len(photos)
    return {IMAGE_ID: np.array([f"p{i}" for i in range(n)], dtype=object),
            SUBJECT_ID: np.array(["s"] * n, dtype=object),
            IMAGE: np.array(encoded, dtype=object), LANDMARKS: np.asarray(landmarks, np.float64),
            BBOX: [None] * n, "reason": np.array([""] * n, dtype=object)}


def test_detected_faces_are_warped_by_the_detectors_landmarks_and_missing_ones_rejected(photos):
    detector = create_detector("mtcnn", device="cpu")
    [[truth]] = detector.detect([photos[0]])
    given = truth.landmarks + np.array([[3.0, -2.0]])  # a shard's landmarks: near, not equal to the detector's
    landmarks = [given.reshape(10), (given + [120, 50]).reshape(10), given.reshape(10),
                 (given + [200, 200]).reshape(10)]
    cfg = config(misalignment=[], box=False, detected={"name": "mtcnn"})
    out = align_faces(_faces(photos + [photos[0]], landmarks), views_of(cfg), [SIZE], detector)
    assert list(out["reason"]) == ["", "", "no face detected", "no face detected at the given landmarks"]
    crops = out[f"crop_{SIZE}__detected"]
    expected = warp_rgb([photos[0][:, :, ::-1]], similarity_batch(truth.landmarks.reshape(1, 10), template(SIZE)),
                        SIZE)[0]
    assert np.abs(crops[0].astype(int) - expected.astype(int)).mean() < 1.0  # by the detector's landmarks
    given_crop = out[f"crop_{SIZE}__aligned"][0]
    assert np.abs(crops[0].astype(int) - given_crop.astype(int)).mean() > 3.0  # not by the shard's
    # a face the detector missed is rejected under every condition: blank crops everywhere
    assert not crops[2].any() and not out[f"crop_{SIZE}__aligned"][2].any()


def test_the_detector_finds_each_face_where_its_photo_has_it(photos):
    detector = create_detector("mtcnn", device="cpu")
    [[truth]] = detector.detect([photos[0]])
    given = np.stack([truth.landmarks.reshape(10), (truth.landmarks + [120, 50]).reshape(10),
                      truth.landmarks.reshape(10)])
    bgr = [np.ascontiguousarray(p[:, :, ::-1]) for p in photos]
    found, reasons = detected_landmarks(detector, bgr, given, ["", "", ""])
    assert reasons == ["", "", "no face detected"]
    np.testing.assert_allclose(found[0], truth.landmarks.reshape(10), atol=1e-3)
    np.testing.assert_allclose(found[1], (truth.landmarks + [120, 50]).reshape(10), atol=2.0)  # moved with the face
    assert np.isnan(found[2]).all()
    # a face rejected before (undecodable, say) is not looked for
    _, kept = detected_landmarks(detector, bgr, given, ["undecodable image", "", ""])
    assert kept[0] == "undecodable image"
