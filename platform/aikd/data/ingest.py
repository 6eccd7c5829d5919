"""Turn face images plus landmarks into face shards.

Two sources:

* a folder tree ``<subject>/<file>`` plus a landmarks file (CSV or JSON) mapping each
  image's relative path to 10 numbers and, optionally, a box;
* the reference AI-KD release: a pickle of image name -> (box, 5x2 landmarks) and a
  pickle of image name -> quality score, read with a restricted unpickler.

Both go through one loop that checks every row (image decodes, landmarks and labels
are finite) and sends bad ones to the rejects table with a reason. One bad file never
stops the job.
"""

from __future__ import annotations

import csv
import io
import json
import math
import posixpath
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
from PIL import Image

from aikd.data.safe_pickle import safe_loads
from aikd.data.schema import BBOX, IMAGE, IMAGE_ID, LANDMARKS, SUBJECT_ID, label_column, with_columns
from aikd.data.shards import DEFAULT_ROWS_PER_SHARD, ShardWriter, write_rejects, write_summary
from aikd.errors import AikdError
from aikd.storage import Location, StorageError, resolve

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


class IngestError(AikdError):
    """A problem with the inputs as a whole (not one row): missing file, unreadable table."""


@dataclass
class Record:
    """What a source knows about one image before it is read."""

    image_id: str
    landmarks: list[float] | None
    bbox: list[float] | None = None
    labels: dict[str, float] = field(default_factory=dict)


# --------------------------------------------------------------------------- sources
def _numbers(values, source: str) -> list[float] | None:
    if values is None:
        return None
    out = []
    for v in np.asarray(values, dtype=object).reshape(-1):
        if v is None or (isinstance(v, str) and v.strip() == ""):
            out.append(float("nan"))
            continue
        try:
            out.append(float(v))
        except (TypeError, ValueError):
            raise IngestError(f"{source}: {v!r} is not a number") from None
    return out


def read_landmarks_file(location: Location) -> dict[str, Record]:
    """CSV (path, 10 landmark numbers, optional 4 box numbers; header optional) or JSON
    (``{path: [10 numbers]}`` or ``{path: {"landmarks": [...], "bbox": [...]}}``)."""
    if not location.exists():
        raise IngestError(f"landmarks file not found: {location.uri}")
    text = location.read_text()
    records: dict[str, Record] = {}
    if location.path.lower().endswith(".json"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise IngestError(f"{location.uri}: not valid JSON ({err})") from None
        for key, value in data.items():
            src = f"{location.uri} [{key}]"
            if isinstance(value, dict):
                records[key] = Record(key, _numbers(value.get("landmarks"), src), _numbers(value.get("bbox"), src))
            else:
                records[key] = Record(key, _numbers(value, src))
        return records
    rows = list(csv.reader(io.StringIO(text)))
    if rows and rows[0] and not _is_number(rows[0][1] if len(rows[0]) > 1 else ""):
        rows = rows[1:]  # header
    for line, row in enumerate(rows, start=1):
        if not row:
            continue
        if len(row) not in (11, 15):
            raise IngestError(
                f"{location.uri} row {line}: expected path + 10 landmark numbers (+ 4 box numbers), "
                f"got {len(row)} fields"
            )
        src = f"{location.uri} row {line}"
        has_box = len(row) == 15 and any(cell.strip() for cell in row[11:15])
        bbox = _numbers(row[11:15], src) if has_box else None
        records[row[0]] = Record(row[0], _numbers(row[1:11], src), bbox)
    return records


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return text.strip() == ""


def folder_records(images: Location, landmarks: dict[str, Record]) -> list[Record]:
    """Every image file under ``images`` with its landmarks (None where the file has none)."""
    files = [loc for loc in images.list_files() if loc.path.lower().endswith(IMAGE_SUFFIXES)]
    found = {posixpath.relpath(loc.path, images.path) for loc in files}
    records = [landmarks.get(rel, Record(rel, None)) for rel in sorted(found)]
    # Landmark entries without an image are rows too: they are rejected, not lost.
    records += [rec for key, rec in sorted(landmarks.items()) if key not in found]
    return records


def aikd_records(landmarks_pickle: Location, quality_pickle: Location | None, label: str) -> list[Record]:
    """Records from the reference release's pickles (name -> (box, 5x2 landmarks); name -> score)."""
    boxes = _load_pickle_dict(landmarks_pickle)
    scores = _load_pickle_dict(quality_pickle) if quality_pickle is not None else {}
    records = []
    for name in sorted(boxes):
        entry = boxes[name]
        src = f"{landmarks_pickle.uri} [{name}]"
        if not isinstance(entry, (tuple, list)) or len(entry) != 2:
            records.append(Record(str(name), None))
            continue
        box, lms = entry
        box_numbers = _numbers(box, src)
        labels = {}
        if quality_pickle is not None:
            labels[label] = float(np.asarray(scores[name]).reshape(-1)[0]) if name in scores else float("nan")
        records.append(Record(str(name), _numbers(lms, src), box_numbers[:4] if box_numbers else None, labels))
    return records


def _load_pickle_dict(location: Location) -> dict:
    if not location.exists():
        raise IngestError(f"pickle not found: {location.uri}")
    data = safe_loads(location.read_bytes(), location.uri)
    if not isinstance(data, dict):
        raise IngestError(f"{location.uri}: expected a dict of image name -> value, got {type(data).__name__}")
    return data


# --------------------------------------------------------------------------- checks
def check_image(data: bytes) -> str | None:
    """None if the bytes decode to a whole image, else the reason."""
    if not data:
        return "empty image file"
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()  # decodes every byte: truncated files fail here, not at training time
    except Exception as err:
        return f"undecodable image ({type(err).__name__}: {err})"
    return None


def check_record(rec: Record) -> str | None:
    if rec.landmarks is None:
        return "missing landmarks"
    if len(rec.landmarks) != 10:
        return f"landmarks must be 10 numbers, got {len(rec.landmarks)}"
    if not all(math.isfinite(v) for v in rec.landmarks):
        return "non-finite landmarks"
    if rec.bbox is not None and (len(rec.bbox) != 4 or not all(math.isfinite(v) for v in rec.bbox)):
        return "invalid bbox (need 4 finite numbers)"
    for name, value in rec.labels.items():
        if not math.isfinite(value):
            return f"non-finite label {name}"
    return None


# --------------------------------------------------------------------------- the loop
def _read(location: Location) -> bytes | str:
    try:
        return location.read_bytes()
    except FileNotFoundError:
        return "image file not found"
    except OSError as err:
        return f"unreadable image file ({err})"


def ingest(records: list[Record], images: Location, out_uri: str, *, labels: tuple[str, ...] = (),
           rows_per_shard: int = DEFAULT_ROWS_PER_SHARD, threads: int = 8,
           progress: Callable[[int], None] | None = None, kind: str = "ingest") -> dict:
    """Check and write ``records`` (images read relative to ``images``) as shards at ``out_uri``."""
    schema = with_columns(*(pa.field(label_column(n), pa.float32()) for n in labels))
    rejects: list[tuple[str, str]] = []
    reasons: dict[str, int] = {}

    def reject(image_id: str, reason: str) -> None:
        rejects.append((image_id, reason))
        key = reason.split(" (")[0]
        reasons[key] = reasons.get(key, 0) + 1

    checked = [(rec, check_record(rec)) for rec in records]
    to_read = [rec for rec, problem in checked if problem is None]
    for rec, problem in checked:
        if problem is not None:
            reject(rec.image_id, problem)

    with ShardWriter(out_uri, schema, rows_per_shard) as writer, ThreadPoolExecutor(threads) as pool:
        # Reads are I/O bound (object storage); map keeps order so output is deterministic.
        chunk: list[dict] = []
        contents = pool.map(lambda r: _read(images.join(r.image_id)), to_read)
        for rec, data in zip(to_read, contents, strict=True):
            problem = data if isinstance(data, str) else check_image(data)
            if problem is not None:
                reject(rec.image_id, problem)
            else:
                chunk.append(_row(rec, data, labels))
            if progress:
                progress(1)
            if len(chunk) >= 256:
                writer.write_rows(chunk)
                chunk = []
        writer.write_rows(chunk)
    write_rejects(out_uri, rejects)
    summary = {
        "kind": kind,
        "rows": writer.rows_written,
        "shards": len(writer.files),
        "rejected": len(rejects),
        "reject_reasons": reasons,
        "labels": [label_column(n) for n in labels],
    }
    write_summary(out_uri, summary)
    return summary


def _row(rec: Record, data: bytes, labels: Iterable[str]) -> dict:
    subject = rec.image_id.split("/")[0] if "/" in rec.image_id else None
    row = {IMAGE_ID: rec.image_id, SUBJECT_ID: subject, IMAGE: data, LANDMARKS: rec.landmarks, BBOX: rec.bbox}
    for name in labels:
        row[label_column(name)] = rec.labels[name]
    return row


def ingest_folder(images_uri: str, landmarks_uri: str, out_uri: str, **kwargs) -> dict:
    images = resolve(images_uri)
    try:
        landmarks = read_landmarks_file(resolve(landmarks_uri))
        records = folder_records(images, landmarks)
    except StorageError as err:
        raise IngestError(f"image folder: {err}") from None
    return ingest(records, images, out_uri, kind="ingest-folder", **kwargs)


def ingest_aikd(images_uri: str, landmarks_pickle: str, out_uri: str, quality_pickle: str | None = None,
                label: str = "external", **kwargs) -> dict:
    quality = resolve(quality_pickle) if quality_pickle else None
    records = aikd_records(resolve(landmarks_pickle), quality, label)
    labels = (label,) if quality is not None else ()
    return ingest(records, resolve(images_uri), out_uri, labels=labels, kind="ingest-aikd", **kwargs)
