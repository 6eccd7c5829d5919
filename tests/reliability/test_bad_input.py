# ruff: noqa: E501  (the module docstring holds a Markdown table, one line per row)
"""The bad input zoo: each kind of bad input is converted or rejected with a reason, no job
crashes, and the counts add up (rows in = rows out + rejects) in ingest, label, distill,
evaluate and scoring.

"rejected: R" means the row is left out and recorded with a reason that starts with R
(ingest: ``_rejects.parquet`` + ``_summary.json``; label: the ``_progress`` sidecars, then
``_rejects.parquet``; distill: ``rejected_train_rows``; evaluate: ``_rejects.parquet`` +
``rows``/``rejected`` in ``report.json`` and the summary; score: ``_manifest``,
``_rejects.parquet``). "kept" means used as it is; "converted" means used after OpenCV's
``IMREAD_COLOR`` turned it into 3 channels of 8 bits. The images are never re-encoded:
ingest stores the original bytes and every stage converts when it decodes.
Whole-shard problems stop the job with a one-line ``AikdError`` naming the file, when
it is planned, before any work.

| kind | ingest (folder; pickles) | label | distill | evaluate | score (shards; folder) |
|---|---|---|---|---|---|
| truncated JPEG | rejected: undecodable image (PIL: image file is truncated) | rejected: undecodable image (OpenCV refuses it) | same | same | same |
| zero-byte file | rejected: empty image file | rejected: empty image file | same | same | same |
| non-image bytes | rejected: undecodable image | rejected: undecodable image | same | same | same |
| PNG with alpha | kept (bytes as they are) | converted: alpha dropped | converted | converted | converted |
| 16-bit PNG | kept | converted: scaled to 8 bits (v >> 8) | converted | converted | converted |
| grayscale | kept | converted: gray replicated to 3 channels | converted | converted | converted |
| CMYK JPEG | kept | converted: CMYK to BGR by the JPEG decoder | converted | converted | converted |
| huge dimensions (a 429-byte PNG claiming 30000 x 30000 px) | rejected: image too large (> 50 MP), from the header: PIL never decodes it | rejected: image too large, from the header: cv2.imdecode is never called | same | same | same (the Aligner actors) |
| tiny image (6 x 6 px) | rejected: image too small (< 16 px a side), from the header | rejected: image too small | same | same | same |
| NaN landmarks | rejected: non-finite landmarks | rejected: non-finite landmarks | same | same | same with alignment: landmarks; kept with alignment: box |
| inf landmarks | rejected: non-finite landmarks | rejected: non-finite landmarks | same | same | same with alignment: landmarks; kept with alignment: box |
| coincident landmarks | rejected: coincident landmarks | rejected: coincident landmarks | same | same | same with alignment: landmarks; kept with alignment: box |
| landmarks far outside the image (a point more than half the image's side beyond its edge) | rejected: landmarks outside the image | rejected: landmarks outside the image | same | same | same with alignment: landmarks; kept with alignment: box |
| NaN label | folder: has no labels; pickles: rejected: non-finite label <name> | kept (label writes its own q_ columns, other columns pass through) | rejected: non-finite label q_<x> | kept (labels are not read) | kept (not read) |
| duplicate image_id | rejected: duplicate image_id (a path repeated in the landmarks table; its first entry is used) | kept: rows pass through, each is labelled | kept: both rows train | rejected: duplicate image_id for every row after the first in plan order (a repeated id would be a mated pair with itself) | shards: rejected: duplicate image_id after the first in plan order, across shards too, so each id is scored once; folder: cannot happen (paths are unique) |
| image_id absolute or with ../ | rejected: image path outside the images root (never read) | kept (in a shard an id is only a key) | kept | kept | shards: kept; folder: never listed, so never read; landmarks table entries rejected (outside the images root) and counted in table_entries_outside_root |
| box with x2 < x1 | rejected: invalid bbox | kept (the box is not used) | kept | rejected: invalid box (box condition on) | kept with alignment: landmarks; rejected: invalid box with alignment: box |
| wrong column type (landmarks as strings) | n/a (ingest writes shards) | AikdError at planning: ShardSchemaError naming the file and the column | AikdError at planning: ShardSchemaError naming the file and the column | same | same |
| empty shard (0 rows) | n/a | an empty output shard: 0 rows in, 0 out | adds no rows | adds no rows | an empty output file: rows_in 0 |
| missing shard | n/a | AikdError at planning: StorageError "no face shards: nothing at <uri>" | same | same | same |
| a shard that is not Parquet | n/a | AikdError at planning: ShardSchemaError "not a readable Parquet file" | AikdError at planning: ShardSchemaError "not a readable Parquet file" | same | same |

Counts: ingest rows + rejected = images and landmark entries read; label rows_in = rows_out +
rejects per shard; distill rejected_train_rows = the bad rows of the training split and
consumed = its good rows in whole micro-batches; evaluate rows = faces + rejected; score
rows_in = rows_scored + rejects per output file, and each image_id once in the output.
"""

from __future__ import annotations

import io
import json
import pickle
import struct
import zlib
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image, ImageFile

from aikd.align import ARCFACE_TEMPLATE
from aikd.config import (
    DataConfig,
    DistillConfig,
    EngineConfig,
    EvaluateConfig,
    FIQASpec,
    IngestConfig,
    LabelConfig,
    Resources,
    ScoreConfig,
    StudentConfig,
    TeacherSpec,
)
from aikd.data.decode import MAX_IMAGE_PIXELS, MIN_IMAGE_SIDE, decode_image
from aikd.data.ingest import OUTSIDE_ROOT, check_image
from aikd.data.pipeline import plan_units
from aikd.data.schema import IMAGE_ID
from aikd.data.shards import read_rejects, read_shards, read_summary, write_shard
from aikd.data.split import held_out
from aikd.data.synth import SYNTH_SCHEMA, SynthConfig, generate_rows
from aikd.errors import AikdError
from aikd.models.registry import create_model
from aikd.models.student import create_student
from aikd.models.weights import card_for, save_model
from aikd.storage import Location, resolve

LABEL = "q_zoo"
SCHEMA = SYNTH_SCHEMA.append(pa.field(LABEL, pa.float32()))
HALF = Resources(workers=1, cpus_per_worker=0.5)
PNG = b"\x89PNG"
NAN, INF = float("nan"), float("inf")
DUPLICATE = "duplicate image_id"
STAGES = ("label", "distill", "evaluate", "score")  # the stages that read face shards

# Reason (the text before any " (") per shard stage; None: the row is kept or converted.
SHARD_EXPECTED: dict[str, dict[str, str | None]] = {
    "truncated_jpeg": dict.fromkeys(STAGES, "undecodable image"),
    "zero_byte": dict.fromkeys(STAGES, "empty image file"),
    "non_image": dict.fromkeys(STAGES, "undecodable image"),
    "png_alpha": dict.fromkeys(STAGES),
    "png_16bit": dict.fromkeys(STAGES),
    "grayscale": dict.fromkeys(STAGES),
    "cmyk_jpeg": dict.fromkeys(STAGES),
    "huge": dict.fromkeys(STAGES, "image too large"),
    "tiny": dict.fromkeys(STAGES, "image too small"),
    "nan_landmarks": dict.fromkeys(STAGES, "non-finite landmarks"),
    "inf_landmarks": dict.fromkeys(STAGES, "non-finite landmarks"),
    "coincident_landmarks": dict.fromkeys(STAGES, "coincident landmarks"),
    "landmarks_outside": dict.fromkeys(STAGES, "landmarks outside the image"),
    "nan_label": dict.fromkeys(STAGES) | {"distill": f"non-finite label {LABEL}"},
    "duplicate_id": dict.fromkeys(STAGES) | {"evaluate": DUPLICATE, "score": DUPLICATE},
    "duplicate_id_other_shard": dict.fromkeys(STAGES) | {"evaluate": DUPLICATE, "score": DUPLICATE},
    "dotdot_id": dict.fromkeys(STAGES),
    "absolute_id": dict.fromkeys(STAGES),
    "inverted_box": dict.fromkeys(STAGES) | {"evaluate": "invalid box"},
}
CONVERTED = ("png_alpha", "png_16bit", "grayscale", "cmyk_jpeg")


# --------------------------------------------------------------------------- the zoo's images
def _rgb(row: dict) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(row["image"])).convert("RGB"))


def _encode(image: Image.Image, fmt: str, **options) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **options)
    return buf.getvalue()


def _alpha_png(rgb: np.ndarray) -> bytes:
    alpha = np.linspace(0, 255, rgb.shape[1], dtype=np.uint8)[None, :].repeat(rgb.shape[0], 0)  # not all opaque
    return _encode(Image.fromarray(np.dstack([rgb, alpha]), "RGBA"), "PNG")


def _png16(rgb: np.ndarray) -> bytes:
    """A 48-bit RGB PNG whose samples are the 8-bit ones times 257 (so v >> 8 gives them back)."""
    ok, buf = cv2.imencode(".png", rgb[..., ::-1].astype(np.uint16) * 257)
    assert ok
    return buf.tobytes()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def bomb_png(side: int = 30000) -> bytes:
    """A PNG whose header claims side x side RGB pixels (2.7 GB decoded) in a few hundred bytes."""
    rows = (b"\x00" + bytes(3 * side)) * 4  # a few rows of data: the header is what a guard must read
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(rows, 9))
            + _chunk(b"IEND", b""))


def _file_name(kind: str, blob: bytes) -> str:
    return f"zoo/{kind}.{'png' if blob.startswith(PNG) else 'jpg'}"


def _tiny_png() -> bytes:
    return _encode(Image.fromarray(np.full((6, 6, 3), 128, np.uint8)), "PNG")


def _tiny_landmarks() -> list[float]:
    return (ARCFACE_TEMPLATE * (6 / 112)).reshape(-1).tolist()  # distinct points on the 6 x 6 image


def _bomb_landmarks() -> list[float]:
    return (ARCFACE_TEMPLATE * 100).reshape(-1).tolist()


def _changes(kind: str, row: dict, other: dict) -> dict:
    """What makes a good ``row`` into the bad input ``kind`` (``other``: another good row)."""
    lm = list(row["landmarks"])
    x1, y1, x2, y2 = row["bbox"]
    return {
        "truncated_jpeg": lambda: {"image": row["image"][: len(row["image"]) // 2]},
        "zero_byte": lambda: {"image": b""},
        "non_image": lambda: {"image": b"%PDF-1.4 a document, not an image " * 20},
        "png_alpha": lambda: {"image": _alpha_png(_rgb(row))},
        "png_16bit": lambda: {"image": _png16(_rgb(row))},
        "grayscale": lambda: {"image": _encode(Image.fromarray(_rgb(row)).convert("L"), "JPEG", quality=95)},
        "cmyk_jpeg": lambda: {"image": _encode(Image.fromarray(_rgb(row)).convert("CMYK"), "JPEG", quality=95)},
        "huge": lambda: {"image": bomb_png(), "landmarks": _bomb_landmarks()},
        "tiny": lambda: {"image": _tiny_png(), "landmarks": _tiny_landmarks()},
        "nan_landmarks": lambda: {"landmarks": [NAN] + lm[1:]},
        "inf_landmarks": lambda: {"landmarks": lm[:3] + [INF] + lm[4:]},
        "coincident_landmarks": lambda: {"landmarks": [50.0, 50.0] * 5},
        "landmarks_outside": lambda: {"landmarks": [v + 10_000 for v in lm]},
        "nan_label": lambda: {LABEL: NAN},
        # the same id as ``other``, another person: which one is kept is visible in evaluate's subjects
        "duplicate_id": lambda: {"image_id": other["image_id"], "subject_id": "zoo-duplicate"},
        "duplicate_id_other_shard": lambda: {"image_id": other["image_id"], "subject_id": "zoo-duplicate"},
        "dotdot_id": lambda: {"image_id": "../../etc/zoo.jpg"},
        "absolute_id": lambda: {"image_id": "/etc/zoo.jpg"},
        "inverted_box": lambda: {"bbox": [x2, y1, x1, y2]},
    }[kind]()


def _good_rows() -> list[dict]:
    rows = list(generate_rows(SynthConfig(identities=4, samples_per_identity=6, seed=17)))
    return [r | {LABEL: float(i % 7) / 7} for i, r in enumerate(rows)]


@pytest.fixture(scope="module")
def zoo(tmp_path_factory) -> dict:
    """Face shards: 24 good faces + one row per kind (part-00000), an empty shard (part-00001) and
    a shard holding one id of part-00000 again (part-00002). ``rows`` lists (shard, row, kind)."""
    root = tmp_path_factory.mktemp("zoo") / "shards"
    good = _good_rows()
    shards: list[list[dict]] = [list(good), [], []]
    rows = [(0, i, None) for i in range(len(good))]
    for k, kind in enumerate(SHARD_EXPECTED):
        base, other = good[k % len(good)], good[(k + 5) % len(good)]
        bad = base | {"image_id": f"zoo/{kind}"} | _changes(kind, base, other)
        shard = 2 if kind == "duplicate_id_other_shard" else 0
        rows.append((shard, len(shards[shard]), kind))
        shards[shard].append(bad)
    for n, part in enumerate(shards):
        write_shard(resolve(str(root)).join(f"part-{n:05d}.parquet"), pa.Table.from_pylist(part, schema=SCHEMA))
    return {"uri": str(root), "shards": shards, "rows": rows, "good": good}


def _row(zoo: dict, shard: int, index: int) -> dict:
    return zoo["shards"][shard][index]


def expected_rejects(zoo: dict, stage: str, keep=lambda row: True) -> Counter:
    """(image_id, reason) of every row ``stage`` must reject (among the rows ``keep`` selects)."""
    out = Counter()
    for shard, index, kind in zoo["rows"]:
        row = _row(zoo, shard, index)
        if kind is not None and SHARD_EXPECTED[kind][stage] and keep(row):
            out[(row[IMAGE_ID], SHARD_EXPECTED[kind][stage])] += 1
    return out


def got(rejects) -> Counter:
    """(image_id, reason) pairs with each reason's detail (after " (") left out."""
    return Counter((str(i), str(r).split(" (")[0]) for i, r in rejects)


def _untrained(tmp_path_factory, make, kind: str, seed: int) -> str:
    """A freshly initialised iresnet_tiny model saved as a model dir of ``kind``."""
    torch.manual_seed(seed)
    model = make("iresnet_tiny")
    path = str(tmp_path_factory.mktemp("zoo-models") / kind)
    save_model(model, path, card_for(model, kind))
    return path


@pytest.fixture(scope="module")
def backbone(tmp_path_factory) -> str:
    """An untrained iresnet_tiny backbone: enough for the FR teacher, the evaluation and a student's start."""
    return _untrained(tmp_path_factory, create_model, "backbone", seed=0)


@pytest.fixture(scope="module")
def student(tmp_path_factory) -> str:
    return _untrained(tmp_path_factory, create_student, "student", seed=1)


# --------------------------------------------------------------------------- decoding
def test_opencv_converts_alpha_16_bit_grayscale_and_cmyk_to_8_bit_bgr(zoo):
    base = zoo["good"][0]
    rgb = _rgb(base)
    for kind in CONVERTED:
        blob = _changes(kind, base, base)["image"]
        image, why = decode_image(blob)
        assert why == "" and image.dtype == np.uint8 and image.shape == (*rgb.shape[:2], 3), kind
        decoded = image[..., ::-1].astype(int)  # as RGB
        if kind == "png_alpha":
            np.testing.assert_array_equal(decoded, rgb)  # alpha dropped, colour untouched
        elif kind == "png_16bit":
            np.testing.assert_array_equal(decoded, rgb)  # samples * 257, scaled back by >> 8
        elif kind == "grayscale":
            gray = np.asarray(Image.open(io.BytesIO(blob)))
            assert (decoded == decoded[..., :1]).all() and np.abs(decoded[..., 0] - gray).max() <= 1
        else:  # CMYK: the colours come back, up to JPEG's loss (an inverted decode would be ~128 off)
            assert np.abs(decoded - rgb.astype(int)).mean() < 8


def test_a_decompression_bomb_is_refused_from_its_header_before_any_decoder_sees_it(monkeypatch):
    bomb = bomb_png()
    assert len(bomb) < 5000 and 30000 * 30000 > MAX_IMAGE_PIXELS
    decoded = []
    real_imdecode, real_load = cv2.imdecode, ImageFile.ImageFile.load
    monkeypatch.setattr(cv2, "imdecode", lambda buf, flags: decoded.append("cv2") or real_imdecode(buf, flags))
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda im: decoded.append("PIL") or real_load(im))
    assert check_image(bomb).startswith("image too large (30000x30000 px")  # ingest's check
    image, why = decode_image(bomb)  # every stage's decode
    assert image is None and why.startswith("image too large (30000x30000 px")
    assert decoded == []  # neither decoder was handed the bytes: nothing was allocated
    # the spies work: an ordinary image is decoded, by OpenCV (every stage decodes alike)
    ordinary = _encode(Image.fromarray(np.zeros((32, 32, 3), np.uint8)), "PNG")
    assert check_image(ordinary) is None and decode_image(ordinary)[1] == ""
    assert decoded == ["cv2", "cv2"]


@pytest.mark.parametrize("side, fmt", [(MIN_IMAGE_SIDE - 1, "PNG"), (6, "JPEG"), (6, "BMP"), (MIN_IMAGE_SIDE, "PNG")])
def test_images_below_the_minimum_side_are_refused_in_any_format(side, fmt):
    blob = _encode(Image.fromarray(np.full((side, 40, 3), 99, np.uint8)), fmt)
    image, why = decode_image(blob)
    if side < MIN_IMAGE_SIDE:
        assert image is None and why == f"image too small (40x{side} px, less than {MIN_IMAGE_SIDE} px a side)"
        assert check_image(blob) == why
    else:
        assert why == "" and image.shape == (side, 40, 3) and check_image(blob) is None


# --------------------------------------------------------------------------- ingest
def _folder_zoo(root: Path) -> dict:
    """A folder of good and bad images, a landmarks CSV with bad entries, and a file beside the root."""
    images = root / "images"
    good = _good_rows()[:6]
    entries: list[tuple[str, list[float], list[float] | None]] = []
    expected: dict[str, str | None] = {}

    def add(path: str, blob: bytes | None, landmarks, bbox=None, reason=None):
        if blob is not None:
            (images / path).parent.mkdir(parents=True, exist_ok=True)
            (images / path).write_bytes(blob)
        entries.append((path, landmarks, bbox))
        expected.setdefault(path, reason)

    for row in good:
        add(row[IMAGE_ID], row["image"], row["landmarks"], row["bbox"])
    base = good[0]
    for kind in ("truncated_jpeg", "zero_byte", "non_image", *CONVERTED, "huge", "tiny", "nan_landmarks",
                 "inf_landmarks", "coincident_landmarks", "landmarks_outside"):
        bad = base | _changes(kind, base, base)
        reason = SHARD_EXPECTED[kind]["label"]
        add(_file_name(kind, bad["image"]), bad["image"], bad["landmarks"], reason=reason)
    add("zoo/inverted_box.jpg", base["image"], base["landmarks"], _changes("inverted_box", base, base)["bbox"],
        reason="invalid bbox")
    # a path listed again, with other landmarks: the first entry is the one used
    shifted = [v + 1.0 for v in good[1]["landmarks"]]
    entries.append((good[1][IMAGE_ID], shifted, None))
    repeated = (good[1][IMAGE_ID], DUPLICATE)
    # entries that name files outside the images root, which exist
    secret = root / "secret.jpg"
    secret.write_bytes(base["image"])
    for path in ("../secret.jpg", str(secret)):
        add(path, None, base["landmarks"], reason="image path outside the images root")
    lines = ["path," + ",".join(f"v{i}" for i in range(14))]
    lines += [",".join([p, *map(str, lm), *(map(str, box) if box else [""] * 4)]) for p, lm, box in entries]
    (root / "landmarks.csv").write_text("\n".join(lines) + "\n")
    return {"images": str(images), "landmarks": str(root / "landmarks.csv"), "expected": expected,
            "repeated": repeated, "entries": entries, "secret": str(secret), "good": good}


def test_folder_ingest_rejects_each_bad_kind_with_its_reason_and_reads_nothing_outside_the_root(tmp_path,
                                                                                                 monkeypatch,
                                                                                                 ray_local):
    from aikd.ingest.faces import ingest_partition
    from aikd.ingest.plan import planned
    from aikd.ingest.run import run_ingest

    folder = _folder_zoo(tmp_path)
    out = str(tmp_path / "shards")
    cfg = IngestConfig(images=folder["images"], landmarks=folder["landmarks"], out=out, images_per_shard=8)
    summary = run_ingest(cfg)
    # the same plan and partitions again in this process, where every read can be watched
    read: list[str] = []
    real = Location.read_bytes
    monkeypatch.setattr(Location, "read_bytes", lambda self: read.append(self.path) or real(self))
    watched = cfg.model_copy(update={"out": str(tmp_path / "watched")})
    with planned(watched) as plan:
        for part in plan.partitions():
            ingest_partition(watched, resolve(watched.out), part.name, part.records, part.inputs, None)
    read_by_ingest = list(read)  # not what the checks below read

    rejects = read_rejects(out).to_pylist()
    want = Counter({(p, r): 1 for p, r in folder["expected"].items() if r}) + Counter([folder["repeated"]])
    assert got((r["image_id"], r["reason"]) for r in rejects) == want
    table = read_shards(out)
    kept = sorted(table.column(IMAGE_ID).to_pylist())
    assert kept == sorted(p for p, r in folder["expected"].items() if r is None)
    # counts add up: every image file and every landmarks entry is a row in
    files = {str(p.relative_to(folder["images"])) for p in Path(folder["images"]).rglob("*") if p.is_file()}
    paths = [p for p, _, _ in folder["entries"]]
    rows_in = len(files | set(paths)) + len(paths) - len(set(paths))
    assert summary["rows"] + summary["counts"]["rejected"] == rows_in == table.num_rows + len(rejects)
    assert read_summary(out)["rejects"][DUPLICATE] == 1
    # the first entry of the repeated path is the one ingested
    first = {r[IMAGE_ID]: r for r in table.to_pylist()}[folder["repeated"][0]]
    np.testing.assert_allclose(first["landmarks"], folder["good"][1]["landmarks"], rtol=1e-6)
    # converted kinds are stored byte for byte: stages convert when they decode
    stored = {r[IMAGE_ID]: r["image"] for r in table.to_pylist()}
    for kind in CONVERTED:
        name = next(p for p in stored if p.startswith(f"zoo/{kind}."))
        assert stored[name] == (Path(folder["images"]) / name).read_bytes()
    images_root = folder["images"] + "/"
    assert folder["secret"] not in read_by_ingest
    assert all(p.startswith(images_root) or p == folder["landmarks"] for p in read_by_ingest)


def test_pickle_ingest_rejects_a_nan_label_and_an_id_outside_the_root(tmp_path, ray_local):
    from aikd.ingest.run import run_ingest

    good = _good_rows()[:4]
    images = tmp_path / "images"
    for row in good:
        (images / row[IMAGE_ID]).parent.mkdir(parents=True, exist_ok=True)
        (images / row[IMAGE_ID]).write_bytes(row["image"])
    (tmp_path / "secret.jpg").write_bytes(good[0]["image"])
    names = [r[IMAGE_ID] for r in good] + ["../secret.jpg"]
    boxes = {n: (np.array(good[0]["bbox"], np.float32), np.array(good[0]["landmarks"], np.float32).reshape(5, 2))
             for n in names}
    scores = {n: np.float32(0.5) for n in names} | {names[1]: np.float32("nan")}
    (tmp_path / "lm.pkl").write_bytes(pickle.dumps(boxes))
    (tmp_path / "q.pkl").write_bytes(pickle.dumps(scores))
    out = str(tmp_path / "out")
    summary = run_ingest(IngestConfig(images=str(images), landmarks=str(tmp_path / "lm.pkl"), out=out,
                                      quality=str(tmp_path / "q.pkl"), label="zoo"))
    rejects = {r["image_id"]: r["reason"] for r in read_rejects(out).to_pylist()}
    assert rejects == {names[1]: "non-finite label zoo", "../secret.jpg": "image path outside the images root"}
    assert summary["rows"] + summary["counts"]["rejected"] == len(names) and summary["rows"] == 3


# --------------------------------------------------------------------------- label (in process)
def test_label_drops_rows_it_cannot_align_and_passes_duplicates_and_other_labels_through(zoo, backbone, tmp_path):
    from aikd.label.labeller import Labeller

    cfg = LabelConfig(shards=[zoo["uri"]], out=str(tmp_path / "labelled"),
                      teachers=[TeacherSpec(name="norm", options={"model": backbone})])
    labeller = Labeller(cfg)
    sidecars = [labeller.label_shard(f"{zoo['uri']}/part-{n:05d}.parquet", f"{cfg.out}/part-{n:05d}.parquet")
                for n in range(len(zoo["shards"]))]
    for side, rows in zip(sidecars, zoo["shards"], strict=True):
        assert side["rows_in"] == len(rows) == side["rows_out"] + len(side["rejects"])  # counts add up
    assert sidecars[1]["rows_in"] == 0  # the empty shard: an empty output shard
    assert got(r for s in sidecars for r in s["rejects"]) == expected_rejects(zoo, "label")
    table = read_shards(cfg.out)
    ids = Counter(table.column(IMAGE_ID).to_pylist())
    for kind in ("duplicate_id", "duplicate_id_other_shard"):  # label keeps rows as rows
        other = next(r for s, i, k in zoo["rows"] if k == kind for r in [_row(zoo, s, i)])
        assert ids[other[IMAGE_ID]] == 2
    rows = {r[IMAGE_ID]: r for r in table.to_pylist()}
    assert np.isnan(rows["zoo/nan_label"][LABEL]) and np.isfinite(rows["zoo/nan_label"]["q_norm"])
    for kind in (*CONVERTED, "dotdot_id", "absolute_id", "inverted_box"):
        assert np.isfinite(rows[_id_of(zoo, kind)]["q_norm"]), kind


def _id_of(zoo: dict, kind: str) -> str:
    return next(_row(zoo, s, i)[IMAGE_ID] for s, i, k in zoo["rows"] if k == kind)


# --------------------------------------------------------------------------- scoring
def _units(files) -> list[dict]:
    return [u for f in files for u in f.units]


def test_scoring_plans_each_later_duplicate_id_as_a_reject_within_and_across_shards(zoo, tmp_path):
    from aikd.score.inputs import plan, read_unit

    files, _, _ = plan(ScoreConfig(shards=[zoo["uri"]], out=str(tmp_path), models=[{"name": "s", "model": "m"}]))
    flagged = []
    for unit in (u for u in _units(files) if u["rows"]):  # as the driver does: an empty shard has nothing to read
        faces = read_unit(unit)
        shard = int(unit["uri"].rsplit("part-", 1)[1][:5])
        flagged += [(shard, i) for i, why in enumerate(faces["reason"]) if why == DUPLICATE]
    # the later rows (plan order: shard, then row) are the ones flagged, never the first
    assert sorted(flagged) == sorted((s, i) for s, i, k in zoo["rows"] if k and k.startswith("duplicate_id"))


def test_box_alignment_ignores_bad_landmarks_but_rejects_an_inverted_box(zoo, tmp_path):
    from aikd.score.actors import Aligner
    from aikd.score.inputs import plan

    cfg = ScoreConfig(shards=[zoo["uri"]], out=str(tmp_path), models=[{"name": "s", "model": "m"}], alignment="box")
    files, _, _ = plan(cfg)
    aligner = Aligner(cfg, [64])
    outs = [aligner({k: [v] for k, v in unit.items()}) for unit in _units(files) if unit["rows"]]
    rejects = [(i, r) for out in outs for i, r in zip(out[IMAGE_ID], out["reason"], strict=True) if r]
    landmark_kinds = ("nan_landmarks", "inf_landmarks", "coincident_landmarks", "landmarks_outside")
    want = expected_rejects(zoo, "score") - Counter({(f"zoo/{k}", SHARD_EXPECTED[k]["score"]): 1 for k in landmark_kinds})
    assert got(rejects) == want + Counter({("zoo/inverted_box", "invalid box"): 1})


def _folder_gallery(root: Path) -> dict:
    """The image kinds as files, the landmark kinds as landmarks table entries, two entries outside the root."""
    good = _good_rows()[:3]
    images = root / "gallery"
    table = {}
    expected = {}
    for row in good:
        (images / row[IMAGE_ID]).parent.mkdir(parents=True, exist_ok=True)
        (images / row[IMAGE_ID]).write_bytes(row["image"])
        table[row[IMAGE_ID]] = row["landmarks"]
        expected[row[IMAGE_ID]] = None
    base = good[0]
    for kind in ("truncated_jpeg", "zero_byte", "non_image", *CONVERTED, "huge", "tiny", "nan_landmarks",
                 "inf_landmarks", "coincident_landmarks", "landmarks_outside"):
        bad = base | _changes(kind, base, base)
        path = _file_name(kind, bad["image"])
        (images / path).parent.mkdir(parents=True, exist_ok=True)
        (images / path).write_bytes(bad["image"])
        table[path] = bad["landmarks"]
        expected[path] = SHARD_EXPECTED[kind]["score"]
    secret = root / "secret.jpg"
    secret.write_bytes(base["image"])
    for path in ("../secret.jpg", str(secret)):
        table[path] = base["landmarks"]
    (root / "lm.json").write_text(json.dumps(table).replace("NaN", '"nan"').replace("Infinity", '"inf"'))
    return {"images": str(images), "landmarks": str(root / "lm.json"), "expected": expected, "secret": str(secret)}


def test_folder_scoring_aligner_rejects_each_bad_kind_and_reads_nothing_outside_the_root(tmp_path, monkeypatch):
    from aikd.score.actors import Aligner
    from aikd.score.inputs import plan

    gallery = _folder_gallery(tmp_path)
    cfg = ScoreConfig(images=gallery["images"], landmarks=gallery["landmarks"], out=str(tmp_path / "out"),
                      models=[{"name": "s", "model": "m"}], batch_size=8, images_per_file=10)
    read, decoded = [], []
    real_read, real_imdecode = Location.read_bytes, cv2.imdecode
    monkeypatch.setattr(Location, "read_bytes", lambda self: read.append(self.path) or real_read(self))
    monkeypatch.setattr(cv2, "imdecode", lambda buf, flags: decoded.append(bytes(buf)) or real_imdecode(buf, flags))
    files, facts, planned = plan(cfg)
    assert facts == {"table_entries_without_image": 0, "table_entries_outside_root": 2}
    assert planned == sorted([("../secret.jpg", OUTSIDE_ROOT), (gallery["secret"], OUTSIDE_ROOT)])  # rejects too
    aligner = Aligner(cfg, [64])
    results = [aligner({k: [v] for k, v in unit.items()}) for unit in _units(files)]
    reasons = {str(i): str(r) for out in results for i, r in zip(out[IMAGE_ID], out["reason"], strict=True)}
    rows_in = sum(f.rows for f in files)
    assert rows_in == len(reasons) == len(gallery["expected"])  # every listed image is a row out, scored or not
    assert got((i, r) for i, r in reasons.items() if r) == Counter(
        {(p, r): 1 for p, r in gallery["expected"].items() if r})
    assert gallery["secret"] not in read
    assert all(p.startswith(gallery["images"] + "/") or p == gallery["landmarks"] for p in read)
    assert bomb_png() not in decoded and decoded  # the Aligner decodes images, never the bomb


def test_score_job_counts_add_up_and_gives_each_id_one_score(ray_local, zoo, student, tmp_path):
    from aikd.score.run import read_scores, run_score

    cfg = ScoreConfig(shards=[zoo["uri"]], out=str(tmp_path / "scores"), models=[{"name": "s", "model": student}],
                      decode=HALF, resources=HALF, backend="torch", progress_every_s=60)
    summary = run_score(cfg)
    manifest = json.loads(resolve(cfg.out).join("_manifest.json").read_text())
    assert [m["rows_in"] for m in manifest] == [len(s) for s in zoo["shards"]]  # the empty shard: rows_in 0
    for m in manifest:
        assert m["rows_in"] == m["rows_scored"] + len(m["rejects"])
    counts = summary["counts"]
    assert counts["rows"] == sum(len(s) for s in zoo["shards"]) == counts["rows_scored"] + counts["rejected"]
    assert got((r["image_id"], r["reason"]) for r in read_rejects(cfg.out).to_pylist()) == expected_rejects(
        zoo, "score")
    ids = read_scores(cfg.out).column(IMAGE_ID).to_pylist()
    assert len(ids) == len(set(ids)) == counts["rows_scored"]  # each id once
    all_ids = {r[IMAGE_ID] for s in zoo["shards"] for r in s}
    assert set(ids) == all_ids - {i for i, _ in expected_rejects(zoo, "score") if i.startswith("zoo/")}


# --------------------------------------------------------------------------- evaluate
def test_evaluate_counts_every_row_as_used_or_rejected_and_keeps_the_first_of_a_duplicate_id(
        ray_local, zoo, backbone, tmp_path):
    from aikd.evaluate.run import run_evaluate

    cfg = EvaluateConfig(shards=[zoo["uri"]], out=str(tmp_path / "report"), fr_model=backbone,
                         models=[FIQASpec(name="norm", teacher="norm", options={"model": backbone})],
                         misalignment=[3.0], fmr=[1e-2], non_mated=2000, ci_resamples=0,
                         resources=Resources(workers=1, cpus_per_worker=1))
    summary = run_evaluate(cfg)
    report = json.loads(resolve(cfg.out).join("report.json").read_text())
    rows_in = sum(len(s) for s in zoo["shards"])
    assert report["rows"] == rows_in == report["faces"] + report["rejected"]  # counts add up
    counts = summary["counts"]
    assert (counts["rows"], counts["faces"], counts["rejected"]) == (rows_in, report["faces"], report["rejected"])
    rejects = read_rejects(cfg.out).to_pylist()
    assert got((r["image_id"], r["reason"]) for r in rejects) == expected_rejects(zoo, "evaluate")
    assert sum(report["reject_reasons"].values()) == len(rejects)
    # the first row of a repeated id (in plan order) is the one used: the mated pairs are those of its subject
    used, seen = Counter(), set()
    for shard, index, kind in sorted(zoo["rows"]):
        row = _row(zoo, shard, index)
        if row[IMAGE_ID] not in seen and not (kind and SHARD_EXPECTED[kind]["evaluate"]):
            used[row["subject_id"]] += 1
        seen.add(row[IMAGE_ID])
    assert report["mated_pairs"] == sum(n * (n - 1) // 2 for n in used.values())
    assert f"{report['rejected']} of {rows_in} rows rejected" in resolve(cfg.out).join("index.html").read_text()


# --------------------------------------------------------------------------- distill (one tiny run)
def test_distill_rejects_the_bad_training_rows_and_trains_on_the_rest(ray_local, zoo, backbone, tmp_path):
    from aikd.distill.run import run_distill

    data = DataConfig(shards=[zoo["uri"]], label=LABEL, image_size=64, val_fraction=0.25, resources=HALF)
    cfg = DistillConfig(name="zoo", storage=str(tmp_path / "runs"), data=data,
                        student=StudentConfig(weights=backbone), engine=EngineConfig(micro_batch=8),
                        strategy="ddp", epochs=1, resources=HALF)
    summary = run_distill(cfg)

    def in_train(row: dict) -> bool:
        return not held_out({IMAGE_ID: [row[IMAGE_ID]]}, data)[0]

    bad = expected_rejects(zoo, "distill", keep=in_train)
    assert summary["counts"]["rejected_train_rows"] == sum(bad.values()) > 0
    train_rows = sum(in_train(r) for s in zoo["shards"] for r in s)
    good = train_rows - sum(bad.values())
    assert summary["consumed"] == good // 8 * 8  # every good training row, in whole micro-batches
    assert summary["student"] is not None


# --------------------------------------------------------------------------- whole shards
def _whole_shard(kind: str, root: Path, good_uri: str) -> tuple[str, str]:
    """A shard prefix whose one bad file is ``kind``; returns (uri for the spec, text the error names)."""
    bad = root / kind
    bad.mkdir()
    if kind == "missing":
        return str(root / "no-such-shards"), "nothing at"
    if kind == "not_parquet":
        (bad / "part-00000.parquet").write_bytes(b"PAR1 but not really a parquet file")
        return str(bad), "part-00000.parquet: not a readable Parquet file"
    table = pq.read_table(f"{good_uri}/part-00000.parquet").slice(0, 4)
    as_text = pa.array([",".join(map(str, v)) for v in table.column("landmarks").to_pylist()])
    table = table.set_column(table.schema.get_field_index("landmarks"), "landmarks", as_text)
    pq.write_table(table, bad / "part-00000.parquet")
    return str(bad), "part-00000.parquet: column 'landmarks' has type string"


WHOLE_SHARD_KINDS = ("wrong_column_type", "missing", "not_parquet")


@pytest.mark.parametrize("kind", WHOLE_SHARD_KINDS)
def test_a_bad_shard_stops_distill_evaluate_and_score_planning_with_one_line(kind, zoo, tmp_path):
    from aikd.score.inputs import plan

    uri, names = _whole_shard(kind, tmp_path, zoo["uri"])
    shards = [zoo["uri"], uri]  # a good shard first: nothing is started before the bad one is found
    planners = {
        "distill/evaluate/pipeline": lambda: plan_units(DataConfig(shards=shards, label=LABEL)),
        "score": lambda: plan(ScoreConfig(shards=shards, out=str(tmp_path / "o"), models=[{"name": "s",
                                                                                             "model": "m"}])),
    }
    for stage, planner in planners.items():
        with pytest.raises(AikdError) as err:
            planner()
        message = str(err.value)
        assert names in message and "\n" not in message, stage


def test_the_label_job_plans_an_empty_output_for_an_empty_shard_and_refuses_a_missing_one(zoo, tmp_path):
    from aikd.label.run import plan

    cfg = LabelConfig(shards=[zoo["uri"]], out=str(tmp_path / "o"), teachers=[TeacherSpec(name="norm")])
    assert [p["src"].rsplit("/", 1)[1] for p in plan(cfg)] == [f"part-{n:05d}.parquet" for n in range(3)]
    uri, names = _whole_shard("missing", tmp_path, zoo["uri"])
    with pytest.raises(AikdError, match=names):
        plan(cfg.model_copy(update={"shards": [zoo["uri"], uri]}))


@pytest.mark.parametrize("kind", ["wrong_column_type", "not_parquet"])
def test_the_label_job_refuses_a_bad_shard_at_planning(kind, zoo, tmp_path):
    from aikd.label.run import plan

    uri, names = _whole_shard(kind, tmp_path, zoo["uri"])
    cfg = LabelConfig(shards=[zoo["uri"], uri], out=str(tmp_path / "o"), teachers=[TeacherSpec(name="norm")])
    with pytest.raises(AikdError, match=names):
        plan(cfg)
