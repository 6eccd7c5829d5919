"""The embedded default's faces look enough like faces for a real detector: the demo's data can go
through detection (ingest, `alignment: detect`, the `detected` condition) like a user's photos."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from aikd.data.synth import SynthConfig, generate_rows
from aikd.detect import create_detector


def _found(cfg: SynthConfig, detector) -> tuple[np.ndarray, np.ndarray]:
    """Per face: found or not, and the found landmarks' mean distance to the drawn ones over the eye distance."""
    found, error = [], []
    rows = list(generate_rows(cfg))  # the rows `aikd synth` stores: JPEG bytes and the drawn landmarks
    for start in range(0, len(rows), 16):
        batch = rows[start:start + 16]
        photos = [cv2.cvtColor(cv2.imdecode(np.frombuffer(r["image"], np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
                  for r in batch]
        for row, got in zip(batch, detector.detect(photos), strict=True):
            drawn = np.asarray(row["landmarks"], np.float32).reshape(5, 2)
            found.append(bool(got))
            eyes = np.linalg.norm(drawn[1] - drawn[0])
            error.append(np.linalg.norm(got[0].landmarks - drawn, axis=1).mean() / eyes if got else np.nan)
    return np.array(found), np.array(error)


@pytest.fixture(scope="module")
def detector():
    return create_detector("mtcnn", device="cpu")  # the default thresholds and minimum face size


def test_nine_in_ten_clean_synthetic_faces_are_found_where_they_were_drawn(detector):
    found, error = _found(SynthConfig(identities=30, samples_per_identity=4, seed=3, degraded_share=0.0), detector)
    assert found.mean() >= 0.9, f"{found.mean():.0%} of 120 clean faces found"
    assert np.nanmedian(error) < 0.1 and np.nanpercentile(error, 95) < 0.25, error


def test_degraded_faces_are_missed_more_often_than_clean_ones(detector):
    """Quality is what the detector sees too: blur, noise, occlusion and low contrast cost detections."""
    clean, _ = _found(SynthConfig(identities=20, samples_per_identity=4, seed=4, degraded_share=0.0), detector)
    degraded, _ = _found(SynthConfig(identities=20, samples_per_identity=4, seed=4, degraded_share=1.0), detector)
    assert degraded.mean() < clean.mean()
