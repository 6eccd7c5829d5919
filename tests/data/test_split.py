"""The train/validation split, one function for the pipeline, FR training and label statistics."""

import numpy as np

from aikd.config import DataConfig
from aikd.data.split import held_out, is_validation, stable_hash


def test_a_tenth_is_held_out_by_a_stable_salted_hash():
    hashes = stable_hash([f"img{i}" for i in range(20000)], seed=0)
    assert abs(is_validation(hashes, 0.1).mean() - 0.1) < 0.01
    np.testing.assert_array_equal(hashes[:5], stable_hash([f"img{i}" for i in range(5)], seed=0))
    assert not np.array_equal(hashes[:5], stable_hash([f"img{i}" for i in range(5)], seed=1))


def test_by_subject_every_image_of_a_person_falls_on_the_same_side():
    cfg = DataConfig(shards=["x"], split_by="subject_id", val_fraction=0.3)
    subjects = [f"s{i % 50}" for i in range(1000)]
    mask = held_out({"image_id": [f"i{i}" for i in range(1000)], "subject_id": subjects}, cfg)
    side = {}
    for s, m in zip(subjects, mask, strict=True):
        assert side.setdefault(s, m) == m
    assert 0 < sum(side.values()) < 50
    # the same answer from one row per subject (FR training's class list) as from every image
    unique = sorted(side)
    np.testing.assert_array_equal(held_out({"subject_id": unique}, cfg), [side[s] for s in unique])


def test_by_image_the_split_ignores_the_subject_and_rows_without_one_still_split():
    cfg = DataConfig(shards=["x"], val_fraction=0.5)
    ids = [f"i{i}" for i in range(200)]
    a = held_out({"image_id": ids, "subject_id": ["x"] * 200}, cfg)
    b = held_out({"image_id": ids, "subject_id": [None] * 200}, cfg)
    np.testing.assert_array_equal(a, b)
    assert 0 < a.sum() < 200
    by_subject = held_out({"subject_id": [None, None]}, cfg.model_copy(update={"split_by": "subject_id"}))
    assert by_subject[0] == by_subject[1]
