"""The face shard format, defined once (see docs/shards.md).

One row per face image: its id, subject, encoded unaligned image, 5 landmarks and an
optional detector box. Label jobs add float columns named ``q_<teacher>``; other extra
columns (e.g. the synthetic generator's degradation record) are allowed and kept.
"""

from __future__ import annotations

import pyarrow as pa

from aikd.errors import AikdError

IMAGE_ID = "image_id"
SUBJECT_ID = "subject_id"
IMAGE = "image"
LANDMARKS = "landmarks"
BBOX = "bbox"
LABEL_PREFIX = "q_"

FACE_SCHEMA = pa.schema(
    [
        pa.field(IMAGE_ID, pa.string(), nullable=False),
        pa.field(SUBJECT_ID, pa.string(), nullable=True),
        pa.field(IMAGE, pa.binary(), nullable=False),
        pa.field(LANDMARKS, pa.list_(pa.float32(), 10), nullable=False),
        pa.field(BBOX, pa.list_(pa.float32(), 4), nullable=True),
    ]
)

REJECTS_SCHEMA = pa.schema(
    [pa.field(IMAGE_ID, pa.string(), nullable=False), pa.field("reason", pa.string(), nullable=False)]
)


class ShardSchemaError(AikdError):
    """A shard whose columns do not follow the face shard format."""


def label_column(teacher: str) -> str:
    return f"{LABEL_PREFIX}{teacher}"


def with_columns(*fields: pa.Field) -> pa.Schema:
    """The face schema plus extra columns (labels, generator metadata)."""
    schema = FACE_SCHEMA
    for field in fields:
        schema = schema.append(field)
    return schema


def _compatible(expected: pa.DataType, actual: pa.DataType) -> bool:
    if expected.equals(actual):
        return True
    # Writers outside aikd may store the fixed-size lists as variable lists or float64.
    if pa.types.is_fixed_size_list(expected) and (
        pa.types.is_list(actual) or pa.types.is_large_list(actual) or pa.types.is_fixed_size_list(actual)
    ):
        return pa.types.is_floating(actual.value_type)
    if pa.types.is_string(expected):
        return pa.types.is_string(actual) or pa.types.is_large_string(actual)
    if pa.types.is_binary(expected):
        return pa.types.is_binary(actual) or pa.types.is_large_binary(actual)
    return False


def validate_schema(schema: pa.Schema, source: str, labels: tuple[str, ...] = ()) -> None:
    """Raise :class:`ShardSchemaError` naming ``source`` and the column that is wrong."""
    required = [f for f in FACE_SCHEMA if f.name != BBOX]
    for field in required:
        idx = schema.get_field_index(field.name)
        if idx < 0:
            raise ShardSchemaError(
                f"{source}: missing column {field.name!r} (expected {field.type}); "
                f"columns present: {schema.names}"
            )
    for field in FACE_SCHEMA:
        idx = schema.get_field_index(field.name)
        if idx >= 0 and not _compatible(field.type, schema.field(idx).type):
            raise ShardSchemaError(
                f"{source}: column {field.name!r} has type {schema.field(idx).type}, "
                f"expected {field.type}"
            )
    for label in labels:
        idx = schema.get_field_index(label)
        if idx < 0:
            found = [n for n in schema.names if n.startswith(LABEL_PREFIX)]
            raise ShardSchemaError(f"{source}: missing label column {label!r}; label columns present: {found}")
        if not pa.types.is_floating(schema.field(idx).type):
            raise ShardSchemaError(
                f"{source}: label column {label!r} has type {schema.field(idx).type}, expected a float"
            )
