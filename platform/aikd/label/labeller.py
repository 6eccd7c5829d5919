"""The label job's actor: holds the teachers (models loaded once) and labels whole shards.

Each shard is read, decoded and properly aligned (no perturbation), scored by every
teacher, and written again under the output with its new ``q_<teacher>`` columns,
followed by a sidecar under ``_progress/`` (a sidecar means the shard is complete).
"""

from __future__ import annotations

import json
import posixpath

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from aikd.config import LabelConfig
from aikd.data.pipeline import aligned_views, decode_valid
from aikd.data.schema import IMAGE_ID, SUBJECT_ID, validate_schema
from aikd.data.shards import write_shard
from aikd.storage import resolve
from aikd.teachers import TeacherBatch, create_teacher

PROGRESS_DIR = "_progress"  # one JSON sidecar per finished shard


class Labeller:
    """Actor: holds the teachers (models loaded once) and labels whole shards."""

    def __init__(self, cfg: LabelConfig):
        import cv2

        cv2.setNumThreads(1)
        self.cfg = cfg
        # a teacher that runs a model finds its device from what Ray gave this actor
        self.teachers = [(spec, create_teacher(spec.name, **spec.options)) for spec in cfg.teachers]
        self.needs_images = any(t.needs_images for _, t in self.teachers)

    def __call__(self, items: dict) -> dict:
        done = [self.label_shard(str(src), str(dst)) for src, dst in zip(items["src"], items["dst"], strict=True)]
        return {"dst": [d["dst"] for d in done], "rows_out": [d["rows_out"] for d in done]}

    def label_shard(self, src: str, dst: str) -> dict:
        source = resolve(src)
        table = pq.read_table(source.path, filesystem=source.fs)
        validate_schema(table.schema, source.uri)
        kept, columns, rejects = [], {spec.column: [] for spec, _ in self.teachers}, []
        unscored = {spec.column: 0 for spec, _ in self.teachers}
        for start in range(0, table.num_rows, self.cfg.batch_size):
            part = table.slice(start, self.cfg.batch_size)
            batch = {n: part.column(n).to_numpy(zero_copy_only=False) for n in part.column_names}
            rows = np.arange(part.num_rows)
            if self.needs_images:
                rows, images, landmarks, bad = decode_valid(batch, rows)
                rejects += bad
                crops: dict[int, np.ndarray] = {}
            for spec, teacher in self.teachers:
                aligned = None
                if teacher.needs_images:
                    size = teacher.input_size
                    if size not in crops:
                        crops[size] = aligned_views(images, landmarks[rows], size)
                    aligned = crops[size]
                scores = teacher.score(TeacherBatch(
                    image_ids=batch[IMAGE_ID][rows], subject_ids=np.asarray(batch[SUBJECT_ID])[rows],
                    aligned=aligned, columns={k: np.asarray(v)[rows] for k, v in batch.items()}))
                columns[spec.column].append(scores.values)
                unscored[spec.column] += len(scores.reasons)
                rejects += [(str(batch[IMAGE_ID][rows[i]]), f"{spec.column}: {why}") for i, why in
                            scores.reasons.items()]
            kept.append(rows + start)
        out = table.take(pa.array(np.concatenate(kept) if kept else np.zeros(0, np.int64)))
        for name, parts in columns.items():
            values = pa.array(np.concatenate(parts) if parts else np.zeros(0, np.float32), pa.float32())
            if name in out.column_names:
                out = out.set_column(out.schema.get_field_index(name), name, values)
            else:
                out = out.append_column(pa.field(name, pa.float32()), values)
        write_shard(resolve(dst), out)
        record = {"src": src, "dst": dst, "rows_in": table.num_rows, "rows_out": out.num_rows,
                  "rejects": rejects, "unscored": unscored}
        # written after the shard: a sidecar means the shard is complete
        sidecar(dst).write_text(json.dumps(record))
        return record


def sidecar(dst: str):
    location = resolve(dst)
    return location.parent().join(PROGRESS_DIR, posixpath.basename(location.path) + ".json")
