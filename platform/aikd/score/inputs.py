"""What a scoring job reads: output files planned from the input, work units, and one unit's faces.

An output file is the unit of resume: one per input shard (same name, prefixed with the
input's index when there are several inputs), or one per ``images_per_file`` images of
a folder (``images-NNNNN.parquet``, in sorted path order, so a rerun plans the same
files). A work unit is a row group of a shard, or ``batch_size`` images of a folder.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass, field

import numpy as np

from aikd.config import DataConfig, ScoreConfig
from aikd.data.ingest import IMAGE_SUFFIXES, read_landmarks_file
from aikd.data.pipeline import plan_units, unit_batches
from aikd.data.schema import BBOX, IMAGE, IMAGE_ID, LANDMARKS
from aikd.data.shards import shard_files
from aikd.errors import AikdError
from aikd.storage import resolve


@dataclass
class OutputFile:
    """One output file: its name, the faces that go into it and the work units that read them."""

    name: str
    sources: list[str]
    rows: int = 0
    units: list[dict] = field(default_factory=list)


def plan(cfg: ScoreConfig) -> tuple[list[OutputFile], dict]:
    """The output files of the job and facts about the input (e.g. table entries without an image)."""
    return _plan_shards(cfg) if cfg.shards else _plan_folder(cfg)


def _plan_shards(cfg: ScoreConfig) -> tuple[list[OutputFile], dict]:
    files = []
    for i, uri in enumerate(cfg.shards):
        for shard in shard_files(uri):  # every shard gets its output file, an empty one too
            name = posixpath.basename(shard.path)
            out = OutputFile(f"in{i:02d}-{name}" if len(cfg.shards) > 1 else name, [shard.uri])
            for unit in plan_units(DataConfig(shards=[shard.uri])):
                out.rows += unit.rows
                out.units.append({"file": out.name, "uri": unit.uri, "row_group": unit.row_group, "rows": unit.rows})
            files.append(out)
    return files, {}


def _plan_folder(cfg: ScoreConfig) -> tuple[list[OutputFile], dict]:
    root = resolve(cfg.images)
    paths = sorted(posixpath.relpath(f.path, root.path) for f in root.list_files()
                   if f.path.lower().endswith(IMAGE_SUFFIXES))
    if not paths:
        raise AikdError(f"no images ({', '.join(IMAGE_SUFFIXES)}) under {root.uri}")
    table = read_landmarks_file(resolve(cfg.landmarks)) if cfg.landmarks else {}
    files = []
    for k, start in enumerate(range(0, len(paths), cfg.images_per_file)):
        chunk = paths[start:start + cfg.images_per_file]
        out = OutputFile(f"images-{k:05d}.parquet", [root.uri], rows=len(chunk))
        for u in range(0, len(chunk), cfg.batch_size):
            part = chunk[u:u + cfg.batch_size]
            records = [table.get(p) for p in part]
            out.units.append({"file": out.name, "root": root.uri, "paths": part, "rows": len(part),
                              "landmarks": [r.landmarks if r and r.landmarks else None for r in records],
                              "bbox": [r.bbox if r else None for r in records]})
        files.append(out)
    unmatched = len(set(table) - set(paths))
    return files, {"table_entries_without_image": unmatched} if table else {}


def _numbers(values, width: int) -> np.ndarray:
    return np.asarray(values, np.float64) if values is not None else np.full(width, np.nan)


def read_unit(unit: dict) -> dict:
    """One unit's faces: image_id, encoded image (None: unreadable, with ``reason``), landmarks, box."""
    if "uri" in unit:
        columns = [IMAGE_ID, IMAGE, LANDMARKS, BBOX]
        batch = next(unit_batches(unit["uri"], unit["row_group"], columns, int(unit["rows"])))
        ids = np.asarray(batch[IMAGE_ID]).astype(str)
        return {IMAGE_ID: ids, IMAGE: list(batch[IMAGE]), "reason": [""] * len(ids),
                LANDMARKS: np.stack([_numbers(v, 10) for v in batch[LANDMARKS]]) if len(ids) else np.zeros((0, 10)),
                BBOX: list(batch[BBOX])}
    root = resolve(unit["root"])
    blobs, reasons = [], []
    for path in unit["paths"]:
        try:
            blobs.append(root.join(path).read_bytes())
            reasons.append("")
        except OSError as err:
            blobs.append(None)
            reasons.append(f"unreadable: {str(err).splitlines()[0]}")
    landmarks = [_numbers(v, 10) for v in unit["landmarks"]]
    return {IMAGE_ID: np.asarray(unit["paths"], dtype=str), IMAGE: blobs, "reason": reasons,
            LANDMARKS: np.stack(landmarks) if landmarks else np.zeros((0, 10)), BBOX: list(unit["bbox"])}
