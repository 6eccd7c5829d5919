"""Writing and reading face shards on any URI.

Shards are ``part-NNNNN.parquet`` files under one prefix. Side tables live beside them
with a leading underscore (``_rejects.parquet``, ``_summary.json``) so that listing the
shards skips them, as Spark's ``_SUCCESS`` is skipped.
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Iterable, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from aikd.data.schema import FACE_SCHEMA, IMAGE_ID, REJECTS_SCHEMA, ShardSchemaError, validate_schema
from aikd.errors import AikdError
from aikd.storage import Location, StorageError, resolve

REJECTS_FILE = "_rejects.parquet"
SUMMARY_FILE = "_summary.json"  # every job's and every shard writer's summary
DEFAULT_ROWS_PER_SHARD = 2000
ROW_GROUP_ROWS = 256  # the pipeline's unit of work: small enough to balance across workers


class ShardWriter:
    """Append rows; every ``rows_per_shard`` rows become one Parquet file.

    Each shard is written whole from memory, so a crash leaves complete shards only
    (objects on S3 appear atomically; local files are written then renamed).
    """

    def __init__(self, uri: str, schema: pa.Schema = FACE_SCHEMA,
                 rows_per_shard: int = DEFAULT_ROWS_PER_SHARD, prefix: str = "part"):
        if rows_per_shard < 1:
            raise AikdError(f"rows_per_shard must be >= 1, got {rows_per_shard}")
        self.location = resolve(uri)
        self.schema = schema
        self.rows_per_shard = rows_per_shard
        self.prefix = prefix
        self.files: list[str] = []
        self.rows_written = 0
        self._pending: list[pa.RecordBatch] = []
        self._pending_rows = 0
        self.location.makedirs()

    def write_rows(self, rows: list[dict]) -> None:
        if rows:
            self.write_batch(pa.RecordBatch.from_pylist(rows, schema=self.schema))

    def write_batch(self, batch: pa.RecordBatch | pa.Table) -> None:
        if isinstance(batch, pa.Table):
            batches = batch.cast(self.schema).to_batches()
        else:
            batches = [batch if batch.schema.equals(self.schema) else
                       pa.Table.from_batches([batch]).cast(self.schema).combine_chunks().to_batches()[0]]
        for b in batches:
            self._pending.append(b)
            self._pending_rows += b.num_rows
        while self._pending_rows >= self.rows_per_shard:
            table = pa.Table.from_batches(self._pending, schema=self.schema)
            self._flush(table.slice(0, self.rows_per_shard))
            rest = table.slice(self.rows_per_shard)
            self._pending = rest.to_batches()
            self._pending_rows = rest.num_rows

    def _flush(self, table: pa.Table) -> None:
        target = self.location.join(f"{self.prefix}-{len(self.files):05d}.parquet")
        write_shard(target, table)
        self.files.append(target.uri)
        self.rows_written += table.num_rows

    def close(self) -> list[str]:
        if self._pending_rows:
            self._flush(pa.Table.from_batches(self._pending, schema=self.schema))
            self._pending, self._pending_rows = [], 0
        return self.files

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        # On an error, keep the complete shards written so far but not a partial one.
        if exc_type is None:
            self.close()


def write_shard(target: Location, table: pa.Table) -> None:
    """Write one whole shard so that readers never see a partial file.

    Objects on S3 appear atomically when the upload completes; local files are written
    under a hidden name, then renamed.
    """
    if target.is_s3:
        pq.write_table(table, target.path, filesystem=target.fs, row_group_size=ROW_GROUP_ROWS)
        return
    target.parent().makedirs()
    tmp = target.parent().join(f".{posixpath.basename(target.path)}.tmp")
    pq.write_table(table, tmp.path, filesystem=tmp.fs, row_group_size=ROW_GROUP_ROWS)
    tmp.fs.move(tmp.path, target.path)


def shard_files(uri: str | Location) -> list[Location]:
    """The shard files under ``uri`` (a prefix or one file), sorted; error if none."""
    location = uri if isinstance(uri, Location) else resolve(uri)
    try:
        files = location.list_files(suffix=".parquet")
    except StorageError as err:
        raise StorageError(f"no face shards: {err}") from None
    if not files:
        raise StorageError(f"no face shards (*.parquet) under {location.uri}")
    return files


def check_shard(location: Location, labels: tuple[str, ...] = ()) -> pa.Schema:
    """A shard's schema, checked from its footer: errors name the file and the column."""
    try:
        schema = pq.read_schema(location.path, filesystem=location.fs)
    except (pa.ArrowInvalid, OSError) as err:
        raise ShardSchemaError(f"{location.uri}: not a readable Parquet file ({err})") from None
    validate_schema(schema, location.uri, labels)
    return schema


def read_shard(location: Location, columns: list[str] | None = None,
               labels: tuple[str, ...] = ()) -> pa.Table:
    """Read one shard, validating its schema first so errors name the file and column."""
    check_shard(location, labels)
    return pq.read_table(location.path, filesystem=location.fs, columns=columns)


def iter_shards(uri: str, columns: list[str] | None = None,
                labels: tuple[str, ...] = ()) -> Iterator[pa.Table]:
    for location in shard_files(uri):
        yield read_shard(location, columns, labels)


def read_shards(uri: str, columns: list[str] | None = None, labels: tuple[str, ...] = ()) -> pa.Table:
    """All shards under ``uri`` as one table (small sets: tests, evaluation, summaries)."""
    tables = list(iter_shards(uri, columns, labels))
    return pa.concat_tables(tables, promote_options="default")


def write_rejects(uri: str, rejects: Iterable[tuple[str, str]]) -> Location:
    """The rejects table (image_id, reason) beside the shards at ``uri``."""
    rows = [{IMAGE_ID: image_id, "reason": reason} for image_id, reason in rejects]
    target = resolve(uri).join(REJECTS_FILE)
    target.parent().makedirs()
    table = pa.Table.from_pylist(rows, schema=REJECTS_SCHEMA)
    pq.write_table(table, target.path, filesystem=target.fs)
    return target


def read_rejects(uri: str) -> pa.Table:
    target = resolve(uri).join(REJECTS_FILE)
    if not target.exists():
        return REJECTS_SCHEMA.empty_table()
    return pq.read_table(target.path, filesystem=target.fs)


def write_summary(uri: str, summary: dict) -> Location:
    target = resolve(uri).join(SUMMARY_FILE)
    target.write_json(summary)
    return target


def read_summary(uri: str) -> dict:
    return json.loads(resolve(uri).join(SUMMARY_FILE).read_text())
