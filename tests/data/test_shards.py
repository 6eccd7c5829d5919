import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from aikd.data.schema import FACE_SCHEMA, ShardSchemaError, label_column, with_columns
from aikd.data.shards import ShardWriter, read_shard, read_shards, shard_files
from aikd.errors import AikdError
from aikd.storage import StorageError, resolve


def _rows(n, start=0):
    return [
        {"image_id": f"s{i % 3}/{i}.jpg", "subject_id": f"s{i % 3}", "image": bytes([i % 256]) * 5,
         "landmarks": [float(i)] * 10, "bbox": None if i % 2 else [0.0, 0.0, 9.0, 9.0]}
        for i in range(start, start + n)
    ]


def test_writer_cuts_shards_of_n_rows_and_reads_back_equal(storage_root):
    rows = _rows(25)
    with ShardWriter(storage_root, rows_per_shard=10) as w:
        w.write_rows(rows[:7])
        w.write_rows(rows[7:])
    assert [pq.read_metadata(f.path, filesystem=f.fs).num_rows for f in shard_files(storage_root)] == [10, 10, 5]
    table = read_shards(storage_root)
    assert table.to_pylist() == pa.Table.from_pylist(rows, schema=FACE_SCHEMA).to_pylist()


def test_label_columns_are_validated(tmp_path):
    schema = with_columns(pa.field(label_column("serfiq"), pa.float32()))
    rows = [dict(r, q_serfiq=0.5) for r in _rows(3)]
    with ShardWriter(str(tmp_path), schema) as w:
        w.write_rows(rows)
    (only,) = shard_files(str(tmp_path))
    assert read_shard(only, labels=("q_serfiq",)).column("q_serfiq").to_pylist() == [0.5] * 3
    with pytest.raises(ShardSchemaError, match="q_crfiqa"):
        read_shard(only, labels=("q_crfiqa",))


def test_reader_names_the_offending_file_and_column(tmp_path):
    good = pa.Table.from_pylist(_rows(2), schema=FACE_SCHEMA)
    pq.write_table(good, tmp_path / "part-00000.parquet")
    pq.write_table(good.drop_columns(["landmarks"]), tmp_path / "part-00001.parquet")
    with pytest.raises(ShardSchemaError) as err:
        read_shards(str(tmp_path))
    assert "part-00001.parquet" in str(err.value) and "'landmarks'" in str(err.value)

    wrong_type = good.set_column(2, "image", pa.array([1, 2]))
    pq.write_table(wrong_type, tmp_path / "part-00001.parquet")
    with pytest.raises(ShardSchemaError, match=r"part-00001.parquet: column 'image' has type int64"):
        read_shards(str(tmp_path))


def test_a_file_that_is_not_parquet_is_named(tmp_path):
    (tmp_path / "part-00000.parquet").write_bytes(b"not parquet")
    with pytest.raises(ShardSchemaError, match="part-00000.parquet: not a readable Parquet"):
        read_shards(str(tmp_path))


def test_empty_prefix_has_no_shards(tmp_path):
    resolve(str(tmp_path / "x")).makedirs()
    with pytest.raises(StorageError, match="no face shards"):
        shard_files(str(tmp_path / "x"))


def test_writer_rejects_bad_shard_size(tmp_path):
    with pytest.raises(AikdError, match="rows_per_shard"):
        ShardWriter(str(tmp_path), rows_per_shard=0)
