"""What a scoring job reads: output files planned from the input, work units, and one unit's faces.

An output file is the unit of resume: one per input shard (same name, prefixed with the
input's index when there are several inputs), or one per ``images_per_file`` images of
a folder (``images-NNNNN.parquet``, in sorted path order, so a rerun plans the same
files). A work unit is a row group of a shard, or ``batch_size`` images of a folder.

Every face is a row in and comes out scored or rejected with a reason. An image_id that
an earlier row (in plan order: inputs, shards, rows) already has is rejected as
"duplicate image_id", so each id is scored once whatever the gallery holds; the plan
finds them from the shards' image_id columns, before any work. Evaluation plans its
faces the same way (:func:`plan_shards`), so both jobs find duplicates alike.

Each unit's ``start`` is the plan position of its first row: rows carry it on (``order``)
so a job can put what comes back, in whatever order, into plan order.

Each output file also carries a digest of its inputs (``inputs``): the shard's size and
modification time, or for a folder each image's path, size and modification time and
its landmarks-table row. A rerun scores a file again when that digest changed, so a
fixed table row or an added image is never skipped as "done before".

A folder with a landmarks table also plans the table's own problems as rejects: an
image with no row ("no row in the landmarks table"), a row whose image is not there
("image file not found"), a row naming a path outside the images root. An image reached
through a symbolic link that leads outside the root is rejected the same way, unread. A table none of
whose rows names an image under the root is a user error, not a job that rejects
everything.
"""

from __future__ import annotations

import posixpath
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from aikd.config import DataConfig, ScoreConfig
from aikd.data.ingest import (
    DUPLICATE,
    OUTSIDE_ROOT,
    outside_root,
    read_landmarks_file,
    require_images,
    require_table_names_images,
    walk_images,
)
from aikd.data.pipeline import plan_units, unit_batches
from aikd.data.schema import BBOX, IMAGE, IMAGE_ID, LANDMARKS, SUBJECT_ID
from aikd.data.shards import shard_files
from aikd.job import digest
from aikd.storage import resolve

ORDER = "order"  # a row's position in plan order
NO_ROW = "no row in the landmarks table"
NOT_FOUND = "image file not found"


@dataclass
class OutputFile:
    """One output file: its name, the faces that go into it and the work units that read them."""

    name: str
    sources: list[str]
    rows: int = 0
    units: list[dict] = field(default_factory=list)
    inputs: str = ""  # digest of what goes in: a rerun scores the file again when it changed


def plan(cfg: ScoreConfig) -> tuple[list[OutputFile], dict, list[tuple[str, str]]]:
    """The output files of the job, facts about the input, and the rows rejected by the plan itself
    (a landmarks table's rows without an image)."""
    return (plan_shards(cfg.shards), {}, []) if cfg.shards else _plan_folder(cfg)


def plan_shards(shards: list[str]) -> list[OutputFile]:
    """One output file per shard of ``shards`` (face shard prefixes or files), later duplicate ids marked."""
    files = []
    for i, uri in enumerate(shards):
        for shard in shard_files(uri):  # every shard gets its output file, an empty one too
            name = posixpath.basename(shard.path)
            info = shard.info()
            out = OutputFile(f"in{i:02d}-{name}" if len(shards) > 1 else name, [shard.uri],
                             inputs=digest([shard.uri, info.size, info.mtime_ns]))
            for unit in plan_units(DataConfig(shards=[shard.uri])):
                out.rows += unit.rows
                out.units.append({"file": out.name, "uri": unit.uri, "row_group": unit.row_group, "rows": unit.rows,
                                  "duplicates": []})
            files.append(out)
    units = [u for f in files for u in f.units]
    mark_duplicates(units)
    _number_rows(units)
    return files


def _number_rows(units: list[dict]) -> None:
    start = 0
    for u in units:
        u["start"] = start
        start += u["rows"]


def _image_ids(uri: str) -> pa.Array:
    location = resolve(uri)
    column = pq.read_table(location.path, filesystem=location.fs, columns=[IMAGE_ID]).column(IMAGE_ID)
    return column.cast(pa.large_string()).combine_chunks()


def mark_duplicates(units: list[dict]) -> None:
    """Set each shard unit's ``duplicates``: its rows (within the row group) whose image_id an earlier
    row of ``units`` already has. Only the image_id columns are read."""
    uris = list(dict.fromkeys(u["uri"] for u in units))
    with ThreadPoolExecutor(16) as pool:  # one column read per shard: round trips to storage
        ids = dict(zip(uris, pool.map(_image_ids, uris), strict=True))
    offsets: dict[str, int] = {}
    parts = []
    for u in units:  # a shard's units are its row groups in order
        start = offsets.get(u["uri"], 0)
        parts.append(ids[u["uri"]].slice(start, u["rows"]))
        offsets[u["uri"]] = start + u["rows"]
    if not parts:
        return
    table = pa.table({"id": pa.chunked_array(parts, pa.large_string()),
                      "n": pa.array(np.arange(sum(u["rows"] for u in units)))})
    first = table.group_by("id", use_threads=False).aggregate([("n", "min")]).column("n_min").to_numpy()
    if len(first) == table.num_rows:
        return  # every id once: the usual case
    later = np.ones(table.num_rows, bool)
    later[first] = False
    start = 0
    for u in units:
        u["duplicates"] = np.flatnonzero(later[start:start + u["rows"]]).tolist()
        start += u["rows"]


def _plan_folder(cfg: ScoreConfig) -> tuple[list[OutputFile], dict, list[tuple[str, str]]]:
    root = resolve(cfg.images)
    listed = list(walk_images(root))
    stats = {path: (size, mtime) for path, size, mtime, _ in listed}
    linked_out = [path for path, *_, outside in listed if outside]  # never read: rejects of the plan
    paths = [path for path, *_, outside in listed if not outside]  # the walk's order: sorted
    require_images(paths, root)
    table = read_landmarks_file(resolve(cfg.landmarks)) if cfg.landmarks else {}
    require_table_names_images(cfg.landmarks, list(table), paths, root)
    files = []
    for k, start in enumerate(range(0, len(paths), cfg.images_per_file)):
        chunk = paths[start:start + cfg.images_per_file]
        records = [table.get(p) for p in chunk]
        rows = [[p, stats[p], (r.landmarks, r.bbox) if r else None] for p, r in zip(chunk, records, strict=True)]
        out = OutputFile(f"images-{k:05d}.parquet", [root.uri], rows=len(chunk),
                         inputs=digest([root.uri, cfg.landmarks is not None, rows]))
        for u in range(0, len(chunk), cfg.batch_size):
            part, part_records = chunk[u:u + cfg.batch_size], records[u:u + cfg.batch_size]
            out.units.append({"file": out.name, "root": root.uri, "paths": part, "rows": len(part),
                              "landmarks": [r.landmarks if r and r.landmarks else None for r in part_records],
                              "bbox": [r.bbox if r else None for r in part_records],
                              "reasons": [NO_ROW if table and r is None else "" for r in part_records]})
        files.append(out)
    _number_rows([u for f in files for u in f.units])
    unmatched = sorted(set(table) - set(paths))  # rows naming no image: rejects too, never lost
    rejects = [(p, OUTSIDE_ROOT if outside_root(p) else NOT_FOUND) for p in unmatched if p not in linked_out]
    facts = {"table_entries_without_image": sum(r == NOT_FOUND for _, r in rejects),
             "table_entries_outside_root": sum(r == OUTSIDE_ROOT for _, r in rejects)}
    return files, facts if table else {}, rejects + [(p, OUTSIDE_ROOT) for p in linked_out]


def _numbers(values, width: int) -> np.ndarray:
    return np.asarray(values, np.float64) if values is not None else np.full(width, np.nan)


def read_unit(unit: dict) -> dict:
    """One unit's faces: image_id, subject_id ('' for a folder), encoded image (None: unreadable, with
    ``reason``), landmarks, box."""
    if "uri" in unit:
        columns = [IMAGE_ID, SUBJECT_ID, IMAGE, LANDMARKS, BBOX]
        batch = next(unit_batches(unit["uri"], unit["row_group"], columns, int(unit["rows"])))
        ids = np.asarray(batch[IMAGE_ID]).astype(str)
        reasons = [""] * len(ids)
        for row in unit.get("duplicates", ()):
            reasons[int(row)] = DUPLICATE  # a later row of an id: the first one is scored
        return {IMAGE_ID: ids, SUBJECT_ID: np.asarray(batch[SUBJECT_ID]).astype(str), IMAGE: list(batch[IMAGE]),
                "reason": reasons,
                LANDMARKS: np.stack([_numbers(v, 10) for v in batch[LANDMARKS]]) if len(ids) else np.zeros((0, 10)),
                BBOX: list(batch[BBOX])}
    root = resolve(unit["root"])
    blobs, reasons = [], []
    planned_reasons = unit.get("reasons")  # through Ray Data: an array
    if planned_reasons is None:
        planned_reasons = [""] * len(unit["paths"])
    for path, planned in zip(unit["paths"], planned_reasons, strict=True):
        if planned:  # rejected by the plan: not read
            blobs.append(None)
            reasons.append(planned)
            continue
        if outside_root(path):  # the plan lists files under the root, so only a hand-made unit gets here
            blobs.append(None)
            reasons.append(OUTSIDE_ROOT)
            continue
        try:
            blobs.append(root.join(path).read_bytes())
            reasons.append("")
        except OSError as err:
            blobs.append(None)
            reasons.append(f"unreadable: {str(err).splitlines()[0]}")
    landmarks = [_numbers(v, 10) for v in unit["landmarks"]]
    return {IMAGE_ID: np.asarray(unit["paths"], dtype=str), SUBJECT_ID: np.full(len(blobs), "", dtype=str),
            IMAGE: blobs, "reason": reasons,
            LANDMARKS: np.stack(landmarks) if landmarks else np.zeros((0, 10)), BBOX: list(unit["bbox"])}
