import json
import pickle

import numpy as np
import pytest

from aikd.config import IngestConfig
from aikd.data.ingest import IngestError
from aikd.data.safe_pickle import UnsafePickleError
from aikd.data.shards import read_rejects, read_shards, read_summary
from aikd.data.synth import SynthConfig, generate_rows
from aikd.ingest.run import run_ingest
from aikd.storage import resolve

pytestmark = pytest.mark.usefixtures("ray_local")  # the ingest job runs on Ray Data


def ingest_folder(images: str, landmarks: str, out: str, **fields) -> dict:
    return run_ingest(IngestConfig(images=images, landmarks=landmarks, out=out, **fields))


def ingest_aikd(images: str, landmarks: str, out: str, quality: str | None = None, **fields) -> dict:
    return run_ingest(IngestConfig(images=images, landmarks=landmarks, quality=quality, out=out, **fields))


def _faces(n=6):
    return list(generate_rows(SynthConfig(identities=2, samples_per_identity=n // 2, seed=11)))


def _plant_folder(root: str, landmark_format: str):
    """Good images plus the three planted bad kinds: truncated JPEG, empty file, NaN landmark."""
    images = resolve(root).join("images")
    entries = {}
    for row in _faces():
        images.join(row["image_id"]).write_bytes(row["image"])
        entries[row["image_id"]] = {"landmarks": row["landmarks"], "bbox": row["bbox"]}
    good = sorted(entries)
    truncated = good[0].replace(".jpg", "_truncated.jpg")
    images.join(truncated).write_bytes(_faces()[0]["image"][:400])
    entries[truncated] = entries[good[0]]
    images.join("id00001/empty.jpg").write_bytes(b"")
    entries["id00001/empty.jpg"] = entries[good[1]]
    nan_row = good[2]
    entries[nan_row] = {"landmarks": [float("nan")] + entries[nan_row]["landmarks"][1:], "bbox": None}
    if landmark_format == "json":
        lm = resolve(root).join("landmarks.json")
        lm.write_text(json.dumps(entries).replace("NaN", '"nan"'))
    else:
        lm = resolve(root).join("landmarks.csv")
        lines = ["path," + ",".join(f"v{i}" for i in range(14))]
        for key, e in entries.items():
            box = e["bbox"] or [""] * 4
            lines.append(",".join([key, *map(str, e["landmarks"]), *map(str, box)]))
        lm.write_text("\n".join(lines) + "\n")
    return images.uri, lm.uri, {truncated: "undecodable", "id00001/empty.jpg": "empty", nan_row: "non-finite"}


@pytest.mark.parametrize("landmark_format", ["csv", "json"])
def test_folder_ingest_keeps_good_rows_and_rejects_planted_bad_files(storage_root, landmark_format):
    images, landmarks, planted = _plant_folder(storage_root, landmark_format)
    out = storage_root + "/shards"
    summary = ingest_folder(images, landmarks, out, images_per_shard=2)
    table = read_shards(out)
    ids = table.column("image_id").to_pylist()
    assert len(ids) == 5 and not set(ids) & set(planted)
    assert set(table.column("subject_id").to_pylist()) == {"id00000", "id00001"}
    rejects = {r["image_id"]: r["reason"] for r in read_rejects(out).to_pylist()}
    assert set(rejects) == set(planted)
    for image_id, word in planted.items():
        assert word in rejects[image_id]
    assert summary["rows"] == 5 and summary["counts"]["rejected"] == 3
    assert read_summary(out)["rejects"] == summary["rejects"]
    # what was ingested is byte-identical to the source
    source = {r["image_id"]: r for r in _faces()}
    for row in table.to_pylist():
        assert row["image"] == source[row["image_id"]]["image"]
        np.testing.assert_allclose(row["landmarks"], source[row["image_id"]]["landmarks"], rtol=1e-6)


def test_images_without_landmarks_and_landmarks_without_images_are_rejected(tmp_path):
    rows = _faces(4)
    for row in rows:
        (tmp_path / "img" / row["subject_id"]).mkdir(parents=True, exist_ok=True)
        (tmp_path / "img" / row["image_id"]).write_bytes(row["image"])
    entries = {r["image_id"]: r["landmarks"] for r in rows[1:]}
    entries["id00009/ghost.jpg"] = rows[0]["landmarks"]
    (tmp_path / "lm.json").write_text(json.dumps(entries))
    ingest_folder(str(tmp_path / "img"), str(tmp_path / "lm.json"), str(tmp_path / "out"))
    rejects = {r["image_id"]: r["reason"] for r in read_rejects(str(tmp_path / "out")).to_pylist()}
    assert rejects == {rows[0]["image_id"]: "missing landmarks", "id00009/ghost.jpg": "image file not found"}


def test_a_malformed_landmarks_file_is_a_clear_error(tmp_path):
    (tmp_path / "lm.csv").write_text("a.jpg,1,2,3\n")
    (tmp_path / "img").mkdir()
    with pytest.raises(IngestError, match="lm.csv row 1: expected path \\+ 10 landmark numbers"):
        ingest_folder(str(tmp_path / "img"), str(tmp_path / "lm.csv"), str(tmp_path / "out"))
    with pytest.raises(IngestError, match="landmarks file not found"):
        ingest_folder(str(tmp_path / "img"), str(tmp_path / "none.csv"), str(tmp_path / "out"))


def _aikd_release(root):
    """The reference release layout: name -> (box, 5x2 landmarks) and name -> score pickles."""
    rows = _faces()
    images = resolve(root).join("vgg")
    boxes, scores = {}, {}
    for i, row in enumerate(rows):
        images.join(row["image_id"]).write_bytes(row["image"])
        box = np.array([*row["bbox"], 0.99], np.float32)  # detectors append a score
        boxes[row["image_id"]] = (box, np.array(row["landmarks"], np.float32).reshape(5, 2))
        scores[row["image_id"]] = np.float32(0.1 * i)
    scores[rows[-1]["image_id"]] = np.float32("nan")
    del scores[rows[-2]["image_id"]]
    resolve(root).join("lm.pkl").write_bytes(pickle.dumps(boxes))
    resolve(root).join("q.pkl").write_bytes(pickle.dumps(scores))
    return images.uri, rows


def test_aikd_release_pickles_ingest_with_labels(storage_root):
    images, rows = _aikd_release(storage_root)
    out = storage_root + "/shards"
    summary = ingest_aikd(images, storage_root + "/lm.pkl", out, quality=storage_root + "/q.pkl", label="diffiqa")
    table = read_shards(out, labels=("q_diffiqa",))
    assert table.num_rows == 4 and summary["counts"]["rejected"] == 2
    np.testing.assert_allclose(table.column("q_diffiqa").to_pylist(), [0.0, 0.1, 0.2, 0.3], rtol=1e-6)
    np.testing.assert_allclose(table.column("bbox").to_pylist()[0], rows[0]["bbox"], rtol=1e-6)
    reasons = sorted(r["reason"] for r in read_rejects(out).to_pylist())
    assert reasons == ["non-finite label diffiqa", "non-finite label diffiqa"]


def test_aikd_malicious_pickle_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            import os

            return (os.system, ("echo pwned > " + str(tmp_path / "pwned"),))

    (tmp_path / "lm.pkl").write_bytes(pickle.dumps({"a.jpg": Evil()}))
    with pytest.raises(UnsafePickleError, match="refusing to load"):
        ingest_aikd(str(tmp_path), str(tmp_path / "lm.pkl"), str(tmp_path / "out"))
    assert not (tmp_path / "pwned").exists()


def test_a_tables_subject_column_names_each_rows_subject(tmp_path):
    from aikd.data.ingest import read_landmarks

    numbers = ",".join(str(float(v)) for v in range(10))
    (tmp_path / "lm.csv").write_text(f"path,subject,{','.join(f'v{i}' for i in range(10))}\n"
                                     f"a.jpg,alice,{numbers}\nb.jpg,,{numbers}\n")
    (tmp_path / "lm.json").write_text(json.dumps({"a.jpg": {"landmarks": list(range(10)), "subject": "alice"},
                                                  "b.jpg": list(range(10))}))
    for name in ("lm.csv", "lm.json"):
        records = read_landmarks(resolve(str(tmp_path / name)))
        assert [(r.image_id, r.subject) for r in records] == [("a.jpg", "alice"), ("b.jpg", None)], name
        assert records[0].landmarks == [float(v) for v in range(10)]


def test_subject_table_needs_a_landmarks_table():
    with pytest.raises(ValueError, match="subject: table reads the landmarks table's subject column"):
        IngestConfig(images="photos", out="faces", subject="table")
