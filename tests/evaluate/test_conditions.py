"""Evaluation conditions are typed values: a strength is never parsed back out of its display name."""

import numpy as np
import pytest

from aikd.align import box_matrix, perturb, similarity_batch, template
from aikd.config import Condition, EvaluateConfig, FIQASpec
from aikd.data.split import stable_hash
from aikd.errors import ConfigError
from aikd.evaluate.scoring import condition_matrices
from aikd.spec import validate

SIZE = 112
THIRD = 0.0333333333  # relative mode: a thirtieth of the inter-ocular distance; prints as 0.0333333


def config(**kw) -> EvaluateConfig:
    return EvaluateConfig(shards=["x"], out="y", fr_model="z", models=[FIQASpec(name="n", teacher="norm")], **kw)


def faces(scales=(0.5, 1.0, 2.5), offsets=((10, 20), (0, 0), (-30, 40))) -> tuple[np.ndarray, list, np.ndarray]:
    """Landmarks (the template scaled and shifted), a box around each, and each face's seed hash."""
    lms = np.stack([template(SIZE) * s + np.asarray(o, np.float64) for s, o in zip(scales, offsets, strict=True)])
    boxes = [np.r_[lm.min(0) - 20, lm.max(0) + 20] for lm in lms]
    return lms, boxes, stable_hash([f"img{i}" for i in range(len(lms))], 0)


def apply(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    return np.einsum("nij,nkj->nki", m[:, :, :2], pts) + m[:, None, :, 2]


def test_conditions_keep_the_display_names_reports_and_files_use():
    got = config(misalignment=[3.0, 1.5]).conditions
    assert got == [Condition("aligned"), Condition("misaligned", 3.0, 0), Condition("misaligned", 1.5, 1),
                   Condition("box")]
    assert [c.name for c in got] == ["aligned", "misaligned_3", "misaligned_1.5", "box"]
    assert [c.name for c in config(box=False).conditions] == ["aligned", "misaligned_3"]


def test_a_relative_strength_that_prints_rounded_keeps_its_exact_value_and_warps_every_condition():
    cfg = config(misalignment=[THIRD], misalignment_relative=True)
    aligned, misaligned, box = cfg.conditions
    assert (misaligned.kind, misaligned.strength, misaligned.index) == ("misaligned", THIRD, 0)
    assert misaligned.name == "misaligned_0.0333333" and float(misaligned.name.split("_")[1]) != THIRD
    lms, boxes, hashes = faces()
    target = template(SIZE)
    m = condition_matrices(cfg, aligned, lms, boxes, hashes, SIZE)
    np.testing.assert_allclose(apply(m, lms), np.broadcast_to(target, lms.shape), atol=1e-9)
    m = condition_matrices(cfg, misaligned, lms, boxes, hashes, SIZE)
    assert m.shape == (3, 2, 3) and np.isfinite(m).all()
    error = np.linalg.norm(apply(m, lms) - target, axis=-1)
    iod = np.linalg.norm(target[1] - target[0])
    assert error.max() > 0.001 * iod and error.max() < 0.15 * iod  # a few percent of the eye distance
    m = condition_matrices(cfg, box, lms, boxes, hashes, SIZE)
    np.testing.assert_array_equal(m, np.stack([box_matrix(b, SIZE, cfg.box_margin) for b in boxes]))


def test_misalignment_noise_is_seeded_by_the_strengths_position_and_each_face():
    cfg = config(misalignment=[3.0, THIRD], misalignment_relative=True, seed=7)
    condition = cfg.conditions[2]
    lms, boxes, hashes = faces()
    expected = similarity_batch(np.stack([perturb(lm, THIRD, np.random.default_rng([7, 1, int(h)]), True)
                                          for lm, h in zip(lms, hashes, strict=True)]), template(SIZE))
    np.testing.assert_array_equal(condition_matrices(cfg, condition, lms, boxes, hashes, SIZE), expected)


def test_relative_noise_is_the_same_fraction_of_a_small_and_a_large_face():
    cfg = config(misalignment=[THIRD], misalignment_relative=True)
    lms, boxes, _ = faces(scales=(0.5, 3.0), offsets=((0, 0), (50, 50)))
    same_seed = stable_hash(["img", "img"], 0)
    m = condition_matrices(cfg, cfg.conditions[1], lms, boxes, same_seed, SIZE)
    moved = apply(m, lms)
    np.testing.assert_allclose(moved[0], moved[1], atol=1e-9)


@pytest.mark.parametrize("strengths", [[0.03333333, 0.033333334], [3.0, 3.0]])
def test_strengths_that_print_alike_are_refused_when_the_spec_is_read(strengths):
    spec = {"shards": ["x"], "out": "y", "fr_model": "z", "models": [{"name": "n", "teacher": "norm"}],
            "misalignment": strengths, "misalignment_relative": True}
    with pytest.raises(ConfigError, match=r"misalignment: condition names must be distinct .*misaligned_"):
        validate(EvaluateConfig, spec)


def test_only_a_misaligned_condition_has_a_strength():
    with pytest.raises(ValueError, match="only it, has a strength"):
        Condition("misaligned")
    with pytest.raises(ValueError, match="only it, has a strength"):
        Condition("box", 1.0)
