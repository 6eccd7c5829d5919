"""One partition of an ingest job: its images read, decoded upright, checked, their faces located; one shard.

A partition runs in one call of an actor of the job's pool (:class:`IngestActor`). Its
shard is written whole, then its manifest entry (``_parts/<shard>.json``): an entry means
the shard is complete, so a rerun skips the partition, and a crash leaves no half shard.

With a landmarks table (or the reference pickles) a row is the image file as it came,
with its landmarks and box. With detection a photo gives a row per face found
(``<path>#<k>``): a margin crop around the face's box, re-encoded as JPEG, with the
landmarks and box moved into the crop. The crop keeps ``margin`` times the box's side of
context on every side (default 0.5): the pipeline's misaligned twin shifts, turns and
scales the face, and the evaluation's box condition squares the box, and both take their
pixels from around the face. The whole photo would store far more than a face needs; the
bare box would give those warps black borders where the context should be.
"""

from __future__ import annotations

import json
import math
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
import pyarrow as pa

from aikd.config.ingest import IngestConfig
from aikd.data.decode import decode_image
from aikd.data.ingest import check_image, read_image_file, subject_of
from aikd.data.schema import BBOX, IMAGE, IMAGE_ID, LANDMARKS, SUBJECT_ID, label_column, with_columns
from aikd.data.shards import write_shard
from aikd.detect import Detector, create_detector, detect_decoded
from aikd.storage import Location, resolve

PARTS_DIR = "_parts"
PLAN_DIR = "_plan"
DETECTOR_SCORE = "detector_score"
NO_FACE = "no face detected"
CROP_QUALITY = 95  # JPEG quality of a stored face crop: re-encoding costs little detail at this setting
READ_THREADS = 8  # reads are I/O bound (object storage)


def shard_schema(cfg: IngestConfig) -> pa.Schema:
    extra = [pa.field(label_column(cfg.label), pa.float32())] if cfg.quality else []
    if cfg.detect:
        extra.append(pa.field(DETECTOR_SCORE, pa.float32()))
    return with_columns(*extra)


def manifest_of(out: Location, shard: str) -> Location:
    return out.join(PARTS_DIR, shard.removesuffix(".parquet") + ".json")


def done_before(out: Location, shard: str, inputs: str) -> dict | None:
    """The partition's manifest entry if it was done with these inputs: its shard is complete and current."""
    entry = manifest_of(out, shard)
    manifest = entry.read_json() if entry.exists() else None
    return manifest if manifest is not None and manifest["inputs"] == inputs else None


def plan_of(out: Location, shard: str) -> Location:
    """Where the driver leaves a partition's records for the actor that does it (JSON list of records)."""
    return out.join(PLAN_DIR, shard.removesuffix(".parquet") + ".json")


def margin_crop(image: np.ndarray, box: np.ndarray, margin: float) -> tuple[np.ndarray, np.ndarray]:
    """The part of ``image`` around ``box`` (x1, y1, x2, y2) grown by ``margin`` x its longer side, cut at the
    image's edges, and the crop's top-left corner in the image."""
    x1, y1, x2, y2 = (float(v) for v in box)
    grow = margin * max(x2 - x1, y2 - y1)
    height, width = image.shape[:2]
    left, top = max(0, math.floor(x1 - grow)), max(0, math.floor(y1 - grow))
    right, bottom = min(width, math.ceil(x2 + grow)), min(height, math.ceil(y2 + grow))
    return image[top:bottom, left:right], np.array([left, top], np.float32)


class IngestActor:
    """A Ray Data actor: builds the detector once (on the GPU Ray gave it, else the CPU), then one partition
    per call."""

    def __init__(self, cfg: IngestConfig):
        self.cfg = cfg
        self.out = resolve(cfg.out)
        self.detector = create_detector(cfg.detector.name, **cfg.detector.options) if cfg.detect else None

    def __call__(self, batch: dict) -> dict:
        manifests = [self.partition(str(name), str(inputs))
                     for name, inputs in zip(batch["name"], batch["inputs"], strict=True)]
        return {"manifest": np.asarray([json.dumps(m) for m in manifests], dtype=object)}

    def partition(self, name: str, inputs: str) -> dict:
        """One partition from the records the driver left for it; its plan goes once its manifest entry is
        written."""
        if manifest := done_before(self.out, name, inputs):
            return manifest  # an earlier attempt of this call did it, and its actor was lost before it returned
        plan = plan_of(self.out, name)
        manifest = ingest_partition(self.cfg, self.out, name, plan.read_json(), inputs, self.detector)
        plan.delete()
        return manifest


def ingest_partition(cfg: IngestConfig, out: Location, name: str, records: list[dict], inputs: str,
                     detector: Detector | None) -> dict:
    """Write one partition's shard (none when every image was rejected), then its manifest entry; return it."""
    root = resolve(cfg.images)
    with ThreadPoolExecutor(READ_THREADS) as pool:
        blobs = list(pool.map(lambda rec: read_image_file(root.join(rec["image_id"])), records))
    if detector is not None:
        rows, rejects = detected_rows(cfg, records, blobs, detector)
    else:
        rows, rejects = located_rows(cfg, records, blobs)
    shard = out.join(name)
    if rows:
        write_shard(shard, pa.Table.from_pylist(rows, schema=shard_schema(cfg)))
    elif shard.exists():
        shard.delete()  # an earlier run's shard of this partition, whose images are all rejected now
    manifest = {"shard": name, "images": len(records), "faces": len(rows), "rejects": rejects, "inputs": inputs}
    manifest_of(out, name).write_json(manifest)
    return manifest


def _subject(cfg: IngestConfig, rec: dict) -> str | None:
    if cfg.subject == "table":
        return rec["subject"]
    return subject_of(rec["image_id"]) if cfg.subject == "folder" else None


def located_rows(cfg: IngestConfig, records: list[dict], blobs: list) -> tuple[list[dict], list[list[str]]]:
    """A row per image whose bytes decode and whose given landmarks lie on it; the others rejected."""
    rows, rejects = [], []
    for rec, data in zip(records, blobs, strict=True):
        problem = data if isinstance(data, str) else check_image(data, rec["landmarks"])
        if problem is not None:
            rejects.append([rec["image_id"], problem])
            continue
        row = {IMAGE_ID: rec["image_id"], SUBJECT_ID: _subject(cfg, rec), IMAGE: data,
               LANDMARKS: rec["landmarks"], BBOX: rec["bbox"]}
        if cfg.quality:
            row[label_column(cfg.label)] = rec["labels"][cfg.label]
        rows.append(row)
    return rows, rejects


def detected_rows(cfg: IngestConfig, records: list[dict], blobs: list,
                  detector: Detector) -> tuple[list[dict], list[list[str]]]:
    """A row per face the detector finds (a margin crop); a photo that does not decode or shows no face rejected."""
    rejects, photos = [], []
    for rec, data in zip(records, blobs, strict=True):
        image, why = (None, data) if isinstance(data, str) else decode_image(data)
        if image is None:
            rejects.append([rec["image_id"], why])
        else:
            photos.append((rec, image))
    rows = []
    found = detect_decoded(detector, [image for _, image in photos])
    for (rec, image), faces in zip(photos, found, strict=True):
        image_id = rec["image_id"]
        if not faces:
            rejects.append([image_id, NO_FACE])
        for face in faces:
            crop, corner = margin_crop(image, face.box, cfg.margin)
            ok, encoded = cv2.imencode(".jpg", crop, [cv2.IMWRITE_JPEG_QUALITY, CROP_QUALITY])
            if not ok:
                rejects.append([f"{image_id}#{face.index}", "face crop could not be encoded"])
                continue
            rows.append({IMAGE_ID: f"{image_id}#{face.index}", SUBJECT_ID: _subject(cfg, rec),
                         IMAGE: encoded.tobytes(),
                         LANDMARKS: (face.landmarks - corner).reshape(10).tolist(),
                         BBOX: (face.box.reshape(2, 2) - corner).reshape(4).tolist(),
                         DETECTOR_SCORE: float(face.score)})
    return rows, rejects
