"""The ingest plan: the listing and the table joined on the driver's disk, cut into partitions as it is read."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from aikd.config import IngestConfig
from aikd.data.ingest import (
    DUPLICATE,
    NOT_FOUND,
    OUTSIDE_ROOT,
    IngestError,
    iter_landmarks,
    walk_images,
)
from aikd.ingest import plan as plan_module
from aikd.ingest.faces import IngestActor, manifest_of, plan_of
from aikd.ingest.plan import planned
from aikd.storage import resolve

LANDMARKS = ["38", "52", "74", "52", "56", "72", "41", "92", "71", "92"]


def _touch(root, *paths):
    for path in paths:
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_bytes(b"x")


def test_the_walk_lists_in_the_order_of_the_whole_paths_one_folder_at_a_time(tmp_path):
    root = tmp_path / "img"
    # '.' sorts before '/' and '-' before '.': a walk that sorted bare folder names would put a/ before a.jpg
    _touch(root, "a/b.jpg", "a.jpg", "a-b/c.png", "b/.hidden.jpg", "b/_side.jpg", "b/c.txt", "b/d/e.JPG", "z.jpeg")
    listed = [path for path, *_ in walk_images(resolve(str(root)))]
    assert listed == sorted(listed) == ["a-b/c.png", "a.jpg", "a/b.jpg", "b/d/e.JPG", "z.jpeg"]


def test_the_walk_follows_a_folder_link_once_and_flags_what_leads_out_of_the_root(tmp_path):
    root, private = tmp_path / "img", tmp_path / "private"
    _touch(root, "a/b.jpg")
    _touch(private, "secret.jpg")
    (root / "loop").symlink_to(root, target_is_directory=True)  # walked forever by a plain recursive listing
    (root / "out").symlink_to(private, target_is_directory=True)
    (root / "a" / "link.jpg").symlink_to(private / "secret.jpg")
    (root / "a" / "alias.jpg").symlink_to(root / "a" / "b.jpg")
    outside = {path: out for path, _, _, out in walk_images(resolve(str(root)))}
    assert outside == {"a/alias.jpg": False, "a/b.jpg": False, "a/link.jpg": True, "out/secret.jpg": True}


def test_a_csv_table_is_read_as_it_goes(tmp_path):
    table = tmp_path / "lm.csv"
    table.write_text("\n".join(["a.jpg," + ",".join(LANDMARKS), "b.jpg,1,2"]) + "\n")
    rows = iter_landmarks(resolve(str(table)))
    assert next(rows).image_id == "a.jpg"  # given before the bad row below is read
    with pytest.raises(IngestError, match="row 2: expected path"):
        next(rows)


def _plan(tmp_path, rows: list[str], **fields) -> tuple[list, dict]:
    (tmp_path / "lm.csv").write_text("\n".join(rows) + "\n")
    cfg = IngestConfig(images=str(tmp_path / "img"), landmarks=str(tmp_path / "lm.csv"), out=str(tmp_path / "out"),
                       **fields)
    with planned(cfg) as plan:
        parts = list(plan.partitions())
        return parts, dict(plan.rejects)


def test_the_join_keeps_each_images_first_row_and_refuses_the_rest_with_a_reason(tmp_path):
    _touch(tmp_path / "img", "p/1.jpg", "p/2.jpg", "p/3.jpg", "q/4.jpg")
    good = ",".join(LANDMARKS)
    parts, refused = _plan(tmp_path, [f"p/3.jpg,{good}", f"p/1.jpg,{good}", "p/1.jpg,1,1,1,1,1,1,1,1,1,1",
                                      f"gone.jpg,{good}", f"q/4.jpg,{','.join(['nan'] * 10)}", f"/etc/x.jpg,{good}"],
                            images_per_shard=1)
    assert [[r["image_id"] for r in p.records] for p in parts] == [["p/1.jpg"], ["p/3.jpg"]]
    assert [p.name for p in parts] == ["part-00000.parquet", "part-00001.parquet"]
    assert parts[0].records[0]["landmarks"] == [float(v) for v in LANDMARKS]  # the first of its two rows
    assert refused == {"p/1.jpg": DUPLICATE, "p/2.jpg": "missing landmarks", "gone.jpg": NOT_FOUND,
                       "q/4.jpg": "non-finite landmarks", "/etc/x.jpg": OUTSIDE_ROOT}


def test_a_partitions_digest_changes_with_its_own_rows_and_files_only(tmp_path):
    _touch(tmp_path / "img", *(f"p/{k}.jpg" for k in range(4)))
    rows = [f"p/{k}.jpg," + ",".join(LANDMARKS) for k in range(4)]
    before, _ = _plan(tmp_path, rows, images_per_shard=2)
    rows[3] = rows[3].replace("92", "93")
    after, _ = _plan(tmp_path, rows, images_per_shard=2)
    assert before[0].inputs == after[0].inputs and before[1].inputs != after[1].inputs


def test_the_plan_reads_the_listing_and_the_table_in_batches(tmp_path, monkeypatch):
    monkeypatch.setattr(plan_module, "BATCH", 3)  # the most the driver holds of either at once
    _touch(tmp_path / "img", *(f"p/{k:02d}.jpg" for k in range(10)))
    parts, refused = _plan(tmp_path, [f"p/{k:02d}.jpg," + ",".join(LANDMARKS) for k in range(9)],
                           images_per_shard=4)
    assert [len(p.records) for p in parts] == [4, 4, 1] and refused == {"p/09.jpg": "missing landmarks"}


def test_a_table_that_names_no_image_is_one_error_before_anything_runs(tmp_path):
    _touch(tmp_path / "img", "p/1.jpg")
    with pytest.raises(IngestError, match=r"none of the 1 rows .* its first row names '/abs/p/1.jpg'"):
        _plan(tmp_path, ["/abs/p/1.jpg," + ",".join(LANDMARKS)])


def test_an_actor_that_did_its_partition_but_was_lost_before_returning_gives_the_same_entry_again(tmp_path):
    (tmp_path / "img" / "p").mkdir(parents=True)
    cv2.imwrite(str(tmp_path / "img" / "p" / "1.jpg"), np.full((112, 112, 3), 128, np.uint8))
    parts, _ = _plan(tmp_path, ["p/1.jpg," + ",".join(LANDMARKS)])
    cfg = IngestConfig(images=str(tmp_path / "img"), landmarks=str(tmp_path / "lm.csv"), out=str(tmp_path / "out"))
    out = resolve(cfg.out)
    plan_of(out, parts[0].name).write_text(json.dumps(parts[0].records))
    actor = IngestActor(cfg)
    first = actor.partition(parts[0].name, parts[0].inputs)
    assert first["faces"] == 1 and not plan_of(out, parts[0].name).exists()  # the plan goes once the entry is there
    assert actor.partition(parts[0].name, parts[0].inputs) == first == manifest_of(out, parts[0].name).read_json()
