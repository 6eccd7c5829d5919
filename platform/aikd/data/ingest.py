"""What an ingest job reads, and the checks every row goes through (the job: :mod:`aikd.ingest.run`).

Sources of faces with landmarks:

* a folder tree ``<subject>/<file>`` plus a landmarks file (CSV or JSON) mapping each
  image's relative path to 10 numbers and, optionally, a box;
* the reference AI-KD release: a pickle of image name -> (box, 5x2 landmarks) and a
  pickle of image name -> quality score, read with a restricted unpickler.

Every row is checked (its id is new and names a file under the images root; the whole
image decodes, upright by its EXIF orientation, to a usable size; landmarks are finite,
distinct and on that upright image; labels are finite); a bad one goes to the rejects
table with a reason. One bad file never stops the job.
"""

from __future__ import annotations

import csv
import itertools
import json
import math
import os
import posixpath
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import pyarrow.fs as pafs

from aikd.align import box_reason, degenerate_reason
from aikd.config.ingest import IMAGE_SUFFIXES
from aikd.data.decode import decode_image
from aikd.data.safe_pickle import safe_loads
from aikd.errors import AikdError
from aikd.storage import Location

DUPLICATE = "duplicate image_id"
OUTSIDE_ROOT = "image path outside the images root"
NOT_FOUND = "image file not found"


class IngestError(AikdError):
    """A problem with the inputs as a whole (not one row): missing file, unreadable table."""


@dataclass
class Record:
    """What a source knows about one image before it is read."""

    image_id: str
    landmarks: list[float] | None
    bbox: list[float] | None = None
    labels: dict[str, float] = field(default_factory=dict)
    subject: str | None = None  # a table's subject column, if it has one


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


def iter_landmarks(location: Location) -> Iterator[Record]:
    """Every entry of a landmarks file, in file order, a repeated path included.

    CSV: path, 10 landmark numbers, optional 4 box numbers; header optional. A header may
    name a ``subject`` column (anywhere): each row's subject. JSON: ``{path: [10 numbers]}``
    or ``{path: {"landmarks": [...], "bbox": [...], "subject": "..."}}``. A CSV file is read
    as it goes, a row at a time; a JSON file is parsed whole (its format has no row
    boundaries to read by).
    """
    if not location.exists():
        raise IngestError(f"landmarks file not found: {location.uri}")
    if location.path.lower().endswith(".json"):
        yield from _json_landmarks(location)
        return
    with location.open_text() as text:
        rows = csv.reader(text)
        first = next(rows, None)
        column = None  # the subject column, when a header names one
        if first and not _is_number(first[1] if len(first) > 1 else ""):
            names = [name.strip().lower() for name in first]
            column = names.index("subject") if "subject" in names else None
            first = None  # header
        for line, row in enumerate(itertools.chain([first] if first is not None else [], rows), start=1):
            if row:
                yield _csv_record(row, column, f"{location.uri} row {line}")


def _csv_record(row: list[str], column: int | None, src: str) -> Record:
    subject = None
    if column is not None and column < len(row):
        subject = row.pop(column).strip() or None
    if len(row) not in (11, 15):
        raise IngestError(f"{src}: expected path + 10 landmark numbers (+ 4 box numbers), got {len(row)} fields")
    has_box = len(row) == 15 and any(cell.strip() for cell in row[11:15])
    bbox = _numbers(row[11:15], src) if has_box else None
    return Record(row[0], _numbers(row[1:11], src), bbox, subject=subject)


def _json_landmarks(location: Location) -> list[Record]:
    try:
        data = json.loads(location.read_text(), object_pairs_hook=_Pairs)
    except json.JSONDecodeError as err:
        raise IngestError(f"{location.uri}: not valid JSON ({err})") from None
    if not isinstance(data, _Pairs):
        raise IngestError(f"{location.uri}: expected an object of path -> landmarks, got {type(data).__name__}")
    records = []
    for key, value in data:
        src = f"{location.uri} [{key}]"
        if isinstance(value, _Pairs):
            value = dict(value)
            subject = value.get("subject")
            records.append(Record(key, _numbers(value.get("landmarks"), src), _numbers(value.get("bbox"), src),
                                  subject=None if subject is None else str(subject)))
        else:
            records.append(Record(key, _numbers(value, src)))
    return records


def read_landmarks(location: Location) -> list[Record]:
    """:func:`iter_landmarks` as a list."""
    return list(iter_landmarks(location))


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
def check_image(data: bytes, landmarks: list[float] | None = None) -> str | None:
    """None if the bytes decode to a whole image of a usable size (with ``landmarks``: on it, upright), else why."""
    image, why = decode_image(data)
    if image is None:
        return why
    if landmarks is not None:
        height, width = image.shape[:2]
        return degenerate_reason(np.asarray(landmarks, np.float64)[None], np.asarray([[width, height]]))[0] or None
    return None


def outside_root(image_id: str) -> bool:
    """True for an id that, joined to the images root, names a file outside it (absolute, or a '..' part)."""
    return image_id.startswith(("/", "\\")) or ".." in image_id.replace("\\", "/").split("/")


def walk_images(root: Location, suffixes=IMAGE_SUFFIXES,
                missing_ok: bool = False) -> Iterator[tuple[str, int, int, bool]]:
    """Every image file under ``root``, recursively, in path order, listed one folder at a time (the most it
    holds is one folder's listing): its path relative to the root, size, modification time, and whether a
    symbolic link leads it out of a local root. Hidden and side files (``.*``, ``_*``) are left out; a local
    folder reached again through a link is walked once. ``missing_ok``: a root that is not there holds none."""
    local = isinstance(root.fs, pafs.LocalFileSystem)
    real_root = os.path.realpath(root.path) if local else ""
    walked: set[str] = set()

    def walk(path: str, allow_not_found: bool) -> Iterator[tuple[str, int, int, bool]]:
        inside = True
        if local:
            real = os.path.realpath(path)
            if real in walked:
                return
            walked.add(real)
            inside = _under(real_root, real)
        entries = root.info(pafs.FileSelector(path, allow_not_found=allow_not_found))
        # a folder's name sorts as "name/": then the walk's order is the order of the whole paths
        for f in sorted(entries, key=lambda f: f.base_name + ("/" if f.type == pafs.FileType.Directory else "")):
            if f.type == pafs.FileType.Directory:
                yield from walk(f.path, False)
            elif (f.type == pafs.FileType.File and f.path.lower().endswith(tuple(suffixes))
                  and not f.base_name.startswith((".", "_"))):
                # a file leads out of the root when its folder does, or when it is a link that does
                outside = local and not (inside and (not os.path.islink(f.path)
                                                     or _under(real_root, os.path.realpath(f.path))))
                yield posixpath.relpath(f.path, root.path), f.size, f.mtime_ns, outside

    yield from walk(root.path, missing_ok)


def _under(real_root: str, real: str) -> bool:
    return os.path.commonpath([real_root, real]) == real_root


def require_images(paths, root: Location, suffixes=IMAGE_SUFFIXES) -> None:
    if not paths:
        raise IngestError(f"no images ({', '.join(suffixes)}) under {root.uri}")


def require_table_names_images(landmarks: str, named: list[str], paths, root: Location) -> None:
    """A table none of whose rows (``named``: their paths, in file order) names one of ``paths`` is a user error:
    its paths are absolute, or relative to another folder."""
    if named and not set(named) & set(paths):
        raise table_names_no_image(landmarks, len(named), named[0], min(paths), root)


def table_names_no_image(landmarks: str, rows: int, first_named: str, first_path: str, root: Location) -> IngestError:
    return IngestError(f"none of the {rows} rows of {landmarks} names an image under {root.uri}: paths are "
                       f"relative to images (e.g. {first_path!r}); its first row names {first_named!r}")


def check_records(records: list[Record]) -> list[str | None]:
    """Each record's problem before its image is read (None: none); the landmarks' geometry of all of them is
    checked in one numpy pass."""
    problems = [_entry_problem(rec) for rec in records]
    whole = [i for i, why in enumerate(problems) if why is None]
    if whole:
        geometry = degenerate_reason(np.asarray([records[i].landmarks for i in whole], np.float64))
        for i, why in zip(whole, geometry, strict=True):
            problems[i] = why or _box_or_label_problem(records[i])  # non-finite or coincident: no alignment
    return problems


def _entry_problem(rec: Record) -> str | None:
    if outside_root(rec.image_id):
        return OUTSIDE_ROOT  # never read: a landmarks table or pickle must not reach files beside the images
    if rec.landmarks is None:
        return "missing landmarks"
    if len(rec.landmarks) != 10:
        return f"landmarks must be 10 numbers, got {len(rec.landmarks)}"
    return None


def _box_or_label_problem(rec: Record) -> str | None:
    if rec.bbox is not None and box_reason(rec.bbox):
        return "invalid bbox (need 4 finite numbers, x1 < x2 and y1 < y2)"
    for name, value in rec.labels.items():
        if not math.isfinite(value):
            return f"non-finite label {name}"
    return None


# --------------------------------------------------------------------------- reading
def read_image_file(location: Location) -> bytes | str:
    """The file's bytes, or why they cannot be read."""
    try:
        return location.read_bytes()
    except FileNotFoundError:
        return NOT_FOUND
    except (OSError, ValueError) as err:  # ValueError: a name the filesystem cannot hold (e.g. a NUL byte)
        return f"unreadable image file ({err})"


def subject_of(image_id: str) -> str | None:
    """The first folder of an image's path: its subject in a ``<subject>/<file>`` tree."""
    return image_id.split("/")[0] if "/" in image_id else None
