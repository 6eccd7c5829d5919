"""Turn face images plus landmarks into face shards.

Two sources:

* a folder tree ``<subject>/<file>`` plus a landmarks file (CSV or JSON) mapping each
  image's relative path to 10 numbers and, optionally, a box;
* the reference AI-KD release: a pickle of image name -> (box, 5x2 landmarks) and a
  pickle of image name -> quality score, read with a restricted unpickler.

Both go through one loop that checks every row (its id is new and names a file under
the images root; the image's header gives a usable size and the whole image decodes;
landmarks are finite, distinct and on the image; labels are finite) and sends bad ones
to the rejects table with a reason. One bad file never stops the job.

:func:`image_header` is the size guard every decoder in aikd goes through first: the
pipeline's OpenCV decode and the scoring actors call it too, so a decompression bomb is
refused from its header, before any pixel buffer is allocated.
"""

from __future__ import annotations

import csv
import io
import json
import math
import posixpath
import struct
import warnings
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
from PIL import Image

from aikd.align import box_reason, degenerate_reason
from aikd.data.safe_pickle import safe_loads
from aikd.data.schema import BBOX, IMAGE, IMAGE_ID, LANDMARKS, SUBJECT_ID, label_column, with_columns
from aikd.data.shards import DEFAULT_ROWS_PER_SHARD, ShardWriter, write_rejects, write_summary
from aikd.errors import AikdError
from aikd.storage import Location, StorageError, resolve

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
MIN_IMAGE_SIDE = 16  # pixels: below this there is no face to align (the smallest model input is 16 px)
MAX_IMAGE_PIXELS = 50_000_000  # 50 MP decodes to 150 MB; a header claiming more is refused undecoded
DUPLICATE = "duplicate image_id"
OUTSIDE_ROOT = "image path outside the images root"


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


class _Pairs(list):
    """A JSON object as its (key, value) pairs in file order: repeated keys are kept, not overwritten."""


def read_landmarks(location: Location) -> list[Record]:
    """Every entry of a landmarks file, in file order, a repeated path included.

    CSV: path, 10 landmark numbers, optional 4 box numbers; header optional. JSON:
    ``{path: [10 numbers]}`` or ``{path: {"landmarks": [...], "bbox": [...]}}``.
    """
    if not location.exists():
        raise IngestError(f"landmarks file not found: {location.uri}")
    text = location.read_text()
    records: list[Record] = []
    if location.path.lower().endswith(".json"):
        try:
            data = json.loads(text, object_pairs_hook=_Pairs)
        except json.JSONDecodeError as err:
            raise IngestError(f"{location.uri}: not valid JSON ({err})") from None
        if not isinstance(data, _Pairs):
            raise IngestError(f"{location.uri}: expected an object of path -> landmarks, got {type(data).__name__}")
        for key, value in data:
            src = f"{location.uri} [{key}]"
            if isinstance(value, _Pairs):
                value = dict(value)
                records.append(Record(key, _numbers(value.get("landmarks"), src), _numbers(value.get("bbox"), src)))
            else:
                records.append(Record(key, _numbers(value, src)))
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
        records.append(Record(row[0], _numbers(row[1:11], src), bbox))
    return records


def read_landmarks_file(location: Location) -> dict[str, Record]:
    """path -> its landmarks entry; a path listed twice keeps its first entry (:func:`read_landmarks` has all)."""
    table: dict[str, Record] = {}
    for rec in read_landmarks(location):
        table.setdefault(rec.image_id, rec)
    return table


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return text.strip() == ""


def folder_records(images: Location, entries: list[Record]) -> list[Record]:
    """Every image file under ``images`` with its first landmarks entry (None where the file has none),
    then the entries that name no image file and the repeated entries: rows too, rejected by the loop."""
    files = [loc for loc in images.list_files() if loc.path.lower().endswith(IMAGE_SUFFIXES)]
    found = {posixpath.relpath(loc.path, images.path) for loc in files}
    first: dict[str, Record] = {}
    repeats = []
    for rec in entries:
        if rec.image_id in first:
            repeats.append(rec)
        else:
            first[rec.image_id] = rec
    records = [first.get(rel, Record(rel, None)) for rel in sorted(found)]
    # Landmark entries without an image are rows too: they are rejected, not lost.
    records += [rec for key, rec in sorted(first.items()) if key not in found]
    return records + repeats


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
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_JPEG_FRAMES = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}  # SOFn


def _png_size(data: bytes) -> tuple[int, int] | None:
    if len(data) < 24 or data[12:16] != b"IHDR":
        return None
    return struct.unpack(">II", data[16:24])


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    """Width and height from the first frame header (SOFn), walking the marker segments before it."""
    i, n = 2, len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
        elif marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a length
            i += 2
        elif marker in _JPEG_FRAMES:
            if i + 9 > n:
                return None
            height, width = struct.unpack(">HH", data[i + 5:i + 9])
            return width, height
        elif marker in (0xD9, 0xDA):  # end of image or start of scan before any frame header
            return None
        else:
            i += 2 + struct.unpack(">H", data[i + 2:i + 4])[0]
    return None


def _any_size(data: bytes) -> tuple[int, int] | None:
    """Other formats (BMP, WebP, ...): PIL reads the header only; ``open`` decodes no pixels."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the caller's limit is lower
            with Image.open(io.BytesIO(data)) as im:
                return im.size
    except Image.DecompressionBombError:
        return (2**31 - 1, 2**31 - 1)  # beyond PIL's own limit, so beyond ours
    except Exception:
        return None


def image_header(data: bytes | None) -> tuple[int, int] | str:
    """(width, height) from the image's header if it may be decoded, else why not.

    Nothing is decoded and no pixel buffer is allocated, so a decompression bomb (a few KB
    claiming 30000 x 30000 px) is refused here. Every decoder in aikd calls this first.
    """
    if data is None or len(data) == 0:
        return "empty image file"
    if data.startswith(_PNG_SIGNATURE):
        size = _png_size(data)
    elif data.startswith(b"\xff\xd8"):
        size = _jpeg_size(data)
    else:
        size = _any_size(data)
    if size is None:
        return "undecodable image"
    width, height = size
    if width * height > MAX_IMAGE_PIXELS:
        return f"image too large ({width}x{height} px, more than {MAX_IMAGE_PIXELS:,} pixels)"
    if min(width, height) < MIN_IMAGE_SIDE:
        return f"image too small ({width}x{height} px, less than {MIN_IMAGE_SIDE} px a side)"
    return width, height


def check_image(data: bytes, landmarks: list[float] | None = None) -> str | None:
    """None if the bytes decode to a whole image of a usable size (with ``landmarks``: on it), else the reason."""
    header = image_header(data)
    if isinstance(header, str):
        return header
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()  # decodes every byte: truncated files fail here, not at training time
    except Exception as err:
        return f"undecodable image ({type(err).__name__}: {err})"
    if landmarks is not None:
        return degenerate_reason(np.asarray(landmarks, np.float64)[None], np.asarray([header]))[0] or None
    return None


def outside_root(image_id: str) -> bool:
    """True for an id that, joined to the images root, names a file outside it (absolute, or a '..' part)."""
    return image_id.startswith(("/", "\\")) or ".." in image_id.replace("\\", "/").split("/")


def check_record(rec: Record) -> str | None:
    if outside_root(rec.image_id):
        return OUTSIDE_ROOT  # never read: a landmarks table or pickle must not reach files beside the images
    if rec.landmarks is None:
        return "missing landmarks"
    if len(rec.landmarks) != 10:
        return f"landmarks must be 10 numbers, got {len(rec.landmarks)}"
    degenerate = degenerate_reason(np.asarray(rec.landmarks, np.float64)[None])[0]
    if degenerate:
        return degenerate  # non-finite or coincident: no alignment can be computed
    if rec.bbox is not None and box_reason(rec.bbox):
        return "invalid bbox (need 4 finite numbers, x1 < x2 and y1 < y2)"
    for name, value in rec.labels.items():
        if not math.isfinite(value):
            return f"non-finite label {name}"
    return None


def check_records(records: list[Record]) -> list[str | None]:
    """Each record's problem before its image is read; an id seen before is a duplicate (the first one stays)."""
    seen: set[str] = set()
    problems: list[str | None] = []
    for rec in records:
        problems.append(DUPLICATE if rec.image_id in seen else check_record(rec))
        seen.add(rec.image_id)
    return problems


# --------------------------------------------------------------------------- the loop
def _read(location: Location) -> bytes | str:
    try:
        return location.read_bytes()
    except FileNotFoundError:
        return "image file not found"
    except (OSError, ValueError) as err:  # ValueError: a name the filesystem cannot hold (e.g. a NUL byte)
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

    checked = list(zip(records, check_records(records), strict=True))
    to_read = [rec for rec, problem in checked if problem is None]
    for rec, problem in checked:
        if problem is not None:
            reject(rec.image_id, problem)

    with ShardWriter(out_uri, schema, rows_per_shard) as writer, ThreadPoolExecutor(threads) as pool:
        # Reads are I/O bound (object storage); map keeps order so output is deterministic.
        chunk: list[dict] = []
        contents = pool.map(lambda r: _read(images.join(r.image_id)), to_read)
        for rec, data in zip(to_read, contents, strict=True):
            problem = data if isinstance(data, str) else check_image(data, rec.landmarks)
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
        records = folder_records(images, read_landmarks(resolve(landmarks_uri)))
    except StorageError as err:
        raise IngestError(f"image folder: {err}") from None
    return ingest(records, images, out_uri, kind="ingest-folder", **kwargs)


def ingest_aikd(images_uri: str, landmarks_pickle: str, out_uri: str, quality_pickle: str | None = None,
                label: str = "external", **kwargs) -> dict:
    quality = resolve(quality_pickle) if quality_pickle else None
    records = aikd_records(resolve(landmarks_pickle), quality, label)
    labels = (label,) if quality is not None else ()
    return ingest(records, resolve(images_uri), out_uri, labels=labels, kind="ingest-aikd", **kwargs)
