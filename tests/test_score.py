"""Batch scoring (`aikd score`): one score per face, equal to the student's own, resumable, rejects with reasons."""

import json

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
import torch
from mlflow import MlflowClient

from aikd.config import RegisterConfig, ScoreConfig
from aikd.data.pipeline import aligned_views, decode_valid
from aikd.data.shards import read_rejects, read_shards, write_shard
from aikd.data.synth import SYNTH_SCHEMA, SynthConfig, generate_rows, write_synthetic
from aikd.errors import ConfigError
from aikd.models.student import create_student
from aikd.models.weights import card_for, preprocess_of, save_model
from aikd.registry import register
from aikd.score import run as score_run
from aikd.score.run import read_scores, run_score
from aikd.storage import resolve
from aikd.tracking import Tracker, experiment_id

HALF = {"workers": 1, "cpus_per_worker": 0.5}


def _student(path, seed: int) -> str:
    torch.manual_seed(seed)
    model = create_student("iresnet_tiny")
    save_model(model, str(path), card_for(model, "student"))
    return str(path)


def _spec(out, models, **kw) -> ScoreConfig:
    return ScoreConfig(out=str(out), models=models, decode=HALF, resources=HALF, progress_every_s=0.5, **kw)


def _table(out) -> pa.Table:
    return read_scores(str(out)).sort_by([("image_id", "ascending"), ("model", "ascending")])


def _direct(model_dir: str, shards: str) -> dict[str, float]:
    """The student called directly on the aligned crops of every face: image_id -> quality."""
    from aikd.models.weights import load_model

    model, card = load_model(model_dir)
    table = read_shards(shards)
    batch = {k: table.column(k).to_numpy(zero_copy_only=False) for k in table.column_names}
    rows, images, landmarks, _ = decode_valid(batch, np.arange(table.num_rows))
    crops = aligned_views(images, landmarks[rows], card.input_size)
    with torch.no_grad():
        q = model.eval()(preprocess_of(model)(crops))[1].numpy().reshape(-1)
    return dict(zip(batch["image_id"][rows].astype(str), q.tolist(), strict=True))


@pytest.fixture(scope="module")
def gallery(s3_server, tmp_path_factory):
    """120 synthetic faces in 3 shards on the local S3 server, and a student."""
    root = tmp_path_factory.mktemp("score")
    shards = "s3://aikd-test/gallery/faces"
    write_synthetic(shards, SynthConfig(identities=12, samples_per_identity=10, seed=3), rows_per_shard=40)
    return shards, _student(root / "student", 0), root


@pytest.fixture(scope="module")
def scored(ray_local, gallery):
    """The gallery scored by its student ("s") and a second one ("b") in one pass."""
    shards, student, root = gallery
    models = [{"name": "s", "model": student}, {"name": "b", "model": _student(root / "student3", 2)}]
    cfg = _spec("s3://aikd-test/gallery/scores", models, shards=[shards], backend="torch")
    return cfg, run_score(cfg)


def _of(table: pa.Table, model: str) -> pa.Table:
    return table.filter(pc.equal(table["model"], model))


def test_every_face_gets_exactly_one_score_equal_to_the_students_own(scored, gallery):
    cfg, summary = scored
    shards, student, _ = gallery
    table = _of(_table(cfg.out), "s")
    expected = _direct(student, shards)
    ids = table.column("image_id").to_pylist()
    assert sorted(ids) == sorted(expected) and len(set(ids)) == len(ids) == 120
    got = dict(zip(ids, table.column("quality").to_pylist(), strict=True))
    assert max(abs(got[i] - expected[i]) for i in ids) <= 1e-5
    assert set(table.column("alignment").to_pylist()) == {"landmarks"}
    assert summary["counts"]["rows"] == summary["counts"]["rows_scored"] == 120 and summary["counts"]["rejected"] == 0
    assert [f.path.rsplit("/", 1)[-1] for f in resolve(cfg.out).list_files(".parquet")] == [
        "part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]  # one per input shard, same names
    manifest = json.loads(resolve(cfg.out).join("_manifest.json").read_text())
    assert [(m["rows_in"], m["rows_scored"]) for m in manifest] == [(40, 40)] * 3
    assert set(summary["quality_quantiles"]["s"]) == {"q01", "q05", "q25", "q50", "q75", "q95", "q99"}


def test_the_onnx_backend_scores_like_torch(ray_local, scored, gallery, tmp_path):
    cfg, _ = scored
    shards, student, _ = gallery
    onnx = run_score(_spec(tmp_path / "onnx", [{"name": "s", "model": student}], shards=[shards], backend="onnx"))
    assert onnx["counts"]["rows_scored"] == 120
    a, b = _of(_table(cfg.out), "s")["quality"].to_numpy(), _table(tmp_path / "onnx")["quality"].to_numpy()
    assert np.abs(a - b).max() <= 1e-4  # ONNX Runtime's kernels round differently from torch's


def test_a_crashed_run_started_again_gives_the_same_table(ray_local, scored, gallery, tmp_path, monkeypatch):
    cfg, _ = scored
    shards, _, _ = gallery
    out = tmp_path / "crash"
    spec = _spec(out, [m.model_dump() for m in cfg.models], shards=[shards], backend="torch")
    real, written = score_run.write_file, []

    def crash_after_one(*args, **kwargs):
        if written:
            raise RuntimeError("killed")
        written.append(args[2].name)
        return real(*args, **kwargs)

    monkeypatch.setattr(score_run, "write_file", crash_after_one)
    with pytest.raises(RuntimeError, match="killed"):
        run_score(spec)
    monkeypatch.setattr(score_run, "write_file", real)
    again = run_score(spec)
    assert again["counts"]["files_done_before"] == 1 and again["counts"]["files_scored_now"] == 2
    assert _table(out).equals(_table(cfg.out))  # no duplicates, nothing missing, same scores
    assert run_score(spec)["counts"]["files_scored_now"] == 0  # a finished job rerun only summarises


def _bad_shard(target: str) -> dict[str, str]:
    """A shard with planted bad faces among good ones; returns image_id -> the reason expected."""
    rows = list(generate_rows(SynthConfig(identities=2, samples_per_identity=6, seed=9)))
    rows[0]["image"] = rows[0]["image"][: len(rows[0]["image"]) // 3]  # truncated JPEG
    rows[1]["image"] = b"not an image at all"
    rows[2]["image"] = b""
    rows[3]["landmarks"] = [float("nan")] * 10
    rows[4]["landmarks"] = [50.0, 50.0] * 5  # coincident points
    write_shard(resolve(target).join("part-00000.parquet"),
                pa.Table.from_pylist([{k: r[k] for k in SYNTH_SCHEMA.names} for r in rows], schema=SYNTH_SCHEMA))
    write_shard(resolve(target).join("part-00001.parquet"), SYNTH_SCHEMA.empty_table())  # an empty shard
    return {rows[i]["image_id"]: why for i, why in enumerate(
        ["undecodable", "undecodable", "empty", "landmark", "coincident"])}


def test_bad_faces_go_to_the_rejects_with_reasons_and_the_job_goes_on(ray_local, gallery, tmp_path):
    _, student, _ = gallery
    planted = _bad_shard(str(tmp_path / "bad"))
    summary = run_score(_spec(tmp_path / "out", [{"name": "s", "model": student}], shards=[str(tmp_path / "bad")]))
    rejects = {r["image_id"]: r["reason"] for r in read_rejects(str(tmp_path / "out")).to_pylist()}
    truncated = next(iter(planted))
    assert set(rejects) <= set(planted) and set(planted) - {truncated} <= set(rejects)
    for image_id, reason in rejects.items():
        assert planted[image_id] in reason.lower()
    counts = summary["counts"]
    assert counts["rows"] == 12 == counts["rows_scored"] + counts["rejected"]  # counts add up
    assert counts["files"] == 2 and read_scores(str(tmp_path / "out" / "part-00001.parquet")).num_rows == 0
    assert _table(tmp_path / "out").num_rows == counts["rows_scored"]


def test_a_folder_of_pre_aligned_crops_is_scored_as_it_is(ray_local, gallery, tmp_path):
    shards, student, _ = gallery
    table = read_shards(shards).slice(0, 20)
    batch = {k: table.column(k).to_numpy(zero_copy_only=False) for k in table.column_names}
    rows, images, landmarks, _ = decode_valid(batch, np.arange(20))
    crops = aligned_views(images, landmarks[rows], 64)
    folder = tmp_path / "crops"
    for k, crop in enumerate(crops):
        (folder / f"p{k % 3}").mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(folder / f"p{k % 3}" / f"{k:03d}.png"), cv2.cvtColor(crop, cv2.COLOR_RGB2BGR))
    summary = run_score(_spec(tmp_path / "out", [{"name": "s", "model": student}], images=str(folder),
                              alignment="aligned", images_per_file=8, backend="torch"))
    assert summary["counts"]["files"] == 3 and summary["counts"]["rows_scored"] == 20
    from aikd.models.weights import load_model

    model, _ = load_model(student)
    with torch.no_grad():
        expected = model.eval()(preprocess_of(model)(crops))[1].numpy().reshape(-1)
    got = {r["image_id"]: r["quality"] for r in _table(tmp_path / "out").to_pylist()}
    names = [f"p{k % 3}/{k:03d}.png" for k in range(20)]
    assert sorted(got) == sorted(names)
    assert max(abs(got[n] - e) for n, e in zip(names, expected, strict=True)) <= 1e-5


def test_a_moved_alias_is_scored_with_the_new_version_and_says_so(ray_local, gallery, tracking_db, tmp_path):
    shards, first, root = gallery
    second = _student(root / "student2", 1)
    client = MlflowClient(tracking_db)
    experiment = experiment_id(client, tracking_db, "score-tests")  # artifacts beside the database
    versions = []
    for path in (first, second):
        tracker = Tracker(tracking_db, client.create_run(experiment).info.run_id)
        versions.append(register(resolve(path), RegisterConfig(name="gallery-student", aliases=["production"]),
                                 tracker, spec={}, tags={}, description="", onnx=False)["version"])
    client.set_registered_model_alias("gallery-student", "production", versions[0])
    spec = _spec(tmp_path / "out", [{"name": "prod", "model": "models:/gallery-student@production"}],
                 shards=[shards], backend="torch")
    before = run_score(spec)
    assert before["models"][0]["version"] == versions[0] and before["counts"]["files_scored_now"] == 3
    client.set_registered_model_alias("gallery-student", "production", versions[1])
    after = run_score(spec)
    assert after["models"][0]["version"] == versions[1]
    assert after["counts"]["files_scored_now"] == 3 and len(after["rescored_stale"]) == 3  # stale files scored again
    table = _table(tmp_path / "out")
    assert set(table.column("model_version").to_pylist()) == {versions[1]}
    assert set(table.column("model_uri").to_pylist()) == {f"models:/gallery-student/{versions[1]}"}
    expected = _direct(second, shards)
    got = dict(zip(table.column("image_id").to_pylist(), table.column("quality").to_pylist(), strict=True))
    assert max(abs(got[i] - expected[i]) for i in expected) <= 1e-5


def test_several_models_in_one_pass(scored):
    cfg, summary = scored
    table = _table(cfg.out)
    assert summary["counts"]["rows_scored"] == 120 and table.num_rows == 240
    by_model = {m: _of(table, m) for m in ("s", "b")}
    assert by_model["s"].column("image_id").equals(by_model["b"].column("image_id"))
    assert not np.allclose(by_model["s"]["quality"].to_numpy(), by_model["b"]["quality"].to_numpy())


def test_specs_name_what_is_wrong(tmp_path):
    with pytest.raises(ValueError, match="exactly one input"):
        ScoreConfig(out="x", models=[{"name": "s", "model": "m"}])
    with pytest.raises(ValueError, match="needs landmarks or boxes"):
        ScoreConfig(out="x", images="imgs", models=[{"name": "s", "model": "m"}])
    with pytest.raises(ValueError, match="set decode.gpus_per_worker: 0"):
        ScoreConfig(out="x", shards=["s"], models=[{"name": "s", "model": "m"}], decode={"gpus_per_worker": 1})
    with pytest.raises(ValueError, match="model names must be distinct"):
        ScoreConfig(out="x", shards=["s"], models=[{"name": "s", "model": "m"}, {"name": "s", "model": "n"}])
    with pytest.raises(ConfigError, match="models:/<name>/<version>"):
        from aikd.registry import resolve_models

        resolve_models(ScoreConfig(out="x", shards=["s"], models=[{"name": "s", "model": "models:/x@"}]),
                       resolve(tmp_path))


def test_the_shipped_spec_validates():
    from aikd.spec import load_spec

    cfg = load_spec("jobs/score.yaml", ScoreConfig)
    assert cfg.models[0].model == "models:/aikd-student@candidate" and cfg.alignment == "landmarks"


def _raw_folder(gallery, folder, n: int) -> list[str]:
    """``n`` of the gallery's photos as files ``<subject>/<k>.<ext>`` under ``folder``; their CSV table rows."""
    table = read_shards(gallery[0]).slice(0, n).to_pylist()
    rows = []
    for k, r in enumerate(table):
        ext = "png" if r["image"].startswith(b"\x89PNG") else "jpg"
        path = f"{r['subject_id']}/{k:03d}.{ext}"
        (folder / r["subject_id"]).mkdir(parents=True, exist_ok=True)
        (folder / path).write_bytes(r["image"])
        rows.append(",".join([path, *(f"{v:.3f}" for v in r["landmarks"])]))
    return rows


def test_a_landmarks_tables_gaps_are_rejects_and_a_fixed_table_is_scored_again(ray_local, gallery, tmp_path):
    from aikd.data.ingest import OUTSIDE_ROOT
    from aikd.errors import AikdError

    _, student, _ = gallery
    folder, table = tmp_path / "photos", tmp_path / "landmarks.csv"
    rows = _raw_folder(gallery, folder, 12)
    last = rows[-1].split(",")[0]
    ghost = "ghost/missing.png," + ",".join(["50"] * 10)
    table.write_text("\n".join(rows[:-1] + [ghost, "/abs/x.png," + ",".join(["50"] * 10)]) + "\n")
    spec = _spec(tmp_path / "out", [{"name": "s", "model": student}], images=str(folder), landmarks=str(table),
                 images_per_file=4, backend="torch")
    first = run_score(spec)
    rejects = {r["image_id"]: r["reason"] for r in read_rejects(spec.out).to_pylist()}
    assert rejects == {last: "no row in the landmarks table", "ghost/missing.png": "image file not found",
                       "/abs/x.png": OUTSIDE_ROOT}  # each gap with its true reason, none only counted
    assert first["counts"]["rows_scored"] == 11 and first["counts"]["rejected"] == 3
    # the table fixed: the file holding that image is scored again, the others are done
    table.write_text("\n".join(rows) + "\n")
    fixed = run_score(spec)
    assert (fixed["counts"]["files_scored_now"], fixed["counts"]["files_done_before"]) == (1, 2)
    assert fixed["counts"]["rows_scored"] == 12 and fixed["counts"]["rejected"] == 0
    assert last in set(_table(spec.out)["image_id"].to_pylist())
    # an image added (the folder's last file changes): only that file again
    (folder / last).with_name("zz.png").write_bytes((folder / last).read_bytes())
    table.write_text("\n".join(rows + [rows[-1].replace(last, str((folder / last).with_name("zz.png")
                                                                   .relative_to(folder)))]) + "\n")
    grown = run_score(spec)
    assert grown["counts"]["files_scored_now"] == 1 and grown["counts"]["rows_scored"] == 13
    # a table whose paths name nothing under the images root is a user error, said in one line
    table.write_text("\n".join(f"{folder}/{r}" for r in rows) + "\n")
    with pytest.raises(AikdError, match=r"none of the 12 rows of .* names an image under .*: paths are relative"):
        run_score(spec)


def test_raw_photos_are_scored_a_row_per_face_found_and_a_photo_without_one_is_a_reject(ray_local, gallery,
                                                                                       tmp_path):
    from skimage import data

    from aikd.align import align
    from aikd.detect import create_detector
    from aikd.models.weights import load_model

    _, student, _ = gallery
    portrait = data.astronaut()
    group = np.full((260, 620, 3), 90, np.uint8)  # the portrait's face and two smaller copies beside it
    face = portrait[40:200, 160:290]
    group[40:200, 245:375], group[80:160, 40:105], group[80:160, 520:585] = face, face[::2, ::2], face[::2, ::2]
    photos = {"a/portrait.png": portrait, "a/group.jpg": group, "b/blank.png": np.full((200, 200, 3), 128, np.uint8)}
    folder = tmp_path / "raw"
    for path, rgb in photos.items():
        (folder / path).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(folder / path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    spec = _spec(tmp_path / "out", [{"name": "s", "model": student}], images=str(folder), alignment="detect",
                 backend="torch")
    summary = run_score(spec)
    scores = read_scores(spec.out).to_pylist()
    assert sorted(r["image_id"] for r in scores) == ["a/group.jpg#0", "a/group.jpg#1", "a/group.jpg#2",
                                                      "a/portrait.png#0"]
    assert {r["image_id"]: r["reason"] for r in read_rejects(spec.out).to_pylist()} == {
        "b/blank.png": "no face detected"}
    assert summary["counts"]["rows"] == 3 and summary["counts"]["rows_scored"] == 4  # photos in, faces scored
    # each row is the student's own score of the face aligned by the landmarks it reports
    model, card = load_model(student)
    decoded = cv2.cvtColor(cv2.imread(str(folder / "a/portrait.png")), cv2.COLOR_BGR2RGB)
    row = next(r for r in scores if r["image_id"] == "a/portrait.png#0")
    landmarks = np.asarray(row["face_landmarks"], np.float64).reshape(5, 2)
    with torch.no_grad():
        own = model.eval()(preprocess_of(model)(align(decoded, landmarks, card.input_size)[None]))[1].item()
    assert abs(row["quality"] - own) <= 1e-4
    [[found]] = create_detector("mtcnn", device="cpu").detect([decoded])
    np.testing.assert_allclose(landmarks, found.landmarks, atol=1e-3)
    assert row["detector_score"] > 0.99 and len(row["face_box"]) == 4


def test_a_symbolic_link_out_of_the_images_folder_is_a_planned_reject_never_read(tmp_path):
    from aikd.data.ingest import OUTSIDE_ROOT
    from aikd.score.inputs import plan

    folder, private = tmp_path / "photos", tmp_path / "private"
    (folder / "a").mkdir(parents=True)
    private.mkdir()
    for where in (folder / "a" / "face.png", private / "secret.png"):
        cv2.imwrite(str(where), np.full((40, 40, 3), 100, np.uint8))
    (folder / "a" / "secret.png").symlink_to(private / "secret.png")
    files, _, rejects = plan(ScoreConfig(images=str(folder), alignment="aligned", out=str(tmp_path / "out"),
                                         models=[{"name": "s", "model": "x"}]))
    assert [p for f in files for u in f.units for p in u["paths"]] == ["a/face.png"]
    assert rejects == [("a/secret.png", OUTSIDE_ROOT)]
