"""MTCNN on real photos: each face found once, landmarks in the template's order, usable for alignment."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from aikd.align import align, similarity, template
from aikd.detect import create_detector, list_detectors
from aikd.detect.mtcnn import in_slices, nms
from aikd.errors import ComponentError

skimage_data = pytest.importorskip("skimage.data", reason="scikit-image ships the real photos these tests use")


@pytest.fixture(scope="module")
def detector():
    return create_detector("mtcnn", device="cpu")


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return skimage_data.astronaut()  # 512x512 RGB, one face


def test_mtcnn_is_a_registered_detector():
    assert "mtcnn" in list_detectors()


def test_the_one_face_of_a_portrait_is_found_once_with_its_landmarks_inside_its_box(detector, astronaut):
    [faces] = detector.detect([astronaut])
    assert len(faces) == 1
    face = faces[0]
    assert face.index == 0 and face.score > 0.99
    x1, y1, x2, y2 = face.box
    assert 40 < x2 - x1 < 200 and 40 < y2 - y1 < 200
    assert ((face.landmarks[:, 0] > x1) & (face.landmarks[:, 0] < x2)).all()
    assert ((face.landmarks[:, 1] > y1) & (face.landmarks[:, 1] < y2)).all()
    eyes, nose, mouth = face.landmarks[:2], face.landmarks[2], face.landmarks[3:]
    # the template's order: the eye on the image's left first, the mouth corners likewise, eyes above the mouth
    assert eyes[0, 0] < eyes[1, 0] and mouth[0, 0] < mouth[1, 0]
    assert eyes[:, 1].max() < nose[1] < mouth[:, 1].min()


def test_a_face_aligned_with_its_landmarks_has_its_eyes_on_the_templates_eye_line(detector, astronaut):
    [[face]] = detector.detect([astronaut])
    crop = align(astronaut, face.landmarks)
    placed = np.c_[face.landmarks, np.ones(5)] @ similarity(face.landmarks).T
    assert np.abs(placed[:2] - template()[:2]).max() < 3.0  # pixels of the 112x112 crop
    # found again in the aligned crop, its eyes are where the template puts them
    [[again]] = create_detector("mtcnn", device="cpu", min_face_size=40).detect([crop])
    assert np.abs(again.landmarks[:2] - template()[:2]).max() < 4.0


def test_photos_of_mixed_sizes_go_through_in_one_batch(detector, astronaut):
    half = np.ascontiguousarray(astronaut[::2, ::2])
    wide = np.zeros((300, 700, 3), np.uint8)
    wide[20:276, 400:656] = half
    found = detector.detect([astronaut, half, wide])
    assert [len(f) for f in found] == [1, 1, 1]
    full, small, placed = (f[0] for f in found)
    np.testing.assert_allclose(small.landmarks * 2, full.landmarks, atol=4.0)
    np.testing.assert_allclose(placed.landmarks - [400, 20], small.landmarks, atol=1.0)


def test_what_is_found_in_a_photo_does_not_depend_on_the_photos_beside_it(detector, astronaut):
    [[alone]] = detector.detect([astronaut])
    framed = np.zeros((600, 700, 3), np.uint8)
    framed[50:562, 120:632] = astronaut
    [_, [beside], _] = detector.detect([framed, astronaut, np.full((90, 1200, 3), 200, np.uint8)])
    np.testing.assert_allclose(beside.landmarks, alone.landmarks, atol=1e-3)
    np.testing.assert_allclose(beside.box, alone.box, atol=1e-3)


def test_photos_of_one_size_resized_together_give_what_each_gives_alone(detector, astronaut):
    shifted = np.ascontiguousarray(np.roll(astronaut, (9, -13), axis=(0, 1)))
    other = np.zeros((300, 400, 3), np.uint8)
    alone = [detector.detect([photo])[0] for photo in (astronaut, shifted)]
    # side by side (one slice of the canvas) and apart (picked out of it)
    for batch, where in (([astronaut, shifted, other], (0, 1)), ([astronaut, other, shifted], (0, 2))):
        found = detector.detect(batch)
        for k, faces in zip(where, alone, strict=True):
            assert len(found[k]) == len(faces) == 1
            np.testing.assert_allclose(found[k][0].box, faces[0].box, atol=1e-3)
            np.testing.assert_allclose(found[k][0].landmarks, faces[0].landmarks, atol=1e-3)


def test_a_network_run_over_slices_of_its_batch_gives_each_row_what_the_whole_batch_gives(detector):
    crops = torch.rand(150, 3, 24, 24).mul(255).contiguous(memory_format=torch.channels_last)
    whole = detector.rnet(crops)
    sliced = in_slices(detector.rnet, crops, 64)  # 64 + 64 + 22 rows
    assert len(sliced) == len(whole) == 2
    for a, b in zip(sliced, whole, strict=True):
        assert a.shape == b.shape and torch.equal(a, b)
    assert in_slices(detector.rnet, crops[:10], 64)[1].shape == (10,)


def test_a_blank_photo_a_tiny_face_and_an_empty_batch_give_no_faces(detector, astronaut):
    blank = np.full((240, 320, 3), 128, np.uint8)
    tiny = np.ascontiguousarray(astronaut[::8, ::8])  # the face is about 12 pixels wide
    assert detector.detect([blank, tiny]) == [[], []]
    assert detector.detect([]) == []


@pytest.fixture(scope="module")
def group(astronaut) -> np.ndarray:
    """Three people: the portrait's face at full size, and two smaller copies on either side."""
    face = astronaut[40:200, 160:290]
    small = np.ascontiguousarray(face[::2, ::2])
    photo = np.full((260, 620, 3), 90, np.uint8)
    photo[40:200, 245:375] = face
    photo[80:160, 40:105] = small
    photo[80:160, 520:585] = small
    return photo


def test_every_face_of_a_group_photo_is_found_once_largest_first(detector, group):
    [faces] = detector.detect([group])
    assert len(faces) == 3 and [f.index for f in faces] == [0, 1, 2]
    centres = sorted(float(f.box[[0, 2]].mean()) for f in faces)
    assert centres[0] < 105 and 245 < centres[1] < 375 and centres[2] > 520
    areas = [float((f.box[2] - f.box[0]) * (f.box[3] - f.box[1])) for f in faces]
    assert areas == sorted(areas, reverse=True)


@pytest.mark.parametrize(("options", "count"), [({"faces": "largest"}, 1), ({"faces": "central"}, 1),
                                                 ({"max_faces": 2}, 2), ({"min_face_size": 60}, 1)])
def test_options_choose_which_faces_of_a_photo_are_kept(group, options, count):
    [faces] = create_detector("mtcnn", device="cpu", **options).detect([group])
    assert len(faces) == count
    if options.get("faces") in ("largest", "central") or "min_face_size" in options:
        assert 245 < float(faces[0].box[[0, 2]].mean()) < 375  # the big face, which is also the central one


@pytest.mark.parametrize("options", [{"faces": "biggest"}, {"thresholds": (0.6, 0.7)}, {"min_face_size": 8},
                                     {"max_faces": 0}, {"factor": 1.2}])
def test_bad_options_are_refused_with_the_detectors_name(options):
    with pytest.raises(ComponentError, match="bad options for detector 'mtcnn'"):
        create_detector("mtcnn", device="cpu", **options)


def test_missing_weights_say_what_to_install(monkeypatch):
    from importlib import metadata

    def missing(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr("aikd.detect.mtcnn_nets.metadata.distribution", missing)
    with pytest.raises(ComponentError, match=r"pip install --no-deps facenet-pytorch==2\.6\.0"):
        create_detector("mtcnn", device="cpu")


def test_weights_that_are_not_the_wheels_are_refused(monkeypatch):
    monkeypatch.setitem(__import__("aikd.detect.mtcnn_nets", fromlist=["SHA256"]).SHA256, "rnet", "0" * 64)
    with pytest.raises(ComponentError, match="rnet.pt is not the file of facenet-pytorch==2.6.0"):
        create_detector("mtcnn", device="cpu")


def test_nms_keeps_the_best_of_overlapping_boxes_per_photo():
    boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 11, 11], [0, 0, 10, 10], [30, 30, 40, 40]], dtype=torch.float32)
    scores = torch.tensor([0.9, 0.95, 0.8, 0.7])
    same_photo = torch.zeros(4, dtype=torch.long)
    assert nms(boxes, scores, same_photo, 0.5).tolist() == [1, 3]
    two_photos = torch.tensor([0, 0, 1, 1])  # the third box is alone in its photo
    assert sorted(nms(boxes, scores, two_photos, 0.5).tolist()) == [1, 2, 3]
    inner = torch.tensor([[0, 0, 20, 20], [5, 5, 10, 10]], dtype=torch.float32)
    # a small box inside a big one: little union overlap, full overlap over the smaller
    assert len(nms(inner, torch.tensor([0.9, 0.8]), torch.zeros(2, dtype=torch.long), 0.5)) == 2
    assert nms(inner, torch.tensor([0.9, 0.8]), torch.zeros(2, dtype=torch.long), 0.5, "min").tolist() == [0]
    assert nms(boxes[:0], scores[:0], same_photo[:0], 0.5).tolist() == []
