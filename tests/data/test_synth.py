import cv2
import numpy as np
import pytest

from aikd.data.schema import validate_schema
from aikd.data.shards import read_shards, read_summary, shard_files
from aikd.data.synth import DEGRADATIONS, SYNTH_SCHEMA, SynthConfig, generate_rows, write_synthetic

SMALL = SynthConfig(identities=6, samples_per_identity=8, seed=3, degraded_share=0.5)


def _decode(row):
    return cv2.imdecode(np.frombuffer(row["image"], np.uint8), cv2.IMREAD_COLOR)


def test_same_seed_same_bytes_other_seed_other_bytes():
    a = [r["image"] for r in generate_rows(SMALL)]
    b = [r["image"] for r in generate_rows(SMALL)]
    c = [r["image"] for r in generate_rows(SynthConfig(identities=6, samples_per_identity=8, seed=4))]
    assert a == b
    assert all(x != y for x, y in zip(a, c, strict=True))


def test_an_identity_is_the_same_whatever_else_is_generated():
    alone = list(generate_rows(SMALL, identities=range(4, 5)))
    among = [r for r in generate_rows(SMALL) if r["subject_id"] == "id00004"]
    assert [r["image"] for r in alone] == [r["image"] for r in among]


def test_faces_are_unaligned_with_landmarks_and_box_inside_the_canvas():
    rows = list(generate_rows(SMALL))
    sizes, rolls, centres = set(), [], []
    for row in rows:
        img = _decode(row)
        h, w = img.shape[:2]
        assert h == w and SMALL.min_canvas <= h <= SMALL.max_canvas
        sizes.add(h)
        lm = np.array(row["landmarks"]).reshape(5, 2)
        assert np.all(lm >= 0) and np.all(lm < h)
        x1, y1, x2, y2 = row["bbox"]
        assert 0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h
        eyes = lm[1] - lm[0]
        rolls.append(np.degrees(np.arctan2(eyes[1], eyes[0])))
        centres.append(lm.mean(0) / h)
    assert len(sizes) > 10
    assert np.std(rolls) > 5  # rolled
    assert np.std(np.array(centres), axis=0).min() > 0.03  # not centred


def test_landmarks_sit_on_the_drawn_eyes():
    # the iris centre is drawn dark on a light eye: the darkest pixel near each eye landmark
    for row in list(generate_rows(SynthConfig(identities=3, samples_per_identity=4, degraded_share=0.0))):
        gray = cv2.cvtColor(_decode(row), cv2.COLOR_BGR2GRAY).astype(float)
        for x, y in np.array(row["landmarks"]).reshape(5, 2)[:2]:
            xi, yi = int(round(x)), int(round(y))
            patch = gray[yi - 6 : yi + 7, xi - 6 : xi + 7]
            dy, dx = np.unravel_index(np.argmin(patch), patch.shape)
            assert abs(dy - 6) <= 3 and abs(dx - 6) <= 3


def test_degradations_are_recorded_with_graded_severity():
    cfg = SynthConfig(identities=20, samples_per_identity=10, seed=0, degraded_share=0.4)
    rows = list(generate_rows(cfg))
    kinds = [r["degradation"] for r in rows]
    sev = np.array([r["severity"] for r in rows])
    share = np.mean([k != "none" for k in kinds])
    assert 0.3 < share < 0.5
    assert set(kinds) == {"none", *DEGRADATIONS}
    assert np.all(sev[np.array(kinds) == "none"] == 0)
    degraded = sev[np.array(kinds) != "none"]
    assert degraded.min() >= 0.1 and degraded.max() <= 1.0 and degraded.std() > 0.15


def test_blur_severity_removes_detail():
    # same identity, sample and seed: only the blur share differs (share 0 vs 1 keeps the draw order)
    def sharpness(row):
        gray = cv2.cvtColor(_decode(row), cv2.COLOR_BGR2GRAY)
        return cv2.Laplacian(gray, cv2.CV_64F).var()

    rows = [r for r in generate_rows(SynthConfig(identities=30, samples_per_identity=10, degraded_share=0.5))]
    blur = [(r["severity"], sharpness(r)) for r in rows if r["degradation"] == "blur"]
    clean = np.median([sharpness(r) for r in rows if r["degradation"] == "none"])
    strong = [s for sev, s in blur if sev > 0.6]
    assert strong and np.median(strong) < clean / 3


def test_identities_differ_more_than_samples_of_one_identity():
    # a crude recogniser: similarity-align each face on its landmarks, compare grey pixels
    cfg = SynthConfig(identities=10, samples_per_identity=6, degraded_share=0.0)
    template = np.array([[38.3, 51.7], [73.5, 51.5], [56.0, 71.7], [41.5, 92.4], [70.7, 92.2]], np.float32)
    feats, subjects = [], []
    for row in generate_rows(cfg):
        m, _ = cv2.estimateAffinePartial2D(np.array(row["landmarks"], np.float32).reshape(5, 2), template)
        face = cv2.warpAffine(_decode(row), m, (112, 112))[30:110, 20:92].astype(np.float32)
        face = (face - face.mean()) / (face.std() + 1e-6)
        feats.append(face.reshape(-1) / np.sqrt(face.size))
        subjects.append(row["subject_id"])
    f = np.array(feats)
    sim = f @ f.T
    same = np.equal.outer(subjects, subjects)
    off_diag = ~np.eye(len(f), dtype=bool)
    assert sim[same & off_diag].mean() > sim[~same].mean() + 0.1


@pytest.mark.parametrize("bad", [dict(identities=0), dict(degraded_share=1.5), dict(min_canvas=300)])
def test_bad_config_is_refused(bad):
    with pytest.raises(ValueError):
        SynthConfig(**bad)


def test_write_synthetic_to_shards_reads_back_equal(storage_root):
    cfg = SynthConfig(identities=4, samples_per_identity=5, seed=7)
    summary = write_synthetic(storage_root, cfg, rows_per_shard=8)
    assert summary["rows"] == 20 and summary["shards"] == 3
    assert read_summary(storage_root)["rows"] == 20
    for f in shard_files(storage_root):
        import pyarrow.parquet as pq

        validate_schema(pq.read_schema(f.path, filesystem=f.fs), f.uri)
    table = read_shards(storage_root)
    assert table.schema.equals(SYNTH_SCHEMA)
    expected = list(generate_rows(cfg))
    got = table.to_pylist()
    assert [r["image_id"] for r in got] == [r["image_id"] for r in expected]
    assert [r["image"] for r in got] == [r["image"] for r in expected]
    np.testing.assert_allclose([r["landmarks"] for r in got], [r["landmarks"] for r in expected], rtol=1e-6)
    assert [r["degradation"] for r in got] == [r["degradation"] for r in expected]
