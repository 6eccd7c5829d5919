"""Labels that already exist: a column of the shards, or a table image_id -> score."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from aikd.errors import ComponentError
from aikd.storage import resolve
from aikd.teachers.base import Scores, Teacher, TeacherBatch, register_teacher


@register_teacher("external")
class External(Teacher):
    """Precomputed scores (e.g. DifFIQA(R), the reference's teacher): a shard column or a table joined on image_id.

    Give ``column`` (a column already in the shards) or ``table`` (Parquet or CSV with
    columns image_id and ``score_column``). Ids the table lacks get NaN and are reported.
    """

    needs_images = False
    one_of = ("column", "table")

    def __init__(self, column: str | None = None, table: str | None = None, score_column: str = "score",
                 higher_is_better: bool = True):
        if (column is None) == (table is None):
            raise ComponentError("external teacher: give exactly one of 'column' or 'table'")
        self.column, self.higher_is_better = column, higher_is_better
        self.lookup: dict[str, float] | None = None
        if table is not None:
            self.lookup = _read_table(table, score_column)

    def score(self, batch: TeacherBatch) -> Scores:
        if self.column is not None:
            if self.column not in batch.columns:
                raise ComponentError(f"external teacher: column {self.column!r} not in the shards; "
                                 f"columns: {sorted(batch.columns)}")
            values = np.asarray(batch.columns[self.column], np.float32)
            reasons = {i: f"non-finite value in {self.column}" for i in np.flatnonzero(~np.isfinite(values))}
            return Scores(values, reasons)
        values = np.array([self.lookup.get(str(i), np.nan) for i in batch.image_ids], np.float32)
        reasons = {i: "image_id not in the external table" for i in np.flatnonzero(np.isnan(values))}
        return Scores(values, reasons)


def _read_table(uri: str, score_column: str) -> dict[str, float]:
    location = resolve(uri)
    if not location.exists():
        raise ComponentError(f"external label table not found: {location.uri}")
    with location.fs.open_input_file(location.path) as f:
        table = pacsv.read_csv(f) if location.path.endswith(".csv") else pq.read_table(f)
    for name in ("image_id", score_column):
        if name not in table.column_names:
            raise ComponentError(f"{location.uri}: needs columns image_id and {score_column!r}; "
                                 f"has {table.column_names}")
    ids = table.column("image_id").cast(pa.string()).to_pylist()
    scores = table.column(score_column).cast(pa.float64()).to_pylist()
    return {i: (np.nan if s is None else s) for i, s in zip(ids, scores, strict=True)}
