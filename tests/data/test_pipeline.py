import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError

from aikd.align import align
from aikd.config import DataConfig
from aikd.data.pipeline import face_pipeline, logged_rejects, reject_log, split_batches
from aikd.data.schema import ShardSchemaError
from aikd.data.shards import read_shards
from aikd.data.split import held_out
from aikd.data.synth import SynthConfig, write_synthetic
from aikd.errors import ConfigError


def _collect(pipeline):
    """All rows of a pipeline run, in image_id order (Ray may deliver blocks in any order)."""
    batches = list(pipeline.dataset.iter_batches(batch_size=None, batch_format="numpy"))
    out = {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}
    order = np.lexsort((out["image_id"], out["epoch"]))
    return {k: v[order] for k, v in out.items()}


@pytest.fixture
def labelled_shards(tmp_path, synth_shards):
    table = read_shards(synth_shards)
    table = table.append_column("q_test", pa.array(np.linspace(0, 1, table.num_rows), pa.float32()))
    pq.write_table(table, tmp_path / "part-00000.parquet")
    return str(tmp_path)


def test_batches_hold_aligned_and_misaligned_views(ray_local, synth_shards):
    cfg = DataConfig(shards=[synth_shards], image_size=64, val_fraction=0.2, seed=1)
    rows = _collect(face_pipeline(cfg, "train"))
    assert rows["aligned"].shape[1:] == (64, 64, 3) and rows["aligned"].dtype == np.uint8
    assert rows["misaligned"].shape == rows["aligned"].shape
    assert "quality" not in rows
    # the aligned view is exactly the single-image alignment of the source (as RGB)
    source = {r["image_id"]: r for r in read_shards(synth_shards).to_pylist()}
    import cv2

    first = source[rows["image_id"][0]]
    image = cv2.imdecode(np.frombuffer(first["image"], np.uint8), cv2.IMREAD_COLOR)
    np.testing.assert_array_equal(rows["aligned"][0], align(image, first["landmarks"], 64)[..., ::-1])
    assert np.abs(rows["aligned"].astype(int) - rows["misaligned"]).mean() > 1.0


def test_split_is_stable_disjoint_and_validation_is_not_perturbed(ray_local, synth_shards):
    cfg = DataConfig(shards=[synth_shards], image_size=32, val_fraction=0.25, seed=2)
    train, val = _collect(face_pipeline(cfg, "train")), _collect(face_pipeline(cfg, "val"))
    assert not set(train["image_id"]) & set(val["image_id"])
    assert len(train["image_id"]) + len(val["image_id"]) == 120
    assert 15 <= len(val["image_id"]) <= 45
    assert "misaligned" not in val
    other_seed = DataConfig(shards=[synth_shards], image_size=32, val_fraction=0.25, seed=3)
    assert set(_collect(face_pipeline(other_seed, "val"))["image_id"]) != set(val["image_id"])


def test_same_seed_same_batches_new_epoch_new_noise(ray_local, synth_shards):
    cfg = DataConfig(shards=[synth_shards], image_size=48, val_fraction=0.1, seed=4)
    a = _collect(face_pipeline(cfg, "train", epochs=range(0, 1)))
    b = _collect(face_pipeline(cfg, "train", epochs=range(0, 1)))
    c = _collect(face_pipeline(cfg, "train", epochs=range(1, 2)))
    assert set(a["epoch"]) == {0} and set(c["epoch"]) == {1}
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    np.testing.assert_array_equal(a["aligned"], c["aligned"])
    changed = [not np.array_equal(x, y) for x, y in zip(a["misaligned"], c["misaligned"], strict=True)]
    assert np.mean(changed) > 0.95


def test_several_epochs_stream_through_one_dataset(ray_local, synth_shards):
    cfg = DataConfig(shards=[synth_shards], image_size=32, val_fraction=0.0, seed=4)
    pipeline = face_pipeline(cfg, "train", epochs=2)
    assert pipeline.rows_per_epoch == 120
    rows = _collect(pipeline)
    assert len(rows["image_id"]) == 240 and np.bincount(rows["epoch"]).tolist() == [120, 120]
    first, second = (rows["epoch"] == 0), (rows["epoch"] == 1)
    np.testing.assert_array_equal(rows["image_id"][first], rows["image_id"][second])
    np.testing.assert_array_equal(rows["aligned"][first], rows["aligned"][second])
    assert not np.array_equal(rows["misaligned"][first], rows["misaligned"][second])


def test_strength_zero_means_no_misalignment(ray_local, synth_shards):
    cfg = DataConfig(shards=[synth_shards], image_size=32, misalignment=0.0, val_fraction=0.0)
    rows = _collect(face_pipeline(cfg, "train"))
    np.testing.assert_array_equal(rows["aligned"], rows["misaligned"])


def test_label_column_becomes_quality(ray_local, labelled_shards):
    cfg = DataConfig(shards=[labelled_shards], label="q_test", image_size=32, val_fraction=0.0)
    rows = _collect(face_pipeline(cfg, "all"))
    table = read_shards(labelled_shards)
    expected = dict(zip(table.column("image_id").to_pylist(), table.column("q_test").to_pylist(), strict=True))
    np.testing.assert_allclose(rows["quality"], [expected[i] for i in rows["image_id"]])


def test_bad_rows_are_rejected_with_a_reason_and_the_stream_goes_on(ray_local, tmp_path, synth_shards):
    table = read_shards(synth_shards).slice(0, 30)
    images = table.column("image").to_pylist()
    landmarks = table.column("landmarks").to_pylist()
    images[3] = b"\xff\xd8garbage"
    landmarks[5] = [float("nan")] * 10
    landmarks[7] = [10.0] * 10
    table = table.set_column(table.schema.get_field_index("image"), "image", pa.array(images, pa.binary()))
    table = table.set_column(table.schema.get_field_index("landmarks"), "landmarks",
                             pa.array(landmarks, table.schema.field("landmarks").type))
    pq.write_table(table, tmp_path / "part-00000.parquet")
    pipeline = face_pipeline(DataConfig(shards=[str(tmp_path)], image_size=32, val_fraction=0.0), "train")
    rows = _collect(pipeline)
    ids = table.column("image_id").to_pylist()
    assert len(rows["image_id"]) == 27
    assert dict(pipeline.rejects()) == {ids[3]: "undecodable image", ids[5]: "non-finite landmarks",
                                        ids[7]: "coincident landmarks"}


def test_validation_rows_read_in_one_process_are_the_streams_and_stop_at_the_limit(ray_local, tmp_path,
                                                                                   synth_shards):
    cfg = DataConfig(shards=[str(tmp_path)], image_size=32, val_fraction=0.5, misaligned_view=True,
                     val_misaligned=True)
    table = read_shards(synth_shards)
    bad = int(np.flatnonzero(held_out({"image_id": table["image_id"].to_pylist()}, cfg))[0])  # a validation row
    images = table.column("image").to_pylist()
    images[bad] = b"\xff\xd8garbage"
    pq.write_table(table.set_column(table.schema.get_field_index("image"), "image", pa.array(images, pa.binary())),
                   tmp_path / "part-00000.parquet", row_group_size=40)
    stream = face_pipeline(cfg, "val")
    want, log = _collect(stream), reject_log()
    batches = list(split_batches(cfg, "val", stream.units, log))
    got = {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}
    order = np.argsort(got["image_id"])
    for key in ("image_id", "aligned", "misaligned"):
        np.testing.assert_array_equal(got[key][order], want[key])
    assert logged_rejects(log) == stream.rejects() == [(table["image_id"][bad].as_py(), "undecodable image")]
    limited = list(split_batches(cfg, "val", stream.units, limit=10))  # whole batches, until 10 rows or more
    assert sum(len(b["image_id"]) for b in limited[:-1]) < 10 <= sum(len(b["image_id"]) for b in limited)


def test_a_missing_label_column_names_the_file(ray_local, synth_shards):
    with pytest.raises(ShardSchemaError, match=r"part-00000.parquet: missing label column 'q_serfiq'"):
        face_pipeline(DataConfig(shards=[synth_shards], label="q_serfiq"))


def test_pipeline_reads_shards_from_s3(ray_local, s3_server):
    uri = "s3://aikd-test/pipeline-faces"
    write_synthetic(uri, SynthConfig(identities=3, samples_per_identity=4, seed=9), rows_per_shard=5)
    rows = _collect(face_pipeline(DataConfig(shards=[uri], image_size=32, val_fraction=0.0), "train"))
    assert len(rows["image_id"]) == 12


def test_data_config_errors_name_the_field():
    with pytest.raises(ValidationError, match="misalignment"):
        DataConfig(shards=["x"], misalignment=-1)
    with pytest.raises(ValidationError, match="label"):
        DataConfig(shards=["x"], label="serfiq")
    with pytest.raises(ValidationError, match="unknown_key|extra"):
        DataConfig(shards=["x"], unknown_key=1)


def test_the_pipeline_must_warp_to_the_side_the_model_takes():
    DataConfig(shards=["x"], image_size=64).require_input_size(64, "iresnet_tiny")
    with pytest.raises(ConfigError, match="image_size is 112 but the student takes 64x64: set data.image_size: 64"):
        DataConfig(shards=["x"]).require_input_size(64, "the student")


def test_identities_can_be_held_out_whole(ray_local, synth_shards):
    cfg = DataConfig(shards=[synth_shards], image_size=32, val_fraction=0.3, split_by="subject_id",
                     misaligned_view=False)
    train, val = _collect(face_pipeline(cfg, "train")), _collect(face_pipeline(cfg, "val"))
    assert "misaligned" not in train
    assert set(train["subject_id"]).isdisjoint(val["subject_id"]) and len(set(val["subject_id"])) >= 1
    assert len(train["image_id"]) + len(val["image_id"]) == 120
    assert all(i.startswith(s + "/") for i, s in zip(val["image_id"], val["subject_id"], strict=True))
