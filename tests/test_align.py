import numpy as np
import pytest

from aikd.align import (
    ARCFACE_TEMPLATE,
    AlignmentError,
    align,
    align_batch,
    box_align,
    perturb,
    similarity,
    similarity_batch,
    template,
    warp,
)


def _similarity(angle_deg, scale, shift):
    a = np.deg2rad(angle_deg)
    c, s = scale * np.cos(a), scale * np.sin(a)
    return np.array([[c, -s, shift[0]], [s, c, shift[1]]])


def _apply(m, pts):
    return pts @ m[:, :2].T + m[:, 2]


def test_aligning_the_template_itself_is_the_identity():
    np.testing.assert_allclose(similarity(ARCFACE_TEMPLATE), [[1, 0, 0], [0, 1, 0]], atol=1e-12)
    image = np.random.default_rng(0).integers(0, 255, (112, 112, 3), dtype=np.uint8)
    np.testing.assert_array_equal(align(image, ARCFACE_TEMPLATE), image)


@pytest.mark.parametrize(
    "angle,scale,shift", [(17.0, 1.7, (40.0, -12.0)), (-95.0, 0.4, (3.5, 80.0)), (0.0, 2.0, (0, 0))]
)
def test_a_known_similarity_is_recovered(angle, scale, shift):
    forward = _similarity(angle, scale, shift)
    landmarks = _apply(forward, ARCFACE_TEMPLATE)  # the template placed somewhere in a photo
    recovered = similarity(landmarks)  # photo -> template: the inverse of forward
    np.testing.assert_allclose(_apply(recovered, landmarks), ARCFACE_TEMPLATE, atol=1e-4)
    inverse = np.vstack([forward, [0, 0, 1]])
    np.testing.assert_allclose(recovered, np.linalg.inv(inverse)[:2], atol=1e-4)


def test_least_squares_with_noisy_points_beats_any_perturbed_solution():
    rng = np.random.default_rng(1)
    src = _apply(_similarity(10, 1.3, (5, 7)), ARCFACE_TEMPLATE) + rng.normal(0, 1.0, (5, 2))
    m = similarity(src)
    best = ((_apply(m, src) - ARCFACE_TEMPLATE) ** 2).sum()
    for _ in range(50):
        other = m + rng.normal(0, 1e-3, m.shape) * np.array([[1, 1, 10], [1, 1, 10]])
        other[1, 1], other[1, 0] = other[0, 0], -other[0, 1]  # keep it a similarity
        assert ((_apply(other, src) - ARCFACE_TEMPLATE) ** 2).sum() >= best - 1e-9


def test_output_size_scales_the_template():
    np.testing.assert_allclose(template(64), ARCFACE_TEMPLATE * 64 / 112)
    m = similarity(ARCFACE_TEMPLATE, size=224)
    np.testing.assert_allclose(m, [[2, 0, 0], [0, 2, 0]], atol=1e-12)


def test_batch_and_single_warps_agree():
    rng = np.random.default_rng(2)
    images = [rng.integers(0, 255, (s, s, 3), dtype=np.uint8) for s in (150, 200, 230)]
    lms = np.stack([_apply(_similarity(rng.uniform(-30, 30), rng.uniform(1, 2), rng.uniform(0, 40, 2)),
                           ARCFACE_TEMPLATE) for _ in images])
    batch = align_batch(images, lms.reshape(3, 10), size=64)
    assert batch.shape == (3, 64, 64, 3) and batch.dtype == np.uint8
    for i, image in enumerate(images):
        np.testing.assert_array_equal(batch[i], align(image, lms[i], size=64))
    np.testing.assert_allclose(similarity_batch(lms, template(64)), np.stack([similarity(p, size=64) for p in lms]))


def test_warp_border_is_zero():
    image = np.full((50, 50, 3), 200, np.uint8)
    out = warp(image, np.array([[1.0, 0, 40], [0, 1.0, 40]]), 112)
    assert out[0, 0].tolist() == [0, 0, 0] and out[60, 60].tolist() == [200, 200, 200]


def test_perturbation_stays_in_bounds_and_changes_with_the_seed():
    lms = np.tile(ARCFACE_TEMPLATE.reshape(10), (1000, 1))
    a = perturb(lms, 3.0, np.random.default_rng(0))
    assert a.shape == lms.shape
    assert np.abs(a - lms).max() <= 3.0 and np.abs(a - lms).max() > 2.9
    assert abs((a - lms).mean()) < 0.1
    np.testing.assert_array_equal(a, perturb(lms, 3.0, np.random.default_rng(0)))
    assert not np.allclose(a, perturb(lms, 3.0, np.random.default_rng(1)))
    np.testing.assert_array_equal(perturb(lms, 0.0, np.random.default_rng(0)), lms)


def test_relative_strength_scales_with_the_inter_ocular_distance():
    small = ARCFACE_TEMPLATE.reshape(1, 10)
    large = small * 4
    iod = np.linalg.norm(ARCFACE_TEMPLATE[1] - ARCFACE_TEMPLATE[0])
    ds = perturb(small, 0.1, np.random.default_rng(0), relative=True) - small
    dl = perturb(large, 0.1, np.random.default_rng(0), relative=True) - large
    np.testing.assert_allclose(dl, ds * 4)
    assert np.abs(ds).max() <= 0.1 * iod
    with pytest.raises(ValueError, match="strength"):
        perturb(small, -1.0, np.random.default_rng(0))


def test_box_crop_has_the_requested_size_and_content():
    image = np.zeros((200, 300, 3), np.uint8)
    image[50:150, 100:200] = 255  # a white 100x100 "face"
    out = box_align(image, [100, 50, 200, 150], size=64)
    assert out.shape == (64, 64, 3)
    assert out[5:59, 5:59].min() == 255
    wide = box_align(image, [100, 50, 200, 150], size=80, margin=1.0)  # 200px square: face in the middle half
    assert wide.shape == (80, 80, 3) and wide[40, 40, 0] == 255 and wide[2, 2, 0] == 0
    with pytest.raises(AlignmentError, match="invalid box"):
        box_align(image, [10, 10, 5, 20])


@pytest.mark.parametrize(
    "landmarks,reason",
    [
        (np.full((5, 2), 30.0), "coincident"),
        (np.vstack([ARCFACE_TEMPLATE[:4], ARCFACE_TEMPLATE[3:4]]), "coincident"),
        (np.where(np.eye(5, 2, dtype=bool), np.nan, ARCFACE_TEMPLATE), "non-finite"),
        (np.where(np.eye(5, 2, dtype=bool), np.inf, ARCFACE_TEMPLATE), "non-finite"),
    ],
)
def test_degenerate_landmarks_are_rejected(landmarks, reason):
    with pytest.raises(AlignmentError, match=reason):
        similarity(landmarks)
    with pytest.raises(AlignmentError, match=reason):
        align(np.zeros((120, 120, 3), np.uint8), landmarks)


def test_wrong_landmark_shape_is_an_error():
    with pytest.raises(AlignmentError, match="5 landmarks"):
        similarity(np.zeros(8))
