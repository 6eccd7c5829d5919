"""The ingest job: raw photos (or images with a landmarks table) in, face shards out, on Ray Data."""

from __future__ import annotations

import io
import shutil

import cv2
import numpy as np
import pytest
from PIL import Image

from aikd.config import IngestConfig, Resources
from aikd.data.decode import decode_image
from aikd.data.shards import read_rejects, read_shards
from aikd.detect import create_detector
from aikd.ingest.faces import margin_crop
from aikd.ingest.plan import planned
from aikd.ingest.run import run_ingest

ONE_ACTOR = Resources(workers=1, cpus_per_worker=0.5)


def _rows(cfg: IngestConfig) -> dict[str, dict]:
    return {r["image_id"]: r for r in read_shards(cfg.out).to_pylist()}


def test_raw_photos_give_a_row_per_face_found_and_every_other_photo_a_reason(ingest_run, photos):
    cfg, summary = ingest_run
    rows = _rows(cfg)
    portraits = {f"{p}#0" for p in photos["portraits"]}
    assert len(portraits & set(rows)) >= 11  # the synthetic portraits: a real detector finds them (1 may be missed)
    assert {f"{photos['group']}#0", f"{photos['group']}#1", f"{photos['real']}#0"} <= set(rows)
    assert not any(i.startswith(("other/", f"{photos['real']}#1")) for i in rows)  # one face in the real photo
    rejects = {r["image_id"]: r["reason"] for r in read_rejects(cfg.out).to_pylist()}
    assert {k: v for k, v in rejects.items() if k.startswith("other/")} == photos["rejects"]
    assert set(rejects) - set(photos["rejects"]) <= {p for p in photos["portraits"]}  # a missed portrait, if any
    # counts add up: every photo is in (faces or a reject), the summary and the tables agree
    counts = summary["counts"]
    assert counts["images"] == len(photos["portraits"]) + 2 + len(photos["rejects"])
    assert counts["faces"] == len(rows) == summary["rows"] and counts["rejected"] == len(rejects)
    assert summary["rejects"]["no face detected"] >= 1 and summary["detected"] is True
    assert {r["subject_id"] for r in rows.values()} == {"id00000", "id00001", "id00002", "astronaut", "group"}


def test_a_stored_face_is_a_margin_crop_with_its_landmarks_and_box_moved_into_it(ingest_run, photos):
    cfg, _ = ingest_run
    stored = _rows(cfg)[f"{photos['real']}#0"]
    photo = cv2.imread(f"{photos['root']}/{photos['real']}")
    [[face]] = create_detector("mtcnn", device="cpu").detect([photo[:, :, ::-1].copy()])
    crop, corner = margin_crop(photo, face.box, cfg.margin)
    image, why = decode_image(stored["image"])
    assert why == "" and image.shape == crop.shape and image.shape[0] < photo.shape[0] / 2  # a face, not the photo
    assert np.abs(image.astype(int) - crop).mean() < 3  # the crop, up to JPEG's loss
    np.testing.assert_allclose(np.reshape(stored["landmarks"], (5, 2)), face.landmarks - corner, atol=1e-3)
    np.testing.assert_allclose(stored["bbox"], face.box - np.tile(corner, 2), atol=1e-3)
    assert stored["detector_score"] == pytest.approx(face.score, abs=1e-6)


def test_a_rerun_does_only_partitions_whose_photos_changed_and_drops_the_shards_of_gone_ones(photos, ray_local,
                                                                                           tmp_path):
    root = tmp_path / "photos"
    shutil.copytree(photos["root"], root)
    cfg = IngestConfig(images=str(root), out=str(tmp_path / "faces"), images_per_shard=6, resources=ONE_ACTOR)
    first = run_ingest(cfg)
    assert first["counts"]["partitions_done_now"] == 3
    again = run_ingest(cfg)
    assert (again["counts"]["partitions_done_now"], again["counts"]["partitions_done_before"]) == (0, 3)
    assert again["counts"]["faces"] == first["counts"]["faces"]
    # a photo added at the end of the sorted paths changes the last partition only
    shutil.copy(root / photos["real"], root / "other" / "zz_nasa.jpg")
    added = run_ingest(cfg)
    assert (added["counts"]["partitions_done_now"], added["counts"]["partitions_done_before"]) == (1, 2)
    assert added["counts"]["faces"] == first["counts"]["faces"] + 1
    # photos removed: fewer partitions; the shard of the partition that is gone is removed, no face twice
    for name in ("id00000", "id00001"):
        shutil.rmtree(root / name)
    fewer = run_ingest(cfg)
    ids = [r["image_id"] for r in read_shards(cfg.out).to_pylist()]
    assert len(ids) == len(set(ids)) == fewer["counts"]["faces"] and fewer["counts"]["orphans_removed"] >= 1
    assert not any(i.startswith(("id00000/", "id00001/")) for i in ids)


def _sideways_jpeg(upright: np.ndarray) -> bytes:
    """``upright`` (BGR) stored as a phone stores a photo taken in portrait: pixels turned, an EXIF tag saying so."""
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: turn 90 degrees clockwise to show
    out = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(np.rot90(upright[:, :, ::-1]))).save(out, "JPEG", quality=95, exif=exif)
    return out.getvalue()


def test_landmarks_are_on_the_upright_photo_as_every_stage_decodes_it(photos, ray_local, tmp_path):
    """One orientation policy: the EXIF tag is applied when any stage decodes, so a table's landmarks, given on
    the photo as it is shown, hold for the stored face wherever it is read."""
    upright = cv2.imread(f"{photos['root']}/{photos['real']}")[100:300, :]  # 512 wide, 200 high, face inside
    [[face]] = create_detector("mtcnn", device="cpu").detect([upright[:, :, ::-1].copy()])
    assert face.landmarks[:, 1].max() < 200 < face.landmarks[:, 0].max()  # x beyond the stored pixels' width
    (tmp_path / "img" / "p").mkdir(parents=True)
    (tmp_path / "img" / "p" / "phone.jpg").write_bytes(_sideways_jpeg(upright))
    (tmp_path / "lm.csv").write_text("p/phone.jpg," + ",".join(f"{v:.3f}" for v in face.landmarks.reshape(10)) + "\n")
    cfg = IngestConfig(images=str(tmp_path / "img"), landmarks=str(tmp_path / "lm.csv"), out=str(tmp_path / "out"),
                       resources=ONE_ACTOR)
    summary = run_ingest(cfg)
    assert summary["counts"]["faces"] == 1 and summary["counts"]["rejected"] == 0
    image, why = decode_image(_rows(cfg)["p/phone.jpg"]["image"])
    assert why == "" and image.shape == upright.shape and np.abs(image.astype(int) - upright).mean() < 4


def test_a_symbolic_link_out_of_the_images_root_is_a_reject_never_read(photos, tmp_path):
    from aikd.data.ingest import OUTSIDE_ROOT

    root = tmp_path / "photos"
    shutil.copytree(photos["root"], root)
    (tmp_path / "private").mkdir()
    shutil.copy(root / photos["real"], tmp_path / "private" / "secret.jpg")
    (root / "linked").mkdir()
    (root / "linked" / "secret.jpg").symlink_to(tmp_path / "private" / "secret.jpg")  # a file link
    (root / "dir").symlink_to(tmp_path / "private", target_is_directory=True)  # a folder link
    (root / "linked" / "inside.jpg").symlink_to(root / photos["real"])  # a link that stays inside: an image
    with planned(IngestConfig(images=str(root), out=str(tmp_path / "out"))) as plan:
        read = {r["image_id"] for part in plan.partitions() for r in part.records}
        refused = dict(plan.rejects)
    assert refused["linked/secret.jpg"] == refused["dir/secret.jpg"] == OUTSIDE_ROOT
    assert not {"linked/secret.jpg", "dir/secret.jpg"} & read and "linked/inside.jpg" in read


def test_subjects_come_from_the_tables_column_when_the_spec_says_so(photos, tmp_path):
    from aikd.ingest.faces import ingest_partition
    from aikd.storage import resolve

    names = photos["portraits"][:3]
    rows = ["path,subject," + ",".join(f"v{i}" for i in range(10))]
    rows += [f"{p},person{k}," + ",".join(["50", "60", "90", "60", "70", "80", "55", "100", "85", "100"])
             for k, p in enumerate(names)]
    (tmp_path / "lm.csv").write_text("\n".join(rows) + "\n")
    cfg = IngestConfig(images=photos["root"], landmarks=str(tmp_path / "lm.csv"), subject="table",
                       out=str(tmp_path / "out"))
    with planned(cfg) as plan:  # the table's 3 images; the photos without a row are rejected (missing landmarks)
        [part] = plan.partitions()
    ingest_partition(cfg, resolve(cfg.out), part.name, part.records, part.inputs, None)
    assert {r["image_id"]: r["subject_id"] for r in read_shards(cfg.out).to_pylist()} == {
        p: f"person{k}" for k, p in enumerate(names)}
