"""What an ingest job will read, planned on the driver's disk instead of in its memory.

The listing (one folder at a time) and the landmarks table or the reference pickles (a
batch of rows at a time) go into a SQLite file in a temporary folder. One query joins
them in path order, and :meth:`Plan.partitions` cuts its result into partitions of
``images_per_shard`` images as it reads it. The driver so holds one folder's listing, a
batch of rows and one partition at a time, whatever the number of images; the disk
holds a few hundred bytes per image. A JSON landmarks file and the reference pickles are
parsed whole first: their formats cannot be read in parts.

A row is refused here, before any read, when its path leads outside the images root, it
repeats a path, its table row cannot place a face, an image has no table row, or a row
names no image file: these are the plan's rejects. The rest are the partitions' records.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import sqlite3
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from aikd.config.ingest import IngestConfig
from aikd.data.ingest import (
    DUPLICATE,
    NOT_FOUND,
    OUTSIDE_ROOT,
    IngestError,
    Record,
    aikd_records,
    check_records,
    iter_landmarks,
    require_images,
    table_names_no_image,
    walk_images,
)
from aikd.job import digest
from aikd.storage import StorageError, resolve

BATCH = 1_000  # rows per insert or check: the most the driver holds of the listing, the table or the join at once

SCHEMA = """
PRAGMA journal_mode = OFF;
PRAGMA synchronous = OFF;
PRAGMA cache_size = -1024;  -- KiB of pages in memory, the join's sort included: the rest stays on disk
CREATE TABLE files (path TEXT PRIMARY KEY, size INTEGER, mtime INTEGER, outside INTEGER) WITHOUT ROWID;
CREATE TABLE entries (path TEXT, seq INTEGER, record TEXT, PRIMARY KEY (path, seq)) WITHOUT ROWID;
"""

# Every listed file and every table row, in path order; a path's rows in table order (the first one is used).
JOINED = """
SELECT coalesce(f.path, e.path) AS p, f.path IS NOT NULL, f.size, f.mtime, f.outside, e.record
FROM files AS f FULL JOIN entries AS e ON e.path = f.path
ORDER BY p, e.seq
"""

NO_ROW = {"landmarks": None, "bbox": None, "labels": {}, "subject": None}


@dataclass
class Partition:
    name: str  # its shard's file name
    records: list[dict]  # what the job knows of each image before reading it
    inputs: str  # a digest of its images' paths, sizes, modification times and rows, and the settings


class Plan:
    """The inputs of one ingest job, listed and joined (:func:`planned` makes one)."""

    def __init__(self, cfg: IngestConfig, db: sqlite3.Connection):
        self.cfg, self.db = cfg, db
        self.root = resolve(cfg.images)
        self.rejects: list[tuple[str, str]] = []  # filled while partitions() runs
        db.executescript(SCHEMA)
        self._insert("INSERT INTO entries VALUES (?, ?, ?)",
                     ((rec.image_id, seq, json.dumps(_fields(rec))) for seq, rec in enumerate(self._entries())))
        try:
            self._insert("INSERT OR IGNORE INTO files VALUES (?, ?, ?, ?)",
                         walk_images(self.root, cfg.suffixes, missing_ok=True))
        except StorageError as err:
            raise IngestError(f"images: {err}") from None
        self._check()

    def _entries(self) -> Iterable[Record]:
        cfg = self.cfg
        if cfg.reference_pickles:
            return aikd_records(resolve(cfg.landmarks), resolve(cfg.quality) if cfg.quality else None, cfg.label)
        return iter_landmarks(resolve(cfg.landmarks)) if cfg.landmarks is not None else []

    def _insert(self, sql: str, rows: Iterable[tuple]) -> None:
        rows = iter(rows)
        while batch := list(itertools.islice(rows, BATCH)):
            self.db.executemany(sql, batch)

    def _check(self) -> None:
        """The inputs as a whole: some images, and a table that names at least one of them."""
        if self.cfg.reference_pickles:
            return
        first_path = self.db.execute("SELECT min(path) FROM files").fetchone()[0]
        if first_path is None:
            require_images([], self.root, self.cfg.suffixes)
        named = self.db.execute("SELECT count(*) FROM entries").fetchone()[0]
        if named and not self.db.execute("SELECT EXISTS (SELECT 1 FROM entries JOIN files USING (path))").fetchone()[0]:
            first_named = self.db.execute("SELECT path FROM entries WHERE seq = 0").fetchone()[0]
            raise table_names_no_image(self.cfg.landmarks, named, first_named, first_path, self.root)

    def partitions(self) -> Iterator[Partition]:
        """The partitions in path order, made as the join is read; the rows it refuses go to ``rejects``."""
        size = self.cfg.images_per_shard
        rows = self._accepted()
        for k in itertools.count():
            chunk = list(itertools.islice(rows, size))
            if not chunk:
                return
            records, stats = [r for r, _ in chunk], [s for _, s in chunk]
            yield Partition(f"part-{k:05d}.parquet", records, digest([self._settings(), records, stats]))

    def _accepted(self) -> Iterator[tuple[dict, list[int]]]:
        """(record, [size, mtime]) of every row to read, in path order."""
        rows = self._joined()
        while chunk := list(itertools.islice(rows, BATCH)):
            for (record, file), why in zip(chunk, self._problems(chunk), strict=True):
                if why:
                    self.rejects.append((record["image_id"], why))
                else:
                    yield record, file["stat"]

    def _joined(self) -> Iterator[tuple[dict, dict]]:
        """(record, what the listing says of its file) of every row, in path order."""
        last = None
        for path, listed, size, mtime, outside, entry in self.db.execute(JOINED):
            repeat, last = path == last, path
            if self.cfg.reference_pickles and entry is None:
                continue  # the pickles name the images: a file they do not name is not one
            record = {"image_id": path, **(json.loads(entry) if entry else NO_ROW)}
            yield record, {"listed": listed, "outside": outside, "repeat": repeat, "stat": [size, mtime]}

    def _problems(self, chunk: list[tuple[dict, dict]]) -> list[str | None]:
        checks = [None] * len(chunk) if self.cfg.detect else check_records([Record(**r) for r, _ in chunk])
        problems = []
        for (_, file), why in zip(chunk, checks, strict=True):
            if file["outside"]:
                why = OUTSIDE_ROOT  # reached through a link out of the root: never read
            elif file["repeat"]:
                why = DUPLICATE
            problems.append(why or (None if file["listed"] else NOT_FOUND))
        return problems

    def _settings(self) -> dict:
        """What shapes a row besides its image and table row."""
        cfg = self.cfg
        return {"detector": cfg.detector.model_dump() if cfg.detect else None, "margin": cfg.margin,
                "subject": cfg.subject, "label": cfg.label if cfg.quality else None}


def _fields(rec: Record) -> dict:
    return {"landmarks": rec.landmarks, "bbox": rec.bbox, "labels": rec.labels, "subject": rec.subject}


@contextlib.contextmanager
def planned(cfg: IngestConfig) -> Iterator[Plan]:
    """The job's plan, in a temporary folder of the driver's that is removed afterwards. Reads only the inputs:
    a bad table, pickle or images folder is refused here, before anything is written."""
    with tempfile.TemporaryDirectory(prefix="aikd-ingest-plan-") as folder:
        db = sqlite3.connect(os.path.join(folder, "plan.sqlite"))
        try:
            yield Plan(cfg, db)
        finally:
            db.close()
